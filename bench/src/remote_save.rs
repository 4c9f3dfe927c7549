//! Save to serving through `kiln dev --on` (`cargo bench -p kiln-bench --
//! remote`): the same one-constant edit of the CPU kernels as section 2,
//! served by a local `kiln dev` and by a `kiln dev --on kiln-test` whose
//! agent is reached through a real sshd on 127.0.0.1 (the tests' server,
//! tests/support/sshd.rs), edits alternating between the two (drift in the
//! machine hits both alike). For each save: from the write of the file to
//! the `swapped` event arriving here, and the bytes the local kiln sent
//! (its `kiln: sent ...` line: the changed entries and contents, not the
//! workspace). Writes `remote-save.json`. Not measured without
//! `/usr/sbin/sshd`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::Config;
use crate::save_serving::DEBOUNCE_MS;
use crate::save_serving::edit::{ConstantEdit, KERNELS_SOURCE};
use crate::save_serving::kiln_dev::{DevSession, scratch_copy};
use crate::stats::Summary;

#[path = "../../tests/support/sshd.rs"]
#[allow(dead_code)]
mod sshd;

/// The bytes one save put on the wire, from the local kiln's stderr: the
/// last `kiln: sent ...` line's `(N bytes)`.
fn last_wire_bytes(stderr: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stderr).ok()?;
    let line = text.lines().rev().find(|l| l.starts_with("kiln: sent "))?;
    wire_bytes(line)
}

fn wire_bytes(line: &str) -> Option<f64> {
    let figure = line.strip_suffix(" bytes)")?;
    figure[figure.rfind('(')? + 1..].parse().ok()
}

/// Runs the section; the printed text.
pub fn measure(config: &Config) -> Result<String, String> {
    let load_start = crate::report::load_average();
    let Some(server) = sshd::Sshd::start() else {
        return Ok("remote save to serving: not measured (no /usr/sbin/sshd)\n".into());
    };
    let dir = config.out_dir.join("remote-save");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let kiln_exe = crate::artifacts::build_kiln(&config.workspace)?;
    let module_target = kiln::workspace::module_target_dir(&config.workspace);
    let (_local_dir, local_copy) = scratch_copy(&config.workspace, "kiln-bench-local-")?;
    let (_remote_dir, remote_copy) = scratch_copy(&config.workspace, "kiln-bench-remote-")?;
    let mirrors = sshd::mirrors_dir();
    let remote_kiln = sshd::agent_command(&kiln_exe, mirrors.path(), Some(&module_target), &[]);
    let config_path = server.ssh_config().display().to_string();
    let on = [
        "--on",
        sshd::HOST,
        "--ssh-config",
        &config_path,
        "--remote-kiln",
        &remote_kiln,
        // A killed local kiln (the bench drops its sessions so) leaves the
        // remote session for one second only.
        "--grace",
        "1",
    ];
    let spawn = |copy: &Path, args: &[&str], log: &str| {
        DevSession::spawn(
            &kiln_exe,
            copy,
            &module_target,
            crate::kiln_side::THREADS,
            DEBOUNCE_MS,
            args,
            &dir.join(log),
        )
    };
    eprintln!("kiln-bench: remote save to serving: starting kiln dev here and kiln dev --on");
    let mut local = spawn(&local_copy, &[], "local.log")?;
    local.wait_ready(Duration::from_secs(600))?;
    let mut remote = spawn(&remote_copy, &on, "remote.log")?;
    remote.wait_ready(Duration::from_secs(600))?;
    let first_sync = std::fs::read_to_string(dir.join("remote.stderr"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("kiln: mirrored "))
                .map(str::to_string)
        })
        .unwrap_or_default();

    let mut local_edit = ConstantEdit::new(&local_copy.join(KERNELS_SOURCE))?;
    let mut remote_edit = ConstantEdit::new(&remote_copy.join(KERNELS_SOURCE))?;
    let source_bytes = std::fs::metadata(remote_copy.join(KERNELS_SOURCE))
        .map_err(|e| format!("{KERNELS_SOURCE}: {e}"))?
        .len();
    let timeout = Duration::from_secs(180);
    let (mut local_ms, mut remote_ms, mut wire) = (Vec::new(), Vec::new(), Vec::new());
    // Beyond kiln's own figure (from the session's first file event to
    // `swapped`): the way of the save there (the watcher, and for --on the
    // sync over ssh) and of the `swapped` line back here.
    let (mut local_lead, mut remote_lead) = (Vec::new(), Vec::new());
    for round in 0..config.save_warmup + config.save_rounds {
        let l = local.edit(&mut local_edit, timeout)?;
        let r = remote.edit(&mut remote_edit, timeout)?;
        let bytes = last_wire_bytes(&dir.join("remote.stderr"))
            .ok_or("no `kiln: sent ... on the wire` line after a save (remote.stderr)")?;
        if round >= config.save_warmup {
            local_ms.push(l.total_ms);
            remote_ms.push(r.total_ms);
            local_lead.push(l.total_ms - l.reported_total_ms);
            remote_lead.push(r.total_ms - r.reported_total_ms);
            wire.push(bytes);
        }
    }
    drop(remote);
    drop(local);
    let summary = |v: &[f64]| Summary::of(v).ok_or("no samples");
    let (l, r, w) = (summary(&local_ms)?, summary(&remote_ms)?, summary(&wire)?);
    let (ll, rl) = (summary(&local_lead)?, summary(&remote_lead)?);
    let load_end = crate::report::load_average();
    let json = json!({
        "quick": config.quick,
        "save_to_serving_local_ms": l.to_json(),
        "save_to_serving_remote_ms": r.to_json(),
        "bytes_on_the_wire_per_save": w.to_json(),
        "write_to_file_event_local_ms": ll.to_json(),
        "write_to_file_event_remote_ms": rl.to_json(),
        "edited_file_bytes": source_bytes,
        "first_sync": first_sync,
        "load_start": load_start,
        "load_end": load_end,
    });
    let path = config.out_dir.join("remote-save.json");
    std::fs::write(&path, json.to_string())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(format!(
        "remote save to serving{}: the one-constant edit of {KERNELS_SOURCE}, medians ± MAD of {} \
         saves, alternating\n  \
         kiln dev (here):                 {:>8.1} ± {:.1} ms\n  \
         kiln dev --on (sshd, loopback):  {:>8.1} ± {:.1} ms  ({:+.1} ms)\n  \
         of which the way there and back (write -> the session's file event, its `swapped` \
         line -> here): {:.1} ± {:.1} ms here, {:.1} ± {:.1} ms with --on\n  \
         sent per save:                   {:>8.0} B on the wire (the edited file is {source_bytes} B)\n  \
         session start: {first_sync}\n\
         (load average {load_start:.1} at the start, {load_end:.1} at the end; raw figures: {})\n",
        if config.quick {
            " (QUICK smoke run)"
        } else {
            ""
        },
        l.runs,
        l.median,
        l.mad,
        r.median,
        r.mad,
        r.median - l.median,
        ll.median,
        ll.mad,
        rl.median,
        rl.mad,
        w.median,
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bytes_read_back_as_kiln_prints_them() {
        let line = "kiln: sent a.rs to h: 1 file(s), 2.0 KiB of contents, 2.3 KiB on the wire (2356 bytes)";
        assert_eq!(super::wire_bytes(line), Some(2356.0));
        assert_eq!(super::wire_bytes("kiln: sent nothing"), None);
    }
}

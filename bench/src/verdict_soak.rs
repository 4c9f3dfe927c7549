//! The same-code soak (`cargo bench -p kiln-bench -- verdicts`): how often
//! kiln reads a change where there is none. Each of `sessions` separate
//! `kiln dev` sessions (new processes, new engines, new threads) serves the
//! bundled workload on the CPU module, then the same code is saved again
//! (a kept static added: a new library and engine, not one instruction of
//! a kernel changed) and the replay after the swap times the new engine
//! interleaved with the old one. Every call's verdict other than "no clear
//! change" (or "machine too busy", which says it could not judge) is a
//! false verdict; the soak reports their rate, each one's ratio and
//! spreads, and the load it saw. `KILN_BENCH_COLD=1` times on cold caches
//! (`kiln dev --cold`).

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_dev_driver::{DevCommand, Event, EventKind, OnDrop, Session, WaitError};

use crate::config::Config;
use crate::save_serving::kiln_dev::scratch_copy;

const KERNELS_SOURCE: &str = "kernels/cpu/src/kernels.rs";
const START: Duration = Duration::from_secs(600);
const SAVE: Duration = Duration::from_secs(300);

/// One call's verdict after a same-code save.
#[derive(Clone, Debug)]
pub struct CallVerdict {
    pub session: usize,
    pub call: u64,
    pub kernel: String,
    pub verdict: String,
    pub ms: f64,
    pub mad_ms: f64,
    pub previous_ms: f64,
}

impl CallVerdict {
    fn is_false(&self) -> bool {
        !matches!(
            self.verdict.as_str(),
            "no clear change"
                | "machine too busy"
                | "too short to compare"
                | "too noisy to compare"
                | "not reproduced"
        )
    }
}

fn next(session: &mut Session, deadline: Instant, what: &str) -> Result<Event, String> {
    session.try_next(deadline).map_err(|e| match e {
        WaitError::TimedOut => format!("kiln dev: no {what} in time"),
        other => format!("{other} while waiting for {what}"),
    })
}

/// The replay events of the version swapped in after the save.
fn replay_after_save(session: &mut Session, calls: u64) -> Result<Vec<Event>, String> {
    let deadline = Instant::now() + SAVE;
    let version = loop {
        let e = next(session, deadline, "the swap of the same code")?;
        if e.is_any(&[EventKind::BuildFailed, EventKind::Refused, EventKind::Error]) {
            return Err(format!("kiln dev: {}", e.line));
        }
        if e.is(EventKind::Swapped) {
            break e.version();
        }
    };
    let mut replay = Vec::new();
    while (replay.len() as u64) < calls {
        let e = next(session, deadline, "the replay after the swap")?;
        if e.is(EventKind::ReplayFailed) {
            return Err(format!("the same code failed its replay: {}", e.line));
        }
        if e.is(EventKind::Replay) && e.version() == version {
            replay.push(e);
        }
    }
    Ok(replay)
}

/// One session: start, wait for the watcher, save the same code, collect
/// the replay's verdicts, stop.
fn one_session(
    kiln_exe: &Path,
    copy: &Path,
    config: &Config,
    index: usize,
    pristine: &str,
) -> Result<Vec<CallVerdict>, String> {
    let source = copy.join(KERNELS_SOURCE);
    std::fs::write(&source, pristine).map_err(|e| format!("{}: {e}", source.display()))?;
    let cold = std::env::var_os("KILN_BENCH_COLD").is_some_and(|v| v == "1");
    let mut session = DevCommand::new(kiln_exe, copy)
        .args(["--no-tune", "--threads", "2"])
        .args(cold.then_some("--cold"))
        .module_target_dir(&kiln::workspace::module_target_dir(&config.workspace))
        .on_drop(OnDrop::Kill)
        .spawn()?;
    let deadline = Instant::now() + START;
    let mut calls = 0u64;
    loop {
        let e = next(&mut session, deadline, "the first replay and the watcher")?;
        if e.is(EventKind::Replay) {
            calls = calls.max(e.u64("call").unwrap_or(0) + 1);
        }
        if kiln_dev_driver::is_watching(&e) {
            break;
        }
    }
    // Let the first replay's checkpoint and history settle.
    std::thread::sleep(Duration::from_millis(500));
    let same = format!(
        "{pristine}\n/// The same code, saved again.\n#[used]\nstatic SAVED_AGAIN: [u8; 16] = *b\"same code, s{:04}\";\n",
        index % 10_000
    );
    std::fs::write(&source, same).map_err(|e| format!("{}: {e}", source.display()))?;
    let replay = replay_after_save(&mut session, calls)?;
    let _ = session.stop();
    Ok(replay
        .iter()
        .filter(|e| e.str("skipped").is_none())
        .map(|e| CallVerdict {
            session: index,
            call: e.u64("call").unwrap_or(0),
            kernel: e.str("kernel").unwrap_or("?").to_string(),
            verdict: e.str("verdict").unwrap_or("(none)").to_string(),
            ms: e.f64("ms").unwrap_or(f64::NAN),
            mad_ms: e.f64("mad_ms").unwrap_or(f64::NAN),
            previous_ms: e.f64("previous_ms").unwrap_or(f64::NAN),
        })
        .collect())
}

/// Runs `sessions` same-code sessions; returns the report text.
pub fn measure(config: &Config, sessions: usize) -> Result<String, String> {
    let load_start = crate::report::load_average();
    let started = Instant::now();
    let kiln_exe = crate::artifacts::build_kiln(&config.workspace)?;
    let (_scratch, copy) = scratch_copy(&config.workspace, "kiln-bench-verdicts-")?;
    let pristine = std::fs::read_to_string(copy.join(KERNELS_SOURCE))
        .map_err(|e| format!("{KERNELS_SOURCE}: {e}"))?;
    let mut all = Vec::new();
    let mut out = String::new();
    for i in 0..sessions {
        let verdicts = one_session(&kiln_exe, &copy, config, i, &pristine)?;
        let wrong: Vec<&CallVerdict> = verdicts.iter().filter(|v| v.is_false()).collect();
        let busy = verdicts
            .iter()
            .filter(|v| v.verdict == "machine too busy")
            .count();
        eprintln!(
            "kiln-bench: same-code session {}/{sessions}: {} calls, {} false verdict(s), {busy} too busy (load {:.1})",
            i + 1,
            verdicts.len(),
            wrong.len(),
            crate::report::load_average()
        );
        all.extend(verdicts);
    }
    let judged = all.len();
    let wrong: Vec<&CallVerdict> = all.iter().filter(|v| v.is_false()).collect();
    let busy = all
        .iter()
        .filter(|v| v.verdict == "machine too busy")
        .count();
    // Read a change, then not on the second timing: the false verdicts
    // the confirmation kept out.
    let not_reproduced: Vec<&CallVerdict> = all
        .iter()
        .filter(|v| v.verdict == "not reproduced")
        .collect();
    let sessions_wrong = {
        let mut s: Vec<usize> = wrong.iter().map(|v| v.session).collect();
        s.dedup();
        s.len()
    };
    out.push_str(&format!(
        "same-code soak: {sessions} kiln dev sessions, the same code saved once in each (kernel-cpu, bundled workload, --no-tune, 2 threads{})\n  calls judged: {judged}; false verdicts: {} ({:.2}%) in {sessions_wrong} of {sessions} sessions; machine too busy: {busy}; not reproduced (a change read, then not on a second timing): {}\n",
        if std::env::var_os("KILN_BENCH_COLD").is_some_and(|v| v == "1") {
            ", --cold"
        } else {
            ""
        },
        wrong.len(),
        100.0 * wrong.len() as f64 / judged.max(1) as f64,
        not_reproduced.len()
    ));
    for v in wrong.iter().chain(&not_reproduced) {
        out.push_str(&format!(
            "  session {} call {} {}: {} ({:.3} ms ± {:.3}, previous {:.3} ms, x{:.2})\n",
            v.session,
            v.call,
            v.kernel,
            v.verdict,
            v.ms,
            v.mad_ms,
            v.previous_ms,
            v.ms / v.previous_ms
        ));
    }
    out.push_str(&format!(
        "  (run took {:.0} s; load average {load_start:.1} at the start, {:.1} at the end)\n",
        started.elapsed().as_secs_f64(),
        crate::report::load_average()
    ));
    Ok(out)
}

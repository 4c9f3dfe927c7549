//! Which workspace wrote a module's artifact.
//!
//! Two workspaces that share a target dir (a shared `CARGO_TARGET_DIR`, or
//! `KILN_MODULE_TARGET_DIR` as the end-to-end tests set it) build their
//! `kernel-cpu` to the same `libkernel_cpu.so` (cdylibs carry no hash in
//! their file name, in `deps/` too). Cargo decides freshness from file
//! times, so after workspace B built, workspace A's next build can be
//! reported fresh while the file holds B's code. A small record next to the
//! artifact names the workspace that wrote it last.

use std::path::{Path, PathBuf};

fn record_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.file_name().unwrap_or_default().to_os_string();
    name.push(".kiln-workspace");
    artifact.with_file_name(name)
}

fn canonical(workspace: &Path) -> PathBuf {
    workspace
        .canonicalize()
        .unwrap_or_else(|_| workspace.to_path_buf())
}

/// Whether `workspace` wrote `artifact` last. An artifact without a record
/// (built by plain cargo, or before records existed) counts as ours.
pub(super) fn built_by(artifact: &Path, workspace: &Path) -> bool {
    match std::fs::read_to_string(record_path(artifact)) {
        Ok(recorded) => Path::new(recorded.trim_end()) == canonical(workspace),
        Err(_) => true,
    }
}

/// Notes that `workspace` wrote `artifact`. Best effort: without the record
/// a later fresh build is trusted, as cargo would.
pub(super) fn record(artifact: &Path, workspace: &Path) {
    let text = format!("{}\n", canonical(workspace).display());
    if let Err(e) = std::fs::write(record_path(artifact), text) {
        tracing::debug!("cannot record who built {}: {e}", artifact.display());
    }
}

/// An exclusive lock on `target_dir` for the whole of one builder's build
/// (cargo runs, the provenance check, a removal and rebuild, the record),
/// so that two builders sharing the dir (threads or processes) never
/// remove an artifact the other has just rebuilt and is about to stage.
/// Cargo serialises its own runs anyway; this adds no waiting of note.
pub(super) struct BuildLock(#[allow(dead_code)] Option<std::fs::File>);

pub(super) fn lock(target_dir: &Path) -> BuildLock {
    let _ = std::fs::create_dir_all(target_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target_dir.join("kiln-build.lock"));
    match file {
        Ok(file) => {
            if let Err(e) = rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                tracing::debug!("cannot lock {}: {e}", target_dir.display());
            }
            BuildLock(Some(file))
        }
        Err(e) => {
            tracing::debug!(
                "cannot open the build lock in {}: {e}",
                target_dir.display()
            );
            BuildLock(None)
        }
    }
}

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

/// Removes `artifact` (and its twin in `deps/`, which cargo links it from)
/// so that cargo builds it again: the file holds another workspace's code
/// although cargo calls it fresh. Called under [`lock`].
pub(super) fn remove_artifact(artifact: &Path) {
    tracing::info!(
        "{} was built by another workspace sharing this target dir: building it again",
        artifact.display()
    );
    let _ = std::fs::remove_file(artifact);
    if let (Some(dir), Some(name)) = (artifact.parent(), artifact.file_name()) {
        let _ = std::fs::remove_file(dir.join("deps").join(name));
    }
    let _ = std::fs::remove_file(record_path(artifact));
}

/// Copies `artifact` to `<target_dir>/kiln-built/<workspace hash>/`, a file
/// only this workspace's builds write, and returns the copy. Called under
/// [`lock`], so the copy is the file this build produced: once the lock is
/// released another workspace may overwrite the shared one. The copy is
/// written beside its final name and renamed over it, so a reader never
/// sees half a file.
pub(super) fn private_copy(
    artifact: &Path,
    target_dir: &Path,
    workspace: &Path,
) -> std::io::Result<PathBuf> {
    let dir = target_dir
        .join("kiln-built")
        .join(workspace_key(&canonical(workspace)));
    std::fs::create_dir_all(&dir)?;
    let name = artifact.file_name().unwrap_or_default();
    let copy = dir.join(name);
    let mut partial = name.to_os_string();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = dir.join(partial);
    std::fs::copy(artifact, &partial)?;
    std::fs::rename(&partial, &copy)?;
    Ok(copy)
}

/// A short stable name for a workspace path (FNV-1a of its bytes).
fn workspace_key(workspace: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let hash = workspace
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// An exclusive lock on `target_dir` for the whole of one builder's build
/// (cargo runs, the provenance check, a removal and rebuild, the record and
/// the private copy), so that two builders sharing the dir (threads or
/// processes) never remove or overwrite an artifact the other has just
/// built and not yet copied. Every builder of a kiln target dir takes it:
/// kiln's own and the test support's (`tests/support/lib.rs`). Cargo
/// serialises its own runs anyway; this adds no waiting of note.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workspace_gets_its_own_copy_and_a_copy_survives_the_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("release/libk.so");
        std::fs::create_dir_all(shared.parent().unwrap()).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();

        std::fs::write(&shared, "A's code").unwrap();
        let a_copy = private_copy(&shared, dir.path(), &a).unwrap();
        std::fs::write(&shared, "B's code").unwrap();
        let b_copy = private_copy(&shared, dir.path(), &b).unwrap();
        assert_ne!(a_copy, b_copy);
        assert_eq!(std::fs::read_to_string(&a_copy).unwrap(), "A's code");
        assert_eq!(std::fs::read_to_string(&b_copy).unwrap(), "B's code");
        // A's next build replaces A's copy only, and leaves no partial file.
        std::fs::write(&shared, "A's new code").unwrap();
        assert_eq!(private_copy(&shared, dir.path(), &a).unwrap(), a_copy);
        assert_eq!(std::fs::read_to_string(&a_copy).unwrap(), "A's new code");
        assert_eq!(
            std::fs::read_dir(a_copy.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn provenance_is_per_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("libk.so");
        std::fs::write(&artifact, "x").unwrap();
        assert!(built_by(&artifact, dir.path()), "no record: trusted");
        record(&artifact, &dir.path().join("a"));
        assert!(built_by(&artifact, &dir.path().join("a")));
        assert!(!built_by(&artifact, &dir.path().join("b")));
        remove_artifact(&artifact);
        assert!(!artifact.exists());
        assert!(
            built_by(&artifact, &dir.path().join("b")),
            "record removed too"
        );
    }
}

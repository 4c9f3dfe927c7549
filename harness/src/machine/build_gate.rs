//! Is cargo building in a target directory right now? Cargo holds an
//! exclusive `flock` on `PROFILE_DIR/.cargo-lock` for the whole build; a
//! non-blocking shared lock attempt that fails says a build is running.
//! `kiln machine` waits for such builds before it measures; the dev loop
//! knows its own builds and passes `Policy::BuildRunning` instead.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The build lock files kiln's builds take: the host's and the modules'
/// release (and debug) profile directories under `target_dir`.
pub fn lock_files(target_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for base in [target_dir.to_path_buf(), target_dir.join("kiln-modules")] {
        for profile in ["release", "debug"] {
            files.push(base.join(profile).join(".cargo-lock"));
        }
    }
    files
}

/// The first of `lock_files` that a running cargo holds, if any.
pub fn build_running(lock_files: &[PathBuf]) -> Option<PathBuf> {
    lock_files.iter().find(|f| held(f)).cloned()
}

/// Whether another process holds an exclusive lock on `file`.
fn held(file: &Path) -> bool {
    let Ok(handle) = std::fs::File::open(file) else {
        return false;
    };
    let fd = handle.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `handle`, alive for both
    // calls; flock only reads its arguments.
    let rc = unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        // SAFETY: as above; releases the lock this call took.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        false
    } else {
        std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_a_free_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".cargo-lock");
        std::fs::write(&lock, "").unwrap();
        let files = vec![dir.path().join("missing"), lock.clone()];
        assert_eq!(build_running(&files), None);
        let holder = std::fs::File::open(&lock).unwrap();
        // SAFETY: `holder` is open for the whole test.
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert_eq!(build_running(&files), Some(lock.clone()));
        drop(holder); // closing releases it
        assert_eq!(build_running(&files), None);
    }
}

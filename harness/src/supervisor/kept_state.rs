//! The last good point kept on disk, per lane: every checkpoint of the
//! lane is copied behind the session to
//! `target/kiln/state/<module>.last-good.snapshot` (`isolation/disk_copy.rs`),
//! named after the module the lane started with (a switch keeps the name:
//! the same `kiln dev` command finds it again). While the session runs,
//! `<module>.running` says so; a clean end (Ctrl-C, SIGTERM, SIGHUP, `q`)
//! waits for the last copy and removes it.
//!
//! At start, what the previous session left decides ([`plan`]):
//! - it **died** (the marker is there, so it never ended cleanly: SIGKILL,
//!   the OOM killer, a power cut; the workspace's lock says no session
//!   runs): its file is restored, unless `--state FILE`, the state saved
//!   for a restart or `--fresh` says otherwise. The worker checks every
//!   checksum as it loads the file (one read); only when it refuses the
//!   file is the file read through again ([`snapshot_file::verify`]) to
//!   tell a damaged file from one the module cannot take;
//! - it **ended cleanly**: its file is not restored (a normal start never
//!   resumes stale state silently);
//! - it died **serving another workload** (the marker names the workload
//!   file it served): not restored either, the state of one workload is
//!   never served with another's calls;
//! - a file not restored is moved to `<module>.previous.snapshot` and the
//!   log says where (`--state` restores it); a damaged one to
//!   `<module>.damaged.snapshot`. Nothing is deleted.

use std::path::{Path, PathBuf};

use crate::events::{self, emit};
use crate::isolation::isolated::IsolatedEngine;
use crate::isolation::worker_client::WorkerError;
use crate::swap::snapshot_file;
use crate::swap::stage::Staged;
use crate::worker::protocol::{Started, StateSource};
use kiln_stats::bytes;

/// Where one lane's last good point is kept.
#[derive(Clone, Debug)]
pub(super) struct KeptState {
    pub(super) module: String,
    /// The last good point, copied behind the session.
    pub(super) file: PathBuf,
    /// There while a session serving this lane runs; names the workload
    /// it serves ([`KeptState::begin`]).
    pub(super) running: PathBuf,
    /// The workload this session serves: its file's absolute path, or
    /// [`BUNDLED`].
    pub(super) workload: String,
    /// A kept file that a start did not restore.
    pub(super) previous: PathBuf,
    /// A kept file that did not pass its checks.
    pub(super) damaged: PathBuf,
}

/// What the previous session of a lane left on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Left {
    /// No kept file.
    Nothing,
    /// A kept file, and the session ended cleanly.
    EndedCleanly,
    /// A kept file, and the session did not end cleanly.
    Died,
    /// A kept file of a session that did not end cleanly serving another
    /// workload than this one.
    DiedServingAnother,
}

/// What the marker says of a session without `--workload`.
pub(super) const BUNDLED: &str = "the bundled workload";

/// Why a kept file is not restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NotRestored {
    EndedCleanly,
    /// `--state FILE` names a file that exists: it wins.
    StateGiven,
    /// The state saved when the contract changed is restored instead.
    RestartState,
    /// Another served backend of this session: it starts from the state
    /// the first backend restored (it has no last good point of its own
    /// to restore).
    FirstBackend,
    /// `--fresh`.
    Fresh,
    /// The session that died served another workload.
    OtherWorkload,
}

impl NotRestored {
    pub(super) fn reason(self) -> &'static str {
        match self {
            NotRestored::EndedCleanly => "ended_cleanly",
            NotRestored::StateGiven => "state_given",
            NotRestored::RestartState => "restart_state",
            NotRestored::FirstBackend => "first_backend",
            NotRestored::Fresh => "fresh",
            NotRestored::OtherWorkload => "other_workload",
        }
    }
}

/// What a start does with the kept file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Nothing is kept.
    Nothing,
    /// Restore it (after checking it).
    Restore,
    /// Keep it aside, not restored.
    SetAside(NotRestored),
}

/// What to do with what the previous session `left`, when `given` (an
/// explicit `--state` file or the restart state) would be restored, and
/// with `--fresh`.
pub(super) fn plan(left: Left, given: Option<NotRestored>, fresh: bool) -> Plan {
    match left {
        Left::Nothing => Plan::Nothing,
        Left::EndedCleanly => Plan::SetAside(NotRestored::EndedCleanly),
        Left::Died | Left::DiedServingAnother if fresh => Plan::SetAside(NotRestored::Fresh),
        Left::Died => given.map_or(Plan::Restore, Plan::SetAside),
        Left::DiedServingAnother => Plan::SetAside(
            given
                .filter(|g| *g != NotRestored::FirstBackend)
                .unwrap_or(NotRestored::OtherWorkload),
        ),
    }
}

/// Checks the kept file at `path` whole (every checksum) without loading
/// it; the error names the file and the damage.
pub(super) fn check(path: &Path) -> Result<snapshot_file::Verified, String> {
    snapshot_file::verify(path).map_err(|e| format!("the kept last good point {e}"))
}

/// A state file a start restores instead of the kept one, and why.
pub(super) struct Given {
    pub(super) path: PathBuf,
    pub(super) why: NotRestored,
}

impl KeptState {
    /// The files of the lane that started with `module`, under `target`,
    /// in a session serving `workload` (the workload file's absolute path,
    /// or [`BUNDLED`]).
    pub(super) fn new(target: &Path, module: &str, workload: &str) -> KeptState {
        let dir = target.join("kiln").join("state");
        KeptState {
            module: module.to_string(),
            workload: workload.to_string(),
            file: dir.join(format!("{module}.last-good.snapshot")),
            running: dir.join(format!("{module}.running")),
            previous: dir.join(format!("{module}.previous.snapshot")),
            damaged: dir.join(format!("{module}.damaged.snapshot")),
        }
    }

    /// What the previous session of this lane left. Called while holding
    /// the workspace's lock: a marker found is a dead session's.
    pub(super) fn left(&self) -> Left {
        match (self.file.exists(), self.running.exists()) {
            (false, _) => Left::Nothing,
            (true, false) => Left::EndedCleanly,
            (true, true) => match self.served_before() {
                Some(other) if other != self.workload => Left::DiedServingAnother,
                _ => Left::Died,
            },
        }
    }

    /// The workload the session that wrote the marker served; none from a
    /// marker written before markers named it (taken as this one's).
    fn served_before(&self) -> Option<String> {
        let marker = std::fs::read_to_string(&self.running).ok()?;
        marker
            .lines()
            .find_map(|l| l.strip_prefix("workload "))
            .map(str::to_string)
    }

    /// Whether [`KeptState::start`] with `given` and `fresh` will start
    /// from no state (the workload's buffers): nothing given, and no kept
    /// file of a session that died to restore (one that turns out damaged
    /// starts from the workload too, which this does not foresee).
    pub(super) fn starts_from_workload(&self, given: Option<&Given>, fresh: bool) -> bool {
        given.is_none() && !matches!(plan(self.left(), None, fresh), Plan::Restore)
    }

    /// Starts `engine` on `staged` with its state: `given` if any, else the
    /// kept file of a session that died, else none (the workload's buffers
    /// are loaded after). Then marks the session as running and keeps
    /// every checkpoint of it on disk. A kept file the worker refuses
    /// (damaged, or a module that cannot take it) is set aside and the
    /// start made again from no state, on a version `restage` stages anew
    /// (the refused start's worker ended with the first one's files):
    /// returns what started, the version that serves and the file its
    /// state was restored from (none: the workload's buffers).
    pub(super) fn start(
        &self,
        engine: &mut IsolatedEngine,
        staged: Staged,
        restage: &dyn Fn() -> Result<Staged, String>,
        given: Option<Given>,
        fresh: bool,
    ) -> Result<(Started, Staged, Option<PathBuf>), WorkerError> {
        let plan = plan(self.left(), given.as_ref().map(|g| g.why), fresh);
        // A kept file is not read through before the start: the worker's
        // load checks every checksum as it copies the file into memory
        // (one pass, `worker/state_file_part.rs`), and a start it refuses
        // is told apart (damaged or not) by reading it through then.
        let mut restoring = false;
        let source = match (&given, plan) {
            (Some(g), _) => {
                tracing::info!("restoring state from {}", g.path.display());
                StateSource::File(g.path.clone())
            }
            (None, Plan::Restore) => {
                restoring = true;
                StateSource::File(self.file.clone())
            }
            (None, _) => StateSource::Empty,
        };
        let (started, staged) = match engine.start(&staged, source) {
            Err(WorkerError::Failed(e)) if restoring => {
                restoring = false;
                match check(&self.file) {
                    Err(damage) => self.cannot_restore("damaged", &self.damaged, &damage),
                    Ok(_) => self.cannot_restore(
                        "refused",
                        &self.previous,
                        &format!(
                            "{} cannot start with its last good point ({e})",
                            staged.label
                        ),
                    ),
                }
                let again = restage().map_err(WorkerError::Failed)?;
                (engine.start(&again, StateSource::Empty)?, again)
            }
            other => (other?, staged),
        };
        let restored_from = if restoring {
            self.restored(engine, &started);
            Some(self.file.clone())
        } else if let Some(g) = &given {
            tracing::info!("state restored: {}", started.import);
            Some(g.path.clone())
        } else {
            None
        };
        if let Plan::SetAside(why) = plan {
            self.not_restored(why, given.as_ref());
        }
        self.begin(engine);
        Ok((started, staged, restored_from))
    }

    /// Says what was restored: the file's length, and the state's hash as
    /// the engine holds it, from a checkpoint taken now (it points into
    /// what the start loaded, so it reads only the small sections again).
    /// The session's own first checkpoint finds it unchanged.
    fn restored(&self, engine: &mut IsolatedEngine, started: &Started) {
        let bytes = std::fs::metadata(&self.file).map_or(0, |m| m.len());
        let state_hash = match engine.take_checkpoint() {
            Ok(c) => c.hash,
            Err(e) => {
                tracing::warn!("cannot checkpoint the restored state: {e}");
                String::new()
            }
        };
        emit!(
            tracing::Level::INFO,
            events::StateRecovered {
                module: self.module.clone(),
                version: started.version,
                path: self.file.display().to_string(),
                bytes,
                state_hash: state_hash.clone(),
            },
            "the previous session did not end cleanly: restored its last good point from {} ({}, state {}): {}",
            self.file.display(),
            bytes::human(bytes),
            state_hash,
            started.import
        );
        let lost: Vec<&str> = started
            .dropped
            .iter()
            .map(String::as_str)
            .filter(|s| !shared_state::Snapshot::is_cache_section(s))
            .collect();
        if !lost.is_empty() {
            // The session's first checkpoint replaces the file: keep it.
            let kept = self.copy_aside();
            emit!(
                tracing::Level::WARN,
                events::StateDropped {
                    module: self.module.clone(),
                },
                "{} does not know these state sections of the restored last good point; they were \
                 not carried over: {}. The file is kept in {}",
                started.label,
                lost.join(", "),
                kept.display()
            );
        }
    }

    fn not_restored(&self, why: NotRestored, given: Option<&Given>) {
        let served = self.served_before();
        let kept = self.set_aside(&self.previous);
        let given = given.map_or_else(String::new, |g| g.path.display().to_string());
        let message = match why {
            NotRestored::EndedCleanly => format!(
                "the previous session ended cleanly: its last good point is not restored; kept in {} \
                 (`--state {}` restores it)",
                kept.display(),
                kept.display()
            ),
            NotRestored::StateGiven => format!(
                "the previous session did not end cleanly, but --state {given} was restored instead \
                 of its last good point, which is kept in {}",
                kept.display()
            ),
            NotRestored::RestartState => format!(
                "the previous session did not end cleanly, but the state it saved for the restart \
                 ({given}) was restored instead of its last good point, which is kept in {}",
                kept.display()
            ),
            NotRestored::FirstBackend => format!(
                "this session's backends start from one state ({given}); the last good point of \
                 the previous session (which did not end cleanly) is kept in {}",
                kept.display()
            ),
            NotRestored::Fresh => format!(
                "--fresh: the last good point of the previous session (which did not end cleanly) is \
                 not restored; kept in {}",
                kept.display()
            ),
            NotRestored::OtherWorkload => format!(
                "the previous session did not end cleanly, but it served another workload ({}): its \
                 last good point is not restored with this one ({}); kept in {} (`--state {}` \
                 restores it)",
                served.as_deref().unwrap_or("unknown"),
                self.workload,
                kept.display(),
                kept.display()
            ),
        };
        emit!(
            tracing::Level::INFO,
            events::StateNotRecovered {
                module: self.module.clone(),
                path: self.file.display().to_string(),
                reason: why.reason().to_string(),
                kept: kept.display().to_string(),
            },
            "{message}"
        );
    }

    /// The kept file of a session that died cannot be restored (`reason`:
    /// `damaged`, `refused`, `why`): it is moved to `to` and the session
    /// starts from the workload.
    fn cannot_restore(&self, reason: &'static str, to: &Path, why: &str) {
        let kept = self.set_aside(to);
        emit!(
            tracing::Level::ERROR,
            events::StateNotRecovered {
                module: self.module.clone(),
                path: self.file.display().to_string(),
                reason: reason.to_string(),
                kept: kept.display().to_string(),
            },
            "the previous session did not end cleanly, but {why}; starting from the workload \
             instead. The file is kept as {}",
            kept.display()
        );
    }

    /// Moves the kept file to `to`; returns where it is now (the file it
    /// replaces there let go behind: [`rename_letting_go`]).
    fn set_aside(&self, to: &Path) -> PathBuf {
        match rename_letting_go(&self.file, to) {
            Ok(()) => to.to_path_buf(),
            Err(e) => {
                tracing::warn!(
                    "cannot move {} to {}: {e}; this session's checkpoints will replace it",
                    self.file.display(),
                    to.display()
                );
                self.file.clone()
            }
        }
    }

    /// Keeps the kept file under the `previous` name too (it stays in
    /// use): a hard link (made as a temporary name, renamed into place),
    /// safe because the kept file is only ever replaced by a rename, never
    /// written in place; a copy (the same way) where links fail. Never
    /// written into `previous` itself: that may be one file with a user's
    /// `--state` file (`isolation/disk_copy/state_file.rs`).
    fn copy_aside(&self) -> PathBuf {
        let tmp = crate::isolation::disk_copy::temporary_path(&self.previous);
        let _ = std::fs::remove_file(&tmp);
        let made = std::fs::hard_link(&self.file, &tmp)
            .or_else(|_| std::fs::copy(&self.file, &tmp).map(|_| ()))
            .and_then(|()| rename_letting_go(&tmp, &self.previous));
        // Left after a failure, or after a rename that did nothing (the
        // two names were one file already).
        let _ = std::fs::remove_file(&tmp);
        match made {
            Ok(()) => self.previous.clone(),
            Err(e) => {
                tracing::warn!(
                    "cannot copy {} to {}: {e}; this session's checkpoints will replace it",
                    self.file.display(),
                    self.previous.display()
                );
                self.file.clone()
            }
        }
    }

    /// The session runs: the marker, and every checkpoint on disk.
    fn begin(&self, engine: &mut IsolatedEngine) {
        let marked = self
            .running
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::write(
                    &self.running,
                    format!("pid {}\nworkload {}\n", std::process::id(), self.workload),
                )
            });
        if let Err(e) = marked.and_then(|()| engine.keep_on_disk(&self.file, &self.module)) {
            tracing::warn!(
                module = %self.module,
                "cannot keep the last good point on disk in {}: {e}; a kill of kiln dev loses it",
                self.file.display()
            );
        }
    }

    /// A clean end: waits for the last checkpoint to be on disk, then
    /// removes the marker (the next start will not restore the file).
    pub(super) fn end(&self, engine: &mut IsolatedEngine) {
        match engine.stop_keeping() {
            Some(Ok(kept)) => tracing::info!(
                module = %self.module,
                "the last good point is kept in {} ({}); the next kiln dev starts from the workload \
                 and moves it to {} (`--state {}` restores it from there)",
                kept.path.display(),
                bytes::human(kept.bytes),
                self.previous.display(),
                self.previous.display()
            ),
            Some(Err(e)) => tracing::error!(
                module = %self.module,
                "the last good point could not be kept on disk: {e}"
            ),
            None => {}
        }
        if let Err(e) = std::fs::remove_file(&self.running)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.running.display());
        }
    }
}

/// Renames `from` over `to`, the file `to` named let go on a thread of its
/// own: it is held open across the rename, so the rename does not free it,
/// and closed there. Freeing a GiB-sized file's blocks and pages when its
/// last name went took 1.3 s at 4 GiB here, in the rename, on the start's
/// path (`strace`: `rename` of the kept file over the previous one).
fn rename_letting_go(from: &Path, to: &Path) -> std::io::Result<()> {
    let replaced = std::fs::File::open(to).ok();
    let renamed = std::fs::rename(from, to);
    if let Some(replaced) = replaced {
        let _ = std::thread::Builder::new()
            .name("kiln-let-go".into())
            .spawn(move || drop(replaced));
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_state::{Scalar, Snapshot, Tensor};

    #[test]
    fn a_rename_letting_go_replaces_the_name_and_keeps_an_open_reader_whole() {
        let dir = std::env::temp_dir().join(format!("kiln-kept-let-go-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (from, to) = (dir.join("last-good"), dir.join("previous"));
        // Nothing at `to` yet.
        std::fs::write(&from, b"first").unwrap();
        rename_letting_go(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"first");
        assert!(!from.exists());
        // Over an older file, which a reader still has open.
        std::fs::write(&from, b"second").unwrap();
        let mut reader = std::fs::File::open(&to).unwrap();
        rename_letting_go(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"second");
        let mut old = String::new();
        std::io::Read::read_to_string(&mut reader, &mut old).unwrap();
        assert_eq!(old, "first");
        // A missing source: the error, and `to` untouched.
        assert!(rename_letting_go(&from, &to).is_err());
        assert_eq!(std::fs::read(&to).unwrap(), b"second");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_start_restores_only_what_a_session_that_died_left() {
        use NotRestored::*;
        assert_eq!(plan(Left::Nothing, None, false), Plan::Nothing);
        assert_eq!(plan(Left::Nothing, Some(StateGiven), true), Plan::Nothing);
        assert_eq!(plan(Left::Died, None, false), Plan::Restore);
        // A clean end is never resumed by a normal start.
        assert_eq!(
            plan(Left::EndedCleanly, None, false),
            Plan::SetAside(EndedCleanly)
        );
        assert_eq!(
            plan(Left::EndedCleanly, Some(StateGiven), false),
            Plan::SetAside(EndedCleanly)
        );
        // An explicit --state file wins, and so does the restart state;
        // --fresh ignores the kept file.
        assert_eq!(
            plan(Left::Died, Some(StateGiven), false),
            Plan::SetAside(StateGiven)
        );
        assert_eq!(
            plan(Left::Died, Some(RestartState), false),
            Plan::SetAside(RestartState)
        );
        assert_eq!(plan(Left::Died, None, true), Plan::SetAside(Fresh));
        // The state of another workload is never restored with this one's
        // calls; an explicit file and --fresh say why as before.
        assert_eq!(
            plan(Left::DiedServingAnother, None, false),
            Plan::SetAside(OtherWorkload)
        );
        assert_eq!(
            plan(Left::DiedServingAnother, Some(StateGiven), false),
            Plan::SetAside(StateGiven)
        );
        assert_eq!(
            plan(Left::DiedServingAnother, None, true),
            Plan::SetAside(Fresh)
        );
        // Another backend of the session is not told its last good point
        // gave way to the first backend's when the reason is the workload.
        assert_eq!(
            plan(Left::DiedServingAnother, Some(FirstBackend), false),
            Plan::SetAside(OtherWorkload)
        );
        assert_eq!(
            plan(Left::EndedCleanly, Some(FirstBackend), false),
            Plan::SetAside(EndedCleanly)
        );
    }

    #[test]
    fn the_files_are_named_after_the_lanes_module_and_the_marker_says_who_died() {
        let dir = std::env::temp_dir().join(format!("kiln-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kept = KeptState::new(&dir, "kernel-cpu", "/w/big.kwl");
        assert_eq!(
            kept.file,
            dir.join("kiln/state/kernel-cpu.last-good.snapshot")
        );
        assert_eq!(kept.running, dir.join("kiln/state/kernel-cpu.running"));
        assert_eq!(kept.left(), Left::Nothing);
        std::fs::create_dir_all(kept.file.parent().unwrap()).unwrap();
        std::fs::write(&kept.running, "pid 1\n").unwrap();
        assert_eq!(kept.left(), Left::Nothing, "died before its first copy");
        std::fs::write(&kept.file, b"x").unwrap();
        assert_eq!(kept.left(), Left::Died);
        // The marker names the workload served: a start on another one
        // sees a session that died serving another.
        std::fs::write(&kept.running, "pid 1\nworkload /w/big.kwl\n").unwrap();
        assert_eq!(kept.left(), Left::Died);
        let other = KeptState::new(&dir, "kernel-cpu", BUNDLED);
        assert_eq!(other.left(), Left::DiedServingAnother);
        assert_eq!(other.served_before().as_deref(), Some("/w/big.kwl"));
        std::fs::remove_file(&kept.running).unwrap();
        assert_eq!(kept.left(), Left::EndedCleanly);
        assert_eq!(
            KeptState::new(&dir, "kernel-vulkan", "/w/big.kwl").left(),
            Left::Nothing
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_kept_file_is_named_with_its_damage() {
        let dir = std::env::temp_dir().join(format!("kiln-kept-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kept = KeptState::new(&dir, "kernel-cpu", "/w/big.kwl");
        std::fs::create_dir_all(kept.file.parent().unwrap()).unwrap();
        let mut state = Snapshot::new("kernel-cpu", "cpu");
        state.insert_tensor("resident/x", Tensor::from_f32(&[4096], vec![1.5; 4096]));
        state.insert_scalar("counters/calls/saxpy", Scalar::I64(3));
        snapshot_file::save(&state, &kept.file).unwrap();
        let good = std::fs::read(&kept.file).unwrap();
        assert_eq!(
            check(&kept.file).unwrap().state_hash,
            crate::swap::state_hash::state_hash(&state)
        );
        let name = kept.file.display().to_string();
        // Cut short (a copy that a power cut tore, say).
        std::fs::write(&kept.file, &good[..good.len() - 100]).unwrap();
        let e = check(&kept.file).unwrap_err();
        assert!(e.contains(&name) && e.contains("run past the end"), "{e}");
        // One bit of a resident flipped.
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        std::fs::write(&kept.file, &flipped).unwrap();
        let e = check(&kept.file).unwrap_err();
        assert!(
            e.contains(&name) && e.contains("section resident/x: checksum mismatch"),
            "{e}"
        );
        // Empty (written, never synced).
        std::fs::write(&kept.file, b"").unwrap();
        let e = check(&kept.file).unwrap_err();
        assert!(e.contains(&name) && e.contains("truncated"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

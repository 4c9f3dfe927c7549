//! The last good point kept on disk, behind the session: a thread copies
//! each committed checkpoint (a sealed memfd) to a file, so that a supervisor killed
//! outright (SIGKILL, the OOM killer) leaves its last good point's state
//! recoverable by the next `kiln dev`.
//!
//! - **Never waited for.** A commit only hands the sealed memfd over
//!   ([`State::submit`]); the session goes on writing checkpoints into new
//!   ones while the copy reads this one (it cannot change: sealed).
//! - **Coalesced.** While a copy runs, newer checkpoints replace each other:
//!   only the newest is copied after it.
//! - **Whole or not at all.** The copy goes to a temporary file in the same
//!   directory, its data is synced (`fdatasync`, on this thread: the
//!   session never waits for it), then it is renamed over the file. A kill
//!   mid-copy leaves the previous file complete; a power cut leaves the
//!   previous file or the new one, never a torn one (the data is on disk
//!   before the rename; the rename itself may be lost).
//!
//! A checkpoint may be several sealed memfds (its parts, each holding what
//! changed since the one before): the copy maps them all and writes one
//! whole snapshot file from them.
//!
//! The bytes are a snapshot file (`swap/snapshot_file.rs`), so the file
//! checks itself when it is read back: a header checksum and one per
//! tensor.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::checkpoint_parts::Parts;
use crate::events::{self, emit};
use crate::worker::protocol::Checkpointed;

/// A checkpoint handed to the copy: its sealed parts, held until copied.
#[derive(Clone, Debug)]
struct Job {
    parts: Arc<Parts>,
    written: Checkpointed,
}

/// What the session and the copy share, under one lock.
#[derive(Debug, Default)]
pub struct State {
    /// Whether a copy is under way.
    pub copying: bool,
    /// The newest checkpoint not yet copied.
    pending: Option<Job>,
    /// Finish the pending copy, then end.
    stop: bool,
    /// The last copy's outcome.
    last: Option<Result<Kept, String>>,
    /// Copies completed (renamed into place).
    pub copies: u64,
}

impl State {
    /// The checkpoint in `file` is the newest: copy it next (replacing any
    /// older one still waiting).
    pub fn submit(&mut self, parts: Arc<Parts>, written: Checkpointed) {
        self.pending = Some(Job { parts, written });
    }

    /// A new copy starts: the outcome of an earlier one is not its own.
    pub fn forget_last(&mut self) {
        self.last = None;
    }
}

/// What to copy, shared by the session's [`super::checkpoint::Checkpoint`]
/// and its copy thread.
#[derive(Debug, Default)]
pub struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wake(&self) {
        self.changed.notify_all();
    }
}

/// One checkpoint on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub path: PathBuf,
    pub bytes: u64,
    pub state_hash: String,
    /// Copy, sync and rename.
    pub ms: f64,
    /// Of which the sync.
    pub sync_ms: f64,
}

/// The copy thread.
pub struct DiskCopy {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The temporary file a copy to `path` is written to (hidden, in the same
/// directory so that the rename is atomic).
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.writing"))
}

/// Writes the checkpoint in `parts` (sealed memfds, mapped) as one whole
/// snapshot file to `path` via its temporary file.
/// `before_rename` runs between the sync and the rename (tests hold the
/// copy there).
fn copy_checkpoint(
    checkpoint: &Parts,
    written: &Checkpointed,
    path: &Path,
    before_rename: &dyn Fn(),
) -> Result<Kept, String> {
    let start = Instant::now();
    let tmp = temporary_path(path);
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", tmp.display());
    let mut to = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(fail)?);
    let n = match checkpoint.write_whole(&mut to) {
        Ok(n) => n,
        Err(e) => {
            drop(to);
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", tmp.display()));
        }
    };
    let to = to.into_inner().map_err(|e| fail(e.into_error()))?;
    let sync = Instant::now();
    to.sync_data().map_err(fail)?;
    let sync_ms = sync.elapsed().as_secs_f64() * 1e3;
    drop(to);
    before_rename();
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))?;
    Ok(Kept {
        path: path.to_path_buf(),
        bytes: n,
        state_hash: written.hash.clone(),
        ms: start.elapsed().as_secs_f64() * 1e3,
        sync_ms,
    })
}

impl DiskCopy {
    /// Starts the copy thread for `path` (its directory is created).
    pub fn start(path: &Path, module: &str, shared: Arc<Shared>) -> std::io::Result<DiskCopy> {
        Self::start_with(path, module, shared, Box::new(|| {}))
    }

    fn start_with(
        path: &Path,
        module: &str,
        shared: Arc<Shared>,
        before_rename: Box<dyn Fn() + Send>,
    ) -> std::io::Result<DiskCopy> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let path = path.to_path_buf();
        let module = module.to_string();
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-state-disk".into())
            .spawn(move || copy_loop(&theirs, &path, &module, &*before_rename))?;
        Ok(DiskCopy {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits for the pending copy, if any, ends the thread and returns the
    /// last copy's outcome.
    pub fn finish(mut self) -> Option<Result<Kept, String>> {
        self.stop();
        self.shared.lock().last.clone()
    }

    fn stop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.lock().stop = false;
    }
}

impl Drop for DiskCopy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn copy_loop(shared: &Shared, path: &Path, module: &str, before_rename: &dyn Fn()) {
    let mut last_error: Option<String> = None;
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if let Some(job) = state.pending.take() {
                    state.copying = true;
                    break job;
                }
                if state.stop {
                    return;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        let outcome = copy_checkpoint(&job.parts, &job.written, path, before_rename);
        // Let go of the memfd: if a newer checkpoint is current, its memory
        // goes back now (unless a worker still maps it).
        drop(job);
        {
            let mut state = shared.lock();
            state.copying = false;
            if outcome.is_ok() {
                state.copies += 1;
            }
            state.last = Some(outcome.clone());
        }
        shared.wake();
        match outcome {
            Ok(kept) => {
                last_error = None;
                emit!(
                    tracing::Level::DEBUG,
                    events::StateKept {
                        module: module.to_string(),
                        path: kept.path.display().to_string(),
                        bytes: kept.bytes,
                        state_hash: kept.state_hash.clone(),
                        ms: kept.ms,
                        sync_ms: kept.sync_ms,
                    },
                    "the last good point is on disk: {} ({}) in {:.1} ms (sync {:.1} ms)",
                    kept.path.display(),
                    kiln_stats::bytes::human(kept.bytes),
                    kept.ms,
                    kept.sync_ms
                );
            }
            Err(e) => {
                // Once per kind of failure, not at every checkpoint.
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(
                        module = %module,
                        "cannot keep the last good point on disk: {e}; a kill of kiln dev now \
                         loses what changed since the last copy that was kept"
                    );
                }
                last_error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::checkpoint::Checkpoint;
    use crate::swap::snapshot_file;
    use shared_state::{Scalar, Snapshot, Tensor};
    use std::time::Duration;

    /// A snapshot whose resident and counter say `n`, of `elements` f32.
    fn state(n: i64, elements: usize) -> Snapshot {
        let mut s = Snapshot::new("kernel-test", "cpu");
        s.insert_tensor(
            "resident/x",
            Tensor::from_f32(&[elements], vec![n as f32; elements]),
        );
        s.insert_scalar("counters/calls/x", Scalar::I64(n));
        s
    }

    /// Writes `snapshot` into the memfd `checkpoint` makes next, as a
    /// worker does (by its path), and commits it.
    fn take(checkpoint: &mut Checkpoint, snapshot: &Snapshot) -> Checkpointed {
        let path = checkpoint.begin().unwrap();
        let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let bytes = snapshot_file::write_to(snapshot, &mut file).unwrap();
        drop(file);
        let written = Checkpointed {
            bytes,
            hash: crate::swap::state_hash::state_hash(snapshot),
            ms: 0.0,
            ..Default::default()
        };
        checkpoint.commit(written.clone()).unwrap();
        written
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kiln-disk-copy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn on_disk(path: &Path) -> String {
        snapshot_file::verify(path).unwrap().state_hash
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < end, "{what} did not happen in time");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A checkpoint on disk with the copy held just before its rename by
    /// `hold`: each message lets one copy through.
    fn held(
        checkpoint: &mut Checkpoint,
        path: &Path,
    ) -> (
        crossbeam_channel::Sender<()>,
        crossbeam_channel::Receiver<()>,
    ) {
        let (let_through, hold) = crossbeam_channel::unbounded::<()>();
        let (arrive, arrived) = crossbeam_channel::unbounded::<()>();
        let copy = DiskCopy::start_with(
            path,
            "kernel-test",
            checkpoint.shared(),
            Box::new(move || {
                let _ = arrive.send(());
                let _ = hold.recv();
            }),
        )
        .unwrap();
        checkpoint.attach(copy);
        (let_through, arrived)
    }

    #[test]
    fn every_checkpoint_reaches_the_file_and_the_session_never_waits() {
        let dir = dir("each");
        let path = dir.join("kernel-test.last-good.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        checkpoint.keep_on_disk(&path, "kernel-test").unwrap();
        for n in 0..5 {
            let written = take(&mut checkpoint, &state(n, 1000));
            wait_for("the copy", || {
                path.exists() && on_disk(&path) == written.hash
            });
        }
        let last = checkpoint.stop_keeping().expect("copied").unwrap();
        assert_eq!(
            last.state_hash,
            crate::swap::state_hash::state_hash(&state(4, 1000))
        );
        assert_eq!(last.bytes, std::fs::metadata(&path).unwrap().len());
        assert!(!temporary_path(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn checkpoints_during_a_copy_coalesce_into_the_newest() {
        let dir = dir("coalesce");
        let path = dir.join("kernel-test.last-good.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        let (let_through, arrived) = held(&mut checkpoint, &path);
        let first = take(&mut checkpoint, &state(1, 1000));
        // The copy of the first holds its memfd (written and synced, not
        // yet renamed): checkpoints go to new ones, without waiting for it.
        arrived.recv_timeout(Duration::from_secs(120)).unwrap();
        assert!(checkpoint.shared().lock().copying);
        let mut newest = first.clone();
        for n in 2..=6 {
            newest = take(&mut checkpoint, &state(n, 1000));
            assert!(checkpoint.shared().lock().copying, "still held mid-copy");
        }
        // Mid-copy: the file is not there yet, the temporary one is whole.
        assert!(!path.exists());
        assert_eq!(on_disk(&temporary_path(&path)), first.hash);
        let_through.send(()).unwrap();
        wait_for("the first copy", || path.exists());
        assert_eq!(on_disk(&path), first.hash);
        // Then only the newest of the five that came meanwhile.
        let_through.send(()).unwrap();
        wait_for("the second copy", || checkpoint.shared().lock().copies == 2);
        assert_eq!(on_disk(&path), newest.hash);
        drop(let_through);
        let last = checkpoint.stop_keeping().unwrap().unwrap();
        assert_eq!(last.state_hash, newest.hash);
        assert_eq!(
            checkpoint.shared().lock().copies,
            2,
            "two copies for six checkpoints"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_copy_cut_short_leaves_the_previous_file_whole() {
        let dir = dir("cut");
        let path = dir.join("kernel-test.last-good.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        checkpoint.keep_on_disk(&path, "kernel-test").unwrap();
        let kept = take(&mut checkpoint, &state(1, 1000));
        wait_for("the copy", || path.exists() && on_disk(&path) == kept.hash);
        checkpoint.stop_keeping();
        // A copy killed mid-write (the process died) leaves its temporary
        // file half written; the file itself is the previous one, whole.
        let newer = dir.join("newer.snapshot");
        snapshot_file::save(&state(2, 1000), &newer).unwrap();
        let bytes = std::fs::read(&newer).unwrap();
        std::fs::write(temporary_path(&path), &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(on_disk(&path), kept.hash);
        // The next copy writes over the leftover.
        checkpoint.keep_on_disk(&path, "kernel-test").unwrap();
        let next = take(&mut checkpoint, &state(3, 1000));
        wait_for("the next copy", || on_disk(&path) == next.hash);
        checkpoint.stop_keeping();
        assert!(!temporary_path(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_committed_checkpoint_is_sealed_and_one_not_committed_is_never_current() {
        let mut checkpoint = Checkpoint::create().unwrap();
        let written = take(&mut checkpoint, &state(1, 100_000));
        let crate::worker::protocol::StateSource::Checkpoint { file, bytes, .. } =
            checkpoint.source()
        else {
            panic!("no checkpoint")
        };
        assert_eq!(bytes, written.bytes);
        // The seal is checked: no one can write, empty or grow it any more.
        let mut open = std::fs::OpenOptions::new().write(true).open(&file);
        assert!(
            open.as_mut()
                .map_or(true, |f| std::io::Write::write_all(f, b"x").is_err()),
            "a sealed checkpoint was written"
        );
        let reader = File::open(&file).unwrap();
        assert!(
            reader.set_len(0).is_err(),
            "a sealed checkpoint was emptied"
        );
        let seals = shared_state::mapped::seals(&reader).unwrap();
        assert_eq!(
            seals & shared_state::mapped::NEEDED_SEALS,
            shared_state::mapped::NEEDED_SEALS
        );
        // And it is served in place.
        let mapped = snapshot_file::map(&reader, &file).unwrap();
        assert!(mapped.bit_eq(&state(1, 100_000)));
        // A checkpoint under way that is not committed changes nothing.
        let path = checkpoint.begin().unwrap();
        std::fs::write(&path, b"half a snapshot").unwrap();
        assert_eq!(checkpoint.current().unwrap().hash, written.hash);
        // Committing a memfd whose length is not what was written: refused.
        let e = checkpoint.commit(written.clone()).unwrap_err();
        assert!(e.contains("bytes"), "{e}");
        assert_eq!(checkpoint.current().unwrap().hash, written.hash);
    }

    /// How long keeping a checkpoint on disk takes at a few sizes (printed:
    /// `cargo test -p kiln --release disk_copy -- --nocapture`).
    #[test]
    fn copy_times_are_printed() {
        let dir = dir("times");
        let path = dir.join("kernel-test.last-good.snapshot");
        for elements in [1 << 16, 1 << 20, 1 << 24] {
            let mut checkpoint = Checkpoint::create().unwrap();
            checkpoint.keep_on_disk(&path, "kernel-test").unwrap();
            take(&mut checkpoint, &state(7, elements));
            let kept = checkpoint.stop_keeping().unwrap().unwrap();
            println!(
                "kept {} on disk in {:.1} ms (sync {:.1} ms)",
                kiln_stats::bytes::human(kept.bytes),
                kept.ms,
                kept.sync_ms
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

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
//!   before the rename; the rename itself may be lost). The one exception:
//!   the copy of a checkpoint a state file was made from is not synced
//!   (see below); a kill still leaves it whole, a power cut may not.
//!
//! A checkpoint may be several sealed memfds (its parts, each holding what
//! changed since the one before): the copy maps them all and writes one
//! whole snapshot file from them; a checkpoint of one part is one already,
//! copied in the kernel ([`Parts::write_whole_file`]).
//!
//! The bytes are a snapshot file (`swap/snapshot_file.rs`), so the file
//! checks itself when it is read back: a header checksum and one per
//! tensor.
//!
//! `--state FILE` is put in place from what the copy holds when it can
//! (one file, hard-linked: [`state_file`]); a copy that FILE holds the
//! same checkpoint as is not synced (FILE is not either), and a copy under
//! way of an older checkpoint can be abandoned (its temporary file
//! removed, the kept file left as it was).

pub(super) mod state_file;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use std::collections::{HashMap, HashSet};

use shared_state::Snapshot;

use super::checkpoint_parts::{Parts, path_of};
use crate::events::{self, emit};
use crate::swap::snapshot_append::{Appended, Origins, Source, Sync};
use crate::swap::snapshot_file;
use crate::worker::protocol::Checkpointed;

/// A checkpoint handed to the copy: its sealed parts, held until copied.
#[derive(Clone, Debug)]
struct Job {
    parts: Arc<Parts>,
    written: Checkpointed,
}

/// The copy under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnderWay {
    /// Its checkpoint (the newest part's number).
    pub part: u64,
    /// All its bytes are in its temporary file (being synced, or about to
    /// be renamed): a link to that file is the whole checkpoint.
    pub written: bool,
}

/// What the session and the copy share, under one lock.
#[derive(Debug, Default)]
pub struct State {
    /// The copy under way, if any.
    under_way: Option<UnderWay>,
    /// The newest checkpoint not yet copied.
    pending: Option<Job>,
    /// Finish the pending copy, then end.
    stop: bool,
    /// Abandon the copy under way (its temporary file removed, the kept
    /// file left as it was).
    cancel: bool,
    /// The checkpoints (newest parts, from, to) whose copies are not
    /// synced: a state file holds the last of them too, not synced either.
    unsynced: Option<(u64, u64)>,
    /// What the kept file will hold once the copy under way is done (the
    /// sources of its tensor sections): a state file wanted meanwhile
    /// weighs waiting for that copy and appending the current checkpoint
    /// to it against writing the whole state from memory. `None`: not
    /// known (no copy yet, or the last one failed).
    will_hold: Option<Arc<HashSet<Source>>>,
    /// Holds taken ([`Hold`]): while any is, the copy waits between its
    /// pieces.
    held: u32,
    /// The copy is waiting for the holds to go.
    waiting: bool,
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

    /// Whether a copy is under way.
    pub fn copying(&self) -> bool {
        self.under_way.is_some()
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

    /// Waits until `state` changes (any wake).
    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(state).unwrap_or_else(|e| e.into_inner())
    }
}

/// While it lives, the copy to disk waits between its pieces (64 MiB):
/// a replay or a tuning step is timing kernels, and a copy of a large
/// state written behind the session meanwhile takes a core and memory
/// bandwidth from them (1 GiB took 1.5-2.7 s, the whole of a first replay,
/// whose table then read "machine too busy to judge changes"). A
/// checkpoint is never lost by it: the state is in memory, and the copy
/// goes on when the hold goes. A clean end or Ctrl-C comes after the
/// replay (the hold is gone by then); the end of the copy thread
/// (`stop`) and a cancelled copy never wait for it.
#[must_use = "the copy waits only while the hold lives"]
pub struct Hold(Arc<Shared>);

impl Hold {
    pub fn new(shared: &Arc<Shared>) -> Hold {
        shared.lock().held += 1;
        Hold(shared.clone())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.lock().held -= 1;
        self.0.wake();
    }
}

/// One checkpoint on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub path: PathBuf,
    /// The checkpoint it holds (its newest part's number).
    pub part: u64,
    /// The kept file's length.
    pub bytes: u64,
    /// What this copy wrote of it: the whole file, or what it appended.
    pub written: u64,
    /// Appended to the kept file (else a whole new file renamed over it).
    pub appended: bool,
    pub state_hash: String,
    /// Copy, sync and rename.
    pub ms: f64,
    /// Of which the sync (0 when not synced: a state file holds it too).
    pub sync_ms: f64,
}

/// The copy thread.
pub struct DiskCopy {
    shared: Arc<Shared>,
    /// The kept file.
    path: PathBuf,
    /// Its module, for the log.
    module: String,
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

/// A copy's bytes written: to a temporary file to rename over the kept
/// one (a whole new file), or appended to the kept file itself.
struct Written {
    /// The temporary file; `None`: appended to the kept file in place.
    tmp: Option<PathBuf>,
    /// The file's length.
    bytes: u64,
    /// What this copy wrote of it.
    written: u64,
    start: Instant,
    sync_ms: f64,
}

/// Why a copy did not reach its temporary file whole.
#[derive(Debug, PartialEq)]
enum NotWritten {
    /// [`State::cancel`]: a state file takes its place.
    Cancelled,
    Failed(String),
}

/// The checkpoint in `parts`, served from their mappings, and where each
/// tensor section's bytes are in the parts (immutable, sealed): a section
/// from the same place as one the kept file holds is not written again.
/// With them, where each can be copied from in the kernel (its part and
/// the offset there).
fn mapped(parts: &Parts) -> Result<(Snapshot, HashMap<String, Source>, Origins), String> {
    let snapshot = parts.map()?;
    let newest = path_of(&parts.files[&parts.newest]);
    let placed = snapshot_file::placements(&newest, parts.newest).map_err(|e| e.to_string())?;
    let mut data_starts = HashMap::new();
    for (part, file) in &parts.files {
        data_starts.insert(*part, snapshot_file::data_start(file)?);
    }
    let mut sources = HashMap::new();
    let mut origins = Origins::new();
    for (name, p) in placed {
        if let (Some(file), Some(start)) = (parts.files.get(&p.part), data_starts.get(&p.part)) {
            origins.insert(name.clone(), (file.clone(), start + p.offset));
        }
        sources.insert(name, source_of(&p));
    }
    Ok((snapshot, sources, origins))
}

/// The source of a tensor section a checkpoint part's header places at
/// `p`: its sealed part and offset there, its length and crc32.
fn source_of(p: &snapshot_file::Placed) -> Source {
    Source {
        part: p.part,
        offset: p.offset,
        bytes: p.bytes,
        crc32: p.crc32,
    }
}

/// Writes the checkpoint in `parts` (sealed memfds, mapped) to disk: appended
/// to the kept file `path` when `appended` is that file, alone there and
/// not grown past twice the state ([`Appended::worth_appending`]): only
/// the sections it does not hold yet are written; else as a whole new
/// appendable file, to the temporary file of `path` (then `appended` is
/// that file). The data is synced before the commit's trailer and the
/// whole after it, unless a state file holds the same checkpoint
/// ([`State::unsynced`]).
///
/// `before_visible` runs just before the checkpoint can be seen at `path`:
/// before an append's trailer (here), or before a whole file's rename (by
/// the caller).
fn write_checkpoint(
    checkpoint: &Parts,
    path: &Path,
    shared: &Shared,
    appended: &mut Option<Appended>,
    before_visible: &dyn Fn(),
) -> Result<Written, NotWritten> {
    let start = Instant::now();
    let go_on = || {
        let mut state = shared.lock();
        let waited = Instant::now();
        let mut held = false;
        while state.held > 0 && !state.cancel && !state.stop {
            held = true;
            state.waiting = true;
            state = shared.wait(state);
        }
        state.waiting = false;
        if held {
            tracing::debug!(
                "the copy to {} waited {:.0} ms for kernels being timed",
                path.display(),
                waited.elapsed().as_secs_f64() * 1e3
            );
        }
        // A newer checkpoint came while it waited: this copy is abandoned
        // for it (the loop takes the newest next), rather than written
        // whole and then written again.
        let superseded = held && state.pending.is_some();
        !state.cancel && !superseded
    };
    // Not even mapped while held.
    if !go_on() {
        return Err(NotWritten::Cancelled);
    }
    let (snapshot, sources, origins) = mapped(checkpoint)
        .map_err(|e| NotWritten::Failed(format!("cannot read the checkpoint: {e}")))?;
    let appending = appended
        .as_ref()
        .filter(|a| a.is_alone_at(path) && a.worth_appending(&snapshot, &sources));
    let mut will_hold: HashSet<Source> = sources.values().copied().collect();
    if let Some(kept) = appending {
        will_hold.extend(kept.holds());
    }
    shared.lock().will_hold = Some(Arc::new(will_hold));
    let synced = || {
        !shared
            .lock()
            .unsynced
            .is_some_and(|(from, to)| (from..=to).contains(&checkpoint.newest))
    };
    let whole = || {
        {
            let mut state = shared.lock();
            if let Some(under_way) = &mut state.under_way {
                under_way.written = true;
            }
        }
        shared.wake();
        synced()
    };
    let sync = Sync {
        go_on: &go_on,
        data: &synced,
        whole: &whole,
    };
    if appending.is_some()
        && let Some(kept) = appended.as_mut()
    {
        let data_then_visible = || {
            let sync = synced();
            before_visible();
            sync
        };
        let sync = Sync {
            data: &data_then_visible,
            ..sync
        };
        return match kept.commit(&snapshot, &sources, &origins, &sync) {
            Ok(Some(c)) => Ok(Written {
                tmp: None,
                bytes: c.len,
                written: c.written,
                start,
                sync_ms: c.sync_ms,
            }),
            Ok(None) => Err(NotWritten::Cancelled),
            Err(e) => {
                *appended = None;
                Err(NotWritten::Failed(format!(
                    "cannot append to {}: {e}",
                    path.display()
                )))
            }
        };
    }
    *appended = None;
    let tmp = temporary_path(path);
    let fail = |e: &dyn std::fmt::Display| {
        NotWritten::Failed(format!("cannot write {}: {e}", tmp.display()))
    };
    let file = File::create(&tmp).map_err(|e| fail(&e))?;
    match Appended::create(file, &snapshot, &sources, &origins, &sync) {
        Ok(Some((kept, c))) => {
            *appended = Some(kept);
            Ok(Written {
                tmp: Some(tmp),
                bytes: c.len,
                written: c.written,
                start,
                sync_ms: c.sync_ms,
            })
        }
        stopped_or_failed => {
            let _ = std::fs::remove_file(&tmp);
            Err(match stopped_or_failed {
                Err(e) => fail(&e),
                _ => NotWritten::Cancelled,
            })
        }
    }
}

/// Puts a copy's bytes in place as the kept file `path`: a temporary file
/// is renamed over it (an append is there already). It holds `job`'s
/// checkpoint from now on. (Without the lock: replacing a large kept file
/// frees its pages, which takes a while, and a commit must not wait. A
/// state file linked meanwhile finds the temporary file or, once it is
/// gone, the kept file, the same file: [`state_file`].)
fn rename_into_place(written: Written, job: &Job, path: &Path) -> Result<Kept, String> {
    if let Some(tmp) = &written.tmp {
        std::fs::rename(tmp, path)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))?;
    }
    Ok(Kept {
        path: path.to_path_buf(),
        part: job.parts.newest,
        bytes: written.bytes,
        written: written.written,
        appended: written.tmp.is_none(),
        state_hash: job.written.hash.clone(),
        ms: written.start.elapsed().as_secs_f64() * 1e3,
        sync_ms: written.sync_ms,
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
        let theirs = shared.clone();
        let (their_path, their_module) = (path.to_path_buf(), module.to_string());
        let thread = std::thread::Builder::new()
            .name("kiln-state-disk".into())
            .spawn(move || copy_loop(&theirs, &their_path, &their_module, &*before_rename))?;
        Ok(DiskCopy {
            shared,
            path: path.to_path_buf(),
            module: module.to_string(),
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
    // The kept file this thread wrote last, while it is there: the next
    // checkpoint is appended to it.
    let mut appended: Option<Appended> = None;
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if let Some(job) = state.pending.take() {
                    state.under_way = Some(UnderWay {
                        part: job.parts.newest,
                        written: false,
                    });
                    break job;
                }
                if state.stop {
                    return;
                }
                state = shared.wait(state);
            }
        };
        let outcome = match write_checkpoint(&job.parts, path, shared, &mut appended, before_rename)
        {
            Ok(written) => {
                if written.tmp.is_some() {
                    before_rename();
                }
                Some(rename_into_place(written, &job, path))
            }
            Err(NotWritten::Failed(e)) => Some(Err(e)),
            Err(NotWritten::Cancelled) => None,
        };
        {
            let mut state = shared.lock();
            state.under_way = None;
            state.cancel = false;
            if !matches!(outcome, Some(Ok(_))) {
                state.will_hold = None;
            }
            if let Some(outcome) = &outcome {
                if outcome.is_ok() {
                    state.copies += 1;
                }
                state.last = Some(outcome.clone());
            }
        }
        shared.wake();
        // Let go of the memfd: if a newer checkpoint is current, its memory
        // goes back now (unless a worker still maps it).
        drop(job);
        match outcome {
            Some(Ok(kept)) => {
                last_error = None;
                kept_event(module, &kept);
            }
            Some(Err(e)) => {
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
            None => tracing::debug!(
                module = %module,
                "a copy of an older checkpoint to {} was abandoned: a newer checkpoint or the state file takes its place",
                path.display()
            ),
        }
    }
}

/// Logs `kept`: a copy written whole (a session's first: at GiBs it
/// takes seconds, at the disk's pace) at info level, so the user sees when
/// the last good point reached the disk; an append, after every save and
/// replay, at debug level.
fn kept_event(module: &str, kept: &Kept) {
    let event = events::StateKept {
        module: module.to_string(),
        path: kept.path.display().to_string(),
        bytes: kept.bytes,
        written: kept.written,
        appended: kept.appended,
        state_hash: kept.state_hash.clone(),
        ms: kept.ms,
        sync_ms: kept.sync_ms,
    };
    let line = format!(
        "the last good point is on disk: {} ({}{}) in {:.1} ms (sync {:.1} ms)",
        kept.path.display(),
        kiln_stats::bytes::human(kept.bytes),
        if kept.appended {
            format!(
                ", {} appended: what changed",
                kiln_stats::bytes::human(kept.written)
            )
        } else {
            ", written whole".to_string()
        },
        kept.ms,
        kept.sync_ms
    );
    match kept.appended {
        true => emit!(tracing::Level::DEBUG, event, "{line}"),
        false => emit!(tracing::Level::INFO, event, "{line}"),
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

    /// A checkpoint kept on disk by its copy thread in a fresh directory:
    /// (the directory, the kept file, the checkpoint).
    fn kept_on_disk(name: &str) -> (PathBuf, PathBuf, Checkpoint) {
        let dir = dir(name);
        let path = dir.join("kernel-test.last-good.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        checkpoint.keep_on_disk(&path, "kernel-test").unwrap();
        (dir, path, checkpoint)
    }

    #[test]
    fn every_checkpoint_reaches_the_file_and_the_session_never_waits() {
        let (dir, path, mut checkpoint) = kept_on_disk("each");
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
    fn a_hold_stops_the_copy_until_it_goes() {
        let (dir, path, mut checkpoint) = kept_on_disk("hold");
        let hold = Hold::new(&checkpoint.shared());
        let written = take(&mut checkpoint, &state(1, 1000));
        // Held: nothing reaches the disk however long it waits (without
        // the hold this copy of 4 KB takes a few ms).
        std::thread::sleep(Duration::from_millis(500));
        assert!(!path.exists(), "the copy went on while held");
        assert_eq!(checkpoint.shared().lock().copies, 0);
        drop(hold);
        wait_for("the copy after the hold", || {
            path.exists() && on_disk(&path) == written.hash
        });
        // Held again, two checkpoints: the copy of the first, waiting, is
        // abandoned for the second, which is the one copied.
        let copies = checkpoint.shared().lock().copies;
        let hold = Hold::new(&checkpoint.shared());
        take(&mut checkpoint, &state(2, 1000));
        wait_for("the copy to start and wait", || {
            checkpoint.shared().lock().waiting
        });
        let newest = take(&mut checkpoint, &state(3, 1000));
        drop(hold);
        wait_for("the newest on disk", || {
            path.exists() && on_disk(&path) == newest.hash
        });
        // Every copy done (an append is on disk before it is counted).
        checkpoint.stop_keeping().expect("copied").unwrap();
        assert_eq!(
            checkpoint.shared().lock().copies,
            copies + 1,
            "the superseded copy was written too"
        );
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
        assert!(checkpoint.shared().lock().copying());
        let mut newest = first.clone();
        for n in 2..=6 {
            newest = take(&mut checkpoint, &state(n, 1000));
            assert!(checkpoint.shared().lock().copying(), "still held mid-copy");
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

    /// The file's identity (device, inode): two names of one file share it.
    fn inode(path: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn a_state_file_of_the_kept_checkpoint_is_a_link_the_next_copy_leaves_alone() {
        let dir = dir("link");
        let path = dir.join("kernel-test.last-good.snapshot");
        let user = dir.join("user.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        checkpoint.keep_on_disk(&path, "kernel-test").unwrap();
        let first = take(&mut checkpoint, &state(1, 100_000));
        wait_for("the copy", || checkpoint.shared().lock().copies == 1);
        let bytes = checkpoint.write_file(&user).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        assert_eq!(inode(&user), inode(&path), "one file, no byte written");
        assert_eq!(on_disk(&user), first.hash);
        assert!(!user.with_extension("partial").exists());
        // The next checkpoint replaces the kept file, not the user's.
        let second = take(&mut checkpoint, &state(2, 100_000));
        wait_for("the next copy", || checkpoint.shared().lock().copies == 2);
        assert_eq!(on_disk(&path), second.hash);
        assert_eq!(on_disk(&user), first.hash, "the user's file changed");
        assert_ne!(inode(&user), inode(&path));
        // Written again: a link to the newer one; the old file is replaced
        // by a rename, not written into.
        let old = inode(&user);
        checkpoint.write_file(&user).unwrap();
        assert_eq!(inode(&user), inode(&path));
        assert_ne!(inode(&user), old);
        assert_eq!(on_disk(&user), second.hash);
        checkpoint.stop_keeping();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_wanted_mid_copy_is_linked_once_the_bytes_are_written() {
        let dir = dir("await");
        let path = dir.join("kernel-test.last-good.snapshot");
        let user = dir.join("user.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        let (let_through, arrived) = held(&mut checkpoint, &path);
        let written = take(&mut checkpoint, &state(3, 100_000));
        // The copy is written (and synced), held before its rename: the
        // state file does not wait for the rename, it links the bytes.
        arrived.recv_timeout(Duration::from_secs(120)).unwrap();
        checkpoint.write_file(&user).unwrap();
        assert_eq!(inode(&user), inode(&temporary_path(&path)));
        assert_eq!(on_disk(&user), written.hash);
        assert!(!path.exists(), "the copy was held before its rename");
        let_through.send(()).unwrap();
        drop(let_through);
        let kept = checkpoint.stop_keeping().unwrap().unwrap();
        assert_eq!(kept.state_hash, written.hash);
        assert_eq!(inode(&user), inode(&path), "one file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_newer_than_the_copy_is_written_from_memory_and_kept() {
        let dir = dir("newer");
        let path = dir.join("kernel-test.last-good.snapshot");
        let user = dir.join("user.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        let (let_through, arrived) = held(&mut checkpoint, &path);
        let older = take(&mut checkpoint, &state(4, 100_000));
        arrived.recv_timeout(Duration::from_secs(120)).unwrap();
        // A newer checkpoint while the older one's copy is held: the
        // state file does not wait for that copy (it is written from
        // memory meanwhile), and the kept file becomes a link to it.
        let newer = take(&mut checkpoint, &state(5, 100_000));
        std::thread::scope(|s| {
            let writing = s.spawn(|| checkpoint.write_file(&user));
            wait_for("the state file", || user.exists());
            assert_eq!(on_disk(&user), newer.hash);
            assert!(!writing.is_finished(), "it waits for the copy to end");
            let_through.send(()).unwrap();
            writing.join().unwrap().unwrap();
        });
        assert_eq!(inode(&user), inode(&path), "the kept file is the user's");
        assert_eq!(on_disk(&path), newer.hash);
        let shared = checkpoint.shared();
        assert_eq!(shared.lock().copies, 2, "the older copy, then the link");
        drop(let_through);
        // The newer checkpoint is not copied again.
        let kept = checkpoint.stop_keeping().unwrap().unwrap();
        assert_eq!(kept.state_hash, newer.hash);
        assert_eq!(shared.lock().copies, 2);
        assert_ne!(older.hash, newer.hash);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A state of a large cache section `big` (the same in every
    /// checkpoint) and a small resident and counter that say `n`.
    fn big_and_small(n: i64, big: &Tensor) -> Snapshot {
        let mut s = state(n, 100);
        s.insert_tensor("cache/test/big", big.clone());
        s
    }

    /// Writes `snapshot` into a new part pointing into the current
    /// checkpoint's newest part for `cache/test/big`, as a worker whose
    /// last checkpoint that was does, and commits it.
    fn take_pointing(checkpoint: &mut Checkpoint, snapshot: &Snapshot) -> Checkpointed {
        let (earlier_part, earlier_file) = match checkpoint.source() {
            crate::worker::protocol::StateSource::Checkpoint { newest, file, .. } => (newest, file),
            _ => panic!("no current checkpoint"),
        };
        let placed = snapshot_file::placements(&earlier_file, earlier_part).unwrap();
        let path = checkpoint.begin().unwrap();
        let part = checkpoint.part_under_way();
        let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let written = snapshot_file::write_part(snapshot, &mut file, part, &|name, _| {
            (name == "cache/test/big").then(|| placed[name].clone())
        })
        .unwrap();
        drop(file);
        assert!(written.copied < 100_000, "the big section is pointed to");
        let written = Checkpointed {
            bytes: written.bytes,
            hash: crate::swap::state_hash::state_hash(snapshot),
            parts: vec![earlier_part, part],
            ..Default::default()
        };
        checkpoint.commit(written.clone()).unwrap();
        written
    }

    #[test]
    fn a_state_file_of_a_checkpoint_that_differs_by_little_waits_for_the_copy_then_appends() {
        let dir = dir("append");
        let path = dir.join("kernel-test.last-good.snapshot");
        let user = dir.join("user.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        let (let_through, arrived) = held(&mut checkpoint, &path);
        let big = Tensor::from_f32(&[1 << 20], vec![0.25; 1 << 20]);
        let older = take(&mut checkpoint, &big_and_small(1, &big));
        // The whole copy of the older one, held before its rename.
        arrived.recv_timeout(Duration::from_secs(120)).unwrap();
        // The current one differs by its small resident and counter: the
        // state file waits for that copy, appends to it and links it,
        // rather than writing 4 MB again from memory.
        let current = take_pointing(&mut checkpoint, &big_and_small(2, &big));
        std::thread::scope(|s| {
            let writing = s.spawn(|| checkpoint.write_file(&user));
            std::thread::sleep(Duration::from_millis(200));
            assert!(!user.exists(), "written from memory meanwhile");
            let_through.send(()).unwrap();
            // The append of the current one, held before its trailer.
            arrived.recv_timeout(Duration::from_secs(120)).unwrap();
            assert!(!user.exists(), "linked before the append was whole");
            let_through.send(()).unwrap();
            writing.join().unwrap().unwrap();
        });
        assert_eq!(
            inode(&user),
            inode(&path),
            "the state file is the kept file"
        );
        assert_eq!(on_disk(&user), current.hash);
        let shared = checkpoint.shared();
        assert_eq!(shared.lock().copies, 2, "the older copy, then the append");
        let kept = shared.lock().last.clone().unwrap().unwrap();
        assert!(kept.appended && kept.written < 64 << 10, "{kept:?}");
        drop(let_through);
        let kept = checkpoint.stop_keeping().unwrap().unwrap();
        assert_eq!(kept.state_hash, current.hash);
        assert_ne!(older.hash, current.hash);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_without_a_disk_copy_or_on_another_filesystem_is_written() {
        let dir = dir("memory");
        let user = dir.join("user.snapshot");
        let mut checkpoint = Checkpoint::create().unwrap();
        let written = take(&mut checkpoint, &state(6, 100_000));
        checkpoint.write_file(&user).unwrap();
        assert_eq!(on_disk(&user), written.hash);
        // Another filesystem than the kept file's (tmpfs, where there is
        // one): no link, written from memory; the copy goes on.
        let shm = Path::new("/dev/shm");
        let elsewhere = shm.join(format!("kiln-state-file-{}", std::process::id()));
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(shm).is_ok_and(|m| m.dev() != inode(&dir).0) {
            let path = dir.join("kernel-test.last-good.snapshot");
            checkpoint.keep_on_disk(&path, "kernel-test").unwrap();
            wait_for("the copy", || checkpoint.shared().lock().copies == 1);
            checkpoint.write_file(&elsewhere).unwrap();
            assert_eq!(on_disk(&elsewhere), written.hash);
            assert_ne!(inode(&elsewhere), inode(&path));
            std::fs::remove_file(&elsewhere).unwrap();
            checkpoint.stop_keeping();
        } else {
            println!(
                "no other filesystem at {}: that case not run",
                shm.display()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
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

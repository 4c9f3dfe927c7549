//! Watches a workspace's kernel modules and contract and turns each burst of
//! saves into one [`ChangeSet`].
//!
//! Pipeline: `notify` (inotify) -> an aggregator thread that re-hashes
//! source files and sends one [`ChangeSet`] per burst if any source's content
//! really changed.
//!
//! Content hashes make the outcome independent of how an editor saves: in
//! place, temp file then rename (vim, VS Code, JetBrains) or delete then
//! create all end with a file whose bytes differ from the last ones seen; a
//! `touch`, or a save of identical bytes, ends with the same bytes and gives
//! no change set. A deleted source is a change (the build will say what is
//! missing).
//!
//! Reacting without a fixed wait: a save is complete when the file is
//! closed after writing (`IN_CLOSE_WRITE`) or renamed into place
//! (`IN_MOVED_TO`). Any other event on a source (a write still open, a
//! create, a delete, a rename away, a metadata change) leaves it
//! *unsettled* until a completing event for it comes. A burst whose sources
//! are all settled is taken once it has been quiet for [`SETTLE`] (10 ms:
//! a "save all" of several files, or a save done in two steps, is one
//! change set); one with an unsettled source once it has been quiet for the
//! debounce window ([`DEFAULT_DEBOUNCE`], 50 ms: a deletion alone, a
//! writer pausing mid-file). Files are hashed only then, never on an
//! event (a file read on an event may be halfway through the next save),
//! and if another event arrived while hashing, the burst goes on. So an
//! in-place write, a temp file renamed over the source, and a delete
//! followed by a new file each give one change set about 10 ms after the
//! save (it was 50-90 ms with a fixed debounce window for every event).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};

use crate::build::module_graph::{Classified, ModuleGraph};

/// Default debounce window: how long a burst with an unsettled source
/// must stay quiet before that source is re-hashed.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

/// How long a burst whose saves are all complete must stay quiet before
/// its change set goes out (at most the debounce window).
pub const SETTLE: Duration = Duration::from_millis(10);

/// The sources changed by one burst of saves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeSet {
    /// Package names of the modules to rebuild (`kernel-cpu`).
    pub modules: BTreeSet<String>,
    /// The contract changed: restart required.
    pub contract_changed: bool,
    /// A kernel declaration changed (appeared, vanished): a re-stage of the
    /// served version with the new declarations, never a contract change.
    pub declarations_changed: bool,
    /// A file watched for itself changed (the `--workload` file).
    pub watched_changed: bool,
    /// The source files whose content changed (or that appeared or vanished).
    pub paths: Vec<PathBuf>,
    /// When the first relevant file-system event of the burst happened.
    pub first_event_at: Instant,
}

/// Watcher settings.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How long a burst with an unfinished save (a delete, a rename away,
    /// a write not yet closed) must stay quiet before it is taken.
    pub debounce: Duration,
    /// How long a burst whose saves are all complete must stay quiet
    /// before it is taken (at most `debounce`; [`SETTLE`] by default).
    pub settle: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: DEFAULT_DEBOUNCE,
            settle: SETTLE,
        }
    }
}

/// Why the watcher could not start.
#[derive(Debug)]
pub enum WatchError {
    /// The watcher (its thread or the inotify instance) could not be created.
    Start(notify::Error),
    /// A directory could not be watched.
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchError::Start(e) => write!(f, "cannot start the file watcher: {e}"),
            WatchError::Watch { path, source } => {
                write!(f, "{}: cannot watch: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for WatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WatchError::Start(e) | WatchError::Watch { source: e, .. } => Some(e),
        }
    }
}

/// A file-system event (or a watcher error) and when it arrived.
type Raw = (Instant, notify::Result<Event>);

/// A running watcher. Change sets arrive on [`ModuleWatcher::changes`];
/// dropping the watcher stops it (and disconnects that channel).
pub struct ModuleWatcher {
    watcher: Option<RecommendedWatcher>,
    stop: Option<Sender<()>>,
    aggregator: Option<JoinHandle<()>>,
    changes: Receiver<ChangeSet>,
}

impl fmt::Debug for ModuleWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleWatcher").finish_non_exhaustive()
    }
}

impl ModuleWatcher {
    /// Hashes the current sources, then watches every module and contract
    /// directory recursively and the workspace root (for `Cargo.lock` and
    /// `Cargo.toml`) non-recursively.
    pub fn start(graph: ModuleGraph, options: WatchOptions) -> Result<ModuleWatcher, WatchError> {
        let debounce = options.debounce.max(Duration::from_millis(1));
        let settle = options.settle.min(debounce);
        let (raw_tx, raw_rx) = crossbeam_channel::unbounded::<Raw>();
        let (changes_tx, changes_rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);

        let mut hashes = SourceHashes::new(graph);
        hashes.scan_all();

        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            // The aggregator only goes away when the watcher is dropped.
            let _ = raw_tx.send((Instant::now(), event));
        })
        .map_err(WatchError::Start)?;
        for dir in hashes.graph.watch_dirs() {
            watcher
                .watch(&dir, RecursiveMode::Recursive)
                .map_err(|source| WatchError::Watch { path: dir, source })?;
        }
        let root = hashes.graph.workspace_root().to_path_buf();
        watcher
            .watch(&root, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: root.clone(),
                source,
            })?;
        // `.cargo/` (config.toml: the flags of every build), when present.
        let cargo_config = root.join(".cargo");
        if cargo_config.is_dir() {
            watcher
                .watch(&cargo_config, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    path: cargo_config,
                    source,
                })?;
        }
        // A file watched for itself: its folder, unless already watched.
        let mut parents: Vec<PathBuf> = Vec::new();
        for file in hashes.graph.watched_files() {
            let Some(parent) = file.parent() else {
                continue;
            };
            let covered = parent == root
                || hashes.watched.iter().any(|d| parent.starts_with(d))
                || parents.iter().any(|p| p == parent);
            if !covered {
                parents.push(parent.to_path_buf());
            }
        }
        for parent in parents {
            watcher
                .watch(&parent, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    path: parent,
                    source,
                })?;
        }

        let timing = Timing { debounce, settle };
        let aggregator = std::thread::Builder::new()
            .name("kiln-watch".to_string())
            .spawn(move || aggregate(hashes, raw_rx, stop_rx, changes_tx, timing))
            .map_err(|e| WatchError::Start(notify::Error::io(e)))?;
        Ok(ModuleWatcher {
            watcher: Some(watcher),
            stop: Some(stop_tx),
            aggregator: Some(aggregator),
            changes: changes_rx,
        })
    }

    /// The change sets, one per burst that changed a source.
    pub fn changes(&self) -> &Receiver<ChangeSet> {
        &self.changes
    }
}

impl Drop for ModuleWatcher {
    fn drop(&mut self) {
        // Stops inotify first, so no event arrives after the aggregator.
        drop(self.watcher.take());
        drop(self.stop.take());
        if let Some(aggregator) = self.aggregator.take() {
            let _ = aggregator.join();
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Timing {
    debounce: Duration,
    settle: Duration,
}

/// The burst being collected.
struct Pending {
    /// Sources whose content changed (found by a rescan).
    changed: BTreeSet<PathBuf>,
    /// Sources (or directories holding sources) whose save completed.
    saved: BTreeSet<PathBuf>,
    /// Sources (or directories holding sources) with an event that does
    /// not complete a save: the burst waits the debounce window for them,
    /// unless a completing event comes first.
    unsettled: BTreeSet<PathBuf>,
    first_event_at: Instant,
    last_event_at: Instant,
}

impl Pending {
    /// When to act next: re-hash the unsettled sources, or send.
    fn deadline(&self, timing: Timing) -> Instant {
        if self.unsettled.is_empty() {
            self.last_event_at + timing.settle
        } else {
            self.last_event_at + timing.debounce
        }
    }
}

/// What one path of an event means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// A save of this path is complete: re-hash it now.
    Complete,
    /// Something happened to it that may be part of an unfinished save.
    Unsettled,
}

/// What `event` means for each of its paths; empty for events that change
/// nothing (opens, reads, closes after reading: ours included).
fn steps(event: &Event) -> Vec<(&Path, Step)> {
    let all = |step| event.paths.iter().map(|p| (p.as_path(), step)).collect();
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => all(Step::Complete),
        EventKind::Access(_) => Vec::new(),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => all(Step::Complete),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => event
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let step = if i + 1 == event.paths.len() {
                    Step::Complete
                } else {
                    Step::Unsettled
                };
                (p.as_path(), step)
            })
            .collect(),
        _ => all(Step::Unsettled),
    }
}

/// The burst being collected, opened by an event at `at` if there is none;
/// `at` becomes its last event.
fn open_burst(pending: &mut Option<Pending>, at: Instant) -> &mut Pending {
    let burst = pending.get_or_insert_with(|| Pending {
        changed: BTreeSet::new(),
        saved: BTreeSet::new(),
        unsettled: BTreeSet::new(),
        first_event_at: at,
        last_event_at: at,
    });
    burst.last_event_at = burst.last_event_at.max(at);
    burst
}

fn aggregate(
    mut hashes: SourceHashes,
    raw: Receiver<Raw>,
    stop: Receiver<()>,
    changes: Sender<ChangeSet>,
    timing: Timing,
) {
    let mut pending: Option<Pending> = None;
    loop {
        let timeout = pending
            .as_ref()
            .map(|p| p.deadline(timing).saturating_duration_since(Instant::now()));
        let received = crossbeam_channel::select! {
            recv(raw) -> msg => match msg {
                Ok(raw) => Some(raw),
                Err(_) => return,
            },
            recv(stop) -> _ => return,
            default(timeout.unwrap_or(Duration::from_secs(3600))) => None,
        };
        match received {
            Some(raw) => hashes.receive(raw, &mut pending),
            None => {
                let Some(burst) = pending.as_mut() else {
                    continue;
                };
                if Instant::now() < burst.deadline(timing) {
                    continue;
                }
                // Quiet long enough: hash what the burst touched, compare
                // with the last change set's view.
                let before = hashes.hashes.clone();
                let last_event_at = burst.last_event_at;
                let mut changed = std::mem::take(&mut burst.changed);
                for path in burst.saved.iter().chain(&burst.unsettled) {
                    changed.extend(hashes.refresh(path));
                }
                // An event about a source that arrived meanwhile may be a
                // new save under way: the burst goes on (and the hashes are
                // taken again when it is quiet). Every other event queued
                // now (our own reads of the sources just above, anything
                // that concerns no source) must not hold the save back: a
                // steady stream of them did, for minutes.
                while let Ok(queued) = raw.try_recv() {
                    hashes.receive(queued, &mut pending);
                }
                let Some(burst) = pending.take() else {
                    continue;
                };
                if burst.last_event_at != last_event_at {
                    hashes.hashes = before;
                    let mut burst = burst;
                    burst.changed.extend(changed);
                    pending = Some(burst);
                    continue;
                }
                changed.extend(burst.changed);
                if let Some(set) = hashes.change_set(changed, burst.first_event_at) {
                    if changes.send(set).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The last seen content hash of every source file, and the graph that says
/// what they belong to.
struct SourceHashes {
    graph: ModuleGraph,
    /// The directories watched recursively.
    watched: Vec<PathBuf>,
    hashes: HashMap<PathBuf, u64>,
}

impl SourceHashes {
    fn new(graph: ModuleGraph) -> Self {
        SourceHashes {
            watched: graph.watch_dirs(),
            graph,
            hashes: HashMap::new(),
        }
    }

    /// Records every source file under the watched directories.
    fn scan_all(&mut self) {
        let root = self.graph.workspace_root().to_path_buf();
        for name in [
            "Cargo.toml",
            "Cargo.lock",
            ".cargo/config.toml",
            ".cargo/config",
        ] {
            self.refresh_file(&root.join(name));
        }
        for file in self.graph.watched_files().to_vec() {
            self.refresh_file(&file);
        }
        for dir in self.graph.watch_dirs() {
            self.refresh_dir(&dir);
        }
    }

    /// Takes one message of the watcher into the burst (an error is
    /// logged).
    fn receive(&mut self, (at, event): Raw, pending: &mut Option<Pending>) {
        match event {
            Ok(event) => self.apply(&event, at, pending),
            Err(error) => tracing::warn!("file watcher: {error}"),
        }
    }

    /// Takes `event` (arrived at `at`) into the burst: records what a
    /// completed save touched, marks the rest unsettled. Events that
    /// concern no source leave the burst alone. Nothing is hashed until the
    /// burst is quiet: a file read now may be halfway through a later save.
    fn apply(&mut self, event: &Event, at: Instant, pending: &mut Option<Pending>) {
        if event.need_rescan() {
            // Events were lost: compare everything with what was seen.
            let before = std::mem::take(&mut self.hashes);
            self.scan_all();
            let mut changed: Vec<PathBuf> = self
                .hashes
                .iter()
                .filter(|(p, h)| before.get(*p) != Some(h))
                .map(|(p, _)| p.clone())
                .collect();
            changed.extend(before.into_keys().filter(|p| !self.hashes.contains_key(p)));
            open_burst(pending, at).changed.extend(changed);
            return;
        }
        for (path, step) in steps(event) {
            if !self.concerns_sources(path) {
                continue;
            }
            let burst = open_burst(pending, at);
            match step {
                Step::Complete => {
                    burst.unsettled.remove(path);
                    burst.saved.insert(path.to_path_buf());
                }
                Step::Unsettled => {
                    burst.unsettled.insert(path.to_path_buf());
                }
            }
        }
    }

    /// Whether `path` is a source, a directory under a watched location, or
    /// something a recorded source lives under (a directory deleted or
    /// renamed away).
    fn concerns_sources(&self, path: &Path) -> bool {
        if self.graph.watched_files().iter().any(|f| f == path) {
            return true;
        }
        if self.graph.is_ignored_location(path) {
            return false;
        }
        self.graph.classify(path) != Classified::Ignored
            || (path.is_dir() && self.watched.iter().any(|d| path.starts_with(d)))
            || self.hashes.keys().any(|p| p.starts_with(path))
    }

    /// Brings the record of `path` (a file, a directory, or something gone)
    /// up to date; returns the sources that changed.
    fn refresh(&mut self, path: &Path) -> Vec<PathBuf> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let mut changed = self.refresh_dir(path);
                changed.extend(self.forget_missing_under(path));
                changed
            }
            Ok(_) => self.refresh_file(path).into_iter().collect(),
            Err(_) => self.forget_missing_under(path),
        }
    }

    fn refresh_dir(&mut self, dir: &Path) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        let Ok(entries) = fs::read_dir(dir) else {
            return changed;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if self.graph.is_ignored_location(&path) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => changed.extend(self.refresh_dir(&path)),
                Ok(_) => changed.extend(self.refresh_file(&path)),
                Err(_) => {}
            }
        }
        changed
    }

    /// Re-hashes one file if it is a source; `Some(path)` if its content is
    /// new or differs from the last seen.
    fn refresh_file(&mut self, path: &Path) -> Option<PathBuf> {
        if self.graph.classify(path) == Classified::Ignored {
            return None;
        }
        match content_hash(path) {
            Ok(hash) => {
                let previous = self.hashes.insert(path.to_path_buf(), hash);
                (previous != Some(hash)).then(|| path.to_path_buf())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.hashes.remove(path).map(|_| path.to_path_buf())
            }
            Err(e) => {
                tracing::warn!("{}: cannot read changed source: {e}", path.display());
                None
            }
        }
    }

    /// Drops records of sources at or under `path` that no longer exist.
    fn forget_missing_under(&mut self, path: &Path) -> Vec<PathBuf> {
        let gone: Vec<PathBuf> = self
            .hashes
            .keys()
            .filter(|p| p.starts_with(path) && !p.exists())
            .cloned()
            .collect();
        for p in &gone {
            self.hashes.remove(p);
        }
        gone
    }

    /// The change set for the sources that changed in a burst, if any of
    /// them concerns a module or the contract.
    fn change_set(&self, changed: BTreeSet<PathBuf>, first_event_at: Instant) -> Option<ChangeSet> {
        let mut modules = BTreeSet::new();
        let mut contract_changed = false;
        let mut declarations_changed = false;
        let mut watched_changed = false;
        for path in &changed {
            match self.graph.classify(path) {
                Classified::Modules(m) => modules.extend(m),
                Classified::Contract => contract_changed = true,
                Classified::Declarations => declarations_changed = true,
                Classified::Watched => watched_changed = true,
                Classified::Ignored => {}
            }
        }
        if modules.is_empty() && !contract_changed && !declarations_changed && !watched_changed {
            return None;
        }
        Some(ChangeSet {
            modules,
            contract_changed,
            declarations_changed,
            watched_changed,
            paths: changed.into_iter().collect(),
            first_event_at,
        })
    }
}

/// The hash of a file's content, read in pieces (a watched workload file
/// can hold GiBs of resident data: it is never held in memory whole), with
/// xxh3 (several GB/s).
fn content_hash(path: &Path) -> io::Result<u64> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut piece = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut piece) {
            Ok(0) => return Ok(hasher.digest()),
            Ok(n) => hasher.update(&piece[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

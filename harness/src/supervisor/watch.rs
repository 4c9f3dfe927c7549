//! Watches a workspace's kernel modules and contract and turns each burst of
//! saves into one [`ChangeSet`].
//!
//! Pipeline: `notify` (inotify) -> `notify-debouncer-full`, which holds each
//! path's events until the path has been quiet for the debounce window and
//! pairs renames -> an aggregator thread that merges what the debouncer
//! flushes within one settle period (a burst can straddle two debouncer
//! ticks), re-hashes the affected source files and sends one [`ChangeSet`]
//! if any source's content really changed.
//!
//! Content hashes make the outcome independent of how an editor saves: in
//! place, temp file then rename (vim, VS Code, JetBrains) or delete then
//! create all end with a file whose bytes differ from the last ones seen; a
//! `touch`, or a save of identical bytes, ends with the same bytes and gives
//! no change set. A deleted source is a change (the build will say what is
//! missing).
//!
//! The default window is [`DEFAULT_DEBOUNCE`] (50 ms): editors finish a save
//! (backup rename, write, fsync, delete backup) in a few milliseconds, so 50 ms
//! comfortably covers one save while staying small next to the ~250 ms+ an
//! incremental module build takes. Worst-case latency from the last write to
//! the change set is about window + 3/4 window (one debouncer tick plus the
//! settle period).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache};

use crate::supervisor::module_graph::{Classified, ModuleGraph};

/// Default debounce window.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

/// The sources changed by one burst of saves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeSet {
    /// Package names of the modules to rebuild (`kernel-cpu`).
    pub modules: BTreeSet<String>,
    /// The contract changed: restart required.
    pub contract_changed: bool,
    /// The source files whose content changed (or that appeared or vanished).
    pub paths: Vec<PathBuf>,
    /// When the first relevant file-system event of the burst happened.
    pub first_event_at: Instant,
}

/// Watcher settings.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How long a path must stay quiet before its events are taken.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

/// Why the watcher could not start.
#[derive(Debug)]
pub enum WatchError {
    /// The debouncer (its thread or the inotify instance) could not be created.
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

/// A running watcher. Change sets arrive on [`ModuleWatcher::changes`];
/// dropping the watcher stops it (and disconnects that channel).
pub struct ModuleWatcher {
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
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
        let debounce = options.debounce.max(Duration::from_millis(4));
        let tick = debounce / 4;
        let (raw_tx, raw_rx) = crossbeam_channel::unbounded::<DebounceEventResult>();
        let (changes_tx, changes_rx) = crossbeam_channel::unbounded();

        let mut hashes = SourceHashes::new(graph);
        hashes.scan_all();

        let mut debouncer = notify_debouncer_full::new_debouncer(
            debounce,
            Some(tick),
            move |result: DebounceEventResult| {
                // The aggregator only goes away when the watcher is dropped.
                let _ = raw_tx.send(result);
            },
        )
        .map_err(WatchError::Start)?;
        for dir in hashes.graph.watch_dirs() {
            debouncer
                .watch(&dir, RecursiveMode::Recursive)
                .map_err(|source| WatchError::Watch { path: dir, source })?;
        }
        let root = hashes.graph.workspace_root().to_path_buf();
        debouncer
            .watch(&root, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch { path: root, source })?;

        // A burst straddling debouncer ticks arrives within one tick of its
        // previous part; wait two to be safe.
        let settle = tick * 2;
        let aggregator = std::thread::Builder::new()
            .name("kiln-watch".to_string())
            .spawn(move || aggregate(hashes, raw_rx, changes_tx, settle))
            .map_err(|e| WatchError::Start(notify::Error::io(e)))?;
        Ok(ModuleWatcher {
            debouncer: Some(debouncer),
            aggregator: Some(aggregator),
            changes: changes_rx,
        })
    }

    /// The change sets, one per debounced burst that changed a source.
    pub fn changes(&self) -> &Receiver<ChangeSet> {
        &self.changes
    }
}

impl Drop for ModuleWatcher {
    fn drop(&mut self) {
        if let Some(debouncer) = self.debouncer.take() {
            // Joins the debouncer thread, which drops the sender: the
            // aggregator then sees a disconnect and exits.
            debouncer.stop();
        }
        if let Some(aggregator) = self.aggregator.take() {
            let _ = aggregator.join();
        }
    }
}

/// The burst being collected.
struct Pending {
    paths: BTreeSet<PathBuf>,
    first_event_at: Instant,
}

fn aggregate(
    mut hashes: SourceHashes,
    raw: Receiver<DebounceEventResult>,
    changes: Sender<ChangeSet>,
    settle: Duration,
) {
    let mut pending: Option<Pending> = None;
    loop {
        let received = match &pending {
            Some(_) => raw.recv_timeout(settle),
            None => raw.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(Ok(events)) => {
                for event in &events {
                    let Some(changed) = hashes.apply(event) else {
                        continue;
                    };
                    let burst = pending.get_or_insert_with(|| Pending {
                        paths: BTreeSet::new(),
                        first_event_at: event.time,
                    });
                    burst.first_event_at = burst.first_event_at.min(event.time);
                    burst.paths.extend(changed);
                }
            }
            Ok(Err(errors)) => {
                for error in errors {
                    tracing::warn!("file watcher: {error}");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(burst) = pending.take() {
                    if let Some(set) = hashes.change_set(burst) {
                        if changes.send(set).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The last seen content hash of every source file, and the graph that says
/// what they belong to.
struct SourceHashes {
    graph: ModuleGraph,
    hashes: HashMap<PathBuf, u64>,
}

impl SourceHashes {
    fn new(graph: ModuleGraph) -> Self {
        SourceHashes {
            graph,
            hashes: HashMap::new(),
        }
    }

    /// Records every source file under the watched directories.
    fn scan_all(&mut self) {
        let root = self.graph.workspace_root().to_path_buf();
        for name in ["Cargo.toml", "Cargo.lock"] {
            self.refresh_file(&root.join(name));
        }
        for dir in self.graph.watch_dirs() {
            self.refresh_dir(&dir);
        }
    }

    /// Re-hashes what `event` touched. `None`: the event concerns nothing
    /// relevant (reads, ignored locations); `Some(paths)`: the sources whose
    /// content changed, possibly none.
    fn apply(&mut self, event: &DebouncedEvent) -> Option<Vec<PathBuf>> {
        if event.need_rescan() {
            let before = std::mem::take(&mut self.hashes);
            self.scan_all();
            let mut changed: Vec<PathBuf> = self
                .hashes
                .iter()
                .filter(|(p, h)| before.get(*p) != Some(h))
                .map(|(p, _)| p.clone())
                .collect();
            changed.extend(before.into_keys().filter(|p| !self.hashes.contains_key(p)));
            return Some(changed);
        }
        if let EventKind::Access(kind) = event.kind {
            // Opens and reads (ours included) change nothing.
            if kind != AccessKind::Close(AccessMode::Write) {
                return None;
            }
        }
        let mut relevant = false;
        let mut changed = Vec::new();
        for path in &event.paths {
            if self.graph.is_ignored_location(path) {
                continue;
            }
            relevant = true;
            changed.extend(self.refresh(path));
        }
        relevant.then_some(changed)
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
        match fs::read(path) {
            Ok(bytes) => {
                let mut hasher = DefaultHasher::new();
                hasher.write(&bytes);
                let hash = hasher.finish();
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

    /// The change set for a burst, if any of its paths concerns a module or
    /// the contract.
    fn change_set(&self, burst: Pending) -> Option<ChangeSet> {
        let mut modules = BTreeSet::new();
        let mut contract_changed = false;
        for path in &burst.paths {
            match self.graph.classify(path) {
                Classified::Modules(m) => modules.extend(m),
                Classified::Contract => contract_changed = true,
                Classified::Ignored => {}
            }
        }
        if modules.is_empty() && !contract_changed {
            return None;
        }
        Some(ChangeSet {
            modules,
            contract_changed,
            paths: burst.paths.into_iter().collect(),
            first_event_at: burst.first_event_at,
        })
    }
}

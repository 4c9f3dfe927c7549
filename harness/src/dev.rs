//! `kiln dev`: watch the kernel sources, rebuild the served module on every
//! save, swap the new version in with the engine's state, replay the
//! workload, and log every step with its timing.
//!
//! Threads: the watcher and the build queue run on their own threads and
//! report on channels; this loop owns the served module, so builds never
//! block the serving path, and every swap and replay happens here, in order.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use shared_state::Snapshot;

use crate::build_queue::{BuildEvent, BuildQueue, BuildReport};
use crate::compare::Tolerances;
use crate::engine_handle::EngineOptions;
use crate::history::{History, VersionRecord};
use crate::load::{LoadError, LoadedModule};
use crate::module_build::{BuildOutcome, ModuleBuilder};
use crate::module_graph::{KernelModule, ModuleGraph};
use crate::replay::{self, ReplayOptions, ReplayReport};
use crate::served::{ServedModule, human_bytes};
use crate::stage::{Staged, StagingDir};
use crate::timing::Stats;
use crate::watch::{ChangeSet, ModuleWatcher, WatchOptions};
use crate::workload::Workload;
use crate::{snapshot_file, workspace};

/// What to do with a version whose replay fails correctness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFail {
    /// Swap the last good version back in, with the state.
    Rollback,
    /// Keep serving it and warn.
    Keep,
}

impl std::str::FromStr for OnFail {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rollback" => Ok(OnFail::Rollback),
            "keep" => Ok(OnFail::Keep),
            other => Err(format!("unknown --on-fail {other:?} (rollback or keep)")),
        }
    }
}

/// Options of `kiln dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    pub backend: String,
    pub workload: Option<PathBuf>,
    pub device: Option<String>,
    pub threads: usize,
    pub on_fail: OnFail,
    /// Replay the workload after every swap.
    pub replay: bool,
    /// Load state from this snapshot file at start (if it exists) and save
    /// it there at exit.
    pub state: Option<PathBuf>,
    pub debounce: Duration,
    /// Workspace to serve (default: the one containing the current dir).
    pub workspace: Option<PathBuf>,
    /// At exit, write the session as a workload: the engine's resident
    /// buffers and the calls of the last passing replay, with the outputs
    /// that version produced as expected values.
    pub record: Option<PathBuf>,
}

/// Why `kiln dev` could not start (once running, problems are logged and
/// the current version keeps serving).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DevError(pub String);

fn err(message: impl Into<String>) -> DevError {
    DevError(message.into())
}

struct LastGood {
    /// A private copy of the last version that passed replay.
    copy: PathBuf,
    version: u64,
    timings: BTreeMap<String, Stats>,
}

struct Session {
    module: KernelModule,
    stage: StagingDir,
    served: ServedModule,
    workload: Workload,
    replay: Option<ReplayOptions>,
    on_fail: OnFail,
    history: History,
    history_path: PathBuf,
    state_path: PathBuf,
    explicit_state: Option<PathBuf>,
    last_good: Option<LastGood>,
    current_hash: String,
    spinner: Spinner,
    record: Option<PathBuf>,
    /// The last passing replay (kept only when recording).
    last_passing: Option<ReplayReport>,
}

/// The state file written when the host must restart.
fn restart_state_path(target: &Path, module: &str) -> PathBuf {
    target
        .join("kiln")
        .join("state")
        .join(format!("{module}.snapshot"))
}

fn select_module(graph: &ModuleGraph, backend: &str) -> Result<KernelModule, DevError> {
    graph
        .modules()
        .iter()
        .find(|m| m.backend == backend || m.package == backend)
        .cloned()
        .ok_or_else(|| {
            let have: Vec<&str> = graph.modules().iter().map(|m| m.backend.as_str()).collect();
            err(format!(
                "no kernel module for backend {backend:?} under kernels/ (have: {})",
                have.join(", ")
            ))
        })
}

/// Builds `module` now, on this thread, with a spinner on a terminal.
pub fn build_now(
    builder: &ModuleBuilder,
    module: &KernelModule,
) -> Result<(PathBuf, f64), DevError> {
    let mut spinner = Spinner::new();
    spinner.start(&module.package);
    tracing::info!(event = "build_started", module = %module.package, version = 0u64, "building {}", module.package);
    let outcome = builder
        .build(module, &mut |p| spinner.progress(&p.step))
        .map_err(|e| err(format!("cannot build {}: {e}", module.package)));
    spinner.clear();
    match outcome? {
        BuildOutcome::Built { artifact, ms, .. } => {
            tracing::info!(event = "build_finished", module = %module.package, version = 0u64, ms, "built {} in {ms} ms", module.package);
            Ok((artifact, ms as f64))
        }
        BuildOutcome::Failed { rendered, ms } => {
            eprint!("{rendered}");
            tracing::error!(event = "build_failed", module = %module.package, version = 0u64, ms, diagnostics = %strip_ansi(&rendered), "build of {} failed", module.package);
            Err(err(format!(
                "{} does not build (see the compiler's messages above); fix it and start kiln dev again",
                module.package
            )))
        }
    }
}

/// Runs the dev loop until `shutdown` fires.
pub fn run(options: DevOptions, shutdown: Receiver<()>) -> Result<(), DevError> {
    let root = match &options.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()
            .ok()
            .and_then(|d| workspace::find_workspace_root(&d))
            .unwrap_or_else(workspace::built_workspace_root),
    };
    let mut graph = ModuleGraph::discover(&root).map_err(|e| err(e.to_string()))?;
    let module = select_module(&graph, &options.backend)?;
    let target = workspace::target_dir(&root);
    let stage_root = workspace::staging_root(&root);
    graph.ignore_dir(stage_root.clone());
    tracing::info!(
        "kiln dev: serving {} ({} backend) from {}",
        module.package,
        module.backend,
        root.display()
    );

    // Load the workload first: a damaged file should stop us before a build.
    let workload = match &options.workload {
        Some(path) => crate::workload::read(path).map_err(|e| err(e.to_string()))?,
        None => crate::workload::default_workload(),
    };
    tracing::info!("{}", workload.describe());
    let tolerances_path = root.join("kiln.toml");
    let tolerances = if tolerances_path.exists() {
        Tolerances::load(&tolerances_path).map_err(|e| err(e.to_string()))?
    } else {
        Tolerances::default()
    };

    let builder = ModuleBuilder::new(&root, workspace::module_target_dir(&root))
        .with_profile(workspace::HOST_PROFILE);
    let (artifact, build_ms) = build_now(&builder, &module)?;
    let stage = StagingDir::create(&stage_root).map_err(|e| err(e.to_string()))?;
    let staged = stage
        .stage(&module.package, &artifact)
        .map_err(|e| err(e.to_string()))?;
    let current_hash = staged.hash.clone();
    let loaded = LoadedModule::open(staged).map_err(|e| {
        refused(&module.package, &e);
        err(e.to_string())
    })?;

    // State: an explicit --state file, or the one saved for a restart.
    let state_path = restart_state_path(&target, &module.package);
    let prior_path = options
        .state
        .clone()
        .filter(|p| p.exists())
        .or_else(|| state_path.exists().then(|| state_path.clone()));
    let prior = match &prior_path {
        Some(path) => {
            let snapshot = snapshot_file::load(path).map_err(|e| err(e.to_string()))?;
            tracing::info!(
                "restoring state from {} ({} sections, {})",
                path.display(),
                snapshot.len(),
                human_bytes(snapshot.byte_len())
            );
            Some(snapshot)
        }
        None => None,
    };
    let mut engine_options = EngineOptions {
        threads: options.threads,
        ..Default::default()
    };
    if let Some(device) = &options.device {
        engine_options
            .options
            .insert("device".into(), device.clone());
    }
    let (served, report) = ServedModule::start(loaded, engine_options, prior)
        .map_err(|e| err(format!("cannot start {}: {e}", module.package)))?;
    if prior_path.is_some() {
        tracing::info!("state restored: {report}");
        if prior_path.as_ref() == Some(&state_path) {
            let _ = std::fs::remove_file(&state_path);
        }
    }
    let info = served
        .handle()
        .info()
        .map_err(|e| err(format!("{}: {e}", module.package)))?;
    tracing::info!("{} serving on {}", served.label(), info.device);

    let mut session = Session {
        history: History {
            module: module.package.clone(),
            backend: module.backend.clone(),
            workload: workload.name.clone(),
            versions: Vec::new(),
        },
        history_path: crate::history::default_path(&target, &module.package),
        module,
        stage,
        served,
        workload,
        replay: options.replay.then(|| ReplayOptions {
            tolerances,
            keep_outputs: options.record.is_some(),
            ..ReplayOptions::default()
        }),
        on_fail: options.on_fail,
        state_path,
        explicit_state: options.state.clone(),
        last_good: None,
        current_hash,
        spinner: Spinner::new(),
        record: options.record.clone(),
        last_passing: None,
    };
    let loaded = replay::load_state(&session.served.handle(), &session.workload)
        .map_err(|e| err(format!("cannot load the workload's buffers: {e}")))?;
    if loaded > 0 {
        tracing::info!("loaded {loaded} resident buffer(s) from the workload");
    }
    session.after_swap(Some(build_ms), None, None);

    let watcher = ModuleWatcher::start(
        graph,
        WatchOptions {
            debounce: options.debounce,
        },
    )
    .map_err(|e| err(format!("cannot watch the sources: {e}")))?;
    let queue = BuildQueue::start(builder, [session.module.clone()])
        .map_err(|e| err(format!("cannot start the build thread: {e}")))?;
    tracing::info!(
        "watching {} (and its path dependencies); save a kernel to rebuild. Ctrl-C to stop.",
        session.module.dir.display()
    );

    let ticker = crossbeam_channel::tick(Duration::from_millis(100));
    let mut pending_change: Option<(Instant, Instant)> = None; // (first event, seen)
    let mut stopped_by: Option<&str> = None;
    loop {
        select! {
            recv(shutdown) -> _ => break,
            recv(watcher.changes()) -> change => {
                let Ok(change) = change else {
                    stopped_by = Some("the file watcher stopped");
                    break;
                };
                if let Some(seen) = session.on_change(&change, &queue) {
                    pending_change.get_or_insert(seen);
                }
            }
            recv(queue.events()) -> event => {
                let Ok(event) = event else {
                    stopped_by = Some("the build thread stopped");
                    break;
                };
                match event {
                    BuildEvent::Started { module, requests } => {
                        tracing::info!(event = "build_started", module = %module, version = session.version(), requests, "building {module}");
                        session.spinner.start(&module);
                    }
                    BuildEvent::Progress { progress, .. } => session.spinner.progress(&progress.step),
                    BuildEvent::Finished(report) => {
                        session.spinner.clear();
                        let change = pending_change.take();
                        session.on_built(report, change);
                    }
                }
            }
            recv(ticker) -> _ => session.spinner.tick(),
        }
    }
    drop(watcher);
    queue.shutdown();
    session.finish();
    match stopped_by {
        None => Ok(()),
        Some(why) => Err(err(format!("kiln dev stopped unexpectedly: {why}"))),
    }
}

fn refused(module: &str, e: &LoadError) {
    tracing::error!(event = "refused", module, version = 0u64, reason = %e, "{e}");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Session {
    fn version(&self) -> u64 {
        self.served.handle().module().staged.version
    }

    /// Handles a change set; returns (first event, seen) if a build of the
    /// served module was requested.
    fn on_change(&mut self, change: &ChangeSet, queue: &BuildQueue) -> Option<(Instant, Instant)> {
        let seen = Instant::now();
        let names: Vec<String> = change
            .paths
            .iter()
            .map(|p| {
                p.file_name().map_or(p.display().to_string(), |n| {
                    n.to_string_lossy().into_owned()
                })
            })
            .collect();
        if change.contract_changed {
            self.restart_required();
            return None;
        }
        if !change.modules.contains(&self.module.package) {
            tracing::debug!(
                "change in {} (not served): {}",
                change
                    .modules
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                names.join(", ")
            );
            return None;
        }
        let debounce_ms = seen.duration_since(change.first_event_at).as_secs_f64() * 1e3;
        tracing::info!(
            event = "change",
            module = %self.module.package,
            version = self.version(),
            ms = debounce_ms,
            paths = %names.join(","),
            "change seen: {} ({debounce_ms:.0} ms after the save)",
            names.join(", ")
        );
        let _ = queue.request(&self.module.package, change.first_event_at);
        Some((change.first_event_at, seen))
    }

    fn restart_required(&mut self) {
        let saved = self
            .served
            .handle()
            .export_state()
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if let Some(dir) = self.state_path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                snapshot_file::save(&s, &self.state_path).map_err(|e| e.to_string())
            });
        let state = match saved {
            Ok(bytes) => format!(
                "the engine's state ({}) is saved in {} and will be restored when kiln dev starts again",
                human_bytes(bytes as usize),
                self.state_path.display()
            ),
            Err(e) => format!("saving the engine's state failed: {e}"),
        };
        tracing::warn!(
            event = "restart_required",
            module = %self.module.package,
            version = self.version(),
            "shared-state (the contract between host and modules) changed: it cannot be hot-swapped. \
             Restart kiln dev (Ctrl-C, then `cargo dev`); {state}. Still serving {}.",
            self.served.label()
        );
    }

    fn on_built(&mut self, report: BuildReport, change: Option<(Instant, Instant)>) {
        let module = self.module.package.clone();
        let build_ms = report
            .finished_at
            .duration_since(report.started_at)
            .as_secs_f64()
            * 1e3;
        let outcome = match report.result {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(event = "build_failed", module = %module, version = self.version(), ms = build_ms, "cannot run cargo: {e}");
                return;
            }
        };
        let artifact = match outcome {
            BuildOutcome::Failed { rendered, .. } => {
                eprint!("{rendered}");
                tracing::error!(
                    event = "build_failed",
                    module = %module,
                    version = self.version(),
                    ms = build_ms,
                    diagnostics = %strip_ansi(&rendered),
                    "build of {module} failed after {build_ms:.0} ms; {} keeps serving",
                    self.served.label()
                );
                return;
            }
            BuildOutcome::Built { artifact, .. } => artifact,
        };
        tracing::info!(event = "build_finished", module = %module, version = self.version(), ms = build_ms, "built {module} in {build_ms:.0} ms");
        let stage_start = Instant::now();
        let staged = match self.stage.stage(&module, &artifact) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(event = "refused", module = %module, version = self.version(), "{e}");
                return;
            }
        };
        if staged.hash == self.current_hash {
            tracing::info!(
                "{} is identical to the serving build; not swapping",
                staged.label
            );
            self.stage.remove(&staged);
            return;
        }
        let hash = staged.hash.clone();
        let loaded = match LoadedModule::open(staged) {
            Ok(m) => m,
            Err(e) => {
                refused(&module, &e);
                if matches!(&e, LoadError::Mismatch { differences, .. } if differences.iter().any(|d| d.field.starts_with("contract")))
                {
                    self.restart_required();
                }
                return;
            }
        };
        let stage_load_ms = stage_start.elapsed().as_secs_f64() * 1e3;
        let from_version = self.version();
        match self.served.swap_keeping_old(loaded) {
            Ok((swap, old)) => {
                self.current_hash = hash;
                let total_ms = change.map(|(first, _)| first.elapsed().as_secs_f64() * 1e3);
                let debounce_ms =
                    change.map(|(first, seen)| seen.duration_since(first).as_secs_f64() * 1e3);
                tracing::info!(
                    event = "swapped",
                    module = %module,
                    version = self.version(),
                    from_version,
                    ms = total_ms.unwrap_or(stage_load_ms + swap.paused_ms),
                    debounce_ms,
                    build_ms,
                    stage_load_ms,
                    handoff_ms = swap.paused_ms,
                    handoff_bytes = swap.bytes,
                    "swapped {} -> {}: {} from save to serving (debounce {}, build {build_ms:.0}, stage+load {stage_load_ms:.1}, handoff {:.1} ms for {})",
                    swap.from,
                    swap.to,
                    total_ms.map_or("-".to_string(), |t| format!("{t:.0} ms")),
                    debounce_ms.map_or("-".to_string(), |d| format!("{d:.0}")),
                    swap.paused_ms,
                    human_bytes(swap.bytes)
                );
                // The old version stays alive through the replay so both are
                // timed interleaved; it is retired right after.
                self.after_swap(Some(build_ms), Some(swap.paused_ms), Some(&old));
                drop(old);
            }
            Err(e) => {
                tracing::error!(event = "refused", module = %module, version = from_version, "{e}; {} keeps serving", self.served.label());
            }
        }
    }

    /// Replays after a swap (or at start), records the version, and rolls
    /// back if it failed and rollback is on.
    fn after_swap(
        &mut self,
        build_ms: Option<f64>,
        swap_ms: Option<f64>,
        old: Option<&crate::engine_handle::EngineHandle>,
    ) {
        let handle = self.served.handle();
        let staged: Staged = handle.module().staged.clone();
        let baseline = match (old, &self.last_good) {
            (Some(old), _) => replay::Baseline::Interleaved(old),
            (None, Some(good)) => replay::Baseline::Recorded(&good.timings),
            (None, None) => replay::Baseline::None,
        };
        let report = self
            .replay
            .as_ref()
            .map(|options| replay::replay_with(&handle, &self.workload, options, baseline));
        drop(handle);
        let passed = report.as_ref().is_none_or(ReplayReport::passed);
        if let Some(report) = &report {
            replay::log_events(report, &staged.module, staged.version);
            print_table(report);
        }
        self.history.versions.push(VersionRecord {
            version: staged.version,
            label: staged.label.clone(),
            source_hash: staged.hash.clone(),
            build_ms,
            swap_ms,
            medians: report
                .as_ref()
                .map(|r| {
                    r.timings()
                        .into_iter()
                        .map(|(k, s)| (k, s.median))
                        .collect()
                })
                .unwrap_or_default(),
            passed,
            note: None,
        });
        if passed {
            let copy = self
                .stage
                .path()
                .join(format!("{}-last-good.so", staged.module));
            let _ = std::fs::remove_file(&copy);
            match std::fs::copy(&staged.path, &copy) {
                Ok(_) => {
                    self.last_good = Some(LastGood {
                        copy,
                        version: staged.version,
                        timings: report
                            .as_ref()
                            .map(ReplayReport::timings)
                            .unwrap_or_default(),
                    })
                }
                Err(e) => {
                    tracing::warn!("cannot keep a copy of {} for rollback: {e}", staged.label)
                }
            }
            if let Some(best) = self.history.best() {
                tracing::info!(
                    "best version so far: v{} of {}",
                    best.version,
                    self.history.versions.len()
                );
            }
        } else if let Some(failure) = report.as_ref().and_then(ReplayReport::first_failure) {
            let why = failure
                .error
                .clone()
                .or_else(|| failure.comparison.as_ref().map(|c| c.summary()))
                .unwrap_or_default();
            match (self.on_fail, &self.last_good) {
                (OnFail::Rollback, Some(good)) => {
                    tracing::error!(
                        event = "replay_failed",
                        module = %staged.module,
                        version = staged.version,
                        "{} failed replay at call {} ({}): {why}; rolling back to v{}",
                        staged.label, failure.index, failure.kernel, good.version
                    );
                    self.rollback();
                }
                (OnFail::Rollback, None) => tracing::error!(
                    event = "replay_failed",
                    module = %staged.module,
                    version = staged.version,
                    "{} failed replay at call {} ({}): {why}; no earlier good version to roll back to, keeping it",
                    staged.label, failure.index, failure.kernel
                ),
                (OnFail::Keep, _) => tracing::warn!(
                    event = "replay_failed",
                    module = %staged.module,
                    version = staged.version,
                    "{} failed replay at call {} ({}): {why}; keeping it (--on-fail keep)",
                    staged.label, failure.index, failure.kernel
                ),
            }
        }
        if passed && self.record.is_some() {
            self.last_passing = report;
        }
        if let Err(e) = self.history.save(&self.history_path) {
            tracing::warn!(
                "cannot save history to {}: {e}",
                self.history_path.display()
            );
        }
    }

    fn rollback(&mut self) {
        let Some(good) = &self.last_good else { return };
        let good_version = good.version;
        let result = self
            .stage
            .stage(&self.module.package, &good.copy)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                let hash = s.hash.clone();
                LoadedModule::open(s)
                    .map(|m| (m, hash))
                    .map_err(|e| e.to_string())
            })
            .and_then(|(m, hash)| {
                self.served
                    .swap(m)
                    .map(|r| (r, hash))
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok((swap, hash)) => {
                self.current_hash = hash;
                if let Some(last) = self.history.versions.last_mut() {
                    last.note = Some(format!("rolled back to v{good_version}"));
                }
                tracing::warn!(
                    event = "rolled_back",
                    module = %self.module.package,
                    version = self.version(),
                    ms = swap.paused_ms,
                    "rolled back: {} now serves the code of v{good_version}, with the state ({})",
                    swap.to,
                    human_bytes(swap.bytes)
                );
                if let Some(good) = &mut self.last_good {
                    good.version = self.served.handle().module().staged.version;
                }
            }
            Err(e) => tracing::error!("rollback failed: {e}; keeping {}", self.served.label()),
        }
    }

    fn finish(self) {
        if let Some(path) = &self.explicit_state {
            match self
                .served
                .handle()
                .export_state()
                .map_err(|e| e.to_string())
                .and_then(|s: Snapshot| snapshot_file::save(&s, path).map_err(|e| e.to_string()))
            {
                Ok(bytes) => tracing::info!(
                    "state saved to {} ({})",
                    path.display(),
                    human_bytes(bytes as usize)
                ),
                Err(e) => tracing::error!("cannot save state to {}: {e}", path.display()),
            }
        }
        if let (Some(path), Some(report)) = (&self.record, &self.last_passing) {
            let name = format!("{}-session", self.module.package);
            match replay::session_workload(&name, &self.served.handle(), report)
                .map_err(|e| e.to_string())
                .and_then(|w| {
                    crate::workload::write(&w, path).map_err(|e| e.to_string())?;
                    Ok(w)
                }) {
                Ok(w) => tracing::info!(
                    "recorded the session to {}: {}",
                    path.display(),
                    w.describe()
                ),
                Err(e) => tracing::error!("cannot record the session to {}: {e}", path.display()),
            }
        }
        if let Some(best) = self.history.best() {
            tracing::info!(
                "session over: {} versions, best v{} ({}); history in {}",
                self.history.versions.len(),
                best.version,
                best.label,
                self.history_path.display()
            );
        }
        drop(self.served);
        drop(self.stage);
        tracing::info!("kiln dev stopped; staged files removed");
    }
}

fn print_table(report: &ReplayReport) {
    if !tracing::enabled!(target: "kiln::table", tracing::Level::INFO) {
        return;
    }
    for line in report.table().lines() {
        tracing::info!(target: "kiln::table", "{line}");
    }
}

/// A one-line progress spinner on standard error, for builds longer than a
/// second, only on a terminal.
struct Spinner {
    active: Option<(String, Instant)>,
    step: String,
    shown: bool,
    frame: usize,
    enabled: bool,
}

impl Spinner {
    fn new() -> Spinner {
        Spinner {
            active: None,
            step: String::new(),
            shown: false,
            frame: 0,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn start(&mut self, module: &str) {
        self.active = Some((module.to_string(), Instant::now()));
        self.step.clear();
    }

    fn progress(&mut self, step: &str) {
        self.step = step.to_string();
        self.tick();
    }

    fn tick(&mut self) {
        let Some((module, start)) = &self.active else {
            return;
        };
        let elapsed = start.elapsed();
        if !self.enabled || elapsed < Duration::from_secs(1) {
            return;
        }
        const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        self.frame = (self.frame + 1) % FRAMES.len();
        let mut step = self.step.clone();
        step.truncate(60);
        eprint!(
            "\r\x1b[2K{} building {module} {:.1}s  {step}",
            FRAMES[self.frame],
            elapsed.as_secs_f64()
        );
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
        }
        self.shown = false;
        self.active = None;
    }
}

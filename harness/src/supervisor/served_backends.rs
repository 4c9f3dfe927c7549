//! Several backends served at once (`kiln dev --backends cpu,vulkan`).
//!
//! The first backend named is the session's own (the [`Session`]'s module,
//! worker, history, keys and `kiln ctl` as with one backend); each other
//! one is an [`OtherBackend`]: its own module, its own worker process
//! (started with the same state: the `--state` file or the workload's
//! buffers), its own versions, history file and last good version.
//!
//! - A save in a backend's module builds (or, for a shader, re-stages)
//!   that module only and swaps that backend's worker only; the others keep
//!   the version they serve.
//! - After each swap (of any backend, and at start) the workload replays on
//!   every served backend; each backend is checked against the reference
//!   as usual, and its timings are judged against its own previous
//!   version only (a second backend starts its own timing baseline: a
//!   verdict never compares one backend with another). Then the outputs
//!   are cross-compared: the first backend writes what each call produced,
//!   every other backend compares its own outputs with it
//!   ([`crate::workload::cross_compare`]), and one table shows a column per
//!   backend ([`crate::workload::backend_columns`]).
//! - A new version of another backend that fails its replay is rolled back
//!   to that backend's last good version (with `--on-fail rollback`); a
//!   worker of another backend that goes down is restarted at once on that
//!   backend's last good version with its last checkpoint, as the
//!   session's own backend is (`recovery.rs`, [`restart_lane`]).
//! - `switch`, `undo` and `bless` act on one served backend and are
//!   refused while several are served (see
//!   [`Session::several_backends_refusal`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::dev_loop::{DevError, OnFail, build_now};
use super::recovery::{Lane, Restarted, record_down, restart_lane, version_of};
use super::session::{LastGood, Session, print_table};
use super::version_change::{ModuleChange, is_in};
use super::watch::ChangeSet;
use crate::build::module_build::strip_ansi;
use crate::build::module_build::{BuildOutcome, ModuleBuilder};
use crate::build::module_graph::KernelModule;
use crate::build::queue::{BuildQueue, BuildReport};
use crate::history::{History, VersionRecord};
use crate::isolation::isolated::{IsolatedEngine, IsolationOptions};
use crate::isolation::worker_client::{Down, DownKind, WorkerError};
use crate::swap::stage::{Staged, StagingDir};
use crate::worker::protocol::{ReplaySummary, StateSource};
use crate::workload::backend_columns::{BackendColumn, table};
use crate::workload::cross_compare::CrossCheck;
use crate::workload::timing::Stats;

/// A version that started serving and has not been replayed yet.
#[derive(Clone, Copy, Debug)]
struct Fresh {
    build_ms: Option<f64>,
    swap_ms: Option<f64>,
    /// The replaced version is alive in the worker, to be timed against.
    old_alive: bool,
}

/// A served backend besides the session's own.
pub(super) struct OtherBackend {
    pub(super) module: KernelModule,
    engine: IsolatedEngine,
    serving: Staged,
    history: History,
    history_path: PathBuf,
    last_good: Option<LastGood>,
    /// A build of this module was requested: (first event, seen).
    pub(super) pending: Option<(Instant, Instant)>,
    fresh: Option<Fresh>,
}

impl OtherBackend {
    pub(super) fn label(&self) -> String {
        self.engine.label()
    }

    fn version(&self) -> u64 {
        self.serving.version
    }

    pub(super) fn history(&self) -> &History {
        &self.history
    }

    fn save_history(&self) {
        if let Err(e) = self.history.save(&self.history_path) {
            tracing::warn!(
                "cannot save history to {}: {e}",
                self.history_path.display()
            );
        }
    }
}

/// What starting the other backends needs from `kiln dev`'s start.
pub(super) struct OthersSetup<'a> {
    pub names: &'a [String],
    pub modules: &'a [KernelModule],
    pub primary: &'a KernelModule,
    pub builder: &'a ModuleBuilder,
    pub stage: &'a StagingDir,
    pub isolation: &'a IsolationOptions,
    pub shutdown: &'a Receiver<()>,
    /// The state the session's own backend started from.
    pub state: StateSource,
    pub target: &'a Path,
    pub workload_name: &'a str,
}

/// Builds, stages and starts a worker for each backend of `setup.names`
/// (with the state the first backend started from, then the workload's
/// buffers it does not hold). Any that cannot start stops `kiln dev`
/// with the reason: the user asked for it.
pub(super) fn start_others(setup: OthersSetup<'_>) -> Result<Vec<OtherBackend>, DevError> {
    let mut others: Vec<OtherBackend> = Vec::new();
    for name in setup.names {
        let module = setup
            .modules
            .iter()
            .find(|m| m.backend == *name || m.package == *name)
            .cloned()
            .ok_or_else(|| {
                DevError(format!(
                    "--backends: no kernel module for backend {name:?} under kernels/ (have: {})",
                    setup
                        .modules
                        .iter()
                        .map(|m| m.backend.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if module.package == setup.primary.package
            || others.iter().any(|o| o.module.package == module.package)
        {
            return Err(DevError(format!(
                "--backends: {} is named twice",
                module.backend
            )));
        }
        let (artifact, build_ms) = build_now(setup.builder, &module)?;
        let staged = setup
            .stage
            .stage(&module.package, &artifact)
            .map_err(|e| DevError(e.to_string()))?;
        let mut engine = IsolatedEngine::new(setup.isolation.clone(), Some(setup.shutdown.clone()))
            .map_err(|e| DevError(format!("cannot set up a worker for {name}: {e}")))?;
        let started = engine
            .start(&staged, setup.state.clone())
            .map_err(|e| DevError(format!("cannot start {}: {e}", module.package)))?;
        tracing::info!(
            event = "worker_started",
            module = %module.package,
            version = started.version,
            pid = engine.worker_pid(),
            "{} serving on {} (worker pid {}), beside {}",
            started.label,
            started.device,
            engine.worker_pid().unwrap_or_default(),
            setup.primary.package
        );
        let loaded = engine.load_workload_state().map_err(|e| {
            DevError(format!(
                "{}: cannot load the workload's buffers: {e}",
                module.package
            ))
        })?;
        if loaded > 0 {
            tracing::info!(
                "{}: loaded {loaded} resident buffer(s) from the workload",
                started.label
            );
        }
        others.push(OtherBackend {
            history: History {
                module: module.package.clone(),
                backend: module.backend.clone(),
                workload: setup.workload_name.to_string(),
                versions: Vec::new(),
            },
            history_path: crate::history::default_path(setup.target, &module.package),
            module,
            engine,
            serving: staged,
            last_good: None,
            pending: None,
            fresh: Some(Fresh {
                build_ms: Some(build_ms),
                swap_ms: None,
                old_alive: false,
            }),
        });
    }
    Ok(others)
}

impl Session {
    /// The refusal of a command that acts on one served backend, while
    /// several are served.
    pub(super) fn several_backends_refusal(&self, command: &str) -> Option<String> {
        if self.others.is_empty() {
            return None;
        }
        let served: Vec<String> = std::iter::once(self.label())
            .chain(self.others.iter().map(OtherBackend::label))
            .collect();
        Some(format!(
            "{command} is not supported while several backends are served ({}); \
             start kiln dev with one --backend for it",
            served.join(", ")
        ))
    }

    /// A build of another served backend's module is under way.
    pub(super) fn other_build_pending(&self) -> Option<&str> {
        self.others
            .iter()
            .find(|o| o.pending.is_some())
            .map(|o| o.module.package.as_str())
    }

    /// Routes a change set to the other served backends: a Rust change in
    /// one's module builds that module (and only it); a shader or
    /// declaration change re-stages it.
    pub(super) fn route_others(&mut self, change: &ChangeSet, queue: &BuildQueue, seen: Instant) {
        for i in 0..self.others.len() {
            let module = self.others[i].module.clone();
            let ModuleChange { rust, files } = ModuleChange::of(change, &module);
            if (change.watched_changed || change.declarations_changed)
                && self.others[i].engine.is_serving()
            {
                if let Err(e) = self.others[i].engine.reload_workload() {
                    self.other_failed(i, e, "cannot read the workload again");
                }
            }
            if !rust && !files {
                continue;
            }
            let package = module.package.clone();
            let names: Vec<String> = change
                .paths
                .iter()
                .filter(|p| is_in(&module, p))
                .map(|p| p.display().to_string())
                .collect();
            tracing::info!(
                event = "change",
                module = %package,
                version = self.others[i].version(),
                paths = %names.join(","),
                build = rust,
                "change seen in {package}: {}",
                names.join(", ")
            );
            if rust {
                self.others[i].pending = Some((change.first_event_at, seen));
                let _ = queue.request(&package, change.first_event_at);
            } else {
                let library = self.others[i].serving.path.clone();
                if let Some(staged) = self.stage_or_report(&package, &library) {
                    self.swap_other(i, staged, None);
                }
            }
        }
    }

    /// The reference module was rebuilt: the other backends' workers use it
    /// too (as the session's own does).
    pub(super) fn set_reference_on_others(&mut self, staged: &Staged) {
        for i in 0..self.others.len() {
            if !self.others[i].engine.is_serving() {
                continue;
            }
            if let Err(e) = self.others[i].engine.set_reference(staged) {
                self.other_failed(i, e, "cannot take the new reference module");
            }
        }
    }

    /// The index of the other served backend whose module is `package`.
    pub(super) fn other_index(&self, package: &str) -> Option<usize> {
        self.others.iter().position(|o| o.module.package == package)
    }

    /// A build of another served backend's module ended: stage it and swap
    /// that backend only, then replay on every backend.
    pub(super) fn on_other_built(&mut self, i: usize, report: BuildReport) {
        self.others[i].pending = None;
        let module = report.module.clone();
        let build_ms = report
            .finished_at
            .duration_since(report.started_at)
            .as_secs_f64()
            * 1e3;
        let version = self.others[i].version();
        let artifact = match report.result {
            Err(e) => {
                tracing::error!(event = "build_failed", module = %module, version, ms = build_ms, "cannot run cargo: {e}");
                return;
            }
            Ok(BuildOutcome::Failed { rendered, .. }) => {
                eprint!("{rendered}");
                tracing::error!(
                    event = "build_failed",
                    module = %module,
                    version,
                    ms = build_ms,
                    diagnostics = %strip_ansi(&rendered),
                    "build of {module} failed after {build_ms:.0} ms; {} keeps serving",
                    self.others[i].label()
                );
                return;
            }
            Ok(BuildOutcome::Built { artifact, .. }) => artifact,
        };
        tracing::info!(event = "build_finished", module = %module, version, ms = build_ms, "built {module} in {build_ms:.0} ms");
        if let Some(staged) = self.stage_or_report(&module, &artifact) {
            self.swap_other(i, staged, Some(build_ms));
        }
    }

    /// Swaps other backend `i` to `staged` (or starts a worker on it, when
    /// the last one went down), then replays on every backend.
    fn swap_other(&mut self, i: usize, staged: Staged, build_ms: Option<f64>) {
        let other = &mut self.others[i];
        if staged.version_hash == other.serving.version_hash && other.engine.is_serving() {
            tracing::info!(
                "{} is identical to {}; not swapping",
                staged.label,
                other.label()
            );
            self.stage.remove(&staged);
            return;
        }
        let module = other.module.package.clone();
        let from_version = other.version();
        if !other.engine.is_serving() {
            let source = other.engine.checkpoint_source();
            match other.engine.start(&staged, source) {
                Ok(started) => {
                    tracing::info!(
                        event = "worker_started",
                        module = %module,
                        version = started.version,
                        pid = other.engine.worker_pid(),
                        "{} serving on {} in a new worker, with {module}'s last good state",
                        started.label,
                        started.device
                    );
                    other.serving = staged;
                    other.fresh = Some(Fresh {
                        build_ms,
                        swap_ms: None,
                        old_alive: false,
                    });
                }
                Err(e) => {
                    self.stage.remove(&staged);
                    self.other_failed(i, e, "cannot start a worker");
                    return;
                }
            }
        } else {
            match other.engine.swap(&staged, self.replay) {
                Ok(swap) => {
                    tracing::info!(
                        event = "swapped",
                        module = %module,
                        version = staged.version,
                        from_version,
                        build_ms,
                        handoff_ms = swap.paused_ms,
                        handoff_bytes = swap.bytes,
                        restaged = build_ms.is_none(),
                        "swapped {} -> {} (handoff {:.1} ms); the other backends keep their versions",
                        swap.from,
                        swap.to,
                        swap.paused_ms
                    );
                    other.serving = staged;
                    other.fresh = Some(Fresh {
                        build_ms,
                        swap_ms: Some(swap.paused_ms),
                        old_alive: true,
                    });
                }
                Err(e) => {
                    self.stage.remove(&staged);
                    self.other_failed(i, e, "swap refused");
                    return;
                }
            }
        }
        if !self.replay {
            self.others[i].fresh = None;
            return;
        }
        // The session's own backend runs the workload too (its version did
        // not change: checked against its last good timings).
        let recorded = self.last_good.as_ref().map(|g| g.timings.clone());
        let own = match self.engine.replay(recorded.as_ref()) {
            Ok(report) => {
                print_table(&report.table);
                Some(report)
            }
            Err(WorkerError::Down(down)) => {
                self.went_down(*down, None, 0.0);
                None
            }
            Err(WorkerError::Interrupted) => {
                self.stopping = true;
                return;
            }
            Err(WorkerError::Failed(e)) => {
                tracing::error!("cannot replay {}: {e}", self.label());
                None
            }
        };
        self.replay_on_others(own.as_ref());
    }

    /// Replays on every other served backend (a fresh version is recorded
    /// in its history, kept as last good or rolled back), cross-compares
    /// the outputs with the session's own backend's (`own`: its replay, just
    /// made), and prints the table with a column per backend.
    pub(super) fn replay_on_others(&mut self, own: Option<&ReplaySummary>) {
        if self.others.is_empty() || !self.replay || self.stopping {
            return;
        }
        let mut summaries: Vec<Option<ReplaySummary>> = Vec::new();
        for i in 0..self.others.len() {
            summaries.push(self.replay_other(i));
            if self.stopping {
                return;
            }
        }
        let checks = self.cross_compare(own, &summaries);
        let own_label = own.map_or_else(|| self.label(), |r| r.label.clone());
        let empty = Vec::new();
        let mut columns = vec![BackendColumn {
            label: &own_label,
            passed: own.is_some_and(|r| r.passed),
            lines: own.map_or(&empty, |r| &r.calls),
        }];
        let labels: Vec<String> = self.others.iter().map(OtherBackend::label).collect();
        for (summary, label) in summaries.iter().zip(&labels) {
            columns.push(BackendColumn {
                label: summary
                    .as_ref()
                    .map_or(label.as_str(), |s| s.label.as_str()),
                passed: summary.as_ref().is_some_and(|s| s.passed),
                lines: summary.as_ref().map_or(&empty, |s| &s.calls),
            });
        }
        let text = table(&columns, &checks);
        print_table(&text);
        let backends: Vec<&str> = columns.iter().map(|c| c.label).collect();
        tracing::info!(
            event = "backends_replayed",
            module = %self.module.package,
            version = self.version(),
            backends = %backends.join(","),
            passed = columns.iter().all(|c| c.passed),
            agree = !checks.is_empty() && checks.iter().all(CrossCheck::all_agree),
            table = %text,
            "replayed on {} backends: {}",
            columns.len(),
            backends.join(", ")
        );
    }

    /// Replays on other backend `i`: against its previous version (alive in
    /// its worker after a swap) or its last good timings, never another
    /// backend's.
    fn replay_other(&mut self, i: usize) -> Option<ReplaySummary> {
        let other = &mut self.others[i];
        if !other.engine.is_serving() {
            return None;
        }
        let fresh = other.fresh.take();
        let recorded = other.last_good.as_ref().map(|g| g.timings.clone());
        other
            .engine
            .set_previous_timings(&recorded.clone().unwrap_or_default());
        let old_alive = fresh.is_some_and(|f| f.old_alive);
        let report = match other
            .engine
            .replay(if old_alive { None } else { recorded.as_ref() })
        {
            Ok(report) => report,
            Err(WorkerError::Down(down)) => {
                let culprit = down.running.as_ref().map(|r| r.label.clone());
                let fresh_label = other.serving.label.clone();
                if old_alive && culprit.is_some_and(|l| !l.is_empty() && l != fresh_label) {
                    // The previous version, timed against, went down: the
                    // new one is judged on its own in a new worker.
                    return self.other_old_went_down(i, *down, fresh);
                }
                if old_alive {
                    self.stage.remove(&self.others[i].serving);
                }
                self.other_failed(i, WorkerError::Down(down), "replay failed");
                return None;
            }
            Err(e) => {
                self.other_failed(i, e, "replay failed");
                return None;
            }
        };
        print_table(&report.table);
        self.log_skipped(&report);
        let Some(fresh) = fresh else {
            return Some(report);
        };
        let other = &mut self.others[i];
        let timings: BTreeMap<String, Stats> = report
            .timings
            .iter()
            .map(|(k, s)| (k.clone(), s.into()))
            .collect();
        other.history.versions.push(VersionRecord {
            version: other.serving.version,
            label: other.serving.label.clone(),
            source_hash: other.serving.hash.clone(),
            build_ms: fresh.build_ms,
            swap_ms: fresh.swap_ms,
            medians: timings.iter().map(|(k, s)| (k.clone(), s.median)).collect(),
            passed: report.passed,
            crashed: false,
            note: None,
            tuning: Default::default(),
            rates: report.rates.calls.clone(),
            basis: report.rates.basis.clone(),
        });
        if report.passed {
            // A private copy (the session's kept good versions, for undo,
            // hold the last few of its own backend).
            let copy = self.stage.path().join(format!(
                "{}-last-good-v{}.so",
                other.module.package, other.serving.version
            ));
            match std::fs::copy(&other.serving.path, &copy) {
                Ok(_) => {
                    if let Some(old) = other.last_good.take() {
                        let _ = std::fs::remove_file(old.copy);
                    }
                    other.last_good = Some(LastGood {
                        copy,
                        files: other.serving.files.clone(),
                        version: other.serving.version,
                        timings,
                    })
                }
                Err(e) => tracing::warn!(
                    "cannot keep a copy of {} for rollback: {e}",
                    other.serving.label
                ),
            }
            if let Err(e) = other.engine.take_checkpoint() {
                self.other_failed(i, e, "checkpoint failed");
            }
        } else if self.on_fail == OnFail::Rollback {
            self.roll_back_other(i, &report);
        }
        self.others[i].save_history();
        Some(report)
    }

    /// Other backend `i`'s previous version, kept alive to be timed
    /// against the fresh one, crashed or hung: the fresh version starts
    /// again in a new worker with the backend's last good state and is
    /// replayed on its own.
    fn other_old_went_down(
        &mut self,
        i: usize,
        down: Down,
        fresh: Option<Fresh>,
    ) -> Option<ReplaySummary> {
        let other = &mut self.others[i];
        let module = other.module.package.clone();
        let old = down
            .running
            .as_ref()
            .map(|r| r.label.clone())
            .unwrap_or_default();
        let event = match &down.kind {
            DownKind::Crashed(_) => "crashed",
            DownKind::Hung { .. } => "hung",
        };
        tracing::error!(
            event,
            module = %module,
            version = version_of(&old).unwrap_or_default(),
            signal = down.signal(),
            old = true,
            "{old} (the previous version, timed against {}) {}; the comparison is lost: {} is judged on its own, in a new worker with {module}'s last good state",
            other.serving.label,
            down.describe(),
            other.serving.label
        );
        let source = other.engine.checkpoint_source();
        let staged = other.serving.clone();
        match other.engine.start(&staged, source) {
            Ok(_) => {
                other.fresh = fresh.map(|f| Fresh {
                    old_alive: false,
                    ..f
                });
                self.replay_other(i)
            }
            Err(e) => {
                self.stage.remove(&staged);
                self.other_failed(i, e, "cannot start the new version again");
                None
            }
        }
    }

    /// Other backend `i`'s new version failed its replay: back to its last
    /// good version, with the state.
    fn roll_back_other(&mut self, i: usize, report: &ReplaySummary) {
        let why = report.first_failure.as_ref().map_or(String::new(), |f| {
            format!(" at call {} ({}): {}", f.index, f.kernel, f.why)
        });
        let other = &self.others[i];
        let module = other.module.package.clone();
        let Some(good) = &other.last_good else {
            tracing::error!(event = "replay_failed", module = %module, version = other.version(), "{} failed replay{why}; no earlier good version of {module} to roll back to, keeping it", report.label);
            return;
        };
        tracing::error!(event = "replay_failed", module = %module, version = other.version(), "{} failed replay{why}; rolling back {module} to v{}", report.label, good.version);
        let good_version = good.version;
        let staged = match good.stage_again(&self.stage, &module) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("rollback of {module} failed: {e}");
                return;
            }
        };
        let other = &mut self.others[i];
        match other.engine.swap(&staged, false) {
            Ok(swap) => {
                if let Some(last) = other.history.versions.last_mut() {
                    last.note = Some(format!("rolled back to v{good_version}"));
                }
                tracing::warn!(event = "rolled_back", module = %module, version = staged.version, "rolled back: {} now serves the code of v{good_version}, with the state", swap.to);
                other.serving = staged;
                if let Some(good) = &mut other.last_good {
                    good.version = other.serving.version;
                }
            }
            Err(e) => {
                self.stage.remove(&staged);
                self.other_failed(i, e, "rollback failed");
            }
        }
    }

    /// The session's own backend writes its last replay's outputs; each
    /// other backend compares its own with them. One `cross_compared`
    /// event per pair.
    fn cross_compare(
        &mut self,
        own: Option<&ReplaySummary>,
        summaries: &[Option<ReplaySummary>],
    ) -> Vec<CrossCheck> {
        let Some(own) = own else {
            return Vec::new();
        };
        let path = self.stage.path().join(format!("{}.outputs", own.label));
        if let Err(e) = self.engine.write_outputs(&path) {
            tracing::warn!(
                event = "cross_compare_failed",
                module = %self.module.package,
                "cannot cross-compare the backends: {} did not write its outputs: {e}",
                own.label
            );
            return Vec::new();
        }
        let mut checks = Vec::new();
        for (i, summary) in summaries.iter().enumerate() {
            if summary.is_none() {
                continue;
            }
            match self.others[i].engine.compare_outputs(&path, &own.label) {
                Ok(check) => {
                    let all = check.all_agree();
                    let line = check.describe();
                    let module = self.others[i].module.package.clone();
                    let event_fields = (check.label.clone(), check.against.clone());
                    if all {
                        tracing::info!(event = "cross_compared", module = %module, backend = %event_fields.0, against = %event_fields.1, agree = true, compared = check.compared(), agreed = check.agreed(), "{line}");
                    } else {
                        tracing::warn!(event = "cross_compared", module = %module, backend = %event_fields.0, against = %event_fields.1, agree = false, compared = check.compared(), agreed = check.agreed(), "{line}");
                    }
                    checks.push(check);
                }
                Err(e) => self.other_failed(i, e, "cross-comparison failed"),
            }
        }
        let _ = std::fs::remove_file(&path);
        checks
    }

    /// A request to other backend `i` failed: logged; a worker that went
    /// down is restarted at once on that backend's last good version with
    /// its checkpoint, as the session's own backend is (`recovery.rs`).
    fn other_failed(&mut self, i: usize, error: WorkerError, what: &str) {
        let other = &self.others[i];
        let module = other.module.package.clone();
        match error {
            WorkerError::Interrupted => self.stopping = true,
            WorkerError::Failed(e) => {
                tracing::error!(event = "refused", module = %module, version = other.version(), "{what}: {e}; {} keeps serving", other.label())
            }
            WorkerError::Down(down) => self.other_went_down(i, *down, what),
        }
    }

    /// Other backend `i`'s worker crashed or hung: name what ran, mark that
    /// version in the backend's history, restart on its last good version.
    fn other_went_down(&mut self, i: usize, down: Down, what: &str) {
        let other = &mut self.others[i];
        let module = other.module.package.clone();
        let culprit = down
            .running
            .as_ref()
            .map(|r| r.label.clone())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| other.serving.label.clone());
        let culprit_version = version_of(&culprit).unwrap_or(other.serving.version);
        let event = match &down.kind {
            DownKind::Crashed(_) => "crashed",
            DownKind::Hung { .. } => "hung",
        };
        let next = match &other.last_good {
            Some(good) => format!(
                "restarting {module} on the code of v{} with its last good state",
                good.version
            ),
            None => format!("no good version of {module} to restart on: fix it and save"),
        };
        let description = down.describe();
        tracing::error!(
            event,
            module = %module,
            version = culprit_version,
            signal = down.signal(),
            last_words = %down.last_words.join("\n"),
            "{culprit} {description} ({what}); {next}"
        );
        let note = match &down.kind {
            DownKind::Crashed(_) => format!("{event}: {description}"),
            DownKind::Hung { .. } => description.clone(),
        };
        let build_ms = other.fresh.as_ref().and_then(|f| f.build_ms);
        record_down(
            &mut other.history,
            culprit_version,
            &culprit,
            note,
            build_ms,
        );
        other.fresh = None;
        other.save_history();
        let Some(good) = other.last_good.as_mut() else {
            return;
        };
        let lane = Lane {
            module: &module,
            engine: &mut other.engine,
            stage: &self.stage,
        };
        match restart_lane(lane, good, down.noticed, culprit_version) {
            Restarted::Serving(staged) => other.serving = *staged,
            Restarted::Interrupted => self.stopping = true,
            Restarted::GaveUp => {}
        }
    }

    /// Ends the other backends' workers (before the staging directory
    /// goes) and saves their histories.
    pub(super) fn stop_others(&mut self) {
        for mut other in self.others.drain(..) {
            other.save_history();
            other.engine.stop_worker(std::time::Duration::from_secs(1));
        }
    }
}

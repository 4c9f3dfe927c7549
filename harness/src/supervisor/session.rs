//! One `kiln dev` session: the module served from its worker, the history,
//! and what happens on a change, a finished build, a swap, a failed replay
//! (rollback). The end of a session is in [`super::session_end`]; what
//! happens when a worker goes down, in [`super::recovery`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use kiln_stats::bytes;

use super::build_queue::{BuildQueue, BuildReport};
use super::dev_loop::OnFail;
use super::history::{History, VersionRecord};
use super::isolated::IsolatedEngine;
use super::module_build::BuildOutcome;
use super::module_build::strip_ansi;
use super::module_graph::KernelModule;
use super::spinner::Spinner;
use super::watch::ChangeSet;
use super::worker_client::WorkerError;
use crate::swap::stage::{Staged, StagingDir};
use crate::swap::version_files::VersionFiles;
use crate::worker::protocol::ReplaySummary;
use crate::workload::timing::Stats;

pub(super) struct LastGood {
    /// A private copy of the last version that passed replay.
    pub(super) copy: PathBuf,
    /// Its declarations and sources as they were staged: a restart or a
    /// rollback serves exactly this code, never the workspace's files of
    /// the moment (a wrong shader saved since would come back with it).
    pub(super) files: VersionFiles,
    pub(super) version: u64,
    pub(super) timings: BTreeMap<String, Stats>,
}

impl LastGood {
    /// Stages the last good version again, as it was: its library copy
    /// with its own declarations and sources.
    pub(super) fn stage_again(
        &self,
        stage: &StagingDir,
        module: &str,
    ) -> Result<Staged, crate::swap::stage::StageError> {
        stage.stage_with(module, &self.copy, self.files.clone())
    }
}

pub(super) struct Session {
    pub(super) module: KernelModule,
    pub(super) stage: StagingDir,
    pub(super) engine: IsolatedEngine,
    /// The staged copy the worker serves.
    pub(super) serving: Staged,
    /// Replay the workload after every swap.
    pub(super) replay: bool,
    pub(super) on_fail: OnFail,
    pub(super) history: History,
    pub(super) history_path: PathBuf,
    pub(super) state_path: PathBuf,
    pub(super) explicit_state: Option<PathBuf>,
    pub(super) last_good: Option<LastGood>,
    pub(super) current_hash: String,
    pub(super) spinner: Spinner,
    pub(super) record: Option<PathBuf>,
    /// Ctrl-C arrived while a worker was busy: the session ends.
    pub(super) stopping: bool,
    /// The reference module (rebuilt and swapped in the worker when edited).
    pub(super) reference_module: Option<KernelModule>,
    /// A build of the served module was requested and has not ended.
    pub(super) build_pending: bool,
    /// Autotuning of the serving version is under way (`--no-tune`: never).
    pub(super) tuning: bool,
    pub(super) tune: bool,
    /// What `kiln ctl` and the keys keep (good versions for undo, ...).
    pub(super) control: super::control_commands::ControlState,
    /// The backends this session may switch to (`switch_backend.rs`).
    pub(super) backends: super::switch_backend::Backends,
    /// `--backends`: the backends served beside this one, each in its own
    /// worker (`served_backends.rs`).
    pub(super) others: Vec<super::served_backends::OtherBackend>,
}

impl Session {
    pub(super) fn version(&self) -> u64 {
        self.serving.version
    }

    pub(super) fn label(&self) -> String {
        self.engine.label()
    }

    /// Handles a change set; returns (first event, seen) if a build of the
    /// served module was requested.
    pub(super) fn on_change(
        &mut self,
        change: &ChangeSet,
        queue: &BuildQueue,
    ) -> Option<(Instant, Instant)> {
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
        // A save stops the tuning; the next passing version tunes again.
        self.tuning = false;
        self.route_others(change, queue, seen);
        self.route_change(change, queue, &names, seen)
    }

    pub(super) fn on_built(&mut self, report: BuildReport, change: Option<(Instant, Instant)>) {
        if let Some(i) = self.other_index(&report.module) {
            self.on_other_built(i, report);
            return;
        }
        if report.module != self.module.package {
            if self
                .reference_module
                .as_ref()
                .is_some_and(|r| r.package == report.module)
            {
                self.on_reference_built(report);
            } else {
                // Started before a switch to another backend.
                self.build_pending = false;
                tracing::info!(
                    "built {}, which is no longer served ({} is); not swapped",
                    report.module,
                    self.module.package
                );
            }
            return;
        }
        self.build_pending = false;
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
                    self.label()
                );
                return;
            }
            BuildOutcome::Built { artifact, .. } => artifact,
        };
        tracing::info!(event = "build_finished", module = %module, version = self.version(), ms = build_ms, "built {module} in {build_ms:.0} ms");
        let stage_start = Instant::now();
        let Some(staged) = self.stage_or_report(&module, &artifact) else {
            return;
        };
        if staged.version_hash == self.serving.version_hash && self.engine.is_serving() {
            tracing::info!(
                "{} is identical to the serving build; not swapping",
                staged.label
            );
            self.stage.remove(&staged);
            return;
        }
        let stage_load_ms = stage_start.elapsed().as_secs_f64() * 1e3;
        self.swap_in(staged, Some(build_ms), change, stage_load_ms);
    }

    /// Starts a new worker on `staged` with the last good point's state
    /// (no worker was serving), then replays as after a swap.
    pub(super) fn start_fresh(
        &mut self,
        staged: Staged,
        build_ms: Option<f64>,
        swap_ms: Option<f64>,
    ) {
        let source = self.engine.checkpoint_source();
        match self.engine.start(&staged, source) {
            Ok(started) => {
                self.current_hash = staged.hash.clone();
                self.serving = staged;
                tracing::info!(
                    event = "worker_started",
                    module = %self.module.package,
                    version = started.version,
                    pid = self.engine.worker_pid(),
                    "{} serving on {} in a new worker, with the state of the last good point ({})",
                    started.label,
                    started.device,
                    started.import
                );
                self.after_swap(build_ms, swap_ms, false);
            }
            Err(WorkerError::Down(down)) => {
                let tried = (staged.version, staged.label.clone());
                self.stage.remove(&staged);
                self.went_down(*down, Some(tried), build_ms.unwrap_or_default());
            }
            Err(WorkerError::Interrupted) => self.stopping = true,
            Err(WorkerError::Failed(e)) => {
                self.stage.remove(&staged);
                tracing::error!(event = "refused", module = %self.module.package, version = staged.version, "{e}");
            }
        }
    }

    /// Replays after a swap (or at start), records the version, and rolls
    /// back if it failed and rollback is on. `old_alive`: the replaced
    /// version is alive in the worker, to be timed against.
    pub(super) fn after_swap(
        &mut self,
        build_ms: Option<f64>,
        swap_ms: Option<f64>,
        old_alive: bool,
    ) {
        let staged = self.serving.clone();
        let report: Option<ReplaySummary> = if self.replay {
            let recorded = self.last_good.as_ref().map(|g| g.timings.clone());
            self.engine
                .set_previous_timings(&recorded.clone().unwrap_or_default());
            match self
                .engine
                .replay(if old_alive { None } else { recorded.as_ref() })
            {
                Ok(report) => Some(report),
                Err(WorkerError::Down(down)) => {
                    let culprit = down.running.as_ref().map(|r| r.label.clone());
                    if old_alive
                        && culprit
                            .as_ref()
                            .is_some_and(|l| !l.is_empty() && *l != staged.label)
                    {
                        // The previous version, timed against, went down:
                        // that costs the comparison, not the new version.
                        self.old_went_down(*down, staged, build_ms, swap_ms);
                    } else {
                        // Kept in case the old one was the culprit: not needed.
                        self.stage.remove(&staged);
                        self.went_down(*down, None, build_ms.unwrap_or_default());
                    }
                    return;
                }
                Err(WorkerError::Interrupted) => {
                    self.stopping = true;
                    return;
                }
                Err(WorkerError::Failed(why)) => Some(ReplaySummary {
                    label: staged.label.clone(),
                    passed: false,
                    first_failure: Some(crate::worker::protocol::CallFailure {
                        index: 0,
                        kernel: "-".into(),
                        why,
                    }),
                    timings: BTreeMap::new(),
                    table: String::new(),
                    ms: 0.0,
                    skipped: Vec::new(),
                    rates: Default::default(),
                    calls: Vec::new(),
                }),
            }
        } else {
            None
        };
        let passed = report.as_ref().is_none_or(|r| r.passed);
        if report.is_some() {
            self.control.last_replay = Some((staged.version, passed));
        }
        let timings: BTreeMap<String, Stats> = report
            .as_ref()
            .map(|r| {
                r.timings
                    .iter()
                    .map(|(k, s)| (k.clone(), s.into()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(report) = &report {
            print_table(&report.table);
            self.log_skipped(report);
        }
        self.history.versions.push(VersionRecord {
            version: staged.version,
            label: staged.label.clone(),
            source_hash: staged.hash.clone(),
            build_ms,
            swap_ms,
            medians: timings.iter().map(|(k, s)| (k.clone(), s.median)).collect(),
            passed,
            crashed: false,
            note: None,
            tuning: Default::default(),
            rates: report
                .as_ref()
                .map(|r| r.rates.calls.clone())
                .unwrap_or_default(),
            basis: report.as_ref().and_then(|r| r.rates.basis.clone()),
        });
        if passed {
            self.keep_last_good(&staged, timings);
            self.checkpoint();
            self.tuning = self.tune && report.is_some();
        } else if let Some(failure) = report.as_ref().and_then(|r| r.first_failure.clone()) {
            let why = failure.why;
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
        self.save_history();
        // `--backends`: the workload runs on every served backend.
        self.replay_on_others(report.as_ref());
    }

    pub(super) fn save_history(&self) {
        if let Err(e) = self.history.save(&self.history_path) {
            tracing::warn!(
                "cannot save history to {}: {e}",
                self.history_path.display()
            );
        }
    }

    fn keep_last_good(&mut self, staged: &Staged, timings: BTreeMap<String, Stats>) {
        // The copy is also kept for `undo` (the last few good versions).
        match self.control.good.keep(self.stage.path(), staged) {
            Ok(copy) => {
                self.last_good = Some(LastGood {
                    copy,
                    files: staged.files.clone(),
                    version: staged.version,
                    timings,
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
    }

    /// Checkpoints the engine's state outside the worker: the last good
    /// point is now.
    pub(super) fn checkpoint(&mut self) {
        match self.engine.take_checkpoint() {
            Ok(c) => tracing::info!(
                event = "checkpoint",
                module = %self.module.package,
                version = self.version(),
                bytes = c.bytes,
                ms = c.ms,
                state_hash = %c.hash,
                "checkpoint of {}'s state: {} in {:.1} ms",
                self.label(),
                bytes::human(c.bytes),
                c.ms
            ),
            Err(WorkerError::Down(down)) => {
                self.went_down(*down, None, 0.0);
            }
            Err(WorkerError::Interrupted) => self.stopping = true,
            Err(WorkerError::Failed(e)) => {
                tracing::error!("cannot checkpoint {}'s state: {e}", self.label())
            }
        }
    }

    pub(super) fn rollback(&mut self) {
        let Some(good) = &self.last_good else { return };
        let good_version = good.version;
        let staged = match good.stage_again(&self.stage, &self.module.package) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("rollback failed: {e}; keeping {}", self.label());
                return;
            }
        };
        match self.engine.swap(&staged, false) {
            Ok(swap) => {
                self.current_hash = staged.hash.clone();
                self.serving = staged;
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
                    bytes::human(swap.bytes as u64)
                );
                if let Some(good) = &mut self.last_good {
                    good.version = self.serving.version;
                }
            }
            Err(WorkerError::Failed(e)) => {
                self.stage.remove(&staged);
                tracing::error!("rollback failed: {e}; keeping {}", self.label())
            }
            Err(WorkerError::Down(down)) => {
                self.stage.remove(&staged);
                self.went_down(*down, None, 0.0);
            }
            Err(WorkerError::Interrupted) => self.stopping = true,
        }
    }
}

pub(super) fn print_table(table: &str) {
    if !tracing::enabled!(target: "kiln::table", tracing::Level::INFO) {
        return;
    }
    for line in table.lines() {
        tracing::info!(target: "kiln::table", "{line}");
    }
}

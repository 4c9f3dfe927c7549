//! One `kiln dev` session: the served module, its workload and history, and
//! what happens on a change, a finished build, a swap, a failed replay
//! (rollback) and at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use shared_state::Snapshot;

use super::build_queue::{BuildQueue, BuildReport};
use super::dev_loop::{OnFail, refused};
use super::history::{History, VersionRecord};
use super::module_build::BuildOutcome;
use super::module_graph::KernelModule;
use super::spinner::{Spinner, strip_ansi};
use super::watch::ChangeSet;
use crate::swap::load::{LoadError, LoadedModule};
use crate::swap::served::{ServedModule, human_bytes};
use crate::swap::snapshot_file;
use crate::swap::stage::{Staged, StagingDir};
use crate::workload::Workload;
use crate::workload::replay::{self, ReplayOptions, ReplayReport};
use crate::workload::timing::Stats;

pub(super) struct LastGood {
    /// A private copy of the last version that passed replay.
    pub(super) copy: PathBuf,
    pub(super) version: u64,
    pub(super) timings: BTreeMap<String, Stats>,
}

pub(super) struct Session {
    pub(super) module: KernelModule,
    pub(super) stage: StagingDir,
    pub(super) served: ServedModule,
    pub(super) workload: Workload,
    pub(super) replay: Option<ReplayOptions>,
    pub(super) on_fail: OnFail,
    pub(super) history: History,
    pub(super) history_path: PathBuf,
    pub(super) state_path: PathBuf,
    pub(super) explicit_state: Option<PathBuf>,
    pub(super) last_good: Option<LastGood>,
    pub(super) current_hash: String,
    pub(super) spinner: Spinner,
    pub(super) record: Option<PathBuf>,
    /// The last passing replay (kept only when recording).
    pub(super) last_passing: Option<ReplayReport>,
}

impl Session {
    pub(super) fn version(&self) -> u64 {
        self.served.handle().module().staged.version
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

    pub(super) fn restart_required(&mut self) {
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

    pub(super) fn on_built(&mut self, report: BuildReport, change: Option<(Instant, Instant)>) {
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
    pub(super) fn after_swap(
        &mut self,
        build_ms: Option<f64>,
        swap_ms: Option<f64>,
        old: Option<&crate::swap::engine_handle::EngineHandle>,
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

    pub(super) fn rollback(&mut self) {
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

    pub(super) fn finish(self) {
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

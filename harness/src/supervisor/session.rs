//! One `kiln dev` session: its lanes (one per served backend, lane 0 the
//! backend it was started for) and the life cycle every lane goes through,
//! written once: a change is routed ([`super::plan`]), a build is staged
//! and swapped in, the workload is replayed on every lane, each new version
//! is judged (kept as the last good one with a checkpoint, or rolled back).
//! A worker that goes down is handled in [`super::recovery`]; the end of a
//! session in [`super::session_end`].

use std::path::PathBuf;
use std::time::Instant;

use super::backends::Backends;
use super::control_state::ControlState;
use super::lane::{Fresh, Lane, LastGood};
use super::options::OnFail;
use super::plan::{ChangePlan, Verdict, plan_change, verdict};
use super::spinner::Spinner;
use super::watch::ChangeSet;
use crate::build::module_build::{BuildOutcome, strip_ansi};
use crate::build::module_graph::KernelModule;
use crate::build::queue::{BuildQueue, BuildReport};
use crate::events::{self, emit};
use crate::history::VersionRecord;
use crate::isolation::worker_client::WorkerError;
use crate::swap::stage::{Staged, StagingDir};
use crate::worker::protocol::{CallFailure, ReplaySummary};
use crate::workload::timing::Timings;
use kiln_stats::bytes;

pub(super) struct Session {
    /// The served backends; lane 0 is the session's own (keys, `kiln ctl`
    /// undo/bless/switch, tuning and the state file act on it).
    pub(super) lanes: Vec<Lane>,
    pub(super) stage: StagingDir,
    /// Replay the workload after every swap.
    pub(super) replay: bool,
    pub(super) on_fail: OnFail,
    pub(super) state_path: PathBuf,
    pub(super) explicit_state: Option<PathBuf>,
    pub(super) spinner: Spinner,
    pub(super) record: Option<PathBuf>,
    /// Ctrl-C arrived while a worker was busy: the session ends.
    pub(super) stopping: bool,
    /// The reference module (rebuilt and swapped in the workers when edited).
    pub(super) reference_module: Option<KernelModule>,
    /// Autotuning of lane 0's serving version is under way.
    pub(super) tuning: bool,
    /// `--no-tune` leaves it false.
    pub(super) tune: bool,
    /// What `kiln ctl` and the keys keep (good versions for undo, ...).
    pub(super) control: ControlState,
    /// The backends this session may switch to (`switch_backend.rs`).
    pub(super) backends: Backends,
}

/// How long a build took, from its report.
fn build_ms(report: &BuildReport) -> f64 {
    report
        .finished_at
        .duration_since(report.started_at)
        .as_secs_f64()
        * 1e3
}

/// The file names of `change`'s paths, for the log.
fn names(change: &ChangeSet) -> Vec<String> {
    change
        .paths
        .iter()
        .map(|p| {
            p.file_name().map_or(p.display().to_string(), |n| {
                n.to_string_lossy().into_owned()
            })
        })
        .collect()
}

impl Session {
    pub(super) fn own(&self) -> &Lane {
        &self.lanes[0]
    }

    /// Lane 0's serving version.
    pub(super) fn version(&self) -> u64 {
        self.own().version()
    }

    /// Lane 0's serving label.
    pub(super) fn label(&self) -> String {
        self.own().label()
    }

    /// The lane serving `package`.
    pub(super) fn lane_of(&self, package: &str) -> Option<usize> {
        self.lanes.iter().position(|l| l.module.package == package)
    }

    /// Handles a change set: each lane whose module changed builds or is
    /// staged again, workloads are read again, the reference rebuilt.
    pub(super) fn on_change(&mut self, change: &ChangeSet, queue: &BuildQueue) {
        let seen = Instant::now();
        let plan: ChangePlan = {
            let modules: Vec<&KernelModule> = self.lanes.iter().map(|l| &l.module).collect();
            plan_change(change, &modules, self.reference_module.as_ref())
        };
        if plan.contract {
            self.restart_required();
            return;
        }
        // A save stops the tuning; the next passing version tunes again.
        self.tuning = false;
        let names = names(change);
        let debounce_ms = seen.duration_since(change.first_event_at).as_secs_f64() * 1e3;
        for (i, lane_change) in plan.lanes.iter().enumerate() {
            let announced =
                lane_change.new_version() || (i == 0 && (plan.reference || change.watched_changed));
            if !announced {
                continue;
            }
            let lane = &self.lanes[i];
            emit!(
                tracing::Level::INFO,
                events::Change {
                    module: lane.package().to_string(),
                    version: lane.version(),
                    ms: debounce_ms,
                    paths: names.join(","),
                    build: lane_change.build,
                },
                "change seen: {} ({debounce_ms:.0} ms after the save){}{}",
                names.join(", "),
                if i == 0 {
                    String::new()
                } else {
                    format!(" in {}", lane.package())
                },
                if lane_change.restage {
                    "; no Rust source changed: re-staging without a build"
                } else {
                    ""
                }
            );
        }
        // The workloads first: the replay after the swap uses the new ones.
        for (i, lane_change) in plan.lanes.iter().enumerate() {
            if lane_change.reload_workload && self.lanes[i].engine.is_serving() {
                self.reload_workload(i, change.watched_changed);
            }
        }
        // The reference before the served modules: the build queue builds
        // in the order of the requests, so a swap that needs the new
        // reference (a signature change) is replayed against it.
        if plan.reference
            && let Some(reference) = &self.reference_module
        {
            let _ = queue.request(&reference.package, change.first_event_at);
        }
        for (i, lane_change) in plan.lanes.iter().enumerate() {
            if lane_change.build {
                let lane = &mut self.lanes[i];
                lane.pending.get_or_insert((change.first_event_at, seen));
                let _ = queue.request_changed(lane.package(), change.first_event_at, &change.paths);
            } else if lane_change.restage {
                self.restage(i, change.first_event_at, seen);
            }
        }
        if plan.recheck && self.own().engine.is_serving() {
            let _ = self.recheck("the workload changed");
        }
    }

    /// A build ended: the reference module's, a lane's (staged and swapped
    /// into that lane), or one that is no longer served.
    pub(super) fn on_built(&mut self, report: BuildReport) {
        let Some(i) = self.lane_of(&report.module) else {
            if self
                .reference_module
                .as_ref()
                .is_some_and(|r| r.package == report.module)
            {
                self.on_reference_built(report);
            } else {
                // Started before a switch to another backend.
                tracing::info!(
                    "built {}, which is no longer served ({} is); not swapped",
                    report.module,
                    self.own().package()
                );
            }
            return;
        };
        let change = self.lanes[i].pending.take();
        let build_ms = build_ms(&report);
        let keeps = self.lanes[i].label();
        let Some(artifact) = self.built_artifact(report, build_ms, &keeps) else {
            return;
        };
        let module = self.lanes[i].package().to_string();
        let stage_start = Instant::now();
        let Some(staged) = self.stage_or_report(&module, &artifact) else {
            return;
        };
        let lane = &self.lanes[i];
        if staged.version_hash == lane.serving.version_hash && lane.engine.is_serving() {
            tracing::info!(
                "{} is identical to the serving build; not swapping",
                staged.label
            );
            self.stage.remove(&staged);
            return;
        }
        let stage_load_ms = stage_start.elapsed().as_secs_f64() * 1e3;
        self.swap_in(i, staged, Some(build_ms), change, stage_load_ms);
    }

    /// The artifact of a finished build, or `None` after logging why there
    /// is none (`keeps`: what keeps serving).
    pub(super) fn built_artifact(
        &self,
        report: BuildReport,
        build_ms: f64,
        keeps: &str,
    ) -> Option<PathBuf> {
        let module = report.module;
        let version = self
            .lane_of(&module)
            .map_or(self.version(), |i| self.lanes[i].version());
        let build_failed = |diagnostics| events::BuildFailed {
            module: module.clone(),
            version,
            ms: build_ms,
            diagnostics,
        };
        match report.result {
            Err(e) => {
                emit!(
                    tracing::Level::ERROR,
                    build_failed(None),
                    "cannot run cargo: {e}"
                );
                None
            }
            Ok(BuildOutcome::Failed { rendered, .. }) => {
                eprint!("{rendered}");
                emit!(
                    tracing::Level::ERROR,
                    build_failed(Some(strip_ansi(&rendered))),
                    "build of {module} failed after {build_ms:.0} ms; {keeps} keeps serving"
                );
                None
            }
            Ok(BuildOutcome::Built { artifact, .. }) => {
                emit!(
                    tracing::Level::INFO,
                    events::BuildFinished {
                        module: module.clone(),
                        version,
                        ms: build_ms,
                    },
                    "built {module} in {build_ms:.0} ms"
                );
                Some(artifact)
            }
        }
    }

    /// Swaps lane `i`'s worker to `staged` (built in `build_ms`, or staged
    /// again without a build), then replays on every lane; a lane whose
    /// worker went down starts a new one on `staged`.
    pub(super) fn swap_in(
        &mut self,
        i: usize,
        staged: Staged,
        build_ms: Option<f64>,
        change: Option<(Instant, Instant)>,
        stage_load_ms: f64,
    ) {
        if !self.lanes[i].engine.is_serving() {
            // The last worker went down and could not be restarted: this
            // version starts a new one, with the state of the last good point.
            self.start_fresh(i, staged, build_ms, None);
            return;
        }
        let lane = &mut self.lanes[i];
        let module = lane.package().to_string();
        let from_version = lane.version();
        let from_label = lane.label();
        match lane.engine.swap(&staged, self.replay) {
            Ok(swap) => {
                lane.serving = staged;
                let total_ms = change.map(|(first, _)| first.elapsed().as_secs_f64() * 1e3);
                let debounce_ms =
                    change.map(|(first, seen)| seen.duration_since(first).as_secs_f64() * 1e3);
                emit!(
                    tracing::Level::INFO,
                    events::Swapped {
                        module: module.clone(),
                        version: lane.version(),
                        from_version,
                        ms: total_ms.unwrap_or(stage_load_ms + swap.paused_ms),
                        debounce_ms,
                        build_ms,
                        stage_load_ms,
                        handoff_ms: swap.paused_ms,
                        handoff_bytes: swap.bytes as u64,
                        restaged: build_ms.is_none(),
                    },
                    "swapped {} -> {}: {} from save to serving (seen after {}, build {}, stage+load {stage_load_ms:.1}, handoff {:.1} ms for {}{})",
                    swap.from,
                    swap.to,
                    total_ms.map_or("-".to_string(), |t| format!("{t:.0} ms")),
                    debounce_ms.map_or("-".to_string(), |d| format!("{d:.0}")),
                    build_ms.map_or(
                        "none: same library, new declarations/sources".to_string(),
                        |b| format!("{b:.0}")
                    ),
                    swap.paused_ms,
                    bytes::human(swap.bytes as u64),
                    unaccounted(
                        total_ms,
                        &[
                            debounce_ms,
                            build_ms,
                            Some(stage_load_ms),
                            Some(swap.paused_ms)
                        ]
                    )
                );
                // The old version stays alive in the worker through the
                // replay so both are timed interleaved; it retires after.
                lane.fresh = Some(Fresh {
                    build_ms,
                    swap_ms: Some(swap.paused_ms),
                    old_alive: self.replay,
                });
                self.replay_all();
            }
            Err(WorkerError::Failed(e)) => {
                self.stage.remove(&staged);
                emit!(
                    tracing::Level::ERROR,
                    events::Refused {
                        module: module.clone(),
                        version: Some(from_version),
                    },
                    "{e}; {from_label} keeps serving"
                );
                // A fingerprint that differs in a contract field: the
                // contract changed under the serving host.
                if e.starts_with("refused ") && e.contains("contract") {
                    self.restart_required();
                }
            }
            Err(e) => {
                self.stage.remove(&staged);
                let tried = (staged.version, staged.label.clone());
                self.lane_failed_trying(i, e, tried, build_ms.unwrap_or_default());
            }
        }
    }

    /// Starts a new worker for lane `i` on `staged` with the last good
    /// point's state (no worker was serving), then replays as after a swap.
    pub(super) fn start_fresh(
        &mut self,
        i: usize,
        staged: Staged,
        build_ms: Option<f64>,
        swap_ms: Option<f64>,
    ) {
        if self.start_worker(i, staged, build_ms, swap_ms) {
            self.replay_all();
        }
    }

    /// Starts lane `i`'s worker on `staged` with the last good point's
    /// state; the version is fresh (to be judged). False if it did not.
    pub(super) fn start_worker(
        &mut self,
        i: usize,
        staged: Staged,
        build_ms: Option<f64>,
        swap_ms: Option<f64>,
    ) -> bool {
        let lane = &mut self.lanes[i];
        let source = lane.engine.checkpoint_source();
        match lane.engine.start(&staged, source) {
            Ok(started) => {
                emit!(
                    tracing::Level::INFO,
                    events::WorkerStarted {
                        module: lane.package().to_string(),
                        version: started.version,
                        pid: lane.engine.worker_pid(),
                    },
                    "{} serving on {} in a new worker, with the state of the last good point ({})",
                    started.label,
                    started.device,
                    started.import
                );
                lane.serving = staged;
                lane.fresh = Some(Fresh {
                    build_ms,
                    swap_ms,
                    old_alive: false,
                });
                true
            }
            Err(e) => {
                self.stage.remove(&staged);
                let tried = (staged.version, staged.label.clone());
                self.lane_failed_trying(i, e, tried, build_ms.unwrap_or_default());
                false
            }
        }
    }

    /// Replays the workload on every lane (a fresh version is judged: kept
    /// or rolled back), then, with several lanes, cross-compares their
    /// outputs and prints one table with a column per backend.
    pub(super) fn replay_all(&mut self) {
        if !self.replay {
            for i in 0..self.lanes.len() {
                if let Some(fresh) = self.lanes[i].fresh.take() {
                    self.judge(i, None, fresh);
                }
            }
            return;
        }
        let mut summaries = Vec::new();
        for i in 0..self.lanes.len() {
            summaries.push(self.replay_lane(i));
            if self.stopping {
                return;
            }
        }
        if self.lanes.len() > 1 {
            self.compare_lanes(&summaries);
        }
    }

    /// Replays lane `i`: a fresh version against its predecessor (alive in
    /// the worker) or the last good version's timings, and judges it.
    pub(super) fn replay_lane(&mut self, i: usize) -> Option<ReplaySummary> {
        let lane = &mut self.lanes[i];
        if !lane.engine.is_serving() {
            return None;
        }
        let fresh = lane.fresh.take();
        let old_alive = fresh.is_some_and(|f| f.old_alive);
        let recorded = lane.last_good.as_ref().map(|g| g.timings.clone());
        lane.engine
            .set_previous_timings(&recorded.clone().unwrap_or_default());
        let staged = lane.serving.clone();
        let report = match lane
            .engine
            .replay(if old_alive { None } else { recorded.as_ref() })
        {
            Ok(report) => report,
            Err(WorkerError::Down(down)) => {
                let culprit = down.running.as_ref().map(|r| r.label.clone());
                if let Some(fresh) = fresh
                    && fresh.old_alive
                    && culprit.is_some_and(|l| !l.is_empty() && l != staged.label)
                {
                    // The previous version, timed against, went down: that
                    // costs the comparison, not the new version.
                    return self.old_went_down(i, *down, fresh);
                }
                if old_alive {
                    // Kept in case the old one was the culprit: not needed.
                    self.stage.remove(&staged);
                }
                let build_ms = fresh.and_then(|f| f.build_ms).unwrap_or_default();
                self.went_down(i, *down, None, build_ms);
                return None;
            }
            Err(WorkerError::Interrupted) => {
                self.stopping = true;
                return None;
            }
            // A replay that cannot run is a failed replay.
            Err(WorkerError::Failed(why)) => ReplaySummary {
                table: crate::workload::replay_table::ReplayTable {
                    label: staged.label.clone(),
                    ..Default::default()
                },
                first_failure: Some(CallFailure {
                    index: 0,
                    kernel: "-".into(),
                    why,
                }),
                timings: Default::default(),
                skipped: Vec::new(),
                rates: Default::default(),
            },
        };
        print_table(&report.table.render());
        self.log_skipped(i, &report);
        if i == 0 {
            self.control.last_replay = Some((staged.version, report.passed()));
        }
        if let Some(fresh) = fresh {
            self.judge(i, Some(&report), fresh);
        }
        Some(report)
    }

    /// Records lane `i`'s fresh version in its history and acts on the
    /// verdict: the last good version with a checkpoint, or a rollback.
    fn judge(&mut self, i: usize, report: Option<&ReplaySummary>, fresh: Fresh) {
        let timings: Timings = report.map(|r| r.timings.clone()).unwrap_or_default();
        let lane = &mut self.lanes[i];
        let staged = lane.serving.clone();
        let passed = report.is_none_or(|r| r.passed());
        lane.history.versions.push(VersionRecord {
            version: staged.version,
            label: staged.label.clone(),
            source_hash: staged.version_hash.clone(),
            build_ms: fresh.build_ms,
            swap_ms: fresh.swap_ms,
            medians: timings
                .calls
                .iter()
                .map(|(k, s)| (k.clone(), s.median))
                .collect(),
            passed,
            crashed: false,
            note: None,
            tuning: Default::default(),
            rates: report.map(|r| r.rates.calls.clone()).unwrap_or_default(),
            basis: report.and_then(|r| r.rates.basis.clone()),
            ratios: report.map(ReplaySummary::ratios).unwrap_or_default(),
        });
        let failure = report.and_then(|r| r.first_failure.clone());
        let good_version = lane.last_good.as_ref().map(|g| g.code_of);
        let failed = |how: String| {
            let f = failure.clone().unwrap_or(CallFailure {
                index: 0,
                kernel: "-".into(),
                why: "failed".into(),
            });
            format!(
                "{} failed replay at call {} ({}): {}; {how}",
                staged.label, f.index, f.kernel, f.why
            )
        };
        let replay_failed = || events::ReplayFailed {
            module: staged.module.clone(),
            version: staged.version,
        };
        match verdict(Some(passed), self.on_fail, good_version.is_some()) {
            Verdict::Good => {
                self.keep_last_good(i, &staged, timings);
                self.checkpoint(i);
                if i == 0 {
                    self.tuning = self.tune && report.is_some();
                }
            }
            Verdict::RollBack => {
                let to = good_version.unwrap_or_default();
                emit!(
                    tracing::Level::ERROR,
                    replay_failed(),
                    "{}",
                    failed(format!("rolling back to v{to}"))
                );
                self.rollback(i);
            }
            Verdict::NoGoodToRollBackTo => {
                emit!(
                    tracing::Level::ERROR,
                    replay_failed(),
                    "{}",
                    failed("no earlier good version to roll back to, keeping it".into())
                );
            }
            Verdict::KeptFailing => {
                emit!(
                    tracing::Level::WARN,
                    replay_failed(),
                    "{}",
                    failed("keeping it (--on-fail keep)".into())
                );
            }
        }
        self.lanes[i].save_history();
    }

    /// Lane 0's history, saved.
    pub(super) fn save_history(&self) {
        self.own().save_history();
    }

    fn keep_last_good(&mut self, i: usize, staged: &Staged, timings: Timings) {
        // The copy is also kept for `undo` (the last few good versions of
        // each module).
        match self.control.good.keep(self.stage.path(), staged) {
            Ok(copy) => {
                self.lanes[i].last_good = Some(LastGood {
                    copy,
                    files: staged.files.clone(),
                    version: staged.version,
                    code_of: staged.version,
                    timings,
                })
            }
            Err(e) => {
                tracing::warn!("cannot keep a copy of {} for rollback: {e}", staged.label)
            }
        }
        let history = &self.lanes[i].history;
        if let Some(best) = history.best() {
            tracing::info!(
                "best version so far: v{} of {} ({} recorded)",
                best.version,
                history.module,
                history.versions_recorded()
            );
        }
    }

    /// Checkpoints lane `i`'s state outside the worker: the last good
    /// point is now.
    pub(super) fn checkpoint(&mut self, i: usize) {
        let lane = &mut self.lanes[i];
        match lane.engine.take_checkpoint() {
            Ok(c) => emit!(
                tracing::Level::INFO,
                events::Checkpoint {
                    module: lane.package().to_string(),
                    version: lane.version(),
                    bytes: c.bytes,
                    state_bytes: c.state_bytes,
                    ms: c.ms,
                    state_hash: c.hash.clone(),
                    unchanged: c.unchanged,
                    copied_bytes: c.copied_bytes,
                },
                "checkpoint of {}'s state ({}) in {:.1} ms: {}",
                lane.label(),
                bytes::human(c.state_bytes),
                c.ms,
                if c.unchanged {
                    "unchanged since the last one, nothing written".to_string()
                } else if c.copied_bytes == c.state_bytes {
                    format!("{} copied", bytes::human(c.copied_bytes))
                } else {
                    format!(
                        "{} copied, the rest in the parts that held it",
                        bytes::human(c.copied_bytes)
                    )
                }
            ),
            Err(e) => self.lane_failed(i, e, "cannot checkpoint the state"),
        }
    }

    /// Back to lane `i`'s last good version (its own files), with the state.
    pub(super) fn rollback(&mut self, i: usize) {
        let lane = &self.lanes[i];
        let Some(good) = &lane.last_good else { return };
        let good_version = good.code_of;
        let module = lane.package().to_string();
        let staged = match good.stage_again(&self.stage, &module) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("rollback failed: {e}; keeping {}", lane.label());
                return;
            }
        };
        let lane = &mut self.lanes[i];
        // The last good point's state: what the failed version wrote into
        // the state it was handed is not carried back.
        match lane.engine.swap_to_checkpoint(&staged) {
            Ok(swap) => {
                lane.serving = staged;
                if let Some(last) = lane.history.versions.last_mut() {
                    last.note = Some(format!("rolled back to v{good_version}"));
                }
                emit!(
                    tracing::Level::WARN,
                    events::RolledBack {
                        module: module.clone(),
                        version: lane.version(),
                        ms: swap.paused_ms,
                    },
                    "rolled back: {} now serves the code of v{good_version}, with the state of the last good point ({})",
                    swap.to,
                    bytes::human(swap.bytes as u64)
                );
                if let Some(good) = &mut lane.last_good {
                    good.version = lane.serving.version;
                }
            }
            Err(e) => {
                self.stage.remove(&staged);
                self.lane_failed(i, e, "rollback failed");
            }
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

/// `, other 569 ms`: the part of a save-to-serving time that its listed
/// parts leave out (a reference module's build, a wait for the worker),
/// where it is 1 ms or more.
fn unaccounted(total_ms: Option<f64>, parts: &[Option<f64>]) -> String {
    let Some(total) = total_ms else {
        return String::new();
    };
    let rest = total - parts.iter().flatten().sum::<f64>();
    match rest >= 1.0 {
        true => format!(", other {rest:.0} ms"),
        false => String::new(),
    }
}

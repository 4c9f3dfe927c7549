//! Changes that are not (only) a cargo build of the served module:
//!
//! - a change set that touches only a version's files (a declaration under
//!   `kernels/declarations/`, or a module source file the engine compiles
//!   at creation: `.wgsl`, `.cu`, ...) re-stages the serving library with
//!   the new files, without cargo, and swaps to it like any new version
//!   (handoff, replay, rollback on failure); with Rust sources in the same
//!   change set it is one build, staged with the new files;
//! - an edit of the reference module (`kernels/reference`) rebuilds it, the
//!   worker swaps its reference engine, and the served version is checked
//!   again against it;
//! - the `--workload` file (or, for the bundled workload, the declarations
//!   it follows) changed: the worker reads it again, and it is replayed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::session::{Session, print_table};
use crate::build::queue::BuildReport;
use crate::events::{self, emit};
use crate::isolation::worker_client::WorkerError;
use crate::swap::stage::{StageError, Staged};
use crate::worker::protocol::ReplaySummary;

impl Session {
    /// Has lane `i`'s worker read the workload again.
    pub(super) fn reload_workload(&mut self, i: usize, file_changed: bool) {
        // With several lanes, each line says whose worker read it.
        let whose = match self.lanes.len() {
            1 => String::new(),
            _ => format!(" ({})", self.lanes[i].label()),
        };
        let lane = &mut self.lanes[i];
        match lane.engine.reload_workload() {
            Ok(description) => emit!(
                tracing::Level::INFO,
                events::WorkloadReloaded {
                    module: lane.package().to_string(),
                    version: lane.version(),
                },
                "{}{whose}: {description}",
                if file_changed {
                    "the workload file changed; the next replay uses it"
                } else {
                    "the declarations changed; the next replay uses the workload as they make it"
                }
            ),
            Err(WorkerError::Failed(e)) => emit!(
                tracing::Level::ERROR,
                events::WorkloadInvalid {
                    module: lane.package().to_string(),
                    version: lane.version(),
                },
                "cannot read the workload again{whose}: {e}; replays keep the last one"
            ),
            Err(e) => self.lane_failed(i, e, "cannot read the workload again"),
        }
    }

    /// Stages `artifact` as a version of `module` with the declarations and
    /// sources on disk now; a declaration that does not parse is logged with
    /// file and line, and nothing is staged.
    pub(super) fn stage_or_report(&self, module: &str, artifact: &Path) -> Option<Staged> {
        match self.stage.stage(module, artifact) {
            Ok(s) => Some(s),
            Err(StageError::Declarations { errors, .. }) => {
                for e in &errors {
                    emit!(
                        tracing::Level::ERROR,
                        events::DeclarationInvalid {
                            module: module.to_string(),
                            version: self.version(),
                            file: e.file.display().to_string(),
                            line: e.line as u64,
                        },
                        "{e}; {} keeps serving",
                        self.label()
                    );
                }
                None
            }
            Err(e) => {
                emit!(
                    tracing::Level::ERROR,
                    events::Refused {
                        module: module.to_string(),
                        version: Some(self.version()),
                    },
                    "{e}; {} keeps serving",
                    self.label()
                );
                None
            }
        }
    }

    /// Stages lane `i`'s serving library again with the declarations and
    /// sources on disk now (no build), and swaps to it.
    pub(super) fn restage(&mut self, i: usize, first_event_at: Instant, seen: Instant) {
        let lane = &self.lanes[i];
        let module = lane.package().to_string();
        let stage_start = Instant::now();
        let library = lane.serving.path.clone();
        let Some(staged) = self.stage_or_report(&module, &library) else {
            return;
        };
        let lane = &self.lanes[i];
        if staged.version_hash == lane.serving.version_hash && lane.engine.is_serving() {
            tracing::info!(
                "{} has the same library, declarations and sources as {}; not swapping",
                staged.label,
                lane.label()
            );
            self.stage.remove(&staged);
            return;
        }
        let stage_load_ms = stage_start.elapsed().as_secs_f64() * 1e3;
        self.swap_in(i, staged, None, Some((first_event_at, seen)), stage_load_ms);
    }

    /// A build of the reference module ended: stage it, have the worker
    /// swap its reference engine, and check the served version against it.
    pub(super) fn on_reference_built(&mut self, report: BuildReport) {
        let module = report.module.clone();
        let build_ms = report
            .finished_at
            .duration_since(report.started_at)
            .as_secs_f64()
            * 1e3;
        let Some(artifact) = self.built_artifact(report, build_ms, "the last reference") else {
            return;
        };
        let Some(staged) = self.stage_or_report(&module, &artifact) else {
            return;
        };
        let mut label = None;
        let mut replaced = Vec::new();
        for i in 0..self.lanes.len() {
            if !self.lanes[i].engine.is_serving() {
                continue;
            }
            match self.lanes[i].engine.set_reference(&staged) {
                Ok((l, old)) => {
                    label = Some(l);
                    replaced.extend(old);
                }
                Err(e) => self.lane_failed(i, e, "cannot take the new reference module"),
            }
        }
        // The replaced reference's files, once no lane's workers are handed
        // them any more (a lane that failed to take the new one still is).
        let still_handed: Vec<std::path::PathBuf> = self
            .lanes
            .iter()
            .filter_map(|l| l.engine.reference_path())
            .collect();
        for old in replaced {
            if old.path != staged.path && !still_handed.contains(&old.path) {
                let _ = std::fs::remove_file(&old.path);
                let _ = std::fs::remove_file(&old.files_path);
            }
        }
        let Some(label) = label else {
            return;
        };
        emit!(
            tracing::Level::INFO,
            events::ReferenceSwapped {
                module: self.own().package().to_string(),
                version: self.version(),
                reference: label.to_string(),
            },
            "the reference module changed: expected outputs not stored in the workload now come from {label}"
        );
        if self.own().pending.is_none() {
            let _ = self.recheck(&format!("against the new reference {label}"));
        }
    }

    /// Replays the served version again (the workload or the reference
    /// changed, not the version): a failure is reported, nothing is rolled
    /// back (the version is the one that served before).
    /// Returns whether it passed (`None`: no replay ran).
    pub(super) fn recheck(&mut self, why: &str) -> Option<bool> {
        if !self.replay {
            return None;
        }
        let lane = &mut self.lanes[0];
        let (module, version, label) = (lane.package().to_string(), lane.version(), lane.label());
        emit!(
            tracing::Level::INFO,
            events::Recheck {
                module: module.clone(),
                version,
            },
            "re-checking {label} ({why})"
        );
        let rechecked = |pass| events::Rechecked {
            module: module.clone(),
            version,
            pass,
        };
        let recorded = lane.last_good.as_ref().map(|g| g.timings.clone());
        let report = match lane.engine.replay(recorded.as_ref()) {
            Ok(report) => report,
            Err(WorkerError::Failed(e)) => {
                emit!(
                    tracing::Level::ERROR,
                    rechecked(false),
                    "cannot re-check {label}: {e}"
                );
                return None;
            }
            Err(e) => {
                self.lane_failed(0, e, "the re-check failed");
                return None;
            }
        };
        print_table(&report.table.render());
        self.log_skipped(0, &report);
        if report.passed() {
            emit!(
                tracing::Level::INFO,
                rechecked(true),
                "{} passes ({why})",
                report.label()
            );
            // A workload read again loaded its residents into the engine:
            // the state changed, and it passed, so it is the last good point
            // (a crash must not restart on the state from before).
            self.checkpoint(0);
        } else {
            let failure = report.first_failure.clone();
            emit!(
                tracing::Level::ERROR,
                rechecked(false),
                "{} fails ({why}){}",
                report.label(),
                failure.map_or(String::new(), |f| format!(
                    " at call {} ({}): {}",
                    f.index, f.kernel, f.why
                ))
            );
        }
        self.control.last_replay = Some((version, report.passed()));
        let passed = report.passed();
        // `--backends`: every served backend replays, compared.
        if self.lanes.len() > 1 {
            let mut summaries = vec![Some(report)];
            for i in 1..self.lanes.len() {
                summaries.push(self.replay_lane(i));
                if self.stopping {
                    return Some(passed);
                }
            }
            self.compare_lanes(&summaries);
        }
        Some(passed)
    }

    /// One log line per kernel whose calls a replay skipped, with why (a
    /// stale recording names the command that re-records it).
    pub(super) fn log_skipped(&self, i: usize, report: &ReplaySummary) {
        let lane = &self.lanes[i];
        let mut by_reason: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for s in &report.skipped {
            by_reason
                .entry((s.kernel.as_str(), s.why.as_str()))
                .or_default()
                .push(s.index);
        }
        for ((kernel, why), calls) in by_reason {
            let list: Vec<String> = calls.iter().map(ToString::to_string).collect();
            emit!(
                tracing::Level::WARN,
                events::ReplaySkipped {
                    module: lane.package().to_string(),
                    version: lane.version(),
                    kernel: kernel.to_string(),
                    calls: calls.len() as u64,
                    why: why.to_string(),
                },
                "{}: {kernel}: {} {} skipped: {why}",
                report.label(),
                if calls.len() == 1 { "call" } else { "calls" },
                list.join(", ")
            );
        }
    }
}

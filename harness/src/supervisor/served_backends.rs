//! Several backends served at once (`kiln dev --backends cpu,vulkan`).
//!
//! Each backend is a lane of the session (`lane.rs`): its own module, its
//! own worker process (started with the `--state` file, else its own last
//! good point kept on disk if the session that served it died, else the
//! state the first backend restored, else the workload's buffers:
//! `kept_state.rs`), its own versions, history file and last good
//! version. The first backend named is lane 0, the session's own (keys and
//! `kiln ctl` act on it as with one backend). Every lane goes through the
//! same life cycle (`session.rs`, `recovery.rs`); what is particular to
//! several lanes is here: starting the others, comparing their outputs.
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
//! - A new version of any backend that fails its replay is rolled back to
//!   that backend's last good version (with `--on-fail rollback`); a worker
//!   of any backend that goes down is restarted at once on that backend's
//!   last good version with its last checkpoint (`recovery.rs`).
//! - `switch`, `undo` and `bless` act on one served backend and are
//!   refused while several are served (see
//!   [`Session::several_backends_refusal`]).

use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;

use super::kept_state::{Given, KeptState, NotRestored};
use super::lane::{Fresh, Lane};
use super::options::DevError;
use super::session::{Session, print_table};
use super::sync_build::build_at_start;
use crate::build::module_build::ModuleBuilder;
use crate::build::module_graph::KernelModule;
use crate::events::{self, emit};
use crate::isolation::isolated::{IsolatedEngine, IsolationOptions};
use crate::swap::stage::StagingDir;
use crate::worker::protocol::ReplaySummary;
use crate::workload::backend_columns::{BackendColumn, table};
use crate::workload::cross_compare::CrossCheck;

/// What starting the other backends needs from `kiln dev`'s start.
pub(super) struct OthersSetup<'a> {
    pub names: &'a [String],
    pub modules: &'a [KernelModule],
    pub primary: &'a KernelModule,
    pub builder: &'a ModuleBuilder,
    pub stage: &'a StagingDir,
    pub isolation: &'a IsolationOptions,
    pub shutdown: &'a Receiver<()>,
    /// An explicit `--state` file that exists: every backend starts from it.
    pub state: Option<PathBuf>,
    /// The file the first backend's state was restored from, if any: a
    /// backend with no last good point of its own to restore starts from
    /// it too, so that every backend serves one state.
    pub first_restored: Option<PathBuf>,
    /// `--fresh`: no kept last good point is restored.
    pub fresh: bool,
    pub target: &'a Path,
    pub workload_name: &'a str,
    /// What the lanes' markers say the session serves (`kept_state.rs`).
    pub workload_served: &'a str,
}

/// Builds, stages and starts a worker for each backend of `setup.names`
/// (with the state the first backend started from, then the workload's
/// buffers it does not hold). Any that cannot start stops `kiln dev`
/// with the reason: the user asked for it.
pub(super) fn start_others(setup: OthersSetup<'_>) -> Result<Vec<Lane>, DevError> {
    let mut others: Vec<Lane> = Vec::new();
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
        let (artifact, build_ms) = build_at_start(setup.builder, &module)?;
        let staged = setup
            .stage
            .stage(&module.package, &artifact)
            .map_err(|e| DevError(e.to_string()))?;
        let mut engine = IsolatedEngine::new(setup.isolation.clone(), Some(setup.shutdown.clone()))
            .map_err(|e| DevError(format!("cannot set up a worker for {name}: {e}")))?;
        let kept = KeptState::new(setup.target, &module.package, setup.workload_served);
        let given = match (&setup.state, &setup.first_restored) {
            (Some(path), _) => Some(Given {
                path: path.clone(),
                why: NotRestored::StateGiven,
            }),
            (None, Some(path)) if kept.starts_from_workload(None, setup.fresh) => {
                tracing::info!(
                    "{} starts from the state {} restored ({}): every served backend starts \
                     from one state",
                    module.package,
                    setup.primary.package,
                    path.display()
                );
                Some(Given {
                    path: path.clone(),
                    why: NotRestored::FirstBackend,
                })
            }
            _ => None,
        };
        let restage = || {
            setup
                .stage
                .stage(&module.package, &artifact)
                .map_err(|e| e.to_string())
        };
        let (started, staged, _) = kept
            .start(&mut engine, staged, &restage, given, setup.fresh)
            .map_err(|e| DevError(format!("cannot start {}: {e}", module.package)))?;
        emit!(
            tracing::Level::INFO,
            events::WorkerStarted {
                module: module.package.clone(),
                version: started.version,
                pid: engine.worker_pid(),
            },
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
        let mut lane = Lane::new(module, engine, staged, setup.workload_name, setup.target);
        lane.kept = Some(kept);
        lane.fresh = Some(Fresh {
            build_ms: Some(build_ms),
            swap_ms: None,
            old_alive: false,
        });
        others.push(lane);
    }
    Ok(others)
}

impl Session {
    /// The refusal of a command that acts on one served backend, while
    /// several are served.
    pub(super) fn several_backends_refusal(&self, command: &str) -> Option<String> {
        if self.lanes.len() < 2 {
            return None;
        }
        let served: Vec<String> = self.lanes.iter().map(Lane::label).collect();
        Some(format!(
            "{command} is not supported while several backends are served ({}); \
             start kiln dev with one --backend for it",
            served.join(", ")
        ))
    }

    /// After every lane replayed (`summaries`, in lane order): lane 0's
    /// outputs are compared with each other lane's, and one table shows a
    /// column per backend.
    pub(super) fn compare_lanes(&mut self, summaries: &[Option<ReplaySummary>]) {
        let Some((own, others)) = summaries.split_first() else {
            return;
        };
        let checks = self.cross_compare(own.as_ref(), others);
        // A lane where nothing serves (its only version went down) is
        // named by its module.
        let labels: Vec<String> = self
            .lanes
            .iter()
            .map(|l| match l.engine.is_serving() {
                true => l.label(),
                false => l.package().to_string(),
            })
            .collect();
        let empty = Vec::new();
        let columns: Vec<BackendColumn> = summaries
            .iter()
            .zip(&labels)
            .map(|(summary, label)| BackendColumn {
                label: summary.as_ref().map_or(label.as_str(), |s| s.label()),
                passed: summary.as_ref().map(ReplaySummary::passed),
                lines: summary.as_ref().map_or(&empty, |s| &s.table.lines),
            })
            .collect();
        let text = table(&columns, &checks);
        print_table(&text);
        let backends: Vec<&str> = columns.iter().map(|c| c.label).collect();
        emit!(
            tracing::Level::INFO,
            events::BackendsReplayed {
                module: self.own().package().to_string(),
                version: self.version(),
                backends: backends.join(","),
                passed: columns.iter().all(|c| c.passed == Some(true)),
                agree: !checks.is_empty() && checks.iter().all(CrossCheck::all_agree),
                table: text.clone(),
            },
            "replayed on {} backends: {}",
            columns.len(),
            backends.join(", ")
        );
    }

    /// The session's own backend writes its last replay's outputs; each
    /// other backend compares its own with them. One `cross_compared`
    /// event per pair. A replay whose version no longer serves (it failed
    /// and was rolled back: the version serving now has not replayed) is
    /// left out, and the log says so.
    fn cross_compare(
        &mut self,
        own: Option<&ReplaySummary>,
        summaries: &[Option<ReplaySummary>],
    ) -> Vec<CrossCheck> {
        let Some(own) = own else {
            return Vec::new();
        };
        let serving: Vec<String> = self.lanes.iter().map(Lane::label).collect();
        let gone: Vec<String> = std::iter::once(Some(own))
            .chain(summaries.iter().map(Option::as_ref))
            .zip(&serving)
            .filter_map(|(s, now)| {
                s.filter(|s| s.label() != now)
                    .map(|s| format!("{} was rolled back ({now} serves)", s.label()))
            })
            .collect();
        if !gone.is_empty() {
            tracing::info!("not cross-compared this time: {}", gone.join(" and "));
        }
        if own.label() != serving[0] {
            return Vec::new();
        }
        let path = self.stage.path().join(format!("{}.outputs", own.label()));
        if let Err(e) = self.lanes[0].engine.write_outputs(&path) {
            emit!(
                tracing::Level::WARN,
                events::CrossCompareFailed {
                    module: self.own().package().to_string(),
                },
                "cannot cross-compare the backends: {} did not write its outputs: {e}",
                own.label()
            );
            return Vec::new();
        }
        let mut checks = Vec::new();
        for (i, summary) in summaries.iter().enumerate() {
            if summary.as_ref().is_none_or(|s| s.label() != serving[i + 1]) {
                continue;
            }
            match self.lanes[i + 1].engine.compare_outputs(&path, own.label()) {
                Ok(check) => {
                    let all = check.all_agree();
                    let line = check.describe();
                    let compared = events::CrossCompared {
                        module: self.lanes[i + 1].package().to_string(),
                        backend: check.label.clone(),
                        against: check.against.clone(),
                        agree: all,
                        compared: check.compared() as u64,
                        agreed: check.agreed() as u64,
                    };
                    if all {
                        emit!(tracing::Level::INFO, compared, "{line}");
                    } else {
                        emit!(tracing::Level::WARN, compared, "{line}");
                    }
                    checks.push(check);
                }
                Err(e) => self.lane_failed(i + 1, e, "cross-comparison failed"),
            }
        }
        let _ = std::fs::remove_file(&path);
        checks
    }
}

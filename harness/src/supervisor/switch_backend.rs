//! Switching the served backend with the state (`kiln ctl switch vulkan`,
//! the `s` key): the running state moves to another backend's module
//! through the same handoff as a save (the old engine exports its state,
//! device buffers downloaded to data; the new engine imports it), without a
//! restart of `kiln dev`.
//!
//! What a switch does, in order, on the session's loop:
//!
//! 1. refuses at once what cannot work: an unknown backend, the backend
//!    already served, a backend the device probe rules out here (`cuda`
//!    with no driver: [`super::backend_choice::can_run`]);
//! 2. builds the other backend's module, synchronously, with the spinner
//!    (the worker keeps serving meanwhile; the loop takes the next event
//!    when the build ends). A build that fails is a refusal;
//! 3. stages it and swaps the worker to it with the state handoff. An
//!    engine that cannot be created or cannot take the state (no device, a
//!    shader that does not compile) is a refusal, and the old version is
//!    still serving with its state untouched (the handoff's invariant);
//! 4. the session now serves the new module: saves in its sources build it,
//!    its history is its own (versions grouped by backend; switching back
//!    continues the earlier one), its state file is its own, and the timing
//!    baseline starts again (the replaced backend's timings are never a
//!    baseline: the worker drops the old engine at once, and the last good
//!    point's timings are forgotten);
//! 5. the workload is replayed on the new backend and checked against the
//!    reference. A replay that fails (with `--on-fail rollback`) or a
//!    worker that goes down switches back to the previous backend, with
//!    the state.
//!
//! State the new backend does not take (another backend's cache sections,
//! a CPU-only tuning value) is listed in the log (`switched`,
//! `state_dropped`) and in the answer; it is never silently dropped.

use std::path::PathBuf;

use super::backend_choice;
use super::lane::{Fresh, LastGood};
use super::session::Session;
use super::sync_build::build_now;
use crate::build::module_build::ModuleBuilder;
use crate::build::module_graph::KernelModule;
use crate::events::{self, emit};
use crate::history::History;
use crate::isolation::worker_client::WorkerError;
use crate::swap::stage::Staged;
use crate::workspace;
use kiln_stats::bytes;

/// What the session served before a switch, to go back to.
struct Previous {
    module: KernelModule,
    good: Option<LastGood>,
}

impl Session {
    /// Switches the served backend to `backend` (empty: the next backend
    /// this machine can run), with the state. `Ok`: the
    /// answer (what moved, what was not carried over, the replay's
    /// verdict); `Err`: a refusal with its reason, and the backend that
    /// served before still serves.
    pub(super) fn switch_backend(&mut self, backend: &str) -> Result<String, String> {
        let from_label = self.label();
        // No backend named (the `s` key): the next one this machine can run.
        let probe = backend_choice::probe_in_child();
        let next;
        let backend = match backend.trim() {
            "" => match self
                .backends
                .next_after(&self.lanes[0].module.package, &probe)
            {
                Some(b) => {
                    next = b;
                    next.as_str()
                }
                None => {
                    let why = format!(
                        "no other backend can run here (modules: {}); {from_label} keeps serving",
                        self.backends.names()
                    );
                    emit!(
                        tracing::Level::WARN,
                        events::SwitchRefused { backend: None },
                        "{why}"
                    );
                    return Err(why);
                }
            },
            named => named,
        };
        let refuse = |why: String| {
            emit!(
                tracing::Level::WARN,
                events::SwitchRefused {
                    backend: Some(backend.to_string()),
                },
                "switch to {backend} refused: {why}"
            );
            Err(why)
        };
        let Some(target) = self.backends.find(backend).cloned() else {
            return refuse(format!(
                "unknown backend {backend:?} (modules under kernels/: {})",
                self.backends.names()
            ));
        };
        if target.package == self.lanes[0].module.package {
            return refuse(format!("{from_label} already serves {}", target.backend));
        }
        if !self.lanes[0].engine.is_serving() {
            return refuse(
                "no worker serves now (the last one went down); save a fix first".into(),
            );
        }
        if let Err(why) = backend_choice::can_run(&probe, &target.backend) {
            return refuse(format!(
                "{} cannot run here: {why}; {from_label} keeps serving",
                target.backend
            ));
        }
        let (artifact, build_ms) = match self.build_for_switch(&target) {
            Ok(built) => built,
            Err(why) => return refuse(format!("{why}; {from_label} keeps serving")),
        };
        let staged = match self.stage.stage(&target.package, &artifact) {
            Ok(s) => s,
            Err(e) => {
                return refuse(format!(
                    "cannot stage {}: {e}; {from_label} keeps serving",
                    target.package
                ));
            }
        };
        let swap = match self.lanes[0].engine.swap(&staged, false) {
            Ok(swap) => swap,
            Err(WorkerError::Failed(e)) => {
                self.stage.remove(&staged);
                return refuse(format!("{e}; {from_label} keeps serving"));
            }
            Err(WorkerError::Down(down)) => {
                let tried = (staged.version, staged.label.clone());
                self.stage.remove(&staged);
                self.went_down(0, *down, Some(tried), build_ms);
                return refuse(format!(
                    "the worker went down while {} took the state; {} serves",
                    staged.label,
                    self.label()
                ));
            }
            Err(WorkerError::Interrupted) => {
                self.stopping = true;
                return Err("interrupted (Ctrl-C)".into());
            }
        };
        let not_carried = if swap.dropped.is_empty() {
            "nothing".to_string()
        } else {
            swap.dropped.join(", ")
        };
        emit!(
            tracing::Level::INFO,
            events::Switched {
                module: target.package.clone(),
                version: staged.version,
                from: swap.from.clone(),
                to: swap.to.clone(),
                handoff_bytes: swap.bytes as u64,
                handoff_ms: swap.paused_ms,
                build_ms,
                dropped: swap.dropped.join(","),
                defaulted: swap.defaulted.join(","),
            },
            "switched {} -> {} with the state ({} in {:.1} ms); not carried over (unknown to {}): {not_carried}{}; a new timing baseline starts",
            swap.from,
            swap.to,
            bytes::human(swap.bytes as u64),
            swap.paused_ms,
            target.backend,
            if swap.defaulted.is_empty() {
                String::new()
            } else {
                format!("; defaulted: {}", swap.defaulted.join(", "))
            }
        );
        let previous = self.serve_module(target.clone(), staged);
        self.tuning = false;
        self.lanes[0].fresh = Some(Fresh {
            build_ms: Some(build_ms),
            swap_ms: Some(swap.paused_ms),
            old_alive: false,
        });
        self.replay_all();
        if self.stopping {
            return Err("interrupted (Ctrl-C) during the replay".into());
        }
        let passed = self.lanes[0]
            .history
            .versions
            .last()
            .is_some_and(|r| r.passed && !r.crashed);
        let answer = format!(
            "switched {} -> {} with the state ({}); not carried over: {not_carried}{}",
            swap.from,
            swap.to,
            bytes::human(swap.bytes as u64),
            if swap.defaulted.is_empty() {
                String::new()
            } else {
                format!("; defaulted: {}", swap.defaulted.join(", "))
            }
        );
        if !self.lanes[0].engine.is_serving() {
            let why = format!("the worker went down on {}", swap.to);
            return Err(self.switch_back(previous, &why, true));
        }
        if !passed && self.replay {
            let why = format!("{} failed the replay", swap.to);
            if self.on_fail == super::options::OnFail::Rollback && previous.good.is_some() {
                return Err(self.switch_back(previous, &why, false));
            }
            return Ok(format!("{answer}; {why}, kept (--on-fail keep)"));
        }
        let replayed = if self.replay {
            "; the workload passed on it"
        } else {
            ""
        };
        Ok(format!("{answer}{replayed}"))
    }

    /// Builds `module` now, with the spinner; `Err` says why not.
    fn build_for_switch(&mut self, module: &KernelModule) -> Result<(PathBuf, f64), String> {
        let root = self.backends.root.clone();
        let builder = ModuleBuilder::new(&root, workspace::module_target_dir(&root))
            .with_profile(workspace::HOST_PROFILE);
        let version = self.version();
        build_now(&builder, module, &mut self.spinner, version)
    }

    /// Makes `module` (whose version `staged` the worker now serves) the
    /// session's module: its history, its state file, a new timing
    /// baseline. Returns what served before.
    fn serve_module(&mut self, module: KernelModule, staged: Staged) -> Previous {
        self.lanes[0].serving = staged;
        let previous_module = std::mem::replace(&mut self.lanes[0].module, module);
        self.save_history();
        let history = self
            .backends
            .histories
            .remove(&self.lanes[0].module.package)
            .unwrap_or_else(|| History {
                module: self.lanes[0].module.package.clone(),
                backend: self.lanes[0].module.backend.clone(),
                workload: self.lanes[0].history.workload.clone(),
                versions: Vec::new(),
            });
        let old_history = std::mem::replace(&mut self.lanes[0].history, history);
        self.backends
            .histories
            .insert(previous_module.package.clone(), old_history);
        self.lanes[0].history_path = sibling(
            &self.lanes[0].history_path,
            &self.lanes[0].module.package,
            "json",
        );
        self.state_path = sibling(&self.state_path, &self.lanes[0].module.package, "snapshot");
        Previous {
            module: previous_module,
            good: self.lanes[0].last_good.take(),
        }
    }

    /// Goes back to the backend served before a switch, with the state;
    /// returns the refusal's text.
    fn switch_back(&mut self, previous: Previous, why: &str, worker_down: bool) -> String {
        let Some(good) = previous.good else {
            return format!("{why}; no earlier good version to go back to");
        };
        let staged = match good.stage_again(&self.stage, &previous.module.package) {
            Ok(s) => s,
            Err(e) => return format!("{why}; cannot go back: {e}"),
        };
        let failed_module = self.lanes[0].module.package.clone();
        let result = if worker_down {
            let source = self.lanes[0].engine.checkpoint_source();
            self.lanes[0].engine.start(&staged, source).map(|s| s.label)
        } else {
            self.lanes[0].engine.swap(&staged, false).map(|s| s.to)
        };
        match result {
            Ok(label) => {
                self.serve_module(previous.module, staged);
                self.lanes[0].last_good = Some(LastGood {
                    copy: good.copy,
                    files: good.files,
                    version: self.lanes[0].serving.version,
                    code_of: good.code_of,
                    timings: good.timings,
                });
                emit!(
                    tracing::Level::WARN,
                    events::SwitchedBack {
                        module: self.lanes[0].module.package.clone(),
                        version: self.lanes[0].serving.version,
                    },
                    "{why}; switched back: {label} serves again, with the state"
                );
                self.checkpoint(0);
                format!("{why}; switched back to {label} with the state")
            }
            Err(e) => {
                self.stage.remove(&staged);
                emit!(
                    tracing::Level::ERROR,
                    events::Refused {
                        module: failed_module.to_string(),
                        version: None,
                    },
                    "{why}; cannot go back to {}: {e}",
                    previous.module.package
                );
                format!("{why}; cannot go back to {}: {e}", previous.module.package)
            }
        }
    }
}

/// `dir/OTHER.json` next to `path` (`dir/MODULE.json`).
fn sibling(path: &std::path::Path, module: &str, extension: &str) -> PathBuf {
    path.with_file_name(format!("{module}.{extension}"))
}

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

use kiln_stats::bytes;

use super::build_queue::{BuildQueue, BuildReport};
use super::module_build::BuildOutcome;
use super::module_build::strip_ansi;
use super::module_graph::KernelModule;
use super::session::{Session, print_table};
use super::watch::ChangeSet;
use super::worker_client::WorkerError;
use crate::swap::stage::{StageError, Staged};
use crate::swap::version_files::SOURCE_EXTENSIONS;
use crate::worker::protocol::ReplaySummary;

/// Whether `path` is a file a version carries besides its library (a
/// source its engine compiles): a change to it needs no cargo build.
pub fn is_version_source(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SOURCE_EXTENSIONS.contains(&e))
}

/// What a change set asks of one served module (the session's own or
/// another backend's, `--backends`).
pub(super) struct ModuleChange {
    /// A Rust source of the module or of its path dependencies, or the
    /// root manifest or lock file, changed: a cargo build.
    pub rust: bool,
    /// A declaration, or a file the module's engine compiles at creation,
    /// changed: a re-stage (without cargo when `rust` is false).
    pub files: bool,
}

impl ModuleChange {
    pub(super) fn of(change: &ChangeSet, module: &KernelModule) -> Self {
        let touched = change.modules.contains(&module.package);
        let any = |version_source: bool| {
            touched
                && change
                    .paths
                    .iter()
                    .any(|p| is_in(module, p) && is_version_source(p) == version_source)
        };
        ModuleChange {
            rust: any(false),
            files: change.declarations_changed || any(true),
        }
    }
}

/// Whether `path` is one of `module`'s sources: under its own or a path
/// dependency's directory, or the root manifest or lock file
/// (`kernels/NAME` is two below the root).
pub(super) fn is_in(module: &KernelModule, path: &Path) -> bool {
    let root = module.dir.parent().and_then(Path::parent);
    let root_manifest = path.parent() == root
        && path
            .file_name()
            .is_some_and(|n| n == "Cargo.toml" || n == "Cargo.lock");
    root_manifest || module.source_dirs().any(|d| path.starts_with(d))
}

impl Session {
    /// Routes a change set that is not a contract change; returns (first
    /// event, seen) if a build of the served module was requested.
    pub(super) fn route_change(
        &mut self,
        change: &ChangeSet,
        queue: &BuildQueue,
        names: &[String],
        seen: Instant,
    ) -> Option<(Instant, Instant)> {
        let served = self.module.package.clone();
        let ModuleChange { rust, files } = ModuleChange::of(change, &self.module);
        let reference = self
            .reference_module
            .as_ref()
            .map(|m| m.package.clone())
            .filter(|r| *r != served && change.modules.contains(r));

        if !rust && !files && reference.is_none() && !change.watched_changed {
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
            module = %served,
            version = self.version(),
            ms = debounce_ms,
            paths = %names.join(","),
            build = rust,
            "change seen: {} ({debounce_ms:.0} ms after the save){}",
            names.join(", "),
            if rust {
                ""
            } else if files {
                "; no Rust source changed: re-staging without a build"
            } else {
                ""
            }
        );
        // The workload first: the replay after the swap uses the new one.
        if (change.watched_changed || change.declarations_changed) && self.engine.is_serving() {
            self.reload_workload(change.watched_changed);
        }
        // The reference before the served module: the build queue builds in
        // the order of the requests, so a swap that needs the new reference
        // (a signature change) is replayed against it.
        if let Some(reference) = &reference {
            let _ = queue.request(reference, change.first_event_at);
        }
        if rust {
            self.build_pending = true;
            let _ = queue.request_changed(&served, change.first_event_at, &change.paths);
            return Some((change.first_event_at, seen));
        }
        if files {
            self.restage(change.first_event_at, seen);
        } else if change.watched_changed && reference.is_none() && self.engine.is_serving() {
            let _ = self.recheck("the workload changed");
        }
        None
    }

    /// Has the worker read the workload again.
    fn reload_workload(&mut self, file_changed: bool) {
        match self.engine.reload_workload() {
            Ok(description) => tracing::info!(
                event = "workload_reloaded",
                module = %self.module.package,
                version = self.version(),
                "{}: {description}",
                if file_changed {
                    "the workload file changed; the next replay uses it"
                } else {
                    "the declarations changed; the next replay uses the workload as they make it"
                }
            ),
            Err(WorkerError::Failed(e)) => tracing::error!(
                event = "workload_invalid",
                module = %self.module.package,
                version = self.version(),
                "cannot read the workload again: {e}; replays keep the last one"
            ),
            Err(WorkerError::Down(down)) => self.went_down(*down, None, 0.0),
            Err(WorkerError::Interrupted) => self.stopping = true,
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
                    tracing::error!(
                        event = "declaration_invalid",
                        module = %module,
                        version = self.version(),
                        file = %e.file.display(),
                        line = e.line,
                        "{e}; {} keeps serving",
                        self.label()
                    );
                }
                None
            }
            Err(e) => {
                tracing::error!(event = "refused", module = %module, version = self.version(), "{e}; {} keeps serving", self.label());
                None
            }
        }
    }

    /// Re-stages the serving library with the declarations and sources on
    /// disk now (no build), and swaps to it.
    fn restage(&mut self, first_event_at: Instant, seen: Instant) {
        let module = self.module.package.clone();
        let stage_start = Instant::now();
        let library = self.serving.path.clone();
        let Some(staged) = self.stage_or_report(&module, &library) else {
            return;
        };
        if staged.version_hash == self.serving.version_hash && self.engine.is_serving() {
            tracing::info!(
                "{} has the same library, declarations and sources as {}; not swapping",
                staged.label,
                self.label()
            );
            self.stage.remove(&staged);
            return;
        }
        let stage_load_ms = stage_start.elapsed().as_secs_f64() * 1e3;
        self.swap_in(staged, None, Some((first_event_at, seen)), stage_load_ms);
    }

    /// Swaps the worker to `staged` (built in `build_ms`, or re-staged
    /// without a build), replays, and rolls back on failure.
    pub(super) fn swap_in(
        &mut self,
        staged: Staged,
        build_ms: Option<f64>,
        change: Option<(Instant, Instant)>,
        stage_load_ms: f64,
    ) {
        let module = self.module.package.clone();
        if !self.engine.is_serving() {
            // The last worker went down and could not be restarted: this
            // version starts a new one, with the state of the last good point.
            self.start_fresh(staged, build_ms, None);
            return;
        }
        let from_version = self.version();
        let from_label = self.label();
        match self.engine.swap(&staged, self.replay) {
            Ok(swap) => {
                self.current_hash = staged.hash.clone();
                self.serving = staged;
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
                    restaged = build_ms.is_none(),
                    "swapped {} -> {}: {} from save to serving (debounce {}, build {}, stage+load {stage_load_ms:.1}, handoff {:.1} ms for {})",
                    swap.from,
                    swap.to,
                    total_ms.map_or("-".to_string(), |t| format!("{t:.0} ms")),
                    debounce_ms.map_or("-".to_string(), |d| format!("{d:.0}")),
                    build_ms.map_or("none: same library, new declarations/sources".to_string(), |b| format!("{b:.0}")),
                    swap.paused_ms,
                    bytes::human(swap.bytes as u64)
                );
                // The old version stays alive in the worker through the
                // replay so both are timed interleaved; it retires after.
                self.after_swap(build_ms, Some(swap.paused_ms), true);
            }
            Err(WorkerError::Failed(e)) => {
                self.stage.remove(&staged);
                tracing::error!(event = "refused", module = %module, version = from_version, "{e}; {from_label} keeps serving");
                // A fingerprint that differs in a contract field: the
                // contract changed under the serving host.
                if e.starts_with("refused ") && e.contains("contract") {
                    self.restart_required();
                }
            }
            Err(WorkerError::Down(down)) => {
                let tried = (staged.version, staged.label.clone());
                self.stage.remove(&staged);
                self.went_down(*down, Some(tried), build_ms.unwrap_or_default());
            }
            Err(WorkerError::Interrupted) => self.stopping = true,
        }
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
        let artifact = match report.result {
            Err(e) => {
                tracing::error!(event = "build_failed", module = %module, version = self.version(), ms = build_ms, "cannot run cargo: {e}");
                return;
            }
            Ok(BuildOutcome::Failed { rendered, .. }) => {
                eprint!("{rendered}");
                tracing::error!(
                    event = "build_failed",
                    module = %module,
                    version = self.version(),
                    ms = build_ms,
                    diagnostics = %strip_ansi(&rendered),
                    "build of the reference module {module} failed after {build_ms:.0} ms; the last reference stays"
                );
                return;
            }
            Ok(BuildOutcome::Built { artifact, .. }) => artifact,
        };
        tracing::info!(event = "build_finished", module = %module, version = self.version(), ms = build_ms, "built {module} in {build_ms:.0} ms");
        let Some(staged) = self.stage_or_report(&module, &artifact) else {
            return;
        };
        match self.engine.set_reference(&staged) {
            Ok(label) => {
                self.set_reference_on_others(&staged);
                tracing::info!(
                    event = "reference_swapped",
                    module = %self.module.package,
                    version = self.version(),
                    reference = %label,
                    "the reference module changed: expected outputs not stored in the workload now come from {label}"
                );
                if !self.build_pending {
                    let _ = self.recheck(&format!("against the new reference {label}"));
                }
            }
            Err(WorkerError::Failed(e)) => {
                self.stage.remove(&staged);
                tracing::error!(event = "refused", module = %module, version = self.version(), "{e}; the last reference stays");
            }
            Err(WorkerError::Down(down)) => self.went_down(*down, None, 0.0),
            Err(WorkerError::Interrupted) => self.stopping = true,
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
        tracing::info!(
            event = "recheck",
            module = %self.module.package,
            version = self.version(),
            "re-checking {} ({why})",
            self.label()
        );
        let recorded = self.last_good.as_ref().map(|g| g.timings.clone());
        match self.engine.replay(recorded.as_ref()) {
            Ok(report) => {
                print_table(&report.table);
                self.log_skipped(&report);
                if report.passed {
                    tracing::info!(
                        event = "rechecked",
                        module = %self.module.package,
                        version = self.version(),
                        pass = true,
                        "{} passes ({why})",
                        report.label
                    );
                    // A workload read again loaded its residents into the
                    // engine: the state changed, and it passed, so it is the
                    // last good point (a crash must not restart on the
                    // state from before).
                    self.checkpoint();
                } else {
                    let failure = report.first_failure.clone();
                    tracing::error!(
                        event = "rechecked",
                        module = %self.module.package,
                        version = self.version(),
                        pass = false,
                        "{} fails ({why}){}",
                        report.label,
                        failure.map_or(String::new(), |f| format!(
                            " at call {} ({}): {}",
                            f.index, f.kernel, f.why
                        ))
                    );
                }
                self.control.last_replay = Some((self.version(), report.passed));
                // `--backends`: every served backend replays, compared.
                self.replay_on_others(Some(&report));
                Some(report.passed)
            }
            Err(WorkerError::Failed(e)) => {
                tracing::error!(
                    event = "rechecked",
                    module = %self.module.package,
                    version = self.version(),
                    pass = false,
                    "cannot re-check {}: {e}",
                    self.label()
                );
                None
            }
            Err(WorkerError::Down(down)) => {
                self.went_down(*down, None, 0.0);
                None
            }
            Err(WorkerError::Interrupted) => {
                self.stopping = true;
                None
            }
        }
    }

    /// One log line per kernel whose calls a replay skipped, with why (a
    /// stale recording names the command that re-records it).
    pub(super) fn log_skipped(&self, report: &ReplaySummary) {
        let mut by_reason: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for s in &report.skipped {
            by_reason
                .entry((s.kernel.as_str(), s.why.as_str()))
                .or_default()
                .push(s.index);
        }
        for ((kernel, why), calls) in by_reason {
            let list: Vec<String> = calls.iter().map(ToString::to_string).collect();
            tracing::warn!(
                event = "replay_skipped",
                module = %self.module.package,
                version = self.version(),
                kernel,
                calls = calls.len(),
                why,
                "{}: {kernel}: {} call(s) skipped ({}): {why}",
                report.label,
                calls.len(),
                list.join(", ")
            );
        }
    }
}

//! A lane: one served backend of a session. Its module, the worker that
//! serves it, the version it serves, the versions it served (its history
//! file), its last good version (with that version's own files, for a
//! rollback or a restart) and a build of its module under way.
//!
//! The session owns its lanes (lane 0 is the backend `kiln dev` was started
//! for; `--backends` adds one lane per other backend), and every lane goes
//! through the same life cycle, written once in `session.rs` and
//! `recovery.rs`: build -> stage -> swap -> replay -> verdict ->
//! rollback / recover.

use std::path::PathBuf;
use std::time::Instant;

use super::kept_state::KeptState;
use crate::build::module_graph::KernelModule;
use crate::history::History;
use crate::isolation::isolated::IsolatedEngine;
use crate::swap::stage::{StageError, Staged, StagingDir};
use crate::swap::version_files::VersionFiles;

/// The last version of a lane that passed its replay.
pub(super) struct LastGood {
    /// A private copy of its library.
    pub(super) copy: PathBuf,
    /// Its declarations and sources as they were staged: a restart or a
    /// rollback serves exactly this code, never the workspace's files of
    /// the moment (a wrong shader saved since would come back with it).
    pub(super) files: VersionFiles,
    /// The version that serves its code now (a rollback or a restart
    /// stages it again under a new number).
    pub(super) version: u64,
    /// The version that first served this code (the one the user saved and
    /// that passed): what the log names after any number of restarts and
    /// rollbacks ("the code of v3", never "the code of v11").
    pub(super) code_of: u64,
    pub(super) timings: crate::workload::timing::Timings,
}

impl LastGood {
    /// Stages the last good version again, as it was: its library copy
    /// with its own declarations and sources.
    pub(super) fn stage_again(
        &self,
        stage: &StagingDir,
        module: &str,
    ) -> Result<Staged, StageError> {
        stage.stage_with(module, &self.copy, self.files.clone())
    }
}

/// A version that started serving and has not been judged yet.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fresh {
    pub(super) build_ms: Option<f64>,
    pub(super) swap_ms: Option<f64>,
    /// The replaced version is alive in the worker, to be timed against.
    pub(super) old_alive: bool,
}

/// One served backend.
pub(super) struct Lane {
    pub(super) module: KernelModule,
    pub(super) engine: IsolatedEngine,
    /// The staged copy the worker serves.
    pub(super) serving: Staged,
    pub(super) history: History,
    pub(super) history_path: PathBuf,
    pub(super) last_good: Option<LastGood>,
    /// A build of this lane's module was requested: (first event, seen).
    pub(super) pending: Option<(Instant, Instant)>,
    /// The serving version, not judged yet.
    pub(super) fresh: Option<Fresh>,
    /// Where its last good point is kept on disk (named after the module it
    /// started with, kept across a switch).
    pub(super) kept: Option<KeptState>,
}

impl Lane {
    /// A lane whose worker serves `serving`, with an empty history.
    pub(super) fn new(
        module: KernelModule,
        engine: IsolatedEngine,
        serving: Staged,
        workload: &str,
        target: &std::path::Path,
    ) -> Lane {
        let history_path = crate::history::default_path(target, &module.package);
        match crate::history::keep_earlier(&history_path) {
            Ok(Some(kept)) => tracing::info!(
                "the previous session's history of {} is kept in {} (`kiln report --file` shows it)",
                module.package,
                kept.display()
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "cannot keep the previous session's history {}: {e} (this session's replaces it)",
                history_path.display()
            ),
        }
        Lane {
            history: History {
                module: module.package.clone(),
                backend: module.backend.clone(),
                workload: workload.to_string(),
                versions: Vec::new(),
            },
            history_path,
            module,
            engine,
            serving,
            last_good: None,
            pending: None,
            fresh: None,
            kept: None,
        }
    }

    /// `kernel-cpu-v3`, or `-` when no worker serves.
    pub(super) fn label(&self) -> String {
        match self.engine.is_serving() {
            true => self.serving.label.clone(),
            false => "-".to_string(),
        }
    }

    pub(super) fn version(&self) -> u64 {
        self.serving.version
    }

    pub(super) fn package(&self) -> &str {
        &self.module.package
    }

    pub(super) fn save_history(&self) {
        if let Err(e) = self.history.save(&self.history_path) {
            tracing::warn!(
                "cannot save history to {}: {e}",
                self.history_path.display()
            );
        }
    }
}

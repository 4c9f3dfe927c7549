//! The session's side of autotuning: one bounded step between events (the
//! dev loop calls it only while nothing else is ready), the tables printed,
//! the kept values recorded in the history and checkpointed with the state.

use super::session::Session;
use crate::events::{self, emit};
use crate::isolation::worker_client::WorkerError;

/// How long one tuning step may run before the loop looks at events again.
pub const STEP_MS: u64 = 150;

impl Session {
    pub(super) fn tune_step(&mut self) {
        let progress = match self.lanes[0].engine.tune_step(STEP_MS) {
            Ok(p) => p,
            Err(WorkerError::Failed(e)) => {
                self.tuning = false;
                tracing::warn!("tuning stopped: {e}");
                return;
            }
            Err(e) => {
                self.tuning = false;
                self.lane_failed(0, e, "tuning failed");
                return;
            }
        };
        for why in &progress.skipped {
            tracing::info!("not tuned: {why}");
        }
        for table in &progress.tables {
            for line in table.lines() {
                tracing::info!(target: "kiln::table", "{line}");
            }
        }
        for (tunable, value) in &progress.kept {
            emit!(
                tracing::Level::INFO,
                events::Tuned {
                    module: self.lanes[0].module.package.clone(),
                    version: self.version(),
                    tunable: tunable.to_string(),
                    value: value.to_string(),
                    cached: progress.from_cache,
                },
                "tuned {tunable} = {value}{}",
                if progress.from_cache {
                    " (from the tuning cache)"
                } else {
                    ""
                }
            );
        }
        if !progress.kept.is_empty() {
            if let Some(last) = self.lanes[0].history.versions.last_mut() {
                last.tuning.extend(progress.kept.clone());
            }
            self.save_history();
            // The kept values are engine state: the last good point has them.
            self.checkpoint(0);
        }
        self.tuning = progress.more && !self.stopping;
    }
}

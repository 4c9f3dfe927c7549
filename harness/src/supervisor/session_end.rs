//! How a session saves the state of its last good point and ends: when the
//! contract changed (the host must restart) and at Ctrl-C, SIGTERM, SIGHUP
//! or `q` (a clean end: each lane's last checkpoint is on disk and its
//! `running` marker removed, so the next start does not resume it:
//! `kept_state.rs`).

use std::time::Instant;

use super::session::Session;
use crate::events::{self, emit};

/// The parts of a session's end, timed (for the debug log: where the time
/// from Ctrl-C to the exit goes).
#[derive(Clone, Copy)]
enum Phase {
    /// `--state FILE` put in place.
    StateFile,
    /// Each lane's history saved.
    History,
    /// Waiting for the last copy to disk.
    LastCopy,
    /// The worker told to end, and gone.
    Worker,
    /// The lane dropped: its checkpoints' memory freed.
    Memory,
    /// The staging directory removed.
    Staging,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::StateFile => "state file",
            Phase::History => "history",
            Phase::LastCopy => "last copy to disk",
            Phase::Worker => "worker",
            Phase::Memory => "checkpoint memory",
            Phase::Staging => "staged files",
        }
    }
}

/// Time spent in each [`Phase`] (summed over lanes), in order of first
/// use.
struct EndTimes {
    start: Instant,
    last: Instant,
    spent: Vec<(Phase, f64)>,
}

impl EndTimes {
    fn start() -> EndTimes {
        let now = Instant::now();
        EndTimes {
            start: now,
            last: now,
            spent: Vec::new(),
        }
    }

    /// The time since the last lap goes to `phase`.
    fn lap(&mut self, phase: Phase) {
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
        match self
            .spent
            .iter_mut()
            .find(|(p, _)| p.name() == phase.name())
        {
            Some((_, sum)) => *sum += ms,
            None => self.spent.push((phase, ms)),
        }
    }

    fn log(&self) {
        let parts: Vec<String> = self
            .spent
            .iter()
            .map(|(p, ms)| format!("{} {ms:.1} ms", p.name()))
            .collect();
        tracing::debug!(
            "session end in {:.1} ms: {}",
            self.start.elapsed().as_secs_f64() * 1e3,
            parts.join(", ")
        );
    }
}

impl Session {
    pub(super) fn restart_required(&mut self) {
        let saved = self.state_path.parent().map_or(Ok(()), |dir| {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())
        });
        let state = match saved
            .and_then(|()| self.lanes[0].engine.write_state_file(&self.state_path))
        {
            Ok(bytes) => format!(
                "the state of the last good point ({}) is saved in {} and will be restored when kiln dev starts again",
                kiln_stats::bytes::human(bytes),
                self.state_path.display()
            ),
            Err(e) => format!("saving the engine's state failed: {e}"),
        };
        emit!(
            tracing::Level::WARN,
            events::RestartRequired {
                module: self.lanes[0].module.package.clone(),
                version: self.version(),
            },
            "shared-state (the contract between host and modules) changed: it cannot be hot-swapped. \
             Restart kiln dev (Ctrl-C, then `cargo dev`); {state}. Still serving {}.",
            self.label()
        );
    }

    pub(super) fn finish(mut self) {
        let mut took = EndTimes::start();
        if let Some(path) = &self.explicit_state {
            match self.lanes[0].engine.write_state_file(path) {
                Ok(bytes) => emit!(
                    tracing::Level::INFO,
                    events::StateSaved {
                        module: self.lanes[0].module.package.clone(),
                        version: self.version(),
                        bytes,
                    },
                    "state saved to {} ({}, the last good point)",
                    path.display(),
                    kiln_stats::bytes::human(bytes)
                ),
                Err(e) => tracing::error!("cannot save state to {}: {e}", path.display()),
            }
            took.lap(Phase::StateFile);
        }
        if let Some(path) = &self.record {
            if self.stopping || !self.lanes[0].engine.is_serving() {
                tracing::error!(
                    "cannot record the session to {}: no worker serves",
                    path.display()
                );
            } else {
                match self.lanes[0].engine.record(path) {
                    Ok(description) => {
                        tracing::info!("recorded the session to {}: {description}", path.display())
                    }
                    Err(e) => {
                        tracing::error!("cannot record the session to {}: {e}", path.display())
                    }
                }
            }
        }
        for mut lane in self.lanes.drain(..) {
            lane.save_history();
            if let Some(best) = lane.history.best() {
                tracing::info!(
                    "session over: {}, best v{} ({}); history in {}",
                    lane.history.versions_recorded(),
                    best.version,
                    best.label,
                    lane.history_path.display()
                );
            }
            took.lap(Phase::History);
            // A clean end: the last checkpoint on disk, the marker gone.
            if let Some(kept) = &lane.kept {
                kept.end(&mut lane.engine);
            }
            took.lap(Phase::LastCopy);
            // Workers end before the staging directory goes.
            lane.engine.stop_worker(std::time::Duration::from_secs(1));
            took.lap(Phase::Worker);
            // The checkpoints' memory goes back here.
            drop(lane);
            took.lap(Phase::Memory);
        }
        drop(self.stage);
        took.lap(Phase::Staging);
        took.log();
        tracing::info!("kiln dev stopped; staged files removed");
    }
}

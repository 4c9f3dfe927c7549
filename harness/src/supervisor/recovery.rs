//! When a worker goes down (a crash, or a call past its deadline): say what
//! happened and where, mark the version that ran it in the history, and
//! start a new worker on the last good version with the state of the last
//! good point (the checkpoint), checking that the restarted engine's state
//! is the checkpoint's, bit for bit.

use std::time::Instant;

use super::history::VersionRecord;
use super::session::Session;
use super::worker_client::{Down, DownKind, WorkerError};
use crate::swap::served::human_bytes;

/// Restart attempts after a worker went down.
const RESTART_ATTEMPTS: usize = 3;

/// `kernel-cpu-v12` -> 12.
fn version_of(label: &str) -> Option<u64> {
    label.rsplit_once("-v").and_then(|(_, v)| v.parse().ok())
}

impl Session {
    /// The worker went down while running something; `tried` is the
    /// version being brought in at the time, if any.
    pub(super) fn went_down(&mut self, down: Down, tried: Option<(u64, String)>, build_ms: f64) {
        // What ran is who is blamed: the status record names it (the new
        // version, or another engine the replay used).
        let culprit = down
            .running
            .as_ref()
            .map(|r| r.label.clone())
            .filter(|l| !l.is_empty())
            .or_else(|| tried.as_ref().map(|(_, l)| l.clone()))
            .unwrap_or_else(|| self.serving.label.clone());
        let culprit_version = version_of(&culprit).unwrap_or(self.serving.version);
        let event = match &down.kind {
            DownKind::Crashed(_) => "crashed",
            DownKind::Hung { .. } => "hung",
        };
        // How long the call (or operation) had run when it went down.
        let elapsed_ms = down.running.as_ref().map(|r| r.elapsed.as_secs_f64() * 1e3);
        let call = down.running.as_ref().and_then(|r| r.call.clone());
        let next = match &self.last_good {
            Some(good) => format!(
                "restarting on the code of v{} with the state of the last good point",
                good.version
            ),
            None => "no good version to restart on: fix it and save".to_string(),
        };
        let what = down.describe();
        tracing::error!(
            event,
            module = %self.module.package,
            version = culprit_version,
            signal = down.signal(),
            call = call.as_ref().map(|(i, _)| *i as u64),
            kernel = call.as_ref().map(|(_, k)| k.as_str()),
            op = down.running.as_ref().map(|r| r.op.as_str()),
            elapsed_ms,
            last_words = %down.last_words.join("\n"),
            "{culprit} {what}; {next}"
        );
        // A hang's description already says "hung:".
        let note = match &down.kind {
            DownKind::Crashed(_) => format!("{event}: {what}"),
            DownKind::Hung { .. } => what.clone(),
        };
        match self
            .history
            .versions
            .iter_mut()
            .rev()
            .find(|v| v.version == culprit_version)
        {
            Some(record) => {
                record.passed = false;
                record.crashed = true;
                record.note = Some(note);
            }
            None => self.history.versions.push(VersionRecord {
                version: culprit_version,
                label: culprit.clone(),
                source_hash: String::new(),
                build_ms: Some(build_ms),
                swap_ms: None,
                medians: Default::default(),
                passed: false,
                crashed: true,
                note: Some(note),
                tuning: Default::default(),
                rates: Default::default(),
                basis: None,
            }),
        }
        self.save_history();
        self.restart(down.noticed, culprit_version);
    }

    /// Starts a new worker on the last good version with the checkpoint.
    fn restart(&mut self, noticed: Instant, crashed: u64) {
        for _ in 0..RESTART_ATTEMPTS {
            let Some(good) = &self.last_good else { return };
            let good_version = good.version;
            let staged = match self.stage.stage(&self.module.package, &good.copy) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot restart: {e}");
                    return;
                }
            };
            let source = self.engine.checkpoint_source();
            match self.engine.start(&staged, source) {
                Ok(started) => {
                    self.current_hash = staged.hash.clone();
                    self.serving = staged;
                    if let Some(good) = &mut self.last_good {
                        good.version = started.version;
                    }
                    self.report_restart(noticed, crashed, good_version, &started.label);
                    return;
                }
                Err(WorkerError::Down(again)) => {
                    self.stage.remove(&staged);
                    tracing::error!("the restarted worker went down too: {}", again.describe());
                }
                Err(WorkerError::Interrupted) => {
                    self.stopping = true;
                    return;
                }
                Err(WorkerError::Failed(e)) => {
                    self.stage.remove(&staged);
                    tracing::error!("cannot restart on v{good_version}: {e}");
                    return;
                }
            }
        }
        tracing::error!(
            "gave up restarting after {RESTART_ATTEMPTS} attempts; the next save starts a new worker"
        );
    }

    fn report_restart(&mut self, noticed: Instant, crashed: u64, good_version: u64, label: &str) {
        let checkpoint = self.engine.checkpoint().cloned();
        let now = match self.engine.state_hash() {
            Ok(h) => Some(h),
            Err(WorkerError::Interrupted) => {
                self.stopping = true;
                None
            }
            Err(e) => {
                tracing::error!("cannot read the restarted engine's state: {e}");
                None
            }
        };
        let matches = match (&checkpoint, &now) {
            (Some(c), Some(n)) => Some(c.hash == n.hash),
            (None, _) => None,
            _ => Some(false),
        };
        let ms = noticed.elapsed().as_secs_f64() * 1e3;
        let state = match (&checkpoint, matches) {
            (Some(c), Some(true)) => format!(
                "its state is the checkpoint's, bit for bit ({})",
                human_bytes(c.bytes as usize)
            ),
            (Some(_), _) => "its state differs from the checkpoint's".to_string(),
            (None, _) => "no checkpoint was taken yet: it starts empty".to_string(),
        };
        tracing::warn!(
            event = "restarted",
            module = %self.module.package,
            version = self.version(),
            from_version = crashed,
            pid = self.engine.worker_pid(),
            ms,
            state_bytes = now.as_ref().map(|n| n.bytes),
            state_hash = now.as_ref().map(|n| n.hash.as_str()),
            checkpoint_hash = checkpoint.as_ref().map(|c| c.hash.as_str()),
            state_matches = matches,
            "restarted: {label} (the code of v{good_version}) serves in a new worker, {ms:.0} ms after the crash; {state}"
        );
        if matches == Some(false) {
            tracing::error!("the restarted engine's state does not match the checkpoint");
        }
    }
}

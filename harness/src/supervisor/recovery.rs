//! When a worker goes down (a crash, or a call past its deadline): say what
//! happened and where, mark the version that ran it in the history, and
//! start a new worker on the last good version with the state of the last
//! good point (the checkpoint), checking that the restarted engine's state
//! is the checkpoint's, bit for bit.

use std::time::Instant;

use kiln_stats::bytes;

use super::history::{History, VersionRecord};
use super::isolated::IsolatedEngine;
use super::session::{LastGood, Session};
use super::worker_client::{Down, DownKind, WorkerError};
use crate::swap::stage::{Staged, StagingDir};

/// Restart attempts after a worker went down.
const RESTART_ATTEMPTS: usize = 3;

/// `kernel-cpu-v12` -> 12.
pub(super) fn version_of(label: &str) -> Option<u64> {
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
        record_down(
            &mut self.history,
            culprit_version,
            &culprit,
            note,
            Some(build_ms),
        );
        self.save_history();
        self.restart(down.noticed, culprit_version);
    }

    /// The previous version, kept alive to be timed against `fresh` during
    /// the interleaved replay, crashed or hung: the comparison is lost, not
    /// the new version. `fresh` starts again in a new worker with the state
    /// of the last good point and is judged on its own (against the last
    /// good version's recorded timings).
    pub(super) fn old_went_down(
        &mut self,
        down: Down,
        fresh: Staged,
        build_ms: Option<f64>,
        swap_ms: Option<f64>,
    ) {
        let old = down
            .running
            .as_ref()
            .map(|r| r.label.clone())
            .unwrap_or_default();
        let old_version = version_of(&old).unwrap_or_default();
        let event = match &down.kind {
            DownKind::Crashed(_) => "crashed",
            DownKind::Hung { .. } => "hung",
        };
        let what = down.describe();
        tracing::error!(
            event,
            module = %self.module.package,
            version = old_version,
            signal = down.signal(),
            old = true,
            last_words = %down.last_words.join("\n"),
            "{old} (the previous version, timed against {}) {what}; the comparison is lost: {} is judged on its own, in a new worker with the state of the last good point",
            fresh.label,
            fresh.label
        );
        if let Some(record) = self
            .history
            .versions
            .iter_mut()
            .rev()
            .find(|v| v.version == old_version)
            && record.note.is_none()
        {
            record.note = Some(format!("{event} while timed against v{}", fresh.version));
        }
        self.start_fresh(fresh, build_ms, swap_ms);
    }

    /// Starts a new worker on the last good version with the checkpoint.
    pub(super) fn restart(&mut self, noticed: Instant, crashed: u64) {
        let Some(good) = self.last_good.as_mut() else {
            return;
        };
        let lane = Lane {
            module: &self.module.package,
            engine: &mut self.engine,
            stage: &self.stage,
        };
        match restart_lane(lane, good, noticed, crashed) {
            Restarted::Serving(staged) => {
                self.current_hash = staged.hash.clone();
                self.serving = *staged;
            }
            Restarted::Interrupted => self.stopping = true,
            Restarted::GaveUp => {}
        }
    }
}

/// Marks `version` (`label`) crashed in `history` with `note`, adding its
/// record if its replay never got to make one.
pub(super) fn record_down(
    history: &mut History,
    version: u64,
    label: &str,
    note: String,
    build_ms: Option<f64>,
) {
    match history
        .versions
        .iter_mut()
        .rev()
        .find(|v| v.version == version)
    {
        Some(record) => {
            record.passed = false;
            record.crashed = true;
            record.note = Some(note);
        }
        None => history.versions.push(VersionRecord {
            version,
            label: label.to_string(),
            source_hash: String::new(),
            build_ms,
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
}

/// The parts of a served backend a restart works on (the session's own
/// backend and every `--backends` one recover through [`restart_lane`]).
pub(super) struct Lane<'a> {
    pub(super) module: &'a str,
    pub(super) engine: &'a mut IsolatedEngine,
    pub(super) stage: &'a StagingDir,
}

pub(super) enum Restarted {
    /// A new worker serves this staged copy of the last good version.
    Serving(Box<Staged>),
    Interrupted,
    GaveUp,
}

/// Starts a new worker on the last good version (its library with its own
/// declarations and sources, as staged) with the checkpoint's state, and
/// checks that the restarted engine's state is the checkpoint's.
pub(super) fn restart_lane(
    lane: Lane<'_>,
    good: &mut LastGood,
    noticed: Instant,
    crashed: u64,
) -> Restarted {
    for _ in 0..RESTART_ATTEMPTS {
        let good_version = good.version;
        let staged = match good.stage_again(lane.stage, lane.module) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot restart {}: {e}", lane.module);
                return Restarted::GaveUp;
            }
        };
        let source = lane.engine.checkpoint_source();
        match lane.engine.start(&staged, source) {
            Ok(started) => {
                good.version = started.version;
                return match report_restart(lane, noticed, crashed, good_version, &started.label) {
                    true => Restarted::Serving(Box::new(staged)),
                    false => Restarted::Interrupted,
                };
            }
            Err(WorkerError::Down(again)) => {
                lane.stage.remove(&staged);
                tracing::error!("the restarted worker went down too: {}", again.describe());
            }
            Err(WorkerError::Interrupted) => return Restarted::Interrupted,
            Err(WorkerError::Failed(e)) => {
                lane.stage.remove(&staged);
                tracing::error!("cannot restart {} on v{good_version}: {e}", lane.module);
                return Restarted::GaveUp;
            }
        }
    }
    tracing::error!(
        "gave up restarting {} after {RESTART_ATTEMPTS} attempts; the next save starts a new worker",
        lane.module
    );
    Restarted::GaveUp
}

/// Logs `restarted` with the state check; false when Ctrl-C came.
fn report_restart(
    lane: Lane<'_>,
    noticed: Instant,
    crashed: u64,
    good_version: u64,
    label: &str,
) -> bool {
    let checkpoint = lane.engine.checkpoint().cloned();
    let now = match lane.engine.state_hash() {
        Ok(h) => Some(h),
        Err(WorkerError::Interrupted) => return false,
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
            bytes::human(c.bytes)
        ),
        (Some(_), _) => "its state differs from the checkpoint's".to_string(),
        (None, _) => "no checkpoint was taken yet: it starts empty".to_string(),
    };
    tracing::warn!(
        event = "restarted",
        module = %lane.module,
        version = lane.engine.version(),
        from_version = crashed,
        pid = lane.engine.worker_pid(),
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
    true
}

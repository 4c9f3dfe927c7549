//! Where a worker's failure becomes the session's decision, for every lane:
//! a request that failed is logged ([`Session::lane_failed`]); a worker
//! that went down (a crash, or a call past its deadline) is named with what
//! ran and where, the version that ran it is marked in the lane's history,
//! and a new worker starts at once on the lane's last good version (its own
//! library, declarations and sources) with the state of the last good point
//! (the checkpoint), checking that the restarted engine's state is the
//! checkpoint's, bit for bit. An *old* version that goes down while it is
//! timed against a new one costs the comparison, not the new version.

use std::time::Instant;

use super::lane::Fresh;
use super::session::Session;
use crate::events::{self, Event, EventKind, WentDown, emit};
use crate::history::{History, VersionRecord};
use crate::isolation::worker_client::{Down, DownKind, WorkerError};
use crate::worker::protocol::ReplaySummary;
use kiln_stats::bytes;

/// Restart attempts after a worker went down.
const RESTART_ATTEMPTS: usize = 3;

/// `kernel-cpu-v12` -> 12.
pub(super) fn version_of(label: &str) -> Option<u64> {
    label.rsplit_once("-v").and_then(|(_, v)| v.parse().ok())
}

/// `crashed` or `hung`.
fn event_of(down: &Down) -> EventKind {
    match &down.kind {
        DownKind::Crashed(_) => EventKind::Crashed,
        DownKind::Hung { .. } => EventKind::Hung,
    }
}

/// The `crashed` or `hung` event of `down`, blaming `module`'s `version`:
/// the previous version timed against the new one (`old`), or what was
/// running (the call or operation, and for how long).
fn went_down_event(down: &Down, module: &str, version: u64, old: bool) -> Event {
    let running = down.running.as_ref().filter(|_| !old);
    let call = running.and_then(|r| r.call.as_ref());
    let fields = WentDown {
        module: module.to_string(),
        version,
        signal: down.signal().map(str::to_string),
        call: call.map(|(i, _)| *i as u64),
        kernel: call.map(|(_, k)| k.clone()),
        op: running.map(|r| r.op.clone()),
        elapsed_ms: running.map(|r| r.elapsed.as_secs_f64() * 1e3),
        last_words: down.last_words.join("\n"),
        old,
    };
    match &down.kind {
        DownKind::Crashed(_) => Event::Crashed(fields),
        DownKind::Hung { .. } => Event::Hung(fields),
    }
}

impl Session {
    /// The one place a failed request to lane `i`'s worker is decided: a
    /// refusal is logged (the version keeps serving), a worker that went
    /// down is recovered, Ctrl-C ends the session.
    pub(super) fn lane_failed(&mut self, i: usize, error: WorkerError, what: &str) {
        match error {
            WorkerError::Interrupted => self.stopping = true,
            WorkerError::Failed(e) => {
                let lane = &self.lanes[i];
                emit!(
                    tracing::Level::ERROR,
                    events::Refused {
                        module: lane.package().to_string(),
                        version: Some(lane.version()),
                    },
                    "{what}: {e}; {} keeps serving",
                    lane.label()
                );
            }
            WorkerError::Down(down) => self.went_down(i, *down, None, 0.0),
        }
    }

    /// A worker's output ended while the loop was not waiting on it (killed
    /// by a signal, the OOM killer, or a thread of its module that crashed
    /// between calls): the lane that owns it recovers now, as from a crash
    /// during a request. A worker already retired or reported is ignored.
    pub(super) fn on_worker_exited(&mut self, pid: u32) {
        let down = self
            .lanes
            .iter_mut()
            .enumerate()
            .find_map(|(i, lane)| lane.engine.worker_exited(pid).map(|down| (i, down)));
        if let Some((i, down)) = down {
            self.lane_failed(i, down, "the worker exited between requests");
        }
    }

    /// As [`Session::lane_failed`], while bringing in version `tried`.
    pub(super) fn lane_failed_trying(
        &mut self,
        i: usize,
        error: WorkerError,
        tried: (u64, String),
        build_ms: f64,
    ) {
        match error {
            WorkerError::Interrupted => self.stopping = true,
            WorkerError::Failed(e) => {
                let lane = &self.lanes[i];
                emit!(
                    tracing::Level::ERROR,
                    events::Refused {
                        module: lane.package().to_string(),
                        version: Some(tried.0),
                    },
                    "{e}; {} keeps serving",
                    lane.label()
                );
            }
            WorkerError::Down(down) => self.went_down(i, *down, Some(tried), build_ms),
        }
    }

    /// Lane `i`'s worker went down while running something; `tried` is the
    /// version being brought in at the time, if any.
    pub(super) fn went_down(
        &mut self,
        i: usize,
        down: Down,
        tried: Option<(u64, String)>,
        build_ms: f64,
    ) {
        if i == 0 {
            self.tuning = false;
        }
        let lane = &mut self.lanes[i];
        // What ran is who is blamed: the status record names it (the new
        // version, or another engine the replay used).
        let culprit = down
            .running
            .as_ref()
            .map(|r| r.label.clone())
            .filter(|l| !l.is_empty())
            .or_else(|| tried.as_ref().map(|(_, l)| l.clone()))
            .unwrap_or_else(|| lane.serving.label.clone());
        let culprit_version = version_of(&culprit).unwrap_or(lane.serving.version);
        let event = event_of(&down);
        let next = match &lane.last_good {
            Some(good) => format!(
                "restarting on the code of v{} with the state of the last good point",
                good.code_of
            ),
            None => "no good version to restart on: fix it and save".to_string(),
        };
        let what = down.describe();
        emit!(
            tracing::Level::ERROR,
            went_down_event(&down, lane.package(), culprit_version, false),
            "{culprit} {what}; {next}"
        );
        // A hang's description already says "hung:".
        let note = match &down.kind {
            DownKind::Crashed(_) => format!("{event}: {what}"),
            DownKind::Hung { .. } => what.clone(),
        };
        lane.fresh = None;
        // A version that went down while running a call failed that run:
        // `kiln ctl status`'s last replay says so, as its verdict does.
        if i == 0 && down.running.is_some() {
            self.control.last_replay = Some((culprit_version, false));
        }
        let lane = &mut self.lanes[i];
        record_down(
            &mut lane.history,
            culprit_version,
            &culprit,
            note,
            Some(build_ms),
        );
        lane.save_history();
        self.restart(i, down.noticed, culprit_version);
    }

    /// Lane `i`'s previous version, kept alive to be timed against `fresh`
    /// during the interleaved replay, crashed or hung: the comparison is
    /// lost, not the new version. The new version starts again in a new
    /// worker with the state of the last good point and is judged on its
    /// own (against the last good version's recorded timings); its replay
    /// is returned.
    pub(super) fn old_went_down(
        &mut self,
        i: usize,
        down: Down,
        fresh: Fresh,
    ) -> Option<ReplaySummary> {
        let lane = &mut self.lanes[i];
        let old = down
            .running
            .as_ref()
            .map(|r| r.label.clone())
            .unwrap_or_default();
        let old_version = version_of(&old).unwrap_or_default();
        let event = event_of(&down);
        let new = lane.serving.clone();
        emit!(
            tracing::Level::ERROR,
            went_down_event(&down, lane.package(), old_version, true),
            "{old} (the previous version, timed against {}) {}; the comparison is lost: {} is judged on its own, in a new worker with the state of the last good point",
            new.label,
            down.describe(),
            new.label
        );
        if let Some(record) = lane
            .history
            .versions
            .iter_mut()
            .rev()
            .find(|v| v.version == old_version)
            && record.note.is_none()
        {
            record.note = Some(format!("{event} while timed against v{}", new.version));
        }
        match self.start_worker(i, new, fresh.build_ms, fresh.swap_ms) {
            true => self.replay_lane(i),
            false => None,
        }
    }

    /// Starts a new worker for lane `i` on its last good version with the
    /// checkpoint (a few attempts).
    pub(super) fn restart(&mut self, i: usize, noticed: Instant, crashed: u64) {
        for _ in 0..RESTART_ATTEMPTS {
            let lane = &mut self.lanes[i];
            let Some(good) = &lane.last_good else {
                return;
            };
            let good_version = good.code_of;
            let staged = match good.stage_again(&self.stage, &lane.module.package) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot restart {}: {e}", lane.package());
                    return;
                }
            };
            let source = lane.engine.checkpoint_source();
            match lane.engine.start(&staged, source) {
                Ok(started) => {
                    lane.serving = staged;
                    if let Some(good) = &mut lane.last_good {
                        good.version = started.version;
                    }
                    self.report_restart(i, noticed, crashed, good_version, &started.label);
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
                    tracing::error!("cannot restart {} on v{good_version}: {e}", lane.package());
                    return;
                }
            }
        }
        tracing::error!(
            "gave up restarting {} after {RESTART_ATTEMPTS} attempts; the next save starts a new worker",
            self.lanes[i].package()
        );
    }

    /// Logs `restarted` with the state check.
    fn report_restart(
        &mut self,
        i: usize,
        noticed: Instant,
        crashed: u64,
        good_version: u64,
        label: &str,
    ) {
        let lane = &mut self.lanes[i];
        let checkpoint = lane.engine.checkpoint().cloned();
        let now = match lane.engine.state_hash() {
            Ok(h) => Some(h),
            Err(WorkerError::Interrupted) => {
                self.stopping = true;
                return;
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
                bytes::human(c.state_bytes)
            ),
            (Some(_), _) => "its state differs from the checkpoint's".to_string(),
            (None, _) => "no checkpoint was taken yet: it starts empty".to_string(),
        };
        emit!(
            tracing::Level::WARN,
            events::Restarted {
                module: lane.package().to_string(),
                version: lane.version(),
                from_version: crashed,
                pid: lane.engine.worker_pid(),
                ms,
                state_bytes: now.as_ref().map(|n| n.bytes),
                state_hash: now.as_ref().map(|n| n.hash.clone()),
                checkpoint_hash: checkpoint.as_ref().map(|c| c.hash.clone()),
                state_matches: matches,
            },
            "restarted: {label} (the code of v{good_version}) serves in a new worker, {ms:.0} ms after the old one went down; {state}"
        );
        if matches == Some(false) {
            tracing::error!("the restarted engine's state does not match the checkpoint");
        }
    }
}

/// Marks `version` (`label`) crashed in `history` with `note`, adding its
/// record if its replay never got to make one.
fn record_down(
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
            ratios: Default::default(),
        }),
    }
}

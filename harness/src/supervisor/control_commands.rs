//! Applying the commands of keys and `kiln ctl` to the session: status,
//! replay, history, undo, bless, switch, quit. A command that changes the
//! served version or replays waits while a build of the served module is
//! under way (answered `queued` at once, then again once applied after the
//! swap); `status`, `history` and `quit` never wait.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::lane::Fresh;
use super::session::Session;
use crate::control::Request;
use crate::control::protocol::{Answer, Command};
use crate::events::{self, emit};
use crate::isolation::worker_client::WorkerError;
use kiln_stats::bytes;

/// Commands waiting for the build under way.
#[derive(Default)]
pub(super) struct ControlQueue {
    waiting: Vec<Request>,
    /// `quit` was applied: the loop ends.
    pub(super) quit: bool,
}

impl ControlQueue {
    /// A command arrived: apply it now, or queue it behind the build.
    pub(super) fn receive(&mut self, session: &mut Session, request: Request) {
        let waits = !matches!(
            request.command,
            Command::Status | Command::History | Command::Quit
        );
        if waits && let Some(why) = session.busy() {
            emit!(
                tracing::Level::INFO,
                events::ControlQueued {
                    module: session.own().module.package.clone(),
                    version: session.version(),
                    command: request.command.name().to_string(),
                },
                "{}: queued ({why})",
                request.describe()
            );
            request.answer(Answer::Queued { reason: why });
            self.waiting.push(request);
            return;
        }
        self.apply(session, request);
    }

    /// Applies the queued commands once nothing is being built.
    pub(super) fn apply_waiting(&mut self, session: &mut Session) {
        if self.waiting.is_empty() || session.busy().is_some() {
            return;
        }
        for request in std::mem::take(&mut self.waiting) {
            if session.stopping || self.quit {
                break; // dropped: their clients hear the session ended
            }
            self.apply(session, request);
        }
    }

    fn apply(&mut self, session: &mut Session, request: Request) {
        let answer = match &request.command {
            Command::Status => session.status_answer(),
            Command::History => {
                // `--backends`: each served backend's own history, in turn.
                let mut message = format!(
                    "history of {} ({})",
                    session.own().module.package,
                    session.own().history.versions_recorded()
                );
                let mut table = session.own().history.table();
                for other in &session.lanes[1..] {
                    message.push_str(&format!(
                        ", {} ({})",
                        other.module.package,
                        other.history.versions_recorded()
                    ));
                    table.push('\n');
                    table.push_str(&other.history.table());
                }
                Answer::Done {
                    message,
                    data: Some(json!({ "table": table })),
                }
            }
            Command::Replay => session.replay_command(),
            Command::Undo | Command::Bless { .. } | Command::Switch { .. }
                if session
                    .several_backends_refusal(request.command.name())
                    .is_some() =>
            {
                Answer::refused(
                    session
                        .several_backends_refusal(request.command.name())
                        .unwrap_or_default(),
                )
            }
            Command::Undo => session.undo(),
            Command::Bless { path } => session.bless(path.as_deref()),
            Command::Switch { backend } => match session.switch_backend(backend) {
                Ok(message) => Answer::done(message),
                Err(reason) => Answer::refused(reason),
            },
            Command::Quit => {
                self.quit = true;
                Answer::done(format!(
                    "kiln dev is stopping ({} served last), as on Ctrl-C",
                    session.label()
                ))
            }
        };
        let (outcome, detail) = match &answer {
            Answer::Done { message, .. } => ("done", message.as_str()),
            Answer::Refused { reason } => ("refused", reason.as_str()),
            Answer::Queued { reason } => ("queued", reason.as_str()),
        };
        emit!(
            tracing::Level::INFO,
            events::Control {
                module: Some(session.own().module.package.clone()),
                version: Some(session.version()),
                command: Some(request.command.name().to_string()),
                outcome: Some(outcome.to_string()),
                socket: None,
            },
            "{}: {outcome}: {}",
            request.describe(),
            detail.lines().next().unwrap_or_default()
        );
        request.answer(answer);
    }
}

impl Session {
    /// Why a command must wait now (`None`: it can be applied).
    pub(super) fn busy(&self) -> Option<String> {
        let building = self
            .lanes
            .iter()
            .find(|l| l.pending.is_some())
            .map(|l| l.package());
        building.map(|module| format!("a build of {module} is under way; applied after its swap"))
    }

    fn status_answer(&mut self) -> Answer {
        let state_hash = match self.lanes[0].engine.is_serving() {
            true => self.lanes[0].engine.state_hash().ok().map(|h| h.hash),
            false => None,
        };
        let last = self.lanes[0].history.versions.last();
        let undo_to = self
            .control
            .good
            .undo_target(
                &self.lanes[0].serving.module,
                &self.lanes[0].serving.version_hash,
            )
            .map(|g| g.label.clone());
        let data = json!({
            "kiln": env!("CARGO_PKG_VERSION"),
            "module": self.lanes[0].module.package,
            "backend": self.lanes[0].module.backend,
            "serving": self.label(),
            "version": self.version(),
            "worker_pid": self.lanes[0].engine.worker_pid(),
            "workload": self.lanes[0].history.workload,
            "verdict": last.map(|v| format!(
                "v{} {}{}",
                v.version,
                if v.passed { "passed" } else { "FAILED" },
                v.note.as_ref().map_or(String::new(), |n| format!(" ({n})"))
            )),
            "last_replay": self.control.last_replay.map(|(v, passed)| format!(
                "v{v} {}", if passed { "passed" } else { "FAILED" }
            )),
            "build": self.busy().unwrap_or_else(|| "none under way".into()),
            "tuning": self.tuning,
            "undo_to": undo_to,
            "good_versions": self.control.good.labels(),
            "state_hash": state_hash,
            "socket": self.control.socket.as_ref().map(|p| p.display().to_string()),
            // `--backends`: the backends served beside this one.
            "also_serving": self.lanes[1..].iter().map(|o| o.label()).collect::<Vec<_>>(),
        });
        let also: String = self.lanes[1..]
            .iter()
            .map(|o| format!(", and {}", o.label()))
            .collect();
        Answer::Done {
            message: format!(
                "{} serving {} ({} backend){also}",
                env!("CARGO_PKG_NAME"),
                self.label(),
                self.lanes[0].module.backend
            ),
            data: Some(data),
        }
    }

    fn replay_command(&mut self) -> Answer {
        if !self.replay {
            return Answer::refused("replays are off in this session (--no-replay)");
        }
        if !self.lanes[0].engine.is_serving() {
            return Answer::refused("no worker serves a version now");
        }
        let label = self.label();
        match self.recheck("requested") {
            Some(passed) => Answer::Done {
                message: format!(
                    "replayed {label}: {}",
                    if passed {
                        "passed"
                    } else {
                        "FAILED (the log has the failing call)"
                    }
                ),
                data: Some(json!({ "version": self.version(), "passed": passed })),
            },
            None => Answer::refused(format!("the replay of {label} did not run (see the log)")),
        }
    }

    /// Back to the previous good version, without a build, with the state.
    fn undo(&mut self) -> Answer {
        if !self.lanes[0].engine.is_serving() {
            return Answer::refused("no worker serves a version now");
        }
        let Some((target, dropped)) = self.control.good.take_undo_target(
            &self.lanes[0].serving.module,
            &self.lanes[0].serving.version_hash,
        ) else {
            return Answer::refused(format!(
                "no earlier good version to go back to ({} is the only one kept)",
                self.label()
            ));
        };
        let module = self.lanes[0].module.package.clone();
        let staged = match self
            .stage
            .stage_with(&module, &target.copy, target.files.clone())
        {
            Ok(s) => s,
            Err(e) => {
                let why = format!("cannot stage v{} again: {e}", target.version);
                self.control.good.put_back(target, dropped);
                return Answer::refused(why);
            }
        };
        let before = self.lanes[0].engine.state_hash().ok().map(|h| h.hash);
        let from = self.label();
        match self.lanes[0].engine.swap(&staged, false) {
            Ok(swap) => {
                self.lanes[0].serving = staged;
                let after = self.lanes[0].engine.state_hash().ok().map(|h| h.hash);
                emit!(
                    tracing::Level::WARN,
                    events::Undone {
                        module: module.to_string(),
                        version: self.version(),
                        code_of: target.version,
                        ms: swap.paused_ms,
                    },
                    "undo: {} now serves the code of v{} (was {from}), with the state ({})",
                    swap.to,
                    target.version,
                    bytes::human(swap.bytes as u64)
                );
                self.lanes[0].fresh = Some(Fresh {
                    build_ms: None,
                    swap_ms: Some(swap.paused_ms),
                    old_alive: false,
                });
                self.replay_all();
                if let Some(last) = self.lanes[0].history.versions.last_mut()
                    && last.note.is_none()
                {
                    last.note = Some(format!("undo: code of v{}", target.version));
                    self.save_history();
                }
                let passed = self.lanes[0].history.versions.last().map(|v| v.passed);
                let keep = self.lanes[0].last_good.as_ref().map(|g| g.copy.clone());
                for old in dropped {
                    if Some(&old.copy) != keep.as_ref() {
                        let _ = std::fs::remove_file(&old.copy);
                    }
                }
                Answer::Done {
                    message: format!(
                        "undo: {} serves the code of v{} ({}), with the state; replay {}",
                        self.label(),
                        target.version,
                        target.label,
                        match passed {
                            Some(true) => "passed",
                            Some(false) => "FAILED",
                            None => "did not run",
                        }
                    ),
                    data: Some(json!({
                        "from": from,
                        "serving": self.label(),
                        "version": self.version(),
                        "code_of": target.version,
                        "handoff_bytes": swap.bytes,
                        "state_hash_before": before,
                        "state_hash_after": after,
                        "passed": passed,
                    })),
                }
            }
            Err(e) => {
                self.stage.remove(&staged);
                let label = target.label.clone();
                self.control.good.put_back(target, dropped);
                match e {
                    WorkerError::Failed(why) => {
                        Answer::refused(format!("cannot swap {label} back in: {why}"))
                    }
                    other => {
                        let why = other.to_string();
                        self.lane_failed(0, other, "undo failed");
                        Answer::refused(format!("the undo did not finish: {why}"))
                    }
                }
            }
        }
    }

    /// The serving version's outputs (of its last replay) become the
    /// expected outputs, in `path` (default
    /// `target/kiln/workloads/NAME.kiln`); the previous file is kept as
    /// `FILE.prev`; the session replays the new file from now on.
    fn bless(&mut self, path: Option<&str>) -> Answer {
        if !self.lanes[0].engine.is_serving() {
            return Answer::refused("no worker serves a version now");
        }
        if !self.replay {
            return Answer::refused(
                "replays are off in this session (--no-replay): there are no outputs to bless",
            );
        }
        let workspace = self.stage.workspace_for(&self.lanes[0].serving.path);
        let path = match path {
            Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
            Some(p) => workspace.join(p),
            None => crate::workspace::target_dir(&workspace)
                .join("kiln")
                .join("workloads")
                .join(format!(
                    "{}.kiln",
                    file_name_of(&self.lanes[0].history.workload)
                )),
        };
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            return Answer::refused(format!("cannot create {}: {e}", dir.display()));
        }
        let prev = PathBuf::from(format!("{}.prev", path.display()));
        let had_previous = path.exists();
        if had_previous && let Err(e) = std::fs::rename(&path, &prev) {
            return Answer::refused(format!(
                "cannot keep the previous {} as {}: {e}",
                path.display(),
                prev.display()
            ));
        }
        let label = self.label();
        let description = match self.lanes[0].engine.bless(&path) {
            Ok(d) => d,
            Err(e) => {
                if had_previous {
                    let _ = std::fs::rename(&prev, &path);
                }
                if let WorkerError::Down(down) = e {
                    let why = down.describe();
                    self.went_down(0, *down, None, 0.0);
                    return Answer::refused(format!("the worker went down: {why}"));
                }
                return Answer::refused(format!("cannot bless {label}: {e}"));
            }
        };
        emit!(
            tracing::Level::INFO,
            events::Blessed {
                module: self.lanes[0].module.package.clone(),
                version: self.version(),
                path: path.display().to_string(),
            },
            "blessed {label}'s outputs as the expected outputs: {description}; written to {}{}; the session replays it from now on",
            path.display(),
            if had_previous {
                format!(" (the previous file kept as {})", prev.display())
            } else {
                String::new()
            }
        );
        let passed = self.recheck(&format!("against the blessed {}", path.display()));
        Answer::Done {
            message: format!(
                "blessed {label}: {} now holds its outputs as expected outputs{}; replayed: {}",
                path.display(),
                if had_previous {
                    format!(" (previous file kept as {})", prev.display())
                } else {
                    String::new()
                },
                match passed {
                    Some(true) => "passed",
                    Some(false) => "FAILED",
                    None => "did not run",
                }
            ),
            data: Some(json!({
                "path": path.display().to_string(),
                "previous": had_previous.then(|| prev.display().to_string()),
                "workload": description,
                "passed": passed,
            })),
        }
    }
}

/// A workload name as a file name (no separators).
fn file_name_of(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "session".into()
    } else {
        clean
    }
}

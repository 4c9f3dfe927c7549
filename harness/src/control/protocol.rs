//! What `kiln ctl` (or any tool) and a running `kiln dev` say to each other
//! over the control socket: one JSON object per line. The client sends one
//! [`Command`]; the session answers with [`Answer`]s: `queued` (behind a
//! build) first when it cannot apply the command at once, then exactly one
//! final `done` or `refused`.

use serde::{Deserialize, Serialize};

/// A command to the session (from the socket or a key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Version, backend, module, last verdict, what waits.
    Status,
    /// Replay the workload on the serving version now.
    Replay,
    /// The session's versions as a table.
    History,
    /// Back to the previous good version, without a build, with the state.
    Undo,
    /// The serving version's outputs become the expected outputs, written
    /// to `path` (default under `target/kiln/workloads/`); the session then
    /// replays that file.
    Bless {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Serve another backend, with the state.
    Switch { backend: String },
    /// End the session as Ctrl-C does.
    Quit,
}

/// The command names, as `kiln ctl` and the socket take them.
pub const KNOWN: &[&str] = &[
    "status", "replay", "history", "undo", "bless", "switch", "quit",
];

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Replay => "replay",
            Command::History => "history",
            Command::Undo => "undo",
            Command::Bless { .. } => "bless",
            Command::Switch { .. } => "switch",
            Command::Quit => "quit",
        }
    }

    /// Parses `NAME [ARG]` as typed after `kiln ctl`.
    pub fn from_args(name: &str, args: &[String]) -> Result<Command, String> {
        let arg = args.first().cloned();
        let none = |c: Command| match args.len() {
            0 => Ok(c),
            _ => Err(format!(
                "`{name}` takes no argument (got {:?})",
                args.join(" ")
            )),
        };
        match name {
            "status" => none(Command::Status),
            "replay" => none(Command::Replay),
            "history" => none(Command::History),
            "undo" => none(Command::Undo),
            "quit" => none(Command::Quit),
            "bless" if args.len() <= 1 => Ok(Command::Bless { path: arg }),
            "switch" if args.len() == 1 => Ok(Command::Switch {
                backend: arg.unwrap_or_default(),
            }),
            "bless" => Err("`bless` takes at most one argument: the workload file to write".into()),
            "switch" => Err(
                "`switch` takes one argument: the backend (e.g. `kiln ctl switch vulkan`)".into(),
            ),
            other => Err(unknown(other)),
        }
    }

    /// Parses one line from the socket; a line that is no known command
    /// gets a reason naming the known ones.
    pub fn from_line(line: &str) -> Result<Command, String> {
        match serde_json::from_str::<Command>(line) {
            Ok(c) => Ok(c),
            Err(e) => {
                let name = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("command")?.as_str().map(str::to_string));
                match name {
                    Some(n) if !KNOWN.contains(&n.as_str()) => Err(unknown(&n)),
                    Some(n) => Err(format!("bad arguments for `{n}`: {e}")),
                    None => Err(format!(
                        "not a command: expected one JSON object per line like {{\"command\":\"status\"}} ({e})"
                    )),
                }
            }
        }
    }
}

fn unknown(name: &str) -> String {
    format!("unknown command {name:?}; known: {}", KNOWN.join(", "))
}

/// One answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// Applied; `data` holds what tools read (status fields, a table).
    Done {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    },
    /// Not applied, with why.
    Refused { reason: String },
    /// Waits (behind a build); answered again when applied.
    Queued { reason: String },
}

impl Answer {
    pub fn done(message: impl Into<String>) -> Answer {
        Answer::Done {
            message: message.into(),
            data: None,
        }
    }

    pub fn refused(reason: impl Into<String>) -> Answer {
        Answer::Refused {
            reason: reason.into(),
        }
    }

    /// `done` and `refused` end a command; `queued` does not.
    pub fn is_final(&self) -> bool {
        !matches!(self, Answer::Queued { .. })
    }

    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"answer\":\"refused\",\"reason\":\"cannot encode the answer: {e}\"}}")
        });
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_as_json_lines() {
        for c in [
            Command::Status,
            Command::Bless { path: None },
            Command::Bless {
                path: Some("a.kiln".into()),
            },
            Command::Switch {
                backend: "vulkan".into(),
            },
        ] {
            let line = serde_json::to_string(&c).unwrap();
            assert_eq!(Command::from_line(&line).unwrap(), c, "{line}");
        }
        assert_eq!(
            serde_json::to_string(&Command::Switch {
                backend: "cpu".into()
            })
            .unwrap(),
            r#"{"command":"switch","backend":"cpu"}"#
        );
    }

    #[test]
    fn an_unknown_command_is_refused_with_the_known_ones() {
        let why = Command::from_line(r#"{"command":"frobnicate"}"#).unwrap_err();
        assert!(
            why.contains("\"frobnicate\"") && why.contains("status, replay"),
            "{why}"
        );
        let why = Command::from_args("frobnicate", &[]).unwrap_err();
        assert!(why.contains("known: status"), "{why}");
        let why = Command::from_line("status").unwrap_err();
        assert!(why.contains("one JSON object per line"), "{why}");
        let why = Command::from_line(r#"{"command":"switch"}"#).unwrap_err();
        assert!(why.starts_with("bad arguments for `switch`"), "{why}");
    }

    #[test]
    fn only_queued_is_not_final() {
        assert!(Answer::done("x").is_final());
        assert!(Answer::refused("x").is_final());
        assert!(!Answer::Queued { reason: "x".into() }.is_final());
    }
}

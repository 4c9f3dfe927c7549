//! A command on its way to the dev loop: where it came from (the socket or
//! a key) and where its answers go. Keys and the socket make them; the dev
//! loop answers them (`supervisor::control_commands`).

use crossbeam_channel::Sender;

use super::protocol::{Answer, Command};

/// Where a command came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `kiln ctl` or another tool on the socket.
    Socket,
    /// A key pressed on the session's terminal.
    Key(char),
}

/// A command on its way to the dev loop, with where its answers go.
#[derive(Debug)]
pub struct Request {
    pub command: Command,
    pub origin: Origin,
    /// The client's connection (`None` for keys: answers are logged).
    pub reply: Option<Sender<Answer>>,
}

impl Request {
    /// Sends `answer` to whoever asked (a key's answers go to the log).
    pub fn answer(&self, answer: Answer) {
        match &self.reply {
            Some(reply) => {
                let _ = reply.send(answer);
            }
            // A key's answer is in the log already (the `control` event);
            // a table (history) is printed below it.
            None => {
                if let Answer::Done {
                    data: Some(data), ..
                } = &answer
                    && let Some(table) = data.get("table").and_then(|t| t.as_str())
                {
                    for line in table.lines() {
                        tracing::info!(target: "kiln::table", "{line}");
                    }
                }
            }
        }
    }

    /// `kiln ctl replay` or `key r`, for the log.
    pub fn describe(&self) -> String {
        match self.origin {
            Origin::Socket => format!("kiln ctl {}", self.command.name()),
            Origin::Key(k) => format!("key {k} ({})", self.command.name()),
        }
    }
}

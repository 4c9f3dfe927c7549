//! Driving a running `kiln dev` session: the same commands from keys on a
//! terminal and from tools over a Unix socket (`kiln ctl`).
//!
//! - [`protocol`]: the commands and answers, as JSON lines
//! - [`socket`]: the socket's path, the one-session-per-workspace lock,
//!   the server thread (peer uid checked with `SO_PEERCRED`)
//! - [`keys`]: single keys on a TTY, and the terminal restored on every
//!   way out
//! - [`client`]: `kiln ctl COMMAND`
//!
//! Both sources send [`Request`]s on one channel; the dev loop applies
//! them between builds (`supervisor::control_commands`).

pub mod client;
pub mod keys;
pub mod protocol;
pub mod socket;

use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender};

use protocol::{Answer, Command};

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

/// A session's control: the socket server, the keys (on a TTY), and the
/// channel both feed.
pub struct Control {
    requests: Receiver<Request>,
    server: socket::ControlServer,
    keys: Option<keys::Keys>,
}

impl Control {
    /// Locks the workspace for this session (refusing if another holds
    /// it), serves the socket, and turns keys on if `keys` and standard
    /// input is a terminal.
    pub fn start(workspace: &Path, keys: bool) -> Result<Control, String> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let server = socket::serve(workspace, tx.clone())?;
        tracing::info!(
            event = "control",
            socket = %server.socket().display(),
            "drive this session with `kiln ctl status|replay|history|undo|bless|switch|quit` (socket {})",
            server.socket().display()
        );
        let keys = if keys { keys::start(tx) } else { None };
        Ok(Control {
            requests: rx,
            server,
            keys,
        })
    }

    pub fn requests(&self) -> &Receiver<Request> {
        &self.requests
    }

    pub fn socket(&self) -> PathBuf {
        self.server.socket().to_path_buf()
    }

    pub fn keys_on(&self) -> bool {
        self.keys.is_some()
    }
}

//! Driving a running `kiln dev` session: the same commands from keys on a
//! terminal and from tools over a Unix socket (`kiln ctl`).
//!
//! - [`protocol`]: the commands and answers, as JSON lines
//! - [`socket`]: the socket's path, the one-session-per-workspace lock,
//!   the server thread (peer uid checked with `SO_PEERCRED`)
//! - [`keys`]: single keys on a TTY, and the terminal restored on every
//!   way out
//! - [`client`]: `kiln ctl COMMAND`
//! - [`request`]: a command with where it came from and where its answers go
//!
//! Both sources send [`Request`]s on one channel; the dev loop applies
//! them between builds (`supervisor::control_commands`).

pub mod client;
pub mod keys;
pub mod protocol;
pub mod request;
pub mod socket;

use std::path::{Path, PathBuf};

use crate::events::{self, emit};
use crossbeam_channel::Receiver;

pub use request::{Origin, Request};

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
        emit!(
            tracing::Level::INFO,
            events::Control {
                module: None,
                version: None,
                command: None,
                outcome: None,
                socket: Some(server.socket().display().to_string()),
            },
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

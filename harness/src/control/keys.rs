//! Keys on a terminal: when `kiln dev`'s standard input is a TTY, single
//! key presses become the same [`Command`]s the socket takes, on the same
//! channel. The terminal goes to non-canonical, no-echo input only (output
//! processing and signals stay as they are: the log keeps scrolling with
//! `\n`, Ctrl-C still sends SIGINT) and is restored on every way out: the
//! guard's drop (normal end, Ctrl-C, an error return) and a panic hook (a
//! panic of the supervisor, before unwinding or if it aborts).

use std::io::Read;
use std::sync::{Mutex, Once};

use crossbeam_channel::Sender;
use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

use super::protocol::Command;
use super::request::{Origin, Request};
use crate::events::{self, emit};

/// The key line, shown at start and on `?`.
pub const KEY_LINE: &str =
    "keys: r replay now | s switch backend | u undo | b bless | h history | q quit | ? these keys";

/// The terminal settings to put back (set while keys are on).
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static HOOK: Once = Once::new();

/// Restores the terminal if keys changed it (idempotent).
pub fn restore_terminal() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &saved);
    }
}

/// Keys are on while this lives; dropping it restores the terminal.
pub struct Keys {
    _private: (),
}

impl Drop for Keys {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// The command a key stands for (`None`: not a command key).
pub fn command_of(key: u8) -> Option<Command> {
    Some(match key {
        b'r' => Command::Replay,
        // An empty backend: let the session pick the next one it can run.
        b's' => Command::Switch {
            backend: String::new(),
        },
        b'u' => Command::Undo,
        b'b' => Command::Bless { path: None },
        b'h' => Command::History,
        b'q' => Command::Quit,
        _ => return None,
    })
}

/// Turns keys on if standard input is a terminal: non-canonical no-echo
/// input, a reader thread sending commands on `requests`, the key line
/// logged. `None` when standard input is not a terminal (or cannot be set).
pub fn start(requests: Sender<Request>) -> Option<Keys> {
    let stdin = std::io::stdin();
    if !termios::isatty(&stdin) {
        return None;
    }
    let saved = match termios::tcgetattr(&stdin) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("keys are off: cannot read the terminal's settings: {e}");
            return None;
        }
    };
    let mut keyed = saved.clone();
    keyed.local_modes -= LocalModes::ICANON | LocalModes::ECHO;
    keyed.special_codes[SpecialCodeIndex::VMIN] = 1;
    keyed.special_codes[SpecialCodeIndex::VTIME] = 0;
    *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
    let keys = Keys { _private: () };
    if let Err(e) = termios::tcsetattr(&stdin, OptionalActions::Now, &keyed) {
        tracing::warn!("keys are off: cannot set the terminal: {e}");
        return None; // `keys` drops: the settings are put back
    }
    let spawned = std::thread::Builder::new()
        .name("kiln-keys".into())
        .spawn(move || read_keys(requests));
    if let Err(e) = spawned {
        tracing::warn!("keys are off: cannot start the key thread: {e}");
        return None;
    }
    emit!(tracing::Level::INFO, events::Keys {}, "{KEY_LINE}");
    Some(keys)
}

fn read_keys(requests: Sender<Request>) {
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut byte) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if byte[0] == b'?' {
            emit!(tracing::Level::INFO, events::Keys {}, "{KEY_LINE}");
            continue;
        }
        let Some(command) = command_of(byte[0]) else {
            continue;
        };
        let request = Request {
            command,
            origin: Origin::Key(byte[0] as char),
            reply: None,
        };
        if requests.send(request).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_key_is_a_command() {
        for key in [b'r', b's', b'u', b'b', b'h', b'q'] {
            let command = command_of(key).expect("a command key");
            assert!(
                KEY_LINE.contains(&format!("{} {}", key as char, "")),
                "{command:?}"
            );
        }
        assert_eq!(command_of(b'x'), None);
    }
}

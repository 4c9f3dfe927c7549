//! What both modes of the agent share (`agent.rs`: sync and commands;
//! `agent_dev.rs`: a `kiln dev` session): the messages that keep the
//! mirror and move files, replies, reading the next message, and the
//! environment its commands run in.

use std::io::{self, BufRead, Write};

use super::files;
use super::mirror::Mirror;
use super::protocol::{Message, ReadError, receive, send};

/// Sends the reply, if any; an error is sent and ends the agent (a blob
/// that did not arrive whole leaves the stream out of step).
pub(super) fn reply_or_stop(
    out: &mut impl Write,
    result: Result<Option<Message>, String>,
) -> Result<(), String> {
    match result {
        Ok(Some(reply)) => {
            answer(out, &reply).map_err(|e| format!("cannot write to the connection: {e}"))
        }
        Ok(None) => Ok(()),
        Err(message) => {
            let _ = answer(
                out,
                &Message::Error {
                    message: message.clone(),
                },
            );
            Err(message)
        }
    }
}

/// Sends a file of the mirror, or an error saying why it cannot.
pub(super) fn send_or_error(out: &mut impl Write, path: &std::path::Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => files::send_file(out, path),
        Ok(_) => answer(
            out,
            &Message::Error {
                message: format!("{} is not a file", path.display()),
            },
        ),
        Err(e) => answer(
            out,
            &Message::Error {
                message: format!("cannot read {}: {e}", path.display()),
            },
        ),
    }
}

/// What [`handle_files`] made of a message.
pub(super) enum Handled {
    /// A sync or file message: its reply (or an error).
    Reply(Result<Option<Message>, String>),
    /// A fetch: send this file.
    Send(std::path::PathBuf),
    /// Another message: the caller's.
    No(Message),
}

/// The messages that keep the mirror and move files, in and out of a
/// `kiln dev` session alike.
pub(super) fn handle_files(
    mirror: &mut Mirror,
    message: Message,
    input: &mut impl BufRead,
) -> Handled {
    let reply = match message {
        Message::Manifest { files } => mirror
            .want(files)
            .map(|hashes| Some(Message::Wanted { hashes })),
        Message::Patch { changed, deleted } => {
            let files = mirror.patched(changed, &deleted);
            mirror
                .want(files)
                .map(|hashes| Some(Message::Wanted { hashes }))
        }
        Message::Blob { hash, len } => mirror.receive(&hash, len, input).map(|()| None),
        Message::Commit => mirror
            .commit()
            .map(|(written, deleted)| Some(Message::Synced { written, deleted })),
        Message::Put { name, hash, len } => files::put(&mirror.session(), &name, &hash, len, input)
            .map(|path| {
                Some(Message::Stored {
                    path: path.display().to_string(),
                })
            }),
        Message::List { dir } => files::resolve(mirror.dir(), &dir).map(|dir| {
            Some(Message::Listing {
                files: files::list(&dir),
            })
        }),
        Message::Fetch { path } => {
            return match files::resolve(mirror.dir(), &path) {
                Ok(path) => Handled::Send(path),
                Err(e) => Handled::Reply(Ok(Some(Message::Error { message: e }))),
            };
        }
        other => return Handled::No(other),
    };
    Handled::Reply(reply)
}

/// The next message, or `None` at the end of the stream.
pub(super) fn next(input: &mut impl BufRead) -> Result<Option<Message>, String> {
    match receive(input) {
        Ok(message) => Ok(Some(message)),
        Err(ReadError::Closed) => Ok(None),
        Err(e) => Err(format!("reading the connection: {e}")),
    }
}

pub(super) fn answer(out: &mut impl Write, message: &Message) -> io::Result<()> {
    send(out, message)?;
    out.flush()
}

/// `PATH` with `~/.cargo/bin` added when it exists and is missing: a
/// non-interactive ssh login often reads no profile that would add it.
pub(super) fn path_with_cargo() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin"));
    match cargo_bin {
        Some(bin) if bin.is_dir() && !std::env::split_paths(&path).any(|p| p == bin) => {
            std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
                .unwrap_or(path)
        }
        _ => path,
    }
}

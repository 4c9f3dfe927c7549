//! `kiln ctl COMMAND [ARG]`: sends one command to the `kiln dev` session
//! of the workspace around the current directory, prints every answer,
//! and waits for the final one. Exit status: 0 done, 1 refused, 2 no
//! session (or no answer).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::protocol::{Answer, Command};
use super::socket::session_paths;

/// Exit status of `kiln ctl`.
pub const DONE: u8 = 0;
pub const REFUSED: u8 = 1;
pub const NO_SESSION: u8 = 2;

/// `kiln ctl`: the session of the workspace around the current directory.
pub fn main(name: &str, args: &[String], json: bool) -> u8 {
    let here = std::env::current_dir().unwrap_or_default();
    let Some(workspace) = crate::workspace::find_workspace_root(&here) else {
        eprintln!(
            "kiln ctl: {} is not inside a kiln workspace (no Cargo.toml with [workspace] and shared-state/ above it)",
            here.display()
        );
        return NO_SESSION;
    };
    // A relative file is the caller's: make it absolute before it travels.
    let args: Vec<String> = match name {
        "bless" => args
            .iter()
            .map(|a| std::path::absolute(a).map_or(a.clone(), |p| p.display().to_string()))
            .collect(),
        _ => args.to_vec(),
    };
    run(&workspace, name, &args, json)
}

/// Runs `kiln ctl` against `workspace`'s session; returns the exit status.
pub fn run(workspace: &Path, name: &str, args: &[String], json: bool) -> u8 {
    let command = match Command::from_args(name, args) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("kiln ctl: {why}");
            return REFUSED;
        }
    };
    let paths = session_paths(workspace);
    let outcome = exchange(workspace, &command, |line, answer| {
        if json {
            println!("{line}");
        } else {
            print_answer(answer);
        }
    });
    match outcome {
        Ok(Answer::Done { .. }) => DONE,
        Ok(_) => REFUSED,
        Err(Unanswered::NoSocket(why)) => {
            eprintln!(
                "kiln ctl: no kiln dev session is running in {} (tried {}: {why}); start one with `kiln dev`",
                workspace.display(),
                paths.socket.display()
            );
            NO_SESSION
        }
        Err(Unanswered::Other(why)) => {
            eprintln!("kiln ctl: {why}");
            NO_SESSION
        }
    }
}

/// Why a command got no final answer.
#[derive(Debug)]
pub enum Unanswered {
    /// No session listens on the workspace's socket (why).
    NoSocket(String),
    /// The session's answer could not be read, or it closed first.
    Other(String),
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unanswered::NoSocket(why) => write!(f, "no kiln dev session is running ({why})"),
            Unanswered::Other(why) => f.write_str(why),
        }
    }
}

/// Sends `command` to the session of `workspace` over its socket and
/// hands every answer (its line and itself) to `each` until the final one
/// (`done` or `refused`), which is returned. `kiln ctl` and the live page
/// (`kiln dev --ui`) both go through here.
pub fn exchange(
    workspace: &Path,
    command: &Command,
    each: impl FnMut(&str, &Answer),
) -> Result<Answer, Unanswered> {
    exchange_at(&session_paths(workspace).socket, command, each)
}

/// [`exchange`] with the session listening on `socket`.
pub fn exchange_at(
    socket: &Path,
    command: &Command,
    mut each: impl FnMut(&str, &Answer),
) -> Result<Answer, Unanswered> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        Unanswered::NoSocket(match e.kind() {
            std::io::ErrorKind::NotFound => "no such socket".to_string(),
            std::io::ErrorKind::ConnectionRefused => {
                "nothing listens there (a stale socket: its session is gone)".to_string()
            }
            _ => e.to_string(),
        })
    })?;
    let mut line = serde_json::to_string(command).expect("commands encode");
    line.push('\n');
    let sent = stream.write_all(line.as_bytes());
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let answer: Answer = serde_json::from_str(&line).map_err(|e| {
            Unanswered::Other(format!("cannot read the session's answer {line:?}: {e}"))
        })?;
        each(&line, &answer);
        if answer.is_final() {
            return Ok(answer);
        }
    }
    if let Err(e) = sent {
        return Err(Unanswered::Other(format!(
            "cannot send to {}: {e}",
            socket.display()
        )));
    }
    Err(Unanswered::Other(format!(
        "the session closed the connection without a final answer ({})",
        socket.display()
    )))
}

fn print_answer(answer: &Answer) {
    match answer {
        Answer::Done { message, data } => {
            println!("{message}");
            // A table (history) is printed as is; other data as fields.
            if let Some(table) = data.as_ref().and_then(|d| d.get("table")?.as_str()) {
                print!("{table}");
                if !table.ends_with('\n') {
                    println!();
                }
            } else if let Some(serde_json::Value::Object(fields)) = data {
                for (key, value) in fields {
                    match value {
                        serde_json::Value::String(s) => println!("  {key}: {s}"),
                        serde_json::Value::Null => println!("  {key}: -"),
                        other => println!("  {key}: {other}"),
                    }
                }
            }
        }
        Answer::Refused { reason } => println!("refused: {reason}"),
        Answer::Queued { reason } => println!("queued: {reason}"),
    }
    let _ = std::io::stdout().flush();
}

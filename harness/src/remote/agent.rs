//! `kiln agent --stdio`: the remote side of a connection, started by the
//! local kiln through ssh. It speaks the protocol on stdin and stdout
//! (nothing else may write to stdout: its own messages go to stderr, which
//! ssh carries back to the user's terminal) and ends at the end of stdin.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

use super::agent_dev;
use super::agent_io::{
    Handled, answer, handle_files, next, path_with_cargo, reply_or_stop, send_or_error,
};
use super::hangup;
use super::mirror::{Mirror, mirror_root};
use super::protocol::{Message, PROTOCOL, send};
use super::version;

/// Runs the agent on this process's stdin and stdout.
pub fn main() -> ExitCode {
    match serve(
        &mut BufReader::new(hangup::WatchedStdin),
        &mut BufWriter::new(io::stdout()),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kiln agent: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Answers requests until the stream ends.
pub fn serve(input: &mut impl BufRead, out: &mut (impl Write + Send)) -> Result<(), String> {
    let io_err = |e: io::Error| format!("cannot write to the connection: {e}");
    let own = version::reported_by_agent();
    send(
        out,
        &Message::Hello {
            version: own.clone(),
            protocol: PROTOCOL,
        },
    )
    .and_then(|()| out.flush())
    .map_err(io_err)?;
    match next(input)? {
        Some(Message::Hello { version, .. }) if version == own => {}
        Some(Message::Hello { version, .. }) => {
            let reason = format!("this agent is kiln {own}, the local side is kiln {version}");
            refuse(out, &reason).map_err(io_err)?;
            return Err(reason);
        }
        None => return Ok(()), // the local side saw the mismatch and left
        Some(other) => return Err(format!("expected a hello, got {other:?}")),
    }
    let mut mirror = match next(input)? {
        Some(Message::Open { workspace }) => {
            match mirror_root().and_then(|root| Mirror::open(&root, &workspace, Mirror::LOCK_WAIT))
            {
                Ok(mirror) => mirror,
                Err(reason) => {
                    refuse(out, &reason).map_err(io_err)?;
                    return Err(reason);
                }
            }
        }
        None => return Ok(()),
        Some(other) => return Err(format!("expected an open, got {other:?}")),
    };
    answer(
        out,
        &Message::Ready {
            mirror: mirror.dir().display().to_string(),
        },
    )
    .map_err(io_err)?;
    while let Some(message) = next(input)? {
        let message = match handle_files(&mut mirror, message, input) {
            Handled::Reply(result) => {
                reply_or_stop(out, result)?;
                continue;
            }
            Handled::Send(path) => {
                send_or_error(out, &path).map_err(io_err)?;
                continue;
            }
            Handled::No(message) => message,
        };
        let result = match message {
            Message::Dev {
                args,
                grace_s,
                env,
                fresh,
                state_sent,
            } => {
                let request = agent_dev::DevRequest {
                    args,
                    grace: std::time::Duration::from_secs(grace_s),
                    env,
                    fresh,
                    state_sent,
                };
                return agent_dev::run(mirror, input, out, request);
            }
            Message::Backends { names } => run_backends(&mirror, &names, out)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::ConnectionAborted => e.to_string(),
                    _ => io_err(e),
                })
                .map(|code| Some(Message::Exit { code })),
            other => Err(format!("unexpected message {other:?}")),
        };
        reply_or_stop(out, result)?;
    }
    Ok(())
}

fn refuse(out: &mut impl Write, reason: &str) -> io::Result<()> {
    answer(
        out,
        &Message::Refused {
            reason: reason.to_string(),
        },
    )
}

/// How often a running command checks that the local side is still there.
const HANGUP_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs `kiln backends NAMES` (this very binary) in the mirror, with the
/// mirror's target directory, sending its lines as they come; returns its
/// exit code. Stops it when the local side leaves (stdin hung up).
fn run_backends(mirror: &Mirror, names: &[String], out: &mut impl Write) -> io::Result<i32> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("backends")
        .args(names)
        .current_dir(mirror.tree())
        .env("CARGO_TARGET_DIR", mirror.target())
        .env("PATH", path_with_cargo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that stopping it stops its cargo and
        // rustc too.
        .process_group(0)
        .spawn()?;
    let (tx, rx) = crossbeam_channel::unbounded::<(&'static str, String)>();
    let readers: Vec<_> = [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn io::Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn io::Read + Send>),
        ),
    ]
    .into_iter()
    .filter_map(|(name, pipe)| pipe.map(|p| (name, p)))
    .map(|(name, pipe)| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send((name, line)).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    loop {
        match rx.recv_timeout(HANGUP_CHECK) {
            Ok((stream, line)) => {
                let sent = answer(
                    out,
                    &Message::Output {
                        stream: stream.to_string(),
                        line,
                    },
                );
                if let Err(e) = sent {
                    // The local side is gone (a write fails before the
                    // hang-up check sees it): the command must not go on
                    // building in the mirror under the next agent.
                    stop_group(&mut child);
                    return Err(e);
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if hangup::stdin_hung_up() {
                    // The session ended mid-command: stop it and leave
                    // (under Slurm, the job step and allocation end).
                    stop_group(&mut child);
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the local side left while `kiln backends` ran; stopped it",
                    ));
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait()?;
    Ok(status.code().unwrap_or(128))
}

/// Kills the process group `child` leads (its cargo and rustc with it) and
/// reaps it.
fn stop_group(child: &mut std::process::Child) {
    // SAFETY: kill() on the process group our child leads (spawned with
    // process_group(0)); the child is not reaped yet, so its pid, and the
    // group's id, are still its own.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
}

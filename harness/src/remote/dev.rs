//! `kiln dev --on DEST`: the session runs on DEST (the agent starts `kiln
//! dev` in the mirror, see [`super::agent_dev`]); this side keeps what is
//! the user's: the watcher (a save sends the changed files only), the log
//! (the remote session's lines, printed as they come), `kiln ctl` and the
//! keys (relayed to the remote session's control socket), and at the end
//! the history (fetched, so `kiln report` works here) and, with `--state
//! FILE`, the state file. Nothing of kiln listens on a network port.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use kiln_stats::bytes;
use notify::{RecursiveMode, Watcher};

use super::protocol::{Message, ReadError, receive};
use super::session::Session;
use super::ssh::SshTarget;
use crate::control::protocol::Answer;
use crate::control::{Control, Request};

/// The default grace period: how long a remote session outlives a lost
/// connection, waiting to be reattached.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// What `kiln dev --on DEST` was asked for.
pub struct RemoteDev {
    pub target: SshTarget,
    /// The local workspace.
    pub root: PathBuf,
    /// The remote `kiln dev`'s arguments (see [`remote_args`]).
    pub args: Vec<String>,
    /// `--workload FILE` outside the mirrored files: sent along.
    pub workload: Option<PathBuf>,
    /// `--state FILE`: sent at the start (if it exists), fetched at the end.
    pub state: Option<PathBuf>,
    pub grace: Duration,
    pub fresh: bool,
    pub debounce: Duration,
}

/// The remote `kiln dev`'s arguments for these options (`--state` and the
/// workload are the agent's and [`RemoteDev`]'s business); the workload
/// to send along, if it is not a mirrored file of the workspace.
pub fn remote_args(
    options: &crate::supervisor::DevOptions,
    worker_memory: Option<&str>,
    root: &Path,
) -> Result<(Vec<String>, Option<PathBuf>), String> {
    use crate::logging::LogFormat;
    use crate::supervisor::OnFail;
    if options.record.is_some() {
        return Err("--record with --on: not supported yet (record on the remote machine with `kiln ctl bless`)".into());
    }
    let mut args: Vec<String> = vec![
        "--log-format".into(),
        match options.log_format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
        .into(),
    ];
    let mut backends = vec![options.backend.clone()];
    backends.extend(options.other_backends.iter().cloned());
    args.extend(["--backends".into(), backends.join(",")]);
    let mut upload = None;
    if let Some(workload) = &options.workload {
        let absolute = std::path::absolute(workload)
            .map_err(|e| format!("--workload {}: {e}", workload.display()))?;
        if !absolute.is_file() {
            return Err(format!("--workload {}: no such file", workload.display()));
        }
        let mirrored = absolute
            .strip_prefix(root)
            .ok()
            .filter(|rel| {
                super::manifest::file_set(root)
                    .iter()
                    .any(|f| f.as_path() == *rel)
            })
            .map(Path::to_path_buf);
        match mirrored {
            Some(rel) => args.extend(["--workload".into(), rel.display().to_string()]),
            None => upload = Some(absolute),
        }
    }
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            args.extend([format!("--{name}"), value]);
        }
    };
    flag("device", options.device.clone());
    flag("threads", Some(options.threads.to_string()));
    flag(
        "on-fail",
        Some(
            match options.on_fail {
                OnFail::Rollback => "rollback",
                OnFail::Keep => "keep",
            }
            .into(),
        ),
    );
    flag(
        "debounce-ms",
        Some(options.debounce.as_millis().to_string()),
    );
    flag(
        "call-timeout",
        options.call_timeout.map(|t| t.as_secs_f64().to_string()),
    );
    flag("worker-memory", worker_memory.map(str::to_string));
    flag("reference", options.reference.clone());
    for (on, name) in [
        (!options.replay, "--no-replay"),
        (options.fresh, "--fresh"),
        (options.cold, "--cold"),
        (!options.tune, "--no-tune"),
    ] {
        if on {
            args.push(name.into());
        }
    }
    Ok((args, upload))
}

/// What the reader thread saw end the session.
enum End {
    /// The remote session ended; its state file, if saved; its exit code
    /// if known.
    Ended(Option<String>, Option<i32>),
    /// The connection was lost (why).
    Lost(String),
    /// A second Ctrl-C: this side leaves without waiting for the end.
    Interrupted,
}

/// The `kiln ctl` commands waiting for answers, by id.
type Pending = Arc<Mutex<HashMap<u64, Sender<Answer>>>>;

/// Runs the session until Ctrl-C (`interrupt`), its end on the remote
/// (`kiln ctl quit`, a key), or a lost connection.
pub fn main(dev: RemoteDev, interrupt: Receiver<()>) -> Result<(), String> {
    let destination = dev.target.destination.clone();
    // The local socket first: a second session of this workspace is
    // refused before anything starts on DEST.
    let control = Control::start(&dev.root, true)?;
    let mut session = Session::connect(&dev.target, &dev.root)?;
    let report = session.sync(&dev.root)?;
    eprintln!(
        "kiln: mirrored {} files ({}) to {destination}:{}: sent {} file(s), {} in all",
        report.files,
        bytes::human(report.total_bytes),
        session.mirror,
        report.sent_paths.len(),
        bytes::human(session.wire_bytes()),
    );
    let mut args = dev.args.clone();
    if let Some(workload) = &dev.workload {
        let path = session.put(workload, "workload.kiln")?;
        args.extend(["--workload".into(), path]);
    }
    // Sent under another name: the agent restores it only at a start, and
    // only when the remote holds no newer state of its own.
    let mut state_sent = None;
    if let Some(state) = dev.state.as_deref().filter(|s| s.is_file()) {
        eprintln!("kiln: sending the state file {}", state.display());
        let mtime = std::fs::metadata(state)
            .and_then(|m| m.modified())
            .map_err(|e| format!("cannot read {}: {e}", state.display()))?;
        session.put(state, super::agent_dev::STATE_SENT_NAME)?;
        state_sent = Some(
            mtime
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        );
    }
    let env = super::agent_dev::PASSED_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    session.post(&Message::Dev {
        args,
        grace_s: dev.grace.as_secs(),
        env,
        fresh: dev.fresh,
        state_sent,
    })?;
    let job = match session.receive()? {
        Message::DevStarted {
            pid,
            reattached,
            state,
            log,
            job,
            notes,
        } => {
            for note in notes {
                eprintln!("kiln: on {destination}: {note}");
            }
            let how = match reattached {
                true => "reattached to the session running",
                false => "started the session",
            };
            eprintln!(
                "kiln: {how} on {destination} (pid {pid}; its log {log}, its state file {state}); \
                 Ctrl-C ends it"
            );
            job
        }
        other => return Err(session.unexpected(other)),
    };

    // From here the reader thread holds the input.
    let pending: Pending = Arc::default();
    let (replies_tx, replies_rx) = crossbeam_channel::unbounded();
    let (end_tx, end_rx) = crossbeam_channel::bounded(1);
    let input = session.take_input(replies_rx);
    let reader = {
        let pending = pending.clone();
        std::thread::spawn(move || read_loop(input, replies_tx, end_tx, pending))
    };
    let session = Arc::new(Mutex::new(session));
    let relaying = Arc::new(AtomicBool::new(true));
    let relay = {
        let (session, pending, requests, relaying) = (
            session.clone(),
            pending.clone(),
            control.requests().clone(),
            relaying.clone(),
        );
        std::thread::spawn(move || relay_requests(&session, &pending, &requests, &relaying))
    };
    let (changes_tx, changes_rx) = crossbeam_channel::unbounded();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = changes_tx.send(event.paths);
        }
    })
    .and_then(|mut watcher| {
        watcher
            .watch(&dev.root, RecursiveMode::Recursive)
            .map(|()| watcher)
    });
    let watcher = match watcher {
        Ok(watcher) => watcher,
        Err(e) => {
            // The remote session is told to stop rather than left running.
            let stopped = lock(&session).post(&Message::Stop);
            let there = match stopped {
                Ok(()) => "the session there was told to stop and saves its state".to_string(),
                Err(_) => format!(
                    "the session there keeps running for {}",
                    human_duration(dev.grace)
                ),
            };
            return Err(format!("cannot watch {}: {e}; {there}", dev.root.display()));
        }
    };
    let ignored = [dev.root.join("target"), dev.root.join(".git")];
    let mut stopping: Option<Instant> = None;
    let end = loop {
        select! {
            recv(changes_rx) -> paths => {
                let Ok(paths) = paths else { continue };
                if paths.iter().all(|p| ignored.iter().any(|i| p.starts_with(i))) {
                    continue;
                }
                // Quiet for the debounce period: one sync per save burst.
                while changes_rx.recv_timeout(dev.debounce).is_ok() {}
                let mut session = lock(&session);
                let before = session.wire_bytes();
                match session.sync_changes(&dev.root) {
                    Ok(Some(report)) => {
                        let wire = session.wire_bytes() - before;
                        eprintln!(
                            "kiln: sent {} to {destination}: {} file(s), {} of contents, {} on \
                             the wire ({wire} bytes)",
                            report.sent_paths.join(", "),
                            report.sent_paths.len(),
                            bytes::human(report.sent_bytes),
                            bytes::human(wire),
                        )
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("kiln: syncing to {destination}: {e}"),
                }
            }
            recv(interrupt) -> _ => {
                if stopping.is_some() {
                    // A second Ctrl-C: leave now; the session there was
                    // told to stop and ends on its own.
                    break End::Interrupted;
                }
                eprintln!("kiln: stopping the session on {destination}");
                stopping = Some(Instant::now());
                if let Err(e) = lock(&session).post(&Message::Stop) {
                    break End::Lost(e);
                }
            }
            recv(end_rx) -> end => break end.unwrap_or(End::Lost("the reader stopped".into())),
        }
    };
    drop(watcher);
    relaying.store(false, Ordering::SeqCst);
    let _ = relay.join();
    drop(control);
    let mut session = Arc::try_unwrap(session)
        .ok()
        .expect("the relay thread has ended")
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let input = reader.join().map_err(|_| "the reader thread panicked")?;
    match end {
        End::Interrupted => {
            session.cut();
            Err(format!(
                "stopping: the remote session on {destination} was told to stop and saves its \
                 state there (interrupted twice: not waiting for it)"
            ))
        }
        End::Lost(why) => {
            session.cut();
            let again = match &job {
                Some(id) => format!(
                    "`kiln dev --on {destination} --launcher \"srun --jobid={id} --overlap -u\"` \
                     (Slurm job {id}, the allocation kept while the session waits)"
                ),
                None => format!("the same `kiln dev --on {destination}` again"),
            };
            Err(format!(
                "the connection to {destination} was lost ({why}); the session keeps running there \
                 for {} with its worker and state; to reattach, run {again}",
                human_duration(dev.grace)
            ))
        }
        End::Ended(state, code) => {
            session.restore_input(input);
            if let Some(at) = stopping {
                eprintln!(
                    "kiln: the session on {destination} ended {:.1} s after the interrupt",
                    at.elapsed().as_secs_f64()
                );
            }
            fetch_history(&mut session, &dev.root);
            match (&state, &dev.state) {
                (Some(remote), Some(local)) => {
                    eprintln!("kiln: the state is on {destination} at {remote}; fetching it");
                    let rel = format!("session/{}", super::agent_dev::STATE_NAME);
                    let label = format!("fetching the state into {}", local.display());
                    let len = session.fetch(&rel, local, Some(&label))?;
                    eprintln!(
                        "kiln: state saved to {} ({})",
                        local.display(),
                        bytes::human(len)
                    );
                }
                (Some(remote), None) => eprintln!(
                    "kiln: the state is on {destination} at {remote} (restored when `kiln dev --on \
                     {destination}` starts again; `--state FILE` fetches it)"
                ),
                (None, _) => eprintln!("kiln: the session on {destination} saved no state"),
            }
            session.close();
            match code {
                Some(0) | None => Ok(()),
                Some(code) => Err(format!(
                    "`kiln dev` on {destination} exited with code {code} (its messages are above)"
                )),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the agent's messages: log lines are printed, `kiln ctl` answers
/// handed to whoever waits, other answers to the session's requests; ends
/// (handing the input back) at [`Message::DevEnded`] or the end of the
/// stream.
fn read_loop(
    mut input: BufReader<Box<dyn Read + Send>>,
    replies: Sender<Message>,
    end: Sender<End>,
    pending: Pending,
) -> BufReader<Box<dyn Read + Send>> {
    loop {
        match receive(&mut input) {
            Ok(Message::Output { stream, line }) => match stream.as_str() {
                "stdout" => println!("{line}"),
                _ => eprintln!("{line}"),
            },
            Ok(Message::CtlAnswer { id, line }) => {
                let answer = serde_json::from_str::<Answer>(&line).unwrap_or_else(|e| {
                    Answer::refused(format!("unreadable answer {line:?}: {e}"))
                });
                let mut pending = lock(&pending);
                let last = answer.is_final();
                if let Some(reply) = pending.get(&id) {
                    let _ = reply.send(answer);
                }
                if last {
                    pending.remove(&id);
                }
            }
            Ok(Message::DevEnded { state, code }) => {
                let _ = end.send(End::Ended(state, code));
                return input;
            }
            Ok(other) => {
                let _ = replies.send(other);
            }
            Err(ReadError::Closed) => {
                let _ = end.send(End::Lost("the stream closed".into()));
                return input;
            }
            Err(e) => {
                let _ = end.send(End::Lost(e.to_string()));
                return input;
            }
        }
    }
}

/// Relays the local `kiln ctl` commands and keys to the remote session, and
/// sends a heartbeat every [`super::protocol::HEARTBEAT`].
fn relay_requests(
    session: &Mutex<Session>,
    pending: &Pending,
    requests: &Receiver<Request>,
    relaying: &AtomicBool,
) {
    let mut id = 0u64;
    let mut beat = Instant::now();
    while relaying.load(Ordering::SeqCst) {
        if beat.elapsed() >= super::protocol::HEARTBEAT {
            // A failed write: the reader sees the end of the stream.
            let _ = lock(session).post(&Message::Heartbeat);
            beat = Instant::now();
        }
        let Ok(request) = requests.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        id += 1;
        // A key's answers are printed (as the session would log them).
        let reply = request.reply.clone().unwrap_or_else(|| {
            let (tx, rx) = crossbeam_channel::unbounded::<Answer>();
            std::thread::spawn(move || {
                for answer in rx {
                    print!("{}", answer.to_line());
                }
            });
            tx
        });
        lock(pending).insert(id, reply.clone());
        let line = serde_json::to_string(&request.command).expect("commands encode");
        if let Err(e) = lock(session).post(&Message::Ctl { id, line }) {
            lock(pending).remove(&id);
            let _ = reply.send(Answer::refused(e));
        }
    }
}

/// Fetches the remote session's history files into this workspace's
/// `target/kiln/history/` (where `kiln report` reads them).
fn fetch_history(session: &mut Session, root: &Path) {
    let remote = "target/kiln/history";
    let local = crate::workspace::target_dir(root).join("kiln/history");
    let names: Vec<String> = match session.list(remote) {
        // The current histories only: the remote's earlier sessions
        // (`MODULE.session-NNNN.json`) would overwrite this side's.
        Ok(names) => names
            .into_iter()
            .filter(|n| !n.contains(".session-"))
            .collect(),
        Err(e) => {
            eprintln!("kiln: cannot list the remote history: {e}");
            return;
        }
    };
    for name in &names {
        let to = local.join(name);
        // The history here (an earlier session's) is kept aside, as a local
        // session does, not overwritten.
        match crate::history::keep_earlier(&to) {
            Ok(Some(kept)) => eprintln!("kiln: the history here is kept in {}", kept.display()),
            Ok(None) => {}
            Err(e) => {
                eprintln!(
                    "kiln: cannot keep the history {} aside ({e}); not fetching {name}",
                    to.display()
                );
                continue;
            }
        }
        if let Err(e) = session.fetch(&format!("{remote}/{name}"), &to, None) {
            eprintln!("kiln: cannot fetch the history file {name}: {e}");
        }
    }
    if !names.is_empty() {
        eprintln!(
            "kiln: fetched the session's history ({} file(s)) into {}: `kiln report` shows it",
            names.len(),
            local.display()
        );
    }
}

fn human_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

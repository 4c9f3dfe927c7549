//! The agent's side of `kiln dev --on DEST`: it starts `kiln dev` (this
//! same binary) in the mirror, detached from the connection, so that the
//! whole supervisor (build, stage, workers, checkpoints, crash and hang
//! restarts, rollback) runs there unchanged; or reattaches to the one
//! running there. Then, until the connection ends, it
//!
//! - follows the session's log files and sends their lines;
//! - keeps the mirror in step with the local saves (the session's own
//!   watcher sees the files renamed into the tree and rebuilds);
//! - relays `kiln ctl` commands to the session's control socket;
//! - interrupts the session on [`Message::Stop`], as Ctrl-C would.
//!
//! The session's files lie in the mirror's `session/` folder: `stdout.log`
//! and `stderr.log`, `pid` (pid and start time, so a reused pid is not
//! taken for it), `state.kiln` (its `--state`: restored at start, saved at
//! the end), and `attached.lock`, held by the agent the local side talks
//! to. When the connection drops while the session runs, the agent stays
//! as its keeper until the session ends; if the grace period passes with
//! no other agent attached (none took that lock), it interrupts the
//! session, which saves its state file, and leaves.

use std::fs::{self, File};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::agent_io::{Handled, answer, handle_files, next, path_with_cargo, send_or_error};
use super::mirror::Mirror;
use super::protocol::Message;
use crate::control::client::exchange_at;
use crate::control::protocol::{Answer, Command as CtlCommand};
use crate::control::socket::session_paths_in;

/// What the local side asked for.
pub struct DevRequest {
    /// `kiln dev`'s arguments (`--log-format` among them).
    pub args: Vec<String>,
    /// How long the session outlives a lost connection.
    pub grace: Duration,
    /// Variables for the session (only [`PASSED_ENV`] are taken).
    pub env: Vec<(String, String)>,
    /// `--fresh`: a state file left by an earlier session is not restored.
    pub fresh: bool,
    /// The local `--state FILE` was sent (as [`STATE_SENT_NAME`]), with
    /// its modification time (ms after the epoch).
    pub state_sent: Option<u64>,
}

/// The variables the local side may set for the remote session.
pub const PASSED_ENV: &[&str] = &["RUST_LOG", "RUST_BACKTRACE"];

/// The session's state file, in `session/`.
pub const STATE_NAME: &str = "state.kiln";
/// The local `--state FILE` as sent, in `session/`: it becomes
/// [`STATE_NAME`] at a start unless that is newer.
pub const STATE_SENT_NAME: &str = "state.sent.kiln";

/// How often the log files are read and the session checked (a log line
/// waits half of it on average before it travels).
const POLL: Duration = Duration::from_millis(10);
/// How long an interrupted session may take to save its state and exit.
const STOP_DEADLINE: Duration = Duration::from_secs(120);

/// The session's files in the mirror.
pub struct SessionFiles {
    dir: PathBuf,
}

impl SessionFiles {
    pub fn new(dir: PathBuf) -> SessionFiles {
        SessionFiles { dir }
    }

    pub fn stdout(&self) -> PathBuf {
        self.dir.join("stdout.log")
    }

    pub fn stderr(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE_NAME)
    }

    fn state_sent(&self) -> PathBuf {
        self.dir.join(STATE_SENT_NAME)
    }

    /// At a start: the sent `--state FILE` (if any) becomes the state file,
    /// unless the state file saved here is newer (a grace period that
    /// expired saved it after FILE was written): then that one stays, and
    /// the returned note says so.
    fn take_sent_state(&self, sent_mtime: Option<u64>, fresh: bool) -> Option<String> {
        let sent = self.state_sent();
        let sent_mtime = sent_mtime.filter(|_| sent.is_file())?;
        let state = self.state();
        let here = fs::metadata(&state)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        match here {
            Some(here) if !fresh && here > sent_mtime => {
                let _ = fs::remove_file(&sent);
                Some(format!(
                    "the state file here, {}, is newer than the one sent (--state FILE): \
                     restoring it, the one sent is not used",
                    state.display()
                ))
            }
            _ => match fs::rename(&sent, &state) {
                Ok(()) => None,
                Err(e) => Some(format!(
                    "cannot use the state file sent ({}): {e}",
                    sent.display()
                )),
            },
        }
    }

    fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }

    fn attached(&self) -> PathBuf {
        self.dir.join("attached.lock")
    }

    /// The running session recorded here, if its process still lives.
    pub fn running(&self) -> Option<Pid> {
        let text = fs::read_to_string(self.pid()).ok()?;
        let mut words = text.split_whitespace();
        let pid = Pid {
            pid: words.next()?.parse().ok()?,
            start: words.next()?.parse().ok()?,
        };
        pid.alive().then_some(pid)
    }

    /// Takes `attached.lock`, waiting up to [`Mirror::LOCK_WAIT`] for a
    /// keeper to see its successor and let go.
    fn attach(&self) -> Result<File, String> {
        let path = self.attached();
        let file =
            File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let since = Instant::now();
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(file),
                Err(rustix::io::Errno::WOULDBLOCK) if since.elapsed() < Mirror::LOCK_WAIT => {
                    std::thread::sleep(POLL);
                }
                Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
            }
        }
    }

    /// Whether another agent holds `attached.lock` (never blocks).
    fn someone_attached(&self) -> bool {
        let Ok(file) = File::open(self.attached()) else {
            return false;
        };
        matches!(
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        )
    }
}

/// A process named by pid and start time (clock ticks after boot, from
/// `/proc/PID/stat`), so that a pid reused by another process is not it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pid {
    pub pid: u32,
    start: u64,
}

impl Pid {
    fn of(pid: u32) -> Option<Pid> {
        let (_, start) = stat(pid)?;
        Some(Pid { pid, start })
    }

    /// Alive: there, the same process, neither a zombie nor dead.
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|(state, start)| start == self.start && !"ZXx".contains(state))
    }

    fn signal(&self, signal: i32) {
        if self.alive() {
            // SAFETY: kill(2) on the session's pid, checked just above to
            // be the same process (pid and start time) and alive; a valid
            // signal number.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }
}

/// `(state, start time)` from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold anything: the
    // fields after the last ')' are state (3) ... starttime (22).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The session the agent serves: its pid, and its `Child` when this agent
/// started it (to reap it).
struct Running {
    pid: Pid,
    child: Option<Child>,
    /// Its exit code, once this agent collected it.
    code: Option<i32>,
}

impl Running {
    fn alive(&mut self) -> bool {
        // Our own child: its exit status says (a look at /proc could see it
        // a zombie first and lose the exit code).
        if let Some(child) = &mut self.child {
            return match child.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    // Killed by a signal: 128 + its number, as a shell says.
                    self.code = status.code().or_else(|| {
                        std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s)
                    });
                    false
                }
                Err(_) => false,
            };
        }
        self.pid.alive()
    }
}

/// Starts `kiln dev ARGS --state session/state.kiln` in the mirror's tree,
/// its own process group, its output into the log files.
fn start(
    mirror: &Mirror,
    files: &SessionFiles,
    request: &DevRequest,
    notes: &mut Vec<String>,
) -> Result<Running, String> {
    notes.extend(files.take_sent_state(request.state_sent, request.fresh));
    if request.fresh {
        let _ = fs::remove_file(files.state());
    }
    let create = |path: &Path| {
        File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
    };
    let (stdout, stderr) = (create(&files.stdout())?, create(&files.stderr())?);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this kiln: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("dev")
        .args(&request.args)
        .arg("--state")
        .arg(files.state())
        .current_dir(mirror.tree())
        .env("CARGO_TARGET_DIR", mirror.target())
        .env("PATH", path_with_cargo())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group: a hang-up or interrupt meant for the
        // agent (sshd, srun) does not reach it; it outlives the connection.
        .process_group(0);
    // The agent that starts the session stays while it runs (attached, then
    // as its keeper); if that agent is killed (its Slurm step cancelled or
    // out of time, a kill -9), the session gets SIGTERM, saves its state
    // and ends, rather than living on untracked (an orphan escapes
    // proctrack/linuxproc).
    // The signal comes when the *thread* that forked ends: start() must
    // run on the agent's main thread, which lives as long as the agent.
    // The agent may die between the fork and the prctl: then the child was
    // already re-parented, and it refuses to start (getppid changed).
    let agent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl(2) and getppid(2), raw system calls that allocate nothing
    // and take no lock, and builds an io::Error from a raw code (no
    // allocation): async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != agent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    for (key, value) in &request.env {
        if PASSED_ENV.contains(&key.as_str()) {
            command.env(key, value);
        }
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start kiln dev in the mirror: {e}"))?;
    let pid = Pid::of(child.id()).ok_or("kiln dev exited as it started (its log is above)")?;
    let running = Running {
        pid,
        child: Some(child),
        code: None,
    };
    let record = files.pid();
    let staged = record.with_extension("stage");
    let recorded = fs::write(&staged, format!("{} {}\n", pid.pid, pid.start))
        .and_then(|()| fs::rename(&staged, &record));
    if let Err(e) = recorded {
        // Untracked, no agent could find it: stopped now (it saves its
        // state), as a keeper whose grace passed does.
        keep(running, files, Duration::ZERO);
        return Err(format!("cannot write {}: {e}", record.display()));
    }
    Ok(running)
}

/// What goes out on the connection, in order, from one writer thread.
enum Outgoing {
    Line(Message),
    File(PathBuf),
    Quit,
}

/// Serves a `kiln dev` session for the local side until the connection
/// ends; then, if the session still runs, keeps it for the grace period.
/// Runs on the agent's main thread (see [`start`]: the session's
/// parent-death signal is tied to the thread that spawned it).
pub fn run(
    mut mirror: Mirror,
    input: &mut impl BufRead,
    out: &mut (impl Write + Send),
    request: DevRequest,
) -> Result<(), String> {
    let files = SessionFiles::new(mirror.session());
    let attached = files.attach()?;
    let mut notes = Vec::new();
    let (running, reattached) = match files.running() {
        Some(pid) => {
            notes.push(
                "reattached: this start's arguments (--fresh among them) do not apply to the \
                 session running there; stop it to start with new ones"
                    .to_string(),
            );
            if request.state_sent.is_some() {
                let _ = fs::remove_file(files.state_sent());
                notes.push(
                    "the state file sent (--state FILE) is not used: the running session \
                     keeps its state"
                        .to_string(),
                );
            }
            let running = Running {
                pid,
                child: None,
                code: None,
            };
            (running, true)
        }
        None => (start(&mirror, &files, &request, &mut notes)?, false),
    };
    for note in &notes {
        eprintln!("kiln agent: {note}");
    }
    let from = |path: &Path| match reattached {
        true => fs::metadata(path).map_or(0, |m| m.len()),
        false => 0,
    };
    let logs = [
        ("stdout", files.stdout(), from(&files.stdout())),
        ("stderr", files.stderr(), from(&files.stderr())),
    ];
    let started = answer(
        out,
        &Message::DevStarted {
            pid: running.pid.pid,
            reattached,
            state: files.state().display().to_string(),
            log: files.stdout().display().to_string(),
            job: std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty()),
            notes,
        },
    );
    if let Err(e) = started {
        // The connection is gone already: keep the session as after any
        // lost connection (invariant 19).
        drop(mirror);
        drop(attached);
        detach_stdio();
        keep(running, &files, request.grace);
        return Err(format!("cannot write to the connection: {e}"));
    }
    // From here the local side sends heartbeats: silence means a lost
    // connection (the keeper then takes over).
    super::hangup::limit_stdin_silence(super::protocol::SILENCE_LIMIT);
    let socket = session_paths_in(&mirror.tree(), &mirror.target()).socket;
    let (tx, rx) = crossbeam_channel::unbounded::<Outgoing>();
    let stop_following = AtomicBool::new(false);
    let (result, running) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_loop(out, rx));
        let follower = {
            let (tx, stop, state) = (tx.clone(), &stop_following, files.state());
            scope.spawn(move || follow(logs, running, &tx, stop, &state))
        };
        let result = loop {
            let message = match next(input) {
                Ok(Some(message)) => message,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            // A blob or put that failed may leave its body unread: the
            // stream is out of step, the connection must end. Any other
            // error is answered and the agent serves on.
            let carries_body = matches!(message, Message::Blob { .. } | Message::Put { .. });
            match handle_files(&mut mirror, message, input) {
                Handled::Reply(Ok(Some(reply))) => {
                    let _ = tx.send(Outgoing::Line(reply));
                }
                Handled::Reply(Ok(None)) => {}
                Handled::Reply(Err(message)) => {
                    let _ = tx.send(Outgoing::Line(Message::Error {
                        message: message.clone(),
                    }));
                    if carries_body {
                        break Err(message);
                    }
                }
                Handled::Send(path) => {
                    let _ = tx.send(Outgoing::File(path));
                }
                Handled::No(Message::Ctl { id, line }) => relay(&socket, id, line, tx.clone()),
                Handled::No(Message::Heartbeat) => {}
                Handled::No(Message::Stop) => {
                    if let Some(pid) = files.running() {
                        pid.signal(libc::SIGINT);
                    }
                }
                Handled::No(other) => {
                    let _ = tx.send(Outgoing::Line(Message::Error {
                        message: format!("unexpected message in a dev session: {other:?}"),
                    }));
                }
            }
        };
        stop_following.store(true, Ordering::SeqCst);
        let running = follower.join().unwrap_or(None);
        let _ = tx.send(Outgoing::Quit);
        let _ = writer.join();
        (result, running)
    });
    drop(mirror);
    drop(attached);
    if let Some(running) = running {
        if let Err(why) = &result {
            eprintln!("kiln agent: {why}; keeping the session");
        }
        // The local side must see the connection end now (it may wait for
        // an answer), not when the keeper leaves.
        let _ = out.flush();
        detach_stdio();
        keep(running, &files, request.grace);
    }
    result
}

/// Points stdin, stdout and stderr at /dev/null: the connection's pipes
/// close (ssh and srun end the session's streams), the keeper goes on.
fn detach_stdio() {
    let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    for fd in 0..=2 {
        // SAFETY: dup2(2) onto the standard descriptors, from /dev/null,
        // open for the duration of the call; what read or wrote them
        // (the agent's stdin and stdout handles) now sees /dev/null.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
    }
}

/// Writes what comes until [`Outgoing::Quit`]; after a failed write (the
/// local side gone) it drops the rest.
fn write_loop(out: &mut impl Write, rx: Receiver<Outgoing>) {
    let mut broken = false;
    for outgoing in rx {
        let written = match outgoing {
            Outgoing::Quit => return,
            _ if broken => continue,
            Outgoing::Line(message) => answer(out, &message),
            Outgoing::File(path) => send_or_error(out, &path),
        };
        broken = written.is_err();
    }
}

/// One log file being followed: what was read past the last full line.
struct Follower {
    stream: &'static str,
    file: Option<File>,
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Sends every full line written since the last call.
    fn poll(&mut self, tx: &Sender<Outgoing>) {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
            if let Some(file) = &mut self.file {
                let _ = file.seek(SeekFrom::Start(self.offset));
            }
        }
        let Some(file) = &mut self.file else { return };
        let mut fresh = Vec::new();
        if file.read_to_end(&mut fresh).is_err() {
            return;
        }
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let _ = tx.send(Outgoing::Line(Message::Output {
                stream: self.stream.to_string(),
                line,
            }));
        }
    }
}

/// Follows the log files until the session ends (then sends the last
/// lines and [`Message::DevEnded`]; returns `None`) or `stop` is set
/// (returns the session, still running).
fn follow(
    logs: [(&'static str, PathBuf, u64); 2],
    mut running: Running,
    tx: &Sender<Outgoing>,
    stop: &AtomicBool,
    state: &Path,
) -> Option<Running> {
    let mut followers = logs.map(|(stream, path, offset)| Follower {
        stream,
        file: None,
        path,
        offset,
        partial: Vec::new(),
    });
    loop {
        let alive = running.alive();
        for follower in &mut followers {
            follower.poll(tx);
        }
        if !alive {
            let _ = tx.send(Outgoing::Line(Message::DevEnded {
                state: state.is_file().then(|| state.display().to_string()),
                code: running.code,
            }));
            return None;
        }
        if stop.load(Ordering::SeqCst) {
            return Some(running);
        }
        std::thread::sleep(POLL);
    }
}

/// Relays one `kiln ctl` command to the session's socket, on a thread of
/// its own (a replay may take a while), each answer as it comes.
fn relay(socket: &Path, id: u64, line: String, tx: Sender<Outgoing>) {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let send = |line: &str| {
            let _ = tx.send(Outgoing::Line(Message::CtlAnswer {
                id,
                line: line.trim_end().to_string(),
            }));
        };
        let command = match CtlCommand::from_line(&line) {
            Ok(command) => command,
            Err(why) => return send(&Answer::refused(why).to_line()),
        };
        if let Err(e) = exchange_at(&socket, &command, |line, _| send(line)) {
            send(&Answer::refused(format!("the remote session: {e}")).to_line());
        }
    });
}

/// After the connection dropped: keeps the session until it ends, or
/// until `grace` passes with no other agent attached (then interrupts it:
/// it saves its state file and exits). Once another agent attached, the
/// keeper stays until the session ends: under Slurm the session belongs to
/// the keeper's job step, and the allocation to the srun that started it,
/// so leaving earlier would end both.
fn keep(mut running: Running, files: &SessionFiles, grace: Duration) {
    // SAFETY: signal(2) setting SIGHUP to be ignored: no handler runs, no
    // memory is touched; the keeper must not end with its sshd session.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let since = Instant::now();
    while since.elapsed() < grace {
        if !running.alive() {
            linger_while_attached(files, grace);
            return;
        }
        if files.someone_attached() {
            while running.alive() {
                std::thread::sleep(Duration::from_millis(200));
            }
            linger_while_attached(files, grace);
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    running.pid.signal(libc::SIGINT);
    let since = Instant::now();
    while running.alive() {
        if since.elapsed() > STOP_DEADLINE {
            running.pid.signal(libc::SIGKILL);
            break;
        }
        std::thread::sleep(POLL);
    }
}

/// After the session ended, an agent reattached to it may still be
/// relaying its last lines and the state and history fetched after it.
/// Under Slurm that agent is a step of the keeper's job (`srun --jobid=ID
/// --overlap`): the keeper's step ending ends the job and kills it
/// mid-reply (kiln then reported a lost connection after a clean Ctrl-C).
/// So the keeper waits until no agent is attached, at most `grace`.
fn linger_while_attached(files: &SessionFiles, grace: Duration) {
    let since = Instant::now();
    while files.someone_attached() && since.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_known_by_its_start_time_too() {
        let me = Pid::of(std::process::id()).expect("this process");
        assert!(me.alive());
        let other = Pid {
            start: me.start + 1,
            ..me
        };
        assert!(
            !other.alive(),
            "same pid, another start: not the same process"
        );
        let dir = tempfile::tempdir().unwrap();
        let files = SessionFiles::new(dir.path().to_path_buf());
        assert_eq!(files.running(), None);
        fs::write(files.pid(), format!("{} {}\n", me.pid, me.start)).unwrap();
        assert_eq!(files.running(), Some(me));
        let held = files.attach().unwrap();
        // flock locks belong to the open file: another open of it, even in
        // this process, sees it held.
        assert!(files.someone_attached());
        drop(held);
        assert!(!files.someone_attached());
    }
}

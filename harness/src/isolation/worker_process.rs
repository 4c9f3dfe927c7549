//! Starting and ending a worker process: `kiln worker` (the same binary) in
//! its own process group (a Ctrl-C at the terminal reaches only the
//! supervisor), under a data-size limit (a runaway allocation fails in the
//! worker, not in the machine's OOM killer), with no core dumps, killed if
//! the supervisor dies. Its standard output carries messages (see
//! `worker::protocol`), read on a thread; its standard error is passed
//! through, and its last lines are kept: they are what a dying process
//! said (Rust's "has overflowed its stack", an allocation failure).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use rustix::process::{
    Pid, Resource, Rlimit, Signal, kill_process_group, set_parent_process_death_signal, setrlimit,
};

use crate::logging::LogFormat;
use crate::worker::protocol::{Message, Request, STATUS_FD};
use crate::worker::{LOG_ANSI_ENV, LOG_ELAPSED_ENV};

/// Lines of standard error kept for the crash report (a backtrace can be
/// long; the message before it is what matters).
const LAST_WORDS: usize = 200;

/// How to start workers.
#[derive(Clone, Debug)]
pub struct SpawnOptions {
    /// The `kiln` binary (default: `KILN_WORKER_BIN`, else this process's
    /// own executable, as running: `/proc/self/exe` still starts it after
    /// a rebuild replaced the file).
    pub program: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Print the worker's log lines and standard error here (else drop
    /// them; the last words are kept either way).
    pub forward_output: bool,
    /// `RLIMIT_DATA` in bytes (`None`: no limit).
    pub memory_limit: Option<u64>,
    /// Told each worker's pid when its output ends (it exited or died), so
    /// that a worker dying between requests is noticed at once (`kiln
    /// dev`'s loop); `None`: noticed at the next request.
    pub exits: Option<crossbeam_channel::Sender<u32>>,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            program: None,
            log_format: LogFormat::Human,
            forward_output: true,
            memory_limit: None,
            exits: None,
        }
    }
}

impl SpawnOptions {
    fn program(&self) -> std::io::Result<PathBuf> {
        if let Some(p) = &self.program {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("KILN_WORKER_BIN").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        Ok(PathBuf::from("/proc/self/exe"))
    }
}

/// A running worker process.
pub struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    messages: Receiver<Message>,
    last_words: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Receiver<()>,
    readers: Vec<std::thread::JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl WorkerProcess {
    /// Starts `kiln worker` with `status` as its descriptor 3 (checkpoints
    /// it opens by path, as each request names them).
    pub fn spawn(options: &SpawnOptions, status: &File) -> std::io::Result<WorkerProcess> {
        let program = options.program()?;
        // A tapped log (`kiln dev --ui`) wants the worker's events as JSON;
        // people still read human lines, made here from them.
        let humanize = options.log_format == LogFormat::Human && crate::logging::tapped();
        let format = match options.log_format {
            LogFormat::Human if !humanize => "human",
            _ => "json",
        };
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut command = Command::new(&program);
        command
            .args(["--log-format", format, "worker"])
            .env(
                LOG_ELAPSED_ENV,
                crate::logging::started_at()
                    .elapsed()
                    .as_secs_f64()
                    .to_string(),
            )
            .env(LOG_ANSI_ENV, if ansi { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let sources = [(status.as_raw_fd(), STATUS_FD)];
        let limit = options.memory_limit;
        let parent = rustix::process::getpid();
        // Runs in the forked child before exec.
        let set_up_child = move || -> std::io::Result<()> {
            // Move the sources out of the way first: one of them may sit on
            // a target number. The copies are close-on-exec, and closed when
            // `moved` drops after the dup2s.
            let move_up = |fd: RawFd| {
                // SAFETY: `fd` is the memfd `spawn` borrows for the whole
                // call: open in the parent, so open in this child
                // (inherited) until exec.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                rustix::io::fcntl_dupfd_cloexec(fd, 64)
            };
            let moved = [move_up(sources[0].0)?];
            for (fd, (_, to)) in moved.iter().zip(sources) {
                // SAFETY: `target` only names descriptor number `to` (3)
                // for dup2, which closes whatever is open there and
                // puts the copy in its place (rustix's own `dup2_stdin` does
                // the same for 0); `ManuallyDrop` keeps it from ever being
                // closed here, so no descriptor gets a second owner.
                let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(to) });
                // dup2 clears close-on-exec on the target.
                rustix::io::dup2(fd, &mut target)?;
            }
            drop(moved);
            let no_core = Rlimit {
                current: Some(0),
                maximum: Some(0),
            };
            let _ = setrlimit(Resource::Core, no_core);
            if let Some(bytes) = limit {
                let data = Rlimit {
                    current: Some(bytes),
                    maximum: Some(bytes),
                };
                setrlimit(Resource::Data, data)?;
            }
            let _ = set_parent_process_death_signal(Some(Signal::KILL));
            // A supervisor that died before the line above (SIGKILL between
            // fork and here) never sends that signal: the child is then
            // another process's already, and must not run on alone.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        };
        // SAFETY: `set_up_child` runs in the forked child before exec and is
        // async-signal-safe: it only makes system calls (fcntl, dup2, close,
        // setrlimit, prctl, getppid) through rustix's thin wrappers, which keep no
        // state, allocates nothing and takes no lock (an error is an errno
        // value, not a boxed one).
        unsafe {
            command.pre_exec(set_up_child);
        }
        let mut child = command.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start worker {}: {e}", program.display()),
            )
        })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let forward = options.forward_output;
        let (pid, exits) = (child.id(), options.exits.clone());
        let (tx, messages) = crossbeam_channel::unbounded();
        let out_reader = std::thread::Builder::new()
            .name("kiln-worker-out".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Message>(&line) {
                        Ok(Message::Log(text)) => {
                            crate::logging::tap_lines(&text);
                            if forward {
                                let text = if humanize {
                                    text.lines()
                                        .filter_map(|l| crate::logging::human_of_json(l, ansi))
                                        .collect()
                                } else {
                                    text
                                };
                                crate::logging::write_forwarded(text.as_bytes());
                            }
                        }
                        Ok(message) => {
                            if tx.send(message).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Message::Failed(format!(
                                "unreadable message from the worker ({e}): {line}"
                            )));
                        }
                    }
                }
                drop(tx);
                if let Some(exits) = exits {
                    let _ = exits.send(pid);
                }
            })?;
        let last_words = Arc::new(Mutex::new(VecDeque::new()));
        let kept = last_words.clone();
        let (done_tx, stderr_done) = crossbeam_channel::bounded(1);
        let err_reader = std::thread::Builder::new()
            .name("kiln-worker-err".into())
            .spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if forward {
                        let _ = std::io::stderr().write_all(&line);
                    }
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    if text.is_empty() {
                        continue;
                    }
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == LAST_WORDS {
                        kept.pop_front();
                    }
                    kept.push_back(text);
                }
                let _ = done_tx.send(());
            })?;
        Ok(WorkerProcess {
            stdin: child.stdin.take(),
            child,
            messages,
            last_words,
            stderr_done,
            readers: vec![out_reader, err_reader],
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replies and failures, in order; disconnected when the worker's
    /// output ends (it exited or died).
    pub fn messages(&self) -> &Receiver<Message> {
        &self.messages
    }

    /// Sends a request; an error means the worker is gone.
    pub fn send(&mut self, request: &Request) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("worker input closed"))?;
        let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        stdin.flush()
    }

    /// Kills the worker's whole process group (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        // kill(2) of the group of a child we spawned with process_group(0)
        // and have not reaped: its group id is its pid, which cannot have
        // been reused while the child is a zombie or alive.
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        self.wait()
    }

    /// Waits for the worker to exit (after it died, or was asked to).
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(-1));
        self.exit = Some(status);
        status
    }

    /// Waits up to `deadline` for a clean exit; kills it after that.
    pub fn wait_or_kill(&mut self, deadline: Duration) -> ExitStatus {
        drop(self.stdin.take());
        let end = std::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return status;
            }
            if std::time::Instant::now() >= end {
                return self.kill();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last lines the worker wrote to standard error (waits briefly for
    /// the pipe to drain once the process is gone).
    pub fn last_words(&self) -> Vec<String> {
        let _ = self.stderr_done.recv_timeout(Duration::from_millis(500));
        self.last_words
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
        // The whole group is gone, so both pipes are at end of file.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// `killed by SIGSEGV (segmentation fault)`, `exited with code 3`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        let (name, what) = signal_name(signal);
        if what.is_empty() {
            format!("killed by {name}")
        } else {
            format!("killed by {name} ({what})")
        }
    } else {
        match status.code() {
            Some(0) => "exited".to_string(),
            Some(code) => format!("exited with code {code}"),
            None => "ended".to_string(),
        }
    }
}

/// The name of a signal and what it usually means for a kernel.
pub fn signal_name(signal: i32) -> (String, &'static str) {
    let (name, what) = match signal {
        libc::SIGSEGV => (
            "SIGSEGV",
            "segmentation fault: a bad pointer or out-of-bounds access",
        ),
        libc::SIGBUS => ("SIGBUS", "bus error: a misaligned or truncated mapping"),
        libc::SIGABRT => ("SIGABRT", "aborted"),
        libc::SIGILL => ("SIGILL", "illegal instruction"),
        libc::SIGFPE => ("SIGFPE", "arithmetic exception"),
        libc::SIGKILL => ("SIGKILL", "killed"),
        libc::SIGTERM => ("SIGTERM", "terminated"),
        libc::SIGTRAP => ("SIGTRAP", "trap"),
        libc::SIGINT => ("SIGINT", "interrupted"),
        _ => return (format!("signal {signal}"), ""),
    };
    (name.to_string(), what)
}

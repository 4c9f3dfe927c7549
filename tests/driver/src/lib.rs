//! The one driver of a real `kiln dev` for the end-to-end tests (kiln-e2e)
//! and the benchmarks (kiln-bench): start `kiln dev --log-format json` in a
//! workspace, follow its JSON log on a reader thread as typed
//! [`LogLine`]s ([`Event`]: a line and when it arrived; its kiln event's
//! fields typed with [`Event::fields`] or [`LogLine::get`], the structs of
//! [`events`]), wait for events, and stop it with SIGINT (Ctrl-C) or kill
//! it.
//!
//! Waiting comes in two forms: `try_*` methods return a [`WaitError`]
//! (the benchmarks turn it into their report's error), the others panic
//! with the session's last events and standard error (the tests).
//!
//! Events are read in order: [`Session::try_next`] and every wait look at
//! events from the last one matched on, so an event is matched once.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use kiln::events::{self, EventFields, EventKind, LogLine};

/// One line of the log and when this side received it.
#[derive(Clone, Debug)]
pub struct Event {
    pub line: LogLine,
    pub at: Instant,
}

/// An event reads as its line (`e.kind()`, `e.get::<events::Replay>()`,
/// `e.u64("call")`, ...).
impl Deref for Event {
    type Target = LogLine;

    fn deref(&self) -> &LogLine {
        &self.line
    }
}

impl Event {
    /// A `replay` event of `kernel`.
    pub fn is_replay_of(&self, kernel: &str) -> bool {
        self.get::<events::Replay>()
            .is_some_and(|replay| replay.kernel == kernel)
    }

    /// The typed fields of this event (`e.fields::<events::Swapped>()`);
    /// panics with the line if it is not an event that carries `T` or its
    /// fields do not read as `T` (for tests: the event was waited for by
    /// kind).
    pub fn fields<T: EventFields>(&self) -> &T {
        self.get::<T>().unwrap_or_else(|| {
            panic!(
                "not a {} event with its fields: {}",
                T::KINDS
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                self.line
            )
        })
    }
}

/// The line `kiln dev` logs once its watcher runs (after the first build,
/// load and replay): from then on a save is seen.
pub fn is_watching(line: &LogLine) -> bool {
    line.message().starts_with("watching ")
}

/// Why a wait ended without its event.
#[derive(Debug)]
pub enum WaitError {
    /// Nothing matched before the deadline.
    TimedOut,
    /// `kiln dev` closed its output (it exited: the status, if it came).
    Exited(Option<ExitStatus>),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::TimedOut => write!(f, "not in time"),
            WaitError::Exited(Some(status)) => write!(f, "kiln dev exited ({status})"),
            WaitError::Exited(None) => write!(f, "kiln dev closed its output"),
        }
    }
}

/// What dropping a running [`Session`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGINT, then SIGKILL if it has not exited within 30 s.
    Interrupt,
    /// SIGKILL at once.
    Kill,
}

/// How to start `kiln dev --log-format json`.
#[derive(Clone, Debug)]
pub struct DevCommand {
    exe: PathBuf,
    workspace: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    log: Option<PathBuf>,
    stderr_file: Option<PathBuf>,
    on_drop: OnDrop,
}

impl DevCommand {
    /// `exe dev --log-format json` in `workspace`, with `RUST_LOG=info`
    /// (every event) and no standard input.
    pub fn new(exe: &Path, workspace: &Path) -> DevCommand {
        DevCommand {
            exe: exe.to_path_buf(),
            workspace: workspace.to_path_buf(),
            args: Vec::new(),
            env: vec![("RUST_LOG".into(), Some("info".into()))],
            log: None,
            stderr_file: None,
            on_drop: OnDrop::Interrupt,
        }
    }

    /// More arguments of `kiln dev`.
    pub fn args<I, S>(mut self, args: I) -> DevCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Modules built into `dir` (`KILN_MODULE_TARGET_DIR`): shared with
    /// the real workspace, so dependencies are not built again.
    pub fn module_target_dir(self, dir: &Path) -> DevCommand {
        self.env("KILN_MODULE_TARGET_DIR", dir)
    }

    /// Sets an environment variable (later settings win).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> DevCommand {
        self.env.push((
            key.as_ref().to_os_string(),
            Some(value.as_ref().to_os_string()),
        ));
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> DevCommand {
        self.env.push((key.as_ref().to_os_string(), None));
        self
    }

    /// Writes every line of the log to `path` as well.
    pub fn log_to(mut self, path: &Path) -> DevCommand {
        self.log = Some(path.to_path_buf());
        self
    }

    /// Writes standard error to `path` as well (it is kept either way).
    pub fn stderr_to(mut self, path: &Path) -> DevCommand {
        self.stderr_file = Some(path.to_path_buf());
        self
    }

    /// What dropping the running session does (default: interrupt).
    pub fn on_drop(mut self, on_drop: OnDrop) -> DevCommand {
        self.on_drop = on_drop;
        self
    }

    /// Starts it; returns at once (see [`Session::wait_watching`]).
    pub fn spawn(self) -> Result<Session, String> {
        let create = |path: &Path| {
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))
        };
        let mut log_file = self.log.as_deref().map(create).transpose()?;
        let mut stderr_file = self.stderr_file.as_deref().map(create).transpose()?;
        let mut cmd = Command::new(&self.exe);
        cmd.current_dir(&self.workspace)
            .args(["dev", "--log-format", "json"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("kiln dev has no stdout")?;
        let (tx, events_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let at = Instant::now();
                let Ok(line) = line else { break };
                if let Some(log) = &mut log_file {
                    let _ = writeln!(log, "{line}");
                }
                let line = LogLine::parse(&line);
                if tx.send(Event { line, at }).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().ok_or("kiln dev has no stderr")?;
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(file) = &mut stderr_file {
                    let _ = file.write_all(&buf[..n]);
                }
                lock(&sink).push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Session {
            child: Some(child),
            pid,
            workspace: self.workspace,
            events_rx,
            events: Vec::new(),
            next: 0,
            stderr,
            on_drop: self.on_drop,
        })
    }
}

fn lock(text: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    text.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `kiln dev --log-format json`.
pub struct Session {
    child: Option<Child>,
    pid: u32,
    workspace: PathBuf,
    events_rx: Receiver<Event>,
    /// Every event received so far, in order.
    pub events: Vec<Event>,
    /// Where the next wait starts looking.
    next: usize,
    stderr: Arc<Mutex<String>>,
    on_drop: OnDrop,
}

/// What a stopped session left.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// From SIGINT to the process's exit (to within the 5 ms poll).
    pub exited_after: Duration,
    pub events: Vec<Event>,
    pub stderr: String,
}

impl Stopped {
    /// Panics with the session's last events and standard error.
    pub fn fail(&self, why: &str) -> ! {
        fail_with(why, &self.events, &self.stderr)
    }
}

fn fail_with(why: &str, events: &[Event], stderr: &str) -> ! {
    let tail: Vec<String> = events[events.len().saturating_sub(60)..]
        .iter()
        .map(|e| e.line.to_string())
        .collect();
    let skip = stderr.len().saturating_sub(4000);
    let skip = (skip..stderr.len())
        .find(|&i| stderr.is_char_boundary(i))
        .unwrap_or(0);
    panic!(
        "{why}\n--- last events ---\n{}\n--- stderr (tail) ---\n{}",
        tail.join("\n"),
        &stderr[skip..]
    );
}

impl Session {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The workspace it serves.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// Its staging directory, `<workspace>/target/kiln-stage/<pid>`.
    pub fn stage_dir(&self) -> PathBuf {
        kiln::workspace::staging_root(&self.workspace).join(self.pid.to_string())
    }

    /// Standard error so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// The pid of the worker process serving now (module code runs there):
    /// from the last `worker_started` or `restarted` event.
    pub fn worker_pid(&self) -> u32 {
        self.events
            .iter()
            .rev()
            .find(|e| e.is_any(&[EventKind::WorkerStarted, EventKind::Restarted]))
            .and_then(|e| match e.event_typed()? {
                events::Event::WorkerStarted(started) => started.pid,
                events::Event::Restarted(restarted) => restarted.pid,
                _ => None,
            })
            .unwrap_or_else(|| self.fail("no worker_started event with a pid"))
    }

    /// The index the next event will get (a mark for [`Session::since`]).
    pub fn mark(&self) -> usize {
        self.events.len()
    }

    /// The index of the first event the next wait looks at (the one after
    /// the last match).
    pub fn next_index(&self) -> usize {
        self.next
    }

    /// Events received from `mark` on.
    pub fn since(&self, mark: usize) -> &[Event] {
        &self.events[mark.min(self.events.len())..]
    }

    /// `kind` events received from `mark` on.
    pub fn named_since(&self, mark: usize, kind: EventKind) -> Vec<&Event> {
        self.since(mark).iter().filter(|e| e.is(kind)).collect()
    }

    /// Receives one event, waiting at most `timeout`: `Ok(false)` if none
    /// came.
    fn receive(&mut self, timeout: Duration) -> Result<bool, WaitError> {
        match self.events_rx.recv_timeout(timeout) {
            Ok(event) => {
                self.events.push(event);
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) => Ok(false),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| wait_with_deadline(c, Duration::from_secs(10)));
                Err(WaitError::Exited(status))
            }
        }
    }

    /// Waits until an event from the last match on satisfies `pred`, until
    /// `deadline`; returns it (later waits look after it).
    pub fn try_wait_for(
        &mut self,
        deadline: Instant,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, WaitError> {
        loop {
            if let Some(i) = (self.next..self.events.len()).find(|&i| pred(&self.events[i])) {
                self.next = i + 1;
                return Ok(self.events[i].clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::TimedOut);
            }
            self.receive(left)?;
        }
    }

    /// The next event not yet matched, waiting until `deadline`.
    pub fn try_next(&mut self, deadline: Instant) -> Result<Event, WaitError> {
        self.try_wait_for(deadline, |_| true)
    }

    /// Waits for the watcher to run (the first build, load and replay
    /// done): edits from now on are seen.
    pub fn try_wait_watching(&mut self, deadline: Instant) -> Result<Event, WaitError> {
        self.try_wait_for(deadline, |e| is_watching(e))
    }

    /// [`Session::try_wait_for`] within `timeout`; panics with the
    /// session's log (naming `what`) otherwise.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        match self.try_wait_for(Instant::now() + timeout, pred) {
            Ok(event) => event,
            Err(WaitError::TimedOut) => self.fail(&format!("no {what} within {timeout:?}")),
            Err(e @ WaitError::Exited(_)) => self.fail(&format!("{e} while waiting for {what}")),
        }
    }

    /// Waits for the next `kind` event.
    pub fn wait_event(&mut self, kind: EventKind, timeout: Duration) -> Event {
        self.wait_for(&format!("`{kind}` event"), timeout, |e| e.is(kind))
    }

    /// Receives until nothing arrives for `quiet` (bounded by `max`).
    pub fn wait_quiet(&mut self, quiet: Duration, max: Duration) {
        let end = Instant::now() + max;
        while Instant::now() < end {
            match self.receive(quiet) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => self.fail(&format!("{e} while waiting for it to go quiet")),
            }
        }
        self.fail(&format!("the session never went quiet within {max:?}"));
    }

    /// Panics with the event log and standard error.
    pub fn fail(&self, why: &str) -> ! {
        fail_with(why, &self.events, &lock(&self.stderr))
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet
        // reaped, so it cannot have been reused) and a valid signal number.
        unsafe {
            libc::kill(self.pid as libc::pid_t, signal);
        }
    }

    fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Stops the session with SIGINT (Ctrl-C), waits for it to exit (60 s
    /// at most, else panics) and for its output to end.
    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGINT)
    }

    /// [`Session::stop`] with another signal: SIGTERM and SIGHUP must end
    /// it as Ctrl-C does.
    pub fn stop_with(mut self, signal: i32) -> Stopped {
        let mut child = self.child.take().expect("running");
        let interrupted = Instant::now();
        self.signal(signal);
        let status = wait_with_deadline(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            self.fail(&format!(
                "kiln dev did not exit within 60 s of signal {signal}"
            ))
        });
        let exited_after = interrupted.elapsed();
        // The reader ends at EOF; collect everything it read.
        let end = Instant::now() + Duration::from_secs(10);
        while let Ok(event) = self
            .events_rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.events.push(event);
        }
        Stopped {
            status,
            exited_after,
            events: std::mem::take(&mut self.events),
            stderr: self.stderr(),
        }
    }
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.on_drop == OnDrop::Interrupt {
            self.interrupt();
            if wait_with_deadline(&mut child, Duration::from_secs(30)).is_some() {
                return;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Held by each test from writing its script until its process runs:
    /// a fork by another test thread while a script is open for writing
    /// gives the child a copy of that descriptor, and exec'ing the script
    /// then fails with ETXTBSY ("Text file busy", seen in CI).
    static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn spawning() -> std::sync::MutexGuard<'static, ()> {
        SPAWNING.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stand-in for `kiln`: a shell script in its own directory that
    /// checks its arguments and prints `body`'s lines.
    fn fake_kiln(name: &str, body: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kiln-dev-driver-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("kiln");
        let script = format!(
            "#!/bin/sh\n[ \"$1 $2 $3 $4\" = \"dev --log-format json --x\" ] || {{ echo \"args: $*\" >&2; exit 3; }}\n{body}\n"
        );
        std::fs::write(&exe, script).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    #[test]
    fn events_are_typed_waited_for_in_order_and_a_stop_collects_the_rest() {
        let spawning = spawning();
        let exe = fake_kiln(
            "stop",
            r#"trap 'echo "{\"level\":\"INFO\",\"message\":\"saved\",\"event\":\"state_saved\"}"; exit 0' INT
echo '{"level":"INFO","message":"building","event":"build_started","module":"kernel-cpu","version":1}'
echo 'plain text'
echo '{"level":"INFO","message":"watching kernels/"}'
echo '{"level":"INFO","message":"swapped","event":"swapped","version":2,"ms":3.5}'
echo to-stderr >&2
while true; do sleep 0.05; done"#,
        );
        let log = exe.with_file_name("log.jsonl");
        let mut session = DevCommand::new(&exe, exe.parent().unwrap())
            .args(["--x"])
            .log_to(&log)
            .spawn()
            .unwrap();
        drop(spawning);
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = session.try_next(deadline).unwrap();
        assert!(first.is(EventKind::BuildStarted));
        assert_eq!(
            (first.module(), first.version()),
            (Some("kernel-cpu"), Some(1))
        );
        assert_eq!(
            first.fields::<events::BuildStarted>(),
            &events::BuildStarted {
                module: "kernel-cpu".into(),
                version: 1,
                requests: None,
            }
        );
        let text = session.try_next(deadline).unwrap();
        assert_eq!((text.kind(), text.message()), (None, "plain text"));
        session.try_wait_watching(deadline).unwrap();
        let swapped = session.wait_event(EventKind::Swapped, Duration::from_secs(30));
        assert_eq!(swapped.ms(), Some(3.5));
        // Not all of `swapped`'s fields: the kind reads, the fields do not.
        assert_eq!(swapped.get::<events::Swapped>(), None);
        assert_eq!(session.named_since(0, EventKind::Swapped).len(), 1);
        assert!(matches!(
            session.try_next(Instant::now() + Duration::from_millis(100)),
            Err(WaitError::TimedOut)
        ));
        let stopped = session.stop();
        assert!(stopped.status.success(), "{:?}", stopped.status);
        assert!(stopped.events.iter().any(|e| e.is(EventKind::StateSaved)));
        assert!(stopped.stderr.contains("to-stderr"), "{}", stopped.stderr);
        let written = std::fs::read_to_string(&log).unwrap();
        assert_eq!(written.lines().count(), stopped.events.len(), "{written}");
        let _ = std::fs::remove_dir_all(exe.parent().unwrap());
    }

    #[test]
    fn an_exit_ends_a_wait_with_its_status() {
        let spawning = spawning();
        let exe = fake_kiln("exit", "echo '{\"message\":\"m\"}'\nexit 7");
        let mut session = DevCommand::new(&exe, exe.parent().unwrap())
            .args(["--x"])
            .on_drop(OnDrop::Kill)
            .spawn()
            .unwrap();
        drop(spawning);
        let waited = session.try_wait_for(Instant::now() + Duration::from_secs(30), |e| {
            e.is(EventKind::Swapped)
        });
        match waited {
            Err(WaitError::Exited(Some(status))) => assert_eq!(status.code(), Some(7)),
            other => panic!("{other:?}"),
        }
        assert_eq!(session.events.len(), 1);
        let _ = std::fs::remove_dir_all(exe.parent().unwrap());
    }
}

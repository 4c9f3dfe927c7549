//! One request to a worker, watched: the answer comes back, or the worker
//! dies (a crash), or what it runs passes its deadline (a hang: the worker
//! is killed), or Ctrl-C arrives (the worker is killed at once: a kernel
//! never holds the terminal).

use std::fs::File;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use super::worker_process::{SpawnOptions, WorkerProcess, describe_exit};
use crate::worker::protocol::{Message, Reply, Request};
use crate::worker::status::{Running, StatusRecord};

/// How often the status record is read while waiting.
const WATCH_TICK: Duration = Duration::from_millis(20);

/// How a worker went down.
#[derive(Clone, Debug)]
pub enum DownKind {
    /// It died on its own: `killed by SIGSEGV (...)`, `exited with code 1`.
    Crashed(String),
    /// What it ran passed its deadline; it was killed.
    Hung { deadline: Duration },
}

/// A worker that went down, and what it was doing.
#[derive(Clone, Debug)]
pub struct Down {
    pub kind: DownKind,
    /// What ran when it went down (from the status record).
    pub running: Option<Running>,
    /// Its last lines on standard error.
    pub last_words: Vec<String>,
    /// When the supervisor noticed.
    pub noticed: Instant,
}

impl Down {
    /// One line: what happened, where, and the last words.
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            DownKind::Crashed(how) => how.clone(),
            DownKind::Hung { deadline } => format!(
                "hung: past its {:.1} s deadline, killed",
                deadline.as_secs_f64()
            ),
        };
        let mut line = match &self.running {
            Some(r) => format!("{what} during {r}"),
            None => format!("{what} (nothing was running)"),
        };
        let words: Vec<&String> = self
            .last_words
            .iter()
            .filter(|l| !l.trim().is_empty() && !is_backtrace_line(l))
            .collect();
        if !words.is_empty() {
            let tail: Vec<&str> = words
                .iter()
                .rev()
                .take(3)
                .rev()
                .map(|s| s.as_str())
                .collect();
            line.push_str(&format!("; its last words: {}", tail.join(" | ")));
        }
        line
    }

    pub fn signal(&self) -> Option<&str> {
        match &self.kind {
            DownKind::Crashed(how) => how
                .strip_prefix("killed by ")
                .map(|s| s.split_whitespace().next().unwrap_or(s)),
            DownKind::Hung { .. } => None,
        }
    }
}

/// A line of a Rust backtrace (`stack backtrace:`, `  3: frame`,
/// `at src/x.rs:1`, the closing note): the crash report skips them to show
/// the message they follow.
fn is_backtrace_line(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("stack backtrace:")
        || t.starts_with("at ")
        || t.starts_with("note: Some details are omitted")
        || t.starts_with("note: run with `RUST_BACKTRACE=1`")
        || t.split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Why a request produced no reply.
#[derive(Clone, Debug)]
pub enum WorkerError {
    /// The request failed; the worker is fine and keeps serving.
    Failed(String),
    /// The worker crashed or hung; it is gone.
    Down(Box<Down>),
    /// Ctrl-C: the worker was killed, the session is ending.
    Interrupted,
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Failed(why) => f.write_str(why),
            WorkerError::Down(down) => f.write_str(&down.describe()),
            WorkerError::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// A live worker and its status record.
pub struct Worker {
    process: WorkerProcess,
    status: StatusRecord,
    interrupt: Receiver<()>,
    gone: bool,
}

impl Worker {
    /// Starts a worker; `interrupt` ends any wait at once.
    pub fn spawn(
        options: &SpawnOptions,
        status_file: &File,
        interrupt: Receiver<()>,
    ) -> std::io::Result<Worker> {
        let status = StatusRecord::map(status_file)?;
        status.idle();
        let process = WorkerProcess::spawn(options, status_file)?;
        Ok(Worker {
            process,
            status,
            interrupt,
            gone: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `request` and waits for its reply, enforcing `deadline` on
    /// whatever the status record says runs.
    pub fn request(
        &mut self,
        request: &Request,
        deadline: &dyn Fn(&Running) -> Duration,
    ) -> Result<Reply, WorkerError> {
        if self.gone {
            return Err(WorkerError::Failed("the worker is gone".into()));
        }
        if self.process.send(request).is_err() {
            return Err(self.crashed());
        }
        loop {
            select! {
                recv(self.process.messages()) -> message => match message {
                    Ok(Message::Reply(reply)) => return Ok(reply),
                    Ok(Message::Failed(why)) => return Err(WorkerError::Failed(why)),
                    Ok(Message::Log(_)) => {}
                    Err(_) => return Err(self.crashed()),
                },
                recv(self.interrupt) -> _ => {
                    self.gone = true;
                    self.process.kill();
                    return Err(WorkerError::Interrupted);
                }
                default(WATCH_TICK) => {
                    if let Some(running) = self.status.read() {
                        let limit = deadline(&running);
                        if running.elapsed > limit {
                            return Err(self.hung(running, limit));
                        }
                    }
                }
            }
        }
    }

    /// The worker's output ended between requests (it exited or was
    /// killed while idle): what happened, as a request would have found it.
    /// `None` when it is not gone (a message is still pending) or was
    /// already reported.
    pub fn exited_while_idle(&mut self) -> Option<WorkerError> {
        if self.gone {
            return None;
        }
        // Whatever it said before it went (log lines are printed by the
        // reader): only a disconnected channel means the output ended.
        loop {
            match self.process.messages().try_recv() {
                Ok(_) => continue,
                Err(crossbeam_channel::TryRecvError::Empty) => return None,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Some(self.crashed());
                }
            }
        }
    }

    fn crashed(&mut self) -> WorkerError {
        self.gone = true;
        let noticed = Instant::now();
        let running = self.status.read();
        // The output ended: the process is exiting or gone. Kill the group
        // (anything it left behind) and reap it.
        let status = self.process.wait_or_kill(Duration::from_millis(500));
        WorkerError::Down(Box::new(Down {
            kind: DownKind::Crashed(describe_exit(status)),
            running,
            last_words: self.process.last_words(),
            noticed,
        }))
    }

    fn hung(&mut self, running: Running, deadline: Duration) -> WorkerError {
        self.gone = true;
        let noticed = Instant::now();
        self.process.kill();
        WorkerError::Down(Box::new(Down {
            kind: DownKind::Hung { deadline },
            running: Some(running),
            last_words: self.process.last_words(),
            noticed,
        }))
    }

    /// Asks the worker to retire everything and exit, waiting up to
    /// `deadline` (then kills it).
    pub fn shutdown(mut self, deadline: Duration) {
        if self.gone {
            return;
        }
        self.gone = true;
        if self.process.send(&Request::Shutdown).is_ok() {
            let _ = self
                .process
                .messages()
                .recv_timeout(deadline)
                .map_err(|_| ());
        }
        self.process.wait_or_kill(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_words_are_the_message_not_the_backtrace() {
        let down = Down {
            kind: DownKind::Crashed("killed by SIGABRT (aborted)".into()),
            running: None,
            last_words: [
                "memory allocation of 4294967296 bytes failed",
                "stack backtrace:",
                "   0: std::alloc::rust_oom",
                "             at /rustc/library/std/src/alloc.rs:1",
                "  12: <shared_state::export::Guarded<E> as Engine>::run",
                "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.",
            ]
            .map(String::from)
            .to_vec(),
            noticed: Instant::now(),
        };
        let text = down.describe();
        assert!(
            text.ends_with("its last words: memory allocation of 4294967296 bytes failed"),
            "{text}"
        );
        assert_eq!(down.signal(), Some("SIGABRT"));
    }
}

//! The worker: the process that hosts the engine (`kiln worker`, the same
//! binary, started by the supervisor; never by hand). Module code runs only
//! here. It reads requests on standard input, one JSON line each, runs them
//! with the in-process swap core, and answers on its original standard
//! output; its log lines travel the same way, in order. It runs in its own
//! process group under a memory limit; if it crashes or hangs, the
//! supervisor kills it and starts another on the last good version with the
//! state of the last good point, which lives in the supervisor's shared
//! memory (the checkpoint slots), not here.
//!
//! - [`protocol`]: the messages (shared with the supervisor)
//! - [`status`]: the status record the supervisor's watchdog reads (shared)
//! - [`host`]: what each request does
//! - [`checkpoint_writer`]: the engine's state into a checkpoint slot
//! - [`state_marks`]: what the last checkpoint held (an unchanged state is
//!   not written again)
//! - [`workload_loads`]: the workload's large residents read once, into a
//!   checkpoint part the engine serves mapped
//! - [`outbox`]: messages and log lines to the supervisor

pub mod checkpoint_writer;
pub mod host;
pub mod last_checkpoint;
pub mod outbox;
pub mod protocol;
pub mod sent_signals;
pub mod state_file_part;
pub mod state_marks;
pub mod status;
pub mod tune;
pub mod workload_loads;

use std::fs::File;
use std::io::BufRead;
use std::os::fd::FromRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::logging::LogFormat;
use outbox::{LogWriter, Outbox};
use protocol::{Message, Request, STATUS_FD};
use status::StatusRecord;

/// Environment variable: seconds the supervisor's log had run when it
/// started this worker (so human log lines share one clock).
pub const LOG_ELAPSED_ENV: &str = "KILN_WORKER_LOG_ELAPSED";
/// Environment variable: `1` when the supervisor's log is in colour.
pub const LOG_ANSI_ENV: &str = "KILN_WORKER_LOG_ANSI";

/// `kiln worker`: serves requests until standard input closes or a
/// `Shutdown` request.
pub fn main(format: LogFormat) -> ExitCode {
    sent_signals::end_at_a_sent_fault_signal();
    let outbox = match Outbox::take_stdout() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kiln worker: cannot set up the pipe to the supervisor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let elapsed = std::env::var(LOG_ELAPSED_ENV)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0);
    let start = Instant::now()
        .checked_sub(Duration::from_secs_f64(elapsed.max(0.0)))
        .unwrap_or_else(Instant::now);
    let ansi = std::env::var(LOG_ANSI_ENV).is_ok_and(|v| v == "1");
    crate::logging::init_with(format, LogWriter::new(outbox.clone()), ansi, start);
    // SAFETY: the supervisor opens STATUS_FD for us (dup2 before exec) and
    // nothing else in this process uses that descriptor; we take ownership.
    let status_file = unsafe { File::from_raw_fd(STATUS_FD) };
    let status = match StatusRecord::map(&status_file) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("kiln worker: cannot map the status record (fd {STATUS_FD}): {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut host = host::Host::new(status);
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = outbox.send(&Message::Failed(format!("bad request: {e}")));
                continue;
            }
        };
        let last = matches!(request, Request::Shutdown);
        let message = match host.handle(request) {
            Ok(reply) => Message::Reply(reply),
            Err(why) => Message::Failed(why),
        };
        if outbox.send(&message).is_err() || last {
            break;
        }
    }
    drop(host);
    ExitCode::SUCCESS
}

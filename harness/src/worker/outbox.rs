//! The worker's side of the pipe to its supervisor: every message (log
//! line or reply) is one JSON line, written whole under a lock, so log
//! lines and replies arrive in the order they happened.
//!
//! The pipe is the worker's original standard output, moved to another
//! descriptor at start; descriptor 1 then points at standard error, so a
//! module that prints cannot corrupt the stream.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::protocol::Message;

/// Where messages go. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pipe: Arc<Mutex<File>>,
}

impl Outbox {
    /// Takes over standard output for messages and points descriptor 1 at
    /// standard error.
    pub fn take_stdout() -> std::io::Result<Outbox> {
        // SAFETY: dup and dup2 on descriptors 1 and 2, which exist for the
        // whole life of the process; the duplicate is a new descriptor we
        // own from here on (wrapped in an OwnedFd right away).
        let pipe = unsafe {
            let fd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 10);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(2, 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        Ok(Outbox {
            pipe: Arc::new(Mutex::new(File::from(pipe))),
        })
    }

    /// Sends one message; errors mean the supervisor is gone.
    pub fn send(&self, message: &Message) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        pipe.write_all(&line)
    }
}

/// A `tracing` writer that sends each formatted event as one
/// [`Message::Log`] when it is dropped (the formatter writes one event per
/// writer).
pub struct LogWriter {
    outbox: Outbox,
}

impl LogWriter {
    pub fn new(outbox: Outbox) -> LogWriter {
        LogWriter { outbox }
    }
}

pub struct LogLine {
    outbox: Outbox,
    text: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.text.is_empty() {
            let text = String::from_utf8_lossy(&self.text).into_owned();
            let _ = self.outbox.send(&Message::Log(text));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            outbox: self.outbox.clone(),
            text: Vec::new(),
        }
    }
}

//! The threads of one engine version: started by the host on the module's
//! behalf, joined by the host before the module's library is closed.
//!
//! Why the host and not the module: a thread that runs module code and is
//! still alive (or whose thread-local destructors have not run) when the
//! library is closed either keeps the library mapped forever (glibc pins a
//! library that registered TLS destructors) or crashes when it exits (a
//! destructor pointing into unmapped code). std's own spawn also pins the
//! calling thread's library. So modules never spawn: the host does, keeps
//! the join handles, and joins them after the engine is dropped.

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use shared_state::ThreadSpawner;

/// How long the host waits for a version's threads to finish once the
/// engine is gone before it gives up and keeps the library mapped.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(30);

/// Spawns and tracks the threads of one engine version.
pub struct VersionThreads {
    label: String,
    handles: Mutex<Vec<(String, JoinHandle<()>)>>,
    done_tx: Sender<()>,
    done_rx: Receiver<()>,
}

impl VersionThreads {
    pub fn new(label: &str) -> VersionThreads {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        VersionThreads {
            label: label.to_string(),
            handles: Mutex::new(Vec::new()),
            done_tx,
            done_rx,
        }
    }

    /// Starts a host thread named `name` that runs `body`.
    pub fn spawn_host(&self, name: String, body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        let done = self.done_tx.clone();
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                body();
                let _ = done.send(());
            })?;
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, handle));
        Ok(())
    }

    pub fn count(&self) -> usize {
        self.handles.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits (up to `deadline`) for every thread to return from its body,
    /// then joins them all, so that their thread-local destructors have run.
    /// Returns `false` if some thread did not finish in time: then the
    /// library must stay mapped.
    pub fn join_all(&self, deadline: Duration) -> bool {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        let until = Instant::now() + deadline;
        let mut finished = 0;
        while finished < handles.len() {
            match self.done_rx.recv_deadline(until) {
                Ok(()) => finished += 1,
                Err(_) => break,
            }
        }
        if finished < handles.len() {
            let stuck: Vec<&str> = handles
                .iter()
                .filter(|(_, h)| !h.is_finished())
                .map(|(n, _)| n.as_str())
                .collect();
            tracing::error!(
                "{}: {} module thread(s) did not exit within {:?} ({}); the library stays mapped",
                self.label,
                handles.len() - finished,
                deadline,
                stuck.join(", ")
            );
            // Dropping a JoinHandle detaches the thread; it may still run
            // module code, so the caller keeps the library alive.
            return false;
        }
        for (name, handle) in handles {
            if handle.join().is_err() {
                tracing::error!("{}: thread {name} ended with a panic", self.label);
            }
        }
        true
    }
}

impl ThreadSpawner for VersionThreads {
    fn spawn_boxed(&self, name: String, body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        self.spawn_host(name, body)
    }
}

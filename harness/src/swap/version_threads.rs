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
    /// Module threads started so far (for [`VersionThreads::next_cpu`]).
    module_threads: std::sync::atomic::AtomicUsize,
    handles: Mutex<Vec<(String, JoinHandle<()>)>>,
    done_tx: Sender<()>,
    done_rx: Receiver<()>,
}

impl VersionThreads {
    pub fn new(label: &str) -> VersionThreads {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        VersionThreads {
            label: label.to_string(),
            module_threads: std::sync::atomic::AtomicUsize::new(0),
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
    /// A module's thread (an engine's pool thread): the k-th one a version
    /// starts runs on the k-th CPU this process may use (round robin), so
    /// every version's pool sits on the CPUs the same way. Left to the
    /// scheduler, two threads of one pool woke on one CPU for a whole
    /// replay in some engines and not in others: the same code timed 1.5x
    /// apart, engine against engine (`cargo bench -p kiln-bench --
    /// verdicts` with `KILN_BENCH_COLD=1`, runs of 20 sessions: 1 and at
    /// least 4 false verdicts before, 0, 0 and 2 since). `KILN_NO_PIN=1`
    /// leaves placement to the scheduler.
    fn spawn_boxed(&self, name: String, body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        let cpu = self.next_cpu();
        self.spawn_host(
            name,
            Box::new(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                body()
            }),
        )
    }
}

impl VersionThreads {
    /// The CPU the next module thread runs on (`None`: not pinned).
    fn next_cpu(&self) -> Option<usize> {
        if std::env::var_os("KILN_NO_PIN").is_some_and(|v| v == "1") {
            return None;
        }
        let allowed = rustix::thread::sched_getaffinity(None).ok()?;
        let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| allowed.is_set(c))
            .collect();
        if cpus.is_empty() {
            return None;
        }
        let k = self
            .module_threads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(cpus[k % cpus.len()])
    }
}

/// Runs the calling thread on `cpu` only (best effort: a refusal leaves it
/// where the scheduler puts it).
fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

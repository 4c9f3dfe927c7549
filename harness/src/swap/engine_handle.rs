//! One engine version running on its own thread, and the handle callers use
//! to reach it.
//!
//! Every call into module code for a version happens on that version's
//! engine thread (or on threads the host started for it): creation, kernel
//! calls, export, drop. When the last handle is dropped the engine is dropped
//! on its thread, the thread exits (so thread-local destructors the module
//! registered run), the version's worker threads are joined, and only then
//! is the library closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use shared_state::{
    Call, DeviceInfo, Engine, EngineContext, EngineError, ImportReport, ModuleInfo, Output,
    ResidentInfo, Snapshot, Tensor,
};

use crate::events::{self, emit};
use crate::swap::load::LoadedModule;
use crate::swap::state_hash::without_scratch;
use crate::swap::version_threads::{JOIN_DEADLINE, VersionThreads};

type Job = Box<dyn FnOnce(&mut dyn Engine) + Send>;

/// How long the engine thread, and a caller waiting for a result, poll
/// before they block, while calls are short. Back-to-back small calls answer
/// within microseconds; parking and waking a thread costs 5-10 us each way,
/// which would otherwise dominate the overhead of a small call. Long calls
/// do not spin at all: on a machine with few cores a spinning thread would
/// take a core from the kernel's own workers.
const SPIN: Duration = Duration::from_micros(30);

/// Receives from `rx`: polls for up to [`SPIN`] first if `spin`, then blocks.
fn recv_spinning<T>(rx: &Receiver<T>, spin: bool) -> Result<T, crossbeam_channel::RecvError> {
    if !spin {
        return rx.recv();
    }
    let until = Instant::now() + SPIN;
    loop {
        match rx.try_recv() {
            Ok(value) => return Ok(value),
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                return Err(crossbeam_channel::RecvError);
            }
            Err(crossbeam_channel::TryRecvError::Empty) => {
                if Instant::now() >= until {
                    return rx.recv();
                }
                std::hint::spin_loop();
            }
        }
    }
}

/// Options for creating an engine.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Worker threads (0: one per available core).
    pub threads: usize,
    /// Backend options passed to the module (`device`, ...).
    pub options: std::collections::BTreeMap<String, String>,
}

/// Why a call did not produce a result.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CallError {
    /// The engine returned an error (a panic in the module included).
    #[error("{label}: {error}")]
    Engine { label: String, error: EngineError },
    /// The engine thread is gone (it can only end when its handle is
    /// dropped, so this means a bug).
    #[error("{label}: engine thread is gone")]
    Gone { label: String },
}

impl CallError {
    pub fn engine_error(&self) -> Option<&EngineError> {
        match self {
            CallError::Engine { error, .. } => Some(error),
            CallError::Gone { .. } => None,
        }
    }
}

struct Version {
    module: Option<Arc<LoadedModule>>,
    jobs: Option<Sender<Job>>,
    engine_thread: Option<JoinHandle<()>>,
    engine_done: Receiver<()>,
    threads: Arc<VersionThreads>,
    label: String,
    /// How long the last wait for a result took (decides spinning).
    last_wait_us: AtomicU64,
}

/// A handle to one engine version. Cheap to clone; the version (engine,
/// threads, library) lives until the last clone is dropped, so a handle
/// held across a swap keeps working on its version.
#[derive(Clone)]
pub struct EngineHandle {
    version: Arc<Version>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EngineHandle")
            .field(&self.version.label)
            .finish()
    }
}

/// Runs the module's device probe on a short-lived version thread.
pub fn probe_devices(module: &Arc<LoadedModule>) -> Result<Vec<DeviceInfo>, EngineError> {
    let probe = module.probe;
    let install_logging = module.install_logging;
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let label = module.label().to_string();
    std::thread::Builder::new()
        .name(format!("{label}-probe"))
        .spawn(move || {
            install_logging(dispatch)?;
            probe()
        })
        .map_err(|e| EngineError::internal(format!("cannot start probe thread: {e}")))?
        .join()
        .unwrap_or_else(|_| Err(EngineError::internal("probe thread panicked in the host")))
}

impl EngineHandle {
    /// Starts `module`'s engine on a new engine thread, created from `prior`
    /// state if given. Returns once the engine exists (or failed to start,
    /// in which case everything it made is already torn down).
    pub fn start(
        module: Arc<LoadedModule>,
        options: &EngineOptions,
        prior: Option<Snapshot>,
    ) -> Result<(EngineHandle, ImportReport), CallError> {
        let label = module.label().to_string();
        // A state file written before scratch was left out still holds it.
        let prior = prior.map(without_scratch);
        let threads = Arc::new(VersionThreads::new(&label));
        let ctx = EngineContext {
            label: label.clone(),
            threads: if options.threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                options.threads
            },
            options: options.options.clone(),
            spawner: threads.clone(),
            kernels: module.staged.files.kernels.clone(),
            sources: module.staged.files.sources.clone(),
        };
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Job>();
        let (created_tx, created_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let create = module.create;
        let install_logging = module.install_logging;
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let start = Instant::now();
        let engine_thread = std::thread::Builder::new()
            .name(format!("{label}-engine"))
            .spawn(move || {
                let created = install_logging(dispatch).and_then(|()| create(ctx, prior));
                match created {
                    Err(e) => {
                        let _ = created_tx.send(Err(e));
                    }
                    Ok(created) => {
                        let mut engine = created.engine;
                        let _ = created_tx.send(Ok(created.report));
                        // Spin for the next job only after a short one.
                        let mut short = false;
                        while let Ok(job) = recv_spinning(&jobs_rx, short) {
                            let started = Instant::now();
                            job(engine.as_mut());
                            short = started.elapsed() < SPIN;
                        }
                        drop(engine);
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| CallError::Engine {
                label: label.clone(),
                error: EngineError::internal(format!("cannot start engine thread: {e}")),
            })?;
        let version = Version {
            module: Some(module),
            jobs: Some(jobs_tx),
            engine_thread: Some(engine_thread),
            engine_done: done_rx,
            threads,
            label: label.clone(),
            last_wait_us: AtomicU64::new(0),
        };
        match created_rx.recv() {
            Ok(Ok(report)) => {
                tracing::debug!(
                    "{label}: engine created in {:.1} ms ({report})",
                    start.elapsed().as_secs_f64() * 1e3
                );
                Ok((
                    EngineHandle {
                        version: Arc::new(version),
                    },
                    report,
                ))
            }
            Ok(Err(error)) => {
                drop(version);
                Err(CallError::Engine { label, error })
            }
            Err(_) => {
                drop(version);
                Err(CallError::Gone { label })
            }
        }
    }

    pub fn label(&self) -> &str {
        &self.version.label
    }

    pub fn module(&self) -> &LoadedModule {
        self.version
            .module
            .as_ref()
            .expect("module present while the handle lives")
    }

    /// Number of worker threads the host started for this version.
    pub fn worker_threads(&self) -> usize {
        self.version.threads.count()
    }

    /// Queues `f` to run on the engine thread; returns the receiver of its
    /// result. Calls queued by one thread run in the order they were queued.
    pub(crate) fn submit<T, F>(&self, f: F) -> Result<Receiver<Result<T, EngineError>>, CallError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Engine) -> Result<T, EngineError> + Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move |engine| {
            let _ = tx.send(f(engine));
        });
        self.version
            .jobs
            .as_ref()
            .expect("jobs channel present while the handle lives")
            .send(job)
            .map_err(|_| CallError::Gone {
                label: self.version.label.clone(),
            })?;
        Ok(rx)
    }

    pub(crate) fn wait<T>(&self, rx: Receiver<Result<T, EngineError>>) -> Result<T, CallError> {
        // Spin only if the previous wait on this version was short.
        let last_us = self.version.last_wait_us.load(Ordering::Relaxed);
        let started = Instant::now();
        let received = recv_spinning(&rx, last_us < 2 * SPIN.as_micros() as u64);
        self.version
            .last_wait_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match received {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(error)) => Err(CallError::Engine {
                label: self.version.label.clone(),
                error,
            }),
            Err(_) => Err(CallError::Gone {
                label: self.version.label.clone(),
            }),
        }
    }

    fn exec<T, F>(&self, f: F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Engine) -> Result<T, EngineError> + Send + 'static,
    {
        let rx = self.submit(f)?;
        self.wait(rx)
    }

    /// Runs one kernel call on this version.
    pub fn run(&self, call: Call) -> Result<Output, CallError> {
        self.exec(move |e| e.run(call))
    }

    /// Runs one kernel call on this version and returns how long the
    /// engine took, measured on the engine thread around the call: the
    /// hand-off to that thread and back (tens of microseconds on a busy VM,
    /// and not the kernel's) is outside the interval. What a replay reports
    /// as a call's time (`workload::replay`).
    pub fn run_timed(&self, call: Call) -> Result<(Output, Duration), CallError> {
        self.exec(move |e| {
            let started = Instant::now();
            let output = e.run(call)?;
            Ok((output, started.elapsed()))
        })
    }

    pub fn info(&self) -> Result<ModuleInfo, CallError> {
        self.exec(|e| e.info())
    }

    pub fn put_resident(&self, name: &str, tensor: Tensor) -> Result<(), CallError> {
        let name = name.to_string();
        self.exec(move |e| e.put_resident(&name, tensor))
    }

    pub fn read_resident(&self, name: &str) -> Result<Tensor, CallError> {
        let name = name.to_string();
        self.exec(move |e| e.read_resident(&name))
    }

    pub fn residents(&self) -> Result<Vec<ResidentInfo>, CallError> {
        self.exec(|e| e.residents())
    }

    /// Exports this version's state; the engine keeps it. Replay scratch
    /// is not state and is left out ([`super::state_hash::without_scratch`]).
    pub fn export_state(&self) -> Result<Snapshot, CallError> {
        self.exec(|e| e.export_state()).map(without_scratch)
    }

    /// Exports this version's state for the next version of the same
    /// module: buffers may stay on the device (`Engine::export_handoff`).
    /// Replay scratch is left out, as from [`EngineHandle::export_state`].
    pub fn export_handoff(&self) -> Result<Snapshot, CallError> {
        self.exec(|e| e.export_handoff()).map(without_scratch)
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        let start = Instant::now();
        // Closing the job channel ends the engine thread's loop: the engine
        // is dropped there, on its own thread, after any queued calls.
        drop(self.jobs.take());
        let engine_exited = self
            .engine_done
            .recv_deadline(start + JOIN_DEADLINE)
            .is_ok();
        let mut clean = engine_exited;
        if let Some(thread) = self.engine_thread.take() {
            if engine_exited {
                let _ = thread.join();
            } else {
                tracing::error!(
                    "{}: engine did not finish dropping within {JOIN_DEADLINE:?}",
                    self.label
                );
            }
        }
        // The engine is gone (its rayon pool asked its workers to stop):
        // wait for every worker thread to exit before closing the library.
        if clean {
            clean = self.threads.join_all(JOIN_DEADLINE);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let module = self.module.take().expect("module present until drop");
        emit!(
            tracing::Level::INFO,
            events::Retired {
                module: module.staged.module.clone(),
                version: module.staged.version,
                ms,
            },
            "retired {} (engine dropped, threads joined in {ms:.1} ms)",
            self.label
        );
        if clean {
            // The last Arc closes the library (see LoadedModule's Drop);
            // other Arcs may still be held by a caller's handle.
            drop(module);
        } else {
            // Some thread may still run module code: closing the library
            // now would crash the process later. Keep it mapped.
            tracing::error!("{}: library kept mapped (leaked) to stay safe", self.label);
            std::mem::forget(module);
        }
    }
}

//! A module served from a worker process: the supervisor's handle on the
//! engine. Requests go to the current worker; when one goes down (crash,
//! hang, Ctrl-C) it is dropped, the staged files it had loaded are removed,
//! and [`IsolatedEngine::start`] starts the next one, typically on the last
//! good version with the checkpoint's state. The checkpoints and the
//! status record belong to this handle and outlive every worker.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::checkpoint::Checkpoint;
use super::deadlines::Deadlines;
use super::preload::Preloading;
use super::worker_client::{Worker, WorkerError};
use super::worker_process::SpawnOptions;
use crate::swap::snapshot_file::PartWritten;
use crate::swap::stage::Staged;
use crate::worker::protocol::{
    Checkpointed, DeviceWire, ReplaySummary, Reply, Request, StagedWire, Started, StateSource,
    Swapped, WorkerConfig,
};
use crate::worker::status::StatusRecord;
use crate::worker::workload_loads::NotInPart;

/// How to run isolated engines.
#[derive(Clone, Debug, Default)]
pub struct IsolationOptions {
    pub spawn: SpawnOptions,
    pub worker: WorkerConfig,
    /// `--call-timeout`: the deadline of every kernel call.
    pub call_timeout: Option<Duration>,
}

/// The loads part a start writes into (number and path) and, when it was
/// written before the start, what it holds.
type LoadsPart = (Option<(u64, PathBuf)>, Option<PartWritten>);

/// The engine, in a worker process.
pub struct IsolatedEngine {
    options: IsolationOptions,
    status_file: File,
    checkpoint: Checkpoint,
    worker: Option<Worker>,
    interrupt: Receiver<()>,
    deadlines: Deadlines,
    /// A version was started or swapped in, and the worker has not gone
    /// down since.
    serving: bool,
    /// Staged files the current worker loaded (removed if it goes down).
    staged: Vec<PathBuf>,
    /// The files of a version swapped in beside its predecessor and not yet
    /// judged: kept if the worker goes down during the replay, so that the
    /// session can start it again when the *old* version was the culprit.
    unjudged: Vec<PathBuf>,
    /// The workload's large residents being copied into their part before
    /// the first start ([`IsolatedEngine::preload_workload`]).
    preloading: Option<Preloading>,
}

fn unexpected(reply: Reply) -> WorkerError {
    WorkerError::Failed(format!("unexpected reply from the worker: {reply:?}"))
}

impl IsolatedEngine {
    /// No worker yet; `interrupt` (Ctrl-C), if given, ends any wait on one.
    pub fn new(
        options: IsolationOptions,
        interrupt: Option<Receiver<()>>,
    ) -> std::io::Result<Self> {
        let interrupt = interrupt.unwrap_or_else(crossbeam_channel::never);
        let (_, status_file) = StatusRecord::create()?;
        let deadlines = Deadlines {
            fixed: options.call_timeout,
            previous: BTreeMap::new(),
        };
        Ok(IsolatedEngine {
            options,
            status_file,
            checkpoint: Checkpoint::create()?,
            worker: None,
            interrupt,
            deadlines,
            serving: false,
            staged: Vec::new(),
            unjudged: Vec::new(),
            preloading: None,
        })
    }

    /// The options of the workers started from now on (`kiln dev` makes
    /// the engine before the modules built, to copy the workload in the
    /// meantime, and sets the reference modules once they are).
    pub fn worker_config_mut(&mut self) -> &mut WorkerConfig {
        &mut self.options.worker
    }

    /// Starts copying the large resident loads of the workload file
    /// `workload` into a part of their own, on a thread, for the next
    /// [`IsolatedEngine::start`] from no state to serve
    /// (`super::preload`): `kiln dev` does it while the modules build.
    pub fn preload_workload(&mut self, workload: &Path) -> std::io::Result<()> {
        let (part, path) = self.checkpoint.begin_loads()?;
        self.preloading = Some(Preloading::start(workload, part, path)?);
        Ok(())
    }

    /// Calls off the copy [`IsolatedEngine::preload_workload`] started
    /// (the start will not be from the workload after all), and lets go
    /// of its part.
    pub fn cancel_preload(&mut self) {
        if let Some(preloading) = self.preloading.take() {
            preloading.cancel();
            self.checkpoint.commit_loads(None).ok();
        }
    }

    /// The loads part for a start with state `state` (none from a
    /// checkpoint: its parts hold the residents), and what it holds when
    /// it was written before ([`IsolatedEngine::preload_workload`], used by
    /// a start from no state only). A damaged workload found by the copy
    /// before is this start's error.
    fn loads_for(&mut self, state: &StateSource) -> Result<LoadsPart, WorkerError> {
        let preloaded = self
            .preloading
            .take()
            .map(|p| (p.part, p.path.clone(), p.finish()));
        match (state, preloaded) {
            (StateSource::Checkpoint { .. }, _) => Ok((None, None)),
            (StateSource::Empty, Some((part, path, Ok(written)))) => {
                Ok((Some((part, path)), written))
            }
            (StateSource::Empty, Some((_, _, Err(NotInPart::Refused(e))))) => {
                self.checkpoint.commit_loads(None).ok();
                Err(WorkerError::Failed(e.to_string()))
            }
            (_, preloaded) => {
                if let Some((_, _, Err(NotInPart::Failed(e)))) = preloaded {
                    tracing::warn!("the workload's residents are copied by the worker: {e}");
                }
                Ok((self.checkpoint.begin_loads().ok(), None))
            }
        }
    }

    /// Whether a worker serves a version (which one is the caller's to
    /// know: the `Staged` it started or swapped in).
    pub fn is_serving(&self) -> bool {
        self.worker.is_some() && self.serving
    }

    pub fn worker_pid(&self) -> Option<u32> {
        self.worker.as_ref().map(Worker::pid)
    }

    /// The last checkpoint taken (the state of the last good point).
    pub fn checkpoint(&self) -> Option<&Checkpointed> {
        self.checkpoint.current()
    }

    /// Where a restarted engine's state comes from.
    pub fn checkpoint_source(&self) -> StateSource {
        self.checkpoint.source()
    }

    /// The previous good version's medians, for the calls' deadlines.
    pub fn set_previous_timings(&mut self, timings: &crate::workload::timing::Timings) {
        self.deadlines.previous = timings
            .calls
            .iter()
            .map(|(k, s)| (k.clone(), s.median))
            .collect();
    }

    fn request(&mut self, request: Request) -> Result<Reply, WorkerError> {
        let Some(worker) = self.worker.as_mut() else {
            return Err(WorkerError::Failed(
                "no worker is running (the last one went down)".into(),
            ));
        };
        let deadlines = &self.deadlines;
        match worker.request(&request, &|running| deadlines.of(running)) {
            Err(e @ (WorkerError::Down(_) | WorkerError::Interrupted)) => {
                self.worker = None;
                self.serving = false;
                self.remove_staged();
                Err(e)
            }
            other => other,
        }
    }

    /// The worker with `pid` reported its output ended (see
    /// `SpawnOptions::exits`): if it is this engine's worker and nothing was
    /// waiting on it, it went down while idle, and this says how; the
    /// engine then has no worker, as after a request that found it down.
    /// `None` for another engine's worker, or one already retired.
    pub fn worker_exited(&mut self, pid: u32) -> Option<WorkerError> {
        let worker = self.worker.as_mut().filter(|w| w.pid() == pid)?;
        let down = worker.exited_while_idle()?;
        self.worker = None;
        self.serving = false;
        self.remove_staged();
        Some(down)
    }

    fn remove_staged(&mut self) {
        for path in self.staged.drain(..) {
            if !self.unjudged.contains(&path) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Starts a new worker (ending the current one, if any) serving
    /// `staged`, with state from `state`.
    pub fn start(&mut self, staged: &Staged, state: StateSource) -> Result<Started, WorkerError> {
        self.stop_worker(Duration::from_secs(1));
        let worker = Worker::spawn(
            &self.options.spawn,
            &self.status_file,
            self.interrupt.clone(),
        )
        .map_err(|e| WorkerError::Failed(format!("cannot start a worker: {e}")))?;
        self.worker = Some(worker);
        self.staged.push(staged.path.clone());
        self.staged.push(staged.files_path.clone());
        match self.request(Request::Configure(Box::new(self.options.worker.clone())))? {
            Reply::Configured => {}
            other => return Err(unexpected(other)),
        }
        // Not from a checkpoint: the workload's large residents are read
        // into a part of their own (none is needed when the state comes
        // from one: its parts already hold them), unless they already were.
        let (loads, prewritten) = match self.loads_for(&state) {
            Ok(loads) => loads,
            Err(e) => {
                self.stop_worker(Duration::from_secs(1));
                return Err(e);
            }
        };
        let reply = self.request(Request::Start {
            staged: StagedWire::from(staged),
            state,
            loads,
            prewritten,
        });
        let loads_bytes = match &reply {
            Ok(Reply::Started(started)) => started.loads_bytes,
            _ => None,
        };
        if let Err(e) = self.checkpoint.commit_loads(loads_bytes) {
            tracing::warn!("the workload's residents stay the engine's own: {e}");
        }
        match reply {
            Ok(Reply::Started(started)) => {
                self.serving = true;
                Ok(started)
            }
            Ok(other) => Err(unexpected(other)),
            Err(e) => {
                if matches!(e, WorkerError::Failed(_)) {
                    self.stop_worker(Duration::from_secs(1));
                }
                Err(e)
            }
        }
    }

    /// Loads the workload's resident buffers the engine does not hold.
    pub fn load_workload_state(&mut self) -> Result<usize, WorkerError> {
        match self.request(Request::LoadWorkloadState)? {
            Reply::Loaded { count } => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Swaps to `staged` with the state handoff. With `keep_old`, the
    /// replaced version stays alive until the next replay (to be timed
    /// against); otherwise it retires now.
    pub fn swap(&mut self, staged: &Staged, keep_old: bool) -> Result<Swapped, WorkerError> {
        self.swap_from(staged, keep_old, None)
    }

    /// Swaps to `staged` starting from the last good point's state (the
    /// checkpoint), not the serving version's: a rollback, so that what a
    /// failed version wrote into its state is not carried back. Without a
    /// checkpoint, the serving version's state (a plain swap).
    pub fn swap_to_checkpoint(&mut self, staged: &Staged) -> Result<Swapped, WorkerError> {
        let state = match self.checkpoint_source() {
            StateSource::Empty => None,
            source => Some(source),
        };
        self.swap_from(staged, false, state)
    }

    fn swap_from(
        &mut self,
        staged: &Staged,
        keep_old: bool,
        state: Option<StateSource>,
    ) -> Result<Swapped, WorkerError> {
        self.staged.push(staged.path.clone());
        self.staged.push(staged.files_path.clone());
        self.unjudged.clear();
        match self.request(Request::Swap {
            staged: StagedWire::from(staged),
            keep_old,
            state,
        })? {
            Reply::Swapped(swapped) => {
                if keep_old {
                    self.unjudged = vec![staged.path.clone(), staged.files_path.clone()];
                }
                self.serving = true;
                Ok(swapped)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Replays the workload on the serving version.
    pub fn replay(
        &mut self,
        recorded: Option<&crate::workload::timing::Timings>,
    ) -> Result<ReplaySummary, WorkerError> {
        // No copy to disk while the replay times kernels.
        let _hold = self.checkpoint.hold_disk_copy();
        let reply = self.request(Request::Replay {
            recorded: recorded.cloned(),
        });
        // Judged (or gone down: its files, if kept, are the caller's now).
        self.unjudged.clear();
        match reply? {
            Reply::Replayed(summary) => Ok(summary),
            other => Err(unexpected(other)),
        }
    }

    /// Has the worker read its workload again and load the resident
    /// buffers it now declares that the engine does not hold (as at the
    /// start: a replay never loads them); returns its description.
    pub fn reload_workload(&mut self) -> Result<String, WorkerError> {
        let description = match self.request(Request::ReloadWorkload)? {
            Reply::WorkloadReloaded { description } => description,
            other => return Err(unexpected(other)),
        };
        Ok(match self.load_workload_state()? {
            0 => description,
            loaded => format!("{description}; loaded {loaded} new resident buffer(s)"),
        })
    }

    /// The staged library of the reference module this engine's workers
    /// are handed, if any.
    pub fn reference_path(&self) -> Option<PathBuf> {
        self.options
            .worker
            .reference
            .as_ref()
            .map(|w| w.path.clone())
    }

    /// Replaces the worker's reference engine with `staged`'s; a worker
    /// started later (after a crash) gets it too. Returns its label and
    /// the reference it replaced, whose staged files the caller removes
    /// once no worker is handed them (workers leave a reference's files
    /// in place: `LoadedModule::leaving_files`).
    pub fn set_reference(
        &mut self,
        staged: &Staged,
    ) -> Result<(String, Option<StagedWire>), WorkerError> {
        let wire = StagedWire::from(staged);
        let reply = self.request(Request::SetReference {
            staged: wire.clone(),
        })?;
        match reply {
            Reply::ReferenceSet { label } => {
                let replaced = self.options.worker.reference.replace(wire);
                Ok((label, replaced))
            }
            other => Err(unexpected(other)),
        }
    }

    /// One bounded autotuning step in the worker (about `budget_ms`).
    pub fn tune_step(
        &mut self,
        budget_ms: u64,
    ) -> Result<crate::worker::protocol::TuneProgress, WorkerError> {
        match self.request(Request::TuneStep { budget_ms })? {
            Reply::Tuned(progress) => Ok(progress),
            other => Err(unexpected(other)),
        }
    }

    /// Checkpoints the engine's state (the last good point is now).
    pub fn take_checkpoint(&mut self) -> Result<Checkpointed, WorkerError> {
        let file = self
            .checkpoint
            .begin()
            .map_err(|e| WorkerError::Failed(format!("cannot make a checkpoint: {e}")))?;
        let current = self.checkpoint.current().map(|c| c.hash.clone());
        let part = self.checkpoint.part_under_way();
        let held = self.checkpoint.held();
        match self.request(Request::Checkpoint {
            file,
            current,
            part,
            held,
        })? {
            // The current checkpoint holds this very state: it stays.
            Reply::Checkpointed(written) if written.unchanged => Ok(written),
            Reply::Checkpointed(written) => {
                self.checkpoint
                    .commit(written.clone())
                    .map_err(WorkerError::Failed)?;
                Ok(written)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The hash the engine's state has now, as a checkpoint would.
    pub fn state_hash(&mut self) -> Result<Checkpointed, WorkerError> {
        match self.request(Request::StateHash)? {
            Reply::StateHash(hashed) => Ok(hashed),
            other => Err(unexpected(other)),
        }
    }

    /// Writes the session as a workload (needs `keep_outputs`).
    pub fn record(&mut self, path: &Path) -> Result<String, WorkerError> {
        match self.request(Request::Record {
            path: path.to_path_buf(),
        })? {
            Reply::Recorded { description } => Ok(description),
            other => Err(unexpected(other)),
        }
    }

    /// Blesses the serving version's last replay into `path` (see
    /// `Request::Bless`); a worker started later replays that file too.
    pub fn bless(&mut self, path: &Path) -> Result<String, WorkerError> {
        match self.request(Request::Bless {
            path: path.to_path_buf(),
        })? {
            Reply::Recorded { description } => {
                self.options.worker.workload = Some(path.to_path_buf());
                Ok(description)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Writes the last replay's calls with their outputs to `path`
    /// (`--backends`: the other backends compare with it).
    pub fn write_outputs(&mut self, path: &Path) -> Result<String, WorkerError> {
        match self.request(Request::WriteOutputs {
            path: path.to_path_buf(),
        })? {
            Reply::Recorded { description } => Ok(description),
            other => Err(unexpected(other)),
        }
    }

    /// Compares the last replay's outputs with another backend's, written
    /// by [`IsolatedEngine::write_outputs`] at `path`.
    pub fn compare_outputs(
        &mut self,
        path: &Path,
        against: &str,
    ) -> Result<crate::workload::cross_compare::CrossCheck, WorkerError> {
        match self.request(Request::CompareOutputs {
            path: path.to_path_buf(),
            against: against.to_string(),
        })? {
            Reply::Compared(check) => Ok(check),
            other => Err(unexpected(other)),
        }
    }

    /// Probes `staged`'s devices in a fresh worker (which then exits).
    pub fn probe(&mut self, staged: &Staged) -> Result<Vec<DeviceWire>, WorkerError> {
        self.stop_worker(Duration::from_secs(1));
        let worker = Worker::spawn(
            &self.options.spawn,
            &self.status_file,
            self.interrupt.clone(),
        )
        .map_err(|e| WorkerError::Failed(format!("cannot start a worker: {e}")))?;
        self.worker = Some(worker);
        self.staged.push(staged.path.clone());
        self.staged.push(staged.files_path.clone());
        let reply = self.request(Request::Probe {
            staged: StagedWire::from(staged),
        });
        self.stop_worker(Duration::from_secs(1));
        match reply? {
            Reply::Probed { devices } => Ok(devices),
            other => Err(unexpected(other)),
        }
    }

    /// Writes the last good point's state to `path` (a snapshot file).
    pub fn write_state_file(&self, path: &Path) -> Result<u64, String> {
        self.checkpoint.write_file(path)
    }

    /// From now on every checkpoint is also copied to `path`, behind the
    /// session (`disk_copy.rs`); `module` names it in the log.
    pub fn keep_on_disk(&mut self, path: &Path, module: &str) -> std::io::Result<()> {
        self.checkpoint.keep_on_disk(path, module)
    }

    /// Waits until the last checkpoint is on disk and stops copying; the
    /// last copy's outcome (`None`: not kept on disk, or nothing copied).
    pub fn stop_keeping(&mut self) -> Option<Result<crate::isolation::disk_copy::Kept, String>> {
        self.checkpoint.stop_keeping()
    }

    /// Ends the worker: asks it to retire everything, kills it after
    /// `deadline`.
    pub fn stop_worker(&mut self, deadline: Duration) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown(deadline);
        }
        self.serving = false;
        self.remove_staged();
    }
}

impl Drop for IsolatedEngine {
    fn drop(&mut self) {
        self.stop_worker(Duration::from_secs(1));
    }
}

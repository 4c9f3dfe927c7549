//! The engine host: what a worker does for each request. Everything here is
//! the in-process swap core, unchanged: stage verification, load and
//! fingerprint, handoff, swap, replay, retire.

use std::path::Path;
use std::sync::Arc;

use shared_state::Snapshot;

use super::checkpoint_writer::{hash_only, write_part};
use super::protocol::{
    CallFailure, Checkpointed, DeviceWire, ReplaySummary, Reply, Request, StagedWire, Started,
    StateSource, Swapped, WorkerConfig,
};
use super::status::StatusRecord;
use crate::swap::engine_handle::{EngineHandle, probe_devices};
use crate::swap::load::LoadedModule;
use crate::swap::served::ServedModule;
use crate::swap::snapshot_file;
use crate::workload::Workload;
use crate::workload::compare::Tolerances;
use crate::workload::format::{Answered, LoadAnswer};
use crate::workload::replay::{self, Baseline, CallWatch, ReplayOptions, ReplayReport};

/// One worker's engine and what it replays.
pub struct Host {
    status: Arc<StatusRecord>,
    config: WorkerConfig,
    workload: Option<Workload>,
    replay_options: ReplayOptions,
    served: Option<ServedModule>,
    /// The version the last swap replaced, alive until the next replay.
    old: Option<EngineHandle>,
    last_passing: Option<Arc<ReplayReport>>,
    /// The last replay, passing or not (with `keep_outputs`), to bless.
    last_replay: Option<Arc<ReplayReport>>,
    /// Autotuning of the serving version (planned after a passing replay).
    tuner: Option<crate::tuning::tuner::Tuner>,
    /// The last checkpoint this worker wrote, and what it held.
    checkpointed: Option<super::last_checkpoint::LastCheckpoint>,
}

impl Host {
    pub fn new(status: Arc<StatusRecord>) -> Host {
        Host {
            status,
            config: WorkerConfig::default(),
            workload: None,
            replay_options: ReplayOptions::default(),
            served: None,
            old: None,
            last_passing: None,
            last_replay: None,
            tuner: None,
            checkpointed: None,
        }
    }

    fn served(&self) -> Result<&ServedModule, String> {
        self.served
            .as_ref()
            .ok_or_else(|| "no engine started in this worker".to_string())
    }

    fn label(&self) -> String {
        self.served.as_ref().map(|s| s.label()).unwrap_or_default()
    }

    /// Handles one request; `Err` is a failure the worker survives.
    pub fn handle(&mut self, request: Request) -> Result<Reply, String> {
        let op = op_name(&request);
        let label = self.label();
        self.status.begin(op, &label, None);
        let reply = self.dispatch(request);
        self.status.idle();
        reply
    }

    fn dispatch(&mut self, request: Request) -> Result<Reply, String> {
        match request {
            Request::Configure(config) => self.configure(*config),
            Request::Start {
                staged,
                state,
                loads,
                prewritten,
            } => self.start(staged.into_staged()?, state, loads, prewritten),
            Request::LoadWorkloadState => {
                let workload = self.workload()?;
                let count = replay::load_state(&self.served()?.handle(), workload)
                    .map_err(|e| format!("cannot load the workload's buffers: {e}"))?;
                Ok(Reply::Loaded { count })
            }
            Request::Swap {
                staged,
                keep_old,
                state,
            } => {
                let state_source = state.clone();
                let (state, served_marks) = match &state {
                    Some(source) => {
                        let state = load_state(source)?;
                        let marks = state.as_ref().map(MappedMarks::of);
                        (state, marks)
                    }
                    None => (None, None),
                };
                let loaded =
                    LoadedModule::open(staged.into_staged()?).map_err(|e| e.to_string())?;
                let other_module = self
                    .served
                    .as_ref()
                    .is_some_and(|s| s.handle().module().staged.module != loaded.staged.module);
                let served = self.served()?;
                let (report, old) = match state {
                    Some(state) => served.swap_to_state(loaded, state),
                    None => served.swap_keeping_old(loaded),
                }
                .map_err(|e| e.to_string())?;
                // A version kept from an earlier swap retires now.
                self.old = None;
                self.tuner = None;
                if other_module {
                    // Another backend (a switch): its machine peaks are
                    // measured again at the next replay, and the replaced
                    // version is never a timing baseline for this one.
                    self.replay_options.roof = Default::default();
                }
                if keep_old && !other_module {
                    self.old = Some(old);
                } else {
                    drop(old);
                }
                // Rolled back to a checkpoint: the next one points into
                // its parts (what the rolled-back engine serves of them).
                if let Some(marks) = served_marks {
                    self.checkpointed = None;
                    self.serve_checkpoint(state_source.as_ref(), marks);
                }
                Ok(Reply::Swapped(Swapped {
                    from: report.from,
                    to: report.to,
                    bytes: report.bytes,
                    paused_ms: report.paused_ms,
                    dropped: report.import.dropped,
                    defaulted: report.import.defaulted,
                }))
            }
            Request::Replay { recorded } => self.replay(recorded),
            Request::Checkpoint {
                file,
                current,
                part,
                held,
            } => self.checkpoint(&file, current, part, &held),
            Request::StateHash => {
                let snapshot = self.export()?;
                let (hashed, digests) = hash_only(&snapshot);
                // A worker serving a mapped checkpoint learns here what its
                // next checkpoint need not read again.
                if let Some(last) = &mut self.checkpointed
                    && last.lacks_digests()
                {
                    last.learn_digests(&snapshot, &digests, &hashed.hash);
                }
                Ok(Reply::StateHash(hashed))
            }
            Request::Record { path } => self.record(&path),
            Request::Bless { path } => self.bless(&path),
            Request::WriteOutputs { path } => self.write_outputs(&path),
            Request::CompareOutputs { path, against } => self.compare_outputs(&path, &against),
            Request::ReloadWorkload => {
                let workload = read_workload(&self.config)?;
                let description = workload.describe();
                self.workload = Some(workload);
                Ok(Reply::WorkloadReloaded { description })
            }
            Request::SetReference { staged } => {
                let handle = start_engine(&self.config, &staged)?;
                let label = handle.label().to_string();
                self.replay_options.reference = Some(handle);
                self.config.reference = Some(staged);
                Ok(Reply::ReferenceSet { label })
            }
            Request::Probe { staged } => {
                let loaded =
                    LoadedModule::open(staged.into_staged()?).map_err(|e| e.to_string())?;
                let devices = probe_devices(&Arc::new(loaded)).map_err(|e| e.message)?;
                Ok(Reply::Probed {
                    devices: devices
                        .into_iter()
                        .map(|d| DeviceWire {
                            index: d.index,
                            name: d.name,
                            kind: d.kind,
                            driver: d.driver,
                            api: d.api,
                        })
                        .collect(),
                })
            }
            Request::TuneStep { budget_ms } => {
                let handle = self.served()?.handle();
                Ok(Reply::Tuned(super::tune::step(
                    &mut self.tuner,
                    &handle,
                    &self.replay_options,
                    budget_ms,
                )))
            }
            Request::Shutdown => {
                self.old = None;
                self.served = None;
                Ok(Reply::Bye)
            }
        }
    }

    /// Configures the worker. The workload is read at [`Host::start`], once
    /// the state is known: its residents that the state already holds are
    /// not read again.
    fn configure(&mut self, config: WorkerConfig) -> Result<Reply, String> {
        // Expected outputs: another backend (`--reference`), else the
        // workload's, else the reference module; both run here, in the
        // worker, like every module.
        let cross_reference = config
            .cross_reference
            .as_ref()
            .map(|w| start_engine(&config, w))
            .transpose()?;
        let reference = config
            .reference
            .as_ref()
            .map(|w| start_engine(&config, w))
            .transpose()?;
        let tolerances = match &config.tolerances {
            Some(path) => Tolerances::load(path).map_err(|e| e.to_string())?,
            None => Tolerances::default(),
        };
        let status = self.status.clone();
        self.replay_options = ReplayOptions {
            tolerances,
            timing: config.timing.then(replay::quick_timing),
            keep_outputs: config.keep_outputs,
            cross_reference,
            reference,
            watch: CallWatch::new(move |label, index, kernel| {
                status.begin("replay", label, Some((index, kernel)));
            }),
            roof: Default::default(),
            cold: match config.cold {
                true => Some(crate::machine::replay_roof::ColdFlush::new(config.threads)?),
                false => None,
            },
        };
        self.workload = None;
        self.config = config;
        Ok(Reply::Configured)
    }

    fn workload(&self) -> Result<&Workload, String> {
        self.workload
            .as_ref()
            .ok_or_else(|| "worker not configured".to_string())
    }

    fn start(
        &mut self,
        staged: crate::swap::stage::Staged,
        state: StateSource,
        loads: Option<(u64, std::path::PathBuf)>,
        prewritten: Option<crate::swap::snapshot_file::PartWritten>,
    ) -> Result<Reply, String> {
        let clock = std::time::Instant::now();
        // A state file's large tensors go into the loads part (then the
        // workload's loads the state does not give are read as before).
        let (prior, state_in_part) = match (&state, &loads) {
            (StateSource::File(file), Some((part, path))) => {
                let (snapshot, in_part) =
                    super::state_file_part::load_into_part(file, *part, path)?;
                (Some(snapshot), in_part)
            }
            _ => (load_state(&state)?, None),
        };
        let loads = if state_in_part.is_some() { None } else { loads };
        let marks = prior.as_ref().map(MappedMarks::of);
        let state_ms = clock.elapsed().as_secs_f64() * 1e3;
        let read = read_workload_answering(&self.config, &state, prior.as_ref(), loads.is_some())?;
        let read_ms = clock.elapsed().as_secs_f64() * 1e3 - state_ms;
        let (mut workload, given, left) = (read.workload, read.given, read.left);
        let mut in_part = None;
        let was_prewritten = prewritten.is_some();
        if let Some((part, path)) = &loads {
            use super::workload_loads::{NotInPart, from_file, from_memory, from_part};
            let written = match (&self.config.workload, prewritten) {
                // Written by the supervisor while the modules built.
                (Some(_), Some(written)) => from_part(&mut workload, &left, written, *part, path),
                (Some(file), None) => match from_file(&mut workload, &left, file, *part, path) {
                    Err(NotInPart::Refused(e)) => return Err(e.to_string()),
                    Err(NotInPart::Failed(e)) => Err(e),
                    Ok(done) => Ok(done),
                },
                // The bundled workload, made in memory.
                (None, _) => from_memory(&mut workload, *part, path),
            };
            match written {
                Ok(done) => in_part = done,
                Err(e) => {
                    tracing::warn!("the workload's residents stay the engine's own: {e}");
                    workload =
                        read_workload_answering(&self.config, &state, prior.as_ref(), false)?
                            .workload;
                }
            }
        }
        let workload_ms = clock.elapsed().as_secs_f64() * 1e3 - state_ms;
        self.workload = Some(workload);
        let loaded = LoadedModule::open(staged).map_err(|e| e.to_string())?;
        self.status.begin("start", loaded.label(), None);
        let (served, import) = ServedModule::start(loaded, self.config.engine_options(), prior)
            .map_err(|e| format!("cannot start: {e}"))?;
        let into_part = match (&in_part, self.config.workload.is_some()) {
            (None, _) if state_in_part.is_some() => {
                "the state file's large tensors copied into a part of their own".to_string()
            }
            (None, _) => "no large resident into a part".to_string(),
            (Some((bytes, _)), true) if was_prewritten => format!(
                "its {} large resident(s) served from the part the supervisor copied them into \
                 while the modules built ({bytes} bytes)",
                left.len()
            ),
            (Some((bytes, _)), true) => format!(
                "its {} large resident(s) left in the file, then copied into a part of their \
                 own and checked there ({bytes} bytes)",
                left.len()
            ),
            (Some((bytes, _)), false) => {
                format!("its large residents moved into a part of their own ({bytes} bytes)")
            }
        };
        tracing::debug!(
            "worker start: state in {state_ms:.0} ms, workload in {workload_ms:.0} ms \
             (read {read_ms:.0} ms, the part {:.0} ms: {into_part}) \
             ({given} resident load(s) taken from the state, not read), engine started at {:.0} ms",
            workload_ms - read_ms,
            clock.elapsed().as_secs_f64() * 1e3
        );
        let handle = served.handle();
        let info = handle.info().map_err(|e| e.to_string())?;
        let started = Started {
            label: handle.label().to_string(),
            version: handle.module().staged.version,
            device: info.device,
            import: import.to_string(),
            dropped: import.dropped.clone(),
            loads_bytes: in_part
                .as_ref()
                .or(state_in_part.as_ref())
                .map(|(bytes, _)| *bytes),
        };
        drop(handle);
        self.served = Some(served);
        self.checkpointed = in_part.or(state_in_part).map(|(_, last)| last);
        if let Some(marks) = marks {
            self.serve_checkpoint(Some(&state), marks);
        }
        Ok(Reply::Started(started))
    }

    /// After the engine started (or was rolled back) from the checkpoint
    /// `source`, whose sections were marked as `marks` when mapped: what
    /// it serves of the checkpoint's parts becomes this worker's last
    /// checkpoint, so its next one copies only what changed since
    /// (without it, a restarted worker's first checkpoint copied the whole
    /// state again). A section counts only while the engine holds the very
    /// mapped buffer (not a copy it made, nor bytes it transformed); a
    /// device backend's export downloads copies, so it has none.
    fn serve_checkpoint(&mut self, source: Option<&StateSource>, marks: MappedMarks) {
        let Some(StateSource::Checkpoint {
            file,
            bytes,
            parts,
            newest,
        }) = source
        else {
            return;
        };
        if *newest == 0 {
            return;
        }
        let Ok(handle) = self.served().map(|s| s.handle()) else {
            return;
        };
        if handle.info().is_ok_and(|i| on_a_device(&i.backend)) {
            return;
        }
        let (held, mut placed) = match (
            handle.export_state(),
            snapshot_file::placements(file, *newest),
        ) {
            (Ok(held), Ok(placed)) => (held, placed),
            (Err(e), _) => return tracing::debug!("no export to mark: {e}"),
            (_, Err(e)) => return tracing::debug!("no placements: {e}"),
        };
        placed.retain(|name, _| {
            matches!(held.get(name), Some(shared_state::Section::Tensor(t))
                if marks.0.get(name).is_some_and(|m| m.is(t.data())))
        });
        let mut part_bytes: std::collections::BTreeMap<u64, u64> = parts
            .iter()
            .map(|(p, path)| (*p, std::fs::metadata(path).map_or(0, |m| m.len())))
            .collect();
        part_bytes.insert(*newest, *bytes);
        let written = Checkpointed {
            bytes: *bytes,
            state_bytes: super::checkpoint_writer::tensor_bytes(&held),
            hash: String::new(),
            ms: 0.0,
            unchanged: false,
            copied_bytes: 0,
            parts: part_bytes.keys().copied().collect(),
        };
        self.checkpointed = Some(super::last_checkpoint::LastCheckpoint::served(
            written, &held, placed, part_bytes,
        ));
    }

    /// Writes the state into the checkpoint at `file` (part `part`), or
    /// nothing when it is exactly what this worker last wrote and that is
    /// still the current checkpoint. Only what changed since this worker's
    /// last checkpoint is copied when that one's parts are still `held`.
    fn checkpoint(
        &mut self,
        file: &Path,
        current: Option<String>,
        part: u64,
        held: &[u64],
    ) -> Result<Reply, String> {
        let start = std::time::Instant::now();
        let snapshot = self.export()?;
        if let (Some(current), Some(last)) = (&current, &self.checkpointed)
            && last.written.hash == *current
            && last.unchanged(&snapshot)
        {
            return Ok(Reply::Checkpointed(Checkpointed {
                ms: start.elapsed().as_secs_f64() * 1e3,
                unchanged: true,
                copied_bytes: 0,
                ..last.written.clone()
            }));
        }
        let mut last = self.checkpointed.take();
        // Served from a mapped checkpoint and never hashed since: the
        // digests of what stays in its parts, read once (not copied).
        if let Some(last) = &mut last
            && last.lacks_digests()
        {
            let (hashed, digests) = hash_only(&snapshot);
            last.learn_digests(&snapshot, &digests, &hashed.hash);
        }
        let earlier = last
            .as_ref()
            .map(|l| l.reusable(&snapshot, held))
            .unwrap_or_default();
        let (mut written, sealed, placed) =
            write_part(&snapshot, file, part, &|name, _| earlier.get(name).cloned())?;
        written.ms = start.elapsed().as_secs_f64() * 1e3;
        // The snapshot goes here: the engine's own copies with it.
        if let Err(e) = self.serve_from_checkpoint(snapshot, &sealed, file) {
            tracing::debug!("the residents stay the engine's own: {e}");
        }
        // What the engine holds now (mapped residents), to mark.
        let snapshot = self.export()?;
        self.checkpointed = Some(super::last_checkpoint::LastCheckpoint::new(
            written.clone(),
            &snapshot,
            placed,
            last.as_ref(),
        ));
        Ok(Reply::Checkpointed(written))
    }

    /// After `snapshot` was written into the sealed checkpoint `sealed`:
    /// every large resident the engine holds as the very buffer written
    /// (a CPU engine's own elements, not a device's downloaded copy) is
    /// handed back to it as the checkpoint's mapped bytes, so the engine's
    /// own copy goes (once no one else, such as a version kept for timing,
    /// holds it) and the state exists once, in the checkpoint. Returns how
    /// many residents now serve from the mapping.
    fn serve_from_checkpoint(
        &mut self,
        snapshot: Snapshot,
        sealed: &std::fs::File,
        path: &Path,
    ) -> Result<usize, String> {
        let handle = self.served()?.handle();
        // A GPU engine (vulkan, cuda) reads back its host copy of a
        // resident as the very tensor its export wrote, so it is handed
        // the mapped bytes too: given the bytes its host copy holds, it
        // adopts them as that copy (no upload) and lets its own download
        // go (`kernels/vulkan/src/tests/transfers.rs`,
        // `tests/vulkan_handoff.rs`). The state then exists once in host
        // memory, in the checkpoint, on every backend.
        // The sections this part holds (the others were unchanged: the
        // engine serves them from an earlier part already).
        let mapped =
            snapshot_file::map_parts(sealed, path, &|_| None, true).map_err(|e| e.to_string())?;
        let references = self.host_memory_references();
        let mut served = 0;
        for (name, section) in snapshot.sections() {
            let (Some(resident), shared_state::Section::Tensor(held)) =
                (name.strip_prefix("resident/"), section)
            else {
                continue;
            };
            if held.byte_len() <= super::state_marks::SMALL {
                continue;
            }
            let Some((_, shared_state::Section::Tensor(in_checkpoint))) =
                mapped.sections().find(|(n, _)| *n == name)
            else {
                continue;
            };
            let the_engines = handle
                .read_resident(resident)
                .is_ok_and(|t| t.data().same_as(held.data()));
            // The same bytes by construction (written from `held` just now):
            // checked by type and shape, not read again.
            if the_engines
                && in_checkpoint.dtype() == held.dtype()
                && in_checkpoint.shape() == held.shape()
            {
                handle
                    .put_resident(resident, in_checkpoint.clone())
                    .map_err(|e| e.to_string())?;
                // The reference engines' copy of it, when it is the very
                // buffer (the workload's load, shared), too: else the
                // reference would keep an older checkpoint mapped for the
                // whole session (a third checkpoint's memory during a save).
                for engine in &references {
                    if engine
                        .read_resident(resident)
                        .is_ok_and(|t| t.data().same_as(held.data()))
                    {
                        engine
                            .put_resident(resident, in_checkpoint.clone())
                            .map_err(|e| e.to_string())?;
                    }
                }
                // The workload's load of it, when it is the very buffer
                // (loaded from there, never written since), too: else the
                // workload would keep the copy alive.
                for step in self.workload.iter_mut().flat_map(|w| w.steps.iter_mut()) {
                    if let crate::workload::Step::Load { tensor, .. } = step
                        && tensor.data().same_as(held.data())
                    {
                        *tensor = in_checkpoint.clone();
                    }
                }
                served += 1;
            }
        }
        Ok(served)
    }

    /// The reference engines (`--reference`, the reference module) that
    /// may share a buffer with the served engine: all but a device
    /// backend's (asking one for a resident downloads a copy, which is
    /// never the served engine's buffer).
    fn host_memory_references(&self) -> Vec<EngineHandle> {
        [
            &self.replay_options.reference,
            &self.replay_options.cross_reference,
        ]
        .into_iter()
        .flatten()
        .filter(|e| e.info().is_ok_and(|i| !on_a_device(&i.backend)))
        .cloned()
        .collect()
    }

    fn export(&self) -> Result<Snapshot, String> {
        self.served()?
            .handle()
            .export_state()
            .map_err(|e| e.to_string())
    }

    fn replay(
        &mut self,
        recorded: Option<crate::workload::timing::Timings>,
    ) -> Result<Reply, String> {
        let handle = self.served()?.handle();
        let old = self.old.take();
        let baseline = match (&old, &recorded) {
            (Some(old), _) => Baseline::Interleaved(old),
            (None, Some(r)) => Baseline::Recorded(r),
            (None, None) => Baseline::None,
        };
        if self.replay_options.timing.is_some() && self.replay_options.roof.peaks().is_none() {
            self.replay_options.roof = super::tune::roof_for(&self.config, &handle);
        }
        let report = replay::replay_with(&handle, self.workload()?, &self.replay_options, baseline);
        let staged = handle.module().staged.clone();
        replay::log_events(&report, &staged.module, staged.version);
        // The replaced version retires now that both were timed (after the
        // replay's events, as in-process).
        drop(old);
        let summary = ReplaySummary {
            table: report.table_data(),
            first_failure: report.first_failure().map(|f| CallFailure {
                index: f.index,
                kernel: f.kernel.clone(),
                why: f
                    .error
                    .clone()
                    .or_else(|| f.comparison.as_ref().map(|c| c.summary()))
                    .unwrap_or_default(),
            }),
            timings: report.timings(),
            skipped: report
                .skipped()
                .map(|c| CallFailure {
                    index: c.index,
                    kernel: c.kernel.clone(),
                    why: c.skipped.clone().unwrap_or_default(),
                })
                .collect(),
            rates: Box::new(report.rates(&self.replay_options)),
        };
        self.tuner = match report.passed() {
            true => super::tune::plan(
                &self.config,
                &handle,
                self.workload()?,
                &self.replay_options,
            ),
            false => None,
        };
        if self.config.keep_outputs {
            let report = Arc::new(report);
            if report.passed() {
                self.last_passing = Some(report.clone());
            }
            self.last_replay = Some(report);
        }
        Ok(Reply::Replayed(summary))
    }

    fn record(&self, path: &Path) -> Result<Reply, String> {
        let report = self
            .last_passing
            .as_ref()
            .ok_or_else(|| "no passing replay in this worker to record".to_string())?;
        let handle = self.served()?.handle();
        let name = format!("{}-session", handle.module().staged.module);
        let workload =
            replay::session_workload(&name, &handle, report).map_err(|e| e.to_string())?;
        crate::workload::write(&workload, path).map_err(|e| e.to_string())?;
        Ok(Reply::Recorded {
            description: workload.describe(),
        })
    }
}

impl Host {
    /// Writes the serving version's last replay as a workload at `path`
    /// (its outputs as expected values) and makes it the workload.
    fn bless(&mut self, path: &Path) -> Result<Reply, String> {
        let handle = self.served()?.handle();
        let report = self
            .last_replay
            .clone()
            .filter(|r| r.label == handle.label())
            .ok_or_else(|| format!("no replay of {} to bless yet", handle.label()))?;
        let name = path
            .file_stem()
            .map_or("blessed".into(), |s| s.to_string_lossy().into_owned());
        let workload =
            replay::session_workload(&name, &handle, &report).map_err(|e| e.to_string())?;
        crate::workload::write(&workload, path).map_err(|e| e.to_string())?;
        let mut config = self.config.clone();
        config.workload = Some(path.to_path_buf());
        let reread = read_workload(&config)?;
        self.config = config;
        self.workload = Some(reread);
        Ok(Reply::Recorded {
            description: workload.describe(),
        })
    }
}

impl Host {
    /// The serving version's last replay (kept with `keep_outputs`).
    fn last_replay_of_serving(&self) -> Result<Arc<ReplayReport>, String> {
        let handle = self.served()?.handle();
        self.last_replay
            .clone()
            .filter(|r| r.label == handle.label())
            .ok_or_else(|| format!("no replay of {} yet", handle.label()))
    }

    /// Writes the last replay's calls with their outputs (see
    /// [`crate::workload::cross_compare::outputs_workload`]).
    fn write_outputs(&self, path: &Path) -> Result<Reply, String> {
        let report = self.last_replay_of_serving()?;
        let workload = crate::workload::cross_compare::outputs_workload(
            &format!("{}-outputs", report.label),
            self.workload()?,
            &report,
        );
        crate::workload::write(&workload, path).map_err(|e| e.to_string())?;
        Ok(Reply::Recorded {
            description: workload.describe(),
        })
    }

    /// Compares the last replay's outputs with another backend's.
    fn compare_outputs(&self, path: &Path, against: &str) -> Result<Reply, String> {
        let report = self.last_replay_of_serving()?;
        let theirs = crate::workload::read(path).map_err(|e| e.to_string())?;
        let handle = self.served()?.handle();
        let mut shapes = crate::workload::cross_compare::load_shapes(self.workload()?);
        if let Ok(residents) = handle.residents() {
            for r in residents {
                shapes.entry(r.name).or_insert((r.dtype, r.shape));
            }
        }
        Ok(Reply::Compared(
            crate::workload::cross_compare::cross_compare(
                &report,
                &theirs,
                against,
                &handle.module().staged.files.kernels,
                &self.replay_options.tolerances,
                &shapes,
            ),
        ))
    }
}

/// The workload of `config`: its file, else the bundled one built from the
/// workspace's declarations.
fn read_workload(config: &WorkerConfig) -> Result<Workload, String> {
    match (&config.workload, &config.workspace) {
        (Some(path), _) => crate::workload::read(path).map_err(|e| e.to_string()),
        (None, Some(root)) => crate::workload::generate::workspace_bundled_workload(root),
        (None, None) => Err("no workload and no workspace to build the bundled one from".into()),
    }
}

/// The workload of `config`, read with the resident loads that the state
/// `prior` (read from `source`) already holds taken from it instead of
/// from the file: a load whose section has the crc32 the state's file
/// recorded for that resident, and its dtype and shape. So a worker
/// restarted from a 4 GiB checkpoint reads only what the checkpoint lacks,
/// and its workload shares the checkpoint's (mapped) bytes rather than
/// holding a second copy. With `into_part`, the large loads the state does
/// not give ([`super::workload_loads::goes_into_part`]) are left in the
/// file, unread: the caller copies them into the loads part
/// ([`super::workload_loads::from_file`]).
fn read_workload_answering(
    config: &WorkerConfig,
    source: &StateSource,
    prior: Option<&Snapshot>,
    into_part: bool,
) -> Result<Answered, String> {
    let Some(path) = &config.workload else {
        return read_workload(config).map(|workload| Answered {
            workload,
            given: 0,
            left: Vec::new(),
        });
    };
    let crcs = match (source, prior) {
        (StateSource::File(file) | StateSource::Checkpoint { file, .. }, Some(_)) => {
            snapshot_file::tensor_crcs(file).map_err(|e| e.to_string())?
        }
        _ => Default::default(),
    };
    crate::workload::format::read_answering(path, &mut |load| {
        let key = format!("resident/{}", load.name);
        let given = match prior.and_then(|p| p.get(&key)) {
            Some(shared_state::Section::Tensor(t))
                if crcs.get(&key) == Some(&load.crc32)
                    && t.dtype() == load.dtype
                    && t.shape() == load.shape =>
            {
                Some(t.clone())
            }
            _ => None,
        };
        match given {
            Some(tensor) => LoadAnswer::Given(tensor),
            None if into_part && super::workload_loads::goes_into_part(load) => LoadAnswer::Leave,
            None => LoadAnswer::Read,
        }
    })
    .map_err(|e| e.to_string())
}

/// Loads a staged module (hash-checked) and starts its engine: the
/// reference module, or the `--reference` backend. Its files are the
/// supervisor's, handed to every worker it starts: they stay when this
/// worker ends.
fn start_engine(config: &WorkerConfig, wire: &StagedWire) -> Result<EngineHandle, String> {
    let staged = wire.clone().into_staged()?;
    let loaded = LoadedModule::open(staged)
        .map_err(|e| e.to_string())?
        .leaving_files();
    EngineHandle::start(Arc::new(loaded), &config.engine_options(), None)
        .map(|(h, _)| h)
        .map_err(|e| e.to_string())
}

fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Configure(_) => "configure",
        Request::Start { .. } => "start",
        Request::LoadWorkloadState => "load",
        Request::Swap { .. } => "swap",
        Request::Replay { .. } => "replay",
        Request::Checkpoint { .. } => "checkpoint",
        Request::StateHash => "export",
        Request::Record { .. } => "record",
        Request::Bless { .. } => "bless",
        Request::WriteOutputs { .. } => "outputs",
        Request::CompareOutputs { .. } => "compare",
        Request::Probe { .. } => "probe",
        Request::ReloadWorkload => "reload",
        Request::SetReference { .. } => "reference",
        Request::TuneStep { .. } => "tune",
        Request::Shutdown => "shutdown",
    }
}

/// The snapshot `source` names (`None` for an empty start).
fn load_state(source: &StateSource) -> Result<Option<Snapshot>, String> {
    Ok(match source {
        StateSource::Empty => None,
        StateSource::File(path) => Some(snapshot_file::load(path).map_err(|e| e.to_string())?),
        StateSource::Checkpoint { file, parts, .. } => Some(map_checkpoint(file, parts)?),
    })
}

/// The sealed checkpoint whose newest part is at `path`, served in place
/// (mapped, nothing copied: `snapshot_file::map_parts`), its earlier
/// `parts` too; read and copied instead, with a warning, if it cannot be
/// mapped (not sealed).
fn map_checkpoint(path: &Path, parts: &[(u64, std::path::PathBuf)]) -> Result<Snapshot, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open the checkpoint {}: {e}", path.display()))?;
    let earlier = |part: u64| {
        let (_, path) = parts.iter().find(|(p, _)| *p == part)?;
        std::fs::File::open(path).ok()
    };
    match snapshot_file::map_parts(&file, path, &earlier, false) {
        Ok(snapshot) => Ok(snapshot),
        Err(e) => {
            tracing::warn!("{e}; reading the checkpoint instead");
            snapshot_file::load(path).map_err(|e| e.to_string())
        }
    }
}

/// The tensor sections of a mapped checkpoint, each marked by the mapped
/// buffer it was served as (weakly: nothing is kept alive), to tell
/// afterwards which ones an engine holds as those very bytes.
struct MappedMarks(std::collections::BTreeMap<String, shared_state::Mark>);

impl MappedMarks {
    fn of(snapshot: &Snapshot) -> MappedMarks {
        MappedMarks(
            snapshot
                .sections()
                .filter_map(|(name, section)| match section {
                    shared_state::Section::Tensor(t) => Some((name.to_string(), t.data().mark())),
                    shared_state::Section::Scalar(_) => None,
                })
                .collect(),
        )
    }
}

/// Whether a backend keeps its residents on a device rather than in host
/// memory: asking it for one downloads a copy, and handing it one uploads.
fn on_a_device(backend: &str) -> bool {
    matches!(backend, "vulkan" | "cuda")
}

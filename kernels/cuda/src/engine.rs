//! The CUDA engine: a primary context on one device, the declared kernels
//! whose `.cu` file is among the version's sources compiled for it by NVRTC,
//! resident buffers in device memory and call counters. A call is launched
//! from its declaration alone (see [`crate::convention`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};
use shared_state::{
    Arg, Call, DType, DeviceHandle, DeviceSection, Engine, EngineContext, EngineError, ErrorKind,
    KernelSet, ModuleInfo, Output, ResidentInfo, Scalar, Snapshot, Tensor,
};

use crate::availability::{self, driver_error, startup_error};
use crate::buffers::DeviceTensor;
use crate::compile;
use crate::device::{self, DeviceSummary};
use crate::launch::{self, CompileTimes, Kernels};
use crate::ptx_cache::{self, PtxCache};
use crate::resident_memory::Placement;
use crate::residents::{
    DEVICE_COPY_NOTE, Device, Resident, TO_DEVICE_NOTE, TO_HOST_NOTE, Transfers,
};

/// Snapshot section prefix of resident buffers (as in the CPU module).
const RESIDENT_PREFIX: &str = "resident/";
/// `KILN_CUDA_HANDOFF=host`: a swap carries the residents through host
/// memory (download, upload) instead of handing them over on the device,
/// should a driver refuse the handoff.
const HANDOFF_VAR: &str = "KILN_CUDA_HANDOFF";
/// Snapshot section prefix of the per-kernel call counters.
const CALLS_PREFIX: &str = "counters/calls/";
/// Prefix of the sections a swap hands each resident's host copy over in,
/// next to its memory left on the device (`export_handoff`): the next
/// version takes it as its own ([`Resident::take_handed_host_copy`]), so
/// its first export downloads nothing and shares the very elements the
/// last checkpoint marked (a checkpoint after a swap copies only what
/// changed). A cache (`cache/`): never hashed, and a version that does not
/// know it only drops it.
pub const HOST_COPY_PREFIX: &str = "cache/cuda/host-copy/";

pub struct CudaEngine {
    label: String,
    device: DeviceSummary,
    driver: (i32, i32),
    nvrtc: (i32, i32),
    compile_times: CompileTimes,
    /// The PTX of every kernel with what it was compiled from, handed to
    /// the next engine in the snapshot (see [`crate::ptx_cache`]).
    ptx: Vec<(String, ptx_cache::Key, String)>,
    /// How many kernels took their PTX from the previous engine's cache.
    ptx_reused: usize,
    /// Named buffers that stay in device memory between calls. Declared
    /// before the kernels, stream and context so they are freed first.
    resident: BTreeMap<String, Resident>,
    /// Where resident memory is made (virtual memory management).
    placement: Placement,
    /// The device's UUID, hex: what handed-over memory must come from.
    identity: String,
    /// Bytes copied each way, counted (`transfers/*` notes).
    transfers: Transfers,
    /// A swap hands the residents over on the device (the device exports
    /// fds, and `KILN_CUDA_HANDOFF=host` does not ask for host memory).
    handoff_on_device: bool,
    /// Calls served per kernel, across versions.
    calls: BTreeMap<String, i64>,
    /// The version's declarations.
    decls: Arc<KernelSet>,
    kernels: Kernels,
    stream: Arc<CudaStream>,
    /// The device's primary context, retained by this engine (the stream
    /// and every buffer hold it too); released last.
    _primary: Arc<CudaContext>,
}

impl CudaEngine {
    /// The module's factory: checks driver, device and NVRTC, retains the
    /// primary context of device `ctx.option("device")` (default 0),
    /// compiles the kernels and uploads the resident buffers of the prior
    /// snapshot.
    pub fn create(
        ctx: EngineContext,
        mut prior: Option<&mut Snapshot>,
    ) -> Result<(CudaEngine, Vec<String>), EngineError> {
        let index = match ctx.option("device") {
            None => 0,
            Some(text) => text.trim().parse::<usize>().map_err(|_| {
                EngineError::bad_call(format!(
                    "option device={text:?}: the CUDA backend takes a device index (0, 1, ...)"
                ))
            })?,
        };
        availability::require_driver()?;
        // Checks cuInit (no device -> CUDA_ERROR_NO_DEVICE) before NVRTC,
        // so a machine without a GPU says so whatever NVRTC does.
        let cu_ctx = CudaContext::new(index)
            .map_err(|e| startup_error(&format!("CUDA device {index}"), e))?;
        availability::require_nvrtc()?;
        let summary = device::describe(index)?;
        let driver = device::driver_version()?;
        let nvrtc = compile::nvrtc_version()?;
        // SAFETY: the engine uses one stream (the context's default stream)
        // and never shares its buffers with another stream, so cudarc's
        // cross-stream event tracking (two events per allocation) is not
        // needed.
        unsafe { cu_ctx.disable_event_tracking() };
        let stream = cu_ctx.default_stream();
        let placement = Placement::of_device(&cu_ctx)?;
        let placement_exportable = placement.exportable;
        let identity = cu_ctx
            .uuid()
            .map(|u| {
                u.bytes
                    .iter()
                    .map(|b| format!("{:02x}", *b as u8))
                    .collect::<String>()
            })
            .map_err(|e| startup_error(&format!("UUID of CUDA device {index}"), e))?;
        let (major, minor) = summary.compute_capability;
        let cache = prior
            .as_deref_mut()
            .map(PtxCache::take_from)
            .unwrap_or_default();
        let (compiled, undeclared) = compile::compile_all_cached(
            &ctx.kernels,
            &ctx.sources,
            &compile::virtual_arch(major, minor),
            nvrtc,
            &cache,
        )?;
        let ptx: Vec<_> = compiled
            .iter()
            .map(|c| (c.path.clone(), c.key.clone(), c.ptx.to_src()))
            .collect();
        let ptx_reused = compiled.iter().filter(|c| c.cached).count();
        for path in &undeclared {
            shared_state::tracing::warn!(
                target: "kernel_cuda",
                label = %ctx.label,
                "{path}: no kernel of that name is declared (kernels/declarations/NAME.toml); not used"
            );
        }
        let (kernels, compile_times) = Kernels::load(&cu_ctx, compiled)?;
        let mut engine = CudaEngine {
            label: ctx.label.clone(),
            device: summary,
            driver,
            nvrtc,
            compile_times,
            ptx,
            ptx_reused,
            resident: BTreeMap::new(),
            placement,
            identity: format!("cuda device={identity}"),
            transfers: Transfers::default(),
            handoff_on_device: placement_exportable
                && std::env::var(HANDOFF_VAR).map_or(true, |v| v != "host"),
            calls: BTreeMap::new(),
            decls: ctx.kernels.clone(),
            kernels,
            stream,
            _primary: cu_ctx,
        };
        if let Some(snapshot) = prior {
            // Residents the previous version left on the device are
            // mapped here, no byte copied.
            for (name, section) in snapshot.take_device_with_prefix(RESIDENT_PREFIX) {
                engine.import_resident(&name, section)?;
            }
            // Their host copies, where the previous version had one.
            for (name, tensor) in snapshot.take_tensors_with_prefix(HOST_COPY_PREFIX) {
                if let Some(r) = engine.resident.get_mut(&name) {
                    r.take_handed_host_copy(tensor);
                }
            }
            // Residents the host carried (another backend, a file) are
            // uploaded.
            for (name, tensor) in snapshot.take_tensors_with_prefix(RESIDENT_PREFIX) {
                let resident = engine.device().upload(tensor)?;
                engine.resident.insert(name, resident);
            }
            for name in snapshot.section_names() {
                if let Some(kernel) = name.strip_prefix(CALLS_PREFIX) {
                    if let Some(n) = snapshot.take_scalar(&name).and_then(|s| s.as_i64()) {
                        engine.calls.insert(kernel.to_string(), n);
                    }
                }
            }
            engine.synchronize("upload the resident buffers")?;
        }
        shared_state::tracing::debug!(
            target: "kernel_cuda",
            label = %engine.label,
            device = %engine.device.name,
            residents = engine.resident.len(),
            compile_ms = engine.total_compile_time().as_secs_f64() * 1e3,
            ptx_reused = engine.ptx_reused,
            "cuda engine created ({} of {} kernels' PTX from the previous version)",
            engine.ptx_reused,
            engine.ptx.len()
        );
        Ok((engine, Vec::new()))
    }

    /// What the resident functions need.
    fn device(&self) -> Device<'_> {
        Device {
            placement: &self.placement,
            stream: &self.stream,
            transfers: &self.transfers,
        }
    }

    /// Maps a resident the previous version left on the device.
    fn import_resident(&mut self, name: &str, section: DeviceSection) -> Result<(), EngineError> {
        if section.device != self.identity {
            return Err(EngineError::new(
                ErrorKind::State,
                format!(
                    "resident {name:?} was handed over on {} and this engine runs on {}: \
                     it cannot import it",
                    section.device, self.identity
                ),
            ));
        }
        let DeviceHandle::OpaqueFd(fd) = &section.handle;
        let memory = if section.bytes == 0 {
            None
        } else {
            let size = usize::try_from(section.allocation).map_err(|_| {
                EngineError::internal(format!("resident {name:?}: allocation too large"))
            })?;
            let len = usize::try_from(section.bytes)
                .map_err(|_| EngineError::internal(format!("resident {name:?}: too large")))?;
            // A driver that refuses the fd (a container without the
            // sharing it needs, a driver that imports only across
            // processes) is a `State` error: the host then hands the state
            // over through host memory instead of failing the swap.
            Some(self.placement.import(fd, size, len).map_err(|e| {
                EngineError::new(
                    ErrorKind::State,
                    format!("resident {name:?}: cannot map the handed-over device memory: {e}"),
                )
            })?)
        };
        self.resident.insert(
            name.to_string(),
            Resident::handed_over(section.dtype, section.shape, memory),
        );
        Ok(())
    }

    /// Readies the residents `call` may write in place (inputs whose
    /// pointer its source does not declare `const`): their host copy goes,
    /// and shared memory is copied on the device first.
    fn before_writes(&mut self, call: &Call) -> Result<(), EngineError> {
        let Some(kernel) = self.kernels.get(&call.kernel) else {
            return Ok(());
        };
        let written: Vec<String> = kernel
            .written_inputs
            .iter()
            .filter_map(|&i| match call.args.get(i) {
                Some(Arg::Resident(name)) => Some(name.clone()),
                _ => None,
            })
            .collect();
        let device = Device {
            placement: &self.placement,
            stream: &self.stream,
            transfers: &self.transfers,
        };
        for name in written {
            if let Some(r) = self.resident.get_mut(&name) {
                if device.before_write(r)? {
                    shared_state::tracing::debug!(
                        target: "kernel_cuda",
                        label = %self.label,
                        "resident {name:?} copied on the device before {} writes it: its memory is shared with another version",
                        call.kernel
                    );
                }
            }
        }
        Ok(())
    }

    /// The sections every export has besides the residents.
    fn export_rest(&self, snapshot: &mut Snapshot) {
        for (kernel, n) in &self.calls {
            snapshot.insert_scalar(format!("{CALLS_PREFIX}{kernel}"), Scalar::I64(*n));
        }
        for (path, key, ptx) in &self.ptx {
            ptx_cache::insert(snapshot, path, key, ptx);
        }
    }

    /// Total NVRTC time of this engine's start.
    pub fn total_compile_time(&self) -> Duration {
        self.compile_times.iter().map(|(_, d)| *d).sum()
    }

    /// Waits for the engine's stream.
    pub fn synchronize(&self, doing: &str) -> Result<(), EngineError> {
        self.stream
            .synchronize()
            .map_err(|e| driver_error(&format!("{doing} (synchronize)"), e))
    }

    fn resident_ref(&self, name: &str) -> Result<&Resident, EngineError> {
        self.resident.get(name).ok_or_else(|| {
            EngineError::new(
                ErrorKind::UnknownBuffer,
                format!("no resident buffer {name:?}"),
            )
        })
    }

    /// Runs the call on the device; the outputs stay there (as resident
    /// memory when the call stores its output).
    fn compute(&self, call: &Call) -> Result<Outputs, EngineError> {
        let decl = self.decls.lookup(&call.kernel)?;
        let kernel = self.kernels.get(&call.kernel).ok_or_else(|| {
            EngineError::new(
                ErrorKind::UnknownKernel,
                format!(
                    "{} is declared but not implemented on cuda (no {} among the sources)",
                    call.kernel,
                    compile::source_path(&call.kernel)
                ),
            )
        })?;
        // Check shapes and parameters before touching the device.
        let mut shapes: Vec<(DType, Vec<usize>)> = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            shapes.push(match arg {
                Arg::Tensor(t) => (t.dtype(), t.shape().to_vec()),
                Arg::Resident(name) => {
                    let r = self.resident_ref(name)?;
                    (r.dtype, r.shape.clone())
                }
            });
        }
        let view: Vec<(DType, &[usize])> = shapes.iter().map(|(d, s)| (*d, s.as_slice())).collect();
        let bound = decl
            .bind(&view, &call.params)
            .map_err(|e| EngineError::bad_call(e.0))?;
        if call.store_as.is_some() && bound.outputs.len() != 1 {
            return Err(EngineError::bad_call(format!(
                "{}: store_as needs a kernel with one output; it has {}",
                call.kernel,
                bound.outputs.len()
            )));
        }
        let values = kernel.layout.values(&call.kernel, &bound)?;
        let launches = launch::plan(decl, &bound)?;
        let mut scratch_shapes = Vec::with_capacity(decl.launch.scratch.len());
        for t in &decl.launch.scratch {
            let shape = t.eval_shape(&bound.dims).map_err(|e| {
                EngineError::bad_call(format!("{}: scratch {}: {e}", call.kernel, t.name))
            })?;
            scratch_shapes.push((t.dtype, shape));
        }

        let mut uploaded = Vec::new();
        let mut pointers = Vec::with_capacity(kernel.layout.storage.len());
        for arg in &call.args {
            pointers.push(match arg {
                Arg::Resident(name) => self.resident_ref(name)?.ptr(),
                Arg::Tensor(t) => {
                    let on_device = DeviceTensor::upload(&self.stream, t)?;
                    Transfers::add(&self.transfers.to_device, on_device.byte_len());
                    let ptr = on_device.ptr(&self.stream);
                    uploaded.push(on_device);
                    ptr
                }
            });
        }
        let outs = if call.store_as.is_some() {
            let (dtype, shape) = &bound.outputs[0];
            let len = byte_len(*dtype, shape)?;
            let memory = self.device().zeros(len)?;
            pointers.push(memory.as_ref().map_or(0, |m| m.ptr));
            Outputs::Stored(Resident::computed(*dtype, shape.clone(), memory))
        } else {
            let outs = bound
                .outputs
                .iter()
                .map(|(dtype, shape)| DeviceTensor::zeros(&self.stream, *dtype, shape))
                .collect::<Result<Vec<_>, _>>()?;
            pointers.extend(outs.iter().map(|t| t.ptr(&self.stream)));
            Outputs::Returned(outs)
        };
        let scratch = scratch_shapes
            .iter()
            .map(|(dtype, shape)| DeviceTensor::zeros(&self.stream, *dtype, shape))
            .collect::<Result<Vec<_>, _>>()?;
        pointers.extend(scratch.iter().map(|t| t.ptr(&self.stream)));
        kernel.launch(&call.kernel, &self.stream, &pointers, &values, &launches)?;
        // Surface launch failures (and free the uploaded inputs and the
        // scratch only after the kernels that use them are done).
        self.synchronize(&format!("run {}", call.kernel))?;
        drop(uploaded);
        drop(scratch);
        Ok(outs)
    }

    /// Downloads a returned output, counted.
    fn download(&self, t: &DeviceTensor) -> Result<Tensor, EngineError> {
        let tensor = t.download(&self.stream)?;
        Transfers::add(&self.transfers.to_host, t.byte_len());
        Ok(tensor)
    }
}

/// What a call's outputs became.
enum Outputs {
    /// Every output, on the device, to be downloaded.
    Returned(Vec<DeviceTensor>),
    /// The one output, already resident memory, to be stored.
    Stored(Resident),
}

/// Bytes of a `dtype` tensor of `shape`.
fn byte_len(dtype: DType, shape: &[usize]) -> Result<usize, EngineError> {
    shared_state::element_count(shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| {
            EngineError::bad_call(format!(
                "shape {} overflows",
                shared_state::format_shape(shape)
            ))
        })
}

impl Engine for CudaEngine {
    fn info(&self) -> Result<ModuleInfo, EngineError> {
        let mut notes = BTreeMap::new();
        let (major, minor) = self.device.compute_capability;
        notes.insert(
            "compute_capability".to_string(),
            Scalar::Text(format!("{major}.{minor}")),
        );
        notes.insert(
            "nvrtc".to_string(),
            Scalar::Text(format!("{}.{}", self.nvrtc.0, self.nvrtc.1)),
        );
        for (file, time) in &self.compile_times {
            notes.insert(
                format!("compile_ms/{file}"),
                Scalar::F64(time.as_secs_f64() * 1e3),
            );
        }
        notes.insert(
            "ptx/reused".to_string(),
            Scalar::I64(self.ptx_reused as i64),
        );
        notes.insert(
            "ptx/compiled".to_string(),
            Scalar::I64((self.ptx.len() - self.ptx_reused) as i64),
        );
        for (kernel, n) in &self.calls {
            notes.insert(format!("{CALLS_PREFIX}{kernel}"), Scalar::I64(*n));
        }
        for (note, counter) in [
            (TO_DEVICE_NOTE, &self.transfers.to_device),
            (TO_HOST_NOTE, &self.transfers.to_host),
            (DEVICE_COPY_NOTE, &self.transfers.device_copy),
        ] {
            notes.insert(note.to_string(), Scalar::I64(counter.get() as i64));
        }
        notes.insert(
            "device/handoff".to_string(),
            Scalar::Bool(self.handoff_on_device),
        );
        Ok(ModuleInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            backend: "cuda".to_string(),
            device: format!(
                "{} (CUDA device {}, driver CUDA {}.{})",
                self.device.name, self.device.index, self.driver.0, self.driver.1
            ),
            kernels: self.kernels.kernels.keys().cloned().collect(),
            notes,
        })
    }

    fn run(&mut self, call: Call) -> Result<Output, EngineError> {
        let started = Instant::now();
        self.before_writes(&call)?;
        let outs = self.compute(&call)?;
        *self.calls.entry(call.kernel.clone()).or_insert(0) += 1;
        shared_state::tracing::trace!(
            target: "kernel_cuda",
            kernel = %call.kernel,
            us = started.elapsed().as_secs_f64() * 1e6,
            "call"
        );
        match (outs, call.store_as) {
            (Outputs::Stored(resident), Some(name)) => {
                let shape = resident.shape.clone();
                self.resident.insert(name.clone(), resident);
                Ok(Output::Stored { name, shape })
            }
            (Outputs::Returned(outs), _) if outs.len() == 1 => {
                Ok(Output::Value(self.download(&outs[0])?))
            }
            (Outputs::Returned(outs), _) => Ok(Output::Values(
                outs.iter()
                    .map(|t| self.download(t))
                    .collect::<Result<_, _>>()?,
            )),
            (Outputs::Stored(_), None) => {
                Err(EngineError::internal("an output stored with no name"))
            }
        }
    }

    /// A tensor of the very bytes the resident's host copy holds is adopted
    /// as the host copy, nothing uploaded ([`Resident::adopt`]); anything
    /// else is uploaded into new memory.
    fn put_resident(&mut self, name: &str, tensor: Tensor) -> Result<(), EngineError> {
        if self.resident.get(name).is_some_and(|r| r.adopt(&tensor)) {
            return Ok(());
        }
        let resident = self.device().upload(tensor)?;
        self.resident.insert(name.to_string(), resident);
        Ok(())
    }

    fn read_resident(&self, name: &str) -> Result<Tensor, EngineError> {
        self.device().download(self.resident_ref(name)?)
    }

    fn residents(&self) -> Result<Vec<ResidentInfo>, EngineError> {
        Ok(self
            .resident
            .iter()
            .map(|(name, t)| ResidentInfo {
                name: name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            })
            .collect())
    }

    /// Residents through host memory: each one's host copy, or
    /// downloaded (only what a kernel wrote since it was last here).
    fn export_state(&self) -> Result<Snapshot, EngineError> {
        let mut snapshot = Snapshot::new(env!("CARGO_PKG_NAME"), "cuda");
        let device = self.device();
        for (name, r) in &self.resident {
            snapshot.insert_tensor(format!("{RESIDENT_PREFIX}{name}"), device.download(r)?);
        }
        self.export_rest(&mut snapshot);
        Ok(snapshot)
    }

    /// Residents stay on the device: each one's memory as an fd the next
    /// version maps (`crate::resident_memory`). Neither engine writes
    /// shared memory afterwards (a stored output is new memory; a kernel
    /// that writes a resident input writes a device copy, see
    /// `before_writes`). Each one's host copy goes with it
    /// ([`HOST_COPY_PREFIX`]: shared, not copied).
    fn export_handoff(&self) -> Result<Snapshot, EngineError> {
        if !self.handoff_on_device {
            return self.export_state();
        }
        self.placement.bind()?;
        // Every resident's fd first: where the driver refuses to export
        // one, the state goes through host memory (nothing is marked
        // shared yet).
        let mut fds = Vec::with_capacity(self.resident.len());
        for (name, r) in &self.resident {
            let fd = match &r.memory {
                Some(memory) => memory.export(),
                // An empty tensor has no memory: a handle to nothing.
                None => empty_fd(),
            };
            match fd {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    shared_state::tracing::warn!(
                        target: "kernel_cuda",
                        label = %self.label,
                        "cannot export resident {name:?} on the device ({e}); handing the state over through host memory"
                    );
                    return self.export_state();
                }
            }
        }
        let mut snapshot = Snapshot::new(env!("CARGO_PKG_NAME"), "cuda");
        let mut bytes = 0;
        for ((name, r), fd) in self.resident.iter().zip(fds) {
            let allocation = r.memory.as_ref().map_or(0, |m| m.size as u64);
            let len = r.memory.as_ref().map_or(0, |m| m.len as u64);
            bytes += len;
            r.shared.set(true);
            if let Some(host) = r.host_copy() {
                snapshot.insert_tensor(format!("{HOST_COPY_PREFIX}{name}"), host);
            }
            snapshot.insert_device(
                format!("{RESIDENT_PREFIX}{name}"),
                DeviceSection {
                    handle: DeviceHandle::OpaqueFd(Arc::new(fd)),
                    bytes: len,
                    allocation,
                    memory_kind: 0,
                    dtype: r.dtype,
                    shape: r.shape.clone(),
                    device: self.identity.clone(),
                },
            );
        }
        shared_state::tracing::info!(
            target: "kernel_cuda",
            label = %self.label,
            residents = self.resident.len(),
            bytes,
            "cuda state handed over on the device: {} residents ({bytes} bytes), none copied through the host",
            self.resident.len()
        );
        self.export_rest(&mut snapshot);
        Ok(snapshot)
    }
}

/// A descriptor standing for an empty resident's (absent) memory: the
/// section needs a handle; an import of 0 bytes never reads it.
fn empty_fd() -> Result<std::os::fd::OwnedFd, EngineError> {
    std::fs::File::open("/dev/null")
        .map(std::os::fd::OwnedFd::from)
        .map_err(|e| EngineError::internal(format!("opening /dev/null: {e}")))
}

impl Drop for CudaEngine {
    fn drop(&mut self) {
        // Let queued work finish before buffers and modules are freed.
        if let Err(err) = self.stream.synchronize() {
            shared_state::tracing::warn!(
                target: "kernel_cuda",
                label = %self.label,
                "synchronize before drop failed: {}",
                availability::error_code_name(&err)
            );
        }
    }
}

//! The CUDA engine: a primary context on one device, the declared kernels
//! whose `.cu` file is among the version's sources compiled for it by NVRTC,
//! resident buffers in device memory and call counters. A call is launched
//! from its declaration alone (see [`crate::convention`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};
use shared_state::{
    Arg, Call, DType, Engine, EngineContext, EngineError, ErrorKind, KernelSet, ModuleInfo, Output,
    ResidentInfo, Scalar, Snapshot, Tensor,
};

use crate::availability::{self, driver_error, startup_error};
use crate::buffers::DeviceTensor;
use crate::compile;
use crate::device::{self, DeviceSummary};
use crate::launch::{self, CompileTimes, Kernels};
use crate::ptx_cache::{self, PtxCache};

/// Snapshot section prefix of resident buffers (as in the CPU module).
const RESIDENT_PREFIX: &str = "resident/";
/// Snapshot section prefix of the per-kernel call counters.
const CALLS_PREFIX: &str = "counters/calls/";

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
    resident: BTreeMap<String, DeviceTensor>,
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
            calls: BTreeMap::new(),
            decls: ctx.kernels.clone(),
            kernels,
            stream,
            _primary: cu_ctx,
        };
        if let Some(snapshot) = prior {
            for (name, tensor) in snapshot.take_tensors_with_prefix(RESIDENT_PREFIX) {
                let on_device = DeviceTensor::upload(&engine.stream, &tensor)?;
                engine.resident.insert(name, on_device);
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

    /// The device tensor of an argument: a resident buffer, or the call's
    /// data uploaded for this call.
    fn device_arg<'a>(
        &'a self,
        arg: &Arg,
        uploaded: &'a BTreeMap<usize, DeviceTensor>,
        i: usize,
    ) -> Result<&'a DeviceTensor, EngineError> {
        match arg {
            Arg::Resident(name) => self.resident_ref(name),
            Arg::Tensor(_) => uploaded
                .get(&i)
                .ok_or_else(|| EngineError::internal(format!("argument {i} not uploaded"))),
        }
    }

    fn resident_ref(&self, name: &str) -> Result<&DeviceTensor, EngineError> {
        self.resident.get(name).ok_or_else(|| {
            EngineError::new(
                ErrorKind::UnknownBuffer,
                format!("no resident buffer {name:?}"),
            )
        })
    }

    /// Runs the call on the device; the outputs stay there.
    fn compute(&self, call: &Call) -> Result<Vec<DeviceTensor>, EngineError> {
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
                    (r.dtype(), r.shape().to_vec())
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

        let mut uploaded = BTreeMap::new();
        for (i, arg) in call.args.iter().enumerate() {
            if let Arg::Tensor(t) = arg {
                uploaded.insert(i, DeviceTensor::upload(&self.stream, t)?);
            }
        }
        let args = call
            .args
            .iter()
            .enumerate()
            .map(|(i, arg)| self.device_arg(arg, &uploaded, i))
            .collect::<Result<Vec<_>, _>>()?;
        let outs = bound
            .outputs
            .iter()
            .map(|(dtype, shape)| DeviceTensor::zeros(&self.stream, *dtype, shape))
            .collect::<Result<Vec<_>, _>>()?;
        let scratch = scratch_shapes
            .iter()
            .map(|(dtype, shape)| DeviceTensor::zeros(&self.stream, *dtype, shape))
            .collect::<Result<Vec<_>, _>>()?;
        let tensors: Vec<_> = args
            .iter()
            .copied()
            .chain(&outs)
            .chain(&scratch)
            .map(DeviceTensor::slice)
            .collect();
        kernel.launch(&call.kernel, &self.stream, &tensors, &values, &launches)?;
        // Surface launch failures (and free the uploaded inputs and the
        // scratch only after the kernels that use them are done).
        self.synchronize(&format!("run {}", call.kernel))?;
        drop(uploaded);
        drop(scratch);
        Ok(outs)
    }
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
        let mut outs = self.compute(&call)?;
        *self.calls.entry(call.kernel.clone()).or_insert(0) += 1;
        shared_state::tracing::trace!(
            target: "kernel_cuda",
            kernel = %call.kernel,
            us = started.elapsed().as_secs_f64() * 1e6,
            "call"
        );
        match call.store_as {
            Some(name) => {
                let out = outs.remove(0);
                let shape = out.shape().to_vec();
                self.resident.insert(name.clone(), out);
                Ok(Output::Stored { name, shape })
            }
            None if outs.len() == 1 => Ok(Output::Value(outs[0].download(&self.stream)?)),
            None => Ok(Output::Values(
                outs.iter()
                    .map(|t| t.download(&self.stream))
                    .collect::<Result<_, _>>()?,
            )),
        }
    }

    fn put_resident(&mut self, name: &str, tensor: Tensor) -> Result<(), EngineError> {
        let on_device = DeviceTensor::upload(&self.stream, &tensor)?;
        self.synchronize(&format!("upload resident {name:?}"))?;
        self.resident.insert(name.to_string(), on_device);
        Ok(())
    }

    fn read_resident(&self, name: &str) -> Result<Tensor, EngineError> {
        self.resident_ref(name)?.download(&self.stream)
    }

    fn residents(&self) -> Result<Vec<ResidentInfo>, EngineError> {
        Ok(self
            .resident
            .iter()
            .map(|(name, t)| ResidentInfo {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
            })
            .collect())
    }

    fn export_state(&self) -> Result<Snapshot, EngineError> {
        let mut snapshot = Snapshot::new(env!("CARGO_PKG_NAME"), "cuda");
        for (name, t) in &self.resident {
            snapshot.insert_tensor(
                format!("{RESIDENT_PREFIX}{name}"),
                t.download(&self.stream)?,
            );
        }
        for (kernel, n) in &self.calls {
            snapshot.insert_scalar(format!("{CALLS_PREFIX}{kernel}"), Scalar::I64(*n));
        }
        for (path, key, ptx) in &self.ptx {
            ptx_cache::insert(&mut snapshot, path, key, ptx);
        }
        Ok(snapshot)
    }
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

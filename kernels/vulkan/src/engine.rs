//! The Vulkan engine: the pipelines of every declared kernel whose shader
//! is among the version's sources, resident buffers on the device,
//! per-kernel call counters, and the [`Gpu`] everything runs on. A call is
//! dispatched from its declaration alone (see [`crate::convention`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shared_state::tracing;
use shared_state::{
    Arg, Buffer, Call, DType, DeviceHandle, DeviceSection, Engine, EngineContext, EngineError,
    ErrorKind, KernelSet, ModuleInfo, Output, ResidentInfo, Scalar, Snapshot, Tensor, format_shape,
};

use crate::convention::Layout;
use crate::gpu::Gpu;
use crate::memory::DeviceBuffer;
use crate::pipeline_cache::{self, Handoff};
use crate::plan;
use crate::shaders;

const BACKEND: &str = "vulkan";

/// Notes (`info`) with the bytes copied host -> device and device -> host
/// over the engine's life.
pub const TO_DEVICE_NOTE: &str = "transfers/host_to_device_bytes";
pub const TO_HOST_NOTE: &str = "transfers/device_to_host_bytes";
/// Note with the bytes copied buffer to buffer on the device (a shared
/// resident a kernel writes in place).
pub const DEVICE_COPY_NOTE: &str = "transfers/device_copy_bytes";

/// Prefix of the sections a swap hands each resident's host copy over in,
/// next to its memory left on the device (`export_handoff`): the next
/// version takes it as its own host copy ([`Resident::host`]), so its
/// first export downloads nothing and shares the very elements the last
/// checkpoint marked (a checkpoint after a swap copies only what changed).
/// A cache (`cache/`): never hashed, and a version that does not know it
/// only drops it.
pub const HOST_COPY_PREFIX: &str = "cache/vulkan/host-copy/";

/// A named buffer kept on the device between calls, any dtype.
struct Resident {
    dtype: DType,
    shape: Vec<usize>,
    buffer: DeviceBuffer,
    /// The buffer's bytes in host memory, once uploaded from or downloaded
    /// to there: dropped when a kernel may write the resident in place
    /// (`before_writes`; a stored output gets a new resident), so it stays
    /// true while it is here, and the next export shares its elements
    /// instead of downloading again (a checkpoint of unchanged state copies
    /// nothing: the worker's state marks see the same elements). Costs host
    /// memory as large as the resident until the host hands back the same
    /// bytes from a checkpoint it wrote (`put_resident` of equal bytes
    /// adopts them, see [`Resident::adopt`]): then the host copy is the
    /// checkpoint's mapped pages, memory the host holds anyway.
    host: RefCell<Option<Tensor>>,
    /// Its memory is also another version's (handed over on the device,
    /// either way): never written in place (see
    /// [`VulkanEngine::before_writes`]).
    shared: Cell<bool>,
}

impl Resident {
    /// Takes `tensor` as the host copy instead of the one held, when the
    /// two are the same bytes of the same dtype and shape: the device
    /// buffer already holds them, so nothing is uploaded, and the engine's
    /// own copy goes (the host hands back a checkpoint's mapped bytes after
    /// writing it from this engine's export). False when there is no host
    /// copy or the bytes differ; the caller then uploads.
    fn adopt(&self, tensor: &Tensor) -> bool {
        let mut host = self.host.borrow_mut();
        let Some(held) = host.as_ref() else {
            return false;
        };
        let same = (held.data().same_as(tensor.data()) && held.shape() == tensor.shape())
            || held.bit_eq(tensor);
        if same {
            *host = Some(tensor.clone());
        }
        same
    }
}

pub struct VulkanEngine {
    label: String,
    residents: BTreeMap<String, Resident>,
    /// Calls served per kernel, across versions.
    calls: BTreeMap<String, i64>,
    /// The version's declarations.
    kernels: Arc<KernelSet>,
    /// The binding layout of each kernel implemented here (its shader was
    /// among the sources).
    layouts: BTreeMap<String, Layout>,
    /// naga's time per shader, then pipeline creation per kernel.
    compile_times: Vec<(String, Duration)>,
    /// Dropped after the residents are freed (see `Drop`).
    gpu: Gpu,
}

/// Buffers made for one call; whatever is still here when it goes out of
/// scope (error or not) is freed.
struct CallBuffers<'g> {
    gpu: &'g Gpu,
    buffers: Vec<Option<DeviceBuffer>>,
}

impl<'g> CallBuffers<'g> {
    fn new(gpu: &'g Gpu) -> CallBuffers<'g> {
        CallBuffers {
            gpu,
            buffers: Vec::new(),
        }
    }

    /// Creates a buffer of `len` bytes, filled with `data` if given.
    fn add(&mut self, len: u64, data: Option<&[u8]>) -> Result<usize, EngineError> {
        let buf = self.gpu.create_buffer(len)?;
        self.buffers.push(Some(buf));
        let index = self.buffers.len() - 1;
        if let Some(bytes) = data {
            self.gpu.write(self.get(index), bytes)?;
        }
        Ok(index)
    }

    fn get(&self, index: usize) -> &DeviceBuffer {
        self.buffers[index].as_ref().expect("buffer not taken")
    }

    /// Keeps a buffer beyond the call.
    fn take(&mut self, index: usize) -> DeviceBuffer {
        self.buffers[index].take().expect("buffer taken once")
    }
}

impl Drop for CallBuffers<'_> {
    fn drop(&mut self) {
        for buf in self.buffers.drain(..).flatten() {
            self.gpu.free_buffer(buf);
        }
    }
}

/// What a call's outputs became.
enum Produced {
    Downloaded(Vec<Tensor>),
    /// The one output, kept on the device to be stored.
    OnDevice(DeviceBuffer, DType, Vec<usize>),
}

impl VulkanEngine {
    /// The module's factory: opens the device (`ctx.option("device")`:
    /// index or name substring), then uploads the prior state's `resident/`
    /// tensors and takes its `counters/calls/` scalars.
    pub fn create(
        ctx: EngineContext,
        mut prior: Option<&mut Snapshot>,
    ) -> Result<(VulkanEngine, Vec<String>), EngineError> {
        // Shaders first: a broken one is reported even where there is no
        // device, and costs no device set-up.
        let (compiled, undeclared) = shaders::compile_all(&ctx.kernels, &ctx.sources)?;
        for path in &undeclared {
            tracing::warn!(
                target: "kernel_vulkan",
                label = %ctx.label,
                "{path}: no kernel of that name is declared (kernels/declarations/NAME.toml); not used"
            );
        }
        let mut gpu = Gpu::open(ctx.option("device"))?;
        let pairs: Vec<_> = compiled
            .iter()
            .filter_map(|sh| ctx.kernels.get(&sh.kernel).map(|d| (d, sh)))
            .collect();
        let handoff = prior
            .as_deref_mut()
            .map(|s| Handoff::take_from(s, &gpu.identity))
            .unwrap_or_default();
        gpu.build_kernels(&pairs, &handoff)?;
        let mut compile_times: Vec<(String, Duration)> = compiled
            .iter()
            .map(|sh| (format!("naga/{}", sh.path), sh.elapsed))
            .collect();
        compile_times.extend(
            gpu.pipeline_times()
                .map(|(k, d)| (format!("pipelines/{k}"), d)),
        );
        let mut engine = VulkanEngine {
            label: ctx.label.clone(),
            residents: BTreeMap::new(),
            calls: BTreeMap::new(),
            kernels: ctx.kernels.clone(),
            layouts: compiled
                .into_iter()
                .map(|sh| (sh.kernel, sh.layout))
                .collect(),
            compile_times,
            gpu,
        };
        if let Some(snapshot) = prior {
            // Residents the previous version left on the device are
            // imported, no byte copied.
            for (name, section) in snapshot.take_device_with_prefix("resident/") {
                engine.import_resident(&name, section)?;
            }
            // Their host copies, where the previous version had one.
            for (name, tensor) in snapshot.take_tensors_with_prefix(HOST_COPY_PREFIX) {
                engine.take_host_copy(&name, tensor);
            }
            // Residents the host carried (another backend, a file, an
            // older version's host export) are uploaded.
            for (name, tensor) in snapshot.take_tensors_with_prefix("resident/") {
                engine.put_resident(&name, tensor)?;
            }
            for name in snapshot.section_names() {
                if let Some(kernel) = name.strip_prefix("counters/calls/") {
                    if let Some(n) = snapshot.take_scalar(&name).and_then(|s| s.as_i64()) {
                        engine.calls.insert(kernel.to_string(), n);
                    }
                }
            }
        }
        let d = &engine.gpu.device_info;
        tracing::info!(
            target: "kernel_vulkan",
            label = %engine.label,
            device = %d.name,
            kind = d.kind(),
            driver = %d.driver,
            api = %d.api,
            residents = engine.residents.len(),
            kernels = engine.layouts.len(),
            compile_ms = engine.compile_time().as_secs_f64() * 1e3,
            pipelines_created = engine.gpu.created_eagerly,
            pipelines_deferred = engine.gpu.deferred(),
            pipeline_cache_bytes = handoff.blob.as_ref().map_or(0, Vec::len),
            uploaded_bytes = engine.gpu.transfers().0,
            "vulkan engine created on {} ({}): {} kernels, {} built now, {} unchanged ones at their first call; {} residents, {} bytes uploaded",
            d.name,
            d.driver,
            engine.layouts.len(),
            engine.gpu.created_eagerly,
            engine.gpu.deferred(),
            engine.residents.len(),
            engine.gpu.transfers().0
        );
        Ok((engine, Vec::new()))
    }

    /// Name of the device the engine runs on.
    #[cfg(test)]
    pub fn gpu_name(&self) -> String {
        self.gpu.device_info.name.clone()
    }

    /// Shader compilation and pipeline creation at start, in total.
    pub fn compile_time(&self) -> Duration {
        self.compile_times.iter().map(|(_, d)| *d).sum()
    }

    /// Live device allocations: (count, bytes).
    pub fn live_allocations(&self) -> (u64, u64) {
        self.gpu.live_allocations()
    }

    fn resident(&self, name: &str) -> Result<&Resident, EngineError> {
        self.residents.get(name).ok_or_else(|| {
            EngineError::new(
                ErrorKind::UnknownBuffer,
                format!("no resident buffer {name:?}"),
            )
        })
    }

    fn check_range(&self, what: &str, bytes: u64) -> Result<(), EngineError> {
        let max = self.gpu.limits.max_storage_range;
        if bytes > max {
            return Err(EngineError::bad_call(format!(
                "{what} is {bytes} bytes; this device binds at most {max} bytes per storage buffer"
            )));
        }
        Ok(())
    }

    /// Runs a call and leaves its outputs either downloaded or on the
    /// device (when it is to be stored).
    fn compute(&self, call: &Call) -> Result<Produced, EngineError> {
        let decl = self.kernels.lookup(&call.kernel)?;
        let layout = self.layouts.get(&call.kernel).ok_or_else(|| {
            EngineError::new(
                ErrorKind::UnknownKernel,
                format!(
                    "{} is declared but not implemented on vulkan (no {} among the sources)",
                    call.kernel,
                    shaders::shader_path(&call.kernel)
                ),
            )
        })?;
        // Shapes first, so a bad call uploads nothing.
        let mut shapes: Vec<(DType, &[usize])> = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            shapes.push(match arg {
                Arg::Tensor(t) => (t.dtype(), t.shape()),
                Arg::Resident(name) => {
                    let r = self.resident(name)?;
                    (r.dtype, r.shape.as_slice())
                }
            });
        }
        let bound = decl
            .bind(&shapes, &call.params)
            .map_err(|e| EngineError::bad_call(e.0))?;
        if call.store_as.is_some() && bound.outputs.len() != 1 {
            return Err(EngineError::bad_call(format!(
                "{}: store_as needs a kernel with one output; it has {}",
                call.kernel,
                bound.outputs.len()
            )));
        }
        let plan = plan::plan(decl, layout, &bound, &self.gpu.limits)?;
        let byte_len = |dtype: DType, shape: &[usize]| -> Result<u64, EngineError> {
            shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .map(|b| b as u64)
                .ok_or_else(|| {
                    EngineError::bad_call(format!("shape [{}] overflows", format_shape(shape)))
                })
        };
        let mut out_bytes = Vec::with_capacity(bound.outputs.len());
        for ((dtype, shape), t) in bound.outputs.iter().zip(&decl.outputs) {
            let bytes = byte_len(*dtype, shape)?;
            self.check_range(&format!("output {}", t.name), bytes)?;
            out_bytes.push(bytes);
        }
        let mut scratch_bytes = Vec::with_capacity(plan.scratch.len());
        for ((dtype, len), t) in plan.scratch.iter().zip(&decl.launch.scratch) {
            let bytes = byte_len(*dtype, &[*len])?;
            self.check_range(&format!("scratch {}", t.name), bytes)?;
            scratch_bytes.push(bytes);
        }

        let mut temps = CallBuffers::new(&self.gpu);
        let mut storage = Vec::with_capacity(layout.storage.len());
        for (i, arg) in call.args.iter().enumerate() {
            storage.push(match arg {
                Arg::Tensor(t) => {
                    let bytes = t.data().as_bytes();
                    self.check_range(
                        &format!("argument {i} ({})", t.describe()),
                        bytes.len() as u64,
                    )?;
                    let index = temps.add(bytes.len() as u64, Some(bytes))?;
                    temps.get(index).buffer
                }
                Arg::Resident(name) => {
                    let r = self.resident(name)?;
                    self.check_range(&format!("resident {name:?}"), r.buffer.len)?;
                    r.buffer.buffer
                }
            });
        }
        let mut outs = Vec::with_capacity(out_bytes.len());
        for bytes in out_bytes {
            let index = temps.add(bytes, None)?;
            outs.push(index);
            storage.push(temps.get(index).buffer);
        }
        for bytes in scratch_bytes {
            let index = temps.add(bytes, None)?;
            storage.push(temps.get(index).buffer);
        }
        let uniform = temps.add(plan.uniform.len() as u64, Some(&plan.uniform))?;
        self.gpu.submit(
            &call.kernel,
            &storage,
            temps.get(uniform).buffer,
            &plan.passes,
        )?;
        if call.store_as.is_some() {
            let (dtype, shape) = bound.outputs[0].clone();
            Ok(Produced::OnDevice(temps.take(outs[0]), dtype, shape))
        } else {
            let mut tensors = Vec::with_capacity(outs.len());
            for (index, (dtype, shape)) in outs.into_iter().zip(bound.outputs) {
                let bytes = self.gpu.read(temps.get(index))?;
                tensors.push(tensor_from_bytes(dtype, shape, &bytes)?);
            }
            Ok(Produced::Downloaded(tensors))
        }
    }

    /// Stores `buffer` under `name` (with its bytes in host memory where
    /// they are known), freeing what was there.
    fn store(
        &mut self,
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        buffer: DeviceBuffer,
        host: Option<Tensor>,
    ) {
        let old = self.residents.insert(
            name.to_string(),
            Resident {
                dtype,
                shape,
                buffer,
                host: RefCell::new(host),
                shared: Cell::new(false),
            },
        );
        if let Some(old) = old {
            self.gpu.free_buffer(old.buffer);
        }
    }

    /// Takes over a resident the previous version left on the device.
    fn import_resident(&mut self, name: &str, section: DeviceSection) -> Result<(), EngineError> {
        let here = self.gpu.handoff_identity();
        if here != Some(section.device.as_str()) {
            return Err(EngineError::new(
                ErrorKind::State,
                format!(
                    "resident {name:?} was handed over on device {} and this engine runs on {}: \
                     it cannot import it",
                    section.device,
                    here.unwrap_or("a device without VK_KHR_external_memory_fd")
                ),
            ));
        }
        let DeviceHandle::OpaqueFd(fd) = &section.handle;
        // The section keeps its fd (it may be cloned); the import takes a
        // duplicate.
        let fd = fd.try_clone().map_err(|e| {
            EngineError::internal(format!("duplicating the fd of resident {name:?}: {e}"))
        })?;
        let buffer =
            self.gpu
                .import_buffer(fd, section.bytes, section.allocation, section.memory_kind)?;
        self.store(name, section.dtype, section.shape, buffer, None);
        if let Some(r) = self.residents.get(name) {
            r.shared.set(true);
        }
        Ok(())
    }

    /// Takes `tensor` as the host copy of resident `name` that the previous
    /// version handed over on the device with it: the previous version's
    /// host copy of that very memory, true as long as neither version
    /// writes it (neither does: see `before_writes`). Ignored where the
    /// resident is not a handed-over one of that dtype and size.
    fn take_host_copy(&mut self, name: &str, tensor: Tensor) {
        let Some(r) = self.residents.get_mut(name) else {
            return;
        };
        let fits = r.shared.get()
            && r.dtype == tensor.dtype()
            && r.shape == tensor.shape()
            && r.buffer.len == tensor.byte_len() as u64;
        if fits && r.host.get_mut().is_none() {
            *r.host.get_mut() = Some(tensor);
        }
    }

    /// Readies the residents `call` may write in place (inputs its shader
    /// declares `read_write`): their host copy is dropped, and one whose
    /// memory another version shares is first copied on the device and
    /// the copy becomes the resident, so the other version's bytes stay as
    /// they were.
    fn before_writes(&mut self, call: &Call) -> Result<(), EngineError> {
        let Some(layout) = self.layouts.get(&call.kernel) else {
            return Ok(());
        };
        let written: Vec<String> = layout
            .written_inputs
            .iter()
            .filter_map(|&i| match call.args.get(i) {
                Some(Arg::Resident(name)) => Some(name.clone()),
                _ => None,
            })
            .collect();
        for name in written {
            // An unknown name is reported by `compute`.
            let Some(r) = self.residents.get_mut(&name) else {
                continue;
            };
            r.host.get_mut().take();
            if !r.shared.get() {
                continue;
            }
            let copy = self.gpu.create_buffer(r.buffer.len)?;
            if let Err(e) = self.gpu.copy_buffer(&r.buffer, &copy) {
                self.gpu.free_buffer(copy);
                return Err(e);
            }
            let handed = std::mem::replace(&mut r.buffer, copy);
            r.shared.set(false);
            self.gpu.free_buffer(handed);
            tracing::debug!(
                target: "kernel_vulkan",
                label = %self.label,
                "resident {name:?} copied on the device before {} writes it: its memory is shared with another version",
                call.kernel
            );
        }
        Ok(())
    }

    /// The sections every export has besides the residents: call counters
    /// and the pipeline cache.
    fn export_rest(&self, snapshot: &mut Snapshot) -> Result<(), EngineError> {
        for (kernel, n) in &self.calls {
            snapshot.insert_scalar(format!("counters/calls/{kernel}"), Scalar::I64(*n));
        }
        pipeline_cache::insert(
            snapshot,
            &self.gpu.identity,
            self.gpu.pipeline_cache_data()?,
            self.gpu.known_kernels(),
        );
        Ok(())
    }

    /// The resident's bytes in host memory: downloaded the first time
    /// only (see [`Resident::host`]).
    fn download(&self, r: &Resident) -> Result<Tensor, EngineError> {
        if let Some(t) = r.host.borrow().as_ref() {
            return Ok(t.clone());
        }
        let bytes = self.gpu.read(&r.buffer)?;
        let tensor = tensor_from_bytes(r.dtype, r.shape.clone(), &bytes)?;
        *r.host.borrow_mut() = Some(tensor.clone());
        Ok(tensor)
    }
}

fn tensor_from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor, EngineError> {
    let described = format_shape(&shape);
    Buffer::from_le_bytes(dtype, bytes)
        .and_then(|data| Tensor::new(shape, data))
        .map_err(|e| EngineError::internal(format!("downloaded {dtype}[{described}]: {e}")))
}

impl Engine for VulkanEngine {
    fn info(&self) -> Result<ModuleInfo, EngineError> {
        let (count, bytes) = self.live_allocations();
        let mut notes = BTreeMap::new();
        notes.insert("device/allocations".to_string(), Scalar::I64(count as i64));
        notes.insert("device/bytes".to_string(), Scalar::I64(bytes as i64));
        notes.insert(
            "device/kind".to_string(),
            Scalar::Text(self.gpu.device_info.kind().to_string()),
        );
        // What measured peaks depend on (the host keys its cache with it):
        // vendor, device, driver version and the driver's cache UUID.
        notes.insert(
            "device/identity".to_string(),
            Scalar::Text(self.gpu.identity.clone()),
        );
        for (kernel, n) in &self.calls {
            notes.insert(format!("counters/calls/{kernel}"), Scalar::I64(*n));
        }
        let (to_device, to_host) = self.gpu.transfers();
        notes.insert(TO_DEVICE_NOTE.to_string(), Scalar::I64(to_device as i64));
        notes.insert(TO_HOST_NOTE.to_string(), Scalar::I64(to_host as i64));
        notes.insert(
            DEVICE_COPY_NOTE.to_string(),
            Scalar::I64(self.gpu.device_copy_bytes() as i64),
        );
        for (what, time) in &self.compile_times {
            notes.insert(
                format!("compile_ms/{what}"),
                Scalar::F64(time.as_secs_f64() * 1e3),
            );
        }
        for (what, n) in [
            ("pipelines/created_at_start", self.gpu.created_eagerly),
            ("pipelines/deferred", self.gpu.deferred()),
            (
                "pipelines/created_at_first_call",
                self.gpu.created_on_first_use,
            ),
        ] {
            notes.insert(what.to_string(), Scalar::I64(n as i64));
        }
        Ok(ModuleInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            backend: BACKEND.to_string(),
            device: self.gpu.describe(),
            kernels: self.layouts.keys().cloned().collect(),
            notes,
        })
    }

    fn run(&mut self, call: Call) -> Result<Output, EngineError> {
        if self.layouts.contains_key(&call.kernel) {
            self.gpu.ensure_kernel(&call.kernel)?;
        }
        self.before_writes(&call)?;
        let produced = self.compute(&call)?;
        *self.calls.entry(call.kernel.clone()).or_insert(0) += 1;
        match produced {
            Produced::Downloaded(mut tensors) if tensors.len() == 1 => {
                Ok(Output::Value(tensors.remove(0)))
            }
            Produced::Downloaded(tensors) => Ok(Output::Values(tensors)),
            Produced::OnDevice(buffer, dtype, shape) => {
                let name = call.store_as.expect("stored only when asked");
                self.store(&name, dtype, shape.clone(), buffer, None);
                Ok(Output::Stored { name, shape })
            }
        }
    }

    /// A tensor of the very bytes the resident holds (its host copy's) is
    /// adopted as the host copy, nothing uploaded ([`Resident::adopt`]);
    /// anything else is uploaded into a new buffer.
    fn put_resident(&mut self, name: &str, tensor: Tensor) -> Result<(), EngineError> {
        if self.residents.get(name).is_some_and(|r| r.adopt(&tensor)) {
            return Ok(());
        }
        let bytes = tensor.data().as_bytes();
        let buffer = self.gpu.create_buffer(bytes.len() as u64)?;
        if let Err(e) = self.gpu.write(&buffer, bytes) {
            self.gpu.free_buffer(buffer);
            return Err(e);
        }
        let (dtype, shape) = (tensor.dtype(), tensor.shape().to_vec());
        self.store(name, dtype, shape, buffer, Some(tensor));
        Ok(())
    }

    fn read_resident(&self, name: &str) -> Result<Tensor, EngineError> {
        self.download(self.resident(name)?)
    }

    fn residents(&self) -> Result<Vec<ResidentInfo>, EngineError> {
        Ok(self
            .residents
            .iter()
            .map(|(name, r)| ResidentInfo {
                name: name.clone(),
                dtype: r.dtype,
                shape: r.shape.clone(),
            })
            .collect())
    }

    fn export_state(&self) -> Result<Snapshot, EngineError> {
        let mut snapshot = Snapshot::new(env!("CARGO_PKG_NAME"), BACKEND);
        let before = self.gpu.transfers().1;
        for (name, r) in &self.residents {
            snapshot.insert_tensor(format!("resident/{name}"), self.download(r)?);
        }
        let downloaded = self.gpu.transfers().1 - before;
        tracing::debug!(
            target: "kernel_vulkan",
            label = %self.label,
            residents = self.residents.len(),
            downloaded_bytes = downloaded,
            "vulkan state exported through the host: {} residents, {downloaded} bytes downloaded",
            self.residents.len()
        );
        self.export_rest(&mut snapshot)?;
        Ok(snapshot)
    }

    /// Residents stay on the device: each one's memory as an fd. Neither
    /// engine writes shared memory afterwards (a stored output gets a new
    /// buffer; a kernel that writes a resident input writes a device copy,
    /// see `before_writes`), so the two share them safely. Each one's host
    /// copy goes with it ([`HOST_COPY_PREFIX`]: shared, not copied).
    fn export_handoff(&self) -> Result<Snapshot, EngineError> {
        let Some(device) = self.gpu.handoff_identity() else {
            return self.export_state();
        };
        let mut snapshot = Snapshot::new(env!("CARGO_PKG_NAME"), BACKEND);
        let mut bytes = 0;
        for (name, r) in &self.residents {
            let fd = match self.gpu.export_fd(&r.buffer) {
                Ok(fd) => fd,
                Err(e) => {
                    // This one goes through host memory; the rest stay.
                    tracing::warn!(
                        target: "kernel_vulkan",
                        label = %self.label,
                        "resident {name:?} cannot be handed over on the device ({e}): copied through host memory"
                    );
                    snapshot.insert_tensor(format!("resident/{name}"), self.download(r)?);
                    continue;
                }
            };
            bytes += r.buffer.len;
            r.shared.set(true);
            if let Some(host) = r.host.borrow().as_ref() {
                snapshot.insert_tensor(format!("{HOST_COPY_PREFIX}{name}"), host.clone());
            }
            snapshot.insert_device(
                format!("resident/{name}"),
                DeviceSection {
                    handle: DeviceHandle::OpaqueFd(Arc::new(fd)),
                    bytes: r.buffer.len,
                    allocation: r.buffer.allocated,
                    memory_kind: r.buffer.memory_type,
                    dtype: r.dtype,
                    shape: r.shape.clone(),
                    device: device.to_string(),
                },
            );
        }
        tracing::info!(
            target: "kernel_vulkan",
            label = %self.label,
            residents = self.residents.len(),
            bytes,
            downloaded_bytes = 0,
            "vulkan state handed over on the device: {} residents ({bytes} bytes), none copied through the host",
            self.residents.len()
        );
        self.export_rest(&mut snapshot)?;
        Ok(snapshot)
    }
}

impl Drop for VulkanEngine {
    fn drop(&mut self) {
        self.gpu.wait_idle();
        let (count, bytes) = self.live_allocations();
        tracing::info!(
            target: "kernel_vulkan",
            label = %self.label,
            allocations = count,
            bytes,
            residents = self.residents.len(),
            "vulkan engine dropped: freeing its {count} device allocations ({bytes} bytes)"
        );
        for (_, r) in std::mem::take(&mut self.residents) {
            self.gpu.free_buffer(r.buffer);
        }
        let (left, left_bytes) = self.live_allocations();
        if left > 0 {
            tracing::warn!(
                target: "kernel_vulkan",
                label = %self.label,
                "{left} device allocations ({left_bytes} bytes) leaked past the residents"
            );
        }
        // `gpu` drops next: pipelines, layouts, pools, device, instance.
    }
}

/// The module's `probe`.
pub use crate::instance::probe_devices;

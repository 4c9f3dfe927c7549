//! The Vulkan engine: resident buffers on the device, per-kernel call
//! counters, and the [`Gpu`] everything runs on.

use std::collections::BTreeMap;

use shared_state::kernels as std_kernels;
use shared_state::tracing;
use shared_state::{
    Arg, Buffer, Call, DType, Engine, EngineContext, EngineError, ErrorKind, ModuleInfo, Output,
    ResidentInfo, Scalar, Snapshot, Tensor, format_shape,
};

use crate::gpu::{Gpu, Pass};
use crate::memory::DeviceBuffer;
use crate::plan::{self, Slot};

const BACKEND: &str = "vulkan";

/// A named buffer kept on the device between calls, any dtype.
struct Resident {
    dtype: DType,
    shape: Vec<usize>,
    buffer: DeviceBuffer,
}

pub struct VulkanEngine {
    label: String,
    residents: BTreeMap<String, Resident>,
    /// Calls served per kernel, across versions.
    calls: BTreeMap<String, i64>,
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

/// What a call's output became.
enum Produced {
    Downloaded(Tensor),
    OnDevice(DeviceBuffer, Vec<usize>),
}

impl VulkanEngine {
    /// The module's factory: opens the device (`ctx.option("device")`:
    /// index or name substring), then uploads the prior state's `resident/`
    /// tensors and takes its `counters/calls/` scalars.
    pub fn create(
        ctx: EngineContext,
        prior: Option<&mut Snapshot>,
    ) -> Result<(VulkanEngine, Vec<String>), EngineError> {
        let gpu = Gpu::open(ctx.option("device"))?;
        let mut engine = VulkanEngine {
            label: ctx.label.clone(),
            residents: BTreeMap::new(),
            calls: BTreeMap::new(),
            gpu,
        };
        if let Some(snapshot) = prior {
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
            "vulkan engine created on {} ({})",
            d.name,
            d.driver
        );
        Ok((engine, Vec::new()))
    }

    /// Name of the device the engine runs on.
    #[cfg(test)]
    pub fn gpu_name(&self) -> String {
        self.gpu.device_info.name.clone()
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

    /// Runs a call and leaves its output either downloaded or on the
    /// device (when it is to be stored).
    fn compute(&self, call: &Call) -> Result<Produced, EngineError> {
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
        let out_shape = std_kernels::output_shape(&call.kernel, &shapes)?;
        let dims: Vec<&[usize]> = shapes.iter().map(|(_, s)| *s).collect();
        let plan = plan::plan(&call.kernel, &dims, &call.params, &self.gpu.limits)?;
        let out_bytes = (out_shape.iter().product::<usize>() * 4) as u64;
        self.check_range("the output", out_bytes)?;

        let mut temps = CallBuffers::new(&self.gpu);
        let mut arg_buffers = Vec::with_capacity(call.args.len());
        for (i, arg) in call.args.iter().enumerate() {
            arg_buffers.push(match arg {
                Arg::Tensor(t) => {
                    let bytes = t.data().as_bytes();
                    self.check_range(
                        &format!("argument {i} ({})", t.describe()),
                        bytes.len() as u64,
                    )?;
                    Some(temps.add(bytes.len() as u64, Some(bytes))?)
                }
                Arg::Resident(name) => {
                    self.check_range(
                        &format!("resident {name:?}"),
                        self.resident(name)?.buffer.len,
                    )?;
                    None
                }
            });
        }
        let scratch = match plan.scratch_floats {
            0 => None,
            n => Some(temps.add(n * 4, None)?),
        };
        let out = temps.add(out_bytes, None)?;
        let buffer_of = |slot: Slot| -> Result<ash::vk::Buffer, EngineError> {
            Ok(match slot {
                Slot::Arg(i) => match (&call.args[i], arg_buffers[i]) {
                    (_, Some(index)) => temps.get(index).buffer,
                    (Arg::Resident(name), None) => self.resident(name)?.buffer.buffer,
                    (Arg::Tensor(_), None) => unreachable!("tensors are uploaded"),
                },
                Slot::Scratch => temps.get(scratch.expect("plan asked for scratch")).buffer,
                Slot::Out => temps.get(out).buffer,
            })
        };
        let mut passes = Vec::with_capacity(plan.passes.len());
        for p in &plan.passes {
            passes.push(Pass {
                program: p.program,
                bindings: [
                    buffer_of(p.bindings[0])?,
                    buffer_of(p.bindings[1])?,
                    buffer_of(p.bindings[2])?,
                ],
                params: p.params,
                groups: p.groups,
            });
        }
        self.gpu.submit(&passes)?;
        if call.store_as.is_some() {
            Ok(Produced::OnDevice(temps.take(out), out_shape))
        } else {
            let bytes = self.gpu.read(temps.get(out))?;
            Ok(Produced::Downloaded(tensor_from_bytes(
                DType::F32,
                out_shape,
                &bytes,
            )?))
        }
    }

    /// Stores `buffer` under `name`, freeing what was there.
    fn store(&mut self, name: &str, dtype: DType, shape: Vec<usize>, buffer: DeviceBuffer) {
        let old = self.residents.insert(
            name.to_string(),
            Resident {
                dtype,
                shape,
                buffer,
            },
        );
        if let Some(old) = old {
            self.gpu.free_buffer(old.buffer);
        }
    }

    fn download(&self, r: &Resident) -> Result<Tensor, EngineError> {
        let bytes = self.gpu.read(&r.buffer)?;
        tensor_from_bytes(r.dtype, r.shape.clone(), &bytes)
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
        for (kernel, n) in &self.calls {
            notes.insert(format!("counters/calls/{kernel}"), Scalar::I64(*n));
        }
        Ok(ModuleInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            backend: BACKEND.to_string(),
            device: self.gpu.describe(),
            kernels: std_kernels::standard_kernels(),
            notes,
        })
    }

    fn run(&mut self, call: Call) -> Result<Output, EngineError> {
        let produced = self.compute(&call)?;
        *self.calls.entry(call.kernel.clone()).or_insert(0) += 1;
        match produced {
            Produced::Downloaded(t) => Ok(Output::Value(t)),
            Produced::OnDevice(buffer, shape) => {
                let name = call.store_as.expect("stored only when asked");
                self.store(&name, DType::F32, shape.clone(), buffer);
                Ok(Output::Stored { name, shape })
            }
        }
    }

    fn put_resident(&mut self, name: &str, tensor: Tensor) -> Result<(), EngineError> {
        let bytes = tensor.data().as_bytes();
        let buffer = self.gpu.create_buffer(bytes.len() as u64)?;
        if let Err(e) = self.gpu.write(&buffer, bytes) {
            self.gpu.free_buffer(buffer);
            return Err(e);
        }
        self.store(name, tensor.dtype(), tensor.shape().to_vec(), buffer);
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
        for (name, r) in &self.residents {
            snapshot.insert_tensor(format!("resident/{name}"), self.download(r)?);
        }
        for (kernel, n) in &self.calls {
            snapshot.insert_scalar(format!("counters/calls/{kernel}"), Scalar::I64(*n));
        }
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
            "vulkan engine dropped: {count} device allocations ({bytes} bytes) live before freeing"
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

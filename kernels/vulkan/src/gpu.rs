//! One opened Vulkan device with everything the engine needs to run
//! kernels on it: a compute queue, one command buffer and fence reused by
//! every call, a descriptor pool reset per call, and each implemented
//! kernel's pipelines.
//!
//! Every Vulkan object lives here (nothing in statics) and is destroyed in
//! `Drop`, after waiting for the device, in reverse order of creation; the
//! loader library (`entry`) is closed last.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;

use ash::vk;
use shared_state::{EngineError, KernelDecl};

use crate::external;
use crate::instance::{self, ComputeDevice};
use crate::memory::{DeviceBuffer, Memory};
use crate::pipeline_cache::{self, Handoff};
use crate::pipelines::KernelPipelines;
use crate::plan::PassPlan;
use crate::shaders::Shader;

/// Device limits the kernels plan against.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_groups: [u32; 3],
    /// Largest storage buffer one binding may cover, in bytes.
    pub max_storage_range: u64,
}

pub struct Gpu {
    pub device_info: ComputeDevice,
    pub limits: Limits,
    /// Vendor, device, driver version and pipeline-cache UUID: what a
    /// handed-over cache must have been made by.
    pub identity: String,
    /// Where buffers can be handed to another engine on the device
    /// ([`crate::external`]): the device's and driver's UUIDs, and the
    /// extension's functions.
    handoff: Option<(String, ash::khr::external_memory_fd::Device)>,
    memory: Memory,
    /// Bytes copied buffer to buffer on the device ([`Gpu::copy_buffer`]).
    device_copies: std::cell::Cell<u64>,
    /// Pipelines of every implemented kernel created so far, by name.
    kernels: BTreeMap<String, KernelPipelines>,
    /// Kernels known to build on this device (the previous engine built the
    /// same SPIR-V), whose pipelines are created at their first call.
    pending: BTreeMap<String, (KernelDecl, Shader)>,
    /// Hashes of every kernel this device builds (created or pending).
    known: BTreeSet<u64>,
    /// Pipelines created eagerly at engine creation, and at a first call.
    pub created_eagerly: usize,
    pub created_on_first_use: usize,
    /// Seeded from the previous engine's data; every pipeline goes through it.
    pipeline_cache: vk::PipelineCache,
    queue: vk::Queue,
    command_pool: vk::CommandPool,
    command_buffer: vk::CommandBuffer,
    descriptor_pool: vk::DescriptorPool,
    fence: vk::Fence,
    device: ash::Device,
    instance: ash::Instance,
    /// Keeps the loader library open; dropped after everything else.
    _entry: ash::Entry,
}

impl Gpu {
    /// Opens the device chosen by `wanted` (see [`instance::choose_device`]).
    pub fn open(wanted: Option<&str>) -> Result<Gpu, EngineError> {
        let found = instance::discover()?;
        let opened = instance::choose_device(&found.devices, wanted).and_then(|i| {
            let physical = found.devices[i].physical;
            // SAFETY: `physical` belongs to the live instance.
            let device_api =
                unsafe { found.instance.get_physical_device_properties(physical) }.api_version;
            // The instance's functions and the device both must be 1.1+.
            let api = device_api.min(found.api);
            let external = external::supported(&found.instance, physical, api);
            open_device(&found.instance, &found.devices[i], external).map(|d| (i, d, external))
        });
        let (index, device, external) = match opened {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: no device was created from the instance.
                unsafe { found.instance.destroy_instance(None) };
                return Err(e);
            }
        };
        let chosen = found.devices[index].clone();
        // SAFETY: `chosen.physical` belongs to the live instance.
        let (props, types) = unsafe {
            (
                found
                    .instance
                    .get_physical_device_properties(chosen.physical),
                found
                    .instance
                    .get_physical_device_memory_properties(chosen.physical),
            )
        };
        // SAFETY: the device was created with one queue in this family.
        let queue = unsafe { device.get_device_queue(chosen.queue_family, 0) };
        // From here on, `Drop` cleans up whatever was created.
        let identity = format!(
            "vendor={:04x} device={:04x} driver={:08x} uuid={}",
            props.vendor_id,
            props.device_id,
            props.driver_version,
            props
                .pipeline_cache_uuid
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let handoff = external.then(|| {
            (
                external::identity(&found.instance, chosen.physical),
                ash::khr::external_memory_fd::Device::new(&found.instance, &device),
            )
        });
        let mut gpu = Gpu {
            identity,
            handoff,
            device_copies: Default::default(),
            pending: BTreeMap::new(),
            known: BTreeSet::new(),
            created_eagerly: 0,
            created_on_first_use: 0,
            pipeline_cache: vk::PipelineCache::null(),
            limits: Limits {
                max_groups: props.limits.max_compute_work_group_count,
                max_storage_range: u64::from(props.limits.max_storage_buffer_range),
            },
            device_info: chosen,
            memory: Memory {
                types,
                counter: Default::default(),
                transfers: Default::default(),
                external,
            },
            kernels: BTreeMap::new(),
            queue,
            command_pool: vk::CommandPool::null(),
            command_buffer: vk::CommandBuffer::null(),
            descriptor_pool: vk::DescriptorPool::null(),
            fence: vk::Fence::null(),
            device,
            instance: found.instance,
            _entry: found.entry,
        };
        gpu.create_objects()?;
        Ok(gpu)
    }

    fn create_objects(&mut self) -> Result<(), EngineError> {
        let fail = |what: &str, e: vk::Result| {
            EngineError::internal(format!("Vulkan: {what} failed: {e:?}"))
        };
        let device = &self.device;
        let pool_info = vk::CommandPoolCreateInfo::default()
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER)
            .queue_family_index(self.device_info.queue_family);
        // SAFETY (this and the calls below): `device` is live and each create
        // info is valid for the call; the objects are destroyed in `Drop`.
        self.command_pool = unsafe { device.create_command_pool(&pool_info, None) }
            .map_err(|e| fail("vkCreateCommandPool", e))?;
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.command_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: see above.
        self.command_buffer = unsafe { device.allocate_command_buffers(&alloc) }
            .map_err(|e| fail("vkAllocateCommandBuffers", e))?[0];
        // SAFETY: see above.
        self.fence = unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) }
            .map_err(|e| fail("vkCreateFence", e))?;
        Ok(())
    }

    /// Builds the pipelines of every compiled shader that `handoff` does not
    /// know (new or changed since the previous engine) and defers the others
    /// to their first call ([`Gpu::ensure_kernel`]); all through a pipeline
    /// cache seeded with the handed-over data. Then a descriptor pool with
    /// room for one call's set of the kernel with the most bindings.
    /// Called once, right after [`Gpu::open`].
    pub fn build_kernels(
        &mut self,
        shaders: &[(&KernelDecl, &Shader)],
        handoff: &Handoff,
    ) -> Result<(), EngineError> {
        self.pipeline_cache = self.create_pipeline_cache(handoff.blob.as_deref())?;
        for (decl, shader) in shaders {
            let hash = pipeline_cache::kernel_hash(decl, shader);
            if handoff.known.contains(&hash) {
                self.pending
                    .insert(decl.name.clone(), ((*decl).clone(), (*shader).clone()));
                self.known.insert(hash);
                continue;
            }
            let mut pipelines = KernelPipelines::default();
            let created = pipelines.create(&self.device, decl, shader, self.pipeline_cache);
            // Kept even when incomplete, so `Drop` destroys what was made.
            self.kernels.insert(decl.name.clone(), pipelines);
            created?;
            self.created_eagerly += 1;
            self.known.insert(hash);
        }
        let most = shaders
            .iter()
            .map(|(_, sh)| sh.layout.storage.len() as u32)
            .max()
            .unwrap_or(0)
            .max(1);
        let sizes = [
            vk::DescriptorPoolSize::default()
                .ty(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(most),
            vk::DescriptorPoolSize::default()
                .ty(vk::DescriptorType::UNIFORM_BUFFER)
                .descriptor_count(1),
        ];
        let dp_info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(1)
            .pool_sizes(&sizes);
        // SAFETY: `device` is live and the create info valid for the call;
        // the pool is destroyed in `Drop`.
        self.descriptor_pool = unsafe { self.device.create_descriptor_pool(&dp_info, None) }
            .map_err(|e| {
                EngineError::internal(format!("Vulkan: vkCreateDescriptorPool failed: {e:?}"))
            })?;
        Ok(())
    }

    /// A pipeline cache with `initial` data (already checked to come from
    /// this device and driver, intact); if the driver refuses the data, an
    /// empty one.
    fn create_pipeline_cache(
        &self,
        initial: Option<&[u8]>,
    ) -> Result<vk::PipelineCache, EngineError> {
        if let Some(data) = initial {
            let info = vk::PipelineCacheCreateInfo::default().initial_data(data);
            // SAFETY: `device` is live; `data` outlives the call and was
            // written by `vkGetPipelineCacheData` of a device with this
            // vendor, device, driver version and cache UUID (checked, with
            // its hash, by `Handoff::take_from`). Destroyed in `Drop`.
            match unsafe { self.device.create_pipeline_cache(&info, None) } {
                Ok(cache) => return Ok(cache),
                Err(e) => shared_state::tracing::warn!(
                    target: "kernel_vulkan",
                    "the previous version's pipeline cache was refused ({e:?}); starting empty"
                ),
            }
        }
        let info = vk::PipelineCacheCreateInfo::default();
        // SAFETY: as above, with no initial data.
        unsafe { self.device.create_pipeline_cache(&info, None) }.map_err(|e| {
            EngineError::internal(format!("Vulkan: vkCreatePipelineCache failed: {e:?}"))
        })
    }

    /// Creates the pipelines of `kernel` if they were deferred (a no-op for
    /// a kernel already built or not implemented).
    pub fn ensure_kernel(&mut self, kernel: &str) -> Result<(), EngineError> {
        let Some((decl, shader)) = self.pending.remove(kernel) else {
            return Ok(());
        };
        let mut pipelines = KernelPipelines::default();
        let created = pipelines.create(&self.device, &decl, &shader, self.pipeline_cache);
        self.kernels.insert(decl.name.clone(), pipelines);
        if created.is_err() {
            self.known
                .remove(&pipeline_cache::kernel_hash(&decl, &shader));
        }
        created?;
        self.created_on_first_use += 1;
        Ok(())
    }

    /// Kernels whose pipelines wait for their first call.
    pub fn deferred(&self) -> usize {
        self.pending.len()
    }

    /// Hashes of the kernels this device builds (for the next engine).
    pub fn known_kernels(&self) -> &BTreeSet<u64> {
        &self.known
    }

    /// The pipeline cache's data (`vkGetPipelineCacheData`).
    pub fn pipeline_cache_data(&self) -> Result<Vec<u8>, EngineError> {
        // SAFETY: the cache is a live object of `device`; only this engine's
        // thread uses it.
        unsafe { self.device.get_pipeline_cache_data(self.pipeline_cache) }.map_err(|e| {
            EngineError::internal(format!("Vulkan: vkGetPipelineCacheData failed: {e:?}"))
        })
    }

    /// Pipeline creation time of each kernel.
    pub fn pipeline_times(&self) -> impl Iterator<Item = (&str, std::time::Duration)> {
        self.kernels.iter().map(|(k, p)| (k.as_str(), p.elapsed))
    }

    /// `NAME [kind] (driver DRIVER, Vulkan X.Y.Z)`.
    pub fn describe(&self) -> String {
        let d = &self.device_info;
        format!(
            "{} [{}] (driver {}, Vulkan {})",
            d.name,
            d.kind(),
            d.driver,
            d.api
        )
    }

    /// Live device allocations: (count, bytes).
    pub fn live_allocations(&self) -> (u64, u64) {
        self.memory.counter.live()
    }

    /// Bytes copied (host -> device, device -> host) so far.
    pub fn transfers(&self) -> (u64, u64) {
        self.memory.transfers.totals()
    }

    /// The device's and driver's UUIDs where buffers can be handed over on
    /// the device; `None` where they go through host memory.
    pub fn handoff_identity(&self) -> Option<&str> {
        self.handoff.as_ref().map(|(id, _)| id.as_str())
    }

    /// Exports `buf`'s memory as an opaque fd (see [`crate::external`]).
    pub fn export_fd(&self, buf: &DeviceBuffer) -> Result<OwnedFd, EngineError> {
        let (_, fd_device) = self.handoff.as_ref().ok_or_else(|| {
            EngineError::internal("this device cannot hand buffers over on the device")
        })?;
        external::export_fd(fd_device, buf.memory)
            .map_err(|e| EngineError::internal(format!("vkGetMemoryFdKHR failed: {e:?}")))
    }

    /// A buffer over memory another engine exported (see [`Memory::import`]).
    pub fn import_buffer(
        &self,
        fd: OwnedFd,
        len: u64,
        allocation: u64,
        memory_type: u32,
    ) -> Result<DeviceBuffer, EngineError> {
        self.memory
            .import(&self.device, fd, len, allocation, memory_type)
    }

    pub fn create_buffer(&self, len: u64) -> Result<DeviceBuffer, EngineError> {
        self.memory.create(&self.device, len)
    }

    /// Frees a buffer; no submission is ever left pending, so it is idle.
    pub fn free_buffer(&self, buf: DeviceBuffer) {
        self.memory.free(&self.device, buf)
    }

    pub fn write(&self, buf: &DeviceBuffer, bytes: &[u8]) -> Result<(), EngineError> {
        self.memory.write(&self.device, buf, bytes)
    }

    pub fn read(&self, buf: &DeviceBuffer) -> Result<Vec<u8>, EngineError> {
        self.memory.read(&self.device, buf)
    }

    /// Records the passes of one call of `kernel` (each after the previous
    /// one's writes), all with one descriptor set: `storage` at bindings
    /// `0..`, `uniform` after them. Submits and waits until the device has
    /// finished and its writes are visible to the host.
    pub fn submit(
        &self,
        kernel: &str,
        storage: &[vk::Buffer],
        uniform: vk::Buffer,
        passes: &[PassPlan],
    ) -> Result<(), EngineError> {
        if passes.is_empty() {
            return Ok(());
        }
        let pipelines = self
            .kernels
            .get(kernel)
            .ok_or_else(|| EngineError::internal(format!("no pipelines for kernel {kernel:?}")))?;
        if storage.len() != pipelines.storage_bindings as usize {
            return Err(EngineError::internal(format!(
                "{kernel}: {} storage buffers for {} bindings",
                storage.len(),
                pipelines.storage_bindings
            )));
        }
        let fail = |what: &str, e: vk::Result| {
            EngineError::internal(format!("Vulkan: {what} failed: {e:?}"))
        };
        let device = &self.device;
        let cmd = self.command_buffer;
        // SAFETY: the previous call waited for its fence, so no descriptor
        // set from the pool is in use by a pending command buffer.
        unsafe { device.reset_descriptor_pool(self.descriptor_pool, Default::default()) }
            .map_err(|e| fail("vkResetDescriptorPool", e))?;
        let layouts = [pipelines.set_layout];
        let alloc = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(self.descriptor_pool)
            .set_layouts(&layouts);
        // SAFETY: the pool has room for one set of the kernel with the most
        // bindings, and it was just reset.
        let set = unsafe { device.allocate_descriptor_sets(&alloc) }
            .map_err(|e| fail("vkAllocateDescriptorSets", e))?[0];
        let infos: Vec<vk::DescriptorBufferInfo> = storage
            .iter()
            .chain([&uniform])
            .map(|&buffer| {
                vk::DescriptorBufferInfo::default()
                    .buffer(buffer)
                    .offset(0)
                    .range(vk::WHOLE_SIZE)
            })
            .collect();
        let writes: Vec<vk::WriteDescriptorSet> = infos
            .iter()
            .enumerate()
            .map(|(b, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(b as u32)
                    .descriptor_type(if b < storage.len() {
                        vk::DescriptorType::STORAGE_BUFFER
                    } else {
                        vk::DescriptorType::UNIFORM_BUFFER
                    })
                    .buffer_info(std::slice::from_ref(info))
            })
            .collect();
        // SAFETY: the set is fresh and unused; every buffer is a live buffer
        // of this device created with storage and uniform usage.
        unsafe { device.update_descriptor_sets(&writes, &[]) };

        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the command buffer is not pending (the last submission was
        // waited for) and its pool allows resetting it by beginning again;
        // the pipelines, layout and set recorded are live.
        unsafe {
            device
                .begin_command_buffer(cmd, &begin)
                .map_err(|e| fail("vkBeginCommandBuffer", e))?;
            device.cmd_bind_descriptor_sets(
                cmd,
                vk::PipelineBindPoint::COMPUTE,
                pipelines.layout,
                0,
                &[set],
                &[],
            );
            for (i, pass) in passes.iter().enumerate() {
                if i > 0 {
                    memory_barrier(
                        device,
                        cmd,
                        vk::PipelineStageFlags::COMPUTE_SHADER,
                        vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE,
                    );
                }
                device.cmd_bind_pipeline(
                    cmd,
                    vk::PipelineBindPoint::COMPUTE,
                    pipelines.passes[pass.pass],
                );
                let [x, y, z] = pass.groups;
                device.cmd_dispatch(cmd, x, y, z);
            }
            memory_barrier(
                device,
                cmd,
                vk::PipelineStageFlags::HOST,
                vk::AccessFlags::HOST_READ,
            );
            device
                .end_command_buffer(cmd)
                .map_err(|e| fail("vkEndCommandBuffer", e))?;
        }
        self.submit_and_wait()
    }

    /// Copies `src`'s bytes into `dst` on the device (no host memory
    /// involved) and waits until the copy is visible to shaders and host.
    pub fn copy_buffer(&self, src: &DeviceBuffer, dst: &DeviceBuffer) -> Result<(), EngineError> {
        let size = src.len.max(4).next_multiple_of(4);
        if size > dst.allocated {
            return Err(EngineError::internal(format!(
                "device copy of {size} bytes into a {}-byte buffer",
                dst.allocated
            )));
        }
        let fail = |what: &str, e: vk::Result| {
            EngineError::internal(format!("Vulkan: {what} failed: {e:?}"))
        };
        let device = &self.device;
        let cmd = self.command_buffer;
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        let region = vk::BufferCopy::default().size(size);
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(
                vk::AccessFlags::SHADER_READ
                    | vk::AccessFlags::SHADER_WRITE
                    | vk::AccessFlags::HOST_READ,
            );
        // SAFETY: the command buffer is not pending (every submission is
        // waited for); both buffers are live buffers of this device with
        // transfer usage and at least `size` bytes; nothing else uses them.
        unsafe {
            device
                .begin_command_buffer(cmd, &begin)
                .map_err(|e| fail("vkBeginCommandBuffer", e))?;
            device.cmd_copy_buffer(cmd, src.buffer, dst.buffer, &[region]);
            device.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            );
            device
                .end_command_buffer(cmd)
                .map_err(|e| fail("vkEndCommandBuffer", e))?;
        }
        self.submit_and_wait()?;
        self.device_copies.set(self.device_copies.get() + size);
        Ok(())
    }

    /// Bytes copied from buffer to buffer on the device so far.
    pub fn device_copy_bytes(&self) -> u64 {
        self.device_copies.get()
    }

    /// Submits the recorded command buffer and waits for its fence.
    fn submit_and_wait(&self) -> Result<(), EngineError> {
        let fail = |what: &str, e: vk::Result| {
            EngineError::internal(format!("Vulkan: {what} failed: {e:?}"))
        };
        let device = &self.device;
        let cmds = [self.command_buffer];
        let submit = [vk::SubmitInfo::default().command_buffers(&cmds)];
        // SAFETY: the command buffer is fully recorded; the fence is
        // unsignaled (reset after every wait) and not in use.
        unsafe { device.queue_submit(self.queue, &submit, self.fence) }
            .map_err(|e| fail("vkQueueSubmit", e))?;
        // SAFETY: the fence belongs to this device. Waiting without a
        // timeout: the engine's thread is the caller's to block.
        let waited = unsafe { device.wait_for_fences(&[self.fence], true, u64::MAX) };
        // SAFETY: the fence is signaled (or the device lost); either way no
        // submission uses it any more.
        let reset = unsafe { device.reset_fences(&[self.fence]) };
        waited.map_err(|e| fail("vkWaitForFences", e))?;
        reset.map_err(|e| fail("vkResetFences", e))
    }

    /// Waits until the device has no work left.
    pub fn wait_idle(&self) {
        // SAFETY: the device is live; nothing else submits to its queue.
        if let Err(e) = unsafe { self.device.device_wait_idle() } {
            shared_state::tracing::warn!(target: "kernel_vulkan", "vkDeviceWaitIdle failed: {e:?}");
        }
    }
}

/// Makes compute-shader writes visible to `dst_stage`/`dst_access`.
///
/// # Safety
/// `cmd` must be a command buffer of `device` in the recording state.
unsafe fn memory_barrier(
    device: &ash::Device,
    cmd: vk::CommandBuffer,
    dst_stage: vk::PipelineStageFlags,
    dst_access: vk::AccessFlags,
) {
    let barrier = vk::MemoryBarrier::default()
        .src_access_mask(vk::AccessFlags::SHADER_WRITE)
        .dst_access_mask(dst_access);
    // SAFETY: the caller guarantees `cmd` is recording on `device`.
    unsafe {
        device.cmd_pipeline_barrier(
            cmd,
            vk::PipelineStageFlags::COMPUTE_SHADER,
            dst_stage,
            vk::DependencyFlags::empty(),
            &[barrier],
            &[],
            &[],
        )
    };
}

/// Creates a logical device with one compute queue.
/// With `external`, enables [`external::EXTENSION`].
fn open_device(
    instance: &ash::Instance,
    chosen: &ComputeDevice,
    external: bool,
) -> Result<ash::Device, EngineError> {
    let priorities = [1.0f32];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(chosen.queue_family)
        .queue_priorities(&priorities)];
    let extensions = [external::EXTENSION.as_ptr()];
    let enabled: &[_] = if external { &extensions } else { &[] };
    let info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_extension_names(enabled);
    // SAFETY: `chosen.physical` belongs to the live `instance`, the queue
    // family has a compute queue, and the create infos outlive the call.
    unsafe { instance.create_device(chosen.physical, &info, None) }.map_err(|e| {
        EngineError::unavailable(format!(
            "cannot open Vulkan device {:?}: vkCreateDevice returned {e:?}",
            chosen.name
        ))
    })
}

impl Drop for Gpu {
    fn drop(&mut self) {
        self.wait_idle();
        for pipelines in self.kernels.values_mut() {
            pipelines.destroy(&self.device);
        }
        // SAFETY: the device is idle and no pipeline creation is running
        // (one thread); a null cache is a no-op.
        unsafe {
            self.device
                .destroy_pipeline_cache(std::mem::take(&mut self.pipeline_cache), None)
        };
        // SAFETY: the device is idle, so none of these objects is in use;
        // each is destroyed once, children (command buffer, sets) with
        // their pools, the device before the instance, and the loader
        // (`_entry`) is dropped after this body. Null handles are no-ops.
        unsafe {
            self.device
                .destroy_descriptor_pool(self.descriptor_pool, None);
            self.device.destroy_command_pool(self.command_pool, None);
            self.device.destroy_fence(self.fence, None);
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

//! Device buffers: one `VkBuffer` with its own `VkDeviceMemory`, host
//! visible and coherent (device-local too where the device has such
//! memory), so uploads and downloads are plain copies through a mapping.
//! Every allocation is counted, so leaks show.

use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use ash::vk;
use shared_state::EngineError;

use crate::external;

/// A storage buffer and its memory. Not `Clone`: it is freed exactly once,
/// by [`Gpu::free_buffer`](crate::gpu::Gpu::free_buffer).
pub struct DeviceBuffer {
    pub buffer: vk::Buffer,
    pub memory: vk::DeviceMemory,
    /// The memory type it was allocated from.
    pub memory_type: u32,
    /// Bytes of data it holds (may be 0; the buffer itself is never empty).
    pub len: u64,
    /// Bytes of device memory allocated for it.
    pub allocated: u64,
}

/// Live allocations of one device: count and bytes.
#[derive(Default)]
pub struct AllocationCounter {
    count: Cell<u64>,
    bytes: Cell<u64>,
}

impl AllocationCounter {
    pub fn live(&self) -> (u64, u64) {
        (self.count.get(), self.bytes.get())
    }

    fn add(&self, bytes: u64) {
        self.count.set(self.count.get() + 1);
        self.bytes.set(self.bytes.get() + bytes);
    }

    fn remove(&self, bytes: u64) {
        self.count.set(self.count.get().saturating_sub(1));
        self.bytes.set(self.bytes.get().saturating_sub(bytes));
    }
}

/// Bytes copied between host and device memory, each way, over the
/// device's life: uploads of call arguments, uniform blocks and residents,
/// downloads of outputs and exported residents. Tests read them to show
/// what a swap or a checkpoint moves (on lavapipe device memory is host
/// memory, so they count rather than time).
#[derive(Default)]
pub struct TransferCounter {
    to_device: Cell<u64>,
    to_host: Cell<u64>,
}

impl TransferCounter {
    /// (host -> device, device -> host) bytes so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.to_device.get(), self.to_host.get())
    }

    fn uploaded(&self, bytes: usize) {
        self.to_device.set(self.to_device.get() + bytes as u64);
    }

    fn downloaded(&self, bytes: usize) {
        self.to_host.set(self.to_host.get() + bytes as u64);
    }
}

/// Memory property sets to try, best first: device-local memory the host
/// can map (integrated GPUs, resizable BAR, lavapipe), then any host-visible
/// coherent memory.
const PREFERRED: [vk::MemoryPropertyFlags; 2] = [
    vk::MemoryPropertyFlags::from_raw(
        vk::MemoryPropertyFlags::DEVICE_LOCAL.as_raw()
            | vk::MemoryPropertyFlags::HOST_VISIBLE.as_raw()
            | vk::MemoryPropertyFlags::HOST_COHERENT.as_raw(),
    ),
    vk::MemoryPropertyFlags::from_raw(
        vk::MemoryPropertyFlags::HOST_VISIBLE.as_raw()
            | vk::MemoryPropertyFlags::HOST_COHERENT.as_raw(),
    ),
];

/// Creates buffers on one device and keeps count of them.
pub struct Memory {
    pub types: vk::PhysicalDeviceMemoryProperties,
    pub counter: AllocationCounter,
    pub transfers: TransferCounter,
    /// Every allocation is exportable as an opaque fd
    /// ([`crate::external`]).
    pub external: bool,
}

impl Memory {
    /// Creates a storage buffer for `len` bytes (at least 4 are allocated,
    /// as Vulkan has no empty buffers).
    pub fn create(&self, device: &ash::Device, len: u64) -> Result<DeviceBuffer, EngineError> {
        let (buffer, req) = self.new_buffer(device, len)?;
        let mut last_error = None;
        for flags in PREFERRED {
            for type_index in self.matching_types(req.memory_type_bits, flags) {
                let mut export =
                    vk::ExportMemoryAllocateInfo::default().handle_types(external::HANDLE);
                let mut alloc = vk::MemoryAllocateInfo::default()
                    .allocation_size(req.size)
                    .memory_type_index(type_index);
                if self.external {
                    alloc = alloc.push_next(&mut export);
                }
                // SAFETY: the type index comes from this device's memory
                // properties and is allowed by the buffer's requirements;
                // the export info (extension enabled) outlives the call.
                match unsafe { device.allocate_memory(&alloc, None) } {
                    Ok(memory) => {
                        return self.bind(device, buffer, memory, type_index, len, req.size);
                    }
                    Err(e) => last_error = Some(e),
                }
            }
        }
        // SAFETY: the buffer has no memory bound and is not in use.
        unsafe { device.destroy_buffer(buffer, None) };
        Err(EngineError::internal(match last_error {
            Some(e) => format!(
                "cannot allocate {size} bytes of device memory: {e:?}",
                size = req.size
            ),
            None => "the device has no host-visible, coherent memory type for storage buffers"
                .to_string(),
        }))
    }

    /// A buffer of `len` bytes over memory another device of the same
    /// physical device and driver exported as `fd` (`allocation` bytes of
    /// memory type `memory_type`, as it was allocated there).
    pub fn import(
        &self,
        device: &ash::Device,
        fd: OwnedFd,
        len: u64,
        allocation: u64,
        memory_type: u32,
    ) -> Result<DeviceBuffer, EngineError> {
        if !self.external || memory_type >= self.types.memory_type_count {
            return Err(EngineError::internal(format!(
                "cannot import device memory of type {memory_type} here"
            )));
        }
        let (buffer, req) = self.new_buffer(device, len)?;
        if req.size > allocation || req.memory_type_bits & (1 << memory_type) == 0 {
            // SAFETY: the buffer has no memory bound and is not in use.
            unsafe { device.destroy_buffer(buffer, None) };
            return Err(EngineError::internal(format!(
                "handed-over memory ({allocation} bytes, type {memory_type}) does not fit a {len}-byte buffer"
            )));
        }
        let raw = fd.into_raw_fd();
        let mut import = vk::ImportMemoryFdInfoKHR::default()
            .handle_type(external::HANDLE)
            .fd(raw);
        // Exportable again, for the swap after next.
        let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(external::HANDLE);
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(allocation)
            .memory_type_index(memory_type)
            .push_next(&mut import)
            .push_next(&mut export);
        // SAFETY: `raw` is an opaque fd exported by the same physical device
        // and driver (the caller checked their UUIDs) with this size and
        // memory type; the import info outlives the call.
        match unsafe { device.allocate_memory(&alloc, None) } {
            // The driver owns `raw` now.
            Ok(memory) => self.bind(device, buffer, memory, memory_type, len, allocation),
            Err(e) => {
                // SAFETY: a failed import leaves the fd with us, and
                // nothing else owns it: close it.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
                // SAFETY: the buffer has no memory bound and is not in use.
                unsafe { device.destroy_buffer(buffer, None) };
                Err(EngineError::internal(format!(
                    "importing {allocation} bytes of handed-over device memory failed: {e:?}"
                )))
            }
        }
    }

    /// A new, unbound storage buffer for `len` bytes (at least 4, as
    /// Vulkan has no empty buffers) and its memory requirements.
    fn new_buffer(
        &self,
        device: &ash::Device,
        len: u64,
    ) -> Result<(vk::Buffer, vk::MemoryRequirements), EngineError> {
        let size = len.max(4).next_multiple_of(4);
        let mut external_info =
            vk::ExternalMemoryBufferCreateInfo::default().handle_types(external::HANDLE);
        let mut info = vk::BufferCreateInfo::default()
            .size(size)
            // Every buffer can be bound either way (storage for tensors,
            // uniform for a call's block of dims and parameters) and copied
            // on the device.
            .usage(external::USAGE)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        if self.external {
            info = info.push_next(&mut external_info);
        }
        // SAFETY: `device` is live and the create info (and what it chains)
        // is valid for the call.
        let buffer = unsafe { device.create_buffer(&info, None) }.map_err(|e| {
            EngineError::internal(format!("vkCreateBuffer of {size} bytes failed: {e:?}"))
        })?;
        // SAFETY: `buffer` was just created on `device`.
        let req = unsafe { device.get_buffer_memory_requirements(buffer) };
        Ok((buffer, req))
    }

    /// Binds fresh `memory` to `buffer`, freeing both on failure.
    fn bind(
        &self,
        device: &ash::Device,
        buffer: vk::Buffer,
        memory: vk::DeviceMemory,
        memory_type: u32,
        len: u64,
        allocated: u64,
    ) -> Result<DeviceBuffer, EngineError> {
        // SAFETY: `memory` is fresh, large enough and of an allowed type;
        // offset 0 meets any alignment.
        if let Err(e) = unsafe { device.bind_buffer_memory(buffer, memory, 0) } {
            // SAFETY: neither object is in use by the device.
            unsafe {
                device.free_memory(memory, None);
                device.destroy_buffer(buffer, None);
            }
            return Err(EngineError::internal(format!(
                "vkBindBufferMemory failed: {e:?}"
            )));
        }
        self.counter.add(allocated);
        Ok(DeviceBuffer {
            buffer,
            memory,
            memory_type,
            len,
            allocated,
        })
    }

    fn matching_types(
        &self,
        allowed: u32,
        flags: vk::MemoryPropertyFlags,
    ) -> impl Iterator<Item = u32> + '_ {
        (0..self.types.memory_type_count).filter(move |&i| {
            allowed & (1 << i) != 0
                && self.types.memory_types[i as usize]
                    .property_flags
                    .contains(flags)
        })
    }

    /// Frees a buffer and its memory. The device must not be using it.
    pub fn free(&self, device: &ash::Device, buf: DeviceBuffer) {
        // SAFETY: every submission waits for its fence before returning, so
        // the device is not using `buf`; `buf` is consumed, so it is freed
        // once.
        unsafe {
            device.destroy_buffer(buf.buffer, None);
            device.free_memory(buf.memory, None);
        }
        self.counter.remove(buf.allocated);
    }

    /// Copies `bytes` into the start of the buffer.
    pub fn write(
        &self,
        device: &ash::Device,
        buf: &DeviceBuffer,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        if bytes.len() as u64 > buf.allocated {
            return Err(EngineError::internal(format!(
                "write of {} bytes into a {}-byte buffer",
                bytes.len(),
                buf.allocated
            )));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let ptr = self.map(device, buf)?;
        // SAFETY: the mapping covers the whole allocation, which is at least
        // `bytes.len()` bytes (checked above); host memory and the mapping
        // cannot overlap. The memory is coherent, so no flush is needed, and
        // the queue submission that reads it makes the write visible.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len());
            device.unmap_memory(buf.memory);
        }
        self.transfers.uploaded(bytes.len());
        Ok(())
    }

    /// Copies the buffer's `len` bytes out.
    pub fn read(&self, device: &ash::Device, buf: &DeviceBuffer) -> Result<Vec<u8>, EngineError> {
        let mut out = vec![0u8; buf.len as usize];
        if out.is_empty() {
            return Ok(out);
        }
        let ptr = self.map(device, buf)?;
        // SAFETY: the mapping covers the allocation (>= `len` bytes); the
        // device is idle for this buffer (every submission is waited for and
        // ends with a shader-write -> host-read barrier), memory is coherent.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.cast_const(), out.as_mut_ptr(), out.len());
            device.unmap_memory(buf.memory);
        }
        self.transfers.downloaded(out.len());
        Ok(out)
    }

    fn map(&self, device: &ash::Device, buf: &DeviceBuffer) -> Result<*mut u8, EngineError> {
        // SAFETY: the memory is host-visible (only such types are chosen)
        // and not currently mapped (every map is unmapped before returning).
        unsafe { device.map_memory(buf.memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }
            .map(|p| p.cast::<u8>())
            .map_err(|e| EngineError::internal(format!("vkMapMemory failed: {e:?}")))
    }
}

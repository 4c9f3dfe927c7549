//! Device memory of resident buffers, made so that the next version of the
//! module (a new library in the same process and primary context) can take
//! it over on the device: CUDA virtual memory management. Each buffer is a
//! physical allocation (`cuMemCreate`, exportable as a POSIX file
//! descriptor) mapped into a virtual address range of its own engine. A
//! swap exports the allocation as an fd (`cuMemExportToShareableHandle`);
//! the next engine imports it (`cuMemImportFromShareableHandle`) and maps
//! it into its own range. Neither engine frees the other's mapping: each
//! unmaps its own range and the driver frees the memory when the last
//! mapping and the last fd are gone, so no code of the old library is
//! needed to free what the new one holds (never a `CudaSlice` of the old
//! library, whose `Drop` is that library's code).
//!
//! Sizes: `cuMemCreate`, `cuMemAddressReserve` and `cuMemMap` take sizes
//! that are multiples of the allocation granularity
//! (`cuMemGetAllocationGranularity`, 2 MiB on current GPUs); a buffer's
//! data length is rounded up to it. Every handle this module gets
//! (`cuMemCreate`, `cuMemImportFromShareableHandle`,
//! `cuMemRetainAllocationHandle`) is released as soon as its mapping or
//! export is made: the mapping keeps the memory alive.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use cudarc::driver::CudaContext;
use cudarc::driver::result::DriverError;
use cudarc::driver::sys::{
    self, CUdevice_attribute, CUmemAccess_flags, CUmemAllocationGranularity_flags,
    CUmemAllocationHandleType, CUmemAllocationType, CUmemLocationType,
};
use shared_state::EngineError;

use crate::availability::driver_error;

/// The shareable handle type: a file descriptor.
const HANDLE: CUmemAllocationHandleType =
    CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;

/// Where resident memory is made: a device that supports virtual memory
/// management, and whether its allocations can be exported as fds.
pub struct Placement {
    /// The primary context, made current on the calling thread before
    /// memory is made or mapped.
    ctx: std::sync::Arc<CudaContext>,
    ordinal: i32,
    /// Allocation granularity in bytes (a power of two).
    granularity: usize,
    /// Allocations are made exportable as POSIX fds (the device supports it).
    pub exportable: bool,
}

/// Device memory of one resident buffer, mapped at `ptr` in this engine.
/// Not `Clone`: unmapped exactly once, by `Drop`.
pub struct ResidentMemory {
    pub ptr: sys::CUdeviceptr,
    /// Bytes mapped (the data length rounded up to the granularity).
    pub size: usize,
    /// Bytes of data.
    pub len: usize,
    /// The fd this memory was imported from, kept to hand it on again
    /// (a duplicate is handed over: the driver counts it as a reference).
    imported_from: Option<OwnedFd>,
}

impl Placement {
    /// Checks that device `ordinal` supports virtual memory management and
    /// finds its granularity.
    pub fn of_device(ctx: &std::sync::Arc<CudaContext>) -> Result<Placement, EngineError> {
        ctx.bind_to_thread()
            .map_err(|e| driver_error("make the CUDA context current", e))?;
        let ordinal = i32::try_from(ctx.ordinal())
            .map_err(|_| EngineError::bad_call("CUDA device index too large"))?;
        let dev = cudarc::driver::result::device::get(ordinal)
            .map_err(|e| driver_error(&format!("CUDA device {ordinal}"), e))?;
        let attr = |a: CUdevice_attribute| {
            // SAFETY: `dev` is a device handle the driver just returned.
            unsafe { cudarc::driver::result::device::get_attribute(dev, a) }
                .map_err(|e| driver_error("device attribute", e))
        };
        let vmm =
            attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED)?;
        if vmm == 0 {
            return Err(EngineError::unavailable(format!(
                "CUDA device {ordinal} does not support virtual memory management \
                 (CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED is 0): resident buffers need it"
            )));
        }
        let exportable = attr(
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
        )? != 0;
        let mut placement = Placement {
            ctx: ctx.clone(),
            ordinal,
            granularity: 0,
            exportable,
        };
        let prop = placement.properties();
        let mut granularity = 0usize;
        // SAFETY: `prop` describes pinned memory on a device that supports
        // VMM; both pointers are valid for the call.
        unsafe {
            sys::cuMemGetAllocationGranularity(
                &mut granularity,
                &prop,
                CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM,
            )
        }
        .result()
        .map_err(|e| driver_error("cuMemGetAllocationGranularity", e))?;
        if granularity == 0 || !granularity.is_power_of_two() {
            return Err(EngineError::internal(format!(
                "CUDA device {ordinal}: allocation granularity {granularity} is not a power of two"
            )));
        }
        placement.granularity = granularity;
        Ok(placement)
    }

    /// Pinned device memory on this device, exportable as an fd where the
    /// device supports it.
    fn properties(&self) -> sys::CUmemAllocationProp {
        sys::CUmemAllocationProp {
            type_: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
            requestedHandleTypes: if self.exportable {
                HANDLE
            } else {
                CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE
            },
            location: self.location(),
            win32HandleMetaData: std::ptr::null_mut(),
            allocFlags: sys::CUmemAllocationProp_st__bindgen_ty_1 {
                compressionType: 0,
                gpuDirectRDMACapable: 0,
                usage: 0,
                reserved: [0; 4],
            },
        }
    }

    /// Makes the engine's context current on this thread (the raw driver
    /// calls here and in `residents` need it; cudarc's own calls bind it
    /// themselves).
    pub fn bind(&self) -> Result<(), EngineError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| driver_error("make the CUDA context current", e))
    }

    fn location(&self) -> sys::CUmemLocation {
        sys::CUmemLocation {
            type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            id: self.ordinal,
        }
    }

    /// `len` bytes rounded up to the granularity (at least one granule:
    /// the driver makes no empty allocation).
    pub fn rounded(&self, len: usize) -> Result<usize, EngineError> {
        len.max(1)
            .checked_next_multiple_of(self.granularity)
            .ok_or_else(|| EngineError::bad_call(format!("{len} bytes of device memory overflow")))
    }

    /// New device memory for `len` bytes (contents undefined).
    pub fn create(&self, len: usize) -> Result<ResidentMemory, EngineError> {
        self.bind()?;
        let size = self.rounded(len)?;
        let prop = self.properties();
        let mut handle: sys::CUmemGenericAllocationHandle = 0;
        // SAFETY: `size` is a non-zero multiple of the granularity for
        // `prop` (`rounded`); flags must be 0; the pointers are valid.
        unsafe { sys::cuMemCreate(&mut handle, size, &prop, 0) }
            .result()
            .map_err(|e| driver_error(&format!("cuMemCreate of {size} bytes"), e))?;
        self.map(handle, size, len, None)
    }

    /// Maps memory another engine of this process exported as `fd`
    /// (`size` bytes allocated for `len` bytes of data). `fd` stays the
    /// caller's; a duplicate is kept to hand the memory on again.
    pub fn import(
        &self,
        fd: &OwnedFd,
        size: usize,
        len: usize,
    ) -> Result<ResidentMemory, EngineError> {
        if size == 0 || !size.is_multiple_of(self.granularity) || len > size {
            return Err(EngineError::internal(format!(
                "handed-over device memory of {size} bytes for {len} bytes of data does not fit \
                 this device's granularity ({} bytes)",
                self.granularity
            )));
        }
        self.bind()?;
        let keep = fd
            .try_clone()
            .map_err(|e| EngineError::internal(format!("duplicating a device memory fd: {e}")))?;
        let mut handle: sys::CUmemGenericAllocationHandle = 0;
        let raw = fd.as_raw_fd() as usize as *mut c_void;
        // SAFETY: for POSIX fds the driver takes the fd's value in the
        // pointer argument (as NVIDIA's samples pass it); it does not take
        // ownership of the fd, which stays open in `fd`. The fd names an
        // allocation exported by this process on this device.
        unsafe { sys::cuMemImportFromShareableHandle(&mut handle, raw, HANDLE) }
            .result()
            .map_err(|e| driver_error("cuMemImportFromShareableHandle", e))?;
        self.map(handle, size, len, Some(keep))
    }

    /// Reserves a range, maps `handle` there with read-write access for
    /// this device, and releases the handle (the mapping keeps the memory).
    /// On failure everything made here is undone.
    fn map(
        &self,
        handle: sys::CUmemGenericAllocationHandle,
        size: usize,
        len: usize,
        imported_from: Option<OwnedFd>,
    ) -> Result<ResidentMemory, EngineError> {
        let mapped = self.reserve_and_map(handle, size);
        // SAFETY: `handle` came from cuMemCreate or an import and is
        // released once, here; a mapping made above keeps the memory.
        let released = unsafe { sys::cuMemRelease(handle) }.result();
        let ptr = mapped?;
        let memory = ResidentMemory {
            ptr,
            size,
            len,
            imported_from,
        };
        released.map_err(|e| driver_error("cuMemRelease", e))?;
        Ok(memory)
    }

    fn reserve_and_map(
        &self,
        handle: sys::CUmemGenericAllocationHandle,
        size: usize,
    ) -> Result<sys::CUdeviceptr, EngineError> {
        let mut ptr: sys::CUdeviceptr = 0;
        // SAFETY: `size` is a multiple of the granularity; alignment 0 and
        // address 0 let the driver choose; flags must be 0.
        unsafe { sys::cuMemAddressReserve(&mut ptr, size, 0, 0, 0) }
            .result()
            .map_err(|e| driver_error(&format!("cuMemAddressReserve of {size} bytes"), e))?;
        let free_range = |e: DriverError, doing: &str| {
            // SAFETY: the range was reserved above with this size and
            // nothing is mapped in it any more.
            let _ = unsafe { sys::cuMemAddressFree(ptr, size) };
            driver_error(doing, e)
        };
        // SAFETY: the range is reserved, `size` bytes (the whole
        // allocation, offset 0); flags must be 0.
        if let Err(e) = unsafe { sys::cuMemMap(ptr, size, 0, handle, 0) }.result() {
            return Err(free_range(e, "cuMemMap"));
        }
        let access = sys::CUmemAccessDesc {
            location: self.location(),
            flags: CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        };
        // SAFETY: the whole mapped range, one descriptor.
        if let Err(e) = unsafe { sys::cuMemSetAccess(ptr, size, &access, 1) }.result() {
            // SAFETY: mapped above, unmapped once before the range goes.
            let _ = unsafe { sys::cuMemUnmap(ptr, size) };
            return Err(free_range(e, "cuMemSetAccess"));
        }
        Ok(ptr)
    }
}

impl ResidentMemory {
    /// A new fd for this memory, owned by the caller, for the next engine
    /// to import.
    pub fn export(&self) -> Result<OwnedFd, EngineError> {
        if let Some(fd) = &self.imported_from {
            return fd.try_clone().map_err(|e| {
                EngineError::internal(format!("duplicating a device memory fd: {e}"))
            });
        }
        let mut handle: sys::CUmemGenericAllocationHandle = 0;
        // SAFETY: `ptr` is the start of a live mapping of this engine.
        unsafe { sys::cuMemRetainAllocationHandle(&mut handle, self.ptr as usize as *mut c_void) }
            .result()
            .map_err(|e| driver_error("cuMemRetainAllocationHandle", e))?;
        let mut fd: std::ffi::c_int = -1;
        // SAFETY: for POSIX fds the driver writes an int through the
        // pointer; the handle is live (retained above); flags must be 0.
        let exported = unsafe {
            sys::cuMemExportToShareableHandle((&raw mut fd).cast::<c_void>(), handle, HANDLE, 0)
        }
        .result();
        // SAFETY: retained above, released once.
        let _ = unsafe { sys::cuMemRelease(handle) };
        exported.map_err(|e| driver_error("cuMemExportToShareableHandle", e))?;
        if fd < 0 {
            return Err(EngineError::internal(
                "cuMemExportToShareableHandle returned no fd",
            ));
        }
        // SAFETY: the driver returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Drop for ResidentMemory {
    /// Unmaps this engine's range and gives it back. The engine waits for
    /// its stream before a resident goes, so no kernel of its own uses it;
    /// another engine's mapping of the same memory is its own.
    fn drop(&mut self) {
        // SAFETY: mapped by `reserve_and_map` with this size, unmapped and
        // freed once (here).
        unsafe {
            let _ = sys::cuMemUnmap(self.ptr, self.size);
            let _ = sys::cuMemAddressFree(self.ptr, self.size);
        }
    }
}

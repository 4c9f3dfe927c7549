//! A snapshot section whose data stays on the device: a handle to device
//! memory that the next version of the same module imports, instead of the
//! bytes. Made only by [`crate::Engine::export_handoff`]; never written to
//! a file or hashed (those take [`crate::Engine::export_state`], which
//! carries the bytes).
//!
//! It holds only std and contract types: dropping it (the import failed,
//! the next version did not know the section) closes the handle with the
//! host's own std, so no code of the exporting library runs and that
//! library can be closed as soon as its engine is gone.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::tensor::DType;

/// How the device memory is named.
#[derive(Clone, Debug)]
pub enum DeviceHandle {
    /// A file descriptor for the memory (Vulkan: `VK_KHR_external_memory_fd`,
    /// opaque fd; CUDA: `cuMemExportToShareableHandle`, POSIX fd, of a
    /// virtual-memory-management allocation). Whoever imports it duplicates
    /// it or leaves it open: the section keeps its own, closed when the last
    /// clone of the section drops.
    OpaqueFd(Arc<OwnedFd>),
}

impl PartialEq for DeviceHandle {
    /// The same handle (not merely equal bytes behind it).
    fn eq(&self, other: &DeviceHandle) -> bool {
        match (self, other) {
            (DeviceHandle::OpaqueFd(a), DeviceHandle::OpaqueFd(b)) => {
                a.as_raw_fd() == b.as_raw_fd()
            }
        }
    }
}

/// A resident buffer left on the device, by handle.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSection {
    pub handle: DeviceHandle,
    /// Bytes of data (the tensor's `byte_len`).
    pub bytes: u64,
    /// Bytes of device memory behind the handle (an import must ask for
    /// exactly these; CUDA: the data rounded up to the allocation
    /// granularity, 0 for an empty tensor).
    pub allocation: u64,
    /// The backend's kind of memory (Vulkan: the memory type index; CUDA: 0).
    pub memory_kind: u32,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The device and driver that own the memory (Vulkan: device UUID and
    /// driver UUID, hex; CUDA: `cuda device=UUID`). An engine on another device or driver cannot
    /// import it and says so; the host then hands the state over through
    /// host memory.
    pub device: String,
}

impl fmt::Display for DeviceSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}] on device {} ({} bytes)",
            self.dtype,
            crate::tensor::format_shape(&self.shape),
            self.device,
            self.bytes
        )
    }
}

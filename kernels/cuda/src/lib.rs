//! kiln's CUDA kernel module: the standard kernels on an NVIDIA GPU.
//!
//! Built as a `cdylib` with no CUDA toolkit: cudarc loads the driver
//! (`libcuda.so.1`) and NVRTC (`libnvrtc.so.13`) at run time, and the kernels
//! in `kernels/*.cu` (embedded with `include_str!`) are compiled by NVRTC
//! when an engine starts. Without a driver, a device or NVRTC, engine
//! creation and probing return an `Unavailable` error saying which.
//!
//! The module spawns no threads and keeps no CUDA objects in statics (cudarc
//! itself keeps the loaded libraries and resolved symbols in statics of this
//! library copy; they are reopened by every loaded version).
//!
//! Each engine retains the device's primary context. The host creates the
//! new engine before dropping the old one, so during a reload the primary
//! context is retained by the new version before the old one releases it:
//! it is never torn down and re-created.

mod availability;
mod buffers;
mod compile;
mod device;
mod engine;
mod launch;

#[cfg(test)]
mod tests;

shared_state::export_module! {
    create: engine::CudaEngine::create,
    probe: device::probe_devices,
}

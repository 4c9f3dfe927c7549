//! kiln's CUDA kernel module: declared kernels on an NVIDIA GPU.
//!
//! Built as a `cdylib` with no CUDA toolkit: cudarc loads the driver
//! (`libcuda.so.1`) and NVRTC (`libnvrtc.so.13`) at run time. The kernels
//! are `kernels/NAME.cu`, staged with each version and handed to the engine
//! (`EngineContext::sources`), compiled by NVRTC when the engine is created
//! and launched from their declarations by one generic path (see
//! [`convention`]). Without a driver, a device or NVRTC, engine
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
mod convention;
mod device;
mod engine;
mod launch;
mod ptx_cache;
mod resident_memory;
mod residents;
mod written_inputs;

#[cfg(test)]
mod tests;

shared_state::export_module! {
    create: engine::CudaEngine::create,
    probe: device::probe_devices,
}

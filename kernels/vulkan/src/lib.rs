//! kiln's Vulkan kernel module: the standard kernels as compute pipelines
//! on any Vulkan device (a GPU, or Mesa's lavapipe software device).
//!
//! The Vulkan loader is opened at run time (`ash`'s `loaded` feature), so
//! the module builds and loads with no Vulkan installed and says why it
//! cannot run. Shaders are WGSL in `shaders/`, compiled to SPIR-V by
//! `build.rs` (naga) and embedded. The engine spawns no threads and keeps no
//! Vulkan object in a static: everything lives in the engine and is
//! destroyed when it drops.

mod engine;
mod gpu;
mod instance;
mod memory;
mod pipelines;
mod plan;
mod shaders;

#[cfg(test)]
mod tests;

shared_state::export_module! {
    create: engine::VulkanEngine::create,
    probe: engine::probe_devices,
}

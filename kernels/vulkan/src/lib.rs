//! kiln's Vulkan kernel module: declared kernels as compute pipelines on any
//! Vulkan device (a GPU, or Mesa's lavapipe software device).
//!
//! The Vulkan loader is opened at run time (`ash`'s `loaded` feature), so
//! the module builds and loads with no Vulkan installed and says why it
//! cannot run. Shaders are WGSL in `shaders/NAME.wgsl`, staged with each
//! version and handed to the engine (`EngineContext::sources`), compiled to
//! SPIR-V by naga when the engine is created, and dispatched from the
//! kernel's declaration by one generic path (see [`convention`]). The engine spawns no threads and keeps no
//! Vulkan object in a static: everything lives in the engine and is
//! destroyed when it drops.

mod convention;
mod engine;
mod external;
mod gpu;
mod instance;
mod memory;
mod pipeline_cache;
mod pipelines;
mod plan;
mod shaders;

#[cfg(test)]
mod tests;

shared_state::export_module! {
    create: engine::VulkanEngine::create,
    probe: engine::probe_devices,
}

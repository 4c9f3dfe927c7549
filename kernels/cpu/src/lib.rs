//! kiln's CPU kernel module: the standard kernels on rayon.
//!
//! Built as a `cdylib` and loaded by the kiln host. It never spawns a thread
//! itself and never touches rayon's global pool: its pool's threads are
//! started by the host (through `EngineContext::spawn`) and joined by the
//! host before the library is closed.

mod engine;
mod kernels;

shared_state::export_module! {
    create: engine::CpuEngine::create,
    probe: engine::probe_devices,
}

//! kiln's CPU kernel module: the declared kernels on rayon, one file per
//! kernel under `src/declared/` (see [`registry`]).
//!
//! Built as a `cdylib` and loaded by the kiln host. It never spawns a thread
//! itself and never touches rayon's global pool: its pool's threads are
//! started by the host (through `EngineContext::spawn`) and joined by the
//! host before the library is closed.

mod declared;
mod engine;
mod kernels;
mod low_precision;
pub mod registry;

shared_state::export_module! {
    create: engine::CpuEngine::create,
    probe: engine::probe_devices,
}

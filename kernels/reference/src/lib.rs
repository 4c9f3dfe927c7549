//! kiln's reference module: the kernels as plain, obviously-correct code
//! (single-threaded, f64 accumulation), one file per kernel under
//! `src/declared/`. The host computes expected outputs with it when a
//! workload stores none and no `--reference BACKEND` is given; editing it
//! while `kiln dev` runs swaps it and re-checks the served version.
//!
//! It spawns no thread and holds no global state.

mod declared;
mod engine;
pub mod registry;

shared_state::export_module! {
    create: engine::ReferenceEngine::create,
    probe: engine::probe_devices,
}

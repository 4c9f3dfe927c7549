//! kiln's reference module: the kernels as plain, obviously-correct code
//! (single-threaded, f64 accumulation), one file per kernel under
//! `src/declared/`. The host computes expected outputs with it when a
//! workload stores none and no `--reference BACKEND` is given; editing it
//! while `kiln dev` runs swaps it and re-checks the served version.
//!
//! Its engine is the CPU module's (`kernel-cpu-engine`, without the rayon
//! pool, tuning and counters): residents and calls checked against their
//! declarations, run one at a time on the engine thread. It spawns no
//! thread and holds no global state.

mod declared;
pub mod registry;

use kernel_cpu_engine::CpuEngine;
use shared_state::{DeviceInfo, EngineContext, EngineError, Snapshot};

/// The module's factory: the reference engine with this module's kernels.
fn create(
    ctx: EngineContext,
    prior: Option<&mut Snapshot>,
) -> Result<(CpuEngine, Vec<String>), EngineError> {
    CpuEngine::create_reference(ctx, prior, env!("CARGO_PKG_NAME"), declared::entries())
}

/// The reference backend runs on this CPU, single-threaded.
fn probe_devices() -> Result<Vec<DeviceInfo>, EngineError> {
    Ok(vec![DeviceInfo {
        index: 0,
        name: "reference".to_string(),
        kind: "cpu".to_string(),
        driver: "plain Rust, one thread".to_string(),
        api: String::new(),
    }])
}

shared_state::export_module! {
    create: create,
    probe: probe_devices,
}

//! kiln's CPU kernel module: the declared kernels on rayon, one file per
//! kernel under `src/declared/` (see [`registry`]).
//!
//! Only the kernels and this export glue live in this crate; the engine,
//! dispatch and state handoff are `kernel-cpu-engine`, an rlib compiled
//! once, so a kernel edit rebuilds kernel code only.
//!
//! Built as a `cdylib` and loaded by the kiln host. It never spawns a thread
//! itself and never touches rayon's global pool: its pool's threads are
//! started by the host (through `EngineContext::spawn`) and joined by the
//! host before the library is closed.

mod declared;
mod kernels;
mod low_precision;
pub mod registry;

use kernel_cpu_engine::CpuEngine;
use shared_state::{EngineContext, EngineError, Snapshot};

/// The module's factory: the engine with this module's kernels.
fn create(
    ctx: EngineContext,
    prior: Option<&mut Snapshot>,
) -> Result<(CpuEngine, Vec<String>), EngineError> {
    CpuEngine::create(ctx, prior, env!("CARGO_PKG_NAME"), declared::entries())
}

shared_state::export_module! {
    create: create,
    probe: kernel_cpu_engine::probe_devices,
}

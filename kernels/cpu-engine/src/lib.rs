//! The CPU module's glue, in its own crate so that it is compiled once: the
//! engine (resident buffers, tuning, counters, a rayon pool on host-started
//! threads), the dispatch of a call to the kernel registered under its
//! declared name, and the state handoff. The `kernel-cpu` cdylib holds the
//! kernels and passes their table to [`CpuEngine::create`]; editing a
//! kernel rebuilds that crate only (kernel code and the export glue).
//!
//! Nothing here spawns a thread itself or touches rayon's global pool.

mod engine;
pub mod registry;

pub use engine::{CpuEngine, probe_devices};

//! The engine and registry of the CPU and reference modules, in their own
//! crate so that they are compiled once: the engine (resident buffers, the
//! dispatch of a call to the kernel registered under its declared name, the
//! state handoff) and, for the CPU module (feature `rayon`, on by default),
//! a rayon pool on host-started threads, tuning and counters. The
//! `kernel-cpu` cdylib holds its kernels and passes their table to
//! [`CpuEngine::create`], the reference module (`kernels/reference`) its
//! plain kernels to [`CpuEngine::create_reference`]; editing a kernel
//! rebuilds that module's crate only (kernel code and the export glue).
//!
//! Nothing here spawns a thread itself or touches rayon's global pool.

mod engine;
#[cfg(feature = "rayon")]
mod pooled;
pub mod registry;

pub use engine::{CpuEngine, probe_devices};

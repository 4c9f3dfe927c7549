//! The machine kiln runs on: its measured peaks (memory bandwidth by a
//! STREAM-like triad, f32 compute by an FMA loop, on the CPU also i8
//! compute by a dot-product loop) on the CPU and on each
//! Vulkan or CUDA device, cached under
//! `target/kiln/machine/`; the roofline a call is judged against; the
//! last-level cache and the flush that makes a timing cold.
//!
//! - [`llc`]: the LLC size reported, judged, and the size used.
//! - [`triad`], [`fma`], [`i8dot`]: the CPU measurements (bandwidth, f32
//!   and i8 compute); [`threads`]: their pool.
//! - [`flush`]: the cold-cache flush and its cost.
//! - [`peaks`]: a device's peaks, the [`peaks::PeakProbe`] trait a backend
//!   implements to measure its devices, and the CPU's probe.
//! - [`peak_kernels`]: the peak kernels each GPU module bundles (triad and
//!   FMA, `kernels/{vulkan,cuda}/peaks/`) and the engine that runs them;
//!   [`engine_peaks`]: a GPU device's probe, timing them.
//! - [`key`]: what peaks depend on; [`store`]: the cache on disk and when
//!   measuring is allowed ([`store::Policy`]); [`build_gate`]: is cargo
//!   building now.
//! - [`roofline`]: achieved rates, intensity, % of the roofline bound;
//!   [`columns`]: the replay table's columns for them; [`recorded`]: what
//!   a version's history keeps of them.
//!
//! `kiln machine` is a command, a layer up: [`crate::machine_command`].

pub mod build_gate;
pub mod columns;
pub mod engine_peaks;
pub mod flush;
pub mod fma;
pub mod i8dot;
pub mod key;
pub mod llc;
pub mod peak_kernels;
pub mod peaks;
pub mod recorded;
pub mod replay_roof;
pub mod roofline;
pub mod store;
pub mod threads;
pub mod triad;

pub use flush::CacheFlush;
pub use key::MachineKey;
pub use llc::LlcChoice;
pub use peaks::{CpuProbe, DevicePeaks, FlushCost, PeakProbe, Rate};
pub use roofline::{Achieved, Arithmetic, Bound, ComputePeak, Roof, Work, achieved};
pub use store::{Lookup, PeakStore, Policy};

#[cfg(test)]
mod relations_tests;

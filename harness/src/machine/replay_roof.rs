//! What the replay table needs of the machine: the roof its calls are
//! judged against (or why there is none) and the cold-cache flush.
//!
//! Peaks are those of the device the served engine runs on (the CPU's, or
//! a Vulkan or CUDA device's). They come from the cache ([`PeakStore`]);
//! they are measured here only when no cargo build runs in the workspace
//! (`Policy::BuildRunning` otherwise: cached or nothing).

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::build_gate;
use super::engine_peaks::EngineProbe;
use super::flush::CacheFlush;
use super::peak_kernels::backend_of;
use super::peaks::{CpuProbe, DevicePeaks, FlushCost};
use super::roofline::{Achieved, Roof, Work, achieved};
use super::store::{Lookup, PeakStore, Policy};
use crate::swap::engine_handle::{EngineHandle, EngineOptions};

/// The roof of the served backend, or why there is none.
#[derive(Clone, Debug, PartialEq)]
pub enum RoofSource {
    Measured(Box<DevicePeaks>),
    /// `peaks not measured yet (a build was running)`, `no peaks: ...`.
    Missing(String),
}

impl Default for RoofSource {
    fn default() -> Self {
        RoofSource::Missing("no peaks looked up".into())
    }
}

impl RoofSource {
    /// The peaks of the device `served` runs on (for the CPU: with the
    /// engine's thread count), from the cache under `target_dir`, measured
    /// now when missing and no build runs (a GPU's with a peak engine of
    /// the same module on the same device, see [`super::engine_peaks`]).
    pub fn lookup(target_dir: &Path, served: &EngineHandle, options: &EngineOptions) -> RoofSource {
        let store = PeakStore::in_target(target_dir);
        let policy = match build_gate::build_running(&build_gate::lock_files(target_dir)) {
            Some(_) => Policy::BuildRunning,
            None => Policy::Reuse,
        };
        let backend = backend_of(&served.module().staged.module);
        let found = if backend == "cpu" {
            store.peaks(&CpuProbe::new(options.threads), policy)
        } else {
            EngineProbe::for_served(served, options).and_then(|probe| store.peaks(&probe, policy))
        };
        RoofSource::of(found)
    }

    /// What a store lookup gave, as a roof.
    pub fn of(found: Result<Lookup, String>) -> RoofSource {
        match found {
            Ok(found) => match found.peaks() {
                Some(p) => RoofSource::Measured(Box::new(p.clone())),
                None => RoofSource::Missing(
                    "peaks not measured yet (a build was running; run `kiln machine`)".into(),
                ),
            },
            Err(e) => RoofSource::Missing(format!("no peaks: {e}")),
        }
    }

    pub fn peaks(&self) -> Option<&DevicePeaks> {
        match self {
            RoofSource::Measured(p) => Some(p),
            RoofSource::Missing(_) => None,
        }
    }

    /// The roofline point of a call that did `work` in `seconds`.
    pub fn point(&self, seconds: f64, work: Work) -> Option<Achieved> {
        let roof = self.peaks().map(Roof::of)?;
        achieved(seconds, work, roof)
    }

    /// Achieved rates without a roof (no peaks): GB/s, GFLOP/s and
    /// intensity still say something; the percentage is left out.
    pub fn rates_only(seconds: f64, work: Work) -> Option<Achieved> {
        let roof = Roof {
            bandwidth_gbs: f64::NAN,
            compute_gflops: f64::NAN,
            compute_i8_gops: None,
        };
        achieved(seconds, work, roof)
    }
}

/// The flush a cold replay makes before each timed run, shared by the
/// timing loop; its cost, measured once when made.
#[derive(Clone)]
pub struct ColdFlush {
    flush: Arc<Mutex<CacheFlush>>,
    pub cost: FlushCost,
}

impl std::fmt::Debug for ColdFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ColdFlush({:?})", self.cost)
    }
}

impl ColdFlush {
    /// A flush of twice the LLC used (see [`super::llc`]), touched by
    /// `threads` threads (the engine's count).
    pub fn new(threads: usize) -> Result<ColdFlush, String> {
        let llc = super::llc::detect();
        let mut flush = CacheFlush::new(llc.used_bytes, threads)?;
        let cost = FlushCost {
            buffer_bytes: flush.bytes(),
            seconds: flush.cost(5),
        };
        Ok(ColdFlush {
            flush: Arc::new(Mutex::new(flush)),
            cost,
        })
    }

    /// Flushes the caches (not timed by the caller).
    pub fn flush(&self) {
        if let Ok(mut f) = self.flush.lock() {
            f.flush();
        }
    }
}

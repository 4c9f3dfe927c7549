//! What the replay table needs of the machine: the roof its calls are
//! judged against (or why there is none) and the cold-cache flush.
//!
//! Peaks come from the cache ([`PeakStore`]); they are measured here only
//! when no cargo build runs in the workspace (`Policy::BuildRunning`
//! otherwise: cached or nothing).

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::build_gate;
use super::flush::CacheFlush;
use super::peaks::{CpuProbe, DevicePeaks, FlushCost};
use super::roofline::{Achieved, Roof, Work, achieved};
use super::store::{PeakStore, Policy};

/// The roof of the served backend, or why there is none.
#[derive(Clone, Debug, PartialEq)]
pub enum RoofSource {
    Measured(Box<DevicePeaks>),
    /// `no peaks measured for vulkan yet`, `peaks not measured yet (a build
    /// was running)`.
    Missing(String),
}

impl Default for RoofSource {
    fn default() -> Self {
        RoofSource::Missing("no peaks looked up".into())
    }
}

impl RoofSource {
    /// The peaks of `backend` with `threads` engine threads, from the cache
    /// under `target_dir` (measured now when missing and no build runs).
    pub fn lookup(target_dir: &Path, backend: &str, threads: usize) -> RoofSource {
        let backend = backend.strip_prefix("kernel-").unwrap_or(backend);
        if backend != "cpu" {
            return RoofSource::Missing(format!("no peaks measured for {backend} yet"));
        }
        let store = PeakStore::in_target(target_dir);
        let probe = CpuProbe::new(threads);
        let policy = match build_gate::build_running(&build_gate::lock_files(target_dir)) {
            Some(_) => Policy::BuildRunning,
            None => Policy::Reuse,
        };
        match store.peaks(&probe, policy) {
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

//! Section 4 of the report: handoff throughput. The state export + import of a swap
//! (`SwapReport::export_ms + import_ms`) for 1 MiB to 1 GiB of resident
//! buffers, next to a plain `memcpy` of the same bytes into a preallocated,
//! pre-touched buffer, and a copy into a fresh allocation (`to_vec`: what
//! an export that clones does, page faults included).

use std::hint::black_box;
use std::time::Instant;

use serde_json::{Value, json};

use crate::config::Config;
use crate::kiln_side::{KilnSide, state_tensor};
use crate::stats::{Summary, interleaved};

/// Figures for one state size. Rates in GB/s (10^9 bytes per second).
#[derive(Clone, Debug)]
pub struct HandoffSize {
    pub bytes: usize,
    pub handoff_gbps: Summary,
    pub export_ms: Summary,
    /// The export alone (the state copy on the old engine's thread).
    pub export_gbps: Summary,
    /// Creating the new engine from the snapshot (thread, pool, moving the
    /// buffers in).
    pub import_ms: Summary,
    pub memcpy_gbps: Summary,
    pub fresh_copy_gbps: Summary,
}

impl HandoffSize {
    /// Handoff speed over memcpy speed (medians).
    pub fn ratio_to_memcpy(&self) -> f64 {
        self.handoff_gbps.median / self.memcpy_gbps.median
    }

    /// Time of one memcpy of the state at the measured median rate (ms).
    pub fn memcpy_ms(&self) -> f64 {
        self.bytes as f64 / (self.memcpy_gbps.median * 1e9) * 1e3
    }
}

#[derive(Clone, Debug)]
pub struct Handoff {
    pub sizes: Vec<HandoffSize>,
}

impl Handoff {
    pub fn to_json(&self) -> Value {
        json!({
            "sizes": self.sizes.iter().map(|s| json!({
                "bytes": s.bytes,
                "handoff_gbps": s.handoff_gbps.to_json(),
                "export_ms": s.export_ms.to_json(),
                "export_gbps": s.export_gbps.to_json(),
                "import_ms": s.import_ms.to_json(),
                "memcpy_gbps": s.memcpy_gbps.to_json(),
                "fresh_copy_gbps": s.fresh_copy_gbps.to_json(),
                "handoff_over_memcpy": s.ratio_to_memcpy(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

pub fn measure(config: &Config, artifact: &std::path::Path) -> Result<Handoff, String> {
    let side = KilnSide::new(&config.workspace, artifact, "handoff")?;
    let mut sizes = Vec::new();
    for &(bytes, rounds) in &config.handoff_sizes {
        let served = side.serve(bytes)?;
        let src = state_tensor(bytes);
        let src = src.data().as_bytes();
        let mut dst = vec![0u8; src.len()];
        dst.copy_from_slice(src); // touch every page of the destination

        let mut export = Vec::new();
        let mut export_rate = Vec::new();
        let mut import = Vec::new();
        let mut swap = || -> Result<f64, String> {
            let report = served
                .swap(side.fresh_module()?)
                .map_err(|e| e.to_string())?;
            if report.bytes < bytes {
                return Err(format!(
                    "swap handed over {} bytes, expected at least {bytes}",
                    report.bytes
                ));
            }
            export.push(report.export_ms);
            export_rate.push(gbps(report.bytes, report.export_ms / 1e3));
            import.push(report.import_ms);
            Ok(gbps(
                report.bytes,
                (report.export_ms + report.import_ms) / 1e3,
            ))
        };
        let mut memcpy = || -> Result<f64, String> {
            let t0 = Instant::now();
            dst.copy_from_slice(black_box(src));
            black_box(&mut dst);
            Ok(gbps(src.len(), t0.elapsed().as_secs_f64()))
        };
        let mut fresh = || -> Result<f64, String> {
            let t0 = Instant::now();
            let copy = black_box(src).to_vec();
            let secs = t0.elapsed().as_secs_f64();
            drop(black_box(copy));
            Ok(gbps(src.len(), secs))
        };
        let samples = interleaved(
            config.warmup,
            rounds,
            &mut [&mut swap, &mut memcpy, &mut fresh],
        )?;
        // `export`/`import` also hold the warm-up rounds: drop them.
        let skip = export.len() - rounds;
        let summary = |v: &[f64], what: &str| {
            Summary::of(v).ok_or_else(|| format!("handoff {what}: no samples"))
        };
        sizes.push(HandoffSize {
            bytes,
            handoff_gbps: summary(&samples[0], "rate")?,
            export_ms: summary(&export[skip..], "export")?,
            export_gbps: summary(&export_rate[skip..], "export rate")?,
            import_ms: summary(&import[skip..], "import")?,
            memcpy_gbps: summary(&samples[1], "memcpy")?,
            fresh_copy_gbps: summary(&samples[2], "fresh copy")?,
        });
    }
    Ok(Handoff { sizes })
}

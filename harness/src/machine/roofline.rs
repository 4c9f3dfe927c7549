//! The roofline: what a call achieved against what the device allows.
//!
//! For a call of `flops` floating-point operations moving `bytes` bytes in
//! `seconds`: achieved GB/s = bytes / s, GFLOP/s = flops / s, arithmetic
//! intensity I = flops / bytes, and the bound the roofline sets is
//! min(peak compute, bandwidth x I). The percentage is achieved GFLOP/s over
//! that bound (for a call with no flops: achieved GB/s over the bandwidth).
//! Data that stays in cache can run above the DRAM roofline: the percentage
//! is never capped, it is labelled instead.

use std::fmt;

use super::peaks::DevicePeaks;

/// A device's two peaks, in 10^9 units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roof {
    pub bandwidth_gbs: f64,
    pub compute_gflops: f64,
}

impl Roof {
    pub fn of(peaks: &DevicePeaks) -> Roof {
        Roof {
            bandwidth_gbs: peaks.bandwidth.best,
            compute_gflops: peaks.compute.best,
        }
    }

    /// The intensity (flop/byte) where the two roofs meet.
    pub fn ridge(&self) -> f64 {
        self.compute_gflops / self.bandwidth_gbs
    }
}

/// The work of one call, from its declaration (either may be unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub flops: Option<f64>,
    pub bytes: Option<f64>,
}

/// Which roof bounds a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// bandwidth x intensity < peak compute (or no flops declared).
    Memory,
    Compute,
}

/// What a call achieved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Achieved {
    pub gbs: Option<f64>,
    pub gflops: Option<f64>,
    /// flop/byte; `None` unless both are declared and bytes > 0.
    pub intensity: Option<f64>,
    pub bound: Bound,
    /// The bound's rate: GFLOP/s for a call with flops and bytes or flops
    /// only, GB/s for a call with bytes only.
    pub attainable: f64,
    /// Achieved / attainable x 100. Above 100 is shown, never capped.
    pub percent: f64,
}

/// The roofline point of a call that did `work` in `seconds`; `None` when
/// the time is not a positive number or no work is declared.
pub fn achieved(seconds: f64, work: Work, roof: Roof) -> Option<Achieved> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return None;
    }
    let flops = work.flops.filter(|f| f.is_finite() && *f >= 0.0);
    let bytes = work.bytes.filter(|b| b.is_finite() && *b >= 0.0);
    let gbs = bytes.map(|b| b / seconds / 1e9);
    let gflops = flops.map(|f| f / seconds / 1e9);
    let intensity = match (flops, bytes) {
        (Some(f), Some(b)) if b > 0.0 => Some(f / b),
        _ => None,
    };
    let (bound, attainable, rate) = match (intensity, gflops, gbs) {
        (Some(i), Some(g), _) if i > 0.0 => {
            let memory_roof = roof.bandwidth_gbs * i;
            if memory_roof < roof.compute_gflops {
                (Bound::Memory, memory_roof, g)
            } else {
                (Bound::Compute, roof.compute_gflops, g)
            }
        }
        // No flops (a copy) or zero intensity: bandwidth alone.
        (_, _, Some(b)) if b > 0.0 || gflops.is_none_or(|g| g == 0.0) => {
            (Bound::Memory, roof.bandwidth_gbs, b)
        }
        (_, Some(g), _) => (Bound::Compute, roof.compute_gflops, g),
        _ => return None,
    };
    Some(Achieved {
        gbs,
        gflops,
        intensity,
        bound,
        attainable,
        percent: rate / attainable * 100.0,
    })
}

impl Achieved {
    /// Above its roof: memory-bound data served from cache, or a compute
    /// rate above the measured peak.
    pub fn above_roof(&self) -> bool {
        self.percent > 100.0
    }

    /// `62% of memory roof`, `112% (above DRAM roofline: cache-resident)`.
    pub fn roofline_text(&self) -> String {
        let p = format!("{:.0}%", self.percent);
        match (self.bound, self.above_roof()) {
            (Bound::Memory, false) => format!("{p} mem"),
            (Bound::Compute, false) => format!("{p} compute"),
            (Bound::Memory, true) => format!("{p} (above DRAM roofline: cache-resident)"),
            (Bound::Compute, true) => format!("{p} (above measured compute peak)"),
        }
    }
}

impl fmt::Display for Achieved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.roofline_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOF: Roof = Roof {
        bandwidth_gbs: 20.0,
        compute_gflops: 100.0,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn a_memory_bound_saxpy() {
        // saxpy on 1M f32: 2 flops and 12 bytes per element, in 1 ms.
        let n = 1_048_576.0;
        let w = Work {
            flops: Some(2.0 * n),
            bytes: Some(12.0 * n),
        };
        let a = achieved(1e-3, w, ROOF).unwrap();
        assert!(close(a.gbs.unwrap(), 12.582912), "{a:?}");
        assert!(close(a.gflops.unwrap(), 2.097152));
        assert!(close(a.intensity.unwrap(), 1.0 / 6.0));
        assert_eq!(a.bound, Bound::Memory);
        // bound = 20 GB/s x 1/6 = 3.333 GFLOP/s; 2.097 / 3.333 = 62.9%.
        assert!(close(a.attainable, 20.0 / 6.0));
        assert!(close(a.percent, 62.91456), "{}", a.percent);
        assert_eq!(a.roofline_text(), "63% mem");
        assert!(close(ROOF.ridge(), 5.0));
    }

    #[test]
    fn a_compute_bound_matmul() {
        // 512^3 matmul f32: 2*512^3 flops, 3*512^2*4 bytes, in 10 ms.
        let w = Work {
            flops: Some(2.0 * 512f64.powi(3)),
            bytes: Some(3.0 * 512f64.powi(2) * 4.0),
        };
        let a = achieved(0.01, w, ROOF).unwrap();
        assert!(close(a.intensity.unwrap(), 2.0 * 512.0 / 12.0));
        assert_eq!(a.bound, Bound::Compute);
        assert!(close(a.gflops.unwrap(), 26.8435456));
        assert!(close(a.percent, 26.8435456));
        assert_eq!(a.roofline_text(), "27% compute");
    }

    #[test]
    fn above_the_roof_is_shown_not_capped() {
        // 4 MiB copied in 150 µs: 27.96 GB/s on a 20 GB/s roof.
        let w = Work {
            flops: Some(0.0),
            bytes: Some(4.0 * 1048576.0),
        };
        let a = achieved(150e-6, w, ROOF).unwrap();
        assert_eq!(a.bound, Bound::Memory);
        assert_eq!(a.intensity, Some(0.0));
        assert!(close(a.percent, 139.8101333333), "{}", a.percent);
        assert!(a.above_roof());
        assert_eq!(a.to_string(), "140% (above DRAM roofline: cache-resident)");
        // Memory-bound with flops, above: same label.
        let w = Work {
            flops: Some(1e6),
            bytes: Some(6e6),
        };
        let a = achieved(2e-4, w, ROOF).unwrap(); // 30 GB/s
        assert!(close(a.percent, 150.0));
        assert_eq!(a.to_string(), "150% (above DRAM roofline: cache-resident)");
        // Compute above the measured peak.
        let w = Work {
            flops: Some(2e9),
            bytes: None,
        };
        let a = achieved(0.01, w, ROOF).unwrap();
        assert_eq!((a.bound, a.intensity), (Bound::Compute, None));
        assert_eq!(a.to_string(), "200% (above measured compute peak)");
    }

    #[test]
    fn nothing_to_say_without_time_or_work() {
        let w = Work {
            flops: Some(1.0),
            bytes: Some(1.0),
        };
        assert_eq!(achieved(0.0, w, ROOF), None);
        assert_eq!(achieved(f64::NAN, w, ROOF), None);
        assert_eq!(achieved(1.0, Work::default(), ROOF), None);
        let bytes_only = Work {
            flops: None,
            bytes: Some(2e9),
        };
        let a = achieved(1.0, bytes_only, ROOF).unwrap();
        assert_eq!((a.gflops, a.intensity), (None, None));
        assert!(close(a.percent, 10.0));
    }
}

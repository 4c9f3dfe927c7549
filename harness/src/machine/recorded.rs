//! What a version's history keeps of its roofline: per call the achieved
//! GB/s and GFLOP/s and the percentage of the roofline bound, and once per
//! version the peaks they were judged against and whether the timing ran on
//! warm or cold caches. Plain serde data (no NaN: unknown values are
//! `None`), so history files stay JSON and old ones still read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::peaks::DevicePeaks;
use super::roofline::{Achieved, Bound};

/// What one call achieved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallRate {
    #[serde(default)]
    pub gbs: Option<f64>,
    #[serde(default)]
    pub gflops: Option<f64>,
    /// flop/byte.
    #[serde(default)]
    pub intensity: Option<f64>,
    /// Achieved / roofline bound x 100 (above 100: above the roof); `None`
    /// when no peaks were measured.
    #[serde(default)]
    pub percent: Option<f64>,
    /// `memory` or `compute`: which roof bounds the call (`None` without
    /// peaks).
    #[serde(default)]
    pub bound: Option<String>,
    /// `f32` or `i8`: the compute peak that judged the call (`None` in
    /// histories written before it was kept).
    #[serde(default)]
    pub compute: Option<String>,
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

impl CallRate {
    pub fn of(point: &Achieved) -> CallRate {
        let percent = finite(Some(point.percent));
        CallRate {
            gbs: finite(point.gbs),
            gflops: finite(point.gflops),
            intensity: finite(point.intensity),
            percent,
            bound: percent.map(|_| {
                match point.bound {
                    Bound::Memory => "memory",
                    Bound::Compute => "compute",
                }
                .to_string()
            }),
            compute: Some(point.compute_peak.name().to_string()),
        }
    }

    /// The rate the call is judged by: GFLOP/s when compute-bound (or
    /// with flops only), GB/s otherwise, with its unit.
    pub fn headline(&self) -> Option<(f64, &'static str)> {
        match (self.bound.as_deref(), self.gbs, self.gflops) {
            (Some("compute"), _, Some(g)) => Some((g, "GFLOP/s")),
            (_, Some(b), _) => Some((b, "GB/s")),
            (_, None, Some(g)) => Some((g, "GFLOP/s")),
            _ => None,
        }
    }

    /// `61% 12.3 GB/s`, `12.3 GB/s` (no roof), `-`.
    pub fn cell(&self) -> String {
        let rate = self
            .headline()
            .map(|(v, unit)| format!("{} {unit}", super::columns::rate(v)));
        match (self.percent, rate) {
            (Some(p), Some(r)) => format!("{p:.0}% {r}"),
            (None, Some(r)) => r,
            (Some(p), None) => format!("{p:.0}%"),
            (None, None) => "-".to_string(),
        }
    }
}

/// How a version's rates were obtained.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RateBasis {
    /// Timed on cold caches (`--cold`).
    #[serde(default)]
    pub cold: bool,
    /// The peaks used (none: rates without a roofline).
    #[serde(default)]
    pub bandwidth_gbs: Option<f64>,
    #[serde(default)]
    pub compute_gflops: Option<f64>,
    /// The i8 compute peak (GOP/s), where measured.
    #[serde(default)]
    pub compute_i8_gops: Option<f64>,
    /// The device they were measured on, and with how many threads.
    #[serde(default)]
    pub device: Option<String>,
}

impl RateBasis {
    /// The basis of a replay timed on cold caches or not, judged against
    /// `peaks` (none measured: `None`). A replay's own is
    /// `ReplayReport::rates` (workload/replay.rs).
    pub fn new(cold: bool, peaks: Option<&DevicePeaks>) -> RateBasis {
        RateBasis {
            cold,
            bandwidth_gbs: peaks.and_then(|p| finite(Some(p.bandwidth.best))),
            compute_gflops: peaks.and_then(|p| finite(Some(p.compute.best))),
            compute_i8_gops: peaks
                .and_then(|p| p.compute_i8.as_ref())
                .and_then(|r| finite(Some(r.best))),
            device: peaks.map(DevicePeaks::device_words),
        }
    }

    /// `cold caches; roofline 12.3 GB/s, 45.6 GFLOP/s (cpu ..., 2 threads)`.
    pub fn describe(&self) -> String {
        let caches = if self.cold {
            "cold caches"
        } else {
            "warm caches"
        };
        match (self.bandwidth_gbs, self.compute_gflops) {
            (Some(b), Some(c)) => format!(
                "{caches}; roofline {} GB/s, {} GFLOP/s{}",
                super::columns::rate(b),
                super::columns::rate(c),
                self.device
                    .as_ref()
                    .map_or(String::new(), |d| format!(" ({d})"))
            ),
            _ => format!("{caches}; no peaks measured (rates only)"),
        }
    }
}

/// A replay's rates and their basis (`ReplayReport::rates`), as the worker
/// sends them to the supervisor for the history (boxed there: the reply
/// stays small).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayRates {
    #[serde(default)]
    pub calls: BTreeMap<String, CallRate>,
    /// `None` for an untimed replay.
    #[serde(default)]
    pub basis: Option<RateBasis>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::roofline::{Arithmetic, Roof, Work, achieved};

    #[test]
    fn a_call_rate_keeps_finite_values_and_says_its_bound() {
        let roof = Roof {
            bandwidth_gbs: 10.0,
            compute_gflops: 100.0,
            compute_i8_gops: None,
        };
        // 1e9 bytes, 0.25e9 flops in 0.5 s: 2 GB/s, 0.5 GFLOP/s, I = 0.25,
        // memory roof 2.5 GFLOP/s -> 20%.
        let work = Work {
            flops: Some(0.25e9),
            bytes: Some(1e9),
            arithmetic: Arithmetic::F32,
        };
        let rate = CallRate::of(&achieved(0.5, work, roof).unwrap());
        assert_eq!(rate.gbs, Some(2.0));
        assert_eq!(rate.gflops, Some(0.5));
        assert_eq!(rate.intensity, Some(0.25));
        assert!((rate.percent.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(rate.bound.as_deref(), Some("memory"));
        assert_eq!(rate.cell(), "20% 2.00 GB/s");
        // No peaks: NaN roof -> rates only, nothing NaN kept.
        let nan = Roof {
            bandwidth_gbs: f64::NAN,
            compute_gflops: f64::NAN,
            compute_i8_gops: None,
        };
        let bare = CallRate::of(&achieved(0.5, work, nan).unwrap());
        assert_eq!((bare.percent, bare.bound.as_deref()), (None, None));
        assert_eq!(bare.cell(), "2.00 GB/s");
        assert!(
            serde_json::to_string(&bare)
                .unwrap()
                .contains("\"percent\":null")
        );
        // Compute-bound: the headline is GFLOP/s.
        let dense = Work {
            flops: Some(100e9),
            bytes: Some(1e9),
            arithmetic: Arithmetic::F32,
        };
        let rate = CallRate::of(&achieved(2.0, dense, roof).unwrap());
        assert_eq!(rate.bound.as_deref(), Some("compute"));
        assert_eq!(rate.cell(), "50% 50.0 GFLOP/s");
    }
}

//! The roofline: what a call achieved against what the device allows.
//!
//! For a call of `flops` floating-point operations moving `bytes` bytes in
//! `seconds`: achieved GB/s = bytes / s, GFLOP/s = flops / s, arithmetic
//! intensity I = flops / bytes, and the bound the roofline sets is
//! min(peak compute, bandwidth x I). The percentage is achieved GFLOP/s over
//! that bound (for a call with no flops: achieved GB/s over the bandwidth).
//! Data that stays in cache can run above the DRAM roofline: the percentage
//! is never capped, it is labelled instead.
//!
//! Peak compute is that of the call's arithmetic ([`Arithmetic`], from its
//! inputs' dtypes): the f32 FMA peak for f32 calls; the i8 peak for i8
//! calls where one was measured (the CPU's), else the f32 peak; the f32
//! peak for anything else (f16, bf16, f64, ...). A compute-bound call not
//! of f32 names the peak it is against: `27% f32 compute`, `27% i8
//! compute`. (The bundled CPU kernels widen f16 and bf16 to f32 exactly
//! and multiply-add in f32, so for them the f32 peak is that of their own
//! arithmetic.)

use std::fmt;

use shared_state::DType;

use super::peaks::DevicePeaks;

/// A device's peaks, in 10^9 units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roof {
    pub bandwidth_gbs: f64,
    pub compute_gflops: f64,
    /// i8 products summed in i32, GOP/s; `None` where not measured.
    pub compute_i8_gops: Option<f64>,
}

impl Roof {
    pub fn of(peaks: &DevicePeaks) -> Roof {
        Roof {
            bandwidth_gbs: peaks.bandwidth.best,
            compute_gflops: peaks.compute.best,
            compute_i8_gops: peaks.compute_i8.as_ref().map(|r| r.best),
        }
    }

    /// The compute peak a call of `arithmetic` is judged against, and
    /// which one it is.
    pub fn compute_for(&self, arithmetic: Arithmetic) -> (f64, ComputePeak) {
        match (arithmetic, self.compute_i8_gops) {
            (Arithmetic::I8, Some(i8)) => (i8, ComputePeak::I8),
            _ => (self.compute_gflops, ComputePeak::F32),
        }
    }

    /// The intensity (flop/byte) where the two roofs meet.
    pub fn ridge(&self) -> f64 {
        self.compute_gflops / self.bandwidth_gbs
    }
}

/// What a call's declared flops are done in, from its inputs' dtypes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arithmetic {
    /// f32 inputs (or none): the f32 FMA peak.
    #[default]
    F32,
    /// 8-bit integer inputs only (i8, u8): products summed in i32, the i8
    /// peak where measured.
    I8,
    /// Anything else (f16, bf16, f64, other integers, a mix): judged
    /// against the f32 peak, and said.
    Other,
}

impl Arithmetic {
    /// The arithmetic of a call whose tensor inputs have `dtypes`.
    pub fn of_inputs(dtypes: impl IntoIterator<Item = DType>) -> Arithmetic {
        let mut seen = (false, false, false);
        for d in dtypes {
            match d {
                DType::F32 => seen.0 = true,
                DType::I8 | DType::U8 => seen.1 = true,
                _ => seen.2 = true,
            }
        }
        match seen {
            (_, false, false) => Arithmetic::F32,
            (false, true, false) => Arithmetic::I8,
            _ => Arithmetic::Other,
        }
    }
}

/// Which compute peak a call was judged against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputePeak {
    /// The f32 FMA loop's.
    F32,
    /// The i8 dot-product loop's.
    I8,
}

impl ComputePeak {
    pub fn name(self) -> &'static str {
        match self {
            ComputePeak::F32 => "f32",
            ComputePeak::I8 => "i8",
        }
    }
}

/// The work of one call, from its declaration (either may be unknown), and
/// the arithmetic of its flops.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub flops: Option<f64>,
    pub bytes: Option<f64>,
    pub arithmetic: Arithmetic,
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
    /// The call's arithmetic, and the compute peak it was judged against.
    pub arithmetic: Arithmetic,
    pub compute_peak: ComputePeak,
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
    let (compute, compute_peak) = roof.compute_for(work.arithmetic);
    let (bound, attainable, rate) = match (intensity, gflops, gbs) {
        (Some(i), Some(g), _) if i > 0.0 => {
            let memory_roof = roof.bandwidth_gbs * i;
            if memory_roof < compute {
                (Bound::Memory, memory_roof, g)
            } else {
                (Bound::Compute, compute, g)
            }
        }
        // No flops (a copy) or zero intensity: bandwidth alone.
        (_, _, Some(b)) if b > 0.0 || gflops.is_none_or(|g| g == 0.0) => {
            (Bound::Memory, roof.bandwidth_gbs, b)
        }
        (_, Some(g), _) => (Bound::Compute, compute, g),
        _ => return None,
    };
    Some(Achieved {
        gbs,
        gflops,
        intensity,
        bound,
        attainable,
        percent: rate / attainable * 100.0,
        arithmetic: work.arithmetic,
        compute_peak,
    })
}

impl Achieved {
    /// Above its roof: memory-bound data served from cache, or a compute
    /// rate above the measured peak.
    pub fn above_roof(&self) -> bool {
        self.percent > 100.0
    }

    /// The compute peak's name where the call is not plain f32 (`f32` for
    /// an f16 call, `i8` for an i8 call judged by the i8 peak); `None` for
    /// an f32 call, judged by the f32 peak.
    pub fn named_peak(&self) -> Option<&'static str> {
        (self.arithmetic != Arithmetic::F32).then(|| self.compute_peak.name())
    }

    /// `62% mem`, `27% compute`, `27% f32 compute` (an f16 call),
    /// `112% (above DRAM roofline: cache-resident)`.
    pub fn roofline_text(&self) -> String {
        let p = format!("{:.0}%", self.percent);
        let compute = match self.named_peak() {
            Some(name) => format!("{name} compute"),
            None => "compute".to_string(),
        };
        match (self.bound, self.above_roof()) {
            (Bound::Memory, false) => format!("{p} mem"),
            (Bound::Compute, false) => format!("{p} {compute}"),
            (Bound::Memory, true) => format!("{p} (above DRAM roofline: cache-resident)"),
            (Bound::Compute, true) => format!("{p} (above measured {compute} peak)"),
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
        compute_i8_gops: None,
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
            arithmetic: Arithmetic::F32,
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
            arithmetic: Arithmetic::F32,
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
            arithmetic: Arithmetic::F32,
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
            arithmetic: Arithmetic::F32,
        };
        let a = achieved(2e-4, w, ROOF).unwrap(); // 30 GB/s
        assert!(close(a.percent, 150.0));
        assert_eq!(a.to_string(), "150% (above DRAM roofline: cache-resident)");
        // Compute above the measured peak.
        let w = Work {
            flops: Some(2e9),
            bytes: None,
            arithmetic: Arithmetic::F32,
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
            arithmetic: Arithmetic::F32,
        };
        assert_eq!(achieved(0.0, w, ROOF), None);
        assert_eq!(achieved(f64::NAN, w, ROOF), None);
        assert_eq!(achieved(1.0, Work::default(), ROOF), None);
        let bytes_only = Work {
            flops: None,
            bytes: Some(2e9),
            arithmetic: Arithmetic::F32,
        };
        let a = achieved(1.0, bytes_only, ROOF).unwrap();
        assert_eq!((a.gflops, a.intensity), (None, None));
        assert!(close(a.percent, 10.0));
    }

    #[test]
    fn a_low_precision_call_names_the_compute_peak_it_is_against() {
        assert_eq!(
            Arithmetic::of_inputs([DType::F32, DType::F32]),
            Arithmetic::F32
        );
        assert_eq!(Arithmetic::of_inputs([]), Arithmetic::F32);
        assert_eq!(
            Arithmetic::of_inputs([DType::I8, DType::I8]),
            Arithmetic::I8
        );
        assert_eq!(Arithmetic::of_inputs([DType::F16]), Arithmetic::Other);
        assert_eq!(Arithmetic::of_inputs([DType::BF16]), Arithmetic::Other);
        assert_eq!(
            Arithmetic::of_inputs([DType::I8, DType::F32]),
            Arithmetic::Other
        );
        // A compute-bound matmul of 2e9 flops over 1e6 bytes in 0.1 s: 20
        // GFLOP/s (or GOP/s) on each arithmetic.
        let work = |arithmetic| Work {
            flops: Some(2e9),
            bytes: Some(1e6),
            arithmetic,
        };
        let with_i8 = Roof {
            compute_i8_gops: Some(400.0),
            ..ROOF
        };
        // f32: against the f32 peak, as before, unnamed.
        let a = achieved(0.1, work(Arithmetic::F32), with_i8).unwrap();
        assert_eq!((a.compute_peak, a.named_peak()), (ComputePeak::F32, None));
        assert_eq!(a.to_string(), "20% compute");
        // f16/bf16: the f32 peak, named.
        let a = achieved(0.1, work(Arithmetic::Other), with_i8).unwrap();
        assert_eq!(a.compute_peak, ComputePeak::F32);
        assert_eq!(a.to_string(), "20% f32 compute");
        // i8 with an i8 peak: judged by it (20 of 400), named.
        let a = achieved(0.1, work(Arithmetic::I8), with_i8).unwrap();
        assert_eq!((a.bound, a.compute_peak), (Bound::Compute, ComputePeak::I8));
        assert!(close(a.attainable, 400.0) && close(a.percent, 5.0), "{a:?}");
        assert_eq!(a.to_string(), "5% i8 compute");
        // i8 without one (a GPU device): the f32 peak, and the text says so.
        let a = achieved(0.1, work(Arithmetic::I8), ROOF).unwrap();
        assert_eq!(a.compute_peak, ComputePeak::F32);
        assert_eq!(a.to_string(), "20% f32 compute");
        let a = achieved(0.01, work(Arithmetic::I8), ROOF).unwrap();
        assert_eq!(a.to_string(), "200% (above measured f32 compute peak)");
        // The i8 peak moves the ridge: at 10 op/B the f32 roof is
        // compute-bound (20 GB/s x 10 = 200 > 100), the i8 one memory-bound
        // (200 < 400).
        let mid = |arithmetic| Work {
            flops: Some(1e7),
            bytes: Some(1e6),
            arithmetic,
        };
        let f = achieved(1e-3, mid(Arithmetic::Other), with_i8).unwrap();
        let i = achieved(1e-3, mid(Arithmetic::I8), with_i8).unwrap();
        assert_eq!((f.bound, i.bound), (Bound::Compute, Bound::Memory));
        assert_eq!(i.to_string(), "5% mem");
    }
}

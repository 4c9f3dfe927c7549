//! The replay table's roofline columns and its timing-mode header line,
//! rendered as text for the replay table to place.

use kiln_stats::bytes;

use super::peaks::{DevicePeaks, FlushCost};
use super::roofline::Achieved;
use crate::units::human_secs;

/// Column headers, in order: achieved GB/s, achieved GFLOP/s, arithmetic
/// intensity (flop/byte), percentage of the roofline bound.
pub const HEADERS: [&str; 4] = ["GB/s", "GFLOP/s", "flop/B", "roofline"];

/// `1234`, `123`, `12.3`, `1.23`, `0.123`: three significant digits.
pub fn rate(value: f64) -> String {
    let a = value.abs();
    if a >= 100.0 {
        format!("{value:.0}")
    } else if a >= 10.0 {
        format!("{value:.1}")
    } else if a >= 1.0 {
        format!("{value:.2}")
    } else if a == 0.0 {
        "0".to_string()
    } else {
        format!("{value:.3}")
    }
}

/// The four cells of a call (`-` where a value is unknown; all `-` when
/// there is no roofline point).
pub fn cells(point: Option<&Achieved>) -> [String; 4] {
    let dash = || "-".to_string();
    let Some(p) = point else {
        return [dash(), dash(), dash(), dash()];
    };
    [
        p.gbs.map_or_else(dash, rate),
        p.gflops.map_or_else(dash, rate),
        p.intensity.map_or_else(dash, rate),
        p.roofline_text(),
    ]
}

/// The line above the table: which caches the timing ran on, the flush
/// (not timed, its cost said once), and the roof used (the f32 compute
/// peak, and the i8 one where measured: see [`super::roofline`] for which
/// calls each judges).
pub fn timing_header(cold: Option<&FlushCost>, peaks: Option<&DevicePeaks>) -> String {
    let mode = match cold {
        None => "timing on warm caches".to_string(),
        Some(f) => format!(
            "timing on cold caches: flushed before every timed run by touching {} (flush {}, \
             not timed)",
            bytes::human(f.buffer_bytes),
            human_secs(f.seconds)
        ),
    };
    match peaks {
        Some(p) => format!(
            "{mode}; roofline: {} GB/s, {} GFLOP/s f32{} ({})",
            rate(p.bandwidth.best),
            rate(p.compute.best),
            p.compute_i8
                .as_ref()
                .map_or(String::new(), |r| format!(", {} GOP/s i8", rate(r.best))),
            p.device_words()
        ),
        None => format!("{mode}; roofline: peaks not measured yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::roofline::{Arithmetic, Roof, Work, achieved};

    #[test]
    fn cells_of_a_saxpy_and_of_nothing() {
        let roof = Roof {
            bandwidth_gbs: 20.0,
            compute_gflops: 100.0,
            compute_i8_gops: None,
        };
        let w = Work {
            flops: Some(2.0 * 1048576.0),
            bytes: Some(12.0 * 1048576.0),
            arithmetic: Arithmetic::F32,
        };
        let p = achieved(1e-3, w, roof).unwrap();
        assert_eq!(cells(Some(&p)), ["12.6", "2.10", "0.167", "63% mem"]);
        assert_eq!(cells(None), ["-", "-", "-", "-"]);
        assert_eq!(rate(1234.5), "1234");
        let flush = FlushCost {
            buffer_bytes: 64 << 20,
            seconds: 0.0031,
        };
        let h = timing_header(Some(&flush), None);
        assert!(h.starts_with("timing on cold caches"), "{h}");
        assert!(h.contains("64 MiB") && h.contains("3.10 ms"), "{h}");
        assert!(timing_header(None, None).starts_with("timing on warm caches"));
    }
}

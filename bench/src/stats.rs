//! Robust summaries of repeated measurements, and the interleaved runner
//! that takes them (A B C A B C ...: drift in the machine hits every
//! alternative alike).

use serde_json::{Value, json};

/// Median and spread of one figure over repeated runs (warm-up excluded).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    /// Median absolute deviation from the median.
    pub mad: f64,
    pub min: f64,
    pub max: f64,
    /// Number of runs summarized.
    pub runs: usize,
}

impl Summary {
    /// Summarizes `samples`; `None` if there are none or any is not finite.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let median = kiln_stats::median(samples);
        Some(Summary {
            median,
            mad: kiln_stats::mad(samples, median),
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            runs: samples.len(),
        })
    }

    /// `{"median", "mad", "min", "max", "runs"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "median": self.median,
            "mad": self.mad,
            "min": self.min,
            "max": self.max,
            "runs": self.runs,
        })
    }

    /// The same summary with every value multiplied by `factor` (unit
    /// changes; a positive factor keeps the order).
    pub fn scaled(&self, factor: f64) -> Summary {
        Summary {
            median: self.median * factor,
            mad: self.mad * factor.abs(),
            min: self.min * factor,
            max: self.max * factor,
            runs: self.runs,
        }
    }
}

/// Runs every alternative once per round, `warmup + rounds` times; keeps
/// the samples of the last `rounds` rounds. Round `r` starts with
/// alternative `r mod n` (A B C, B C A, C A B, ...): each alternative runs
/// right after each other one equally often, so what one leaves behind
/// (spinning pool threads, cold caches) does not always hit the same
/// successor. Each closure returns one sample (or an error, which stops
/// the run).
pub fn interleaved<E>(
    warmup: usize,
    rounds: usize,
    alternatives: &mut [&mut dyn FnMut() -> Result<f64, E>],
) -> Result<Vec<Vec<f64>>, E> {
    let mut samples = vec![Vec::with_capacity(rounds); alternatives.len()];
    let n = alternatives.len();
    for round in 0..warmup + rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let sample = alternatives[i]()?;
            if round >= warmup {
                samples[i].push(sample);
            }
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_ignore_an_outlier() {
        let s = Summary::of(&[10.0, 11.0, 9.0, 10.0, 1000.0]).unwrap();
        assert_eq!(s.median, 10.0);
        assert_eq!(s.mad, 1.0);
        assert_eq!(s.min, 9.0);
        assert_eq!(s.max, 1000.0);
        assert_eq!(s.runs, 5);
    }

    #[test]
    fn no_summary_of_nothing_or_of_non_finite_values() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
        assert!(Summary::of(&[1.0, f64::INFINITY]).is_none());
    }

    #[test]
    fn interleaved_rotates_and_drops_warmup() {
        let order = std::cell::RefCell::new(Vec::new());
        let mut n_a = 0.0;
        let mut n_b = 100.0;
        let mut a = || -> Result<f64, ()> {
            order.borrow_mut().push('A');
            n_a += 1.0;
            Ok(n_a)
        };
        let mut b = || -> Result<f64, ()> {
            order.borrow_mut().push('B');
            n_b += 1.0;
            Ok(n_b)
        };
        let samples = interleaved(1, 2, &mut [&mut a, &mut b]).unwrap();
        assert_eq!(order.into_inner().iter().collect::<String>(), "ABBAAB");
        assert_eq!(samples, vec![vec![2.0, 3.0], vec![102.0, 103.0]]);
    }
}

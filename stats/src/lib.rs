//! The statistics kiln computes over measured samples (median, quantiles,
//! median absolute deviation) and the byte sizes it prints
//! ([`bytes::human`]): one definition for the whole workspace (the host,
//! the benchmarks, the end-to-end tests, the modules' tests).
//!
//! Quantiles interpolate linearly between the two closest ranks: the value
//! at `q` of `n` sorted values sits at position `q * (n - 1)` (Hyndman and
//! Fan's type 7, NumPy's and R's default). The median is the quantile at
//! 0.5: the middle value, or midway between the two middle ones. No values
//! give NaN.

pub mod bytes;

/// `values` sorted ascending (`f64::total_cmp`: NaN last).
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// The value at quantile `q` (clamped to 0..=1) of values already sorted
/// ascending, linear interpolation (see the crate's documentation); NaN for
/// no values.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The value at quantile `q` (clamped to 0..=1) of `values` in any order;
/// NaN for no values.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    quantile_sorted(&sorted(values), q)
}

/// The median of `values` in any order (midway between the two middle
/// values for an even count); NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// The median absolute deviation of `values` from `center` (usually their
/// median): a spread that one outlier does not move. NaN for no values.
pub fn mad(values: &[f64], center: f64) -> f64 {
    let deviations: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
    median(&deviations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_in_any_order() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&v, 0.9), 4.6);
        assert_eq!(quantile(&v, 0.25), 2.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        // Out of range: clamped.
        assert_eq!(quantile(&v, -1.0), 1.0);
        assert_eq!(quantile(&v, 2.0), 5.0);
        let s = sorted(&[1.0, 2.0, 3.0, 4.0, 5.0, 100.0]);
        assert_eq!(quantile_sorted(&s, 0.25), 2.25);
        assert_eq!(quantile_sorted(&s, 0.75), 4.75);
        assert!(quantile_sorted(&[], 0.5).is_nan());
    }

    #[test]
    fn mad_ignores_an_outlier() {
        let v = [10.0, 11.0, 9.0, 10.0, 1000.0];
        assert_eq!(mad(&v, median(&v)), 1.0);
        // |x - 3.5| = 2.5 1.5 0.5 0.5 1.5 96.5 -> 1.5
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 100.0];
        assert_eq!(mad(&v, median(&v)), 1.5);
        assert!(mad(&[], 0.0).is_nan());
    }

    #[test]
    fn sorted_puts_nan_last() {
        let s = sorted(&[2.0, f64::NAN, 1.0]);
        assert_eq!(&s[..2], &[1.0, 2.0]);
        assert!(s[2].is_nan());
    }
}

//! Axes: a range on a linear or a log scale, where a value falls on it,
//! and its ticks at "nice" values: at least three for any range (any
//! positive range on a log scale), a narrow one within one decade included,
//! and their labels.

/// How values map to positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

/// A range of values on a scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub scale: Scale,
}

impl Axis {
    /// The range of `values` (non-finite ones, and on a log scale
    /// non-positive ones, left out); `None` when none is left. A single
    /// value gets a range around it.
    pub fn fit(values: impl IntoIterator<Item = f64>, scale: Scale) -> Option<Axis> {
        let usable = |v: &f64| v.is_finite() && (scale == Scale::Linear || *v > 0.0);
        let (lo, hi) = values.into_iter().filter(usable).fold(
            None,
            |range: Option<(f64, f64)>, v| match range {
                None => Some((v, v)),
                Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
            },
        )?;
        Some(Axis::new(lo, hi, scale))
    }

    /// `lo..hi`, made usable: ordered, never empty (a single value is
    /// widened: by 25% either way on a log scale, by 1 or 10% of it on a
    /// linear one), positive on a log scale.
    pub fn new(lo: f64, hi: f64, scale: Scale) -> Axis {
        let (mut lo, mut hi) = (lo.min(hi), lo.max(hi));
        match scale {
            Scale::Log => {
                if !(lo > 0.0 && lo.is_finite()) {
                    lo = if hi > 0.0 && hi.is_finite() {
                        hi / 10.0
                    } else {
                        1.0
                    };
                }
                if !(hi.is_finite() && hi > lo) {
                    hi = hi.max(lo);
                    if !hi.is_finite() || hi <= lo {
                        hi = lo * 1.25;
                        lo /= 1.25;
                    }
                }
            }
            Scale::Linear => {
                if !lo.is_finite() || !hi.is_finite() {
                    (lo, hi) = (0.0, 1.0);
                }
                if hi <= lo {
                    let d = (lo.abs() * 0.1).max(1.0);
                    (lo, hi) = (lo - d, hi + d);
                }
            }
        }
        Axis { lo, hi, scale }
    }

    /// Widened to hold `v` too (ignored when it cannot be shown).
    pub fn including(self, v: f64) -> Axis {
        if !v.is_finite() || (self.scale == Scale::Log && v <= 0.0) {
            return self;
        }
        Axis::new(self.lo.min(v), self.hi.max(v), self.scale)
    }

    /// Widened by `fraction` of its span at each end (of the span of the
    /// logarithms on a log scale).
    pub fn padded(self, fraction: f64) -> Axis {
        match self.scale {
            Scale::Linear => {
                let d = (self.hi - self.lo) * fraction;
                Axis::new(self.lo - d, self.hi + d, self.scale)
            }
            Scale::Log => {
                let f = (self.hi / self.lo).powf(fraction);
                Axis::new(self.lo / f, self.hi * f, self.scale)
            }
        }
    }

    /// Where `v` falls: 0 at `lo`, 1 at `hi`.
    pub fn fraction(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln()),
        }
    }

    /// The ticks inside the range, at least three.
    pub fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Linear => linear_ticks(self.lo, self.hi),
            Scale::Log => log_ticks(self.lo, self.hi),
        }
    }
}

/// Multiples of a nice step (1, 2, 2.5 or 5 times a power of ten) inside
/// `lo..=hi`: the largest such step at most a quarter of the span, so
/// there are 4 to 10 of them.
pub fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let axis = Axis::new(lo, hi, Scale::Linear);
    let (lo, hi) = (axis.lo, axis.hi);
    let (nice, exponent) = nice_at_most((hi - lo) / 4.0);
    multiples(lo, hi, nice, exponent)
}

/// Ticks of a log scale: powers of ten over three decades or more (every
/// k-th beyond eight of them), else 1, 2 and 5 times them, else (a range within
/// about half a decade) the linear ticks of the range.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let axis = Axis::new(lo, hi, Scale::Log);
    let (lo, hi) = (axis.lo, axis.hi);
    let (a, b) = (lo.log10(), hi.log10());
    let powers: Vec<i32> = ((a - 1e-9).ceil() as i32..=(b + 1e-9).floor() as i32).collect();
    if b - a >= 3.0 && powers.len() >= 3 {
        let stride = if powers.len() <= 8 {
            1
        } else {
            powers.len().div_ceil(6)
        };
        return powers
            .iter()
            .step_by(stride)
            .map(|&p| 10f64.powi(p))
            .collect();
    }
    let mut ticks = Vec::new();
    for p in (a.floor() as i32)..=(b.ceil() as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(p);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                ticks.push(v);
            }
        }
    }
    if ticks.len() >= 3 {
        ticks
    } else {
        linear_ticks(lo, hi)
    }
}

/// The largest of 1, 2, 2.5, 5 times a power of ten that is at most `x`:
/// that factor and the power's exponent.
fn nice_at_most(x: f64) -> (f64, i32) {
    let exponent = x.log10().floor() as i32;
    let m = x / pow10(exponent);
    let nice = [5.0, 2.5, 2.0, 1.0]
        .into_iter()
        .find(|n| *n <= m * (1.0 + 1e-9))
        .unwrap_or(1.0);
    (nice, exponent)
}

/// `i` steps of `nice` x 10^`exponent`, computed so that decimal ticks
/// come out exact (`20 x 5 / 100` is 1, `20 x 0.05` is not quite).
fn step_value(i: i64, nice: f64, exponent: i32) -> f64 {
    let v = if exponent >= 0 {
        i as f64 * nice * pow10(exponent)
    } else {
        i as f64 * nice / pow10(-exponent)
    };
    if v == 0.0 { 0.0 } else { v }
}

fn pow10(e: i32) -> f64 {
    10f64.powi(e)
}

/// The multiples of the step in `lo..=hi`.
fn multiples(lo: f64, hi: f64, nice: f64, exponent: i32) -> Vec<f64> {
    let step = step_value(1, nice, exponent);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last)
        .map(|i| step_value(i, nice, exponent))
        .collect()
}

/// The shortest decimal writing of a tick (`0.25`, `1.05`, `100`), in
/// exponent form beyond a million or below a ten-thousandth (`1e-6`).
pub fn label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    let close = |s: &str| s.parse::<f64>().is_ok_and(|p| (p - v).abs() <= 1e-9 * a);
    if !(1e-4..1e6).contains(&a) {
        return (0..=6)
            .map(|d| format!("{v:.d$e}"))
            .find(|s| close(s))
            .unwrap_or_else(|| format!("{v:e}"));
    }
    (0..=12)
        .map(|d| format!("{v:.d$}"))
        .find(|s| close(s))
        .unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lo: f64, hi: f64, scale: Scale) {
        let axis = Axis::new(lo, hi, scale);
        let ticks = axis.ticks();
        assert!(ticks.len() >= 3, "{scale:?} {lo}..{hi}: {ticks:?}");
        assert!(ticks.len() <= 12, "{scale:?} {lo}..{hi}: {ticks:?}");
        let slack = (axis.hi - axis.lo) * 1e-9;
        for t in &ticks {
            assert!(
                *t >= axis.lo - slack && *t <= axis.hi + slack,
                "{scale:?} {lo}..{hi}: {t} outside ({ticks:?})"
            );
        }
        let labels: Vec<String> = ticks.iter().map(|t| label(*t)).collect();
        let mut distinct = labels.clone();
        distinct.dedup();
        assert_eq!(distinct, labels, "{scale:?} {lo}..{hi}: labels differ");
        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
    }

    #[test]
    fn at_least_three_labelled_ticks_on_any_positive_log_range() {
        // Within one decade, narrow ones included, across decades, and wide.
        for (lo, hi) in [
            (0.95, 1.05),
            (0.99, 1.01),
            (0.8, 1.25),
            (1.0, 9.0),
            (2.0, 3.0),
            (1.1e-6, 1.3e-6),
            (3e-5, 8e-5),
            (0.5, 2.0),
            (1e-6, 1.0),
            (1e-9, 1e3),
            (1e-12, 1e12),
            (7.0, 7.0),
            (123.0, 125.0),
            (0.02, 900.0),
        ] {
            check(lo, hi, Scale::Log);
        }
        // Every range of a sweep of starts and widths.
        for i in 0..60 {
            let lo = 10f64.powf(-7.0 + i as f64 * 0.27);
            for w in [1.001, 1.01, 1.1, 1.5, 3.0, 9.9, 30.0, 1e4] {
                check(lo, lo * w, Scale::Log);
            }
        }
    }

    #[test]
    fn at_least_three_labelled_ticks_on_any_linear_range() {
        for (lo, hi) in [
            (0.0, 100.0),
            (0.0, 143.0),
            (0.0, 1.0),
            (-5.0, 5.0),
            (0.95, 1.05),
            (99.0, 101.0),
            (1e-7, 3e-7),
            (0.0, 7e9),
            (3.0, 3.0),
        ] {
            check(lo, hi, Scale::Linear);
        }
        for i in 0..40 {
            let lo = -50.0 + i as f64 * 3.7;
            for w in [0.001, 0.37, 1.0, 9.0, 77.0, 1e5] {
                check(lo, lo + w, Scale::Linear);
            }
        }
        // The % axis of `kiln report`: 0 to 143 ticks every 25.
        assert_eq!(
            linear_ticks(0.0, 143.0),
            vec![0.0, 25.0, 50.0, 75.0, 100.0, 125.0]
        );
    }

    #[test]
    fn log_ticks_are_decades_wide_and_finer_narrow() {
        assert_eq!(log_ticks(1e-6, 1.0).len(), 7);
        assert_eq!(log_ticks(0.5, 20.0), vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
        // Within one decade, narrower than 1-2-5 can show: linear steps.
        let narrow = log_ticks(0.9, 1.1);
        assert!(narrow.contains(&1.0), "{narrow:?}");
        assert!(narrow.len() >= 3, "{narrow:?}");
    }

    #[test]
    fn labels_are_short_and_exact() {
        assert_eq!(label(0.1 * 3.0), "0.3");
        assert_eq!(label(1.05), "1.05");
        assert_eq!(label(125.0), "125");
        assert_eq!(label(0.0), "0");
        assert_eq!(label(1e-6), "1e-6");
        assert_eq!(label(2.5e-7), "2.5e-7");
        assert_eq!(label(-0.25), "-0.25");
    }

    #[test]
    fn positions_on_each_scale() {
        let log = Axis::new(0.1, 10.0, Scale::Log);
        assert!((log.fraction(1.0) - 0.5).abs() < 1e-12);
        let lin = Axis::new(0.0, 10.0, Scale::Linear);
        assert!((lin.fraction(2.5) - 0.25).abs() < 1e-12);
        let fitted = Axis::fit([f64::NAN, -1.0, 2.0, 8.0], Scale::Log).unwrap();
        assert_eq!((fitted.lo, fitted.hi), (2.0, 8.0));
        assert!(Axis::fit([f64::NAN, -1.0], Scale::Log).is_none());
        let one = Axis::fit([4.0], Scale::Log).unwrap();
        assert!(one.lo < 4.0 && one.hi > 4.0);
        assert_eq!(log.including(100.0).hi, 100.0);
    }
}

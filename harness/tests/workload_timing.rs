//! Timing statistics and the verdict: synthetic sample sets with known
//! distributions, and one real measurement of a closure with and without a
//! spin of known cost.

use std::time::{Duration, Instant};

use kiln::workload::timing::{Stats, TimingConfig, Verdict, measure, verdict};

/// `n` samples around `center` seconds with uniform noise of +-`noise`
/// (relative), from a fixed seed.
fn samples(n: usize, center: f64, noise: f64, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            center * (1.0 + noise * u)
        })
        .collect()
}

fn stats(v: &[f64]) -> Stats {
    Stats::from_secs(v).unwrap()
}

#[test]
fn identical_distributions_are_no_clear_change() {
    for seed in 1..20 {
        let a = stats(&samples(30, 0.010, 0.10, seed));
        let b = stats(&samples(30, 0.010, 0.10, seed + 100));
        assert_eq!(verdict(&a, &b), Verdict::NoClearChange, "seed {seed}");
        assert_eq!(verdict(&b, &a), Verdict::NoClearChange, "seed {seed}");
    }
}

#[test]
fn a_shifted_distribution_is_slower_or_faster() {
    let base = stats(&samples(30, 0.010, 0.10, 1));
    let slower = stats(&samples(30, 0.012, 0.10, 2));
    let faster = stats(&samples(30, 0.008, 0.10, 3));
    assert_eq!(verdict(&base, &slower), Verdict::Slower);
    assert_eq!(verdict(&base, &faster), Verdict::Faster);
    assert_eq!(verdict(&slower, &base), Verdict::Faster);
}

#[test]
fn changes_below_the_relative_floor_are_not_reported() {
    // no noise at all: only the 2% floor decides
    let a = stats(&[0.010; 10]);
    assert_eq!(verdict(&a, &stats(&[0.0101; 10])), Verdict::NoClearChange);
    assert_eq!(verdict(&a, &stats(&[0.0105; 10])), Verdict::Slower);
    assert_eq!(verdict(&a, &stats(&[0.0095; 10])), Verdict::Faster);
}

#[test]
fn the_spread_decides_not_one_sample() {
    // one huge outlier does not move the median
    let base = samples(30, 0.010, 0.05, 4);
    let mut spiked = samples(30, 0.010, 0.05, 5);
    spiked[7] = 1.0;
    assert_eq!(
        verdict(&stats(&base), &stats(&spiked)),
        Verdict::NoClearChange
    );
    // a 10% shift hidden in +-60% noise over 5 runs is not a clear change...
    let noisy_a = stats(&samples(5, 0.010, 0.6, 6));
    let noisy_b = stats(&samples(5, 0.011, 0.6, 7));
    assert_eq!(verdict(&noisy_a, &noisy_b), Verdict::NoClearChange);
    // ...but the same shift with little noise is
    let quiet_a = stats(&samples(5, 0.010, 0.01, 6));
    let quiet_b = stats(&samples(5, 0.011, 0.01, 7));
    assert_eq!(verdict(&quiet_a, &quiet_b), Verdict::Slower);
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn a_real_closure_with_an_added_spin_is_slower() {
    let config = TimingConfig {
        warmup_runs: 2,
        min_runs: 15,
        min_time: Duration::ZERO,
        max_runs: 15,
        max_time: Duration::from_secs(30),
    };
    let data: Vec<f64> = (0..20_000).map(f64::from).collect();
    let work = || Ok::<f64, ()>(std::hint::black_box(&data).iter().sum());
    let before = Stats::from_samples(&measure(&config, work).unwrap()).unwrap();
    let after = Stats::from_samples(
        &measure(&config, || {
            // 30 ms against ~20 us of work: the MAD would have to reach
            // ~10 ms (most runs preempted for that long) to hide it.
            spin(Duration::from_millis(30));
            work()
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(before.runs, 15);
    assert_eq!(
        verdict(&before, &after),
        Verdict::Slower,
        "before {before}, after {after}"
    );
    assert_eq!(verdict(&after, &before), Verdict::Faster);
}

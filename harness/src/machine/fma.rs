//! Compute: a loop of f32 fused multiply-adds with independent accumulator
//! chains (enough to cover the FMA latency on every pipe, so it is
//! throughput-bound), on every thread of the pool. An FMA counts as 2 flops.

use std::time::Instant;

use rayon::ThreadPool;

/// Independent f32 accumulators: 10 AVX vectors of 8 lanes (FMA latency 4-5
/// cycles x 2 pipes needs at least 8-10 in flight; 12 of 16 registers used).
const CHAINS: usize = 80;
const MULTIPLIER: f32 = 0.999_999;
const ADDEND: f32 = 1e-6;

/// `iters` rounds of `acc = acc * m + a` on every chain; returns the sum
/// (so nothing is dead). Converges to 1: no overflow, no subnormals.
#[inline(always)]
fn chains(iters: u64, fused: bool) -> f32 {
    let mut acc = [0f32; CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = i as f32 * 1e-3;
    }
    let (m, add) = (
        std::hint::black_box(MULTIPLIER),
        std::hint::black_box(ADDEND),
    );
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = if fused {
                a.mul_add(m, add)
            } else {
                *a * m + add
            };
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn chains_avx2_fma(iters: u64) -> f32 {
    chains(iters, true)
}

/// Which instructions the loop uses on this machine.
pub fn instructions() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        return "AVX2 FMA, 8 f32 lanes";
    }
    #[cfg(target_arch = "aarch64")]
    return "NEON FMA, 4 f32 lanes";
    #[allow(unreachable_code)]
    "baseline SIMD multiply + add (no FMA detected)"
}

/// One thread's loop, on the best instructions detected.
fn run(iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), which
        // is all `chains_avx2_fma`'s target features require.
        return unsafe { chains_avx2_fma(iters) };
    }
    chains(iters, cfg!(target_arch = "aarch64"))
}

/// Flops of one thread's `iters` rounds.
pub fn flops(iters: u64) -> f64 {
    iters as f64 * CHAINS as f64 * 2.0
}

/// Runs `iters` rounds on every thread of `pool` at once; returns the
/// seconds from the first thread's start to the last one's end.
pub fn timed_round(pool: &ThreadPool, iters: u64) -> f64 {
    let (secs, sums) = super::threads::timed_broadcast(pool, |_| run(iters));
    assert!(sums.iter().all(|s| s.is_finite()), "FMA loop diverged");
    secs
}

/// GFLOP/s of timed rounds on all threads of `pool`, each about
/// `round_secs` long (calibrated first): at least `min_rounds`, then until
/// `budget_secs` is spent or `max_rounds` are done. Short rounds, many of
/// them: on a busy machine some run without being preempted.
pub fn measure(
    pool: &ThreadPool,
    round_secs: f64,
    min_rounds: usize,
    max_rounds: usize,
    budget_secs: f64,
) -> Vec<f64> {
    let mut iters = 2_000u64;
    loop {
        let secs = timed_round(pool, iters);
        if secs >= round_secs / 4.0 || iters > 1 << 40 {
            iters = ((iters as f64 * round_secs / secs) as u64).max(1);
            break;
        }
        iters *= 4;
    }
    let threads = pool.current_num_threads() as f64;
    let started = Instant::now();
    let mut rates = Vec::new();
    while rates.len() < min_rounds
        || (rates.len() < max_rounds && started.elapsed().as_secs_f64() < budget_secs)
    {
        rates.push(flops(iters) * threads / timed_round(pool, iters) / 1e9);
    }
    rates
}

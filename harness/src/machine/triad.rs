//! Memory bandwidth: a STREAM-like triad `a[i] = b[i] + s * c[i]` on f64
//! arrays well beyond the last-level cache, split in one contiguous part
//! per thread.
//!
//! Bytes are counted as STREAM counts them: 24 per element (`b` and `c`
//! read, `a` written, 8 bytes each). The read that a write-allocate cache
//! does before writing `a` is not counted, so the hardware moves up to 4/3
//! of the bytes reported. A kernel's declared bytes follow the same
//! convention (what it reads plus what it writes).

use std::time::{Duration, Instant};

use rayon::ThreadPool;
use rayon::prelude::*;

/// Bytes counted per triad element (STREAM's convention).
pub const TRIAD_BYTES_PER_ELEMENT: usize = 24;

/// How big and how long.
#[derive(Clone, Debug)]
pub struct TriadConfig {
    /// Bytes of each of the three arrays.
    pub array_bytes: usize,
    /// Timed passes: at least `min_passes`, then until `budget` is spent or
    /// `max_passes` are done. One untimed pass comes first.
    pub min_passes: usize,
    pub max_passes: usize,
    pub budget: Duration,
}

impl TriadConfig {
    /// Arrays of 4 times the LLC used each (STREAM's rule), at least
    /// 64 MiB; 5 to 30 passes within 0.6 s.
    pub fn for_llc(llc_bytes: u64) -> TriadConfig {
        TriadConfig {
            array_bytes: (llc_bytes as usize).saturating_mul(4).max(64 << 20),
            min_passes: 5,
            max_passes: 30,
            budget: Duration::from_millis(600),
        }
    }
}

/// What a triad measurement gave.
#[derive(Clone, Debug)]
pub struct TriadResult {
    /// Rates of every timed pass, GB/s (10^9 bytes per second).
    pub rates_gbs: Vec<f64>,
    pub array_bytes: usize,
}

/// The triad on one part: `a = b + s * c`.
fn triad_part(a: &mut [f64], b: &[f64], c: &[f64], s: f64) {
    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}

/// Runs the triad on `pool` (every thread gets one contiguous part).
pub fn measure(pool: &ThreadPool, config: &TriadConfig) -> TriadResult {
    let n = (config.array_bytes / 8).max(1);
    let part = n.div_ceil(pool.current_num_threads());
    // First touch in parallel, so pages land near the threads that use them.
    let alloc = |value: f64| {
        let mut v: Vec<f64> = Vec::with_capacity(n);
        pool.install(|| {
            v.spare_capacity_mut()
                .par_chunks_mut(part)
                .for_each(|chunk| chunk.iter_mut().for_each(|x| _ = x.write(value)))
        });
        // SAFETY: the loop above initialised all `n` elements of the spare
        // capacity (n == capacity) before the length is set.
        unsafe { v.set_len(n) };
        v
    };
    let (mut a, b, c) = (alloc(0.0), alloc(1.0), alloc(2.0));
    let s = std::hint::black_box(3.0);
    let pass = |a: &mut Vec<f64>| {
        let t0 = Instant::now();
        pool.install(|| {
            a.par_chunks_mut(part)
                .zip(b.par_chunks(part))
                .zip(c.par_chunks(part))
                .for_each(|((a, b), c)| triad_part(a, b, c, s))
        });
        std::hint::black_box(&a[n / 2]);
        t0.elapsed()
    };
    pass(&mut a); // untimed, as STREAM drops its first iteration
    let started = Instant::now();
    let mut rates = Vec::new();
    while rates.len() < config.min_passes
        || (rates.len() < config.max_passes && started.elapsed() < config.budget)
    {
        let secs = pass(&mut a).as_secs_f64();
        rates.push((n * TRIAD_BYTES_PER_ELEMENT) as f64 / secs / 1e9);
    }
    assert!(a[n - 1] == 7.0, "triad computed {} instead of 7", a[n - 1]);
    TriadResult {
        rates_gbs: rates,
        array_bytes: n * 8,
    }
}

//! Memory bandwidth: a STREAM-like triad `a[i] = b[i] + s * c[i]` on f64
//! arrays well beyond the last-level cache, split in one contiguous part
//! per thread.
//!
//! Bytes are counted as STREAM counts them: 24 per element (`b` and `c`
//! read, `a` written, 8 bytes each). The read that a write-allocate cache
//! does before writing `a` is not counted, so the hardware moves up to 4/3
//! of the bytes reported. A kernel's declared bytes follow the same
//! convention (what it reads plus what it writes).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::ThreadPool;
use rayon::prelude::*;

use super::threads::timed_broadcast;

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

/// The three arrays, allocated and first-touched once.
pub struct Triad {
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    /// Elements per thread's part.
    part: usize,
}

/// A vector of `n` copies of `value`, first touched in parallel in parts
/// of `part` elements, so that pages land near the threads that use them.
fn first_touched(pool: &ThreadPool, n: usize, part: usize, value: f64) -> Vec<f64> {
    let mut v: Vec<f64> = Vec::with_capacity(n);
    pool.install(|| {
        v.spare_capacity_mut()
            .par_chunks_mut(part)
            .for_each(|chunk| chunk.iter_mut().for_each(|x| _ = x.write(value)))
    });
    // SAFETY: the loop above initialised the whole spare capacity, which is
    // at least `n` elements, before the length is set to `n`.
    unsafe { v.set_len(n) };
    v
}

impl Triad {
    /// Three arrays of `array_bytes` each, split in one part per thread of
    /// `pool`.
    pub fn new(pool: &ThreadPool, array_bytes: usize) -> Triad {
        let n = (array_bytes / 8).max(1);
        let part = n.div_ceil(pool.current_num_threads());
        Triad {
            a: first_touched(pool, n, part, 0.0),
            b: first_touched(pool, n, part, 1.0),
            c: first_touched(pool, n, part, 2.0),
            part,
        }
    }

    /// Bytes of each array.
    pub fn array_bytes(&self) -> usize {
        self.a.len() * 8
    }

    /// Bytes one pass counts (STREAM's convention).
    pub fn bytes_per_pass(&self) -> usize {
        self.a.len() * TRIAD_BYTES_PER_ELEMENT
    }

    /// One pass on `pool`, every thread on its own part, started together
    /// (see [`timed_broadcast`]); returns its seconds. Checks the result.
    pub fn pass(&mut self, pool: &ThreadPool) -> f64 {
        let (part, s) = (self.part, std::hint::black_box(3.0));
        let parts: Vec<Mutex<&mut [f64]>> = self.a.chunks_mut(part).map(Mutex::new).collect();
        let (b, c) = (&self.b, &self.c);
        let (secs, _) = timed_broadcast(pool, |i| {
            if let Some(a) = parts.get(i) {
                let mut a = a.lock().expect("one thread per part");
                let range = i * part..i * part + a.len();
                triad_part(&mut a, &b[range.clone()], &c[range], s);
            }
        });
        drop(parts);
        let last = self.a[self.a.len() - 1];
        assert!(last == 7.0, "triad computed {last} instead of 7");
        secs
    }
}

/// Runs the triad on `pool`: one untimed pass (as STREAM drops its first
/// iteration), then timed passes as `config` says.
pub fn measure(pool: &ThreadPool, config: &TriadConfig) -> TriadResult {
    let mut triad = Triad::new(pool, config.array_bytes);
    triad.pass(pool);
    let started = Instant::now();
    let mut rates = Vec::new();
    while rates.len() < config.min_passes
        || (rates.len() < config.max_passes && started.elapsed() < config.budget)
    {
        let secs = triad.pass(pool);
        rates.push(triad.bytes_per_pass() as f64 / secs / 1e9);
    }
    TriadResult {
        rates_gbs: rates,
        array_bytes: triad.array_bytes(),
    }
}

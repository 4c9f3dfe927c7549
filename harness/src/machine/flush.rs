//! The cold-cache flush: before a cold timed run, every thread of a pool
//! reads and writes its part of a buffer twice the size of the LLC used,
//! one word per cache line, so that the shared LLC and each core's private
//! caches hold the flush buffer instead of the kernel's data (as Triton's
//! `do_bench` and KernelBench do on a GPU). The flush itself is not timed;
//! [`CacheFlush::cost`] measures what one costs, to print once.

use std::time::Instant;

use kiln_stats::median;
use rayon::ThreadPool;
use rayon::prelude::*;

use super::threads;

/// Cache line size assumed (x86-64 and most ARM cores: 64 bytes).
const LINE_WORDS: usize = 64 / 8;
/// The buffer is this many times the LLC used.
pub const FLUSH_FACTOR: u64 = 2;

/// A flush buffer and the threads that touch it.
pub struct CacheFlush {
    buffer: Vec<u64>,
    pool: ThreadPool,
}

impl CacheFlush {
    /// A buffer of `FLUSH_FACTOR` x `llc_bytes`, touched by `threads`
    /// threads (0: one per core; use the engine's count, so every core the
    /// kernel runs on gets its private caches flushed too).
    pub fn new(llc_bytes: u64, threads: usize) -> Result<CacheFlush, String> {
        let words = (llc_bytes * FLUSH_FACTOR / 8).max(LINE_WORDS as u64) as usize;
        let mut flush = CacheFlush {
            buffer: vec![0; words],
            pool: threads::pool(threads::resolve_threads(threads))?,
        };
        flush.flush(); // the first touch faults the pages in: not a flush's cost
        Ok(flush)
    }

    /// Bytes of the buffer.
    pub fn bytes(&self) -> u64 {
        self.buffer.len() as u64 * 8
    }

    /// Reads and writes one word of every cache line of the buffer, each
    /// thread its own contiguous part.
    pub fn flush(&mut self) {
        let part = self.buffer.len().div_ceil(self.pool.current_num_threads());
        let buffer = &mut self.buffer;
        self.pool.install(|| {
            buffer.par_chunks_mut(part).for_each(|chunk| {
                for word in chunk.iter_mut().step_by(LINE_WORDS) {
                    *word = word.wrapping_add(1);
                }
            })
        });
        std::hint::black_box(&mut self.buffer);
    }

    /// The median time of `runs` flushes, in seconds.
    pub fn cost(&mut self, runs: usize) -> f64 {
        let samples: Vec<f64> = (0..runs.max(1))
            .map(|_| {
                let t0 = Instant::now();
                self.flush();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        median(&samples)
    }
}

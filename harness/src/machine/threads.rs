//! The measurement threads: a rayon pool built for the purpose, never the
//! global one, with the engine's thread count.

use std::sync::Barrier;
use std::time::Instant;

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The engine's default thread count: one per core the process may use
/// (honours affinity and cgroup quotas, as `available_parallelism` does).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `threads` as the engine reads it: 0 means [`default_threads`].
pub fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        default_threads()
    } else {
        threads
    }
}

/// `1 thread`, `2 threads`.
pub fn count_words(threads: usize) -> String {
    if threads == 1 {
        "1 thread".to_string()
    } else {
        format!("{threads} threads")
    }
}

/// A pool of exactly `threads` workers named `kiln-machine-N`. Dropping it
/// stops the workers (host code: nothing is unloaded after it).
pub fn pool(threads: usize) -> Result<ThreadPool, String> {
    ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("kiln-machine-{i}"))
        .build()
        .map_err(|e| format!("cannot start {threads} measurement threads: {e}"))
}

/// Runs `work(thread_index)` once on every thread of `pool`, all starting
/// together after a barrier; returns the seconds from the first start to
/// the last end (the threads' wake-up is not timed, their overlap is) and
/// each thread's result.
pub fn timed_broadcast<R: Send>(
    pool: &ThreadPool,
    work: impl Fn(usize) -> R + Sync,
) -> (f64, Vec<R>) {
    let barrier = Barrier::new(pool.current_num_threads());
    let runs = pool.broadcast(|ctx| {
        barrier.wait();
        let start = Instant::now();
        let result = work(ctx.index());
        (start, Instant::now(), result)
    });
    let first = runs.iter().map(|r| r.0).min().expect("a pool has threads");
    let last = runs.iter().map(|r| r.1).max().expect("a pool has threads");
    let secs = last.duration_since(first).as_secs_f64();
    (secs, runs.into_iter().map(|r| r.2).collect())
}

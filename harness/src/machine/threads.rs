//! The measurement threads: a rayon pool built for the purpose, never the
//! global one, with the engine's thread count.

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

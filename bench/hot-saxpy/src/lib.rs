//! The CPU kernels (the very source of `kernels/cpu/src/kernels.rs`) as plain
//! `#[no_mangle]` Rust functions: the shape of library `hot-lib-reloader`
//! reloads. It is what a hot-lib-reloader user would write: the rayon pool
//! lives in a `static` of the library (2 threads, like the kiln engine in the
//! benchmark), so its threads are started by the library itself.
//!
//! Every function catches panics and returns them as an error string, so no
//! unwind crosses into the host.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use rayon::ThreadPool;

#[allow(dead_code, unused_imports)] // only saxpy and matmul are exported
#[path = "../../../kernels/cpu/src/kernels.rs"]
mod kernels;

/// Worker threads of the library's pool (the benchmark runs everything
/// with 2).
const THREADS: usize = 2;

static POOL: OnceLock<Result<ThreadPool, String>> = OnceLock::new();

fn pool() -> Result<&'static ThreadPool, String> {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(THREADS)
            .thread_name(|i| format!("hot-saxpy-rayon-{i}"))
            .build()
            .map_err(|e| format!("hot-saxpy: cannot start the rayon pool: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err("hot-saxpy panicked".to_string()))
}

/// `a*x + y` on the library's pool.
#[unsafe(no_mangle)]
pub fn hot_saxpy(a: f32, x: &[f32], y: &[f32]) -> Result<Vec<f32>, String> {
    guarded(|| {
        if x.len() != y.len() {
            return Err(format!("saxpy: x has {} elements, y {}", x.len(), y.len()));
        }
        Ok(kernels::saxpy(pool()?, a, x, y))
    })
}

/// Blocked `a[m,k] @ b[k,n]` on the library's pool.
#[unsafe(no_mangle)]
pub fn hot_matmul(
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    tile: usize,
) -> Result<Vec<f32>, String> {
    guarded(|| {
        if a.len() != m * k || b.len() != k * n {
            return Err(format!(
                "matmul: {}x{} @ {}x{} does not fit {} and {} elements",
                m,
                k,
                k,
                n,
                a.len(),
                b.len()
            ));
        }
        Ok(kernels::matmul(pool()?, a, b, (m, k, n), tile))
    })
}

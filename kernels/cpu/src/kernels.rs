//! The CPU kernels' arithmetic, on an engine-owned rayon pool (never the global pool);
//! `src/declared/NAME.rs` binds each to its declaration.
//!
//! Written for a build without link-time optimisation (`lto = "off"` in the
//! workspace's release profile, so that an edit re-optimises little): each
//! kernel's hot loop is a plain loop inside one closure body that handles a
//! whole chunk, so it needs no inlining across codegen units to be fast.
//! The parallel machinery ([`par`]) is not generic over the kernels: rayon's
//! code is compiled once, in a codegen unit of its own, and editing a kernel
//! re-optimises that kernel's code alone. The kernels are `#[inline(never)]`
//! so their callers' codegen units do not change with them either.

use std::ops::Range;

use rayon::ThreadPool;

/// Elements per rayon task for the element-wise kernels.
const MIN_CHUNK: usize = 4096;

/// About how many elements a rayon task of the row-wise kernels covers
/// (whole rows, at least one).
const ROW_TASK_ELEMENTS: usize = 4096;

/// Rows per rayon task for rows of `row_len` elements.
#[inline]
fn rows_per_task(row_len: usize) -> usize {
    (ROW_TASK_ELEMENTS / row_len.max(1)).max(1)
}

pub use dot_kernel::dot;
pub use matmul_kernel::matmul;
pub use saxpy_kernel::saxpy;
pub use softmax_kernel::softmax;
pub use stencil2d_kernel::stencil2d;

/// `saxpy`, in a module (a codegen unit) of its own.
mod saxpy_kernel {
    use super::*;

    /// `a*x + y`.
    #[inline(never)]
    pub fn saxpy(pool: &ThreadPool, a: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; x.len()];
        par::chunks_mut(pool, &mut out, MIN_CHUNK, &|start, out| {
            let x = &x[start..];
            let y = y.get(start..).unwrap_or_default();
            out.iter_mut()
                .zip(x)
                .zip(y)
                .for_each(|((o, &xi), &yi)| *o = a * xi + yi);
        });
        out
    }
}

/// `dot`, in a module (a codegen unit) of its own.
mod dot_kernel {
    use super::*;

    /// `sum(x*y)`, accumulated in f64 per fixed-size chunk, chunks summed in
    /// order: the result does not depend on the number of threads.
    #[inline(never)]
    pub fn dot(pool: &ThreadPool, x: &[f32], y: &[f32]) -> f32 {
        let n = x.len().min(y.len());
        let partials = par::map_ranges(pool, n, MIN_CHUNK, &|range| {
            x[range.clone()]
                .iter()
                .zip(&y[range])
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum::<f64>()
        });
        partials.iter().sum::<f64>() as f32
    }
}

/// `matmul`, in a module (a codegen unit) of its own.
mod matmul_kernel {
    use super::*;

    /// Blocked `a[m,k] @ b[k,n]`. Each output row block is one rayon task; inside
    /// it the k and n dimensions are tiled so a tile of `b` stays in cache. For
    /// every output element the products are summed in increasing `k` order.
    #[inline(never)]
    pub fn matmul(
        pool: &ThreadPool,
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
        tile: usize,
    ) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        if m == 0 || n == 0 || k == 0 {
            return c;
        }
        let tile = tile.max(1);
        par::chunks_mut(pool, &mut c, tile * n, &|start, c_rows| {
            let i0 = start / n;
            let rows = c_rows.len() / n;
            for k0 in (0..k).step_by(tile) {
                let k1 = (k0 + tile).min(k);
                for j0 in (0..n).step_by(tile) {
                    let j1 = (j0 + tile).min(n);
                    for i in 0..rows {
                        let a_row = &a[(i0 + i) * k..(i0 + i + 1) * k];
                        let c_row = &mut c_rows[i * n + j0..i * n + j1];
                        // Indexed loops: a `zip` here would be a call (its
                        // constructor is not `#[inline]`, and without LTO
                        // nothing is inlined across codegen units) per `kk`.
                        for kk in k0..k1 {
                            let aik = a_row[kk];
                            let b_row = &b[kk * n + j0..kk * n + j1];
                            let b_row = &b_row[..c_row.len()];
                            for j in 0..c_row.len() {
                                c_row[j] += aik * b_row[j];
                            }
                        }
                    }
                }
            }
        });
        c
    }
}

/// `stencil2d`, in a module (a codegen unit) of its own.
mod stencil2d_kernel {
    use super::*;

    /// One explicit diffusion step on an `h x w` grid, neighbours clamped at the
    /// edges: `out = g + alpha*(N + S + E + W - 4g)`.
    #[inline(never)]
    pub fn stencil2d(
        pool: &ThreadPool,
        grid: &[f32],
        (h, w): (usize, usize),
        alpha: f32,
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; h * w];
        if h == 0 || w == 0 {
            return out;
        }
        par::chunks_mut(pool, &mut out, rows_per_task(w) * w, &|start, rows| {
            for (r, row) in rows.chunks_exact_mut(w).enumerate() {
                let i = start / w + r;
                let up = &grid[i.saturating_sub(1) * w..][..w];
                let mid = &grid[i * w..][..w];
                let down = &grid[(i + 1).min(h - 1) * w..][..w];
                let cell = |j: usize, west: f32, east: f32| {
                    let c = mid[j];
                    c + alpha * (up[j] + down[j] + west + east - 4.0 * c)
                };
                // The edge columns clamp; the interior needs no clamping
                // and vectorises.
                row[0] = cell(0, mid[0], mid[1.min(w - 1)]);
                if w > 1 {
                    row[w - 1] = cell(w - 1, mid[w - 2], mid[w - 1]);
                }
                for j in 1..w.saturating_sub(1) {
                    row[j] = cell(j, mid[j - 1], mid[j + 1]);
                }
            }
        });
        out
    }
}

/// `softmax`, in a module (a codegen unit) of its own.
mod softmax_kernel {
    use super::*;

    /// Row-wise, numerically stable softmax of a `rows x cols` matrix.
    #[inline(never)]
    pub fn softmax(pool: &ThreadPool, x: &[f32], (rows, cols): (usize, usize)) -> Vec<f32> {
        let mut out = x.to_vec();
        if rows == 0 || cols == 0 {
            return out;
        }
        par::chunks_mut(pool, &mut out, rows_per_task(cols) * cols, &|_, chunk| {
            for row in chunk.chunks_exact_mut(cols) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                let inv = 1.0 / sum;
                for v in row.iter_mut() {
                    *v *= inv;
                }
            }
        });
        out
    }
}

/// The parallel loops every kernel uses. Not generic over the kernels (the
/// body is a `dyn Fn`, called once per chunk): rayon's generic code is
/// instantiated here once and does not change when a kernel does.
mod par {
    use super::Range;
    use rayon::ThreadPool;
    use rayon::prelude::*;

    /// Calls `body(start, chunk)` for every chunk of `out` of `chunk_len`
    /// elements (the last may be shorter), `start` being the chunk's offset
    /// in `out`, in parallel on `pool`.
    #[inline(never)]
    pub fn chunks_mut(
        pool: &ThreadPool,
        out: &mut [f32],
        chunk_len: usize,
        body: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        let chunk_len = chunk_len.max(1);
        pool.install(|| {
            out.par_chunks_mut(chunk_len)
                .enumerate()
                .for_each(|(i, chunk)| body(i * chunk_len, chunk));
        });
    }

    /// `body(range)` for the ranges `0..chunk_len`, `chunk_len..2*chunk_len`,
    /// ... covering `0..n`, in parallel on `pool`; the results in range
    /// order.
    #[inline(never)]
    pub fn map_ranges(
        pool: &ThreadPool,
        n: usize,
        chunk_len: usize,
        body: &(dyn Fn(Range<usize>) -> f64 + Sync),
    ) -> Vec<f64> {
        let chunk_len = chunk_len.max(1);
        pool.install(|| {
            (0..n.div_ceil(chunk_len))
                .into_par_iter()
                .map(|i| body(i * chunk_len..((i + 1) * chunk_len).min(n)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_reference::{self as reference, assert_close, test_values};

    fn pool(threads: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    // 0, 1, primes, and sizes around the chunk and tile sizes.
    const SIZES: &[usize] = &[0, 1, 2, 3, 7, 31, 64, 97, 4095, 4096, 4097, 10_007, 65_537];
    const DIMS: &[usize] = &[0, 1, 2, 5, 13, 31, 64, 65, 97];

    #[test]
    fn saxpy_and_dot_match_reference_over_many_sizes() {
        for threads in [1, 3] {
            let pool = pool(threads);
            for &n in SIZES {
                let x = test_values(n, 1);
                let y = test_values(n, 2);
                assert_eq!(
                    saxpy(&pool, 1.5, &x, &y),
                    reference::saxpy(1.5, &x, &y),
                    "n={n}"
                );
                let want = reference::dot(&x, &y);
                let got = dot(&pool, &x, &y);
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "n={n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn matmul_matches_reference_for_every_shape_and_tile() {
        let pool = pool(3);
        for &m in DIMS {
            for &k in &[0, 1, 7, 64, 65] {
                for &n in &[0usize, 1, 13, 64, 97] {
                    let a = test_values(m * k, 3);
                    let b = test_values(k * n, 4);
                    let want = reference::matmul(&a, &b, (m, k, n));
                    for tile in [1, 8, 32, 64] {
                        let got = matmul(&pool, &a, &b, (m, k, n), tile);
                        assert_close(
                            &got,
                            &want,
                            1e-5,
                            &format!("matmul {m}x{k}x{n} tile {tile}"),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn stencil_and_softmax_match_reference() {
        let pool = pool(2);
        for &h in DIMS {
            for &w in DIMS {
                let g = test_values(h * w, 5);
                assert_eq!(
                    stencil2d(&pool, &g, (h, w), 0.1),
                    reference::stencil2d(&g, (h, w), 0.1),
                    "stencil {h}x{w}"
                );
                let got = softmax(&pool, &g, (h, w));
                assert_close(
                    &got,
                    &reference::softmax(&g, (h, w)),
                    1e-6,
                    &format!("softmax {h}x{w}"),
                );
            }
        }
    }

    #[test]
    fn softmax_is_stable_for_large_inputs() {
        let pool = pool(1);
        let got = softmax(&pool, &[1000.0, 1000.0, -1000.0], (1, 3));
        assert_eq!(got, vec![0.5, 0.5, 0.0]);
    }
}

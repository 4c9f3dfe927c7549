//! The CPU kernels' arithmetic, on an engine-owned rayon pool (never the
//! global pool). `src/declared/NAME.rs` binds each to its declaration.

use rayon::ThreadPool;
use rayon::prelude::*;

/// Elements per rayon task for the element-wise kernels.
const MIN_CHUNK: usize = 4096;

/// `a*x + y`.
pub fn saxpy(pool: &ThreadPool, a: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    pool.install(|| {
        out.par_iter_mut()
            .with_min_len(MIN_CHUNK)
            .zip(x.par_iter().zip(y.par_iter()))
            .for_each(|(o, (&xi, &yi))| *o = a * xi + yi);
    });
    out
}

/// `sum(x*y)`, accumulated in f64 per fixed-size chunk, chunks summed in
/// order: the result does not depend on the number of threads.
pub fn dot(pool: &ThreadPool, x: &[f32], y: &[f32]) -> f32 {
    let partials: Vec<f64> = pool.install(|| {
        x.par_chunks(MIN_CHUNK)
            .zip(y.par_chunks(MIN_CHUNK))
            .map(|(xs, ys)| {
                xs.iter()
                    .zip(ys)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum::<f64>()
            })
            .collect()
    });
    partials.iter().sum::<f64>() as f32
}

/// Blocked `a[m,k] @ b[k,n]`. Each output row block is one rayon task; inside
/// it the k and n dimensions are tiled so a tile of `b` stays in cache. For
/// every output element the products are summed in increasing `k` order.
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
    pool.install(|| {
        c.par_chunks_mut(tile * n)
            .enumerate()
            .for_each(|(block, c_rows)| {
                let i0 = block * tile;
                let rows = c_rows.len() / n;
                for k0 in (0..k).step_by(tile) {
                    let k1 = (k0 + tile).min(k);
                    for j0 in (0..n).step_by(tile) {
                        let j1 = (j0 + tile).min(n);
                        for i in 0..rows {
                            let a_row = &a[(i0 + i) * k..(i0 + i + 1) * k];
                            let c_row = &mut c_rows[i * n + j0..i * n + j1];
                            for (kk, &aik) in a_row.iter().enumerate().take(k1).skip(k0) {
                                let b_row = &b[kk * n + j0..kk * n + j1];
                                for (cv, &bv) in c_row.iter_mut().zip(b_row) {
                                    *cv += aik * bv;
                                }
                            }
                        }
                    }
                }
            });
    });
    c
}

/// One explicit diffusion step on an `h x w` grid, neighbours clamped at the
/// edges: `out = g + alpha*(N + S + E + W - 4g)`.
pub fn stencil2d(pool: &ThreadPool, grid: &[f32], (h, w): (usize, usize), alpha: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; h * w];
    if h == 0 || w == 0 {
        return out;
    }
    pool.install(|| {
        out.par_chunks_mut(w).enumerate().for_each(|(i, row)| {
            let up = &grid[i.saturating_sub(1) * w..][..w];
            let mid = &grid[i * w..][..w];
            let down = &grid[(i + 1).min(h - 1) * w..][..w];
            for j in 0..w {
                let c = mid[j];
                let west = mid[j.saturating_sub(1)];
                let east = mid[(j + 1).min(w - 1)];
                row[j] = c + alpha * (up[j] + down[j] + west + east - 4.0 * c);
            }
        });
    });
    out
}

/// Row-wise, numerically stable softmax of a `rows x cols` matrix.
pub fn softmax(pool: &ThreadPool, x: &[f32], (rows, cols): (usize, usize)) -> Vec<f32> {
    let mut out = x.to_vec();
    if rows == 0 || cols == 0 {
        return out;
    }
    pool.install(|| {
        out.par_chunks_mut(cols).for_each(|row| {
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
        });
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_reference::{self as reference, test_values};

    fn pool(threads: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (g - w).abs();
            assert!(
                err <= tol * (1.0 + w.abs()),
                "{what}: element {i}: got {g}, want {w} (error {err})"
            );
        }
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

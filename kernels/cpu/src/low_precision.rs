//! The f16, bf16 and i8 kernels on the engine's pool. Each output element is
//! computed in the order `kernel_reference` defines (its `low_precision`
//! module): f32 products summed in increasing `k` order and rounded once;
//! softmax rows in f64, each output rounded once; i8 products summed in i32
//! with wrapping. Rows (or chunks, for the dot) are spread over the pool;
//! what a row computes does not depend on the split, so the results are
//! the reference's bit for bit.

use rayon::ThreadPool;
use rayon::prelude::*;
use shared_state::{bf16, f16};

/// Elements per rayon task of the i8 dot.
const DOT_CHUNK: usize = 1 << 16;

/// Output rows per rayon task for rows of `row_work` operations.
fn rows_per_task(row_work: usize) -> usize {
    (4096 / row_work.max(1)).max(1)
}

/// `a[m,k] @ b[k,n]` over f16: f32 accumulation, one rounding.
#[inline(never)]
pub fn matmul_f16(
    pool: &ThreadPool,
    a: &[f16],
    b: &[f16],
    dims: (usize, usize, usize),
) -> Vec<f16> {
    matmul_widened(pool, a, b, dims, f16::to_f32, f16::from_f32)
}

/// `a[m,k] @ b[k,n]` over bf16: f32 accumulation, one rounding.
#[inline(never)]
pub fn matmul_bf16(
    pool: &ThreadPool,
    a: &[bf16],
    b: &[bf16],
    dims: (usize, usize, usize),
) -> Vec<bf16> {
    matmul_widened(pool, a, b, dims, bf16::to_f32, bf16::from_f32)
}

fn matmul_widened<T: Copy + Send + Sync + Default>(
    pool: &ThreadPool,
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    widen: fn(T) -> f32,
    round: fn(f32) -> T,
) -> Vec<T> {
    let mut out = vec![T::default(); m * n];
    if n == 0 {
        return out;
    }
    // `b` widened once (exact): the inner loop is then plain f32, k*n
    // conversions instead of m*k*n.
    let b32: Vec<f32> = b[..k * n].iter().map(|&y| widen(y)).collect();
    let rows = rows_per_task(n * k);
    pool.install(|| {
        out.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(t, chunk)| {
                let mut acc = vec![0.0f32; n];
                for (r, out_row) in chunk.chunks_mut(n).enumerate() {
                    let i = t * rows + r;
                    widened_row(&mut acc, &a[i * k..(i + 1) * k], &b32, widen);
                    for j in 0..n {
                        out_row[j] = round(acc[j]);
                    }
                }
            });
    });
    out
}

/// `acc[j] = sum_p widen(a_row[p]) * b[p, j]` in f32, `p` in increasing
/// order (the reference's order: each `acc[j]` still adds its products one
/// by one, four of them per pass over `acc`, kept in a register between).
/// Indexed loops over slices re-sliced to `n`, for the reason given at
/// [`i8_row`]: a `zip` here made the generated code depend on where the
/// compiler put the adapters, and two builds of the same source timed 1.5x
/// apart on matmul_bf16 (`tests/verdicts.rs`).
fn widened_row<T: Copy>(acc: &mut [f32], a_row: &[T], b: &[f32], widen: fn(T) -> f32) {
    let n = acc.len();
    let k = a_row.len();
    acc.fill(0.0);
    let quads = k / 4;
    for q in 0..quads {
        let p = 4 * q;
        let (x0, x1, x2, x3) = (
            widen(a_row[p]),
            widen(a_row[p + 1]),
            widen(a_row[p + 2]),
            widen(a_row[p + 3]),
        );
        let b0 = &b[p * n..][..n];
        let b1 = &b[(p + 1) * n..][..n];
        let b2 = &b[(p + 2) * n..][..n];
        let b3 = &b[(p + 3) * n..][..n];
        for j in 0..n {
            let mut s = acc[j];
            s += x0 * b0[j];
            s += x1 * b1[j];
            s += x2 * b2[j];
            s += x3 * b3[j];
            acc[j] = s;
        }
    }
    for p in quads * 4..k {
        let x = widen(a_row[p]);
        let b_row = &b[p * n..][..n];
        for j in 0..n {
            acc[j] += x * b_row[j];
        }
    }
}

/// Row-wise softmax over bf16, each row in f64 and each output rounded once.
#[inline(never)]
pub fn softmax_bf16(pool: &ThreadPool, x: &[bf16], (rows, cols): (usize, usize)) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; rows * cols];
    if cols == 0 {
        return out;
    }
    let per_task = rows_per_task(cols);
    pool.install(|| {
        out.par_chunks_mut(per_task * cols)
            .enumerate()
            .for_each(|(t, chunk)| {
                for (r, out_row) in chunk.chunks_mut(cols).enumerate() {
                    let i = t * per_task + r;
                    let row = &x[i * cols..(i + 1) * cols];
                    let max = row
                        .iter()
                        .map(|v| f64::from(v.to_f32()))
                        .fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = row
                        .iter()
                        .map(|v| (f64::from(v.to_f32()) - max).exp())
                        .sum();
                    out_row.iter_mut().zip(row).for_each(|(o, v)| {
                        *o = bf16::from_f64((f64::from(v.to_f32()) - max).exp() / sum)
                    });
                }
            });
    });
    out
}

/// `sum(x*y)` over i8 in i32, wrapping: chunk sums added with wrapping, the
/// same as any order modulo 2^32.
#[inline(never)]
pub fn dot_i8(pool: &ThreadPool, x: &[i8], y: &[i8]) -> i32 {
    let n = x.len().min(y.len());
    pool.install(|| {
        x[..n]
            .par_chunks(DOT_CHUNK)
            .zip(y[..n].par_chunks(DOT_CHUNK))
            .map(|(xs, ys)| {
                xs.iter().zip(ys).fold(0i32, |s, (&a, &b)| {
                    s.wrapping_add(i32::from(a) * i32::from(b))
                })
            })
            .reduce(|| 0, i32::wrapping_add)
    })
}

/// `a[m,k] @ b[k,n]` over i8 in i32, wrapping.
#[inline(never)]
pub fn matmul_i8(
    pool: &ThreadPool,
    a: &[i8],
    b: &[i8],
    (m, k, n): (usize, usize, usize),
) -> Vec<i32> {
    let mut out = vec![0i32; m * n];
    if n == 0 {
        return out;
    }
    let rows = rows_per_task(n * k);
    pool.install(|| {
        out.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(t, chunk)| {
                for (r, out_row) in chunk.chunks_mut(n).enumerate() {
                    let i = t * rows + r;
                    i8_row(out_row, &a[i * k..(i + 1) * k], b);
                }
            });
    });
    out
}

/// `out[j] += sum_p a_row[p] * b[p, j]` for one output row, wrapping: four
/// rows of `b` per pass over `out`, so a pass loads and stores `out` once
/// for four products. Each four-product sum fits in i32 (|x*y| <= 2^14),
/// and wrapping sums are the same in any order, so the result is the
/// reference's bit for bit.
///
/// Indexed loops over slices re-sliced to `n`: without LTO nothing is
/// inlined across codegen units, and an iterator adapter (`zip`,
/// `chunks_exact`, `split_at`) instantiated in another unit is a call that
/// hides the slice lengths, leaving a bounds check in the inner loop and no
/// vector code (1.9x slower than the one-codegen-unit build, `cargo
/// lto-check`).
fn i8_row(out: &mut [i32], a_row: &[i8], b: &[i8]) {
    let n = out.len();
    let k = a_row.len();
    let quads = k / 4;
    for q in 0..quads {
        let p = 4 * q;
        let (x0, x1, x2, x3) = (
            i32::from(a_row[p]),
            i32::from(a_row[p + 1]),
            i32::from(a_row[p + 2]),
            i32::from(a_row[p + 3]),
        );
        let b0 = &b[p * n..][..n];
        let b1 = &b[(p + 1) * n..][..n];
        let b2 = &b[(p + 2) * n..][..n];
        let b3 = &b[(p + 3) * n..][..n];
        for j in 0..n {
            let sum = x0 * i32::from(b0[j])
                + x1 * i32::from(b1[j])
                + x2 * i32::from(b2[j])
                + x3 * i32::from(b3[j]);
            out[j] = out[j].wrapping_add(sum);
        }
    }
    for p in quads * 4..k {
        let x = i32::from(a_row[p]);
        let b_row = &b[p * n..][..n];
        for j in 0..n {
            out[j] = out[j].wrapping_add(x * i32::from(b_row[j]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_reference as reference;

    fn pool(threads: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Deterministic values in [-1, 1) (a small LCG).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn bits<T: Copy, B: PartialEq + std::fmt::Debug>(v: &[T], f: fn(T) -> B) -> Vec<B> {
        v.iter().map(|&x| f(x)).collect()
    }

    #[test]
    fn half_matmuls_match_the_reference_bit_for_bit() {
        // Odd sizes (no tile divides them) and a row split over 3 threads.
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 13, 5),
            (33, 70, 17),
            (3, 0, 4),
            (0, 5, 2),
            (5, 8, 9),
            (4, 7, 64),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let (ah, bh): (Vec<f16>, Vec<f16>) = (
                a.iter().map(|&v| f16::from_f32(v)).collect(),
                b.iter().map(|&v| f16::from_f32(v)).collect(),
            );
            let got = matmul_f16(&pool(3), &ah, &bh, (m, k, n));
            let want = reference::matmul_f16(&ah, &bh, (m, k, n));
            assert_eq!(
                bits(&got, f16::to_bits),
                bits(&want, f16::to_bits),
                "f16 {m}x{k}x{n}"
            );
            let (ab, bb): (Vec<bf16>, Vec<bf16>) = (
                a.iter().map(|&v| bf16::from_f32(v)).collect(),
                b.iter().map(|&v| bf16::from_f32(v)).collect(),
            );
            let got = matmul_bf16(&pool(3), &ab, &bb, (m, k, n));
            let want = reference::matmul_bf16(&ab, &bb, (m, k, n));
            assert_eq!(
                bits(&got, bf16::to_bits),
                bits(&want, bf16::to_bits),
                "bf16 {m}x{k}x{n}"
            );
        }
    }

    #[test]
    fn softmax_bf16_matches_the_reference_bit_for_bit() {
        for &(rows, cols) in &[(1, 1), (5, 7), (300, 33), (0, 4), (3, 0)] {
            let x: Vec<bf16> = values(rows * cols, 3)
                .iter()
                .map(|&v| bf16::from_f32(v * 8.0))
                .collect();
            let got = softmax_bf16(&pool(2), &x, (rows, cols));
            let want = reference::softmax_bf16(&x, (rows, cols));
            assert_eq!(
                bits(&got, bf16::to_bits),
                bits(&want, bf16::to_bits),
                "{rows}x{cols}"
            );
        }
    }

    #[test]
    fn i8_kernels_wrap_exactly_like_the_reference() {
        // 2^20 products of 127*127 = 16_912_482_304 overflows i32: modulo
        // 2^32 it is -267_386_880. Split into 16 chunks on 3 threads.
        let n = 1 << 20;
        let x = vec![127i8; n];
        assert_eq!(dot_i8(&pool(3), &x, &x), -267_386_880);
        assert_eq!(reference::dot_i8(&x, &x), -267_386_880);
        // Mixed signs, an odd length.
        let x: Vec<i8> = (0..100_003).map(|i| (i * 37 % 256) as u8 as i8).collect();
        let y: Vec<i8> = (0..100_003).map(|i| (i * 91 % 251) as u8 as i8).collect();
        assert_eq!(dot_i8(&pool(3), &x, &y), reference::dot_i8(&x, &y));
        // matmul: a k long enough to wrap (2^18 + 1 products of 2^14), and odd shapes.
        let k = (1 << 18) + 1;
        let a = vec![-128i8; k];
        assert_eq!(matmul_i8(&pool(2), &a, &a, (1, k, 1)), [16384]);
        for &(m, k, n) in &[
            (7, 13, 5),
            (33, 70, 17),
            (2, 0, 3),
            (5, 8, 9),
            (4, 7, 64),
            (3, 4, 1),
        ] {
            let a: Vec<i8> = (0..m * k).map(|i| (i * 53 % 256) as u8 as i8).collect();
            let b: Vec<i8> = (0..k * n).map(|i| (i * 29 % 256) as u8 as i8).collect();
            assert_eq!(
                matmul_i8(&pool(3), &a, &b, (m, k, n)),
                reference::matmul_i8(&a, &b, (m, k, n))
            );
        }
    }
}

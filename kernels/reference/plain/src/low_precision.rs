//! The half-precision and 8-bit kernels. Their order of operations is the
//! definition every backend follows:
//!
//! - `matmul_f16`, `matmul_bf16`: each product of two inputs widened to f32
//!   (exact: 11x11 and 8x8 significand bits fit in f32's 24), summed in f32
//!   in increasing `k` order from 0.0, the sum rounded once (to nearest,
//!   ties to even) to the output type. A backend that sums in that order,
//!   with or without a fused multiply-add, gets the same bits.
//! - `softmax_bf16`: per row, the maximum, then `exp(x - max)` and its sum in
//!   f64, each output `e / sum` rounded once from f64 to bf16.
//! - `dot_i8`, `matmul_i8`: i8 widened to i32, products and sums in i32
//!   with wrapping (two's complement) overflow: the exact sum modulo 2^32,
//!   independent of the order.

use half::{bf16, f16};

/// `a[m,k] @ b[k,n]` over f16, f32 accumulation, one rounding to f16.
pub fn matmul_f16(a: &[f16], b: &[f16], (m, k, n): (usize, usize, usize)) -> Vec<f16> {
    matmul_widened(a, b, (m, k, n), f16::to_f32, f16::from_f32)
}

/// `a[m,k] @ b[k,n]` over bf16, f32 accumulation, one rounding to bf16.
pub fn matmul_bf16(a: &[bf16], b: &[bf16], (m, k, n): (usize, usize, usize)) -> Vec<bf16> {
    matmul_widened(a, b, (m, k, n), bf16::to_f32, bf16::from_f32)
}

fn matmul_widened<T: Copy>(
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    widen: fn(T) -> f32,
    round: fn(f32) -> T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += widen(a[i * k + p]) * widen(b[p * n + j]);
            }
            out.push(round(acc));
        }
    }
    out
}

/// Row-wise softmax of a bf16 matrix, in f64, each output rounded once.
pub fn softmax_bf16(x: &[bf16], (rows, cols): (usize, usize)) -> Vec<bf16> {
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        out.extend(softmax_bf16_row(&x[r * cols..(r + 1) * cols]));
    }
    out
}

/// One row of [`softmax_bf16`] (shared with the CPU module's tests).
pub fn softmax_bf16_row(row: &[bf16]) -> impl Iterator<Item = bf16> + '_ {
    let max = row
        .iter()
        .map(|v| f64::from(v.to_f32()))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row
        .iter()
        .map(|v| (f64::from(v.to_f32()) - max).exp())
        .sum();
    row.iter()
        .map(move |v| bf16::from_f64((f64::from(v.to_f32()) - max).exp() / sum))
}

/// `sum(x*y)` over i8, in i32 with wrapping overflow.
pub fn dot_i8(x: &[i8], y: &[i8]) -> i32 {
    x.iter().zip(y).fold(0i32, |acc, (&a, &b)| {
        acc.wrapping_add(i32::from(a) * i32::from(b))
    })
}

/// `a[m,k] @ b[k,n]` over i8, in i32 with wrapping overflow.
pub fn matmul_i8(a: &[i8], b: &[i8], (m, k, n): (usize, usize, usize)) -> Vec<i32> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0i32;
            for p in 0..k {
                acc = acc.wrapping_add(i32::from(a[i * k + p]) * i32::from(b[p * n + j]));
            }
            out.push(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_f16_rounds_the_f32_sum_once() {
        // 2048 + 1 + 1 in f32 is 2050, exactly representable in f16. Summed
        // in f16 the 1s would be lost (f16 spacing at 2048 is 2: 2048 + 1
        // rounds to even, 2048).
        let a = [2048.0, 1.0, 1.0].map(f16::from_f32);
        let b = [1.0, 1.0, 1.0].map(f16::from_f32);
        assert_eq!(matmul_f16(&a, &b, (1, 3, 1)), [f16::from_f32(2050.0)]);
        // 2x3 @ 3x2 by hand.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].map(f16::from_f32);
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0].map(f16::from_f32);
        let want = [58.0, 64.0, 139.0, 154.0].map(f16::from_f32);
        assert_eq!(matmul_f16(&a, &b, (2, 3, 2)), want);
        assert_eq!(matmul_f16(&[], &[], (2, 0, 2)), [f16::ZERO; 4]);
    }

    #[test]
    fn matmul_bf16_rounds_the_f32_sum_once() {
        // bf16 spacing at 256 is 2: 256 + 1 + 1 survives only in f32.
        let a = [256.0, 1.0, 1.0].map(bf16::from_f32);
        let b = [1.0, 1.0, 1.0].map(bf16::from_f32);
        assert_eq!(matmul_bf16(&a, &b, (1, 3, 1)), [bf16::from_f32(258.0)]);
        // A sum of 257 is a tie between 256 and 258: to even, 256.
        let a = [256.0, 1.0].map(bf16::from_f32);
        assert_eq!(matmul_bf16(&a, &b[..2], (1, 2, 1)), [bf16::from_f32(256.0)]);
    }

    #[test]
    fn softmax_bf16_by_hand() {
        let x = [0.0, 0.0, 1000.0, -1000.0].map(bf16::from_f32);
        let want = [0.5, 0.5, 1.0, 0.0].map(bf16::from_f32);
        assert_eq!(softmax_bf16(&x, (2, 2)), want);
        // Four equal values share evenly, whatever their size.
        let x = [7.5, 7.5, 7.5, 7.5].map(bf16::from_f32);
        assert_eq!(softmax_bf16(&x, (1, 4)), [bf16::from_f32(0.25); 4]);
        assert!(softmax_bf16(&[], (0, 3)).is_empty());
    }

    #[test]
    fn dot_i8_wraps_in_i32() {
        assert_eq!(dot_i8(&[1, -2, 3], &[4, 5, -6]), 4 - 10 - 18);
        // 2^20 products of 127*127 = 16129: 16129 * 2^20 = 16_912_482_304,
        // beyond i32::MAX; modulo 2^32 it is 16_912_482_304 - 3*2^32
        // = 4_027_580_416, as i32 4_027_580_416 - 2^32 = -267_386_880.
        let n = 1 << 20;
        let x = vec![127i8; n];
        let want = (16129i64 * n as i64).rem_euclid(1 << 32) as u32 as i32;
        assert_eq!(want, -267_386_880);
        assert_eq!(dot_i8(&x, &x), want);
        // The most negative product: (-128)*(-128) = 16384.
        assert_eq!(dot_i8(&[-128; 4], &[-128; 4]), 65536);
    }

    #[test]
    fn matmul_i8_wraps_in_i32() {
        let a = [1, 2, 3, 4, 5, 6];
        let b = [7, 8, 9, 10, 11, 12];
        assert_eq!(matmul_i8(&a, &b, (2, 3, 2)), [58, 64, 139, 154]);
        // k = 2^18 of (-128)*(-128) = 2^14: 2^32 wraps to 0.
        let k = 1 << 18;
        let a = vec![-128i8; k];
        assert_eq!(matmul_i8(&a, &a, (1, k, 1)), [0]);
        // One more product: 2^14.
        let a = vec![-128i8; k + 1];
        assert_eq!(matmul_i8(&a, &a, (1, k + 1, 1)), [16384]);
    }
}

//! The bundled kernels, written for clarity rather than speed.

/// `a*x + y` element-wise, in f32, multiply then add, each rounded (no fused
/// multiply-add): the kernel's definition, reproduced exactly by backends.
/// The output has the length of the shorter input.
pub fn saxpy(a: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&x, &y)| a * x + y).collect()
}

/// `sum(x[i] * y[i])`, products and sum in f64, rounded once to f32.
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum::<f64>() as f32
}

/// Row-major `a[m,k] @ b[k,n]` into a row-major `m x n` result; every element
/// is summed in f64 over `k` in ascending order and rounded once to f32.
pub fn matmul(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    let mut row = vec![0.0f64; n];
    for i in 0..m {
        row.iter_mut().for_each(|v| *v = 0.0);
        // i-k-j order: the same sums (same order) as the textbook triple
        // loop, but streaming through `b` row by row.
        for kk in 0..k {
            let aik = f64::from(a[i * k + kk]);
            for (acc, &bv) in row.iter_mut().zip(&b[kk * n..(kk + 1) * n]) {
                *acc += aik * f64::from(bv);
            }
        }
        for (cv, &acc) in c[i * n..(i + 1) * n].iter_mut().zip(&row) {
            *cv = acc as f32;
        }
    }
    c
}

/// One explicit diffusion step on a row-major `h x w` grid, neighbours
/// clamped at the edges: `out = g + alpha*(N + S + W + E - 4g)`, in f32,
/// summed left to right: the kernel's definition, reproduced exactly by the
/// backends.
pub fn stencil2d(g: &[f32], (h, w): (usize, usize), alpha: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; h * w];
    let at = |i: usize, j: usize| g[i * w + j];
    for i in 0..h {
        for j in 0..w {
            let c = at(i, j);
            let north = at(i.saturating_sub(1), j);
            let south = at((i + 1).min(h - 1), j);
            let west = at(i, j.saturating_sub(1));
            let east = at(i, (j + 1).min(w - 1));
            out[i * w + j] = c + alpha * (north + south + west + east - 4.0 * c);
        }
    }
    out
}

/// Row-wise softmax of a row-major `rows x cols` matrix, shifted by the row
/// maximum (so large inputs do not overflow), computed in f64 and rounded once
/// to f32.
pub fn softmax(x: &[f32], (rows, cols): (usize, usize)) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for (o, &v) in out[r * cols..(r + 1) * cols].iter_mut().zip(row) {
            *o = ((f64::from(v) - max).exp() / sum) as f32;
        }
    }
    out
}

/// Row-wise layer norm of a row-major `rows x cols` matrix:
/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, with the mean and the
/// (biased) variance of each row computed in f64 and each element rounded
/// once to f32.
pub fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    (rows, cols): (usize, usize),
    eps: f64,
) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let n = cols.max(1) as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, o) in out[r * cols..(r + 1) * cols].iter_mut().enumerate() {
            *o = ((f64::from(row[j]) - mean) * inv * f64::from(gamma[j]) + f64::from(beta[j]))
                as f32;
        }
    }
    out
}

/// Inclusive prefix sum: `out[i] = x[0] + ... + x[i]`, accumulated in f64
/// and each element rounded once to f32.
pub fn prefix_sum(x: &[f32]) -> Vec<f32> {
    let mut acc = 0.0f64;
    x.iter()
        .map(|&v| {
            acc += f64::from(v);
            acc as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saxpy_by_hand() {
        assert_eq!(
            saxpy(2.0, &[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]),
            [12.0, 24.0, 36.0]
        );
        assert_eq!(
            saxpy(-1.0, &[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]),
            [9.0, 18.0, 27.0]
        );
        assert!(saxpy(3.0, &[], &[]).is_empty());
    }

    #[test]
    fn saxpy_rounds_the_product_then_the_sum() {
        // a*x = (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 is not representable in
        // f32: it rounds (to even) to 1 + 2^-11 before y = -1 is added. A
        // fused multiply-add would keep the 2^-24.
        let a = 1.0 + 2f32.powi(-12);
        let x = 1.0 + 2f32.powi(-12);
        let got = saxpy(a, &[x], &[-1.0])[0];
        assert_eq!(got, 2f32.powi(-11));
        assert_ne!(got, a.mul_add(x, -1.0));
    }

    #[test]
    fn dot_by_hand_and_in_f64() {
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
        assert_eq!(dot(&[], &[]), 0.0);
        // In f32, 1e8 + 1 - 1e8 loses the 1; accumulated in f64 it survives.
        assert_eq!(dot(&[1e8, 1.0, -1e8], &[1.0, 1.0, 1.0]), 1.0);
    }

    #[test]
    fn matmul_by_hand() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2x3
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0]; // 3x2
        assert_eq!(matmul(&a, &b, (2, 3, 2)), [58.0, 64.0, 139.0, 154.0]);
        // k = 0: an all-zero m x n result.
        assert_eq!(matmul(&[], &[], (2, 0, 3)), [0.0; 6]);
        // Sums in f64: 1e8 + 1 - 1e8 = 1.
        assert_eq!(
            matmul(&[1e8, 1.0, -1e8], &[1.0, 1.0, 1.0], (1, 3, 1)),
            [1.0]
        );
    }

    #[test]
    fn stencil_clamps_edges() {
        // A single hot cell in the corner of a 2x3 grid; alpha 0.25.
        let g = [4.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        // corner: N and W clamp to itself: 4 + 0.25*(4+0+4+0-16) = 2;
        // its east and south neighbours: 0 + 0.25*4 = 1.
        assert_eq!(stencil2d(&g, (2, 3), 0.25), [2.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        // A constant grid is a fixed point (clamping conserves it).
        assert_eq!(stencil2d(&[3.0; 6], (2, 3), 0.1), [3.0; 6]);
        // A 1x1 grid: every neighbour is the cell itself.
        assert_eq!(stencil2d(&[5.0], (1, 1), 0.3), [5.0]);
        assert!(stencil2d(&[], (0, 0), 0.1).is_empty());
    }

    #[test]
    fn softmax_by_hand() {
        // Equal inputs share evenly; a huge gap saturates without overflow.
        assert_eq!(
            softmax(&[0.0, 0.0, 1000.0, -1000.0], (2, 2)),
            [0.5, 0.5, 1.0, 0.0]
        );
        // Rows are independent and sum to 1: e^0 / (e^0 + e^ln3) = 1/4.
        let l3 = 3f32.ln();
        let out = softmax(&[0.0, l3, 7.0, 7.0], (2, 2));
        assert!((out[0] - 0.25).abs() < 1e-7 && (out[1] - 0.75).abs() < 1e-7);
        assert_eq!(&out[2..], [0.5, 0.5]);
        assert!(softmax(&[], (0, 4)).is_empty());
    }

    #[test]
    fn layer_norm_by_hand() {
        // Row [1, 3]: mean 2, variance 1; gamma scales, beta shifts.
        let y = layer_norm(&[1.0, 3.0], &[1.0, 2.0], &[0.0, 1.0], (1, 2), 0.0);
        assert_eq!(y, [-1.0, 3.0]);
        // A constant row has variance 0: eps keeps it finite, output = beta.
        let y = layer_norm(&[5.0, 5.0, 5.0], &[1.0; 3], &[0.5; 3], (1, 3), 1e-5);
        assert_eq!(y, [0.5; 3]);
        assert!(layer_norm(&[], &[], &[], (0, 4), 1e-5).is_empty());
    }

    #[test]
    fn prefix_sum_by_hand() {
        assert_eq!(prefix_sum(&[1.0, 2.0, 3.0, -6.0]), [1.0, 3.0, 6.0, 0.0]);
        assert!(prefix_sum(&[]).is_empty());
        // Accumulated in f64: 1e8 + 1 then - 1e8 keeps the 1.
        assert_eq!(prefix_sum(&[1e8, 1.0, -1e8])[2], 1.0);
    }
}

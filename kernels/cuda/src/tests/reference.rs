//! Plain, obviously-correct implementations the kernels are tested against.

pub fn saxpy(a: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&x, &y)| a * x + y).collect()
}

pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut s = 0.0f64;
    for i in 0..x.len() {
        s += f64::from(x[i]) * f64::from(y[i]);
    }
    s as f32
}

pub fn matmul(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for kk in 0..k {
                s += f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]);
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

pub fn stencil2d(g: &[f32], (h, w): (usize, usize), alpha: f32) -> Vec<f32> {
    let at = |i: isize, j: isize| {
        let i = i.clamp(0, h as isize - 1) as usize;
        let j = j.clamp(0, w as isize - 1) as usize;
        g[i * w + j]
    };
    let mut out = vec![0.0; h * w];
    for i in 0..h as isize {
        for j in 0..w as isize {
            let c = at(i, j);
            out[i as usize * w + j as usize] =
                c + alpha * (at(i - 1, j) + at(i + 1, j) + at(i, j - 1) + at(i, j + 1) - 4.0 * c);
        }
    }
    out
}

pub fn softmax(x: &[f32], (rows, cols): (usize, usize)) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for c in 0..cols {
            out[r * cols + c] = ((f64::from(row[c]) - max).exp() / sum) as f32;
        }
    }
    out
}

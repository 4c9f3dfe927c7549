//! layer_norm on cpu: layer_norm(x: f32[rows, cols], gamma: f32[cols], beta: f32[cols]; eps) -> y: f32[rows, cols]
//!
//! One rayon task per block of rows; each row's mean and variance in f64.

use rayon::prelude::*;
use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let x = args.input::<f32>(0)?;
    let gamma = args.input::<f32>(1)?;
    let beta = args.input::<f32>(2)?;
    let cols = args.dim("cols");
    let eps = args.param("eps")?;
    let mut y = vec![0.0f32; x.len()];
    if cols > 0 {
        args.pool.install(|| {
            y.par_chunks_mut(cols)
                .zip(x.par_chunks(cols))
                .with_min_len(16)
                .for_each(|(out, row)| {
                    let n = cols as f64;
                    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                    let var = row
                        .iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>()
                        / n;
                    let inv = 1.0 / (var + eps).sqrt();
                    for j in 0..cols {
                        out[j] = ((f64::from(row[j]) - mean) * inv * f64::from(gamma[j])
                            + f64::from(beta[j])) as f32;
                    }
                });
        });
    }
    Ok(vec![args.output(0, y)?])
}

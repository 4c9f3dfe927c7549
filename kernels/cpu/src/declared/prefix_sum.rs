//! prefix_sum on cpu: prefix_sum(x: f32[n]) -> y: f32[n], inclusive.
//!
//! Two passes over fixed-size blocks: each block's total (in parallel), then
//! each block scanned from the sum of the blocks before it, all in f64.

use rayon::prelude::*;
use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

const BLOCK: usize = 1 << 14;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let x = args.input::<f32>(0)?;
    let mut y = vec![0.0f32; x.len()];
    args.pool.install(|| {
        let totals: Vec<f64> = x
            .par_chunks(BLOCK)
            .map(|b| b.iter().map(|&v| f64::from(v)).sum())
            .collect();
        let mut offsets = Vec::with_capacity(totals.len());
        let mut acc = 0.0f64;
        for t in &totals {
            offsets.push(acc);
            acc += t;
        }
        y.par_chunks_mut(BLOCK)
            .zip(x.par_chunks(BLOCK))
            .zip(offsets)
            .for_each(|((out, block), mut acc)| {
                for (o, &v) in out.iter_mut().zip(block) {
                    acc += f64::from(v);
                    *o = acc as f32;
                }
            });
    });
    Ok(vec![args.output(0, y)?])
}

//! softmax: row-wise, shifted by the row maximum.

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let (rows, cols) = (args.dim("rows"), args.dim("cols"));
    let out = crate::kernels::softmax(args.pool, args.input(0)?, (rows, cols));
    Ok(vec![args.output(0, out)?])
}

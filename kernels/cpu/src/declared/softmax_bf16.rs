//! softmax_bf16: see `kernels/declarations/softmax_bf16.toml`.

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let dims = (args.dim("rows"), args.dim("cols"));
    let out = crate::low_precision::softmax_bf16(args.pool, args.input(0)?, dims);
    Ok(vec![args.output(0, out)?])
}

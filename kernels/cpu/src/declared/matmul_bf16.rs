//! matmul_bf16: see `kernels/declarations/matmul_bf16.toml`.

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let dims = (args.dim("m"), args.dim("k"), args.dim("n"));
    let out = crate::low_precision::matmul_bf16(args.pool, args.input(0)?, args.input(1)?, dims);
    Ok(vec![args.output(0, out)?])
}

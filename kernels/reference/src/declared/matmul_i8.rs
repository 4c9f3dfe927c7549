use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let dims = (args.dim("m"), args.dim("k"), args.dim("n"));
    let out = kernel_reference::matmul_i8(args.input::<i8>(0)?, args.input::<i8>(1)?, dims);
    Ok(vec![args.output(0, out)?])
}

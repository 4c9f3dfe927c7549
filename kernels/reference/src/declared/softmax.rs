use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let out = kernel_reference::softmax(args.input(0)?, (args.dim("rows"), args.dim("cols")));
    Ok(vec![args.output(0, out)?])
}

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let out = kernel_reference::dot_i8(args.input(0)?, args.input(1)?);
    Ok(vec![args.output(0, vec![out])?])
}

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let a = args.param("a")? as f32;
    let out = kernel_reference::saxpy(a, args.input(0)?, args.input(1)?);
    Ok(vec![args.output(0, out)?])
}

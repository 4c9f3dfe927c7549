//! stencil2d: one explicit diffusion step, edges clamped.

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let alpha = args.param("alpha")? as f32;
    let (h, w) = (args.dim("h"), args.dim("w"));
    let out = crate::kernels::stencil2d(args.pool, args.input(0)?, (h, w), alpha);
    Ok(vec![args.output(0, out)?])
}

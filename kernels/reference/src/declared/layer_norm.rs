//! layer_norm in the reference module: layer_norm(x: f32[rows, cols], gamma: f32[cols], beta: f32[cols]; eps) -> y: f32[rows, cols]

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let y = kernel_reference::layer_norm(
        args.input(0)?,
        args.input(1)?,
        args.input(2)?,
        (args.dim("rows"), args.dim("cols")),
        args.param("eps")?,
    );
    Ok(vec![args.output(0, y)?])
}

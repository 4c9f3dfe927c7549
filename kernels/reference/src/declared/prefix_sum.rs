//! prefix_sum in the reference module: prefix_sum(x: f32[n]) -> y: f32[n], inclusive.

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    Ok(vec![args.output(0, kernel_reference::prefix_sum(args.input(0)?))?])
}

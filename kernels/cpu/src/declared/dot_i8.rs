//! dot_i8: see `kernels/declarations/dot_i8.toml`.

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let out = crate::low_precision::dot_i8(args.pool, args.input(0)?, args.input(1)?);
    Ok(vec![args.output(0, vec![out])?])
}

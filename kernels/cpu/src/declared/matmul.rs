//! matmul: `out = a @ b`, blocked; the tile is a tunable (the call's `tile`
//! parameter, else the one in the engine's state).

use shared_state::{EngineError, Scalar, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let (m, k, n) = (args.dim("m"), args.dim("k"), args.dim("n"));
    let tile = match args.bound.params.get("tile").and_then(Scalar::as_i64) {
        Some(t) if t > 0 => t as usize,
        _ => args.tile,
    };
    let out = crate::kernels::matmul(args.pool, args.input(0)?, args.input(1)?, (m, k, n), tile);
    Ok(vec![args.output(0, out)?])
}

use shared_state::{EngineError, Tensor};

use crate::registry::Args;

pub const IMPLEMENTED: bool = true;

pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {
    let dims = (args.dim("m"), args.dim("k"), args.dim("n"));
    let out = kernel_reference::matmul_f16(args.input::<shared_state::f16>(0)?, args.input::<shared_state::f16>(1)?, dims);
    Ok(vec![args.output(0, out)?])
}

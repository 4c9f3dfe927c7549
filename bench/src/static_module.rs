//! The CPU module's kernel table linked statically into the benchmark: the
//! very files `kernel-cpu` compiles (`kernels/cpu/src/declared/*.rs`,
//! `kernels.rs`, `low_precision.rs`), called by declared name with a call
//! bound to its declaration as the CPU engine binds it (the call's
//! parameters without kiln's directives, defaults filled in, the engine's
//! default matmul tile). The baseline every call of the bundled workload is
//! compared with (`workload_calls`).

use shared_state::{Bound, Call, DType, EngineError, KernelDecl, Tensor};

use kernel_cpu_engine::registry::{Args, CallArgs, Entry, KernelFn};

/// The CPU engine's default matmul tile (`kernel-cpu-engine`'s
/// `DEFAULT_TILE`; a call's `tile` parameter overrides it, in both).
pub const TILE: usize = 64;

/// One kernel of the table.
pub struct StaticKernel(Entry);

/// Every implemented kernel of the CPU module.
pub fn table() -> Vec<StaticKernel> {
    crate::declared::entries()
        .into_iter()
        .filter(|e| e.implemented)
        .map(StaticKernel)
        .collect()
}

impl StaticKernel {
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// Runs the kernel on `pool` with `inputs` bound as `bound`.
    pub fn run(
        &self,
        pool: &rayon::ThreadPool,
        bound: &Bound,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, EngineError> {
        let call = CallArgs {
            bound,
            inputs: inputs.iter().collect(),
        };
        match &self.0.run {
            KernelFn::Pooled(run) => run(&Args {
                call,
                pool,
                tile: TILE,
            }),
            KernelFn::Plain(run) => run(&call),
        }
    }
}

/// `call` bound to `decl` with `inputs`, as the CPU engine binds it with no
/// tuned values kept: kiln's own directives (`kiln.*`) left out.
pub fn bind(decl: &KernelDecl, call: &Call, inputs: &[Tensor]) -> Result<Bound, String> {
    let shapes: Vec<(DType, &[usize])> = inputs.iter().map(|t| (t.dtype(), t.shape())).collect();
    let params = call
        .params
        .iter()
        .filter(|(k, _)| !k.starts_with("kiln."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    decl.bind(&shapes, &params).map_err(|e| e.0)
}

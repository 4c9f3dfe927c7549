//! One file per kernel, named as the kernel is declared. Each has
//! `pub const IMPLEMENTED` and `pub fn run(&Args) -> Result<Vec<Tensor>, EngineError>`.

crate::kernels! {
    saxpy,
    dot,
    matmul,
    stencil2d,
    softmax,
    layer_norm,
    prefix_sum,
    matmul_f16,
    matmul_bf16,
    softmax_bf16,
    dot_i8,
    matmul_i8,
    // `kiln new kernel` adds kernels above this line.
}

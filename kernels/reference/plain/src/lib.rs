//! Plain, obviously-correct implementations of the bundled kernels
//! (`saxpy`, `dot`, `matmul`, `stencil2d`, `softmax`, `layer_norm`,
//! `prefix_sum`) and a deterministic test-value generator.
//!
//! One copy for everyone: the reference module (`kernels/reference`, a
//! kernel module the host loads to compute expected outputs) wraps them,
//! and the kernel modules' tests check their kernels against them.
//!
//! Semantics (those of the CPU module, `kernels/cpu/src/kernels.rs`):
//! - `saxpy` and `stencil2d` are computed in f32 in the kernels' own
//!   operation order, so a backend that follows the definition reproduces
//!   them exactly;
//! - `dot`, `matmul` and `softmax` accumulate in f64 and round once to f32;
//! - stencil edges are clamped, softmax is row-wise and shifted by the row
//!   maximum.
//!
//! - `layer_norm` and `prefix_sum` accumulate in f64 and round each output
//!   element once to f32.
//!
//! - The f16, bf16 and i8 kernels: see [`low_precision`] (f32 accumulation,
//!   one rounding; i8 sums wrap in i32).
//!
//! Shapes are the caller's responsibility (the reference module checks them
//! against the kernels' declarations); slices that are too short panic.

mod kernels;
mod low_precision;
mod values;

pub use kernels::{dot, layer_norm, matmul, prefix_sum, saxpy, softmax, stencil2d};
pub use low_precision::{
    dot_i8, matmul_bf16, matmul_f16, matmul_i8, softmax_bf16, softmax_bf16_row,
};
pub use values::{assert_close, test_values};

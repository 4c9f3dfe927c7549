//! Plain, obviously-correct implementations of the five standard kernels
//! (`saxpy`, `dot`, `matmul`, `stencil2d`, `softmax`) and a deterministic
//! test-value generator.
//!
//! One copy for everyone: the host's reference backend
//! (`harness/src/reference.rs`) computes expected outputs with it, and the
//! kernel modules' tests check their kernels against it.
//!
//! Semantics (those of the CPU module, `kernels/cpu/src/kernels.rs`):
//! - `saxpy` and `stencil2d` are computed in f32 in the kernels' own
//!   operation order, so a backend that follows the definition reproduces
//!   them exactly;
//! - `dot`, `matmul` and `softmax` accumulate in f64 and round once to f32;
//! - stencil edges are clamped, softmax is row-wise and shifted by the row
//!   maximum.
//!
//! Shapes are the caller's responsibility (the host checks them with
//! `shared_state::kernels::output_shape`); slices that are too short panic.

mod kernels;
mod values;

pub use kernels::{dot, matmul, saxpy, softmax, stencil2d};
pub use values::test_values;

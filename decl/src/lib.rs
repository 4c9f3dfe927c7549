//! Kernel declaration files: one TOML file per kernel under
//! `kernels/declarations/`, read into the contract's [`KernelDecl`].
//!
//! One file per kernel (not one file for all): scaffolding adds a file,
//! an edit touches one kernel's file (so only that kernel is re-checked and
//! re-tuned), and an error names the kernel's own file and line.
//!
//! ```toml
//! summary = "out = a*x + y"
//! inputs = ["x: f32[n]", "y: f32[n]"]
//! outputs = ["out: f32[n]"]
//! params = { a = 2.0 }
//! work = { flops = "2*n", bytes = "12*n" }
//!
//! [[launch]]                       # one table per GPU pass, in order
//! entry = "main"
//! group = [256]
//! workgroups = ["ceil_div(n, 256)"]
//! ```
//!
//! See `docs/kernel-declarations.md` for every field.

mod file;

pub use file::{DeclError, load_dir, parse};

/// The folder, relative to the workspace root, that holds the declarations.
pub const DECLARATIONS_DIR: &str = "kernels/declarations";

//! The kernel table of this module: [`Args`], [`Entry`] and the rest come
//! from `kernel-cpu-engine` (compiled once); [`kernels!`](crate::kernels)
//! declares the kernel files under `src/declared/` and lists them.

pub use kernel_cpu_engine::registry::{Args, Entry, KernelFn};

/// Declares the kernel files and registers them by file name:
/// `kernels! { saxpy, dot }` is `mod saxpy; mod dot;` plus a table of
/// `saxpy::run`, `dot::run` (each taking [`Args`]: the call and the rayon
/// pool) with their `IMPLEMENTED` flags.
#[macro_export]
macro_rules! kernels {
    ($($name:ident),* $(,)?) => {
        kernel_cpu_engine::kernel_table! { Pooled; $($name),* }
    };
}

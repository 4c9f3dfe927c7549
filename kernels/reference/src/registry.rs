//! The reference kernels by declared name (see `src/declared/mod.rs`): the
//! table and the engine are `kernel-cpu-engine`'s (without its rayon part).

/// What a reference kernel gets: the call bound to its declaration and its
/// inputs in declared order.
pub use kernel_cpu_engine::registry::CallArgs as Args;
pub use kernel_cpu_engine::registry::{Entry, KernelFn};

/// `kernels! { saxpy, dot }`: `mod saxpy; mod dot;` and their table (each
/// `run` taking [`Args`], on the engine thread).
#[macro_export]
macro_rules! kernels {
    ($($name:ident),* $(,)?) => {
        kernel_cpu_engine::kernel_table! { Plain; $($name),* }
    };
}

//! The CPU module's kernels by declared name: one file per kernel under
//! `kernels/cpu/src/declared/`, listed once in its `mod.rs` with kernel-cpu's
//! `kernels!` macro, which builds the table of [`Entry`]s. The engine finds a call's declaration in
//! the version's [`KernelSet`](shared_state::KernelSet), binds the call to it
//! (dtypes, dims, parameter defaults), then runs the function registered
//! under that name.

use rayon::ThreadPool;
use shared_state::{Bound, Element, EngineError, Tensor};

/// What a kernel function gets: the call bound to its declaration, its
/// inputs in declared order, and the engine's pool and tuning.
pub struct Args<'a> {
    pub bound: &'a Bound,
    pub inputs: Vec<&'a Tensor>,
    pub pool: &'a ThreadPool,
    /// The matmul tile carried in the engine's state (a call's `tile`
    /// parameter overrides it).
    pub tile: usize,
}

impl Args<'_> {
    /// Input `i` as a slice of `T` (the declaration fixed its dtype, so a
    /// mismatch means the kernel asks for the wrong type).
    pub fn input<T: Element>(&self, i: usize) -> Result<&[T], EngineError> {
        self.inputs
            .get(i)
            .and_then(|t| t.as_slice::<T>())
            .ok_or_else(|| {
                EngineError::internal(format!(
                    "kernel asked for input {i} as {}, the declaration says otherwise",
                    T::DTYPE
                ))
            })
    }

    /// A dim bound from the inputs (`rows`, `n`, ...).
    pub fn dim(&self, name: &str) -> usize {
        self.bound.dim(name)
    }

    /// A declared number parameter (its default when the call omits it).
    pub fn param(&self, name: &str) -> Result<f64, EngineError> {
        self.bound.f64(name).ok_or_else(|| {
            EngineError::internal(format!("the declaration has no number parameter {name}"))
        })
    }

    /// Output `i` made from `data`, with the shape the declaration derived.
    pub fn output<T: Element>(&self, i: usize, data: Vec<T>) -> Result<Tensor, EngineError> {
        let (_, shape) = self
            .bound
            .outputs
            .get(i)
            .ok_or_else(|| EngineError::internal(format!("the kernel has no output {i}")))?;
        Tensor::new(shape.clone(), T::into_buffer(data))
            .map_err(|e| EngineError::internal(format!("output {i}: {e}")))
    }
}

/// A kernel: outputs in declared order.
pub type KernelFn = fn(&Args<'_>) -> Result<Vec<Tensor>, EngineError>;

/// One registered kernel.
pub struct Entry {
    pub name: &'static str,
    pub run: KernelFn,
    /// False for a scaffolded stub: not listed by `info()` until written.
    pub implemented: bool,
}

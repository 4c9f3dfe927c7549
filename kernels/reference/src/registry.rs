//! The reference kernels by declared name (see `src/declared/mod.rs`).

use shared_state::{Bound, Element, EngineError, Tensor};

/// What a reference kernel gets: the call bound to its declaration and its
/// inputs in declared order.
pub struct Args<'a> {
    pub bound: &'a Bound,
    pub inputs: Vec<&'a Tensor>,
}

impl Args<'_> {
    /// Input `i` as a slice of `T`.
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

    /// A dim bound from the inputs.
    pub fn dim(&self, name: &str) -> usize {
        self.bound.dim(name)
    }

    /// A declared number parameter (its default when the call omits it).
    pub fn param(&self, name: &str) -> Result<f64, EngineError> {
        self.bound.f64(name).ok_or_else(|| {
            EngineError::internal(format!("the declaration has no number parameter {name}"))
        })
    }

    /// Output `i` from `data`, with the shape the declaration derived.
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

pub type KernelFn = fn(&Args<'_>) -> Result<Vec<Tensor>, EngineError>;

pub struct Entry {
    pub name: &'static str,
    pub run: KernelFn,
    /// False for a scaffolded stub: not listed until written.
    pub implemented: bool,
}

/// `kernels! { saxpy, dot }`: `mod saxpy; mod dot;` and their table.
#[macro_export]
macro_rules! kernels {
    ($($name:ident),* $(,)?) => {
        $(mod $name;)*

        pub fn entries() -> Vec<$crate::registry::Entry> {
            vec![$($crate::registry::Entry {
                name: stringify!($name),
                run: $name::run,
                implemented: $name::IMPLEMENTED,
            }),*]
        }
    };
}

//! The kernels of a module by declared name: one file per kernel under the
//! module's `src/declared/`, listed once in its `mod.rs` with the module's
//! `kernels!` macro (which forwards to [`kernel_table!`](crate::kernel_table))
//! to build the table of [`Entry`]s. The engine finds a call's declaration
//! in the version's [`KernelSet`](shared_state::KernelSet), binds the call
//! to it (dtypes, dims, parameter defaults), then runs the function
//! registered under that name.
//!
//! A kernel of the CPU module takes [`Args`] (the call, the engine's rayon
//! pool and tuning); a kernel of the reference module takes [`CallArgs`]
//! (the call alone: it runs on the engine's thread).

use shared_state::{Bound, Element, EngineError, Tensor};

/// What every kernel gets: the call bound to its declaration and its
/// inputs in declared order.
pub struct CallArgs<'a> {
    pub bound: &'a Bound,
    pub inputs: Vec<&'a Tensor>,
}

impl CallArgs<'_> {
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

/// What a CPU kernel gets: the call ([`CallArgs`], whose fields and methods
/// it reaches directly: `args.input(0)`, `args.bound`), and the engine's
/// pool and tuning.
#[cfg(feature = "rayon")]
pub struct Args<'a> {
    pub call: CallArgs<'a>,
    pub pool: &'a rayon::ThreadPool,
    /// The matmul tile carried in the engine's state (a call's `tile`
    /// parameter overrides it).
    pub tile: usize,
}

#[cfg(feature = "rayon")]
impl<'a> std::ops::Deref for Args<'a> {
    type Target = CallArgs<'a>;

    fn deref(&self) -> &CallArgs<'a> {
        &self.call
    }
}

/// A kernel: outputs in declared order.
pub enum KernelFn {
    /// A CPU kernel, on the engine's rayon pool.
    #[cfg(feature = "rayon")]
    Pooled(fn(&Args<'_>) -> Result<Vec<Tensor>, EngineError>),
    /// A reference kernel, on the engine's thread.
    Plain(fn(&CallArgs<'_>) -> Result<Vec<Tensor>, EngineError>),
}

/// One registered kernel.
pub struct Entry {
    pub name: &'static str,
    pub run: KernelFn,
    /// False for a scaffolded stub: not listed by `info()` until written.
    pub implemented: bool,
}

/// Declares the kernel files and registers them by file name:
/// `kernel_table! { Pooled; saxpy, dot }` is `mod saxpy; mod dot;` plus
/// `entries()`, a table of `saxpy::run`, `dot::run` (each a
/// [`KernelFn::Pooled`], or with `Plain` a [`KernelFn::Plain`]) with their
/// `IMPLEMENTED` flags. A module's `kernels!` forwards to it.
#[macro_export]
macro_rules! kernel_table {
    ($kind:ident; $($name:ident),* $(,)?) => {
        $(mod $name;)*

        /// Every kernel file of this module.
        pub fn entries() -> Vec<$crate::registry::Entry> {
            vec![$($crate::registry::Entry {
                name: stringify!($name),
                run: $crate::registry::KernelFn::$kind($name::run),
                implemented: $name::IMPLEMENTED,
            }),*]
        }
    };
}

//! Where a call's expected outputs come from, in this order:
//!
//! 1. `--reference BACKEND`: another backend's module, run on the same
//!    inputs (backends checked against each other);
//! 2. the expected outputs stored in the workload (written from numpy, or
//!    recorded from a version you trust: `replay::fill_expected`);
//! 3. the reference module (`kernels/reference`, a kernel module like the
//!    others: built, staged, loaded, hot-swapped).
//!
//! Every verdict says which one it used ([`ExpectedFrom`]). The host names
//! no kernel: a reference is an engine, and calls run on it exactly as on
//! the served one.

use std::fmt;

use shared_state::{Output, Tensor};

use crate::swap::engine_handle::{CallError, EngineHandle};

/// Which reference a verdict used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedFrom {
    /// Another backend (`--reference BACKEND`), by version label.
    Backend(String),
    /// The outputs stored in the workload file.
    Workload,
    /// The reference module, by version label.
    ReferenceModule(String),
    /// Nothing to compare with.
    Unchecked,
}

impl fmt::Display for ExpectedFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedFrom::Backend(label) => write!(f, "vs backend {label}"),
            ExpectedFrom::Workload => f.write_str("vs stored outputs"),
            ExpectedFrom::ReferenceModule(label) => write!(f, "vs reference {label}"),
            ExpectedFrom::Unchecked => f.write_str("unchecked"),
        }
    }
}

/// The outputs of a call, in declared order (a stored output read back).
pub fn outputs_of(handle: &EngineHandle, output: Output) -> Result<Vec<Tensor>, CallError> {
    match output {
        Output::Value(t) => Ok(vec![t]),
        Output::Values(v) => Ok(v),
        Output::Stored { name, .. } => Ok(vec![handle.read_resident(&name)?]),
    }
}

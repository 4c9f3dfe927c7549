//! Where a call's expected outputs come from, in this order:
//!
//! 1. `--reference BACKEND`: another backend's module, run on the same
//!    inputs (backends checked against each other);
//! 2. the expected outputs stored in the workload (written from numpy, or
//!    recorded from a version you trust);
//! 3. the reference module (`kernels/reference`, a kernel module like the
//!    others: built, staged, loaded, hot-swapped).
//!
//! Every verdict says which one it used ([`ExpectedFrom`]). The host names
//! no kernel: a reference is an engine, and calls run on it exactly as on
//! the served one.

use std::fmt;

use shared_state::{Output, Tensor};

use crate::swap::engine_handle::{CallError, EngineHandle};
use crate::workload::replay::load_state;
use crate::workload::{Step, Workload};

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

/// Runs every trial of every call of `workload` on `reference` (its loads
/// first) and stores the outputs as the expected ones. A call with
/// `store_as` gets the value the resident holds after it. An error names
/// the step.
pub fn fill_expected(workload: &mut Workload, reference: &EngineHandle) -> Result<(), String> {
    load_state(reference, workload).map_err(|e| format!("reference: {e}"))?;
    for (i, step) in workload.steps.iter_mut().enumerate() {
        let Step::Call(c) = step else { continue };
        for t in 0..c.trial_count() {
            let (mut call, _) = c.trial(t);
            if t > 0 && call.store_as.is_some() {
                call.store_as = Some(format!("reference-trial/{i}"));
            }
            let out = reference
                .run(call)
                .and_then(|o| outputs_of(reference, o))
                .map_err(|e| format!("step {i} ({}), trial {t}: {e}", c.call.kernel))?;
            if t == 0 {
                c.expected = out;
            } else {
                c.trials[t - 1].expected = out;
            }
        }
    }
    Ok(())
}

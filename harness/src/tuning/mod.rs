//! Autotuning after every swap: for each declared tunable of a kernel the
//! served engine takes (it lists `tuning/KERNEL/PARAM` in its info notes),
//! time every candidate on the workload's calls of that kernel,
//! interleaved, dropping a candidate once it is clearly slower than the best
//! so far ([`crate::workload::timing::verdict`]); check every candidate's
//! outputs against the same expected outputs and reject a wrong or failing
//! one with the reason; keep the best in the engine's state.
//!
//! Keeping: the tuner runs one more call of the kernel with the best value
//! as an explicit parameter and the host directive [`KEEP_PARAM`]
//! (`kiln.keep_tuning = true`); an engine that takes tuning stores the
//! call's explicit tunable values as `tuning/KERNEL/PARAM` (a snapshot
//! scalar), uses them for calls that do not give the parameter, and so
//! carries them across the next handoff. No contract change: directives are
//! call parameters named `kiln.*`, which such an engine strips before
//! binding.
//!
//! - [`cache`]: results on disk under `target/kiln/tuning/`, keyed so that
//!   an edit of one kernel re-tunes that kernel only.
//! - [`tuner`]: the plan and the stepwise timing.

pub mod cache;
pub mod tuner;

/// The call parameter that tells an engine to keep the call's explicit
/// tunable values.
pub const KEEP_PARAM: &str = "kiln.keep_tuning";

/// The info note / snapshot scalar of a kept tunable value.
pub fn note_name(kernel: &str, param: &str) -> String {
    format!("tuning/{kernel}/{param}")
}

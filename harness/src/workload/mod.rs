//! Workloads: a saved sequence of kernel calls with their inputs and,
//! optionally, the outputs they are expected to produce.
//!
//! A workload ([`model`]) is replayed on an engine after every swap: [`Step::Load`]
//! puts a resident buffer, [`Step::Call`] runs a kernel. On disk it is the
//! versioned, checksummed format of [`format`] (documented in
//! `docs/workload-format.md`); [`generate`] makes one from a kernel's
//! declaration and its dims.
//! [`replay`] runs one on an engine: [`compare`] (correctness against the
//! expected outputs, another backend or the reference module: see
//! [`reference`]) and [`timing`] (verdicts).

pub mod backend_columns;
pub mod compare;
pub mod cross_compare;
pub mod format;
pub mod generate;
pub mod model;
pub mod reference;
pub mod replay;
pub mod replay_table;
pub mod timing;

pub use format::{FORMAT_VERSION, MAGIC, WorkloadError, WorkloadErrorKind, read, write};
pub use generate::{GenSpec, GenerateError, bundled_workload, generate};
pub use model::{CallStep, Step, Trial, Workload};

//! `kiln dev`'s options, and why it could not start.

use std::path::PathBuf;
use std::time::Duration;

use crate::logging::LogFormat;

/// What to do with a version whose replay fails correctness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFail {
    /// Swap the last good version back in, with the state.
    Rollback,
    /// Keep serving it and warn.
    Keep,
}

impl std::str::FromStr for OnFail {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rollback" => Ok(OnFail::Rollback),
            "keep" => Ok(OnFail::Keep),
            other => Err(format!("unknown --on-fail {other:?} (rollback or keep)")),
        }
    }
}

/// Options of `kiln dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    pub backend: String,
    /// `--backends cpu,vulkan`: backends served beside `backend`, each from
    /// its own module and worker (empty: `backend` only).
    pub other_backends: Vec<String>,
    pub workload: Option<PathBuf>,
    pub device: Option<String>,
    pub threads: usize,
    pub on_fail: OnFail,
    /// Replay the workload after every swap.
    pub replay: bool,
    /// Load state from this snapshot file at start (if it exists) and save
    /// it there at exit.
    pub state: Option<PathBuf>,
    /// `--fresh`: restore no state kept under `target/kiln/state/` (the last
    /// good point of a session that died, the state saved for a restart).
    pub fresh: bool,
    pub debounce: Duration,
    /// Workspace to serve (default: the one containing the current dir).
    pub workspace: Option<PathBuf>,
    /// At exit, write the session as a workload: the engine's resident
    /// buffers and the calls of the last passing replay, with the outputs
    /// that version produced as expected values.
    pub record: Option<PathBuf>,
    /// How the worker formats its log lines (as the supervisor does).
    pub log_format: LogFormat,
    /// `--call-timeout`: every kernel call's deadline (default: the larger
    /// of 10 s and 50 times the previous version's median).
    pub call_timeout: Option<Duration>,
    /// `--worker-memory`: the worker's data-size limit in bytes (`None`: no
    /// limit).
    pub worker_memory: Option<u64>,
    /// `--reference BACKEND`: every call's expected outputs come from this
    /// backend's module, run on the same inputs.
    pub reference: Option<String>,
    /// `--cold`: time on cold caches.
    pub cold: bool,
    /// Autotune declared tunables after a version passes (`--no-tune`: off).
    pub tune: bool,
}

/// Why `kiln dev` could not start (once running, problems are logged and
/// the current version keeps serving).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DevError(pub String);

pub(super) fn err(message: impl Into<String>) -> DevError {
    DevError(message.into())
}

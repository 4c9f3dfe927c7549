//! The engine trait a module implements, and the values its methods take and
//! return.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::decl::{KernelSet, SourceFile};
use crate::snapshot::{Scalar, Snapshot};
use crate::tensor::{DType, Tensor};

/// What went wrong inside a module, as a value (never a panic across the
/// boundary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The call does not fit the kernel (arguments, dtypes, shapes, params).
    BadCall,
    /// No kernel of that name.
    UnknownKernel,
    /// No resident buffer of that name.
    UnknownBuffer,
    /// The backend cannot run here (no driver, no device, no compiler).
    Unavailable,
    /// The snapshot could not be imported.
    State,
    /// Code in the module panicked; the message has the panic text and place.
    Panic,
    /// Any other failure inside the module.
    Internal,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> EngineError {
        EngineError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_call(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::BadCall, message)
    }

    pub fn unavailable(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Panic => write!(f, "module panicked: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for EngineError {}

/// One argument of a kernel call.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// Data passed with the call.
    Tensor(Tensor),
    /// A buffer resident in the engine, by name.
    Resident(String),
}

impl Arg {
    pub fn describe(&self) -> String {
        match self {
            Arg::Tensor(t) => t.describe(),
            Arg::Resident(name) => format!("@{name}"),
        }
    }
}

/// A kernel call: the kernel's name, its arguments in order, named scalar
/// parameters, and optionally the resident buffer its output is stored in.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub kernel: String,
    pub args: Vec<Arg>,
    pub params: BTreeMap<String, Scalar>,
    /// Store the output as (or over) this resident buffer instead of
    /// returning it.
    pub store_as: Option<String>,
}

impl Call {
    pub fn new(kernel: &str) -> Call {
        Call {
            kernel: kernel.to_string(),
            args: Vec::new(),
            params: BTreeMap::new(),
            store_as: None,
        }
    }

    pub fn arg(mut self, t: Tensor) -> Call {
        self.args.push(Arg::Tensor(t));
        self
    }

    pub fn resident(mut self, name: &str) -> Call {
        self.args.push(Arg::Resident(name.to_string()));
        self
    }

    pub fn param(mut self, name: &str, value: Scalar) -> Call {
        self.params.insert(name.to_string(), value);
        self
    }

    pub fn store_as(mut self, name: &str) -> Call {
        self.store_as = Some(name.to_string());
        self
    }
}

/// The result of a call.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// The output of a kernel with one output, returned to the caller.
    Value(Tensor),
    /// The outputs of a kernel with several, in declaration order.
    Values(Vec<Tensor>),
    /// The output was stored as the named resident buffer (kernels with one
    /// output only).
    Stored { name: String, shape: Vec<usize> },
}

impl Output {
    /// The first (for most kernels: the only) output.
    pub fn into_tensor(self) -> Option<Tensor> {
        match self {
            Output::Value(t) => Some(t),
            Output::Values(v) => v.into_iter().next(),
            Output::Stored { .. } => None,
        }
    }

    /// Every returned output, in declaration order.
    pub fn into_tensors(self) -> Vec<Tensor> {
        match self {
            Output::Value(t) => vec![t],
            Output::Values(v) => v,
            Output::Stored { .. } => Vec::new(),
        }
    }
}

/// What a module says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleInfo {
    /// Crate name, e.g. `kernel-cpu`.
    pub name: String,
    /// `cpu`, `vulkan` or `cuda`.
    pub backend: String,
    /// The device it runs on, with its driver where there is one.
    pub device: String,
    /// The declared kernels this module implements (a declared kernel it
    /// does not list is reported by the host as not on this backend yet).
    pub kernels: Vec<String>,
    /// Anything else worth showing (tuning, counters).
    pub notes: BTreeMap<String, Scalar>,
}

/// A device a backend can run on, as listed by `kiln backends`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// Index used by `--device INDEX`.
    pub index: usize,
    pub name: String,
    /// `cpu`, `integrated-gpu`, `discrete-gpu`, `virtual-gpu`, `software`, ...
    pub kind: String,
    /// Driver name and version, where there is one.
    pub driver: String,
    /// API version (Vulkan 1.3, CUDA 13.0, ...), where there is one.
    pub api: String,
}

/// A resident buffer, as listed by [`Engine::residents`].
#[derive(Clone, Debug, PartialEq)]
pub struct ResidentInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// A kernel engine: one instance of one version of a module, with its state.
///
/// The host calls every method on the engine's own thread (one thread per
/// loaded version), so engines need not be `Send` or `Sync`. Modules do not
/// implement this for the host directly: `export_module!` wraps the engine
/// so that a panic in any method, or in its `Drop`, comes back as an
/// [`ErrorKind::Panic`] error instead of unwinding into the host.
pub trait Engine {
    /// Describe the module and its kernels.
    fn info(&self) -> Result<ModuleInfo, EngineError>;
    /// Run one kernel call.
    fn run(&mut self, call: Call) -> Result<Output, EngineError>;
    /// Load (or replace) a named resident buffer.
    fn put_resident(&mut self, name: &str, tensor: Tensor) -> Result<(), EngineError>;
    /// A resident buffer (a clone: shares the elements, see
    /// [`crate::Shared`]).
    fn read_resident(&self, name: &str) -> Result<Tensor, EngineError>;
    /// List resident buffers.
    fn residents(&self) -> Result<Vec<ResidentInfo>, EngineError>;
    /// Export the whole state. Must leave the engine unchanged: if the next
    /// version fails to start, this engine keeps serving. Cloning a
    /// resident [`crate::Tensor`] into the snapshot shares its elements
    /// (no copy: [`crate::Shared`]); whoever writes them later writes its
    /// own copy, so export by clone. Elements may live in a read-only
    /// mapping of a sealed checkpoint (an engine restarted from one is
    /// handed mapped tensors): read them in place, write through
    /// `as_mut_slice`/`data_mut` (which copies first), never cast the
    /// read-only slice to a mutable one.
    fn export_state(&self) -> Result<Snapshot, EngineError>;
    /// Export the state for the next version of the same module, started
    /// in this process while this engine is alive: resident buffers may be
    /// left on the device ([`crate::DeviceSection`], handles and sizes, no
    /// copy through host memory). Like [`Engine::export_state`] it leaves
    /// the engine unchanged and serving; buffers it hands over are shared
    /// from then on, so neither engine writes them in place. The host asks
    /// for it only for a swap between versions of one module; a switch of
    /// backend, a checkpoint and `--state` take [`Engine::export_state`].
    /// By default the same as [`Engine::export_state`].
    fn export_handoff(&self) -> Result<Snapshot, EngineError> {
        self.export_state()
    }
}

/// Starts threads on behalf of a module. Implemented by the host: a module
/// never spawns threads itself, because a thread it spawned could outlive the
/// library, and std's spawn machinery pins the library in memory. The host
/// joins every thread it started for an engine after the engine is dropped
/// and before the library is closed.
pub trait ThreadSpawner: Send + Sync {
    fn spawn_boxed(&self, name: String, body: Box<dyn FnOnce() + Send>) -> std::io::Result<()>;
}

/// What the host gives a module when it creates an engine.
#[derive(Clone)]
pub struct EngineContext {
    /// Label of this version, e.g. `kernel-cpu-v3`.
    pub label: String,
    /// Worker threads the engine may use.
    pub threads: usize,
    /// Backend options (`device` = name or index, ...).
    pub options: BTreeMap<String, String>,
    /// The only way a module may start a thread.
    pub spawner: Arc<dyn ThreadSpawner>,
    /// The kernel declarations of this version (staged with it,
    /// immutable). Calls are checked against them; GPU modules take launch
    /// sizes from them.
    pub kernels: Arc<KernelSet>,
    /// The version's source files that the engine compiles when it is
    /// created (WGSL shaders, `.cu` files), staged with the library.
    pub sources: Arc<Vec<SourceFile>>,
}

impl EngineContext {
    /// Starts a host-owned thread running `body`. A panic in `body` is caught
    /// inside the module (this function is generic, so the catching code is
    /// compiled into the module) and logged.
    pub fn spawn<F>(&self, name: String, body: F) -> std::io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let thread_name = name.clone();
        self.spawner.spawn_boxed(
            name,
            Box::new(move || {
                if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                    let message = crate::export::panic_message(payload.as_ref());
                    tracing::error!(thread = %thread_name, "module thread panicked: {message}");
                }
            }),
        )
    }

    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    /// The staged source at `path` (relative to the module's directory).
    pub fn source(&self, path: &str) -> Option<&SourceFile> {
        self.sources.iter().find(|s| s.path == path)
    }
}

impl fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineContext")
            .field("label", &self.label)
            .field("threads", &self.threads)
            .field("options", &self.options)
            .field("kernels", &self.kernels.names().collect::<Vec<_>>())
            .field(
                "sources",
                &self.sources.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What the module's factory returns: the engine (wrapped so that it never
/// unwinds into the host) and what it made of the prior state.
pub struct Created {
    pub engine: Box<dyn Engine>,
    pub report: crate::snapshot::ImportReport,
}

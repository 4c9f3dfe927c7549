//! The kiln contract: what the host and every kernel module compile in.
//!
//! Changing anything in this crate changes the ABI fingerprint, so modules
//! built against the old contract are refused and the host must restart.
//! Keep it small: the engine trait, the values that cross the boundary, the
//! snapshot and the export macro.

pub mod engine;
pub mod export;
pub mod fingerprint;
pub mod kernels;
pub mod snapshot;
pub mod tensor;

pub use engine::{
    Arg, ArgSpec, Call, Created, DeviceInfo, Engine, EngineContext, EngineError, ErrorKind,
    KernelSpec, ModuleInfo, Output, ParamSpec, ResidentInfo, ThreadSpawner,
};
pub use fingerprint::{Difference, Fingerprint};
pub use snapshot::{ImportReport, SNAPSHOT_FORMAT, Scalar, Section, Snapshot};
pub use tensor::{Buffer, DType, ShapeError, Tensor, element_count, format_shape};

/// Re-exported so `export_module!` and modules use the very `tracing` the
/// contract was fingerprinted with.
pub use tracing;

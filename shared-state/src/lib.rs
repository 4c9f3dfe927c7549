//! The kiln contract: what the host and every kernel module compile in.
//!
//! Changing anything in this crate changes the ABI fingerprint, so modules
//! built against the old contract are refused and the host must restart.
//! Keep it small: the engine trait, the values that cross the boundary, the
//! snapshot, the kernel declaration *type* and the export macro. It names no
//! kernel: kernels are declared as data under `kernels/declarations/`.

pub mod decl;
pub mod device_section;
pub mod engine;
pub mod export;
pub mod expr;
pub mod fingerprint;
pub mod mapped;
pub mod snapshot;
pub mod tensor;

pub use decl::{
    BindError, Bound, GPU_STUB_MARKER, KernelDecl, KernelSet, LaunchDecl, ParamDecl, PassDecl,
    SourceFile, TensorDecl, ToleranceDecl, TunableDecl, WorkDecl,
};
pub use device_section::{DeviceHandle, DeviceSection};
pub use engine::{
    Arg, Call, Created, DeviceInfo, Engine, EngineContext, EngineError, ErrorKind, ModuleInfo,
    Output, ResidentInfo, ThreadSpawner,
};
pub use expr::{Dims, Expr, ExprError};
pub use fingerprint::{Difference, Fingerprint};
pub use snapshot::{
    CACHE_SECTION_PREFIX, ImportReport, SNAPSHOT_FORMAT, Scalar, Section, Snapshot,
};
pub use tensor::{
    Buffer, DType, Element, Mark, ShapeError, Shared, Tensor, bf16, element_count, f16,
    format_shape,
};

/// Re-exported so `export_module!` and modules use the very `tracing` the
/// contract was fingerprinted with.
pub use tracing;

//! The kiln host library. Its folders say which side of a session a file
//! belongs to:
//!
//! - [`swap`]: the swap core, in-process: stage -> load (fingerprint) ->
//!   one engine per version on its own thread -> routed swap with the state
//!   handoff -> retire (threads joined, library closed).
//! - [`workload`]: workloads (model, file format, generator), replay,
//!   correctness, timing and the reference backend.
//! - [`supervisor`]: `kiln dev`: watch, build, history, the session loop,
//!   and the worker processes module code runs in (start, watch, restart).
//! - [`worker`]: the worker process (`kiln worker`): the engine host, the
//!   only place module code runs in a `kiln dev` session.
//! - [`control`]: driving a running `kiln dev`: keys, the control socket,
//!   `kiln ctl`.
//! - [`commands`]: the one-shot commands (`backends`, `report`, ...);
//!   [`kernel_commands`] (`kernels`, `record`, `replay`) and [`scaffold`]
//!   (`new kernel`) for declared kernels; [`machine_command`] (`machine`).
//! - [`logging`], [`process`], [`workspace`], [`units`]: shared helpers.
//!
//! Each sits in a layer and imports only its own and lower ones
//! (ARCHITECTURE.md, "Layers"; checked by harness/tests/layers.rs).

pub mod commands;
pub mod control;
pub mod kernel_commands;
pub mod logging;
pub mod machine;
pub mod machine_command;
pub mod process;
pub mod scaffold;
pub mod supervisor;
pub mod swap;
pub mod tuning;
pub mod units;
pub mod worker;
pub mod workload;
pub mod workspace;

pub use swap::engine_handle::{CallError, EngineHandle, EngineOptions};
pub use swap::load::{LoadError, LoadedModule, host_fingerprint};
pub use swap::served::{ServedModule, SwapError, SwapReport};
pub use swap::stage::{Staged, StagingDir};

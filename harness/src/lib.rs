//! The kiln host library. Its folders say which side of a session a file
//! belongs to:
//!
//! - [`swap`]: the swap core, in-process: stage -> load (fingerprint) ->
//!   one engine per version on its own thread -> routed swap with the state
//!   handoff -> retire (threads joined, library closed).
//! - [`workload`]: workloads (model, file format, generator), replay,
//!   correctness, timing and the reference backend.
//! - [`build`]: which modules exist, building one (cargo or the recorded
//!   rustc command), the build thread.
//! - [`isolation`]: the worker processes module code runs in, seen from
//!   the side that starts them (start, watch each request, checkpoint,
//!   deadlines, kill).
//! - [`history`]: a session's versions, for `kiln report`.
//! - [`chart`]: SVG charts (axes and ticks, the document, text bounds, the
//!   per-call ratio chart) for `kiln report`, the live page and the bench.
//! - [`remote`]: another machine over ssh: `kiln agent --stdio`, the
//!   workspace's mirror there, the local side (`kiln backends --on`).
//! - [`supervisor`]: `kiln dev`: watch, the session loop (lanes, swaps,
//!   replays, rollback, recovery).
//! - [`worker`]: the worker process (`kiln worker`): the engine host, the
//!   only place module code runs in a `kiln dev` session.
//! - [`control`]: driving a running `kiln dev`: keys, the control socket,
//!   `kiln ctl`.
//! - [`commands`]: the one-shot commands (`backends`, `report`, ...);
//!   [`kernel_commands`] (`kernels`, `record`, `replay`) and [`scaffold`]
//!   (`new kernel`) for declared kernels; [`machine_command`] (`machine`).
//! - [`logging`], [`events`] (the log's events with their fields,
//!   [`events::Event`], emitted with [`events::emit!`], and a reader of its
//!   JSON lines), [`process`], [`workspace`], [`units`]: shared helpers.
//!
//! Each sits in a layer and imports only its own and lower ones
//! (ARCHITECTURE.md, "Layers"; checked by harness/tests/layers.rs).

pub mod build;
pub mod chart;
pub mod commands;
pub mod control;
pub mod events;
pub mod history;
pub mod isolation;
pub mod kernel_commands;
pub mod logging;
pub mod loop_alignment;
pub mod machine;
pub mod machine_command;
pub mod process;
pub mod remote;
pub mod scaffold;
pub mod supervisor;
pub mod swap;
pub mod tuning;
pub mod ui;
pub mod units;
pub mod worker;
pub mod workload;
pub mod workspace;

pub use swap::engine_handle::{CallError, EngineHandle, EngineOptions};
pub use swap::load::{LoadError, LoadedModule, host_fingerprint};
pub use swap::served::{ServedModule, SwapError, SwapReport};
pub use swap::stage::{Staged, StagingDir};

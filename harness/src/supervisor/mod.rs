//! The supervisor: `kiln dev`'s side of a session. It watches the sources,
//! builds modules, keeps the history and the log, and drives the served
//! module through swaps, replays and rollbacks.
//!
//! - [`dev_loop`]: `kiln dev`'s options and main loop (wires the stages)
//! - [`session`]: what happens on a change, a build, a swap, a failed replay
//! - `version_change`: changes that need no cargo build of the served
//!   module (declarations, shaders, `.cu`: a re-stage), the reference
//!   module's edits, the watched workload file
//! - [`watch`], [`module_graph`]: which saves belong to which module
//! - [`module_build`], [`build_queue`]: cargo builds off the serving path;
//!   `build_provenance` says which workspace wrote a shared artifact
//! - [`history`]: the session's versions, for `kiln report`
//! - [`isolated`]: the engine in a worker process (module code never runs
//!   in the supervisor); [`worker_process`] starts and kills workers,
//!   [`worker_client`] watches each request (crash, deadline, Ctrl-C),
//!   [`checkpoint`] keeps the last good point's state in shared memory,
//!   [`deadlines`] says how long a call may take, and `recovery` restarts
//!   on the last good version
//! - `control_commands`: what keys and `kiln ctl` do to the session
//!   (status, replay, history, undo with `good_versions`, bless, switch
//!   in `switch_backend`, quit); the socket and keys are in
//!   [`crate::control`]
//! - `served_backends`: `--backends cpu,vulkan`, the other backends served
//!   beside the session's own (their workers, versions, cross-compared
//!   replays)

pub mod backend_choice;
mod build_provenance;
pub mod build_queue;
pub mod checkpoint;
mod control_commands;
pub mod deadlines;
pub mod declarations;
pub mod dev_loop;
mod direct_rustc;
mod good_versions;
pub mod history;
pub mod isolated;
pub mod memory_limit;
pub mod module_build;
pub mod module_graph;
mod recovery;
mod served_backends;
mod session;
mod session_end;
mod spinner;
mod switch_backend;
mod tune_steps;
mod version_change;
pub mod watch;
pub mod worker_client;
pub mod worker_process;

pub use dev_loop::{DevError, DevOptions, OnFail, build_now, run};

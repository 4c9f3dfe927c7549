//! The supervisor: `kiln dev`'s side of a session. It watches the sources,
//! builds modules, keeps the history and the log, and drives the served
//! module through swaps, replays and rollbacks.
//!
//! - [`dev_loop`]: `kiln dev`'s options and main loop (wires the stages)
//! - [`session`]: what happens on a change, a build, a swap, a failed replay
//! - [`watch`], [`module_graph`]: which saves belong to which module
//! - [`module_build`], [`build_queue`]: cargo builds off the serving path
//! - [`history`]: the session's versions, for `kiln report`

pub mod build_queue;
pub mod declarations;
pub mod dev_loop;
pub mod history;
pub mod module_build;
pub mod module_graph;
mod session;
mod spinner;
pub mod watch;

pub use dev_loop::{DevError, DevOptions, OnFail, build_now, run};

//! The supervisor: `kiln dev`'s side of a session. It watches the sources,
//! builds modules, keeps the history and the log, and drives each served
//! backend (a lane: `lane`) through swaps, replays and rollbacks, the same
//! way for every lane.
//!
//! - [`dev_loop`]: start-up and the loop (one `LoopEvent` at a time);
//!   `options`: what `kiln dev` takes
//! - `session`: the life cycle of every lane (change, build, swap, replay,
//!   verdict, rollback), with `plan` (routing and verdicts as plain
//!   functions) and `recovery` (the one place a worker's failure is
//!   decided)
//! - `version_change`: changes that need no cargo build of the served
//!   module (declarations, shaders, `.cu`: a re-stage), the reference
//!   module's edits, the watched workload file
//! - [`watch`]: which saves belong to which module (with
//!   [`crate::build::module_graph`]); builds run off the serving path in
//!   [`crate::build`]
//! - the session's versions are kept in [`crate::history`]
//! - `kept_state`: each lane's last good point kept on disk behind the
//!   session, and what a start does with the one a previous session left
//! - the engine runs in a worker process ([`crate::isolation`]: module code
//!   never runs in the supervisor); `recovery` restarts a lane on its last
//!   good version
//! - `control_commands`: what keys and `kiln ctl` do to the session
//!   (status, replay, history, undo with `good_versions`, bless, switch
//!   in `switch_backend`, quit); the socket and keys are in
//!   [`crate::control`]
//! - `served_backends`: `--backends cpu,vulkan`, the other backends served
//!   beside the session's own (their workers, versions, cross-compared
//!   replays)

pub mod backend_choice;
mod backends;
mod control_commands;
mod control_state;
pub mod declarations;
pub mod dev_loop;
mod good_versions;
mod kept_state;
mod lane;
mod options;
mod plan;
mod recovery;
mod served_backends;
mod session;
mod session_end;
mod spinner;
mod switch_backend;
mod sync_build;
mod tune_steps;
mod version_change;
pub mod watch;

pub use dev_loop::run;
pub use options::{DevError, DevOptions, OnFail};
pub use sync_build::{build_at_start, build_now};

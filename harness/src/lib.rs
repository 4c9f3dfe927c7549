//! The kiln host library: everything between "a module artifact exists"
//! and "its new version serves with the old one's state", plus the dev loop
//! and workload replay built on it.
//!
//! Pipeline: [`stage`] (private versioned copy) -> [`load`] (dlopen,
//! fingerprint check, entry points) -> [`engine_handle`] (one engine per
//! version on its own thread) -> [`served`] (routing and the state handoff)
//! -> retire (drop on the engine thread, join threads, close the library).
//! kiln host library

pub mod build_queue;
pub mod commands;
pub mod compare;
pub mod dev;
pub mod engine_handle;
pub mod history;
pub mod load;
pub mod logging;
pub mod module_build;
pub mod module_graph;
pub mod process;
pub mod reference;
pub mod replay;
pub mod served;
pub mod snapshot_file;
pub mod stage;
pub mod timing;
pub mod version_threads;
pub mod watch;
pub mod workload;
pub mod workspace;

pub use engine_handle::{CallError, EngineHandle, EngineOptions};
pub use load::{LoadError, LoadedModule, host_fingerprint};
pub use served::{ServedModule, SwapError, SwapReport};
pub use stage::{Staged, StagingDir};

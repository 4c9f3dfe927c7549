//! kiln host library
pub mod build_queue;
pub mod module_build;
pub mod module_graph;
pub mod watch;

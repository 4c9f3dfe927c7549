//! Building kernel modules, off the serving path: which modules exist and
//! which paths they are built from ([`module_graph`]), one build of a
//! module through cargo or, when provably the same, the recorded rustc
//! command ([`module_build`], [`direct_rustc`]), the provenance of an
//! artifact in a shared target dir ([`provenance`]), and the build thread
//! that coalesces saves made during a build ([`queue`]).
//!
//! Used by `kiln dev`, the one-shot commands that stage a backend, the
//! test support and the bench: there is one way to build a module.

pub mod direct_rustc;
pub mod module_build;
pub mod module_graph;
pub mod outcome;
pub mod provenance;
pub mod queue;

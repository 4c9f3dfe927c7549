//! kiln host library

pub mod compare;
pub mod reference;
pub mod timing;
pub mod workload;

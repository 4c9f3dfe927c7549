//! kiln host library

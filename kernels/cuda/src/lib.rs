//! kiln kernel module for the cuda backend (not yet written).

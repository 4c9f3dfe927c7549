//! kiln kernel module for the vulkan backend (not yet written).

//! In-process tests of the engine on a real Vulkan device (lavapipe where
//! there is no GPU). Tests that need a device print
//! `skipped: no Vulkan device (<reason>)` and pass when there is none,
//! unless `KILN_REQUIRE_VULKAN=1`, where they fail.

mod support;

mod device_choice;
mod drop_log;
mod kernels;
mod low_precision;
mod pipeline_cache;
mod residents;
mod sources;
mod unavailable;

//! Tests of the CUDA module. Those that need NVRTC or a GPU print
//! `skipped: ...` and pass when it is missing, unless `KILN_REQUIRE_NVRTC=1`
//! or `KILN_REQUIRE_CUDA=1` says it must be there.

mod gpu;
mod low_precision_gpu;
mod nvrtc_compile;
mod ptx_cache;
mod support;
mod unavailable;

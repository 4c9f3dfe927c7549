//! Whether the CUDA driver and NVRTC can be used here, and driver errors as
//! clear `EngineError`s.
//!
//! cudarc loads `libcuda.so.1` and `libnvrtc.so.13` on first use and panics
//! inside its loader when a library is missing, so every entry point checks
//! for the library first (and runs inside the module's panic guard anyway).

use cudarc::driver::DriverError;
use cudarc::driver::sys::cudaError_enum as CuResult;
use shared_state::EngineError;

/// The driver library cudarc looks for first on Linux.
pub const DRIVER_LIBRARY: &str = "libcuda.so.1";
/// The NVRTC library of the CUDA 13 bindings (`cuda-13000`).
pub const NVRTC_LIBRARY: &str = "libnvrtc.so.13";

/// Fails with `no CUDA driver: libcuda.so.1 not found` when cudarc would not
/// find the driver library.
pub fn require_driver() -> Result<(), EngineError> {
    // SAFETY: `is_culib_present` only tries `dlopen` on cudarc's candidate
    // names and closes what it opened; loading the driver library runs no
    // code of ours and the driver's initialisers are safe to run.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(EngineError::unavailable(format!(
            "no CUDA driver: {DRIVER_LIBRARY} not found"
        )))
    }
}

/// Fails with a clear message when cudarc would not find NVRTC.
pub fn require_nvrtc() -> Result<(), EngineError> {
    // SAFETY: as for `require_driver`: a `dlopen`/`dlclose` of cudarc's
    // candidate names for NVRTC.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(EngineError::unavailable(format!(
            "no NVRTC: {NVRTC_LIBRARY} not found (install the nvidia-cuda-nvrtc wheel, \
             see scripts/install-nvrtc.sh)"
        )))
    }
}

/// The CUDA name of a driver error code (`CUDA_ERROR_NO_DEVICE`), without
/// asking the driver (a stub or broken driver may lack `cuGetErrorName`).
pub fn error_code_name(err: &DriverError) -> String {
    format!("{:?}", err.0)
}

/// A driver error during start-up: `CUDA_ERROR_NO_DEVICE` becomes
/// `Unavailable` with `no CUDA device`, anything else names what was being
/// done and the CUDA error.
pub fn startup_error(doing: &str, err: DriverError) -> EngineError {
    match err.0 {
        CuResult::CUDA_ERROR_NO_DEVICE => {
            EngineError::unavailable("no CUDA device (CUDA_ERROR_NO_DEVICE)")
        }
        CuResult::CUDA_ERROR_INVALID_DEVICE => EngineError::unavailable(format!(
            "{doing}: no such CUDA device (CUDA_ERROR_INVALID_DEVICE)"
        )),
        _ => EngineError::unavailable(format!("{doing}: {}", error_code_name(&err))),
    }
}

/// A driver error after start-up (a launch, a copy).
pub fn driver_error(doing: &str, err: DriverError) -> EngineError {
    EngineError::internal(format!("CUDA: {doing}: {}", error_code_name(&err)))
}

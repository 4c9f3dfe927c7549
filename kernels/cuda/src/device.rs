//! Listing CUDA devices for `kiln backends`.

use cudarc::driver::result;
use cudarc::driver::sys::{self, CUdevice_attribute};
use shared_state::{DeviceInfo, EngineError};

use crate::availability::{self, startup_error};

/// What the module reports about one device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSummary {
    pub index: usize,
    pub name: String,
    /// Compute capability `(major, minor)`.
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
}

/// The driver's CUDA version, `(major, minor)` (13.0 for the 580 drivers).
pub fn driver_version() -> Result<(i32, i32), EngineError> {
    availability::require_driver()?;
    let mut version = 0;
    // SAFETY: the driver library is present (checked above);
    // `cuDriverGetVersion` writes one int through a valid pointer and needs
    // no `cuInit`.
    let status = unsafe { sys::cuDriverGetVersion(&mut version) };
    status
        .result()
        .map_err(|e| startup_error("cuDriverGetVersion", e))?;
    Ok((version / 1000, (version % 1000) / 10))
}

/// Describes device `index` (the driver must be initialised).
pub fn describe(index: usize) -> Result<DeviceSummary, EngineError> {
    let ordinal = i32::try_from(index)
        .map_err(|_| EngineError::bad_call(format!("CUDA device index {index} is too large")))?;
    let dev = result::device::get(ordinal)
        .map_err(|e| startup_error(&format!("CUDA device {index}"), e))?;
    let name = result::device::get_name(dev)
        .map_err(|e| startup_error(&format!("name of CUDA device {index}"), e))?;
    let attr = |a: CUdevice_attribute| {
        // SAFETY: `dev` is a device handle the driver just returned.
        unsafe { result::device::get_attribute(dev, a) }
            .map_err(|e| startup_error(&format!("attribute of CUDA device {index}"), e))
    };
    let major = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    // SAFETY: as above.
    let total_memory = unsafe { result::device::total_mem(dev) }
        .map_err(|e| startup_error(&format!("memory of CUDA device {index}"), e))?;
    Ok(DeviceSummary {
        index,
        name,
        compute_capability: (major, minor),
        total_memory,
    })
}

/// Every CUDA device here, or an `Unavailable` error saying why none: no
/// driver library, or no device. Retains no context.
pub fn probe_devices() -> Result<Vec<DeviceInfo>, EngineError> {
    availability::require_driver()?;
    result::init().map_err(|e| startup_error("cuInit", e))?;
    let (major, minor) = driver_version()?;
    let count = result::device::get_count().map_err(|e| startup_error("cuDeviceGetCount", e))?;
    if count <= 0 {
        return Err(EngineError::unavailable(
            "no CUDA device (the driver lists none)",
        ));
    }
    (0..count as usize)
        .map(|index| {
            let d = describe(index)?;
            Ok(DeviceInfo {
                index,
                name: d.name,
                kind: "discrete-gpu".to_string(),
                driver: format!(
                    "NVIDIA CUDA driver {major}.{minor}, compute capability {}.{}, {} MiB",
                    d.compute_capability.0,
                    d.compute_capability.1,
                    d.total_memory >> 20
                ),
                api: format!("CUDA {major}.{minor}"),
            })
        })
        .collect()
}

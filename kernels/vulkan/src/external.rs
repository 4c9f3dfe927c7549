//! Device memory handed from one engine to the next without a copy: every
//! buffer is allocated exportable as an opaque fd
//! (`VK_KHR_external_memory_fd`) where the device can both export and
//! import storage buffers that way; a swap exports each resident's memory
//! as an fd and the next engine (its own `VkDevice` on the same physical
//! device and driver) imports it. The driver keeps the memory alive while
//! either side still holds it.

use std::os::fd::{FromRawFd, OwnedFd};

use ash::vk;

/// The handle type used for handoffs.
pub const HANDLE: vk::ExternalMemoryHandleTypeFlags = vk::ExternalMemoryHandleTypeFlags::OPAQUE_FD;

/// Usage of every buffer (see `Memory::create`).
pub const USAGE: vk::BufferUsageFlags = vk::BufferUsageFlags::from_raw(
    vk::BufferUsageFlags::STORAGE_BUFFER.as_raw()
        | vk::BufferUsageFlags::UNIFORM_BUFFER.as_raw()
        | vk::BufferUsageFlags::TRANSFER_SRC.as_raw()
        | vk::BufferUsageFlags::TRANSFER_DST.as_raw(),
);

/// The device extension to enable where [`supported`].
pub const EXTENSION: &std::ffi::CStr = ash::khr::external_memory_fd::NAME;

/// Whether `physical` has the extension (`api`: the lower of the
/// instance's and the device's versions, 1.1 or later) and can both
/// export and import storage buffers as opaque fds without dedicated
/// allocations, and export again what it imported.
pub fn supported(instance: &ash::Instance, physical: vk::PhysicalDevice, api: u32) -> bool {
    if api < vk::API_VERSION_1_1 {
        return false;
    }
    // SAFETY: `physical` belongs to the live `instance`.
    let has_extension = unsafe { instance.enumerate_device_extension_properties(physical) }
        .map(|all| {
            all.iter()
                .any(|e| e.extension_name_as_c_str() == Ok(EXTENSION))
        })
        .unwrap_or(false);
    if !has_extension {
        return false;
    }
    let info = vk::PhysicalDeviceExternalBufferInfo::default()
        .usage(USAGE)
        .handle_type(HANDLE);
    let mut out = vk::ExternalBufferProperties::default();
    // SAFETY: `physical` belongs to the live Vulkan 1.1+ instance; both
    // structs outlive the call.
    unsafe { instance.get_physical_device_external_buffer_properties(physical, &info, &mut out) };
    let properties = out.external_memory_properties;
    let features = properties.external_memory_features;
    // Imported memory is allocated exportable again (`Memory::import`), so
    // that a version which came in by a handoff hands over in turn: the
    // driver must allow exporting memory it imported.
    features.contains(
        vk::ExternalMemoryFeatureFlags::EXPORTABLE | vk::ExternalMemoryFeatureFlags::IMPORTABLE,
    ) && !features.contains(vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY)
        && properties
            .export_from_imported_handle_types
            .contains(HANDLE)
}

/// The device's and the driver's UUIDs, hex: what imported memory must have
/// been exported by.
pub fn identity(instance: &ash::Instance, physical: vk::PhysicalDevice) -> String {
    let mut id = vk::PhysicalDeviceIDProperties::default();
    let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut id);
    // SAFETY: `physical` belongs to the live Vulkan 1.1+ instance (checked
    // by `supported` first); the chained struct outlives the call.
    unsafe { instance.get_physical_device_properties2(physical, &mut props) };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "device={} driver={}",
        hex(&id.device_uuid),
        hex(&id.driver_uuid)
    )
}

/// Exports `memory` as a new opaque fd, owned by the caller.
pub fn export_fd(
    fd_device: &ash::khr::external_memory_fd::Device,
    memory: vk::DeviceMemory,
) -> Result<OwnedFd, vk::Result> {
    let info = vk::MemoryGetFdInfoKHR::default()
        .memory(memory)
        .handle_type(HANDLE);
    // SAFETY: `memory` is live memory of this device, allocated exportable
    // as `HANDLE` (every allocation is, where the device supports it).
    let fd = unsafe { fd_device.get_memory_fd(&info) }?;
    if fd < 0 {
        return Err(vk::Result::ERROR_INVALID_EXTERNAL_HANDLE);
    }
    // SAFETY: vkGetMemoryFdKHR returns a new fd (checked valid above) that
    // the caller owns and nothing else closes.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

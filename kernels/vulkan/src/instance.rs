//! Loading the Vulkan loader, creating an instance and finding the devices
//! that can run compute work, each failure turned into an
//! [`ErrorKind::Unavailable`](shared_state::ErrorKind::Unavailable) error
//! that says why.

use std::ffi::CStr;

use ash::vk;
use shared_state::{DeviceInfo, EngineError};

/// The loader library `ash::Entry::load` opens on Linux.
const LOADER_LIBRARY: &str = "libvulkan.so.1";

/// Highest Vulkan version the module asks for; everything it uses is 1.0
/// core plus (optionally) 1.1/1.2 properties queries.
const WANTED_API: u32 = vk::API_VERSION_1_3;

/// A Vulkan physical device with a compute queue, as the module sees it.
#[derive(Clone)]
pub struct ComputeDevice {
    pub physical: vk::PhysicalDevice,
    /// A queue family with `COMPUTE` (the first one found).
    pub queue_family: u32,
    pub name: String,
    pub device_type: vk::PhysicalDeviceType,
    /// Driver name and info from `VkPhysicalDeviceDriverProperties`.
    pub driver: String,
    /// `1.3.230`-style API version of the device.
    pub api: String,
}

impl ComputeDevice {
    /// `software`, `discrete-gpu`, ... (the words `kiln backends` shows).
    pub fn kind(&self) -> &'static str {
        match self.device_type {
            vk::PhysicalDeviceType::DISCRETE_GPU => "discrete-gpu",
            vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated-gpu",
            vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual-gpu",
            vk::PhysicalDeviceType::CPU => "software",
            _ => "other",
        }
    }

    /// Lower is preferred when no device is asked for: real GPUs first,
    /// software rasterizers last.
    pub fn preference(&self) -> u8 {
        match self.device_type {
            vk::PhysicalDeviceType::DISCRETE_GPU => 0,
            vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
            vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
            vk::PhysicalDeviceType::CPU => 4,
            _ => 3,
        }
    }

    pub fn info(&self, index: usize) -> DeviceInfo {
        DeviceInfo {
            index,
            name: self.name.clone(),
            kind: self.kind().to_string(),
            driver: self.driver.clone(),
            api: format!("Vulkan {}", self.api),
        }
    }
}

/// Opens the Vulkan loader library at run time.
pub fn load_entry() -> Result<ash::Entry, EngineError> {
    // SAFETY: loading the system Vulkan loader runs its initialisers; the
    // loader is a well-behaved C library, and the returned `Entry` keeps the
    // library open for as long as any Vulkan object made through it lives
    // (the engine drops the entry last).
    unsafe { ash::Entry::load() }.map_err(|e| {
        EngineError::unavailable(format!(
            "no Vulkan loader: {LOADER_LIBRARY} not found or not loadable ({e}); \
             install the Vulkan loader (Debian: libvulkan1) and a driver \
             (a GPU driver, or mesa-vulkan-drivers for the lavapipe software device)"
        ))
    })
}

/// The environment variables that steer the loader's driver search, for
/// error messages.
fn driver_env() -> String {
    let set: Vec<String> = ["VK_DRIVER_FILES", "VK_ICD_FILENAMES", "VK_ADD_DRIVER_FILES"]
        .iter()
        .filter_map(|k| match std::env::var(k) {
            Ok(v) if !v.is_empty() => Some(format!("{k}={v}")),
            _ => None,
        })
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!(" (driver search overridden by {})", set.join(", "))
    }
}

/// Creates an instance with the highest API version both the loader and
/// this module know. Returns it with the version it was created with.
pub fn create_instance(entry: &ash::Entry) -> Result<(ash::Instance, u32), EngineError> {
    // SAFETY: `entry` holds a loaded Vulkan loader; the query has no
    // preconditions beyond that.
    let loader_version = match unsafe { entry.try_enumerate_instance_version() } {
        Ok(Some(v)) => v,
        Ok(None) => vk::API_VERSION_1_0,
        Err(e) => {
            return Err(EngineError::unavailable(format!(
                "the Vulkan loader cannot report its version: {e:?}"
            )));
        }
    };
    let api_version = loader_version.min(WANTED_API);
    let app = vk::ApplicationInfo::default()
        .application_name(c"kiln")
        .engine_name(c"kiln kernel-vulkan")
        .api_version(api_version);
    let create_info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: `create_info` and `app` are valid for the call and name no
    // layers or extensions; the instance is destroyed by its owner before
    // `entry` is dropped.
    match unsafe { entry.create_instance(&create_info, None) } {
        Ok(instance) => Ok((instance, api_version)),
        Err(vk::Result::ERROR_INCOMPATIBLE_DRIVER) => Err(EngineError::unavailable(format!(
            "no Vulkan driver: the loader found no usable ICD, vkCreateInstance \
             failed with ERROR_INCOMPATIBLE_DRIVER{} (install a GPU driver, or \
             mesa-vulkan-drivers for the lavapipe software device)",
            driver_env()
        ))),
        Err(e) => Err(EngineError::unavailable(format!(
            "Vulkan instance creation failed: vkCreateInstance returned {e:?}{}",
            driver_env()
        ))),
    }
}

fn c_text(text: Result<&CStr, std::ffi::FromBytesUntilNulError>) -> String {
    text.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".to_string())
}

fn version_text(v: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(v),
        vk::api_version_minor(v),
        vk::api_version_patch(v)
    )
}

/// Every physical device with a compute queue, in the loader's order.
pub fn compute_devices(
    instance: &ash::Instance,
    instance_api: u32,
) -> Result<Vec<ComputeDevice>, EngineError> {
    // SAFETY: `instance` is a live instance.
    let physicals = unsafe { instance.enumerate_physical_devices() }.map_err(|e| {
        EngineError::unavailable(format!("vkEnumeratePhysicalDevices failed: {e:?}"))
    })?;
    let mut devices = Vec::new();
    for physical in physicals {
        // SAFETY: `physical` was just enumerated from this live instance.
        let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
        let Some(queue_family) = families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE) && f.queue_count > 0)
        else {
            continue;
        };
        // SAFETY: as above.
        let props = unsafe { instance.get_physical_device_properties(physical) };
        devices.push(ComputeDevice {
            physical,
            queue_family: queue_family as u32,
            name: c_text(props.device_name_as_c_str()),
            device_type: props.device_type,
            driver: driver_text(instance, instance_api, physical, props.api_version),
            api: version_text(props.api_version),
        });
    }
    Ok(devices)
}

/// `NAME INFO` from `VkPhysicalDeviceDriverProperties`, where the device
/// has them (Vulkan 1.2, or `VK_KHR_driver_properties`).
fn driver_text(
    instance: &ash::Instance,
    instance_api: u32,
    physical: vk::PhysicalDevice,
    device_api: u32,
) -> String {
    if instance_api < vk::API_VERSION_1_1 {
        return "unknown driver (Vulkan 1.0 loader)".to_string();
    }
    let has_extension = || {
        // SAFETY: `physical` belongs to this live instance.
        unsafe { instance.enumerate_device_extension_properties(physical) }
            .unwrap_or_default()
            .iter()
            .any(|e| e.extension_name_as_c_str() == Ok(c"VK_KHR_driver_properties"))
    };
    if device_api < vk::API_VERSION_1_2 && !has_extension() {
        return "unknown driver (no VkPhysicalDeviceDriverProperties)".to_string();
    }
    let mut driver = vk::PhysicalDeviceDriverProperties::default();
    let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver);
    // SAFETY: the instance is at least 1.1 (core vkGetPhysicalDeviceProperties2)
    // and the device supports the chained driver-properties struct (1.2 or
    // the extension, checked above); both structs outlive the call.
    unsafe { instance.get_physical_device_properties2(physical, &mut props2) };
    let name = c_text(driver.driver_name_as_c_str());
    let info = c_text(driver.driver_info_as_c_str());
    if info.is_empty() {
        name
    } else {
        format!("{name} {info}")
    }
}

/// Lists the compute devices, with everything needed to open one: the
/// loaded entry and instance. The caller owns the instance.
pub struct Discovery {
    pub entry: ash::Entry,
    pub instance: ash::Instance,
    /// The instance's API version.
    pub api: u32,
    pub devices: Vec<ComputeDevice>,
}

/// Loads the loader, creates an instance and lists compute devices. Fails
/// with an `Unavailable` error that says which step found nothing.
pub fn discover() -> Result<Discovery, EngineError> {
    let entry = load_entry()?;
    let (instance, api) = create_instance(&entry)?;
    let devices = match compute_devices(&instance, api) {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => {
            // SAFETY: no object was created from the instance.
            unsafe { instance.destroy_instance(None) };
            return Err(EngineError::unavailable(format!(
                "no Vulkan device with a compute queue: the driver(s) loaded but \
                 report no compute-capable physical device{}",
                driver_env()
            )));
        }
        Err(e) => {
            // SAFETY: no object was created from the instance.
            unsafe { instance.destroy_instance(None) };
            return Err(e);
        }
    };
    Ok(Discovery {
        entry,
        instance,
        api,
        devices,
    })
}

/// The module's `probe`: every Vulkan device with a compute queue, or why
/// there is none.
pub fn probe_devices() -> Result<Vec<DeviceInfo>, EngineError> {
    let found = discover()?;
    let infos = found
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| d.info(i))
        .collect();
    // SAFETY: nothing was created from the instance; `entry` outlives it.
    unsafe { found.instance.destroy_instance(None) };
    Ok(infos)
}

/// Picks the device named by the `device` option (an index into the
/// compute-device list, or a case-insensitive name substring), or by
/// default the most preferred one (first on ties).
pub fn choose_device(
    devices: &[ComputeDevice],
    wanted: Option<&str>,
) -> Result<usize, EngineError> {
    let list = || {
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{i}: {} [{}]", d.name, d.kind()))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let Some(wanted) = wanted.map(str::trim) else {
        return devices
            .iter()
            .enumerate()
            .min_by_key(|(i, d)| (d.preference(), *i))
            .map(|(i, _)| i)
            .ok_or_else(|| EngineError::unavailable("no Vulkan device with a compute queue"));
    };
    if let Ok(index) = wanted.parse::<usize>() {
        return if index < devices.len() {
            Ok(index)
        } else {
            Err(EngineError::unavailable(format!(
                "device option {index} is out of range: devices are {}",
                list()
            )))
        };
    }
    let needle = wanted.to_lowercase();
    devices
        .iter()
        .position(|d| d.name.to_lowercase().contains(&needle))
        .ok_or_else(|| {
            EngineError::unavailable(format!(
                "no Vulkan device whose name contains {wanted:?}: devices are {}",
                list()
            ))
        })
}

//! `--backend auto`: which backend this machine should serve, decided from
//! a cheap probe of its drivers, before any kernel module is built.
//!
//! Order: CUDA where a driver reports a device; else a Vulkan GPU (discrete
//! before integrated before virtual); else the CPU module. A Vulkan device
//! that is itself a CPU implementation (lavapipe, SwiftShader) is never
//! chosen: lavapipe ran every bundled kernel 10-90x slower than the CPU
//! module in this project's measurements. Every backend not chosen gets its
//! reason.
//!
//! The probe talks to drivers (libcuda, the Vulkan loader and its ICDs), so
//! it runs in a child process (`kiln probe-devices`, the same binary): a
//! driver that crashes costs the probe, never the session. It needs no
//! kernel module: it asks the drivers directly.

use std::process::Command;

use crate::events::{self, emit};
use serde::{Deserialize, Serialize};

/// What kind of device a Vulkan driver says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GpuKind {
    Discrete,
    Integrated,
    Virtual,
    /// A CPU implementation (lavapipe): never chosen automatically.
    Cpu,
    Other,
}

impl GpuKind {
    fn word(self) -> &'static str {
        match self {
            GpuKind::Discrete => "discrete GPU",
            GpuKind::Integrated => "integrated GPU",
            GpuKind::Virtual => "virtual GPU",
            GpuKind::Cpu => "CPU implementation",
            GpuKind::Other => "other device",
        }
    }
}

/// One Vulkan physical device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VulkanDevice {
    pub name: String,
    pub kind: GpuKind,
}

/// What the drivers said: the devices, or why there are none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// CUDA device names, or why CUDA is not usable.
    pub cuda: Result<Vec<String>, String>,
    /// Vulkan devices, or why Vulkan is not usable.
    pub vulkan: Result<Vec<VulkanDevice>, String>,
}

/// The backend `auto` chose, why, and why not each other one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub backend: String,
    pub why: String,
    /// (backend, reason it was not chosen).
    pub not_chosen: Vec<(String, String)>,
}

impl Choice {
    /// One log line: `auto: cpu (...); not cuda: ...; not vulkan: ...`.
    pub fn describe(&self) -> String {
        let mut out = format!("--backend auto chose {}: {}", self.backend, self.why);
        for (backend, why) in &self.not_chosen {
            out.push_str(&format!("; not {backend}: {why}"));
        }
        out
    }
}

const LAVAPIPE_NOTE: &str =
    "CPU implementations of Vulkan ran the bundled kernels 10-90x slower than the CPU module";

/// Decides from `probe`, among the backends that have a module (`have`,
/// e.g. `["cpu", "cuda", "vulkan"]`).
pub fn choose(probe: &Probe, have: &[&str]) -> Result<Choice, String> {
    let has = |b: &str| have.contains(&b);
    let mut not_chosen: Vec<(String, String)> = Vec::new();
    let mut chosen: Option<(String, String)> = None;

    // CUDA.
    let cuda = match (&probe.cuda, has("cuda")) {
        (_, false) => Err("no kernel module for it under kernels/".to_string()),
        (Ok(devices), true) if !devices.is_empty() => Ok(format!(
            "CUDA device {} ({} found)",
            devices[0],
            devices.len()
        )),
        (Ok(_), true) => Err("the CUDA driver reports no device".to_string()),
        (Err(why), true) => Err(why.clone()),
    };
    match cuda {
        Ok(why) => chosen = Some(("cuda".into(), why)),
        Err(why) => not_chosen.push(("cuda".into(), why)),
    }

    // Vulkan: the best GPU, never a CPU implementation.
    let vulkan = match (&probe.vulkan, has("vulkan")) {
        (_, false) => Err("no kernel module for it under kernels/".to_string()),
        (Err(why), true) => Err(why.clone()),
        (Ok(devices), true) => {
            let best = devices
                .iter()
                .filter(|d| {
                    matches!(
                        d.kind,
                        GpuKind::Discrete | GpuKind::Integrated | GpuKind::Virtual
                    )
                })
                .min_by_key(|d| d.kind);
            match best {
                Some(d) => Ok(format!("Vulkan {} {}", d.kind.word(), d.name)),
                None if devices.is_empty() => Err("the Vulkan loader found no device".into()),
                None => Err(format!(
                    "no GPU, only {} ({LAVAPIPE_NOTE}; ask for it with --backend vulkan)",
                    devices
                        .iter()
                        .map(|d| format!("{} [{}]", d.name, d.kind.word()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    };
    match (vulkan, &chosen) {
        (Ok(what), None) => chosen = Some(("vulkan".into(), what)),
        (Ok(what), Some(_)) => {
            not_chosen.push(("vulkan".into(), format!("{what}, but CUDA comes first")))
        }
        (Err(why), _) => not_chosen.push(("vulkan".into(), why)),
    }

    // The CPU module.
    match (&chosen, has("cpu")) {
        (None, true) => chosen = Some(("cpu".into(), "no usable GPU backend".into())),
        (None, false) => {
            return Err(format!(
                "--backend auto: no usable backend (no kernels/cpu module, and {})",
                not_chosen
                    .iter()
                    .map(|(b, w)| format!("{b}: {w}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        (Some((gpu, _)), true) => {
            not_chosen.push(("cpu".into(), format!("{gpu} comes first")));
        }
        (Some(_), false) => {}
    }
    let (backend, why) = chosen.expect("set above or returned");
    Ok(Choice {
        backend,
        why,
        not_chosen,
    })
}

/// `auto` resolved among `root`'s kernel modules (the choice is logged);
/// any other name as it is.
pub fn resolve(root: &std::path::Path, backend: &str) -> Result<String, String> {
    if backend != "auto" {
        return Ok(backend.to_string());
    }
    let graph =
        crate::build::module_graph::ModuleGraph::discover(root).map_err(|e| e.to_string())?;
    choose_among(&graph)
}

/// `--backend auto` among the modules of `graph`: probes the drivers (in a
/// child process, no module built) and logs what it chose and why not the
/// others.
pub fn choose_among(graph: &crate::build::module_graph::ModuleGraph) -> Result<String, String> {
    let have: Vec<&str> = graph.modules().iter().map(|m| m.backend.as_str()).collect();
    let choice = choose(&probe_in_child(), &have)?;
    emit!(
        tracing::Level::INFO,
        events::BackendChosen {
            backend: choice.backend.to_string(),
        },
        "{}",
        choice.describe()
    );
    Ok(choice.backend)
}

/// Whether `backend` can run here, as far as the cheap probe tells
/// (`Err` with the reason when it surely cannot). Backends the probe does
/// not know (cpu, a user's own) are assumed to run; loading them tells.
pub fn can_run(probe: &Probe, backend: &str) -> Result<(), String> {
    match backend {
        "cuda" => match &probe.cuda {
            Ok(d) if !d.is_empty() => Ok(()),
            Ok(_) => Err("the CUDA driver reports no device".into()),
            Err(why) => Err(why.clone()),
        },
        "vulkan" => match &probe.vulkan {
            Ok(d) if !d.is_empty() => Ok(()),
            Ok(_) => Err("the Vulkan loader found no device".into()),
            Err(why) => Err(why.clone()),
        },
        _ => Ok(()),
    }
}

/// Probes in a child process (this binary's `probe-devices`); a child that
/// fails or crashes is a probe saying nothing is usable, with its reason.
pub fn probe_in_child() -> Probe {
    let failed = |why: String| Probe {
        cuda: Err(why.clone()),
        vulkan: Err(why),
    };
    let output = match Command::new("/proc/self/exe").arg("probe-devices").output() {
        Ok(o) => o,
        Err(e) => return failed(format!("cannot run the device probe: {e}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return failed(format!(
            "the device probe failed ({}): {}",
            output.status,
            stderr.lines().last().unwrap_or("")
        ));
    }
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| failed(format!("the device probe's answer is unreadable: {e}")))
}

/// `kiln probe-devices`: probes here and prints the result as JSON.
pub fn print_probe() {
    let probe = Probe {
        cuda: probe_cuda(),
        vulkan: probe_vulkan(),
    };
    println!(
        "{}",
        serde_json::to_string(&probe).unwrap_or_else(|_| "{}".into())
    );
}

/// Asks libcuda for its devices (the driver API: cuInit, cuDeviceGetCount,
/// cuDeviceGetName). No libcuda: "no CUDA driver".
fn probe_cuda() -> Result<Vec<String>, String> {
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Count = unsafe extern "C" fn(*mut i32) -> i32;
    type Get = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type Name = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    // SAFETY: loading the system's CUDA driver library runs its
    // initialisers; this is a short-lived probe process of its own.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .map_err(|_| "no CUDA driver (libcuda.so.1 not found)".to_string())?;
    // SAFETY: the symbols have these signatures in the CUDA driver API
    // (cuda.h); the library stays loaded while they are used.
    unsafe {
        let init: libloading::Symbol<Init> = lib.get(b"cuInit\0").map_err(|e| e.to_string())?;
        let count: libloading::Symbol<Count> =
            lib.get(b"cuDeviceGetCount\0").map_err(|e| e.to_string())?;
        let get: libloading::Symbol<Get> = lib.get(b"cuDeviceGet\0").map_err(|e| e.to_string())?;
        let name: libloading::Symbol<Name> =
            lib.get(b"cuDeviceGetName\0").map_err(|e| e.to_string())?;
        let rc = init(0);
        if rc != 0 {
            return Err(format!("the CUDA driver did not start (cuInit error {rc})"));
        }
        let mut n = 0i32;
        let rc = count(&mut n);
        if rc != 0 {
            return Err(format!("cuDeviceGetCount error {rc}"));
        }
        let mut names = Vec::new();
        for i in 0..n {
            let mut device = 0i32;
            let mut buf = [0 as std::ffi::c_char; 256];
            if get(&mut device, i) == 0 && name(buf.as_mut_ptr(), 255, device) == 0 {
                names.push(
                    std::ffi::CStr::from_ptr(buf.as_ptr())
                        .to_string_lossy()
                        .into_owned(),
                );
            } else {
                names.push(format!("device {i}"));
            }
        }
        Ok(names)
    }
}

/// Asks the Vulkan loader for its physical devices and their types.
fn probe_vulkan() -> Result<Vec<VulkanDevice>, String> {
    use ash::vk;
    // SAFETY: loads the system's Vulkan loader; this probe process is the
    // only user of it, and the entry outlives the instance made from it.
    let entry = unsafe { ash::Entry::load() }
        .map_err(|e| format!("no Vulkan loader (libvulkan.so.1): {e}"))?;
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_0);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: `info` and `app` live through the call.
    let instance = unsafe { entry.create_instance(&info, None) }.map_err(|e| match e {
        vk::Result::ERROR_INCOMPATIBLE_DRIVER => "no Vulkan driver (ICD) installed".to_string(),
        other => format!("vkCreateInstance failed: {other}"),
    })?;
    // SAFETY: the instance is alive; it is destroyed once, below, after its
    // last use.
    let devices = unsafe {
        let listed = instance.enumerate_physical_devices();
        let devices = listed.map(|physical| {
            physical
                .iter()
                .map(|&p| {
                    let props = instance.get_physical_device_properties(p);
                    let name = props
                        .device_name_as_c_str()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let kind = match props.device_type {
                        vk::PhysicalDeviceType::DISCRETE_GPU => GpuKind::Discrete,
                        vk::PhysicalDeviceType::INTEGRATED_GPU => GpuKind::Integrated,
                        vk::PhysicalDeviceType::VIRTUAL_GPU => GpuKind::Virtual,
                        vk::PhysicalDeviceType::CPU => GpuKind::Cpu,
                        _ => GpuKind::Other,
                    };
                    VulkanDevice { name, kind }
                })
                .collect::<Vec<_>>()
        });
        instance.destroy_instance(None);
        devices
    };
    devices.map_err(|e| format!("vkEnumeratePhysicalDevices failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [&str; 3] = ["cpu", "cuda", "vulkan"];

    fn gpu(name: &str, kind: GpuKind) -> VulkanDevice {
        VulkanDevice {
            name: name.into(),
            kind,
        }
    }

    fn reason<'a>(c: &'a Choice, backend: &str) -> &'a str {
        &c.not_chosen
            .iter()
            .find(|(b, _)| b == backend)
            .unwrap_or_else(|| panic!("no reason for {backend}: {c:?}"))
            .1
    }

    #[test]
    fn cuda_comes_first_when_a_device_is_there() {
        let probe = Probe {
            cuda: Ok(vec!["NVIDIA H200".into()]),
            vulkan: Ok(vec![gpu("NVIDIA H200", GpuKind::Discrete)]),
        };
        let c = choose(&probe, &ALL).unwrap();
        assert_eq!(c.backend, "cuda");
        assert!(reason(&c, "vulkan").contains("CUDA comes first"), "{c:?}");
        assert!(reason(&c, "cpu").contains("cuda comes first"), "{c:?}");
    }

    #[test]
    fn a_discrete_gpu_comes_before_an_integrated_one() {
        let probe = Probe {
            cuda: Err("no CUDA driver (libcuda.so.1 not found)".into()),
            vulkan: Ok(vec![
                gpu("llvmpipe", GpuKind::Cpu),
                gpu("Intel UHD", GpuKind::Integrated),
                gpu("Radeon RX", GpuKind::Discrete),
            ]),
        };
        let c = choose(&probe, &ALL).unwrap();
        assert_eq!(c.backend, "vulkan");
        assert!(c.why.contains("Radeon RX"), "{c:?}");
        assert!(reason(&c, "cuda").contains("no CUDA driver"));
        let probe = Probe {
            vulkan: Ok(vec![
                gpu("llvmpipe", GpuKind::Cpu),
                gpu("Intel UHD", GpuKind::Integrated),
            ]),
            ..probe
        };
        assert!(choose(&probe, &ALL).unwrap().why.contains("Intel UHD"));
    }

    #[test]
    fn lavapipe_alone_is_never_chosen_and_the_log_says_why() {
        let probe = Probe {
            cuda: Err("no CUDA driver (libcuda.so.1 not found)".into()),
            vulkan: Ok(vec![gpu("llvmpipe (LLVM 15.0.6, 256 bits)", GpuKind::Cpu)]),
        };
        let c = choose(&probe, &ALL).unwrap();
        assert_eq!(c.backend, "cpu");
        assert!(reason(&c, "vulkan").contains("llvmpipe"), "{c:?}");
        assert!(reason(&c, "vulkan").contains("slower"), "{c:?}");
        let line = c.describe();
        assert!(line.contains("not cuda: no CUDA driver"), "{line}");
        assert!(line.contains("not vulkan: no GPU"), "{line}");
    }

    #[test]
    fn a_driver_without_a_module_or_a_device_is_not_chosen() {
        let probe = Probe {
            cuda: Ok(vec![]),
            vulkan: Ok(vec![gpu("Radeon RX", GpuKind::Discrete)]),
        };
        let c = choose(&probe, &["cpu", "cuda"]).unwrap();
        assert_eq!(c.backend, "cpu");
        assert!(reason(&c, "cuda").contains("no device"));
        assert!(reason(&c, "vulkan").contains("no kernel module"));
        let none = Probe {
            cuda: Err("no CUDA driver".into()),
            vulkan: Err("no Vulkan loader".into()),
        };
        let e = choose(&none, &["vulkan"]).unwrap_err();
        assert!(
            e.contains("no usable backend") && e.contains("no Vulkan loader"),
            "{e}"
        );
    }

    #[test]
    fn can_run_refuses_only_what_the_probe_rules_out() {
        let probe = Probe {
            cuda: Err("no CUDA driver (libcuda.so.1 not found)".into()),
            vulkan: Ok(vec![gpu("llvmpipe", GpuKind::Cpu)]),
        };
        assert!(
            can_run(&probe, "cuda")
                .unwrap_err()
                .contains("no CUDA driver")
        );
        // Asked for by name, lavapipe is fine.
        assert!(can_run(&probe, "vulkan").is_ok());
        assert!(can_run(&probe, "cpu").is_ok());
    }
}

//! `probe` and the `device` option.

use shared_state::{Engine, ErrorKind};

use super::support::{engine, engine_with, vulkan_required};
use crate::engine::VulkanEngine;
use crate::instance::probe_devices;

#[test]
fn probe_lists_compute_devices_with_kind_driver_and_api() {
    match probe_devices() {
        Ok(devices) => {
            assert!(!devices.is_empty());
            for (i, d) in devices.iter().enumerate() {
                assert_eq!(d.index, i);
                assert!(!d.name.is_empty());
                assert!(
                    [
                        "software",
                        "discrete-gpu",
                        "integrated-gpu",
                        "virtual-gpu",
                        "other"
                    ]
                    .contains(&d.kind.as_str()),
                    "{d:?}"
                );
                assert!(!d.driver.is_empty(), "{d:?}");
                assert!(d.api.starts_with("Vulkan 1."), "{d:?}");
                println!(
                    "device {i}: {} [{}] driver {} ({})",
                    d.name, d.kind, d.driver, d.api
                );
            }
        }
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Unavailable, "{e:?}");
            assert!(!vulkan_required(), "KILN_REQUIRE_VULKAN=1: {}", e.message);
            println!("skipped: no Vulkan device ({})", e.message);
        }
    }
}

#[test]
fn device_option_picks_by_index_or_name_and_explains_misses() {
    let Some(default) = engine() else { return };
    let devices = probe_devices().unwrap();
    let default_name = default.gpu_name();
    drop(default);

    // By index and by a case-swapped substring of the name.
    let last = devices.len() - 1;
    let by_index = engine_with(&[("device", &last.to_string())], None).unwrap();
    assert_eq!(by_index.gpu_name(), devices[last].name);
    drop(by_index);
    let fragment: String = default_name
        .chars()
        .take(4)
        .collect::<String>()
        .to_uppercase();
    let by_name = engine_with(&[("device", &fragment)], None).unwrap();
    assert!(by_name.gpu_name().to_uppercase().contains(&fragment));
    assert!(by_name.info().unwrap().device.contains(&by_name.gpu_name()));
    drop(by_name);

    for wanted in ["99", "no-such-device-xyz"] {
        let err = match VulkanEngine::create(super::support::context(&[("device", wanted)]), None) {
            Ok(_) => panic!("device {wanted:?} was accepted"),
            Err(e) => e,
        };
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.message.contains(wanted), "{err}");
        assert!(
            err.message.contains(&devices[0].name),
            "lists the devices: {err}"
        );
    }
}

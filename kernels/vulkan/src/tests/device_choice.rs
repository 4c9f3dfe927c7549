//! The `device` option (probing is the conformance suite's).

use kernel_conformance::support::{context, engine, engine_from};
use shared_state::{Engine, ErrorKind};

use super::Vulkan;
use crate::engine::VulkanEngine;
use crate::instance::probe_devices;

const TEST: &str = "device_option_picks_by_index_or_name_and_explains_misses";

fn engine_on(device: &str) -> VulkanEngine {
    engine_from::<Vulkan>(TEST, context::<Vulkan>(TEST, &[("device", device)]), None)
        .unwrap_or_else(|| panic!("device {device:?}: no engine"))
}

#[test]
fn device_option_picks_by_index_or_name_and_explains_misses() {
    let Some(default) = engine::<Vulkan>(TEST) else {
        return;
    };
    let devices = probe_devices().unwrap();
    let default_name = default.gpu_name();
    drop(default);

    // By index and by a case-swapped substring of the name.
    let last = devices.len() - 1;
    let by_index = engine_on(&last.to_string());
    assert_eq!(by_index.gpu_name(), devices[last].name);
    drop(by_index);
    let fragment: String = default_name
        .chars()
        .take(4)
        .collect::<String>()
        .to_uppercase();
    let by_name = engine_on(&fragment);
    assert!(by_name.gpu_name().to_uppercase().contains(&fragment));
    assert!(by_name.info().unwrap().device.contains(&by_name.gpu_name()));
    drop(by_name);

    for wanted in ["99", "no-such-device-xyz"] {
        let err = match VulkanEngine::create(context::<Vulkan>(TEST, &[("device", wanted)]), None) {
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

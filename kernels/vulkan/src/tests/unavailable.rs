//! With the loader pointed at a driver manifest that does not exist, engine
//! creation and `probe` fail with a clear `Unavailable` error, not a panic.
//! Runs in a child process (this test binary, re-executed with the variables
//! set and a filter) so the environment does not leak into other tests.

use shared_state::ErrorKind;

use super::support::{assert_child, context, run_child};
use crate::engine::VulkanEngine;
use crate::instance::probe_devices;

const CHILD: &str = "tests::unavailable::child_with_a_missing_driver_manifest";
const MISSING: &str = "/nonexistent/kiln-test/no_such_icd.json";

#[test]
fn a_missing_driver_is_a_clear_unavailable_error() {
    let stdout = run_child(
        CHILD,
        &[
            ("VK_ICD_FILENAMES", MISSING),
            ("VK_DRIVER_FILES", MISSING),
            ("VK_ADD_DRIVER_FILES", ""),
        ],
    );
    assert!(stdout.contains("child checked:"), "{stdout}");
}

#[test]
#[ignore = "run by a_missing_driver_is_a_clear_unavailable_error in a child process"]
fn child_with_a_missing_driver_manifest() {
    assert_child("a_missing_driver_is_a_clear_unavailable_error");
    let err = match VulkanEngine::create(context(&[]), None) {
        Ok(_) => panic!("an engine was created with no driver"),
        Err(e) => e,
    };
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
    let no_loader = err.message.contains("libvulkan.so.1");
    if !no_loader {
        // The loader is there but finds no driver.
        assert!(err.message.contains("ERROR_INCOMPATIBLE_DRIVER"), "{err}");
        assert!(err.message.contains(MISSING), "names the override: {err}");
    }
    let probed = probe_devices().unwrap_err();
    assert_eq!(probed, err);
    println!("child checked: {}", err.message);
}

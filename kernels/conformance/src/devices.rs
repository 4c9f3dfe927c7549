//! Probing the backend's devices, and a machine without its driver: a clear
//! `Unavailable` error from the exported entry points, never a panic or an
//! abort. The driver's absence is staged in a child process (this test
//! binary, re-run on one ignored test with the backend's environment), so
//! that loader variables stay out of the other tests.

use shared_state::ErrorKind;

use crate::Backend;
use crate::support::{
    TempDir, assert_child, child_lines, context, describe, device_required, require_device_var,
    run_child,
};

/// The kinds a device may report.
const KINDS: [&str; 5] = [
    "software",
    "discrete-gpu",
    "integrated-gpu",
    "virtual-gpu",
    "other",
];

/// Whatever this machine has: the devices, numbered from 0, each with a
/// name, kind, driver and API; or `Unavailable` saying why there is none.
pub fn probe_lists_devices_or_says_why_none<B: Backend>() {
    match (B::PROBE)() {
        Ok(devices) => {
            assert!(!devices.is_empty());
            for (i, d) in devices.iter().enumerate() {
                assert_eq!(d.index, i);
                assert!(!d.name.is_empty());
                assert!(KINDS.contains(&d.kind.as_str()), "{d:?}");
                assert!(!d.driver.is_empty(), "{d:?}");
                assert!(d.api.starts_with(B::API_PREFIX), "{d:?}");
                println!(
                    "device {i}: {} [{}] driver {} ({})",
                    d.name, d.kind, d.driver, d.api
                );
            }
        }
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Unavailable, "{e:?}");
            assert!(
                !device_required::<B>(),
                "{}=1: {}",
                require_device_var::<B>(),
                e.message
            );
            println!("probe: skipped: {}", B::unavailable(&e));
        }
    }
}

/// In the child: reports what probing and engine creation return through
/// the exported, panic-guarded entry points (and the backend's own lines),
/// one `KILN-CHILD key: value` line each.
pub fn child_reports_probe_and_create<B: Backend>() {
    assert_child("the tests that stage a missing driver or device");
    let probe = (B::PROBE)();
    println!("KILN-CHILD probe: {}", describe(probe.map(|d| d.len())));
    let created = (B::CREATE_EXPORTED)(context::<B>("child", &[]), None);
    println!("KILN-CHILD create: {}", describe(created.map(|_| "engine")));
    for (key, value) in B::child_report() {
        println!("KILN-CHILD {key}: {value}");
    }
}

/// Without the driver, probing and engine creation give the same
/// `Unavailable` error, which says what is missing.
pub fn without_a_driver_probe_and_create_are_unavailable<B: Backend>(child: &str) {
    let scratch = TempDir::new(&format!("{}-nodriver", B::NAME));
    let env = match B::without_a_driver(&scratch.0) {
        Ok(env) => env,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let stdout = run_child(child, &env);
    let report = child_lines(&stdout);
    let create = report
        .get("create")
        .unwrap_or_else(|| panic!("child output:\n{stdout}"));
    assert!(
        create.starts_with("Err(Unavailable: "),
        "engine creation without a driver: {create}"
    );
    assert_eq!(report.get("probe"), Some(create), "probe and create agree");
    let message = create
        .strip_prefix("Err(Unavailable: ")
        .and_then(|m| m.strip_suffix(')'))
        .unwrap();
    B::check_without_a_driver(&shared_state::EngineError::unavailable(message), &report);
}

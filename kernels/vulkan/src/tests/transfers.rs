//! What a swap copies between host and device, counted by the engine
//! (`transfers/*` notes): on lavapipe device memory is host memory, so the
//! tests count bytes rather than time them.

use shared_state::{Engine, Tensor};

use kernel_conformance::support::{context, engine, engine_from, note};
use kernel_reference::test_values;

use super::Vulkan;
use crate::engine::{TO_DEVICE_NOTE, TO_HOST_NOTE, VulkanEngine};

/// Elements of the resident the tests hand over (256 KiB of f32).
const N: usize = 1 << 16;
const BYTES: i64 = (N * 4) as i64;

/// (host -> device, device -> host) bytes so far.
fn transfers(engine: &VulkanEngine) -> (i64, i64) {
    (note(engine, TO_DEVICE_NOTE), note(engine, TO_HOST_NOTE))
}

/// An engine holding one resident, `weights`.
fn with_resident(test: &str) -> Option<VulkanEngine> {
    let mut engine = engine::<Vulkan>(test)?;
    engine
        .put_resident("weights", Tensor::from_f32(&[N], test_values(N, 5)))
        .unwrap();
    assert_eq!(transfers(&engine), (BYTES, 0), "the upload is counted");
    Some(engine)
}

#[test]
fn a_host_export_downloads_every_resident_and_the_next_engine_uploads_it() {
    let test = "transfers-host-export";
    let Some(old) = with_resident(test) else {
        return;
    };
    let mut snapshot = old.export_state().unwrap();
    assert_eq!(transfers(&old), (BYTES, BYTES));
    let new = engine_from::<Vulkan>(test, context::<Vulkan>(test, &[]), Some(&mut snapshot))
        .expect("a device for the old engine has one for the new");
    assert_eq!(transfers(&new), (BYTES, 0));
    assert!(
        new.read_resident("weights")
            .unwrap()
            .bit_eq(&old.read_resident("weights").unwrap())
    );
}

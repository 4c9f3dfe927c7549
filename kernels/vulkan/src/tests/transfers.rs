//! What a swap copies between host and device, counted by the engine
//! (`transfers/*` notes): on lavapipe device memory is host memory, so the
//! tests count bytes rather than time them. A swap between versions
//! (`export_handoff`) leaves the residents on the device; the host path
//! (`export_state`: a backend switch, a checkpoint, `--state`) copies them.

use shared_state::{Call, Engine, ErrorKind, Section, Tensor};

use kernel_conformance::support::{
    SAXPY, context, context_with, declarations, edited, engine, engine_from, note,
};
use kernel_reference::test_values;

use super::Vulkan;
use crate::engine::{DEVICE_COPY_NOTE, TO_DEVICE_NOTE, TO_HOST_NOTE, VulkanEngine};

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
fn a_host_export_downloads_what_the_host_lacks_and_the_next_engine_uploads_it() {
    let test = "transfers-host-export";
    let Some(mut old) = with_resident(test) else {
        return;
    };
    // `weights` came from the host; `sum` was computed on the device.
    store_saxpy(&mut old, "sum");
    let before = transfers(&old);
    let mut snapshot = old.export_state().unwrap();
    assert_eq!(
        transfers(&old).1 - before.1,
        BYTES,
        "only the computed resident is downloaded"
    );
    let new = engine_from::<Vulkan>(test, context::<Vulkan>(test, &[]), Some(&mut snapshot))
        .expect("a device for the old engine has one for the new");
    assert_eq!(transfers(&new), (2 * BYTES, 0), "both are uploaded");
    for name in ["weights", "sum"] {
        assert!(
            new.read_resident(name)
                .unwrap()
                .bit_eq(&old.read_resident(name).unwrap())
        );
    }
}

#[test]
fn an_export_of_unchanged_residents_downloads_nothing_and_shares_the_last_ones_elements() {
    let test = "transfers-unchanged-export";
    let Some(mut engine) = with_resident(test) else {
        return;
    };
    store_saxpy(&mut engine, "sum");
    let first = engine.export_state().unwrap();
    let moved = transfers(&engine);
    // A replay that stores nothing: its output is downloaded, no resident.
    let out = engine
        .run(
            Call::new(SAXPY)
                .resident("weights")
                .resident("sum")
                .param("a", shared_state::Scalar::F64(1.0)),
        )
        .unwrap();
    assert_eq!(out.into_tensor().unwrap().byte_len() as i64, BYTES);
    let after_call = transfers(&engine);
    assert_eq!(after_call.1 - moved.1, BYTES, "the call's output only");
    let second = engine.export_state().unwrap();
    assert_eq!(transfers(&engine), after_call, "nothing moved");
    for name in ["resident/weights", "resident/sum"] {
        let (Some(Section::Tensor(a)), Some(Section::Tensor(b))) =
            (first.get(name), second.get(name))
        else {
            panic!("{name} missing");
        };
        assert!(
            a.data().mark().is(b.data()),
            "{name}: the same elements, so a checkpoint sees it unchanged"
        );
    }
    // A resident stored over is downloaded again, and only it.
    store_saxpy(&mut engine, "sum");
    let before = transfers(&engine);
    engine.export_state().unwrap();
    assert_eq!(transfers(&engine).1 - before.1, BYTES);
}

/// The next version's engine, created from the old one's handoff.
fn handed_over(test: &str, old: &VulkanEngine) -> VulkanEngine {
    let mut snapshot = old.export_handoff().unwrap();
    assert!(
        snapshot.has_device_sections(),
        "lavapipe exports opaque fds: the residents stay on the device"
    );
    let new = engine_from::<Vulkan>(test, context::<Vulkan>(test, &[]), Some(&mut snapshot))
        .expect("a device for the old engine has one for the new");
    assert!(snapshot.is_empty(), "left: {:?}", snapshot.section_names());
    new
}

/// saxpy of `weights` with itself, stored over `into`.
fn store_saxpy(engine: &mut VulkanEngine, into: &str) {
    let call = Call::new(SAXPY)
        .resident("weights")
        .resident("weights")
        .param("a", shared_state::Scalar::F64(2.0))
        .store_as(into);
    engine.run(call).unwrap();
}

#[test]
fn a_swap_between_versions_moves_no_byte_through_the_host_and_keeps_the_state() {
    let test = "transfers-handoff";
    let Some(mut old) = with_resident(test) else {
        return;
    };
    store_saxpy(&mut old, "sum");
    let old_moved = transfers(&old);
    let new = handed_over(test, &old);
    assert_eq!(transfers(&old), old_moved, "the export copied nothing");
    assert_eq!(transfers(&new), (0, 0), "the import copied nothing");
    let (old_state, new_state) = (old.export_state().unwrap(), new.export_state().unwrap());
    for name in ["resident/weights", "resident/sum", "counters/calls/saxpy"] {
        assert_eq!(
            old_state.get(name),
            new_state.get(name),
            "{name} is the same after the swap"
        );
    }
    // The new version keeps the buffers after the old one is gone.
    let weights = old.read_resident("weights").unwrap();
    drop(old);
    assert!(new.read_resident("weights").unwrap().bit_eq(&weights));
}

#[test]
fn a_new_version_that_overwrites_a_resident_leaves_the_old_versions_bytes() {
    let test = "transfers-overwrite";
    let Some(old) = with_resident(test) else {
        return;
    };
    let before = old.read_resident("weights").unwrap();
    let mut new = handed_over(test, &old);
    store_saxpy(&mut new, "weights");
    let doubled = new.read_resident("weights").unwrap();
    assert!(!doubled.bit_eq(&before), "the new version wrote its own");
    // The new version fails its replay and is dropped: the old one serves
    // on with its bytes as they were.
    drop(new);
    assert!(old.read_resident("weights").unwrap().bit_eq(&before));
}

/// Saxpy's sources with a shader that also writes 90 over every `x[i]` it
/// reads (`x` declared `read_write`).
fn scribbling_saxpy() -> Vec<shared_state::SourceFile> {
    edited::<Vulkan>(SAXPY, |text| {
        text.replace("var<storage, read> x", "var<storage, read_write> x")
            .replace(
                "out[i] = a * x[i] + y[i];",
                "out[i] = a * x[i] + y[i]; x[i] = 90.0;",
            )
    })
}

/// Runs saxpy(weights, weights), the output returned.
fn saxpy_in_place(engine: &mut VulkanEngine) {
    let call = Call::new(SAXPY)
        .resident("weights")
        .resident("weights")
        .param("a", shared_state::Scalar::F64(1.0));
    engine.run(call).unwrap();
}

#[test]
fn a_new_version_that_writes_a_shared_resident_in_place_writes_a_device_copy() {
    let test = "transfers-in-place";
    let Some(old) = with_resident(test) else {
        return;
    };
    let before = old.read_resident("weights").unwrap();
    let mut snapshot = old.export_handoff().unwrap();
    let ctx = context_with::<Vulkan>(test, &[], declarations(), scribbling_saxpy());
    let mut new = engine_from::<Vulkan>(test, ctx, Some(&mut snapshot)).unwrap();
    saxpy_in_place(&mut new);
    assert_eq!(
        note(&new, DEVICE_COPY_NOTE),
        BYTES,
        "copied once, on the device"
    );
    let written = new.read_resident("weights").unwrap();
    assert!(
        written.as_f32().unwrap().iter().all(|&v| v == 90.0),
        "the new version's writes reach its own resident"
    );
    // Its second call writes its own copy: no second device copy.
    saxpy_in_place(&mut new);
    assert_eq!(note(&new, DEVICE_COPY_NOTE), BYTES);
    drop(new);
    assert!(
        old.read_resident("weights").unwrap().bit_eq(&before),
        "the old version's bytes are as they were"
    );
    assert_eq!(note(&old, DEVICE_COPY_NOTE), 0);
}

/// A swap hands each resident's host copy over with its device memory:
/// the next version's first export downloads nothing and shares the very
/// elements the last version exported (so the worker's state marks see
/// it unchanged and a checkpoint after the swap copies nothing of it),
/// and a kernel of the new version that writes a resident in place still
/// makes the next export hold what it wrote.
#[test]
fn a_swap_hands_the_host_copies_over_and_a_write_in_place_still_shows() {
    let test = "transfers-handoff-host-copy";
    let Some(mut old) = with_resident(test) else {
        return;
    };
    store_saxpy(&mut old, "sum");
    let before = old.export_state().unwrap();
    let mut snapshot = old.export_handoff().unwrap();
    let ctx = context_with::<Vulkan>(test, &[], declarations(), scribbling_saxpy());
    let mut new = engine_from::<Vulkan>(test, ctx, Some(&mut snapshot)).unwrap();
    assert!(snapshot.is_empty(), "left: {:?}", snapshot.section_names());
    let exported = new.export_state().unwrap();
    assert_eq!(transfers(&new), (0, 0), "nothing uploaded or downloaded");
    for name in ["resident/weights", "resident/sum"] {
        let (Some(Section::Tensor(a)), Some(Section::Tensor(b))) =
            (before.get(name), exported.get(name))
        else {
            panic!("{name} missing");
        };
        assert!(a.data().mark().is(b.data()), "{name}: the same elements");
    }
    // The new version writes `weights` in place: its host copy goes.
    saxpy_in_place(&mut new);
    let written = new.export_state().unwrap();
    let Some(Section::Tensor(w)) = written.get("resident/weights") else {
        panic!("no weights");
    };
    assert!(w.as_f32().unwrap().iter().all(|&v| v == 90.0), "not stale");
    assert_eq!(transfers(&new).1, BYTES + BYTES, "output and weights");
    // The old version's bytes are as they were.
    drop(new);
    let Some(Section::Tensor(weights)) = before.get("resident/weights") else {
        panic!("no weights");
    };
    assert!(old.read_resident("weights").unwrap().bit_eq(weights));
}

#[test]
fn a_kernel_that_writes_a_resident_in_place_drops_its_host_copy() {
    let test = "transfers-in-place-host-copy";
    let ctx = context_with::<Vulkan>(test, &[], declarations(), scribbling_saxpy());
    let Some(mut engine) = engine_from::<Vulkan>(test, ctx, None) else {
        return;
    };
    engine
        .put_resident("weights", Tensor::from_f32(&[N], test_values(N, 5)))
        .unwrap();
    saxpy_in_place(&mut engine);
    let exported = engine.export_state().unwrap();
    let Some(Section::Tensor(t)) = exported.get("resident/weights") else {
        panic!("no weights");
    };
    assert!(t.as_f32().unwrap().iter().all(|&v| v == 90.0), "not stale");
    assert_eq!(note(&engine, DEVICE_COPY_NOTE), 0, "nothing shared");
}

#[test]
fn a_handoff_to_another_device_is_refused_as_state() {
    let test = "transfers-other-device";
    let Some(old) = with_resident(test) else {
        return;
    };
    let mut snapshot = old.export_handoff().unwrap();
    let mut moved = snapshot.take_device_with_prefix("resident/");
    let (name, mut section) = moved.pop().unwrap();
    section.device = "device=00 driver=00".to_string();
    snapshot.insert_device(format!("resident/{name}"), section);
    let err = match VulkanEngine::create(context::<Vulkan>(test, &[]), Some(&mut snapshot)) {
        Ok(_) => panic!("memory of another device was imported"),
        Err(e) => e,
    };
    assert_eq!(err.kind, ErrorKind::State, "{err}");
    assert!(err.message.contains("cannot import"), "{err}");
}

/// The host writes a checkpoint from an export and hands the bytes back as
/// the checkpoint's own buffers (a mapping of it, modelled here by a copy
/// in other memory): the engine adopts them as its host copy, so its own
/// downloaded copy goes, nothing is uploaded, and the next export of the
/// unchanged resident still downloads nothing and shares the checkpoint's
/// elements.
#[test]
fn a_checkpoints_bytes_handed_back_replace_the_host_copy_without_an_upload() {
    let test = "transfers-adopt-checkpoint";
    let Some(mut engine) = with_resident(test) else {
        return;
    };
    store_saxpy(&mut engine, "sum");
    let first = engine.export_state().unwrap();
    let Some(Section::Tensor(downloaded)) = first.get("resident/sum") else {
        panic!("no sum");
    };
    let downloaded = downloaded.clone();
    drop(first);
    assert!(downloaded.data().is_shared(), "the engine holds its copy");
    let checkpoint = Tensor::from_f32(&[N], downloaded.as_f32().unwrap().to_vec());
    assert!(!checkpoint.data().same_as(downloaded.data()));
    let moved = transfers(&engine);
    engine.put_resident("sum", checkpoint.clone()).unwrap();
    assert_eq!(transfers(&engine), moved, "nothing uploaded");
    assert!(
        !downloaded.data().is_shared(),
        "the engine let its own copy go"
    );
    let second = engine.export_state().unwrap();
    assert_eq!(transfers(&engine), moved, "nothing downloaded");
    let Some(Section::Tensor(exported)) = second.get("resident/sum") else {
        panic!("no sum");
    };
    assert!(exported.data().same_as(checkpoint.data()));
    // Other bytes are a new value: uploaded, as before.
    let other = Tensor::from_f32(&[N], vec![1.5; N]);
    engine.put_resident("sum", other.clone()).unwrap();
    assert_eq!(transfers(&engine).0 - moved.0, BYTES, "uploaded");
    assert!(engine.read_resident("sum").unwrap().bit_eq(&other));
}

/// A resident a kernel wrote since its last download has no host copy:
/// bytes handed back for it are uploaded (never trusted as the device's).
#[test]
fn bytes_handed_back_for_a_resident_written_since_are_uploaded() {
    let test = "transfers-adopt-written";
    let ctx = context_with::<Vulkan>(test, &[], declarations(), scribbling_saxpy());
    let Some(mut engine) = engine_from::<Vulkan>(test, ctx, None) else {
        return;
    };
    let weights = Tensor::from_f32(&[N], test_values(N, 5));
    engine.put_resident("weights", weights.clone()).unwrap();
    saxpy_in_place(&mut engine);
    let moved = transfers(&engine);
    engine.put_resident("weights", weights.clone()).unwrap();
    assert_eq!(transfers(&engine).0 - moved.0, BYTES, "uploaded again");
    assert!(engine.read_resident("weights").unwrap().bit_eq(&weights));
}

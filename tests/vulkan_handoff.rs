//! The Vulkan module's state stays on the device across a swap, through
//! the real host and the real module library: a swap between two versions
//! copies no resident between host and device and keeps the state hash; a
//! new version that stores over a resident leaves the old version's bytes
//! as they were; a checkpoint of state a replay did not change downloads
//! nothing and is seen unchanged; a switch to the CPU module still goes
//! through host memory; a checkpoint's mapped bytes handed back become the
//! engine's host copy with no upload. The engine counts the bytes it copies
//! each way (`transfers/*` notes): on lavapipe device memory is host
//! memory, so these tests count rather than time.
//!
//! Tests that need a Vulkan device print `skipped: no Vulkan device (...)`
//! and pass when there is none, unless `KILN_REQUIRE_VULKAN=1` is set.

use kiln::swap::state_hash::state_hash;
use kiln::worker::state_marks::StateMarks;
use kiln::{EngineHandle, EngineOptions, ServedModule};
use kiln_e2e::*;
use shared_state::{Call, Scalar, Tensor};

const VULKAN: &str = "kernel-vulkan";
const CPU: &str = "kernel-cpu";
/// Elements of the resident `x` (4 MiB of f32).
const N: usize = 1 << 20;

fn options() -> EngineOptions {
    EngineOptions {
        threads: 2,
        ..Default::default()
    }
}

/// (host -> device, device -> host) bytes the engine copied so far.
fn transfers(handle: &EngineHandle) -> (i64, i64) {
    let notes = handle.info().unwrap().notes;
    let get = |key: &str| match notes.get(key) {
        Some(Scalar::I64(v)) => *v,
        other => panic!("note {key} missing or not an integer: {other:?}"),
    };
    (
        get("transfers/host_to_device_bytes"),
        get("transfers/device_to_host_bytes"),
    )
}

/// A served Vulkan module with `x` put from the host and `y` computed on
/// the device (saxpy of `x` with itself).
fn served_with_residents(stage: &kiln::StagingDir) -> ServedModule {
    let (served, _) = ServedModule::start(load_fresh(stage, VULKAN), options(), None).unwrap();
    let x = Tensor::from_f32(
        &[N],
        random_bits(N, 7)
            .iter()
            .map(|v| if v.is_finite() { *v } else { 0.5 })
            .collect(),
    );
    served.handle().put_resident("x", x).unwrap();
    served.call(saxpy_into("y")).unwrap();
    served
}

fn saxpy_into(name: &str) -> Call {
    Call::new("saxpy")
        .resident("x")
        .resident("x")
        .param("a", Scalar::F64(3.0))
        .store_as(name)
}

#[test]
fn a_vulkan_swap_copies_no_resident_through_the_host_and_keeps_the_state_hash() {
    if !vulkan_present() {
        return;
    }
    let stage = staging("vulkan-handoff-zero-bytes");
    let served = served_with_residents(&stage);
    let before = state_hash(&served.handle().export_state().unwrap());
    let old_moved = transfers(&served.handle());

    let (report, old) = served.swap_keeping_old(load_fresh(&stage, VULKAN)).unwrap();
    assert!(report.import.is_lossless(), "{}", report.import);
    assert!(
        report.bytes >= 2 * N * 4,
        "the handoff carried {} bytes",
        report.bytes
    );
    assert_eq!(
        transfers(&old),
        old_moved,
        "the old version copied nothing out"
    );
    assert_eq!(
        transfers(&served.handle()),
        (0, 0),
        "the new version copied nothing in"
    );
    println!(
        "vulkan handoff of {} bytes on the device: export {:.2} ms, import {:.2} ms",
        report.bytes, report.export_ms, report.import_ms
    );
    drop(old);
    // Memory a version imported is handed on again, still with no copy.
    let report = served.swap(load_fresh(&stage, VULKAN)).unwrap();
    assert!(report.import.is_lossless(), "{}", report.import);
    assert_eq!(
        transfers(&served.handle()),
        (0, 0),
        "the third version copied nothing in"
    );
    // The old versions and their libraries are gone; the new one holds the
    // buffers and exports the same state (that export downloads them).
    let after = state_hash(&served.handle().export_state().unwrap());
    assert_eq!(before, after, "the state hash changed across the swap");
}

#[test]
fn a_new_version_that_stores_over_a_resident_leaves_the_old_versions_bytes() {
    if !vulkan_present() {
        return;
    }
    let stage = staging("vulkan-handoff-overwrite");
    let served = served_with_residents(&stage);
    let y = served.handle().read_resident("y").unwrap();
    let (_, old) = served.swap_keeping_old(load_fresh(&stage, VULKAN)).unwrap();
    // The new version writes a new `y` (as a replay that then fails would).
    served
        .call(
            Call::new("saxpy")
                .resident("y")
                .resident("x")
                .param("a", Scalar::F64(-1.0))
                .store_as("y"),
        )
        .unwrap();
    assert!(!served.handle().read_resident("y").unwrap().bit_eq(&y));
    // The old version, still alive for the interleaved timing or a
    // rollback, has its bytes as they were.
    assert!(old.read_resident("y").unwrap().bit_eq(&y));
    let (_, newer) = served
        .swap_to_state(load_fresh(&stage, VULKAN), old.export_state().unwrap())
        .unwrap();
    drop((old, newer));
    assert!(
        served.handle().read_resident("y").unwrap().bit_eq(&y),
        "rolled back"
    );
}

#[test]
fn a_checkpoint_after_an_unchanged_replay_downloads_nothing() {
    if !vulkan_present() {
        return;
    }
    let stage = staging("vulkan-handoff-checkpoint");
    let served = served_with_residents(&stage);
    let first = served.handle().export_state().unwrap();
    let marks = StateMarks::of(&first);
    // A replay that stores no resident: outputs come back to the host.
    for _ in 0..3 {
        served
            .call(
                Call::new("saxpy")
                    .resident("x")
                    .resident("y")
                    .param("a", Scalar::F64(0.5)),
            )
            .unwrap();
    }
    let moved = transfers(&served.handle());
    let second = served.handle().export_state().unwrap();
    assert_eq!(
        transfers(&served.handle()),
        moved,
        "the checkpoint downloaded nothing"
    );
    // The call counter changed; the residents are the same elements.
    assert!(!marks.unchanged(&second), "the saxpy counter moved");
    let third = served.handle().export_state().unwrap();
    assert!(StateMarks::of(&second).unchanged(&third));
}

/// The host hands a checkpoint's bytes back to the engine the way the
/// worker does for a CPU engine (`serve_from_checkpoint`: the real
/// checkpoint writer into a sealed memfd, mapped, `put_resident` of each
/// large resident): the Vulkan engine adopts them as its host copy, so it
/// uploads nothing, lets its downloaded copy go (the state is in host
/// memory once, in the checkpoint), and the next export still downloads
/// nothing and is seen unchanged.
#[test]
fn a_checkpoints_mapped_bytes_become_the_host_copy_without_an_upload() {
    if !vulkan_present() {
        return;
    }
    let stage = staging("vulkan-handoff-adopt-checkpoint");
    let served = served_with_residents(&stage);
    let snapshot = served.handle().export_state().unwrap();
    let mut checkpoints = kiln::isolation::checkpoint::Checkpoint::create().unwrap();
    let path = checkpoints.begin().unwrap();
    let (_, sealed) = kiln::worker::checkpoint_writer::write_checkpoint(&snapshot, &path).unwrap();
    let mapped = kiln::swap::snapshot_file::map(&sealed, &path).unwrap();
    let y = served.handle().read_resident("y").unwrap();
    assert!(y.data().is_shared(), "the engine holds its downloaded copy");
    drop(snapshot);
    let moved = transfers(&served.handle());
    for (name, section) in mapped.sections() {
        if let (Some(resident), shared_state::Section::Tensor(t)) =
            (name.strip_prefix("resident/"), section)
        {
            served.handle().put_resident(resident, t.clone()).unwrap();
        }
    }
    assert_eq!(transfers(&served.handle()), moved, "nothing uploaded");
    assert!(!y.data().is_shared(), "the engine let its own copy go");
    for name in ["x", "y"] {
        let held = served.handle().read_resident(name).unwrap();
        assert!(held.data().is_mapped(), "{name}: the checkpoint's bytes");
    }
    let again = served.handle().export_state().unwrap();
    assert_eq!(transfers(&served.handle()), moved, "nothing downloaded");
    let marks = StateMarks::of(&again);
    assert!(marks.unchanged(&served.handle().export_state().unwrap()));
    assert_eq!(state_hash(&again), state_hash(&mapped), "the same state");
}

#[test]
fn a_switch_to_the_cpu_module_carries_the_state_through_host_memory() {
    if !vulkan_present() {
        return;
    }
    let stage = staging("vulkan-handoff-to-cpu");
    let served = served_with_residents(&stage);
    let y = served.handle().read_resident("y").unwrap();
    let report = served.swap(load_fresh(&stage, CPU)).unwrap();
    for name in ["resident/x", "resident/y"] {
        assert!(
            report.import.restored.iter().any(|r| r == name),
            "{}",
            report.import
        );
    }
    assert!(served.handle().read_resident("y").unwrap().bit_eq(&y));
}

/// The interleaved timing runs the old and the new version at once, each
/// on its own engine thread: each engine has its own device, queue,
/// command pool and fence, and the memory they share is only read.
#[test]
fn old_and_new_versions_run_at_once_on_the_shared_buffers() {
    if !vulkan_present() {
        return;
    }
    let stage = staging("vulkan-handoff-interleaved");
    let served = served_with_residents(&stage);
    let (_, old) = served.swap_keeping_old(load_fresh(&stage, VULKAN)).unwrap();
    let call = || {
        Call::new("saxpy")
            .resident("x")
            .resident("y")
            .param("a", Scalar::F64(0.25))
    };
    let want = old.run(call()).unwrap();
    std::thread::scope(|s| {
        let old_side = s.spawn(|| {
            for _ in 0..6 {
                assert_eq!(old.run(call()).unwrap(), want);
            }
        });
        for _ in 0..6 {
            assert_eq!(served.call(call()).unwrap(), want);
        }
        old_side.join().unwrap();
    });
}

/// Through a real worker process: a checkpoint of residents nothing
/// changed is seen unchanged (the export shares the last one's elements,
/// no download); a replay changes only the call counters; a swap hands the
/// residents over on the device with their host copies, keeps the state
/// hash, and the checkpoint after it copies nothing.
#[test]
fn a_vulkan_workers_checkpoints_after_unchanged_replays_and_swaps() {
    if !vulkan_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut workload = kiln::workload::Workload::new("vulkan-resident");
    workload.load(
        "x",
        Tensor::from_f32(&[1 << 18], (0..1 << 18).map(|i| i as f32).collect()),
    );
    workload.call(
        Call::new("saxpy")
            .resident("x")
            .resident("x")
            .param("a", Scalar::F64(2.0)),
        None,
    );
    let file = dir.path().join("resident.kiln");
    kiln::workload::write(&workload, &file).expect("write workload");
    let artifact = module_artifact(VULKAN);
    let stage = staging("vulkan-handoff-worker");
    let options = kiln_e2e::misbehaving::worker_options(file, None);
    let mut engine = kiln::isolation::isolated::IsolatedEngine::new(options, None).unwrap();
    let staged = stage.stage(VULKAN, &artifact).expect("stage");
    engine
        .start(&staged, kiln::worker::protocol::StateSource::Empty)
        .expect("worker");
    engine.load_workload_state().expect("load");
    let first = engine.take_checkpoint().expect("checkpoint");
    assert!(!first.unchanged, "the first checkpoint is written");
    let again = engine.take_checkpoint().expect("checkpoint");
    assert!(again.unchanged, "{again:?}");

    let replay = engine.replay(None).expect("replay");
    assert!(replay.passed(), "{}", replay.table.render());
    let counted = engine.take_checkpoint().expect("checkpoint");
    assert_ne!(counted.hash, first.hash, "the saxpy counter moved");
    let again = engine.take_checkpoint().expect("checkpoint");
    assert!(again.unchanged, "{again:?}");

    let v2 = stage.stage(VULKAN, &artifact).expect("stage");
    engine.swap(&v2, false).expect("swap");
    let after_swap = engine.take_checkpoint().expect("checkpoint");
    assert_eq!(after_swap.hash, counted.hash, "the state crossed the swap");
    // The new version took the old one's host copy with the memory: its
    // export is the very buffer checkpointed, so nothing is copied again.
    assert_eq!(after_swap.copied_bytes, 0, "{after_swap:?}");
    let again = engine.take_checkpoint().expect("checkpoint");
    assert!(again.unchanged, "{again:?}");
}

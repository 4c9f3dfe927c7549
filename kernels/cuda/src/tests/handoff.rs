//! What a swap and a checkpoint copy between host and device on CUDA,
//! counted by the engine (`transfers/*` notes), the Vulkan module's
//! `tests/transfers.rs` on a GPU: a swap between versions hands the
//! residents over on the device (virtual memory management, an fd per
//! allocation) and copies none of their bytes; a checkpoint after a replay
//! that stored nothing downloads nothing, and neither does the new
//! version's first export (the host copies go with the swap); a new
//! version that stores over a resident, or writes one in place, leaves the
//! old version's bytes.
//!
//! The resident's size is `KILN_HANDOFF_MIB` MiB (default 4; the GPU check
//! runs 1024 and, where the GPU has room, 8192): the swap's time is printed,
//! never asserted. Without a GPU each test prints `TEST: skipped: ...` and
//! passes, unless `KILN_REQUIRE_CUDA=1`.

use std::time::Instant;

use kernel_conformance::support::{
    SAXPY, compiler_or_skip, context, context_with, declarations, edited, engine, engine_from,
    note, sources,
};
use shared_state::{Call, Engine, ErrorKind, Scalar, Section, Tensor};

use super::{ARCH, Cuda};
use crate::compile;
use crate::engine::CudaEngine;
use crate::residents::{DEVICE_COPY_NOTE, TO_DEVICE_NOTE, TO_HOST_NOTE};

/// Elements of the resident `weights` (f32).
fn elements() -> usize {
    let mib: usize = std::env::var("KILN_HANDOFF_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    (mib << 20) / 4
}

/// (host -> device, device -> host) bytes so far.
fn transfers(engine: &CudaEngine) -> (i64, i64) {
    (note(engine, TO_DEVICE_NOTE), note(engine, TO_HOST_NOTE))
}

/// An engine holding `weights` (put from the host) and `sum` (computed).
fn with_residents(test: &str) -> Option<(CudaEngine, i64)> {
    let mut engine = engine::<Cuda>(test)?;
    let n = elements();
    let bytes = (n * 4) as i64;
    let values: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
    engine
        .put_resident("weights", Tensor::from_f32(&[n], values))
        .unwrap();
    assert_eq!(transfers(&engine), (bytes, 0), "the upload is counted");
    store_saxpy(&mut engine, "sum");
    Some((engine, bytes))
}

/// saxpy of `weights` with itself, stored over `into`.
fn store_saxpy(engine: &mut CudaEngine, into: &str) {
    let call = Call::new(SAXPY)
        .resident("weights")
        .resident("weights")
        .param("a", Scalar::F64(2.0))
        .store_as(into);
    engine.run(call).unwrap();
}

/// The next version's engine from the old one's handoff, timed.
fn handed_over(test: &str, old: &CudaEngine, bytes: i64) -> CudaEngine {
    let started = Instant::now();
    let mut snapshot = old.export_handoff().unwrap();
    let exported = started.elapsed();
    assert!(
        snapshot.has_device_sections(),
        "the GPU exports its residents as fds (device/handoff: {:?})",
        old.info().unwrap().notes.get("device/handoff")
    );
    let started = Instant::now();
    let new = engine_from::<Cuda>(test, context::<Cuda>(test, &[]), Some(&mut snapshot))
        .expect("a device for the old engine has one for the new");
    println!(
        "cuda handoff of {} MiB of residents on the device: export {:.2} ms, new engine with import {:.2} ms",
        (2 * bytes) >> 20,
        exported.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    assert!(snapshot.is_empty(), "left: {:?}", snapshot.section_names());
    new
}

#[test]
fn a_cuda_swap_moves_no_resident_byte_through_the_host_and_keeps_the_state() {
    let test = "cuda-handoff-zero-bytes";
    let Some((old, bytes)) = with_residents(test) else {
        return;
    };
    let old_moved = transfers(&old);
    let new = handed_over(test, &old, bytes);
    assert_eq!(transfers(&old), old_moved, "the export copied nothing");
    assert_eq!(transfers(&new), (0, 0), "the import copied nothing");
    // Memory a version imported is handed on again, still with no copy.
    let newer = handed_over(test, &new, bytes);
    assert_eq!(
        transfers(&newer),
        (0, 0),
        "the third version copied nothing"
    );
    let (old_state, newer_state) = (old.export_state().unwrap(), newer.export_state().unwrap());
    for name in ["resident/weights", "resident/sum", "counters/calls/saxpy"] {
        assert_eq!(
            old_state.get(name),
            newer_state.get(name),
            "{name} is the same after two swaps"
        );
    }
    drop((old_state, newer_state));
    // The newest version keeps the memory after the others are gone.
    let sum = old.read_resident("sum").unwrap();
    drop(old);
    drop(new);
    assert!(newer.read_resident("sum").unwrap().bit_eq(&sum));
}

#[test]
fn a_cuda_checkpoint_after_an_unchanged_replay_downloads_nothing() {
    let test = "cuda-handoff-checkpoint";
    let Some((mut engine, bytes)) = with_residents(test) else {
        return;
    };
    let first = engine.export_state().unwrap();
    let replay = Call::new(SAXPY)
        .resident("weights")
        .resident("sum")
        .param("a", Scalar::F64(0.5));
    for _ in 0..3 {
        engine.run(replay.clone()).unwrap();
    }
    let moved = transfers(&engine);
    let started = Instant::now();
    let second = engine.export_state().unwrap();
    println!(
        "cuda checkpoint export of unchanged residents ({} MiB): {:.2} ms",
        (2 * bytes) >> 20,
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(transfers(&engine), moved, "nothing downloaded");
    for name in ["resident/weights", "resident/sum"] {
        let (Some(Section::Tensor(a)), Some(Section::Tensor(b))) =
            (first.get(name), second.get(name))
        else {
            panic!("{name} missing");
        };
        assert!(a.data().same_as(b.data()), "{name}: the same elements");
    }
    // A resident stored over is downloaded again, and only it.
    store_saxpy(&mut engine, "sum");
    let before = transfers(&engine);
    engine.export_state().unwrap();
    assert_eq!(transfers(&engine).1 - before.1, bytes);
}

#[test]
fn a_new_cuda_version_that_stores_over_a_resident_leaves_the_old_versions_bytes() {
    let test = "cuda-handoff-overwrite";
    let Some((old, bytes)) = with_residents(test) else {
        return;
    };
    let before = old.read_resident("weights").unwrap();
    let mut new = handed_over(test, &old, bytes);
    store_saxpy(&mut new, "weights");
    assert!(!new.read_resident("weights").unwrap().bit_eq(&before));
    // The new version fails its replay and is dropped: the old one serves
    // on with its bytes as they were.
    drop(new);
    assert!(old.read_resident("weights").unwrap().bit_eq(&before));
}

/// Saxpy's sources with a kernel that also writes 90 over every `x[i]` it
/// reads (`x` declared without `const`).
fn scribbling_saxpy() -> Vec<shared_state::SourceFile> {
    edited::<Cuda>(SAXPY, |text| {
        let edited = text.replace("const float* x", "float* x").replace(
            "out[i] = __fadd_rn(__fmul_rn(a, x[i]), y[i]);",
            "out[i] = __fadd_rn(__fmul_rn(a, x[i]), y[i]); x[i] = 90.0f;",
        );
        assert_ne!(edited, text, "saxpy.cu changed: update this edit");
        edited
    })
}

/// NVRTC only (no GPU): the edit above compiles, and its `x` is taken as
/// written; the shipped saxpy writes no input.
#[test]
fn the_scribbling_saxpy_compiles_and_writes_its_first_input() {
    if !compiler_or_skip::<Cuda>("cuda-handoff-scribbling-compiles") {
        return;
    }
    let written = |sources: &[shared_state::SourceFile]| {
        let (compiled, _) = compile::compile_all(&declarations(), sources, ARCH).unwrap();
        let saxpy = compiled.into_iter().find(|c| c.kernel == SAXPY).unwrap();
        saxpy.written_inputs
    };
    assert_eq!(written(&scribbling_saxpy()), [0]);
    assert!(written(&sources::<Cuda>()).is_empty());
}

#[test]
fn a_new_cuda_version_that_writes_a_shared_resident_in_place_writes_a_device_copy() {
    let test = "cuda-handoff-in-place";
    let Some((old, bytes)) = with_residents(test) else {
        return;
    };
    let before = old.read_resident("weights").unwrap();
    let mut snapshot = old.export_handoff().unwrap();
    let ctx = context_with::<Cuda>(test, &[], declarations(), scribbling_saxpy());
    let mut new = engine_from::<Cuda>(test, ctx, Some(&mut snapshot)).unwrap();
    let in_place = Call::new(SAXPY)
        .resident("weights")
        .resident("sum")
        .param("a", Scalar::F64(1.0));
    new.run(in_place.clone()).unwrap();
    assert_eq!(
        note(&new, DEVICE_COPY_NOTE),
        bytes,
        "copied once, on the device"
    );
    let written = new.read_resident("weights").unwrap();
    assert!(written.as_f32().unwrap().iter().all(|&v| v == 90.0));
    new.run(in_place).unwrap();
    assert_eq!(
        note(&new, DEVICE_COPY_NOTE),
        bytes,
        "its own copy from then on"
    );
    drop(new);
    assert!(
        old.read_resident("weights").unwrap().bit_eq(&before),
        "the old version's bytes are as they were"
    );
}

/// A swap hands each resident's host copy over with its device memory:
/// the next version's first export downloads nothing and shares the very
/// elements the last version exported (a checkpoint after the swap copies
/// nothing of it), and a kernel of the new version that writes a resident
/// in place still makes the next export hold what it wrote.
#[test]
fn a_cuda_swap_hands_the_host_copies_over_and_a_write_in_place_still_shows() {
    let test = "cuda-handoff-host-copy";
    let Some((old, bytes)) = with_residents(test) else {
        return;
    };
    let before = old.export_state().unwrap();
    let mut snapshot = old.export_handoff().unwrap();
    let ctx = context_with::<Cuda>(test, &[], declarations(), scribbling_saxpy());
    let mut new = engine_from::<Cuda>(test, ctx, Some(&mut snapshot)).unwrap();
    assert!(snapshot.is_empty(), "left: {:?}", snapshot.section_names());
    let exported = new.export_state().unwrap();
    assert_eq!(transfers(&new), (0, 0), "nothing uploaded or downloaded");
    for name in ["resident/weights", "resident/sum"] {
        let (Some(Section::Tensor(a)), Some(Section::Tensor(b))) =
            (before.get(name), exported.get(name))
        else {
            panic!("{name} missing");
        };
        assert!(a.data().same_as(b.data()), "{name}: the same elements");
    }
    // The new version writes `weights` in place: its host copy goes.
    new.run(
        Call::new(SAXPY)
            .resident("weights")
            .resident("sum")
            .param("a", Scalar::F64(1.0)),
    )
    .unwrap();
    let written = new.export_state().unwrap();
    let Some(Section::Tensor(w)) = written.get("resident/weights") else {
        panic!("no weights");
    };
    assert!(w.as_f32().unwrap().iter().all(|&v| v == 90.0), "not stale");
    assert_eq!(transfers(&new).1, 2 * bytes, "the output and weights");
    drop(new);
    let Some(Section::Tensor(weights)) = before.get("resident/weights") else {
        panic!("no weights");
    };
    assert!(old.read_resident("weights").unwrap().bit_eq(weights));
}

#[test]
fn a_checkpoints_bytes_handed_back_replace_the_cuda_host_copy_without_an_upload() {
    let test = "cuda-handoff-adopt";
    let Some((mut engine, _)) = with_residents(test) else {
        return;
    };
    let downloaded = engine.read_resident("sum").unwrap();
    let copy = Tensor::from_f32(downloaded.shape(), downloaded.as_f32().unwrap().to_vec());
    let moved = transfers(&engine);
    engine.put_resident("sum", copy.clone()).unwrap();
    assert_eq!(transfers(&engine), moved, "nothing uploaded");
    assert!(!downloaded.data().is_shared(), "the engine let its copy go");
    assert!(
        engine
            .read_resident("sum")
            .unwrap()
            .data()
            .same_as(copy.data())
    );
}

#[test]
fn a_cuda_handoff_from_another_device_is_refused_as_state() {
    let test = "cuda-handoff-other-device";
    let Some((old, _)) = with_residents(test) else {
        return;
    };
    let mut snapshot = old.export_handoff().unwrap();
    let mut moved = snapshot.take_device_with_prefix("resident/");
    let (name, mut section) = moved.pop().unwrap();
    section.device = "cuda device=00".to_string();
    snapshot.insert_device(format!("resident/{name}"), section);
    let err = match CudaEngine::create(context::<Cuda>(test, &[]), Some(&mut snapshot)) {
        Ok(_) => panic!("memory of another device was imported"),
        Err(e) => e,
    };
    assert_eq!(err.kind, ErrorKind::State, "{err}");
    assert!(err.message.contains("cannot import"), "{err}");
}

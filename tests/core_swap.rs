//! Swapping: state moves bit for bit, unknown state is reported, a held
//! handle keeps its version (and its library) alive until dropped.

use kiln::process::mapped_files_under;
use kiln::{EngineOptions, ServedModule};
use kiln_e2e::*;
use shared_state::{Call, Output, Scalar, Snapshot, Tensor};

fn options() -> EngineOptions {
    EngineOptions {
        threads: 2,
        ..Default::default()
    }
}

#[test]
fn state_survives_a_handoff_bit_for_bit_including_64_mib() {
    let stage = staging("handoff-bits");
    let (served, report) =
        ServedModule::start(load_fresh(&stage, "kernel-cpu"), options(), None).unwrap();
    assert!(report.restored.is_empty());
    // 64 MiB of arbitrary bit patterns (NaN payloads, denormals, infinities).
    let big = Tensor::from_f32(&[4096, 4096], random_bits(4096 * 4096, 7));
    served.handle().put_resident("big", big.clone()).unwrap();
    let grid = Tensor::from_f32(
        &[33, 17],
        random_bits(33 * 17, 8)
            .iter()
            .map(|v| v.clamp(-1.0, 1.0))
            .collect(),
    );
    served.handle().put_resident("grid", grid).unwrap();
    for _ in 0..3 {
        let out = served
            .call(Call::new("stencil2d").resident("grid").store_as("grid"))
            .unwrap();
        assert!(matches!(out, Output::Stored { .. }));
    }
    let before = served.handle().export_state().unwrap();

    let swap = served.swap(load_fresh(&stage, "kernel-cpu")).unwrap();
    assert_eq!(swap.from, "kernel-cpu-v1");
    assert_eq!(swap.to, "kernel-cpu-v2");
    assert!(swap.bytes >= 64 << 20, "{}", swap.bytes);
    assert!(swap.import.dropped.is_empty(), "{:?}", swap.import);
    assert!(swap.import.restored.contains(&"resident/big".to_string()));

    assert_eq!(served.label(), "kernel-cpu-v2");
    let after = served.handle().export_state().unwrap();
    assert!(after.bit_eq(&before), "state changed across the swap");
    let big_after = served.handle().read_resident("big").unwrap();
    assert!(big_after.bit_eq(&big));
    // Handed over, not copied: the new version serves the very bytes the
    // test put into the old one (a handoff that copied would hold others).
    assert!(
        big_after.data().same_as(big.data()),
        "the 64 MiB resident was copied in the handoff"
    );
    // The new version replacing a handed-over resident leaves the bytes the
    // old one exported as they were.
    let grid_of = |s: &Snapshot| match s.get("resident/grid") {
        Some(shared_state::Section::Tensor(t)) => t.clone(),
        other => panic!("no grid tensor: {other:?}"),
    };
    let old_grid = grid_of(&before);
    // The stencil counter moved over too: 3 calls before, 1 now.
    served
        .call(Call::new("stencil2d").resident("grid").store_as("grid"))
        .unwrap();
    let notes = served.handle().info().unwrap().notes;
    assert_eq!(notes["counters/calls/stencil2d"], Scalar::I64(4));
    let new_grid = served.handle().read_resident("grid").unwrap();
    assert!(!new_grid.bit_eq(&old_grid), "the stencil changed the grid");
    assert!(
        grid_of(&after).bit_eq(&old_grid),
        "the state exported before is unchanged"
    );
}

#[test]
fn a_state_section_the_new_version_does_not_know_is_reported() {
    let stage = staging("unknown-section");
    let mut prior = Snapshot::new("kernel-cpu", "cpu");
    prior.insert_tensor("resident/a", Tensor::from_f32(&[1], vec![1.5]));
    prior.insert_scalar("tuning/tile", Scalar::I64(32));
    prior.insert_tensor("experimental/cache", Tensor::from_f32(&[2], vec![0.0, 1.0]));
    prior.insert_scalar("mystery", Scalar::Text("from a newer version".into()));
    let (served, report) =
        ServedModule::start(load_fresh(&stage, "kernel-cpu"), options(), Some(prior)).unwrap();
    assert_eq!(
        report.dropped,
        vec!["experimental/cache".to_string(), "mystery".to_string()]
    );
    assert_eq!(
        report.restored,
        vec!["resident/a".to_string(), "tuning/tile".to_string()]
    );
    assert!(report.defaulted.is_empty());
    assert_eq!(
        served
            .handle()
            .read_resident("a")
            .unwrap()
            .as_f32()
            .unwrap(),
        [1.5]
    );

    // And a snapshot without the tuning section reports it as defaulted.
    let prior = Snapshot::new("kernel-cpu", "cpu");
    let (_, report) =
        ServedModule::start(load_fresh(&stage, "kernel-cpu"), options(), Some(prior)).unwrap();
    assert_eq!(report.defaulted, vec!["tuning/tile".to_string()]);
}

#[test]
fn a_handle_held_across_a_swap_keeps_its_library_until_dropped() {
    let stage = staging("held-handle");
    let (served, _) =
        ServedModule::start(load_fresh(&stage, "kernel-cpu"), options(), None).unwrap();
    served
        .handle()
        .put_resident("x", Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]))
        .unwrap();
    let held = served.handle();
    let v1_path = held.module().staged.path.clone();

    served.swap(load_fresh(&stage, "kernel-cpu")).unwrap();
    assert_eq!(served.label(), "kernel-cpu-v2");

    // The held handle still works, on v1, with v1's state.
    assert_eq!(held.label(), "kernel-cpu-v1");
    let out = held
        .run(
            Call::new("saxpy")
                .resident("x")
                .resident("x")
                .param("a", Scalar::F64(1.0)),
        )
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_eq!(out.as_f32().unwrap(), [2.0, 4.0, 6.0]);
    let mapped = mapped_files_under(stage.path(), None);
    assert!(
        mapped.iter().any(|m| m.path == v1_path && m.executable),
        "{mapped:?}"
    );

    drop(held);
    let mapped = mapped_files_under(stage.path(), None);
    assert!(
        !mapped.iter().any(|m| m.path == v1_path),
        "v1 still mapped: {mapped:?}"
    );
    assert_eq!(mapped.len(), 1, "{mapped:?}");
    assert!(
        !v1_path.exists(),
        "staged file of a closed library is removed"
    );
}

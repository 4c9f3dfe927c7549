//! Resident buffers on the device, `store_as`, the snapshot round trip and
//! the allocation count that leak checks rely on.

use super::support::{DOT, MATMUL, SAXPY};
use shared_state::{Buffer, Call, DType, Engine, Output, Scalar, Section, Snapshot, Tensor};

use super::support::{assert_close, dot_scale, engine, engine_with, run_value};
use kernel_reference::{self as reference, test_values};

fn note(e: &impl Engine, key: &str) -> i64 {
    match e.info().unwrap().notes.get(key) {
        Some(Scalar::I64(v)) => *v,
        other => panic!("note {key}: {other:?}"),
    }
}

#[test]
fn store_as_keeps_outputs_on_the_device_and_chains_calls() {
    let Some(mut e) = engine() else { return };
    assert_eq!(note(&e, "device/allocations"), 0);
    let n = 1000;
    let (x, y) = (test_values(n, 11), test_values(n, 12));
    e.put_resident("x", Tensor::from_f32(&[n], x.clone()))
        .unwrap();
    e.put_resident("y", Tensor::from_f32(&[n], y.clone()))
        .unwrap();

    let out = e
        .run(Call::new(SAXPY).resident("x").resident("y").store_as("z"))
        .unwrap();
    assert_eq!(
        out,
        Output::Stored {
            name: "z".into(),
            shape: vec![n]
        }
    );
    let z = reference::saxpy(2.0, &x, &y);
    assert_close(
        e.read_resident("z").unwrap().as_f32().unwrap(),
        &z,
        1e-6,
        "z",
    );

    // A resident and a passed tensor in one call.
    let got = run_value(
        &mut e,
        Call::new(DOT)
            .resident("z")
            .arg(Tensor::from_f32(&[n], z.clone())),
    );
    let (want, scale) = (reference::dot(&z, &z), dot_scale(&z, &z));
    assert!((got.as_f32().unwrap()[0] - want).abs() <= 1e-5 * (1.0 + scale));

    // Storing over one of the call's own inputs.
    e.run(
        Call::new(SAXPY)
            .resident("x")
            .resident("y")
            .param("a", Scalar::F64(-1.0))
            .store_as("x"),
    )
    .unwrap();
    let x2 = reference::saxpy(-1.0, &x, &y);
    assert_close(
        e.read_resident("x").unwrap().as_f32().unwrap(),
        &x2,
        1e-6,
        "x overwritten",
    );

    // matmul from residents into a new resident of another shape.
    e.put_resident("a", Tensor::from_f32(&[3, 4], test_values(12, 13)))
        .unwrap();
    e.put_resident("b", Tensor::from_f32(&[4, 5], test_values(20, 14)))
        .unwrap();
    let out = e
        .run(Call::new(MATMUL).resident("a").resident("b").store_as("c"))
        .unwrap();
    assert_eq!(
        out,
        Output::Stored {
            name: "c".into(),
            shape: vec![3, 5]
        }
    );
    let want = reference::matmul(&test_values(12, 13), &test_values(20, 14), (3, 4, 5));
    assert_close(
        e.read_resident("c").unwrap().as_f32().unwrap(),
        &want,
        1e-5,
        "c",
    );

    let names: Vec<String> = e.residents().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b", "c", "x", "y", "z"]);
    // Only the residents hold device memory: every call's uploads, scratch
    // and outputs were freed, and replaced residents too.
    assert_eq!(note(&e, "device/allocations"), 6);
    let bytes = note(&e, "device/bytes");
    assert!(
        bytes >= ((3 * n + 12 + 20 + 15) * 4) as i64,
        "device/bytes = {bytes}"
    );
    assert_eq!(note(&e, "counters/calls/saxpy"), 2);
    assert_eq!(note(&e, "counters/calls/dot"), 1);
    assert!(
        e.info().unwrap().device.contains("Vulkan"),
        "{}",
        e.info().unwrap().device
    );

    // An empty output can be stored and read back.
    e.run(
        Call::new(SAXPY)
            .arg(Tensor::from_f32(&[0], vec![]))
            .arg(Tensor::from_f32(&[0], vec![]))
            .store_as("empty"),
    )
    .unwrap();
    assert_eq!(
        e.read_resident("empty").unwrap(),
        Tensor::from_f32(&[0], vec![])
    );
}

/// Tensors of every dtype, with bit patterns that a float round trip would
/// change (NaN payloads, negative zero) and byte lengths that are not
/// multiples of 4.
fn odd_tensors() -> Vec<(&'static str, Tensor)> {
    let nan_payload = f32::from_bits(0x7fc0_1234);
    vec![
        (
            "f32",
            Tensor::from_f32(
                &[2, 3],
                vec![1.5, -0.0, nan_payload, f32::INFINITY, 1e-40, 7.0],
            ),
        ),
        (
            "f64",
            Tensor::new(vec![3], Buffer::F64(vec![1.0 / 3.0, -2.5, f64::NAN])).unwrap(),
        ),
        (
            "i64",
            Tensor::new(vec![2], Buffer::I64(vec![i64::MIN, 42])).unwrap(),
        ),
        (
            "u8",
            Tensor::new(vec![3], Buffer::U8(vec![1, 2, 255])).unwrap(),
        ),
        (
            "u32",
            Tensor::new(vec![1, 1], Buffer::U32(vec![0xdead_beef])).unwrap(),
        ),
        ("i32-empty", Tensor::zeros(DType::I32, &[0, 4]).unwrap()),
        (
            "scalar",
            Tensor::new(vec![], Buffer::F32(vec![3.25])).unwrap(),
        ),
    ]
}

#[test]
fn export_then_create_keeps_residents_bit_for_bit_and_counters() {
    let Some(mut first) = engine() else { return };
    for (name, t) in odd_tensors() {
        first.put_resident(name, t).unwrap();
    }
    let g = Tensor::from_f32(&[4, 5], test_values(20, 15));
    first.put_resident("grid", g.clone()).unwrap();
    first
        .run(Call::new("stencil2d").resident("grid").store_as("grid"))
        .unwrap();
    let stepped = first.read_resident("grid").unwrap();
    let allocations = first.live_allocations();

    let snapshot = first.export_state().unwrap();
    // Exporting changes nothing: a second export is identical and the
    // engine still holds the same buffers.
    assert!(snapshot.bit_eq(&first.export_state().unwrap()));
    assert_eq!(first.live_allocations(), allocations);
    assert_eq!(snapshot.backend, "vulkan");
    assert_eq!(
        snapshot.get("counters/calls/stencil2d"),
        Some(&Section::Scalar(Scalar::I64(1)))
    );
    for (name, t) in odd_tensors() {
        match snapshot.get(&format!("resident/{name}")) {
            Some(Section::Tensor(s)) => assert!(s.bit_eq(&t), "{name}: exported {s:?}, put {t:?}"),
            other => panic!("resident/{name}: {other:?}"),
        }
    }
    drop(first);

    let mut prior: Snapshot = snapshot.clone();
    let Some(mut second) = engine_with(&[], Some(&mut prior)) else {
        return;
    };
    assert!(
        prior.is_empty(),
        "sections not taken: {:?}",
        prior.section_names()
    );
    for (name, t) in odd_tensors() {
        let back = second.read_resident(name).unwrap();
        assert!(back.bit_eq(&t), "{name}: got {back:?}, want {t:?}");
    }
    assert!(second.read_resident("grid").unwrap().bit_eq(&stepped));
    assert!(second.export_state().unwrap().bit_eq(&snapshot));
    second.run(Call::new("stencil2d").resident("grid")).unwrap();
    assert_eq!(note(&second, "counters/calls/stencil2d"), 2);
    assert_eq!(
        note(&second, "device/allocations"),
        odd_tensors().len() as i64 + 1
    );
}

#[test]
fn a_cpu_snapshot_loads_and_unknown_sections_are_left() {
    let mut prior = Snapshot::new("kernel-cpu", "cpu");
    prior.insert_tensor("resident/w", Tensor::from_f32(&[2], vec![1.0, 2.0]));
    prior.insert_scalar("tuning/tile", Scalar::I64(64));
    prior.insert_scalar("counters/calls/matmul", Scalar::I64(9));
    let Some(e) = engine_with(&[], Some(&mut prior)) else {
        return;
    };
    assert_eq!(
        prior.section_names(),
        ["tuning/tile"],
        "the CPU's tuning is not the Vulkan module's"
    );
    assert_eq!(
        e.read_resident("w").unwrap(),
        Tensor::from_f32(&[2], vec![1.0, 2.0])
    );
    assert_eq!(note(&e, "counters/calls/matmul"), 9);
}

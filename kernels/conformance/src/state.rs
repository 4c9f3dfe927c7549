//! Resident buffers on the device, `store_as`, and the state handoff: a
//! snapshot moves every resident to the next engine bit for bit (through
//! the exported factory, as the host does it), with the call counters; a
//! CPU module's snapshot imports and what the backend does not know is
//! reported as dropped.

use shared_state::{
    Buffer, Call, DType, Engine, ErrorKind, Output, Scalar, Section, Snapshot, Tensor,
};

use kernel_reference::{self as reference, test_values};

use crate::Backend;
use crate::support::{
    DOT, MATMUL, SAXPY, SOFTMAX, STENCIL2D, assert_close, assert_dot, assert_matches, context,
    engine, note, run_value, skip, state_sections, t1, t2,
};

pub fn store_as_keeps_outputs_on_the_device_and_chains_calls<B: Backend>() {
    let Some(mut e) = engine::<B>("store_as_keeps_outputs_on_the_device_and_chains_calls") else {
        return;
    };
    if let Some((allocations, _)) = B::device_memory(&e) {
        assert_eq!(allocations, 0, "a new engine holds no device memory");
    }
    let n = 10_007;
    let (x, y) = (test_values(n, 11), test_values(n, 12));
    e.put_resident("x", t1(x.clone())).unwrap();
    e.put_resident("y", t1(y.clone())).unwrap();

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
    let read =
        |e: &B::Engine, name: &str| e.read_resident(name).unwrap().as_f32().unwrap().to_vec();
    assert_matches(&read(&e, "z"), &z, B::CASES.saxpy, "z");

    // A stored output feeds the next call; a resident and a passed tensor
    // in one call.
    let got = run_value(&mut e, Call::new(DOT).resident("z").arg(t1(x.clone())));
    assert_dot(got.as_f32().unwrap()[0], &z, &x, B::CASES.dot, "dot(z, x)");

    // Storing over one of the call's own inputs.
    e.run(Call::new(SAXPY).resident("z").resident("y").store_as("z"))
        .unwrap();
    let z2 = reference::saxpy(2.0, &z, &y);
    assert_matches(&read(&e, "z"), &z2, B::CASES.saxpy, "z overwritten");
    e.run(
        Call::new(SAXPY)
            .resident("x")
            .resident("y")
            .param("a", Scalar::F64(-1.0))
            .store_as("x"),
    )
    .unwrap();
    let x2 = reference::saxpy(-1.0, &x, &y);
    assert_matches(&read(&e, "x"), &x2, B::CASES.saxpy, "x overwritten");

    // matmul from residents into a new resident of another shape.
    e.put_resident("a", t2(3, 4, test_values(12, 13))).unwrap();
    e.put_resident("b", t2(4, 5, test_values(20, 14))).unwrap();
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
    assert_close(&read(&e, "c"), &want, 1e-5, "c");

    let names: Vec<String> = e.residents().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b", "c", "x", "y", "z"]);
    // Only the residents hold device memory: every call's uploads, scratch
    // and outputs were freed, and replaced residents too.
    if let Some((allocations, bytes)) = B::device_memory(&e) {
        assert_eq!(allocations, 6);
        assert!(
            bytes >= ((3 * n + 12 + 20 + 15) * 4) as i64,
            "device bytes = {bytes}"
        );
    }
    assert_eq!(note(&e, "counters/calls/saxpy"), 3);
    assert_eq!(note(&e, "counters/calls/dot"), 1);
    let device = e.info().unwrap().device;
    let api = B::API_PREFIX.split_whitespace().next().unwrap();
    assert!(device.contains(api), "{device}");

    // Any dtype can be resident and comes back bit for bit; a kernel does
    // not take it where its declaration wants f32.
    let ints = Tensor::new(vec![3], Buffer::I64(vec![-1, 0, i64::MAX].into())).unwrap();
    e.put_resident("ints", ints.clone()).unwrap();
    assert!(e.read_resident("ints").unwrap().bit_eq(&ints));
    let err = e
        .run(Call::new(DOT).resident("x").resident("nope"))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownBuffer, "{err}");
    let err = e
        .run(Call::new(DOT).resident("x").resident("ints"))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall, "{err}");
    assert!(err.message.contains("must be f32, got i64"), "{err}");

    // An empty output can be stored and read back.
    e.run(
        Call::new(SAXPY)
            .arg(t1(vec![]))
            .arg(t1(vec![]))
            .store_as("empty"),
    )
    .unwrap();
    assert_eq!(e.read_resident("empty").unwrap(), t1(vec![]));
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
            Tensor::new(vec![3], Buffer::F64(vec![1.0 / 3.0, -2.5, f64::NAN].into())).unwrap(),
        ),
        (
            "i64",
            Tensor::new(vec![2], Buffer::I64(vec![i64::MIN, 42].into())).unwrap(),
        ),
        (
            "u8",
            Tensor::new(vec![3], Buffer::U8(vec![1, 2, 255].into())).unwrap(),
        ),
        (
            "u32",
            Tensor::new(vec![1, 1], Buffer::U32(vec![0xdead_beef].into())).unwrap(),
        ),
        ("i32-empty", Tensor::zeros(DType::I32, &[0, 4]).unwrap()),
        (
            "scalar",
            Tensor::new(vec![], Buffer::F32(vec![3.25].into())).unwrap(),
        ),
    ]
}

pub fn state_moves_to_the_next_engine_bit_for_bit<B: Backend>() {
    const TEST: &str = "state_moves_to_the_next_engine_bit_for_bit";
    let Some(mut old) = engine::<B>(TEST) else {
        return;
    };
    for (name, t) in odd_tensors() {
        old.put_resident(name, t).unwrap();
    }
    old.put_resident("grid", t2(64, 48, test_values(64 * 48, 10)))
        .unwrap();
    for _ in 0..3 {
        old.run(
            Call::new(STENCIL2D)
                .resident("grid")
                .param("alpha", Scalar::F64(0.2))
                .store_as("grid"),
        )
        .unwrap();
    }
    old.run(Call::new(SOFTMAX).resident("grid").store_as("probs"))
        .unwrap();
    old.put_resident("empty", Tensor::from_f32(&[0, 4], vec![]))
        .unwrap();
    let stepped = old.read_resident("grid").unwrap();
    let memory = B::device_memory(&old);

    let snapshot = old.export_state().unwrap();
    // Exporting changes nothing: a second export is identical and the
    // engine still holds the same buffers.
    assert!(snapshot.bit_eq(&old.export_state().unwrap()));
    assert_eq!(B::device_memory(&old), memory);
    assert_eq!(snapshot.backend, B::NAME);
    let mut want: Vec<String> = ["counters/calls/softmax", "counters/calls/stencil2d"]
        .into_iter()
        .map(String::from)
        .chain(
            odd_tensors()
                .into_iter()
                .map(|(name, _)| name)
                .chain(["grid", "probs", "empty"])
                .map(|name| format!("resident/{name}")),
        )
        .collect();
    want.sort();
    assert_eq!(state_sections(&snapshot), want);
    assert_eq!(
        snapshot.get("counters/calls/stencil2d"),
        Some(&Section::Scalar(Scalar::I64(3)))
    );
    for (name, t) in odd_tensors() {
        match snapshot.get(&format!("resident/{name}")) {
            Some(Section::Tensor(s)) => assert!(s.bit_eq(&t), "{name}: exported {s:?}, put {t:?}"),
            other => panic!("resident/{name}: {other:?}"),
        }
    }

    // Like the host: the new version is created while the old one is
    // alive, through the exported factory (panic guard, import report), and
    // takes every section.
    let created = (B::CREATE_EXPORTED)(context::<B>("state-v2", &[]), Some(snapshot.clone()))
        .unwrap_or_else(|e| panic!("second engine: {e}"));
    assert!(created.report.is_lossless(), "{}", created.report);
    assert_eq!(created.report.restored.len(), snapshot.len());
    let mut new = created.engine;
    drop(old);
    for (name, t) in odd_tensors() {
        let back = new.read_resident(name).unwrap();
        assert!(back.bit_eq(&t), "{name}: got {back:?}, want {t:?}");
    }
    assert!(new.read_resident("grid").unwrap().bit_eq(&stepped));
    assert!(
        new.export_state().unwrap().bit_eq(&snapshot),
        "state changed in the swap"
    );

    // The new engine serves on the imported state, and counts on.
    new.run(Call::new(STENCIL2D).resident("grid").store_as("grid"))
        .unwrap();
    assert_eq!(note(&*new, "counters/calls/stencil2d"), 4);
    let after = new.export_state().unwrap();
    assert_eq!(
        after.get("counters/calls/stencil2d"),
        Some(&Section::Scalar(Scalar::I64(4)))
    );
    assert!(!after.bit_eq(&snapshot));
    if let Some((allocations, _)) = B::device_memory(&*new) {
        assert_eq!(allocations, new.residents().unwrap().len() as i64);
    }
}

pub fn a_cpu_snapshot_imports_and_reports_what_it_drops<B: Backend>() {
    const TEST: &str = "a_cpu_snapshot_imports_and_reports_what_it_drops";
    let mut snapshot = Snapshot::new("kernel-cpu", "cpu");
    let g = test_values(12, 11);
    snapshot.insert_tensor("resident/g", t2(3, 4, g.clone()));
    snapshot.insert_scalar("tuning/tile", Scalar::I64(64));
    snapshot.insert_scalar("counters/calls/matmul", Scalar::I64(7));
    let created = match (B::CREATE_EXPORTED)(context::<B>(TEST, &[]), Some(snapshot)) {
        Ok(c) => c,
        Err(err) => return skip::<B>(TEST, &err),
    };
    assert_eq!(
        created.report.dropped,
        ["tuning/tile"],
        "the CPU's tuning is not the {} module's",
        B::NAME
    );
    assert_eq!(
        created.report.restored,
        ["resident/g", "counters/calls/matmul"]
    );
    assert_eq!(created.report.bytes, 48 + 8);
    let t = created.engine.read_resident("g").unwrap();
    assert_eq!(t.shape(), &[3, 4]);
    assert_eq!(t.as_f32().unwrap(), &g[..]);
    assert_eq!(note(&*created.engine, "counters/calls/matmul"), 7);
}

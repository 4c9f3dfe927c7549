//! f16, bf16 and i8 end to end (issue 15): every bit pattern of f16 and
//! bf16 (NaN payloads, infinities, subnormals, negative zero) and every i8
//! value survives a snapshot file, an engine swap (handoff) and a workload
//! file bit for bit; the mixed-precision workload (`kernels/workloads/
//! mixed.toml`) replays on the CPU module against the reference module, and
//! the CPU module's outputs are the reference's bit for bit.

use std::sync::Arc;

use kiln::swap::snapshot_file;
use kiln::swap::version_files::read_declarations;
use kiln::workload::generate::bundled_workload;
use kiln::workload::replay::{self, ReplayOptions};
use kiln::workload::{CallStep, Step, Workload, read, write};
use kiln::{EngineHandle, EngineOptions, ServedModule};
use kiln_e2e::*;
use shared_state::{Call, KernelSet, Output, Snapshot, Tensor, bf16, f16};

fn options() -> EngineOptions {
    EngineOptions {
        threads: 2,
        ..Default::default()
    }
}

/// Every f16 bit pattern (65536, odd shape 256x256 aside: one row of
/// 65536), every bf16 bit pattern, every i8 value, and an odd-length
/// (3-element) tensor of each.
fn every_pattern() -> Vec<(&'static str, Tensor)> {
    let all16 = || 0..=u16::MAX;
    let specials_f16 = [
        0x8000, 0x0001, 0x83ff, 0x7c00, 0xfc00, 0x7c01, 0xfe55, 0x7e00,
    ];
    let specials_bf16 = [
        0x8000, 0x0001, 0x807f, 0x7f80, 0xff80, 0x7f81, 0xffc1, 0x7fc0,
    ];
    vec![
        (
            "f16_all",
            Tensor::from_vec(&[65536], all16().map(f16::from_bits).collect()),
        ),
        (
            "bf16_all",
            Tensor::from_vec(&[256, 256], all16().map(bf16::from_bits).collect()),
        ),
        (
            "i8_all",
            Tensor::from_vec(&[256], (-128..=127).collect::<Vec<i8>>()),
        ),
        (
            "f16_specials",
            Tensor::from_vec(&[8], specials_f16.map(f16::from_bits).to_vec()),
        ),
        (
            "bf16_specials",
            Tensor::from_vec(&[8], specials_bf16.map(bf16::from_bits).to_vec()),
        ),
        (
            "f16_odd",
            Tensor::from_vec(
                &[3],
                vec![
                    f16::from_bits(0x7d23),
                    f16::NEG_ZERO,
                    f16::MIN_POSITIVE_SUBNORMAL,
                ],
            ),
        ),
        (
            "bf16_odd",
            Tensor::from_vec(
                &[3],
                vec![bf16::from_bits(0xffa5), bf16::NEG_ZERO, bf16::from_bits(1)],
            ),
        ),
        ("i8_odd", Tensor::from_vec(&[3], vec![-128i8, 0, 127])),
    ]
}

/// The bits, asserted pattern by pattern (NaN != NaN, so compare bytes).
fn assert_same_bits(what: &str, name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype(), want.dtype(), "{what}: {name} dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: {name} shape");
    assert!(
        got.data().as_bytes() == want.data().as_bytes(),
        "{what}: {name} changed bits"
    );
}

#[test]
fn the_patterns_cover_nan_payloads_infinities_subnormals_and_negative_zero() {
    let p = every_pattern();
    let f = p[3].1.as_slice::<f16>().unwrap();
    assert!(f[0].is_sign_negative() && f[0] == f16::ZERO, "-0");
    let sub = |v: f16| v.to_bits() & 0x7c00 == 0 && v.to_bits() & 0x03ff != 0;
    assert!(sub(f[1]) && sub(f[2]), "subnormals");
    assert!(f[3].is_infinite() && f[4].is_infinite());
    assert!(
        f[5].is_nan() && f[6].is_nan() && f[5].to_bits() != f[6].to_bits(),
        "payloads"
    );
    let b = p[4].1.as_slice::<bf16>().unwrap();
    assert!(b[0].is_sign_negative() && b[0] == bf16::ZERO);
    let sub = |v: bf16| v.to_bits() & 0x7f80 == 0 && v.to_bits() & 0x007f != 0;
    assert!(sub(b[1]) && sub(b[2]), "subnormals");
    assert!(b[3].is_infinite() && b[5].is_nan() && b[6].is_nan());
}

#[test]
fn snapshot_file_round_trips_every_pattern_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.kstate");
    let mut snap = Snapshot::new("kernel-cpu", "cpu");
    for (name, t) in every_pattern() {
        snap.insert_tensor(format!("resident/{name}"), t);
    }
    snapshot_file::save(&snap, &path).unwrap();
    let back = snapshot_file::load(&path).unwrap();
    assert!(back.bit_eq(&snap));
    for (name, want) in every_pattern() {
        let Some(shared_state::Section::Tensor(got)) = back.get(&format!("resident/{name}")) else {
            panic!("{name} missing from the loaded snapshot");
        };
        assert_same_bits("snapshot file", name, got, &want);
    }
}

#[test]
fn an_engine_swap_hands_every_pattern_over_bit_for_bit() {
    let stage = staging("dtypes-handoff");
    let (served, _) =
        ServedModule::start(load_fresh(&stage, "kernel-cpu"), options(), None).unwrap();
    for (name, t) in every_pattern() {
        served.handle().put_resident(name, t).unwrap();
    }
    let swap = served.swap(load_fresh(&stage, "kernel-cpu")).unwrap();
    assert!(swap.import.dropped.is_empty(), "{:?}", swap.import);
    assert_eq!(served.label(), "kernel-cpu-v2");
    for (name, want) in every_pattern() {
        let got = served.handle().read_resident(name).unwrap();
        assert_same_bits("handoff", name, &got, &want);
    }
}

#[test]
fn a_workload_file_round_trips_every_pattern_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patterns.kwl");
    let mut w = Workload::new("patterns");
    for (name, t) in every_pattern() {
        w.steps.push(Step::Load {
            name: name.to_string(),
            tensor: t,
        });
    }
    // And as call arguments and expected outputs.
    let p = every_pattern();
    let call = Call::new("softmax_bf16").arg(p[1].1.clone());
    w.steps
        .push(Step::Call(CallStep::new(call, vec![p[1].1.clone()])));
    write(&w, &path).unwrap();
    let back = read(&path).unwrap();
    assert_eq!(back.steps.len(), w.steps.len());
    for (got, want) in back.steps.iter().zip(&w.steps) {
        match (got, want) {
            (Step::Load { name, tensor: g }, Step::Load { tensor: t, .. }) => {
                assert_same_bits("workload file", name, g, t)
            }
            (Step::Call(g), Step::Call(t)) => {
                assert_same_bits("workload file", "expected", &g.expected[0], &t.expected[0]);
                let (shared_state::Arg::Tensor(ga), shared_state::Arg::Tensor(ta)) =
                    (&g.call.args[0], &t.call.args[0])
                else {
                    panic!("the argument is a tensor");
                };
                assert_same_bits("workload file", "argument", ga, ta);
            }
            _ => panic!("steps changed kind"),
        }
    }
}

/// The declarations of the mixed-precision kernels only.
fn low_precision_kernels() -> KernelSet {
    let (decls, errors) = read_declarations(&workspace_root());
    assert!(errors.is_empty(), "declarations: {errors:?}");
    KernelSet::new(
        decls
            .into_iter()
            .filter(|d| MIXED_KERNELS.contains(&d.name.as_str()))
            .collect::<Vec<_>>(),
    )
}

const MIXED_KERNELS: [&str; 5] = [
    "matmul_f16",
    "matmul_bf16",
    "softmax_bf16",
    "dot_i8",
    "matmul_i8",
];

/// `kernels/workloads/mixed.toml`, built like the bundled workload.
pub fn mixed_workload() -> Workload {
    let spec = std::fs::read_to_string(workspace_root().join("kernels/workloads/mixed.toml"))
        .expect("kernels/workloads/mixed.toml");
    bundled_workload(&low_precision_kernels(), &spec).expect("the mixed workload")
}

fn outputs(handle: &EngineHandle, call: &Call) -> Vec<Tensor> {
    match handle
        .run(call.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", call.kernel))
    {
        Output::Value(t) => vec![t],
        Output::Values(ts) => ts,
        Output::Stored { name, .. } => vec![handle.read_resident(&name).unwrap()],
    }
}

#[test]
fn the_mixed_workload_replays_on_cpu_and_matches_the_reference_bit_for_bit() {
    let stage = staging("dtypes-mixed");
    let (cpu, _) =
        EngineHandle::start(Arc::new(load_fresh(&stage, "kernel-cpu")), &options(), None)
            .expect("start the cpu engine");
    let (reference, _) = EngineHandle::start(
        Arc::new(load_fresh(&stage, "kernel-reference-module")),
        &options(),
        None,
    )
    .expect("start the reference engine");
    let info = cpu.info().unwrap();
    for k in MIXED_KERNELS {
        assert!(
            info.kernels.iter().any(|n| n == k),
            "{k} on cpu: {:?}",
            info.kernels
        );
    }
    let mut w = mixed_workload();
    assert_eq!(w.call_count(), 8, "the calls of mixed.toml");
    for step in &w.steps {
        if let Step::Load { name, tensor } = step {
            cpu.put_resident(name, tensor.clone()).unwrap();
            reference.put_resident(name, tensor.clone()).unwrap();
        }
    }
    // 1. Every call on both: the same bits (the reference defines the order
    //    of operations, the CPU module follows it).
    let mut wrapped = false;
    for (call, _) in w.calls() {
        let (got, want) = (outputs(&cpu, call), outputs(&reference, call));
        assert_eq!(got.len(), want.len());
        for (g, r) in got.iter().zip(&want) {
            assert_same_bits("cpu vs reference", &call.kernel, g, r);
        }
        if call.kernel == "dot_i8" {
            let Some(shared_state::Arg::Tensor(x)) = call.args.first() else {
                continue;
            };
            if x.len() > 1 << 20 {
                // 2^20 + 1 uniform i8 products: E|sum| ~ 2^10 * 5000, but
                // the point is the wrapping path ran; the value is exact.
                wrapped = true;
            }
        }
    }
    assert!(wrapped, "the long dot ran");
    // 2. The replay path: expected outputs from the reference, stored in
    //    the workload, checked on cpu with the default tolerances.
    for step in &mut w.steps {
        if let Step::Call(c) = step {
            c.expected = outputs(&reference, &c.call);
            c.trials.clear();
        }
    }
    replay::load_state(&cpu, &w).expect("load the workload's buffers");
    let report = replay::replay(
        &cpu,
        &w,
        &ReplayOptions {
            timing: None,
            ..ReplayOptions::default()
        },
        None,
    );
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.calls.len(), 8);
}

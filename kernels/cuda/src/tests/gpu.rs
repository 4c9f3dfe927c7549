//! The engine on a real GPU: every kernel against the plain reference,
//! resident buffers, state swaps bit for bit, bad calls, and timings.
//! Without a GPU each test prints `skipped: no CUDA device (...)` and
//! passes, unless `KILN_REQUIRE_CUDA=1`.

use std::time::Instant;

use shared_state::{Call, Engine, ErrorKind, KernelSet, Output, Scalar, Snapshot, Tensor};

use super::support::{
    DOT, LAYER_NORM, MATMUL, PREFIX_SUM, SAXPY, SOFTMAX, STENCIL2D, assert_close, context,
    context_with, cuda_sources, declarations, engine_or_skip, layer_norm_ref, prefix_sum_ref,
    skip_unavailable, source,
};
use crate::engine::CudaEngine;
use kernel_reference::{self as reference, test_values};

fn value(engine: &mut CudaEngine, call: Call) -> Vec<f32> {
    let what = format!("{call:?}");
    match engine.run(call) {
        Ok(Output::Value(t)) => t.as_f32().unwrap().to_vec(),
        other => panic!("{}: {other:?}", &what[..what.len().min(200)]),
    }
}

fn t1(data: Vec<f32>) -> Tensor {
    Tensor::from_f32(&[data.len()], data)
}

fn t2(rows: usize, cols: usize, data: Vec<f32>) -> Tensor {
    Tensor::from_f32(&[rows, cols], data)
}

// 0, 1, primes, and sizes around the block and grid-stride limits.
const SIZES: &[usize] = &[
    0,
    1,
    2,
    3,
    31,
    255,
    256,
    257,
    4097,
    65_537,
    1 << 20,
    16_777_259,
];
const DIMS: &[usize] = &[0, 1, 2, 15, 16, 17, 33, 97];

#[test]
fn saxpy_and_dot_match_the_reference() {
    let Some(mut e) = engine_or_skip("saxpy_and_dot_match_the_reference", None) else {
        return;
    };
    for &n in SIZES {
        let (x, y) = (test_values(n, 1), test_values(n, 2));
        let got = value(
            &mut e,
            Call::new(SAXPY)
                .arg(t1(x.clone()))
                .arg(t1(y.clone()))
                .param("a", Scalar::F64(1.5)),
        );
        // Rounded multiply, rounded add: bit-identical to the CPU.
        assert_eq!(got, reference::saxpy(1.5, &x, &y), "saxpy n={n}");
        let got = value(
            &mut e,
            Call::new(SAXPY).arg(t1(x.clone())).arg(t1(y.clone())),
        );
        assert_eq!(got, reference::saxpy(2.0, &x, &y), "saxpy default a, n={n}");
        let got = value(&mut e, Call::new(DOT).arg(t1(x.clone())).arg(t1(y.clone())));
        let want = reference::dot(&x, &y);
        assert_eq!(got.len(), 1);
        assert!(
            (got[0] - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "dot n={n}: {} vs {want}",
            got[0]
        );
    }
}

#[test]
fn matmul_matches_the_reference_for_every_shape() {
    let Some(mut e) = engine_or_skip("matmul_matches_the_reference", None) else {
        return;
    };
    for &m in DIMS {
        for &k in &[0, 1, 7, 16, 17, 64, 65, 300] {
            for &n in &[0usize, 1, 13, 16, 64, 97] {
                let (a, b) = (test_values(m * k, 3), test_values(k * n, 4));
                let got = value(
                    &mut e,
                    Call::new(MATMUL)
                        .arg(t2(m, k, a.clone()))
                        .arg(t2(k, n, b.clone())),
                );
                let want = reference::matmul(&a, &b, (m, k, n));
                // f32 accumulation (maybe fused) vs an f64 reference.
                let tol = 2e-7 * (k as f32 + 1.0);
                assert_close(&got, &want, tol, &format!("matmul {m}x{k}x{n}"));
            }
        }
    }
    let (m, k, n) = (257, 513, 129);
    let (a, b) = (test_values(m * k, 5), test_values(k * n, 6));
    let got = value(
        &mut e,
        Call::new(MATMUL)
            .arg(t2(m, k, a.clone()))
            .arg(t2(k, n, b.clone())),
    );
    assert_close(
        &got,
        &reference::matmul(&a, &b, (m, k, n)),
        1e-4,
        "matmul 257x513x129",
    );
}

#[test]
fn stencil_and_softmax_match_the_reference() {
    let Some(mut e) = engine_or_skip("stencil_and_softmax_match_the_reference", None) else {
        return;
    };
    let mut shapes: Vec<(usize, usize)> = DIMS
        .iter()
        .flat_map(|&h| DIMS.iter().map(move |&w| (h, w)))
        .collect();
    shapes.extend([(1, 5000), (3, 1_000_003), (1025, 1023)]);
    for (h, w) in shapes {
        let g = test_values(h * w, 7);
        let got = value(
            &mut e,
            Call::new(STENCIL2D)
                .arg(t2(h, w, g.clone()))
                .param("alpha", Scalar::F64(0.2)),
        );
        assert_eq!(
            got,
            reference::stencil2d(&g, (h, w), 0.2),
            "stencil {h}x{w}"
        );
        let got = value(&mut e, Call::new(STENCIL2D).arg(t2(h, w, g.clone())));
        assert_eq!(
            got,
            reference::stencil2d(&g, (h, w), 0.1),
            "stencil default alpha {h}x{w}"
        );
        let got = value(&mut e, Call::new(SOFTMAX).arg(t2(h, w, g.clone())));
        assert_close(
            &got,
            &reference::softmax(&g, (h, w)),
            1e-5,
            &format!("softmax {h}x{w}"),
        );
    }
    let got = value(
        &mut e,
        Call::new(SOFTMAX).arg(t2(1, 3, vec![1000.0, 1000.0, -1000.0])),
    );
    assert_eq!(got, vec![0.5, 0.5, 0.0], "softmax is stable");
}

#[test]
fn resident_buffers_stay_on_the_device_and_feed_calls() {
    let Some(mut e) = engine_or_skip("resident_buffers_stay_on_the_device", None) else {
        return;
    };
    let n = 10_007;
    let (x, y) = (test_values(n, 8), test_values(n, 9));
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
    assert_eq!(e.read_resident("z").unwrap().as_f32().unwrap(), &z[..]);
    // A stored output feeds the next call; mixed resident and passed data.
    let got = value(&mut e, Call::new(DOT).resident("z").arg(t1(x.clone())));
    let want = reference::dot(&z, &x);
    assert!((got[0] - want).abs() <= 1e-6 * (1.0 + want.abs()));
    // Overwrite a resident with a call's output.
    e.run(Call::new(SAXPY).resident("z").resident("y").store_as("z"))
        .unwrap();
    assert_eq!(
        e.read_resident("z").unwrap().as_f32().unwrap(),
        &reference::saxpy(2.0, &z, &y)[..]
    );
    let names: Vec<String> = e.residents().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["x", "y", "z"]);
    // Any dtype can be resident and comes back bit for bit.
    let ints = Tensor::new(vec![3], shared_state::Buffer::I64(vec![-1, 0, i64::MAX])).unwrap();
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
}

fn busy_engine(test: &str) -> Option<CudaEngine> {
    let mut e = engine_or_skip(test, None)?;
    let g = test_values(64 * 48, 10);
    e.put_resident("grid", t2(64, 48, g)).unwrap();
    for _ in 0..3 {
        e.run(
            Call::new(STENCIL2D)
                .resident("grid")
                .param("alpha", Scalar::F64(0.2))
                .store_as("grid"),
        )
        .unwrap();
    }
    e.run(Call::new(SOFTMAX).resident("grid").store_as("probs"))
        .unwrap();
    e.put_resident("empty", Tensor::from_f32(&[0, 4], vec![]))
        .unwrap();
    Some(e)
}

#[test]
fn state_swaps_to_a_new_engine_bit_for_bit() {
    let Some(old) = busy_engine("state_swaps_to_a_new_engine") else {
        return;
    };
    let snapshot = old.export_state().unwrap();
    assert_eq!(
        snapshot.section_names(),
        [
            "counters/calls/softmax",
            "counters/calls/stencil2d",
            "resident/empty",
            "resident/grid",
            "resident/probs"
        ]
    );
    assert_eq!(
        snapshot.get("counters/calls/stencil2d"),
        Some(&shared_state::Section::Scalar(Scalar::I64(3)))
    );
    // Like the host: the new version is created while the old one is alive,
    // through the exported factory (panic guard, import report).
    let created = crate::kiln_create_engine(context("swap-v2", &[]), Some(snapshot.clone()))
        .unwrap_or_else(|e| panic!("second engine: {e}"));
    assert!(created.report.is_lossless(), "{}", created.report);
    assert_eq!(created.report.restored.len(), 5);
    let mut new = created.engine;
    drop(old);
    let again = new.export_state().unwrap();
    assert!(again.bit_eq(&snapshot), "state changed in the swap");
    // The new engine serves on the imported state.
    new.run(Call::new(STENCIL2D).resident("grid").store_as("grid"))
        .unwrap();
    let after = new.export_state().unwrap();
    assert_eq!(
        after.get("counters/calls/stencil2d"),
        Some(&shared_state::Section::Scalar(Scalar::I64(4)))
    );
    assert!(!after.bit_eq(&snapshot));
}

#[test]
fn a_cpu_snapshot_imports_and_reports_what_it_drops() {
    let mut snapshot = Snapshot::new("kernel-cpu", "cpu");
    let g = test_values(12, 11);
    snapshot.insert_tensor("resident/g", t2(3, 4, g.clone()));
    snapshot.insert_scalar("tuning/tile", Scalar::I64(64));
    snapshot.insert_scalar("counters/calls/matmul", Scalar::I64(7));
    let created = match crate::kiln_create_engine(context("from-cpu", &[]), Some(snapshot)) {
        Ok(c) => c,
        Err(err) => return skip_unavailable("a_cpu_snapshot_imports", &err),
    };
    assert_eq!(created.report.dropped, ["tuning/tile"]);
    assert_eq!(
        created.report.restored,
        ["resident/g", "counters/calls/matmul"]
    );
    assert_eq!(created.report.bytes, 48 + 8);
    let t = created.engine.read_resident("g").unwrap();
    assert_eq!(t.shape(), &[3, 4]);
    assert_eq!(t.as_f32().unwrap(), &g[..]);
}

#[test]
fn bad_options_and_calls_are_clear_errors() {
    let err = match CudaEngine::create(context("bad-device", &[("device", "first")]), None) {
        Ok(_) => panic!("device=first accepted"),
        Err(err) => err,
    };
    // Checked before the driver is looked for: the same error everywhere.
    assert_eq!(err.kind, ErrorKind::BadCall, "{err}");
    assert!(err.message.contains("device=\"first\""), "{err}");
    let Some(mut e) = engine_or_skip("bad_options_and_calls_are_clear_errors", None) else {
        return;
    };
    match CudaEngine::create(context("no-such-device", &[("device", "99")]), None) {
        Ok(_) => panic!("device 99 accepted"),
        Err(err) => {
            assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
            assert!(err.message.contains("CUDA device 99"), "{err}");
        }
    }
    let err = e
        .run(
            Call::new(MATMUL)
                .arg(t2(2, 3, test_values(6, 1)))
                .arg(t2(4, 2, test_values(8, 1))),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(
        err.message
            .contains("matmul: dim k is 4 in input b but 3 in input a"),
        "{err}"
    );
    let err = e
        .run(
            Call::new(SAXPY)
                .arg(t1(vec![1.0]))
                .arg(t1(vec![1.0]))
                .param("a", Scalar::Text("x".into())),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    let err = e.run(Call::new("fft")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownKernel);
    // Nothing was counted for failed calls.
    assert!(e.export_state().unwrap().is_empty());
    let info = e.info().unwrap();
    assert_eq!(info.backend, "cuda");
    assert_eq!(info.kernels.len(), 7, "{:?}", info.kernels);
    assert!(info.notes.contains_key("compile_ms/kernels/saxpy.cu"));
}

#[test]
fn layer_norm_and_prefix_sum_match_the_reference() {
    let Some(mut e) = engine_or_skip("layer_norm_and_prefix_sum_match_the_reference", None) else {
        return;
    };
    for &(rows, cols) in &[
        (0, 0),
        (3, 0),
        (1, 1),
        (2, 7),
        (4, 257),
        (7, 1031),
        (600, 13),
        (70_000, 3),
    ] {
        let x: Vec<f32> = test_values(rows * cols, 21)
            .iter()
            .map(|v| v * 10.0 + 3.0)
            .collect();
        let (gamma, beta) = (test_values(cols, 22), test_values(cols, 23));
        let got = value(
            &mut e,
            Call::new(LAYER_NORM)
                .arg(t2(rows, cols, x.clone()))
                .arg(t1(gamma.clone()))
                .arg(t1(beta.clone()))
                .param("eps", Scalar::F64(0.25)),
        );
        assert_close(
            &got,
            &layer_norm_ref(&x, &gamma, &beta, (rows, cols), 0.25),
            1e-5,
            &format!("layer_norm {rows}x{cols}"),
        );
    }
    // Integers: every partial sum is exact, so the scan must be too.
    for &n in &[
        0, 1, 255, 1023, 1024, 1025, 65_537, 1_048_577, 16_777_259, 67_200_001,
    ] {
        let x: Vec<f32> = test_values(n, 31)
            .iter()
            .map(|v| (v * 4.0).round())
            .collect();
        let got = value(&mut e, Call::new(PREFIX_SUM).arg(t1(x.clone())));
        let want = prefix_sum_ref(&x);
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            panic!(
                "prefix_sum n={n}: element {i}: got {}, want {}",
                got[i], want[i]
            );
        }
    }
}

#[test]
fn a_new_kernel_is_a_declaration_and_a_cu_file() {
    let decl = kiln_decl::parse(
        std::path::Path::new("kernels/declarations/split.toml"),
        r#"
inputs = ["x: f32[n]"]
outputs = ["pos: f32[n]", "neg: f32[n]"]
params = { shift = 2 }
[[launch]]
group = [128]
workgroups = ["ceil_div(n, 128)"]
"#,
    )
    .unwrap();
    let cu = "extern \"C\" __global__ void split(const float* x, float* pos, float* neg, unsigned int n, int shift) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { pos[i] = fmaxf(x[i], 0.0f) + (float)shift; neg[i] = fminf(x[i], 0.0f); }
}
";
    let mut decls: Vec<_> = declarations().iter().cloned().collect();
    decls.push(decl);
    let mut sources = cuda_sources();
    sources.push(source("kernels/split.cu", cu));
    let ctx = context_with("split", &[], KernelSet::new(decls), sources);
    let mut e = match CudaEngine::create(ctx, None) {
        Ok((e, _)) => e,
        Err(err) => return skip_unavailable("a_new_kernel_is_a_declaration_and_a_cu_file", &err),
    };
    let x = test_values(1000, 3);
    let Output::Values(outs) = e
        .run(
            Call::new("split")
                .arg(t1(x.clone()))
                .param("shift", Scalar::I64(-1)),
        )
        .unwrap()
    else {
        panic!("two outputs come back as Values");
    };
    let pos: Vec<f32> = x.iter().map(|v| v.max(0.0) - 1.0).collect();
    let neg: Vec<f32> = x.iter().map(|v| v.min(0.0)).collect();
    assert_eq!(outs[0].as_f32().unwrap(), &pos[..]);
    assert_eq!(outs[1].as_f32().unwrap(), &neg[..]);
}

/// A `.cu` edit is a new engine created with the edited source and the old
/// engine's state (NVRTC at creation, no cargo build); a broken edit fails
/// that creation and the old engine keeps serving.
#[test]
fn an_edited_cu_file_takes_effect_in_the_next_engine_with_the_state() {
    let Some(mut old) = engine_or_skip("an_edited_cu_file_takes_effect", None) else {
        return;
    };
    let n = 3000;
    let (x, y) = (test_values(n, 61), test_values(n, 62));
    old.put_resident("x", t1(x.clone())).unwrap();
    old.put_resident("y", t1(y.clone())).unwrap();
    let call = Call::new(SAXPY).resident("x").resident("y");
    assert_eq!(value(&mut old, call.clone()), reference::saxpy(2.0, &x, &y));
    let edit = |from: &str, to: &str| -> Vec<shared_state::SourceFile> {
        cuda_sources()
            .into_iter()
            .map(|s| {
                if s.path == "kernels/saxpy.cu" {
                    assert!(s.text.contains(from));
                    source(&s.path, &s.text.replace(from, to))
                } else {
                    s
                }
            })
            .collect()
    };
    let mut snapshot = old.export_state().unwrap();
    let broken = edit("__fadd_rn(", "__fadd_rn((");
    let ctx = context_with("broken", &[], declarations(), broken);
    let err = match CudaEngine::create(ctx, Some(&mut snapshot)) {
        Ok(_) => panic!("a broken .cu file was accepted"),
        Err(e) => e,
    };
    assert!(err.message.contains("kernels/saxpy.cu("), "{err}");
    assert_eq!(value(&mut old, call.clone()), reference::saxpy(2.0, &x, &y));
    let mut snapshot = old.export_state().unwrap();
    let started = Instant::now();
    let edited = edit("__fadd_rn(", "__fsub_rn(");
    let ctx = context_with("edited", &[], declarations(), edited);
    let (mut new, _) = CudaEngine::create(ctx, Some(&mut snapshot)).unwrap();
    println!(
        "engine with an edited saxpy.cu created in {:.1} ms (NVRTC {:.1} ms for all files)",
        started.elapsed().as_secs_f64() * 1e3,
        new.total_compile_time().as_secs_f64() * 1e3
    );
    drop(old);
    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| 2.0 * a - b).collect();
    assert_eq!(value(&mut new, call), want);
}

/// Prints per-kernel timings on resident data (upload and download not
/// included; every call waits for the GPU). Asserts only that the calls
/// succeed: never wall-clock speed.
#[test]
fn per_kernel_timings() {
    let Some(mut e) = engine_or_skip("per_kernel_timings", None) else {
        return;
    };
    let n = 1 << 24;
    let side = 2048;
    let mm = 1024;
    e.put_resident("x", t1(test_values(n, 1))).unwrap();
    e.put_resident("y", t1(test_values(n, 2))).unwrap();
    e.put_resident("grid", t2(side, side, test_values(side * side, 3)))
        .unwrap();
    e.put_resident("a", t2(mm, mm, test_values(mm * mm, 4)))
        .unwrap();
    e.put_resident("b", t2(mm, mm, test_values(mm * mm, 5)))
        .unwrap();
    e.put_resident("gamma", t1(test_values(side, 6))).unwrap();
    e.put_resident("beta", t1(test_values(side, 7))).unwrap();
    let cases: Vec<(String, Call, f64)> = vec![
        (
            "saxpy n=2^24".to_string(),
            Call::new(SAXPY).resident("x").resident("y").store_as("o1"),
            3.0 * 4.0 * n as f64,
        ),
        (
            "dot n=2^24".to_string(),
            Call::new(DOT).resident("x").resident("y").store_as("o2"),
            2.0 * 4.0 * n as f64,
        ),
        (
            format!("matmul {mm}x{mm}x{mm}"),
            Call::new(MATMUL).resident("a").resident("b").store_as("o3"),
            0.0,
        ),
        (
            format!("stencil2d {side}x{side}"),
            Call::new(STENCIL2D).resident("grid").store_as("o4"),
            2.0 * 4.0 * (side * side) as f64,
        ),
        (
            format!("softmax {side}x{side}"),
            Call::new(SOFTMAX).resident("grid").store_as("o5"),
            2.0 * 4.0 * (side * side) as f64,
        ),
        (
            format!("layer_norm {side}x{side}"),
            Call::new(LAYER_NORM)
                .resident("grid")
                .resident("gamma")
                .resident("beta")
                .store_as("o6"),
            2.0 * 4.0 * (side * side) as f64,
        ),
        (
            "prefix_sum n=2^24".to_string(),
            Call::new(PREFIX_SUM).resident("x").store_as("o7"),
            2.0 * 4.0 * n as f64,
        ),
    ];
    let device = e.info().unwrap().device;
    println!("timings on {device} (median of 20, after 3 warm-up calls)");
    for (name, call, bytes) in cases {
        for _ in 0..3 {
            e.run(call.clone()).unwrap();
        }
        let samples: Vec<f64> = (0..20)
            .map(|_| {
                let t = Instant::now();
                e.run(call.clone()).unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect();
        let secs = kiln_stats::median(&samples);
        let rate = if bytes > 0.0 {
            format!("{:.0} GB/s", bytes / secs / 1e9)
        } else {
            format!("{:.0} GFLOP/s", 2.0 * (mm as f64).powi(3) / secs / 1e9)
        };
        println!("timing {name:<22} {:>9.3} ms  {rate}", secs * 1e3);
    }
    // The outputs are right too.
    let dot = e.read_resident("o2").unwrap();
    let want = reference::dot(&test_values(n, 1), &test_values(n, 2));
    assert!((dot.as_f32().unwrap()[0] - want).abs() <= 1e-5 * (1.0 + want.abs()));
}

/// The PTX cache through a real handoff on the GPU: the next engine with
/// the same sources runs NVRTC for none of them and computes the same.
#[test]
fn the_next_engine_takes_unchanged_ptx_from_the_snapshot() {
    let Some(first) = engine_or_skip("the_next_engine_takes_unchanged_ptx", None) else {
        return;
    };
    let reused = |e: &CudaEngine, what: &str| match e.info().unwrap().notes.get(what) {
        Some(Scalar::I64(n)) => *n,
        other => panic!("{what}: {other:?}"),
    };
    let kernels = first.info().unwrap().kernels.len() as i64;
    assert_eq!(reused(&first, "ptx/reused"), 0);
    let mut state = first.export_state().unwrap();
    let Some(mut next) = engine_or_skip("the_next_engine_takes_unchanged_ptx", Some(&mut state))
    else {
        return;
    };
    assert_eq!(reused(&next, "ptx/reused"), kernels);
    assert_eq!(reused(&next, "ptx/compiled"), 0);
    let (x, y) = (test_values(1000, 81), test_values(1000, 82));
    let got = value(
        &mut next,
        Call::new("saxpy").arg(t1(x.clone())).arg(t1(y.clone())),
    );
    assert_eq!(got, reference::saxpy(2.0, &x, &y));
}

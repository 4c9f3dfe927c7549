//! CUDA's own checks on a real GPU: the `device` option, compile times in
//! the engine's notes, per-kernel timings, and the PTX cache through a real
//! handoff. Every kernel against the reference, residents, the state swap,
//! bad calls, new kernels and `.cu` edits are the conformance suite's
//! (`kernels/conformance`). Without a GPU each test prints
//! `TEST: skipped: no CUDA device (...)` and passes, unless
//! `KILN_REQUIRE_CUDA=1`.

use std::time::Instant;

use kernel_conformance::support::{
    DOT, LAYER_NORM, MATMUL, PREFIX_SUM, SAXPY, SOFTMAX, STENCIL2D, context, engine, engine_from,
    run_f32, t1, t2,
};
use kernel_reference::{self as reference, test_values};
use shared_state::{Call, Engine, ErrorKind, Scalar};

use super::Cuda;
use crate::engine::CudaEngine;

#[test]
fn the_device_option_is_checked_and_info_names_compile_times() {
    const TEST: &str = "the_device_option_is_checked_and_info_names_compile_times";
    let err = match CudaEngine::create(context::<Cuda>(TEST, &[("device", "first")]), None) {
        Ok(_) => panic!("device=first accepted"),
        Err(err) => err,
    };
    // Checked before the driver is looked for: the same error everywhere.
    assert_eq!(err.kind, ErrorKind::BadCall, "{err}");
    assert!(err.message.contains("device=\"first\""), "{err}");
    let Some(e) = engine::<Cuda>(TEST) else {
        return;
    };
    match CudaEngine::create(context::<Cuda>(TEST, &[("device", "99")]), None) {
        Ok(_) => panic!("device 99 accepted"),
        Err(err) => {
            assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
            assert!(err.message.contains("CUDA device 99"), "{err}");
        }
    }
    let info = e.info().unwrap();
    assert_eq!(info.backend, "cuda");
    assert!(info.notes.contains_key("compile_ms/kernels/saxpy.cu"));
}

/// Prints per-kernel timings on resident data (upload and download not
/// included; every call waits for the GPU). Asserts only that the calls
/// succeed: never wall-clock speed.
#[test]
fn per_kernel_timings() {
    let Some(mut e) = engine::<Cuda>("per_kernel_timings") else {
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
    const TEST: &str = "the_next_engine_takes_unchanged_ptx_from_the_snapshot";
    let Some(first) = engine::<Cuda>(TEST) else {
        return;
    };
    let reused = |e: &CudaEngine, what: &str| match e.info().unwrap().notes.get(what) {
        Some(Scalar::I64(n)) => *n,
        other => panic!("{what}: {other:?}"),
    };
    let kernels = first.info().unwrap().kernels.len() as i64;
    assert_eq!(reused(&first, "ptx/reused"), 0);
    let mut state = first.export_state().unwrap();
    let Some(mut next) = engine_from::<Cuda>(TEST, context::<Cuda>(TEST, &[]), Some(&mut state))
    else {
        return;
    };
    assert_eq!(reused(&next, "ptx/reused"), kernels);
    assert_eq!(reused(&next, "ptx/compiled"), 0);
    let (x, y) = (test_values(1000, 81), test_values(1000, 82));
    let got = run_f32(
        &mut next,
        Call::new(SAXPY).arg(t1(x.clone())).arg(t1(y.clone())),
    );
    assert_eq!(got, reference::saxpy(2.0, &x, &y));
}

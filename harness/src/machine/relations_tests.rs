//! Relations between the bundled kernels' roofline points, through the
//! functions the replay table uses (`work_of` over the declaration's work
//! at fixed dims, then `RoofSource::rates_only` / `achieved`).

use shared_state::Dims;

use super::replay_roof::RoofSource;
use super::roofline::{Bound, Roof, achieved};
use crate::workload::replay::work_of;

fn dims(pairs: &[(&str, u64)]) -> Dims {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn intensity(kernel: &str, at: &Dims) -> f64 {
    let set = crate::swap::version_files::declarations(&crate::workspace::built_workspace_root())
        .expect("the bundled declarations parse");
    let decl = set.get(kernel).expect("bundled kernel declared");
    let work = work_of(decl, at).expect("work declared");
    // Any positive time: intensity does not depend on it.
    RoofSource::rates_only(1e-3, work)
        .and_then(|a| a.intensity)
        .expect("flops and bytes declared")
}

#[test]
fn a_large_matmul_is_more_arithmetically_intense_than_a_saxpy() {
    let matmul = intensity("matmul", &dims(&[("m", 1024), ("k", 1024), ("n", 1024)]));
    let saxpy = intensity("saxpy", &dims(&[("n", 1 << 24)]));
    // saxpy: 2n flops over 12n bytes; matmul: 2mnk over 4(mk+kn+mn).
    assert!(
        (saxpy - 2.0 / 12.0).abs() < 1e-12,
        "saxpy intensity {saxpy}"
    );
    let expected = 2.0 * 1024f64.powi(3) / (4.0 * 3.0 * 1024f64.powi(2));
    assert!(
        (matmul - expected).abs() < 1e-9,
        "matmul intensity {matmul}"
    );
    assert!(matmul > 100.0 * saxpy, "matmul {matmul} vs saxpy {saxpy}");

    // On one roof (fixed numbers) saxpy is memory-bound, the large matmul
    // compute-bound.
    let roof = Roof {
        bandwidth_gbs: 20.0,
        compute_gflops: 200.0,
        compute_i8_gops: None,
    };
    let set = crate::swap::version_files::declarations(&crate::workspace::built_workspace_root())
        .unwrap();
    let point = |kernel: &str, at: &Dims| {
        let work = work_of(set.get(kernel).unwrap(), at).unwrap();
        achieved(1e-3, work, roof).unwrap()
    };
    assert_eq!(
        point("saxpy", &dims(&[("n", 1 << 24)])).bound,
        Bound::Memory
    );
    assert_eq!(
        point("matmul", &dims(&[("m", 1024), ("k", 1024), ("n", 1024)])).bound,
        Bound::Compute
    );
}

#[test]
fn low_precision_calls_name_the_compute_peak_they_are_judged_against() {
    use super::roofline::{Arithmetic, ComputePeak};
    let set = crate::swap::version_files::declarations(&crate::workspace::built_workspace_root())
        .unwrap();
    let mnk = dims(&[("m", 512), ("k", 512), ("n", 512)]);
    let work = |kernel: &str, at: &Dims| work_of(set.get(kernel).unwrap(), at).unwrap();
    // What the replay table's rows are: f32 unnamed, f16/bf16 judged by
    // the f32 peak (the CPU kernels widen them to f32 and multiply-add in
    // f32) and saying so, i8 by the i8 peak where one was measured.
    let roof = Roof {
        bandwidth_gbs: 20.0,
        compute_gflops: 200.0,
        compute_i8_gops: Some(800.0),
    };
    let no_i8 = Roof {
        compute_i8_gops: None,
        ..roof
    };
    for (kernel, arithmetic, text, text_without_i8) in [
        ("matmul", Arithmetic::F32, "compute", "compute"),
        (
            "matmul_f16",
            Arithmetic::Other,
            "f32 compute",
            "f32 compute",
        ),
        (
            "matmul_bf16",
            Arithmetic::Other,
            "f32 compute",
            "f32 compute",
        ),
        ("matmul_i8", Arithmetic::I8, "i8 compute", "f32 compute"),
    ] {
        let w = work(kernel, &mnk);
        assert_eq!(w.arithmetic, arithmetic, "{kernel}");
        for (roof, text) in [(roof, text), (no_i8, text_without_i8)] {
            let p = achieved(1.0, w, roof).unwrap();
            assert_eq!(p.bound, Bound::Compute, "{kernel}");
            assert!(
                p.roofline_text().ends_with(&format!("% {text}")),
                "{kernel}: {p}"
            );
        }
    }
    let i8 = achieved(1.0, work("matmul_i8", &mnk), roof).unwrap();
    assert_eq!((i8.compute_peak, i8.attainable), (ComputePeak::I8, 800.0));
    assert_eq!(
        work("softmax_bf16", &dims(&[("rows", 64), ("cols", 64)])).arithmetic,
        Arithmetic::Other
    );
    assert_eq!(
        work("dot_i8", &dims(&[("n", 1 << 20)])).arithmetic,
        Arithmetic::I8
    );
}

//! Comparison of outputs with expected tensors, and tolerances from
//! `kiln.toml`.

mod workload_util;

use std::path::Path;

use kiln::workload::compare::{
    Scaling, Tolerance, Tolerances, compare, reduction_len, ulp_distance_f32, ulp_distance_f64,
};
use kiln::workload::reference;
use kiln::workload::{GenSpec, Step, default_workload, generate};
use shared_state::{Buffer, DType, Tensor};
use workload_util::scratch_dir;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape, v.to_vec())
}

const TIGHT: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 0.0,
    ulps: 0,
    scale: Scaling::None,
};

#[test]
fn ulp_distances() {
    assert_eq!(ulp_distance_f32(1.0, 1.0), 0);
    assert_eq!(
        ulp_distance_f32(1.0, f32::from_bits(1.0f32.to_bits() + 3)),
        3
    );
    assert_eq!(ulp_distance_f32(0.0, -0.0), 0);
    let tiny = f32::from_bits(1);
    assert_eq!(ulp_distance_f32(tiny, -tiny), 2);
    assert_eq!(
        ulp_distance_f32(-1.0, -f32::from_bits(1.0f32.to_bits() + 1)),
        1
    );
    assert_eq!(ulp_distance_f64(1.0, 1.0 + f64::EPSILON), 1);
    assert_eq!(
        ulp_distance_f64(f64::MAX, -f64::MAX),
        2 * f64::MAX.to_bits()
    );
}

#[test]
fn equal_tensors_pass_with_a_one_line_summary() {
    let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let c = compare(&a, &a.clone(), &TIGHT);
    assert!(c.passed());
    assert_eq!((c.elements, c.mismatches, c.max_ulps), (4, 0, 0));
    assert!(
        c.summary().starts_with("ok: 4 elements, max abs 0.00e0"),
        "{c}"
    );
    assert!(!c.summary().contains('\n'));
}

#[test]
fn errors_are_measured_and_the_first_mismatch_located() {
    let want = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 0.0]);
    let got = t(&[2, 3], &[1.0, 2.0, 3.0, 4.5, 5.0, 0.25]);
    let c = compare(&want, &got, &TIGHT);
    assert!(!c.passed());
    assert_eq!(c.mismatches, 2);
    assert_eq!(c.max_abs, 0.5);
    assert_eq!(
        c.max_rel, 0.125,
        "rel ignores elements whose expected value is 0"
    );
    assert_eq!(c.first_mismatch, Some((3, 4.5, 4.0)));
    assert!(
        c.summary().starts_with(
            "FAIL: 2 of 6 elements beyond tolerance; first at [1, 0]: got 4.5, want 4"
        ),
        "{c}"
    );
    // a looser tolerance lets the same errors through
    let loose = Tolerance {
        abs: 0.3,
        rel: 0.1,
        ..TIGHT
    };
    assert!(compare(&want, &got, &loose).passed());
}

#[test]
fn ulps_alone_can_pass_an_element() {
    let want = t(&[1], &[1e30]);
    let got = t(&[1], &[f32::from_bits(1e30f32.to_bits() + 2)]);
    assert!(!compare(&want, &got, &TIGHT).passed());
    let by_ulps = Tolerance { ulps: 2, ..TIGHT };
    let c = compare(&want, &got, &by_ulps);
    assert!(c.passed(), "{c}");
    assert_eq!(c.max_ulps, 2);
}

#[test]
fn nan_and_inf_where_the_reference_is_finite_fail() {
    let want = t(&[4], &[1.0, 2.0, f32::NAN, f32::INFINITY]);
    let got = t(
        &[4],
        &[f32::NAN, f32::NEG_INFINITY, f32::NAN, f32::INFINITY],
    );
    let c = compare(&want, &got, &Tolerance { abs: 1e9, ..TIGHT });
    assert_eq!(c.non_finite, 2);
    assert_eq!(c.mismatches, 2, "NaN matches NaN, inf matches inf");
    assert!(
        c.summary()
            .contains("2 of 4 elements beyond tolerance (2 NaN/inf where the reference is finite)"),
        "{c}"
    );
    let c = compare(&want, &t(&[4], &[1.0, 2.0, 0.0, f32::INFINITY]), &TIGHT);
    assert_eq!(
        (c.mismatches, c.non_finite),
        (1, 0),
        "a number where NaN was expected"
    );
}

#[test]
fn shape_and_dtype_mismatches_are_reported() {
    let want = t(&[2, 3], &[0.0; 6]);
    let c = compare(&want, &t(&[3, 2], &[0.0; 6]), &TIGHT);
    assert!(!c.passed());
    assert_eq!(c.summary(), "FAIL: output is f32[3x2], expected f32[2x3]");
    let f64s = Tensor::new(vec![2, 3], Buffer::F64(vec![0.0; 6])).unwrap();
    let c = compare(&want, &f64s, &TIGHT);
    assert_eq!(c.summary(), "FAIL: output is f64[2x3], expected f32[2x3]");
}

#[test]
fn integers_compare_exactly() {
    let want = Tensor::new(vec![3], Buffer::I32(vec![1, 2, 3])).unwrap();
    let got = Tensor::new(vec![3], Buffer::I32(vec![1, 2, 4])).unwrap();
    let tol = Tolerances::default().get("anything", DType::I32);
    assert_eq!(tol, Tolerance::EXACT);
    let c = compare(&want, &got, &tol);
    assert_eq!((c.mismatches, c.max_abs), (1, 1.0));
    assert_eq!(c.first_mismatch, Some((2, 4.0, 3.0)));
    assert!(compare(&want, &want.clone(), &tol).passed());
}

#[test]
fn reduction_kernels_scale_with_their_length() {
    let shapes = |v: &[&[usize]]| v.iter().map(|s| s.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        reduction_len("matmul", &shapes(&[&[8, 256], &[256, 4]])),
        256
    );
    assert_eq!(reduction_len("dot", &shapes(&[&[1000], &[1000]])), 1000);
    assert_eq!(reduction_len("softmax", &shapes(&[&[4, 64]])), 64);
    assert_eq!(reduction_len("saxpy", &shapes(&[&[1000], &[1000]])), 1);
    let tol = Tolerances::default();
    let base = tol.get("matmul", DType::F32);
    let scaled = tol.for_call("matmul", DType::F32, 256);
    assert_eq!(scaled.abs, base.abs * 16.0);
    assert_eq!(scaled.rel, base.rel * 16.0);
    assert_eq!(
        tol.for_call("saxpy", DType::F32, 256),
        tol.get("saxpy", DType::F32)
    );
    // f64 is far tighter than f32
    assert!(tol.get("matmul", DType::F64).rel < base.rel * 1e-6);
}

#[test]
fn for_workload_follows_residents_to_the_reduction_length() {
    let w = default_workload();
    let tol = Tolerances::default();
    let per_step = tol.for_workload(&w);
    for (step, t) in w.steps.iter().zip(&per_step) {
        match step {
            Step::Load { .. } => assert!(t.is_none()),
            Step::Call { call, .. } => {
                let n = match call.kernel.as_str() {
                    "matmul" => 256, // a's k, with b the resident "weights"
                    "dot" => 1 << 20,
                    "softmax" => 1024,
                    _ => 1,
                };
                assert_eq!(
                    t.unwrap(),
                    tol.for_call(&call.kernel, DType::F32, n),
                    "{}",
                    call.kernel
                );
            }
        }
    }
}

/// A kernel that sums in f32 in order (as a simple backend would) passes
/// the default tolerance; one that drops a term of the sum does not.
#[test]
fn default_tolerances_accept_f32_rounding_and_catch_real_errors() {
    let w = generate(&GenSpec::parse("matmul", "64x1024x48", 3).unwrap()).unwrap();
    let (call, expected) = w.calls().next().unwrap();
    let (a, b) = match (&call.args[0], &call.args[1]) {
        (shared_state::Arg::Tensor(a), shared_state::Arg::Tensor(b)) => {
            (a.as_f32().unwrap(), b.as_f32().unwrap())
        }
        _ => unreachable!(),
    };
    let (m, k, n) = (64, 1024, 48);
    let naive = |skip: Option<usize>| {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f32;
                for kk in 0..k {
                    if Some(kk) != skip {
                        s += a[i * k + kk] * b[kk * n + j];
                    }
                }
                c[i * n + j] = s;
            }
        }
        Tensor::from_f32(&[m, n], c)
    };
    let tol = Tolerances::default().for_call("matmul", DType::F32, k);
    let good = compare(expected.unwrap(), &naive(None), &tol);
    assert!(good.passed(), "{good}");
    assert!(good.max_abs > 0.0, "f32 sums do round");
    let bad = compare(expected.unwrap(), &naive(Some(500)), &tol);
    assert!(!bad.passed(), "{bad}");
}

#[test]
fn reference_outputs_match_a_workloads_expected_outputs() {
    // expected outputs survive the file and agree with a fresh reference run
    let w = default_workload();
    let back = kiln::workload::format::to_bytes(&w).unwrap();
    let back = workload_util::read_bytes(&back, "default.kwl").unwrap();
    let outputs = reference::expected_outputs(&back).unwrap();
    let tolerances = Tolerances::default().for_workload(&back);
    for (i, step) in back.steps.iter().enumerate() {
        if let Step::Call {
            expected: Some(e), ..
        } = step
        {
            let c = compare(e, outputs[i].as_ref().unwrap(), &tolerances[i].unwrap());
            assert!(c.passed() && c.max_abs == 0.0, "step {i}: {c}");
        }
    }
}

#[test]
fn kiln_toml_overrides_defaults() {
    let dir = scratch_dir("kiln_toml");
    let path = dir.join("kiln.toml");
    std::fs::write(
        &path,
        r#"
[build]
something = "unrelated"

[tolerance.matmul]
abs = 0.5
rel = 1
scale = "linear"

[tolerance.matmul.f64]
rel = 1e-12

[tolerance.default]
ulps = 3
"#,
    )
    .unwrap();
    let tol = Tolerances::load(&path).unwrap();
    let m32 = tol.get("matmul", DType::F32);
    assert_eq!((m32.abs, m32.rel, m32.scale), (0.5, 1.0, Scaling::Linear));
    assert_eq!(
        m32.ulps,
        Tolerances::default().get("matmul", DType::F32).ulps
    );
    let m64 = tol.get("matmul", DType::F64);
    assert_eq!((m64.abs, m64.rel), (0.5, 1e-12));
    assert_eq!(tol.for_call("matmul", DType::F32, 10).abs, 5.0);
    assert_eq!(tol.get("fft", DType::F32).ulps, 3, "[tolerance.default]");
    assert_eq!(
        tol.get("saxpy", DType::F32),
        Tolerances::default().get("saxpy", DType::F32)
    );
}

fn config_error(text: &str) -> String {
    Tolerances::from_toml(text, Path::new("kiln.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_tolerance_settings_are_refused_naming_file_and_key() {
    assert_eq!(
        config_error("[tolerance.matmul]\nabs = -1\n"),
        "kiln.toml: tolerance.matmul.abs must be a number >= 0, got -1"
    );
    assert_eq!(
        config_error("[tolerance.dot]\nrelative = 1e-3\n"),
        "kiln.toml: tolerance.dot: unknown key \"relative\" (known: abs, rel, ulps, scale, f32, f64)"
    );
    assert_eq!(
        config_error("[tolerance.dot]\nscale = \"log\"\n"),
        "kiln.toml: tolerance.dot.scale must be \"none\", \"sqrt\" or \"linear\", got \"log\""
    );
    assert_eq!(
        config_error("[tolerance.dot.f64]\nulps = 1.5\n"),
        "kiln.toml: tolerance.dot.f64.ulps must be a whole number >= 0, got 1.5"
    );
    assert_eq!(
        config_error("tolerance = 3\n"),
        "kiln.toml: [tolerance] must be a table"
    );
    assert!(config_error("[tolerance\n").starts_with("kiln.toml: not valid TOML: "));
    let e = Tolerances::load(Path::new("/nonexistent/kiln.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/kiln.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn for_workload_tracks_shapes_through_store_as() {
    use kiln::workload::Workload;
    use shared_state::Call;
    let mut w = Workload::new("chain");
    w.call(
        Call::new("matmul")
            .arg(Tensor::from_f32(&[4, 9], vec![0.0; 36]))
            .arg(Tensor::from_f32(&[9, 25], vec![0.0; 225]))
            .store_as("c"),
        None,
    );
    w.call(Call::new("softmax").resident("c"), None);
    let tol = Tolerances::default();
    let per_step = tol.for_workload(&w);
    assert_eq!(per_step[0], Some(tol.for_call("matmul", DType::F32, 9)));
    // softmax over the rows of c = 4x25: a reduction of 25
    assert_eq!(per_step[1], Some(tol.for_call("softmax", DType::F32, 25)));
}

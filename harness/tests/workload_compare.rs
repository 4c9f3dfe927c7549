//! Comparison of outputs with expected tensors, and tolerances: per-dtype
//! defaults, the declarations' overrides and `kiln.toml`.

mod workload_util;

use std::path::Path;

use kiln::workload::compare::{
    Scaling, Tolerance, Tolerances, compare, reduction_len, ulp_distance_f32, ulp_distance_f64,
};
use kiln::workload::{GenSpec, generate};
use shared_state::{Buffer, DType, Dims, KernelSet, Tensor};
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
    let f64s = Tensor::new(vec![2, 3], Buffer::F64(vec![0.0; 6].into())).unwrap();
    let c = compare(&want, &f64s, &TIGHT);
    assert_eq!(c.summary(), "FAIL: output is f64[2x3], expected f32[2x3]");
}

/// The bundled declarations (kernels/declarations/).
fn declared() -> KernelSet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (decls, errors) = kiln_decl::load_dir(&root, &root.join(kiln_decl::DECLARATIONS_DIR));
    assert!(errors.is_empty(), "{errors:?}");
    KernelSet::new(decls)
}

fn dims(pairs: &[(&str, u64)]) -> Dims {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn integers_compare_exactly() {
    let want = Tensor::new(vec![3], Buffer::I32(vec![1, 2, 3].into())).unwrap();
    let got = Tensor::new(vec![3], Buffer::I32(vec![1, 2, 4].into())).unwrap();
    let tol = Tolerances::default().get("anything", None, DType::I32);
    assert_eq!(tol, Tolerance::EXACT);
    let c = compare(&want, &got, &tol);
    assert_eq!((c.mismatches, c.max_abs), (1, 1.0));
    assert_eq!(c.first_mismatch, Some((2, 4.0, 3.0)));
    assert!(compare(&want, &want.clone(), &tol).passed());
    let i8s = |v: Vec<i8>| Tensor::new(vec![2], Buffer::I8(v.into())).unwrap();
    let c = compare(&i8s(vec![-128, 127]), &i8s(vec![-128, -128]), &tol);
    assert_eq!((c.mismatches, c.max_abs), (1, 255.0));
}

#[test]
fn reductions_scale_with_the_length_their_declaration_names() {
    let k = declared();
    let matmul = k.get("matmul").unwrap();
    assert_eq!(
        reduction_len(matmul, &dims(&[("m", 8), ("k", 256), ("n", 4)])),
        256
    );
    assert_eq!(
        reduction_len(k.get("dot").unwrap(), &dims(&[("n", 1000)])),
        1000
    );
    assert_eq!(
        reduction_len(
            k.get("softmax").unwrap(),
            &dims(&[("rows", 4), ("cols", 64)])
        ),
        64
    );
    assert_eq!(
        reduction_len(k.get("saxpy").unwrap(), &dims(&[("n", 1000)])),
        1
    );
    let tol = Tolerances::default();
    let base = tol.get("matmul", Some(matmul), DType::F32);
    assert_eq!(
        base.scale,
        Scaling::Sqrt,
        "a declared reduction scales by sqrt"
    );
    let scaled = tol.for_call("matmul", Some(matmul), &dims(&[("k", 256)]), DType::F32);
    assert_eq!(scaled.abs, base.abs * 16.0);
    assert_eq!(scaled.rel, base.rel * 16.0);
    let saxpy = k.get("saxpy");
    assert_eq!(
        tol.for_call("saxpy", saxpy, &dims(&[("n", 256)]), DType::F32),
        tol.get("saxpy", saxpy, DType::F32)
    );
    // The declaration's overrides apply: saxpy is tighter than the f32 default.
    assert_eq!(tol.get("saxpy", saxpy, DType::F32).abs, 1e-6);
    assert_eq!(tol.get("relu", None, DType::F32).abs, 1e-5);
    // f64 is far tighter than f32
    assert!(tol.get("fft", None, DType::F64).rel < tol.get("fft", None, DType::F32).rel * 1e-6);
}

/// Per-dtype defaults (the table issue 15 extends): f16 one ulp off passes,
/// three ulps past a value far from zero fail; bf16 the same at its width.
#[test]
fn half_precision_defaults_in_ulps() {
    use shared_state::{bf16, f16};
    let tol = Tolerances::default().get("k", None, DType::F16);
    assert_eq!(tol.ulps, 2);
    let one = |v: f16| Tensor::from_vec(&[1], vec![v]);
    let x = f16::from_f32(1000.0); // ulp = 0.5; rel 2e-3 allows 2.0
    let next = f16::from_bits(x.to_bits() + 1);
    assert!(compare(&one(x), &one(next), &tol).passed());
    let far = f16::from_bits(x.to_bits() + 5); // 2.5 away, 5 ulp
    assert!(!compare(&one(x), &one(far), &tol).passed());
    let tol = Tolerances::default().get("k", None, DType::BF16);
    let one = |v: bf16| Tensor::from_vec(&[1], vec![v]);
    let x = bf16::from_f32(1000.0); // ulp = 4; rel 1.6e-2 allows 16
    assert!(compare(&one(x), &one(bf16::from_bits(x.to_bits() + 2)), &tol).passed());
    assert!(!compare(&one(x), &one(bf16::from_bits(x.to_bits() + 5)), &tol).passed());
}

/// A kernel that sums in f32 in order (as a simple backend would) passes
/// the default tolerance; one that drops a term of the sum does not.
#[test]
fn default_tolerances_accept_f32_rounding_and_catch_real_errors() {
    let k = declared();
    let decl = k.get("matmul").unwrap();
    let (m, kk, n) = (64, 1024, 48);
    let d = dims(&[("m", m as u64), ("k", kk as u64), ("n", n as u64)]);
    let w = generate(decl, &GenSpec::new("matmul", d.clone(), 3, 1)).unwrap();
    let (call, _) = w.calls().next().unwrap();
    let (a, b) = match (&call.args[0], &call.args[1]) {
        (shared_state::Arg::Tensor(a), shared_state::Arg::Tensor(b)) => {
            (a.as_f32().unwrap(), b.as_f32().unwrap())
        }
        _ => unreachable!(),
    };
    let expected = Tensor::from_f32(&[m, n], kernel_reference::matmul(a, b, (m, kk, n)));
    let naive = |skip: Option<usize>| {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f32;
                for x in 0..kk {
                    if Some(x) != skip {
                        s += a[i * kk + x] * b[x * n + j];
                    }
                }
                c[i * n + j] = s;
            }
        }
        Tensor::from_f32(&[m, n], c)
    };
    let tol = Tolerances::default().for_call("matmul", Some(decl), &d, DType::F32);
    let good = compare(&expected, &naive(None), &tol);
    assert!(good.passed(), "{good}");
    assert!(good.max_abs > 0.0, "f32 sums do round");
    let bad = compare(&expected, &naive(Some(500)), &tol);
    assert!(!bad.passed(), "{bad}");
}

#[test]
fn kiln_toml_overrides_defaults_and_declarations() {
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
    let k = declared();
    let matmul = k.get("matmul");
    let tol = Tolerances::load(&path).unwrap();
    let m32 = tol.get("matmul", matmul, DType::F32);
    assert_eq!((m32.abs, m32.rel, m32.scale), (0.5, 1.0, Scaling::Linear));
    assert_eq!(m32.ulps, 8, "the declaration's ulps, kiln.toml left it");
    let m64 = tol.get("matmul", matmul, DType::F64);
    assert_eq!((m64.abs, m64.rel), (0.5, 1e-12));
    assert_eq!(
        tol.for_call("matmul", matmul, &dims(&[("k", 10)]), DType::F32)
            .abs,
        5.0
    );
    assert_eq!(
        tol.get("fft", None, DType::F32).ulps,
        3,
        "[tolerance.default]"
    );
    let saxpy = k.get("saxpy");
    assert_eq!(
        tol.get("saxpy", saxpy, DType::F32).ulps,
        4,
        "the declaration overrides [tolerance.default]"
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
        "kiln.toml: tolerance.dot: unknown key \"relative\" (known: abs, rel, ulps, scale, and a table per dtype: f32, f64, i32, i64, u32, u8, f16, bf16, i8)"
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

/// Issue 15, the comparison of the new dtypes with the rule, value and
/// length stated. Rule: an element passes when `|got - want| <= abs + rel *
/// |want|` or it is within `ulps` units in the last place.
///
/// f16, default tolerance (abs 1e-3, rel 2e-3, 2 ulp), one element, value
/// 1000 (f16 spacing 0.5 there): `abs + rel * 1000 = 2.001`, 4 ulp. One
/// ulp off passes, 4 ulp passes, 5 ulp (one past) fails. The same with
/// `[tolerance.matmul_f16.f16] abs = 0, rel = 0, ulps = 3` in kiln.toml (a
/// call with k = 1: the reduction scaling is 1): 3 ulp passes, 4 fails.
#[test]
fn f16_one_ulp_passes_one_past_the_tolerance_fails() {
    use shared_state::f16;
    let one = |v: f16| Tensor::from_vec(&[1], vec![v]);
    let want = f16::from_f32(1000.0);
    let off = |u: u16| f16::from_bits(want.to_bits() + u);
    assert_eq!(off(1).to_f32() - 1000.0, 0.5);
    let k = declared();
    let decl = k.get("matmul_f16");
    assert!(decl.is_some(), "matmul_f16 is declared");
    let defaults =
        Tolerances::default().for_call("matmul_f16", decl, &dims(&[("k", 1)]), DType::F16);
    assert_eq!((defaults.abs, defaults.rel, defaults.ulps), (1e-3, 2e-3, 2));
    assert!(compare(&one(want), &one(off(1)), &defaults).passed());
    assert!(compare(&one(want), &one(off(4)), &defaults).passed());
    let c = compare(&one(want), &one(off(5)), &defaults);
    assert!(!c.passed(), "{c}");
    assert_eq!(c.max_ulps, 5);

    let dir = scratch_dir("f16_override");
    let path = dir.join("kiln.toml");
    std::fs::write(
        &path,
        "[tolerance.matmul_f16.f16]\nabs = 0\nrel = 0\nulps = 3\n",
    )
    .unwrap();
    let tol = Tolerances::load(&path).unwrap().for_call(
        "matmul_f16",
        decl,
        &dims(&[("k", 1)]),
        DType::F16,
    );
    assert_eq!((tol.abs, tol.rel, tol.ulps), (0.0, 0.0, 3));
    assert!(compare(&one(want), &one(off(1)), &tol).passed());
    assert!(compare(&one(want), &one(off(3)), &tol).passed());
    assert!(!compare(&one(want), &one(off(4)), &tol).passed());
    // Below the value too, and the override is per kernel: matmul_bf16's
    // f16 (none) and plain matmul keep their own.
    let below = f16::from_bits(want.to_bits() - 4);
    assert!(!compare(&one(want), &one(below), &tol).passed());
}

/// bf16, default tolerance (abs 8e-3, rel 1.6e-2, 2 ulp), one element,
/// value 1000 (bf16 spacing 4 there): `abs + rel * 1000 = 16.008`, 4 ulp.
/// One ulp off passes, 4 passes, 5 fails; with `[tolerance.matmul_bf16.bf16]
/// abs = 0, rel = 0, ulps = 1`: 1 ulp passes, 2 fail.
#[test]
fn bf16_one_ulp_passes_one_past_the_tolerance_fails() {
    use shared_state::bf16;
    let one = |v: bf16| Tensor::from_vec(&[1], vec![v]);
    let want = bf16::from_f32(1000.0);
    let off = |u: u16| bf16::from_bits(want.to_bits() + u);
    assert_eq!(off(1).to_f32() - 1000.0, 4.0);
    let k = declared();
    let decl = k.get("matmul_bf16");
    let defaults =
        Tolerances::default().for_call("matmul_bf16", decl, &dims(&[("k", 1)]), DType::BF16);
    assert_eq!(
        (defaults.abs, defaults.rel, defaults.ulps),
        (8e-3, 1.6e-2, 2)
    );
    assert!(compare(&one(want), &one(off(1)), &defaults).passed());
    assert!(compare(&one(want), &one(off(4)), &defaults).passed());
    assert!(!compare(&one(want), &one(off(5)), &defaults).passed());

    let dir = scratch_dir("bf16_override");
    let path = dir.join("kiln.toml");
    std::fs::write(
        &path,
        "[tolerance.matmul_bf16.bf16]\nabs = 0\nrel = 0\nulps = 1\n",
    )
    .unwrap();
    let all = Tolerances::load(&path).unwrap();
    let tol = all.for_call("matmul_bf16", decl, &dims(&[("k", 1)]), DType::BF16);
    assert!(compare(&one(want), &one(off(1)), &tol).passed());
    assert!(!compare(&one(want), &one(off(2)), &tol).passed());
    // Another kernel keeps the defaults.
    let other = all.get("softmax_bf16", k.get("softmax_bf16"), DType::BF16);
    assert_eq!(other.ulps, 2);
}

/// i8 and i32 results are exact whatever kiln.toml says: dot_i8's i32
/// output (one element, value -267_386_880, the wrapped 2^20 * 127*127)
/// one off fails; an i8 tensor of length 3 with one element one off fails.
#[test]
fn i8_and_i32_results_must_be_exact() {
    let dir = scratch_dir("i8_exact");
    let path = dir.join("kiln.toml");
    std::fs::write(&path, "[tolerance.dot_i8]\nabs = 10\nrel = 1\nulps = 100\n").unwrap();
    let tol = Tolerances::load(&path).unwrap();
    let k = declared();
    let t32 = tol.for_call(
        "dot_i8",
        k.get("dot_i8"),
        &dims(&[("n", 1 << 20)]),
        DType::I32,
    );
    assert_eq!(t32, Tolerance::EXACT);
    let i32s = |v: i32| Tensor::from_vec(&[1], vec![v]);
    assert!(compare(&i32s(-267_386_880), &i32s(-267_386_880), &t32).passed());
    assert!(!compare(&i32s(-267_386_880), &i32s(-267_386_879), &t32).passed());
    let t8 = tol.get("dot_i8", k.get("dot_i8"), DType::I8);
    let i8s = |v: Vec<i8>| Tensor::from_vec(&[3], v);
    assert!(compare(&i8s(vec![-128, 0, 127]), &i8s(vec![-128, 0, 127]), &t8).passed());
    let c = compare(&i8s(vec![-128, 0, 127]), &i8s(vec![-128, 1, 127]), &t8);
    assert_eq!(c.mismatches, 1);
    assert!(!c.passed());
}

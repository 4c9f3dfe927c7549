//! Shaders come with the version (`EngineContext::sources`) and kernels
//! with their declarations: compiled and checked when the engine is created,
//! with clear errors; a kernel is added by a declaration and a WGSL file,
//! with no dispatch code.

use std::path::Path;

use shared_state::{Call, Engine, ErrorKind, KernelDecl, KernelSet, Output, Scalar, Tensor};

use super::support::{
    PREFIX_SUM, SAXPY, context_with, declarations, engine_with_context, layer_norm_ref,
    prefix_sum_ref, run_value, shader_sources, source, workspace_root,
};
use crate::engine::VulkanEngine;
use crate::shaders;
use kernel_reference::{self as reference, test_values};

fn decl(name: &str, text: &str) -> KernelDecl {
    kiln_decl::parse(
        Path::new(&format!("kernels/declarations/{name}.toml")),
        text,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shader_compiles_and_fits_its_declaration_without_a_device() {
    let kernels = declarations();
    let sources = shader_sources();
    let (compiled, undeclared) = shaders::compile_all(&kernels, &sources).unwrap();
    assert!(
        undeclared.is_empty(),
        "shaders without a declaration: {undeclared:?}"
    );
    let names: Vec<&str> = compiled.iter().map(|s| s.kernel.as_str()).collect();
    assert_eq!(
        names,
        [
            "dot",
            "dot_i8",
            "layer_norm",
            "matmul",
            "matmul_bf16",
            "matmul_f16",
            "matmul_i8",
            "prefix_sum",
            "saxpy",
            "softmax",
            "softmax_bf16",
            "stencil2d"
        ]
    );
    for shader in &compiled {
        assert_eq!(
            shader.words[0], 0x0723_0203,
            "{}: SPIR-V magic",
            shader.path
        );
        println!(
            "naga {:<24} {:>7.3} ms ({} bytes of WGSL, {} words of SPIR-V)",
            shader.path,
            shader.elapsed.as_secs_f64() * 1e3,
            sources
                .iter()
                .find(|s| s.path == shader.path)
                .unwrap()
                .text
                .len(),
            shader.words.len()
        );
    }
}

#[test]
fn a_shader_error_names_file_line_and_column_at_engine_creation() {
    let broken = shader_sources()
        .into_iter()
        .map(|s| {
            if s.path == "shaders/saxpy.wgsl" {
                source(
                    &s.path,
                    &s.text
                        .replace("out[i] = a * x[i] + y[i];", "out[i] = a * x[i] + z;"),
                )
            } else {
                s
            }
        })
        .collect();
    // Compiled before the device is opened: the same error with or without
    // Vulkan.
    let err = match VulkanEngine::create(context_with(&[], declarations(), broken), None) {
        Ok(_) => panic!("a broken shader was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.kind, ErrorKind::BadCall, "{err}");
    let first = err.message.lines().next().unwrap();
    let text = std::fs::read_to_string(workspace_root().join("kernels/vulkan/shaders/saxpy.wgsl"))
        .unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("out[i] = a * x[i] + y[i];"))
        .unwrap()
        + 1;
    assert!(
        first.starts_with(&format!("shaders/saxpy.wgsl:{line}:")),
        "no file:line:col: {err}"
    );
    assert!(
        first.contains("error:") && err.message.contains('z'),
        "{err}"
    );
}

const NEG_DECL: &str = r#"
summary = "out = -x"
inputs = ["x: f32[n]"]
outputs = ["out: f32[n]"]

[[launch]]
entry = "main"
group = [64]
workgroups = ["ceil_div(n, 64)"]
"#;

const NEG_WGSL: &str = "struct Params {
    n: u32,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < params.n {
        out[gid.x] = -x[gid.x];
    }
}
";

#[test]
fn a_shader_that_does_not_fit_its_declaration_is_a_clear_error() {
    let d = decl("neg", NEG_DECL);
    let ok = shaders::compile(&d, &source("shaders/neg.wgsl", NEG_WGSL));
    assert!(ok.is_ok(), "{:?}", ok.err());
    let cases = [
        (
            NEG_WGSL.replace("fn main", "fn start"),
            "shaders/neg.wgsl: no @compute entry point `main` (launch pass 0 of kernels/declarations/neg.toml); the shader has: start",
        ),
        (
            NEG_WGSL.replace("@workgroup_size(64)", "@workgroup_size(128)"),
            "entry point `main` has @workgroup_size(128, 1, 1) but launch pass 0 of kernels/declarations/neg.toml says group = [64]",
        ),
        (
            NEG_WGSL
                .replace(
                    "var<storage, read> x: array<f32>",
                    "var<storage, read> x: array<i32>",
                )
                .replace("-x[gid.x]", "-f32(x[gid.x])"),
            "@group(0) @binding(0) `x`: input x: f32[n] is an array of f32, found i32",
        ),
        (
            NEG_WGSL
                .replace("read_write> out", "read> out")
                .replace("out[gid.x] = -x[gid.x];", ""),
            "@group(0) @binding(1) `out`: output out: f32[n] must be var<storage, read_write>",
        ),
        (
            NEG_WGSL
                .replace("n: u32", "len: u32")
                .replace("params.n", "params.len"),
            "@group(0) @binding(2) `params`: field 0 of the uniform struct is `len`; the convention for neg is struct { n: u32 }",
        ),
        (
            NEG_WGSL.replace("@binding(2) var<uniform>", "@binding(3) var<uniform>"),
            "@group(0) @binding(3) `params`: neg has 2 storage bindings (0..2) and the uniform block at 2; nothing else",
        ),
    ];
    for (text, want) in cases {
        let err = match shaders::compile(&d, &source("shaders/neg.wgsl", &text)) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        assert_eq!(err.kind, ErrorKind::BadCall);
        assert!(err.message.contains(want), "want {want:?}\ngot {err}");
        assert!(err.message.starts_with("shaders/neg.wgsl"), "{err}");
    }
}

#[test]
fn a_declared_kernel_without_a_shader_is_not_listed_or_run() {
    let sources: Vec<_> = shader_sources()
        .into_iter()
        .filter(|s| s.path != "shaders/prefix_sum.wgsl")
        .collect();
    let Some(mut e) = engine_with_context(context_with(&[], declarations(), sources)) else {
        return;
    };
    let info = e.info().unwrap();
    assert!(
        !info.kernels.contains(&PREFIX_SUM.to_string()),
        "{:?}",
        info.kernels
    );
    assert!(info.kernels.contains(&SAXPY.to_string()));
    let err = e
        .run(Call::new(PREFIX_SUM).arg(Tensor::from_f32(&[3], vec![1.0; 3])))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownKernel);
    assert_eq!(
        err.message,
        "prefix_sum is declared but not implemented on vulkan (no shaders/prefix_sum.wgsl among the sources)"
    );
    let err = e.run(Call::new("relu")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownKernel);
    assert!(
        err.message.starts_with("no kernel \"relu\" is declared"),
        "{err}"
    );
}

/// Two outputs, an integer, a float and a bool parameter, a 2-D dim list:
/// the whole convention, through one new kernel written here.
const SPLIT_DECL: &str = r#"
summary = "pos = max(x, 0) * scale + shift; neg = min(x, 0) (or |min| if absolute)"
inputs = ["x: f32[rows, cols]", "bias: f32[cols]"]
outputs = ["pos: f32[rows, cols]", "neg: f32[rows, cols]"]
params = { scale = 1.5, shift = 2, absolute = false }

[[launch]]
entry = "main"
group = [32]
workgroups = ["ceil_div(rows*cols, 32)"]
"#;

// Parameters come in declaration order as kiln-decl gives them (its
// `params` in the file's order: scale, shift, absolute).
const SPLIT_WGSL: &str = "struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    shift: i32,
    absolute: u32,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> pos: array<f32>;
@group(0) @binding(3) var<storage, read_write> neg: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i < params.rows * params.cols {
        let v = x[i] + bias[i % params.cols];
        pos[i] = max(v, 0.0) * params.scale + f32(params.shift);
        var m = min(v, 0.0);
        if params.absolute != 0u {
            m = abs(m);
        }
        neg[i] = m;
    }
}
";

#[test]
fn a_new_kernel_is_a_declaration_and_a_shader() {
    let mut decls: Vec<KernelDecl> = declarations().iter().cloned().collect();
    decls.push(decl("split", SPLIT_DECL));
    let mut sources = shader_sources();
    sources.push(source("shaders/split.wgsl", SPLIT_WGSL));
    let Some(mut e) = engine_with_context(context_with(&[], KernelSet::new(decls), sources)) else {
        return;
    };
    assert!(e.info().unwrap().kernels.contains(&"split".to_string()));
    let (rows, cols) = (7, 33);
    let x = test_values(rows * cols, 41);
    let bias = test_values(cols, 42);
    let want = |scale: f32, shift: f32, absolute: bool| {
        let (mut p, mut n) = (Vec::new(), Vec::new());
        for (i, &v) in x.iter().enumerate() {
            let v = v + bias[i % cols];
            p.push(v.max(0.0) * scale + shift);
            let m = v.min(0.0);
            n.push(if absolute { m.abs() } else { m });
        }
        (p, n)
    };
    for (params, (scale, shift, absolute)) in [
        (vec![], (1.5, 2.0, false)),
        (
            vec![
                ("scale", Scalar::F64(-0.5)),
                ("shift", Scalar::I64(-3)),
                ("absolute", Scalar::Bool(true)),
            ],
            (-0.5, -3.0, true),
        ),
    ] {
        let mut call = Call::new("split")
            .arg(Tensor::from_f32(&[rows, cols], x.clone()))
            .arg(Tensor::from_f32(&[cols], bias.clone()));
        for (k, v) in params {
            call = call.param(k, v);
        }
        let Output::Values(outs) = e.run(call).unwrap() else {
            panic!("two outputs come back as Values");
        };
        let (p, n) = want(scale, shift, absolute);
        assert_eq!(outs.len(), 2);
        assert_eq!(outs[0].shape(), &[rows, cols]);
        assert_eq!(outs[0].as_f32().unwrap(), &p[..], "pos");
        assert_eq!(outs[1].as_f32().unwrap(), &n[..], "neg");
    }
    let err = e
        .run(
            Call::new("split")
                .arg(Tensor::from_f32(&[1, 1], vec![1.0]))
                .arg(Tensor::from_f32(&[1], vec![1.0]))
                .store_as("both"),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(
        err.message
            .contains("store_as needs a kernel with one output"),
        "{err}"
    );
    let err = e
        .run(
            Call::new("split")
                .arg(Tensor::from_f32(&[1, 1], vec![1.0]))
                .arg(Tensor::from_f32(&[1], vec![1.0]))
                .param("shift", Scalar::I64(1 << 40)),
        )
        .unwrap_err();
    assert!(
        err.message.contains("does not fit the shader's i32"),
        "{err}"
    );
}

/// The 1-D kernels and the row kernels cap their workgroup count and loop
/// over the rest. On lavapipe the real caps (65535) need more data than one
/// binding holds, so the same shaders run here under declarations capped at
/// 3 workgroups.
#[test]
fn capped_workgroups_loop_over_the_rest() {
    let root = workspace_root();
    let capped: Vec<KernelDecl> = declarations()
        .iter()
        .map(|d| {
            let text = std::fs::read_to_string(root.join(&d.file)).unwrap();
            decl(&d.name, &text.replace("65535", "3"))
        })
        .collect();
    assert!(
        capped
            .iter()
            .filter(|d| d
                .launch
                .passes
                .iter()
                .any(|p| { p.workgroups.iter().any(|w| w.to_string().contains('3')) }))
            .count()
            >= 5
    );
    let Some(mut e) =
        engine_with_context(context_with(&[], KernelSet::new(capped), shader_sources()))
    else {
        return;
    };
    let n = 10_007;
    let (x, y) = (test_values(n, 51), test_values(n, 52));
    let got = run_value(
        &mut e,
        Call::new(SAXPY)
            .arg(Tensor::from_f32(&[n], x.clone()))
            .arg(Tensor::from_f32(&[n], y.clone())),
    );
    super::support::assert_close(
        got.as_f32().unwrap(),
        &reference::saxpy(2.0, &x, &y),
        1e-6,
        "saxpy",
    );
    let ints: Vec<f32> = x.iter().map(|v| (v * 4.0).round()).collect();
    let got = run_value(
        &mut e,
        Call::new(PREFIX_SUM).arg(Tensor::from_f32(&[n], ints.clone())),
    );
    assert_eq!(
        got.as_f32().unwrap(),
        &prefix_sum_ref(&ints)[..],
        "prefix_sum over 10 tiles, 3 groups"
    );
    let (rows, cols) = (11, 37);
    let g = test_values(rows * cols, 53);
    let got = run_value(
        &mut e,
        Call::new("softmax").arg(Tensor::from_f32(&[rows, cols], g.clone())),
    );
    super::support::assert_close(
        got.as_f32().unwrap(),
        &reference::softmax(&g, (rows, cols)),
        1e-5,
        "softmax",
    );
    let got = run_value(
        &mut e,
        Call::new("stencil2d").arg(Tensor::from_f32(&[rows, cols], g.clone())),
    );
    super::support::assert_close(
        got.as_f32().unwrap(),
        &reference::stencil2d(&g, (rows, cols), 0.1),
        1e-6,
        "stencil2d",
    );
    let (gamma, beta) = (test_values(cols, 54), test_values(cols, 55));
    let got = run_value(
        &mut e,
        Call::new("layer_norm")
            .arg(Tensor::from_f32(&[rows, cols], g.clone()))
            .arg(Tensor::from_f32(&[cols], gamma.clone()))
            .arg(Tensor::from_f32(&[cols], beta.clone())),
    );
    super::support::assert_close(
        got.as_f32().unwrap(),
        &layer_norm_ref(&g, &gamma, &beta, (rows, cols), 1e-5),
        2e-5,
        "layer_norm",
    );
}

/// A shader edit is a new engine created with the edited source and the old
/// engine's state; a broken edit fails that creation and leaves the old
/// engine serving (what the host does on a WGSL save, without cargo).
#[test]
fn an_edited_shader_takes_effect_in_the_next_engine_with_the_state() {
    let Some(mut old) = engine_with_context(context_with(&[], declarations(), shader_sources()))
    else {
        return;
    };
    let n = 300;
    let (x, y) = (test_values(n, 61), test_values(n, 62));
    old.put_resident("x", Tensor::from_f32(&[n], x.clone()))
        .unwrap();
    old.put_resident("y", Tensor::from_f32(&[n], y.clone()))
        .unwrap();
    let call = Call::new(SAXPY).resident("x").resident("y");
    let before = run_value(&mut old, call.clone());
    assert_eq!(before.as_f32().unwrap(), &reference::saxpy(2.0, &x, &y)[..]);

    let edit = |from: &str, to: &str| -> Vec<shared_state::SourceFile> {
        shader_sources()
            .into_iter()
            .map(|s| {
                if s.path == "shaders/saxpy.wgsl" {
                    assert!(s.text.contains(from));
                    source(&s.path, &s.text.replace(from, to))
                } else {
                    s
                }
            })
            .collect()
    };
    // Broken: the new engine is not created, the old one still serves.
    let mut snapshot = old.export_state().unwrap();
    let broken = edit("a * x[i] + y[i]", "a * x[i] + y[i] +");
    let err = match VulkanEngine::create(
        context_with(&[], declarations(), broken),
        Some(&mut snapshot),
    ) {
        Ok(_) => panic!("a broken shader was accepted"),
        Err(e) => e,
    };
    assert!(err.message.starts_with("shaders/saxpy.wgsl:"), "{err}");
    assert_eq!(run_value(&mut old, call.clone()).as_f32(), before.as_f32());

    // Fixed: the edit's behaviour, on the carried state.
    let mut snapshot = old.export_state().unwrap();
    let edited = edit("a * x[i] + y[i]", "a * x[i] - y[i]");
    let (mut new, _) = VulkanEngine::create(
        context_with(&[], declarations(), edited),
        Some(&mut snapshot),
    )
    .unwrap();
    drop(old);
    let after = run_value(&mut new, call);
    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| 2.0 * a - b).collect();
    assert_eq!(after.as_f32().unwrap(), &want[..]);
}

/// The engine reports what its start cost: naga per shader and pipeline
/// creation per kernel (printed; never asserted as a time).
#[test]
fn engine_creation_reports_compile_and_pipeline_times() {
    let started = std::time::Instant::now();
    let Some(e) = engine_with_context(context_with(&[], declarations(), shader_sources())) else {
        return;
    };
    let created = started.elapsed();
    let info = e.info().unwrap();
    for kernel in &info.kernels {
        for key in [
            format!("compile_ms/naga/shaders/{kernel}.wgsl"),
            format!("compile_ms/pipelines/{kernel}"),
        ] {
            match info.notes.get(&key) {
                Some(Scalar::F64(ms)) => println!("{key:<40} {ms:>7.3} ms"),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
    println!(
        "engine created in {:.1} ms ({} kernels, compile + pipelines {:.1} ms)",
        created.as_secs_f64() * 1e3,
        info.kernels.len(),
        e.compile_time().as_secs_f64() * 1e3
    );
}

/// A shader that is still `kiln new kernel`'s stub (it compiles: an empty
/// entry point) is not listed as implemented, nor as undeclared; once its
/// stub line is deleted it is compiled and checked like any shader.
#[test]
fn a_stub_shader_is_not_listed_until_its_stub_line_is_removed() {
    let kernels = declarations();
    let saxpy = std::fs::read_to_string(workspace_root().join("kernels/vulkan/shaders/saxpy.wgsl"))
        .expect("saxpy.wgsl");
    let stub = format!(
        "{}: not listed as implemented until this line is removed.\n{saxpy}",
        shared_state::GPU_STUB_MARKER
    );
    let (compiled, undeclared) =
        shaders::compile_all(&kernels, &[source("shaders/saxpy.wgsl", &stub)]).unwrap();
    assert!(compiled.is_empty(), "a stub is not implemented");
    assert!(
        undeclared.is_empty(),
        "a stub is not undeclared: {undeclared:?}"
    );
    let written = stub.split_once('\n').expect("two lines").1;
    let (compiled, _) =
        shaders::compile_all(&kernels, &[source("shaders/saxpy.wgsl", written)]).unwrap();
    assert_eq!(compiled.len(), 1, "the written shader is listed");
    assert_eq!(compiled[0].kernel, "saxpy");
}

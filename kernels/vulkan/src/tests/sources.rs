//! Vulkan's own checks of the shaders that come with the version: SPIR-V
//! out of naga, a shader that does not fit its declaration (entry point,
//! workgroup size, bindings, uniform block), capped workgroup counts, and
//! what engine creation reports. Kernels added by a declaration and a
//! shader, edits, broken shaders, stubs and shaders without a shader or a
//! declaration are the conformance suite's (`kernels/conformance`).

use kernel_conformance::support::{
    self, PREFIX_SUM, SAXPY, assert_close, context_with, decl, declarations, engine, engine_from,
    run_value, source, workspace_root,
};
use kernel_reference::{self as reference, test_values};
use shared_state::{Call, Engine, ErrorKind, KernelDecl, KernelSet, Scalar, Tensor};

use super::Vulkan;
use crate::shaders;

fn shader_sources() -> Vec<shared_state::SourceFile> {
    support::sources::<Vulkan>()
}

#[test]
fn every_shader_compiles_to_spirv_without_a_device() {
    let kernels = declarations();
    let sources = shader_sources();
    // Which kernels compile, and nothing else: the conformance suite's
    // `every_source_compiles_and_fits_its_declaration`.
    let (compiled, _) = shaders::compile_all(&kernels, &sources).unwrap();
    assert_eq!(compiled.len(), support::BUNDLED_KERNELS.len());
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
    const TEST: &str = "capped_workgroups_loop_over_the_rest";
    let ctx = context_with::<Vulkan>(TEST, &[], KernelSet::new(capped), shader_sources());
    let Some(mut e) = engine_from::<Vulkan>(TEST, ctx, None) else {
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
    assert_close(
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
        &reference::prefix_sum(&ints)[..],
        "prefix_sum over 10 tiles, 3 groups"
    );
    let (rows, cols) = (11, 37);
    let g = test_values(rows * cols, 53);
    let got = run_value(
        &mut e,
        Call::new("softmax").arg(Tensor::from_f32(&[rows, cols], g.clone())),
    );
    assert_close(
        got.as_f32().unwrap(),
        &reference::softmax(&g, (rows, cols)),
        1e-5,
        "softmax",
    );
    let got = run_value(
        &mut e,
        Call::new("stencil2d").arg(Tensor::from_f32(&[rows, cols], g.clone())),
    );
    assert_close(
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
    assert_close(
        got.as_f32().unwrap(),
        &reference::layer_norm(&g, &gamma, &beta, (rows, cols), 1e-5),
        2e-5,
        "layer_norm",
    );
}

/// The engine reports what its start cost: naga per shader and pipeline
/// creation per kernel (printed; never asserted as a time).
#[test]
fn engine_creation_reports_compile_and_pipeline_times() {
    let started = std::time::Instant::now();
    let Some(e) = engine::<Vulkan>("engine_creation_reports_compile_and_pipeline_times") else {
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

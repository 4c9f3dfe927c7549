//! NVRTC specifics of the staged-source compile path, without a GPU: every
//! declared kernel's `.cu` file compiles to PTX for each architecture with
//! the entry points its declaration asks for; NVRTC's errors name file and
//! line; PTX parameters that do not fit the convention are clear errors;
//! the peak kernels compile. Which sources compile, stubs, undeclared and
//! broken sources are the conformance suite's (`kernels/conformance`).

use std::path::Path;
use std::time::Duration;

use kernel_conformance::support::{
    BUNDLED_KERNELS, compiler_or_skip, decl, declarations, source, sources,
};
use shared_state::ErrorKind;

use super::Cuda;
use crate::compile;

fn nvrtc_or_skip(test: &str) -> bool {
    compiler_or_skip::<Cuda>(test)
}

fn cuda_sources() -> Vec<shared_state::SourceFile> {
    sources::<Cuda>()
}

#[test]
fn every_declared_kernel_compiles_to_ptx_with_its_entry_points() {
    if !nvrtc_or_skip("every_declared_kernel_compiles_to_ptx") {
        return;
    }
    let kernels = declarations();
    let sources = cuda_sources();
    let (major, minor) = compile::nvrtc_version().unwrap();
    // compute_80: A100; compute_90: H100/H200, the lent GPU machines.
    for arch in ["compute_80", "compute_90"] {
        let (compiled, undeclared) = compile::compile_all(&kernels, &sources, arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert!(undeclared.is_empty(), "{undeclared:?}");
        let names: Vec<&str> = compiled.iter().map(|c| c.kernel.as_str()).collect();
        assert_eq!(names, BUNDLED_KERNELS);
        let mut total = Duration::ZERO;
        for c in &compiled {
            let ptx = c.ptx.to_src();
            for name in &c.functions {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{}: no entry point {name} in the PTX for {arch}",
                    c.path
                );
            }
            assert!(
                ptx.contains(&format!(".target sm_{}", &arch[8..])),
                "{}",
                c.path
            );
            println!(
                "nvrtc {major}.{minor} {arch}: {:<22} {:>7.1} ms",
                c.path,
                c.elapsed.as_secs_f64() * 1e3
            );
            total += c.elapsed;
        }
        println!(
            "nvrtc {major}.{minor} {arch}: total {:.1} ms for {} files",
            total.as_secs_f64() * 1e3,
            compiled.len()
        );
    }
    let dot = compile::compile_all(&kernels, &sources, "compute_80")
        .unwrap()
        .0
        .into_iter()
        .find(|c| c.kernel == "dot")
        .unwrap();
    assert_eq!(dot.functions, ["dot_partial", "dot_finish"]);
    // The f16/bf16 conversions are PTX `cvt` and bit shifts: no fp16/bf16
    // header is needed (the NVRTC wheel ships none).
    let all = compile::compile_all(&kernels, &sources, "compute_90")
        .unwrap()
        .0;
    let f16 = all.iter().find(|c| c.kernel == "matmul_f16").unwrap();
    assert!(
        f16.ptx.to_src().contains("cvt.rn.f16.f32"),
        "one rounding to f16"
    );
}

#[test]
fn a_compile_error_carries_nvrtcs_log_with_file_and_line() {
    if !nvrtc_or_skip("a_compile_error_carries_nvrtcs_log") {
        return;
    }
    let broken = "extern \"C\" __global__ void k(float* out) {\n    out[0] = not_declared;\n}\n";
    let err = match compile::compile("broken.cu", broken, "compute_80", &[]) {
        Ok(_) => panic!("a source using an undeclared name compiled"),
        Err(err) => err,
    };
    assert_eq!(err.kind, ErrorKind::BadCall, "{err}");
    assert!(
        err.message.contains("broken.cu(2): error"),
        "no file(line) in the error: {err}"
    );
    assert!(err.message.contains("not_declared"), "{err}");
    // Through the staged-source path: the conformance suite's
    // `a_broken_source_is_refused_naming_file_and_line`.
}

const NEG_DECL: &str = r#"
inputs = ["x: f32[n]"]
outputs = ["out: f32[n]"]
params = { scale = 1.0 }

[[launch]]
entry = "main"
group = [64]
workgroups = ["ceil_div(n, 64)"]
"#;

const NEG_CU: &str =
    "extern \"C\" __global__ void neg(const float* x, float* out, unsigned int n, float scale) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = -scale * x[i];
}
";

#[test]
fn a_source_that_does_not_fit_its_declaration_is_a_clear_error() {
    if !nvrtc_or_skip("a_source_that_does_not_fit_its_declaration") {
        return;
    }
    let d = decl("neg", NEG_DECL);
    let compile =
        |text: &str| compile::compile_kernel(&d, &source("kernels/neg.cu", text), "compute_80");
    let ok = compile(NEG_CU).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.functions, ["neg"]);
    // Trailing parameters may be left out.
    compile(
        &NEG_CU
            .replace(", float scale", "")
            .replace("-scale * ", "-"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        (
            NEG_CU.replace("void neg(", "void negate("),
            "kernels/neg.cu: no extern \"C\" __global__ function `neg`; kernels/neg.cu defines: negate (launch pass 0 of kernels/declarations/neg.toml)",
        ),
        (
            NEG_CU.replace("unsigned int n, float scale", "float scale, unsigned int n"),
            "parameter 2 of `neg` is a PTX .f32 where the convention is (input x: f32[n], output out: f32[n], unsigned int n, float scale)",
        ),
        (
            NEG_CU.replace("float scale)", "float scale, float extra)"),
            "`neg` takes 5 parameters, more than the 4 of the convention",
        ),
    ];
    for (text, want) in cases {
        let err = match compile(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        assert_eq!(err.kind, ErrorKind::BadCall);
        assert!(err.message.contains(want), "want {want:?}\ngot {err}");
    }
    // A declared kernel without a source, and a source without a
    // declaration: the conformance suite's
    // `a_source_without_a_declaration_is_listed_apart`.
}

#[test]
fn every_cu_file_on_disk_has_a_declaration() {
    // Runs without NVRTC.
    let kernels = declarations();
    for s in cuda_sources() {
        let name = s
            .path
            .strip_prefix("kernels/")
            .and_then(|p| p.strip_suffix(".cu"))
            .unwrap();
        let decl = kernels
            .get(name)
            .unwrap_or_else(|| panic!("{} has no declaration", s.path));
        for pass in &decl.launch.passes {
            let f = crate::convention::function_name(name, &pass.entry);
            assert!(
                s.text
                    .contains(&format!("extern \"C\" __global__ void {f}(")),
                "{} does not define {f}",
                s.path
            );
        }
    }
}

/// kiln's peak kernels (`peaks/*.cu`, declared by the host when it
/// measures a device: harness/src/machine/peak_kernels.rs) compile and have
/// the functions and parameters of those declarations. The CUDA peaks have
/// never run here (no GPU): this is what can be checked without one.
#[test]
fn the_peak_kernels_compile_with_the_hosts_declarations() {
    if !nvrtc_or_skip("the_peak_kernels_compile") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peaks");
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
    let triad = "inputs = [\"b: f32[n]\", \"c: f32[n]\"]\noutputs = [\"a: f32[n]\"]\n\
                 params = { s = 3.0 }\n[[launch]]\nentry = \"main\"\ngroup = [256]\n\
                 workgroups = [\"min(ceil_div(n, 4096), 65535)\"]\n";
    let fma = "inputs = [\"x: f32[n]\"]\noutputs = [\"out: f32[n]\"]\n\
               params = { iters = 64 }\n[[launch]]\nentry = \"main\"\ngroup = [256]\n\
               workgroups = [\"ceil_div(n, 256)\"]\n";
    for (name, text, file) in [
        ("kiln_peak_triad", triad, "triad.cu"),
        ("kiln_peak_triad_x3", triad, "triad.cu"),
        ("kiln_peak_triad_x33", triad, "triad.cu"),
        ("kiln_peak_fma", fma, "fma.cu"),
    ] {
        let src = source(&format!("kernels/{name}.cu"), &read(file));
        compile::compile_kernel(&decl(name, text), &src, "compute_90")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

//! Every kernel source compiles with NVRTC (no GPU needed).

use std::time::Duration;

use shared_state::ErrorKind;

use super::support::nvrtc_required;
use crate::availability;
use crate::compile::{self, KERNEL_SOURCES};

/// `true` when NVRTC is there; otherwise prints the skip line (or panics
/// under `KILN_REQUIRE_NVRTC=1`).
fn nvrtc_or_skip(test: &str) -> bool {
    match availability::require_nvrtc() {
        Ok(()) => true,
        Err(err) => {
            assert!(
                !nvrtc_required(),
                "{test}: KILN_REQUIRE_NVRTC=1 but {}",
                err.message
            );
            println!("{test}: skipped: no NVRTC ({})", err.message);
            false
        }
    }
}

#[test]
fn every_kernel_source_compiles_to_ptx_with_its_entry_points() {
    if !nvrtc_or_skip("every_kernel_source_compiles_to_ptx") {
        return;
    }
    let (major, minor) = compile::nvrtc_version().unwrap();
    // compute_80: A100; compute_90: H100/H200, the lent GPU machines.
    for arch in ["compute_80", "compute_90"] {
        let mut total = Duration::ZERO;
        for src in KERNEL_SOURCES {
            let compiled = compile::compile(src.file, src.source, arch, &[])
                .unwrap_or_else(|e| panic!("{} does not compile for {arch}: {e}", src.file));
            let ptx = compiled.ptx.to_src();
            for name in src.functions {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{}: no entry point {name} in the PTX for {arch}",
                    src.file
                );
            }
            assert!(
                ptx.contains(&format!(".target sm_{}", &arch[8..])),
                "{}",
                src.file
            );
            println!(
                "nvrtc {major}.{minor} {arch}: {:<13} {:>7.1} ms",
                src.file,
                compiled.elapsed.as_secs_f64() * 1e3
            );
            total += compiled.elapsed;
        }
        println!(
            "nvrtc {major}.{minor} {arch}: total {:.1} ms for {} files",
            total.as_secs_f64() * 1e3,
            KERNEL_SOURCES.len()
        );
    }
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
}

#[test]
fn every_kernel_source_is_embedded_and_lists_its_functions() {
    // Runs without NVRTC: the table matches the files on disk.
    // The source tree where it was built, or (a test binary carried to
    // another machine, run from the repository root) the one here.
    let built_in = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let here = std::path::PathBuf::from("kernels/cuda/kernels");
    let Some(dir) = [built_in, here].into_iter().find(|d| d.is_dir()) else {
        println!(
            "skipped: kernels/cuda/kernels not found from {:?}",
            std::env::current_dir()
        );
        return;
    };
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = KERNEL_SOURCES.iter().map(|s| s.file.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk,
        listed,
        "every .cu file under {} is compiled",
        dir.display()
    );
    for src in KERNEL_SOURCES {
        let text = std::fs::read_to_string(dir.join(src.file)).unwrap();
        assert_eq!(
            text, src.source,
            "{} is embedded as it is on disk",
            src.file
        );
        for name in src.functions {
            assert!(
                src.source
                    .contains(&format!("extern \"C\" __global__ void {name}(")),
                "{} does not define {name}",
                src.file
            );
        }
    }
}

//! The CUDA module through the host on a machine without a CUDA driver: the
//! `kiln` binary and the engine API both say `no CUDA driver` cleanly (an
//! `Unavailable` error, no panic, no abort), and the failed version leaves
//! nothing mapped. Skipped (with a message) where a libcuda is present.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kiln::process::mapped_files_under;
use kiln::swap::engine_handle::probe_devices;
use kiln::{CallError, EngineHandle, EngineOptions};
use kiln_e2e::dev_session::kiln_binary;
use kiln_e2e::*;
use shared_state::ErrorKind;

const CUDA: &str = "kernel-cuda";
const NO_DRIVER: &str = "no CUDA driver: libcuda.so.1 not found";

/// Where a `libcuda.so.1` is visible to the dynamic loader (the ld cache or
/// `LD_LIBRARY_PATH`), found without loading it.
fn libcuda_location() -> Option<PathBuf> {
    let from_env = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    if let Some(found) = from_env
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("libcuda.so.1"))
        .find(|p| p.exists())
    {
        return Some(found);
    }
    let cache = Command::new("ldconfig").arg("-p").output().ok()?;
    String::from_utf8_lossy(&cache.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("libcuda.so.1 "))
        .find_map(|l| l.rsplit("=> ").next().map(|p| PathBuf::from(p.trim())))
}

fn skip_if_libcuda_present() -> bool {
    match libcuda_location() {
        Some(path) => {
            println!(
                "skipped: a CUDA driver library is present ({}); these tests need a machine without one",
                path.display()
            );
            true
        }
        None => false,
    }
}

#[test]
fn kiln_backends_cuda_reports_no_driver_and_fails() {
    if skip_if_libcuda_present() {
        return;
    }
    module_artifact(CUDA);
    let out = Command::new(kiln_binary())
        .args(["backends", "cuda"])
        .current_dir(workspace_root())
        .env("RUST_BACKTRACE", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kiln runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("kiln backends cuda ({}):\n{stdout}{stderr}", out.status);
    assert!(!out.status.success(), "exit status {}", out.status);
    assert_eq!(out.status.code(), Some(1), "killed by a signal?");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("cuda"))
        .unwrap_or_else(|| panic!("no cuda line in:\n{stdout}"));
    assert!(
        line.ends_with(&format!("unavailable: {NO_DRIVER}")),
        "{line}"
    );
    assert!(stderr.contains("cannot run here: cuda"), "{stderr}");
    for noise in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "fatal runtime",
    ] {
        assert!(!stderr.contains(noise), "{noise:?} in stderr:\n{stderr}");
    }
}

#[test]
fn starting_a_cuda_engine_without_a_driver_is_unavailable() {
    if skip_if_libcuda_present() {
        return;
    }
    let stage = staging("cuda-no-driver");
    let module = Arc::new(load_fresh(&stage, CUDA));

    let err = probe_devices(&module).expect_err("probe must fail without a driver");
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
    assert_eq!(err.message, NO_DRIVER);

    let options = EngineOptions {
        threads: 2,
        ..Default::default()
    };
    let err = EngineHandle::start(module, &options, None).expect_err("start must fail");
    match &err {
        CallError::Engine { label, error } => {
            assert_eq!(label, "kernel-cuda-v1");
            assert_eq!(error.kind, ErrorKind::Unavailable, "{err}");
            assert_eq!(error.message, NO_DRIVER);
        }
        CallError::Gone { .. } => panic!("engine thread died: {err}"),
    }
    assert_eq!(err.to_string(), format!("kernel-cuda-v1: {NO_DRIVER}"));
    // The failed version is torn down: its library is closed and unmapped.
    assert!(
        mapped_files_under(stage.path(), None).is_empty(),
        "{:?}",
        mapped_files_under(stage.path(), None)
    );

    // The process is fine: a CPU engine still starts and runs.
    let (cpu, _) =
        EngineHandle::start(Arc::new(load_fresh(&stage, "kernel-cpu")), &options, None).unwrap();
    let out = cpu
        .run(
            shared_state::Call::new("dot")
                .arg(shared_state::Tensor::from_f32(&[2], vec![1.0, 2.0]))
                .arg(shared_state::Tensor::from_f32(&[2], vec![3.0, 4.0])),
        )
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_eq!(out.as_f32().unwrap(), [11.0]);
}

//! A driver but no device: the exported entry points say `no CUDA device`,
//! never a panic or an abort. The case runs in the conformance suite's child
//! (this test binary, re-executed on one test) with an `LD_LIBRARY_PATH`
//! under which the dynamic loader finds a stub `libcuda.so.1` built here
//! with `cc`, whose `cuInit` returns `CUDA_ERROR_NO_DEVICE`. (No driver at
//! all is the suite's `without_a_driver_probe_and_create_are_unavailable`.)

use std::process::Command;

use kernel_conformance::support::{TempDir, child_lines, device_required, run_child};

use super::Cuda;

/// The conformance suite's child test, by its full path.
const CHILD_TEST: &str = "tests::conformance::child_reports_probe_and_create";

/// The stub driver: `cuInit` says there is no device; the other symbols a
/// caller may reach before giving up answer the same way.
const STUB_DRIVER_C: &str = r#"
#define CUDA_ERROR_NO_DEVICE 100
int cuInit(unsigned int flags) { (void)flags; return CUDA_ERROR_NO_DEVICE; }
int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
int cuDeviceGetCount(int *n) { *n = 0; return CUDA_ERROR_NO_DEVICE; }
int cuDeviceGet(int *d, int ordinal) { (void)d; (void)ordinal; return CUDA_ERROR_NO_DEVICE; }
int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
int cuGetErrorString(int e, const char **s) { (void)e; *s = "no CUDA-capable device is detected"; return 0; }
"#;

#[test]
fn with_a_driver_but_no_device_probe_and_create_say_no_cuda_device() {
    let dir = TempDir::new("cuda-stubdriver");
    let c_file = dir.0.join("stub_cuda.c");
    std::fs::write(&c_file, STUB_DRIVER_C).unwrap();
    let lib = dir.0.join("libcuda.so.1");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    if Command::new(&cc).arg("--version").output().is_err() && device_required::<Cuda>() {
        // A GPU machine need not have a C compiler; everywhere else the
        // stub must be built.
        println!("skipped: no C compiler ({cc}) to build the stub libcuda");
        return;
    }
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&c_file)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} to build the stub libcuda: {e}"));
    assert!(status.success(), "{cc} failed to build the stub libcuda");
    // cudarc tries `libcuda.so` before `libcuda.so.1`: shadow both, so a
    // real driver installed here is not picked up instead of the stub.
    std::os::unix::fs::symlink("libcuda.so.1", dir.0.join("libcuda.so")).unwrap();

    let env = [("LD_LIBRARY_PATH".to_string(), dir.0.display().to_string())];
    let got = child_lines(&run_child(CHILD_TEST, &env));
    assert_eq!(got.len(), 3, "probe, create and nvrtc: {got:?}");
    assert_eq!(
        got["probe"],
        "Err(Unavailable: no CUDA device (CUDA_ERROR_NO_DEVICE))"
    );
    assert_eq!(
        got["create"],
        "Err(Unavailable: no CUDA device (CUDA_ERROR_NO_DEVICE))"
    );
}

//! Without a driver, without a device, without NVRTC: clear `Unavailable`
//! errors from the exported entry points, never a panic or an abort.
//!
//! Each case runs in a child process (this test binary, re-executed with a
//! test filter) so that its `LD_LIBRARY_PATH` decides which `libcuda.so.1`
//! the dynamic loader finds: none, or a stub built here with `cc` whose
//! `cuInit` returns `CUDA_ERROR_NO_DEVICE`.

use std::path::{Path, PathBuf};
use std::process::Command;

use shared_state::ErrorKind;

use super::support::{context, cuda_required};
use crate::availability;

/// Set in the child: what to report.
const CHILD_ENV: &str = "KILN_CUDA_TEST_CHILD";
/// The child's test, by its full path.
const CHILD_TEST: &str = "tests::unavailable::child_reports_probe_create_and_nvrtc";

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

/// In the child (and only there): reports what probing, engine creation
/// and NVRTC lookup return, one `KILN-CHILD` line each, through the
/// exported, panic-guarded entry points. In a normal test run it does
/// nothing.
#[test]
fn child_reports_probe_create_and_nvrtc() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    super::support::install_test_panic_hook();
    let probe = crate::kiln_probe_devices();
    println!("KILN-CHILD probe: {}", describe(probe.map(|d| d.len())));
    let created = crate::kiln_create_engine(context("child", &[]), None);
    println!("KILN-CHILD create: {}", describe(created.map(|_| "engine")));
    println!(
        "KILN-CHILD nvrtc: {}",
        describe(availability::require_nvrtc().map(|()| "present"))
    );
}

fn describe<T: std::fmt::Debug>(r: Result<T, shared_state::EngineError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({:?}: {})", e.kind, e.message),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("kiln-cuda-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the child with `LD_LIBRARY_PATH=lib_dir` and returns its
/// `KILN-CHILD` lines by key.
fn run_child(lib_dir: &Path) -> std::collections::BTreeMap<String, String> {
    super::support::install_test_panic_hook();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("LD_LIBRARY_PATH", lib_dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let lines: std::collections::BTreeMap<String, String> = stdout
        .lines()
        // libtest may print "test NAME ... " on the same line first.
        .filter_map(|l| l.split_once("KILN-CHILD ").map(|(_, rest)| rest))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(lines.len(), 3, "child output:\n{stdout}\n{stderr}");
    lines
}

/// Whether the dynamic loader's cache lists a `libcuda` (a driver installed
/// system-wide): then its absence cannot be staged with `LD_LIBRARY_PATH`.
fn system_driver_listed() -> bool {
    ["/sbin/ldconfig", "ldconfig"].iter().any(|ldconfig| {
        Command::new(ldconfig)
            .arg("-p")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so"))
    })
}

#[test]
fn without_a_driver_probe_and_create_say_no_cuda_driver() {
    if system_driver_listed() {
        println!("skipped: a CUDA driver is installed system-wide: cannot stage its absence");
        return;
    }
    let empty = TempDir::new("nodriver");
    let got = run_child(&empty.0);
    let want = "Err(Unavailable: no CUDA driver: libcuda.so.1 not found)";
    assert_eq!(got["probe"], want);
    assert_eq!(got["create"], want);
    // NVRTC missing too (unless installed system-wide): the clear message.
    if got["nvrtc"] != "Ok(\"present\")" {
        assert_eq!(
            got["nvrtc"],
            "Err(Unavailable: no NVRTC: libnvrtc.so.13 not found (install the \
             nvidia-cuda-nvrtc wheel, see scripts/install-nvrtc.sh))"
        );
    } else {
        println!("note: NVRTC is installed system-wide; its absence was not staged");
    }
}

#[test]
fn with_a_driver_but_no_device_probe_and_create_say_no_cuda_device() {
    let dir = TempDir::new("stubdriver");
    let c_file = dir.0.join("stub_cuda.c");
    std::fs::write(&c_file, STUB_DRIVER_C).unwrap();
    let lib = dir.0.join("libcuda.so.1");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    if Command::new(&cc).arg("--version").output().is_err() && cuda_required() {
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

    let got = run_child(&dir.0);
    assert_eq!(
        got["probe"],
        "Err(Unavailable: no CUDA device (CUDA_ERROR_NO_DEVICE))"
    );
    assert_eq!(
        got["create"],
        "Err(Unavailable: no CUDA device (CUDA_ERROR_NO_DEVICE))"
    );
}

#[test]
fn the_error_kinds_are_unavailable() {
    // In this process: whatever this machine has, a failure to start is
    // `Unavailable`, never a panic.
    match crate::kiln_probe_devices() {
        Ok(devices) => assert!(!devices.is_empty()),
        Err(e) => assert_eq!(e.kind, ErrorKind::Unavailable, "{e}"),
    }
}

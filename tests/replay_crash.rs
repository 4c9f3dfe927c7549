//! The one-shot commands survive module code that takes its process down:
//! `kiln replay` reports a crashing or hanging module as a failed call,
//! with the reason, and exits non-zero; `kiln backends` reports a driver
//! that crashes while probing as unavailable. Real binary, real module,
//! real signals. Run with `cargo test --release -p kiln-e2e --test replay_crash`.

use std::ffi::OsStr;
use std::process::{Command, Output};

use kiln::workload::{Workload, write};
use kiln_e2e::dev_session::kiln_binary;
use kiln_e2e::misbehaving::{MisbehavingWorkspace, module_target_dir};
use kiln_e2e::module_artifact;
use shared_state::{Call, Scalar, Tensor};

fn replay(mode: &str, extra: &[&str]) -> (Output, String) {
    replay_timed(mode, &["--no-timing"], extra)
}

fn replay_timed(mode: &str, timing: &[&str], extra: &[&str]) -> (Output, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut workload = Workload::new("misbehave-once");
    workload.call(Call::new("count"), None);
    workload.call(
        Call::new("misbehave").param("mode", Scalar::Text(mode.into())),
        Some(Tensor::from_f32(&[1], vec![0.0])),
    );
    let file = dir.path().join("w.kiln");
    write(&workload, &file).expect("write workload");
    let artifact = module_artifact("kiln-test-misbehaving");
    let out = Command::new(kiln_binary())
        .current_dir(kiln_e2e::workspace_root())
        .arg("replay")
        .arg(&file)
        .arg("--module")
        .arg(&artifact)
        .args(timing)
        .args(extra)
        .output()
        .expect("kiln runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn replay_reports_a_crashing_call_and_exits_non_zero() {
    let (out, text) = replay("segv", &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kiln exits with an error, not a signal:\n{text}"
    );
    assert!(text.contains("call 1 (misbehave) FAILED"), "{text}");
    assert!(text.contains("killed by SIGSEGV"), "{text}");
    assert!(text.contains("crashed (SIGSEGV)"), "{text}");
}

#[test]
fn replay_reports_a_hanging_call_at_its_deadline() {
    let (out, text) = replay("infinite_loop", &["--call-timeout", "1"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("call 1 (misbehave) FAILED"), "{text}");
    assert!(text.contains("past its 1.0 s deadline"), "{text}");
}

/// A warm timing sample runs the call untimed first (for at least 0.3 ms,
/// once here: the engine's pool awake, `workload::replay::sample`), then
/// the timed run; the deadline is one run's, restarted before the timed
/// run. A call of 0.6 s under a 1 s deadline passes (0.4 s of margin for a
/// loaded machine: a sleep, not CPU work); counted over the sample's two
/// runs it would be 1.2 s, hung.
#[test]
fn each_run_of_a_timed_sample_has_the_whole_call_deadline() {
    let (out, text) = replay_timed("sleep_ms:600", &[], &["--call-timeout", "1"]);
    assert!(
        !text.contains("deadline"),
        "no run is past its deadline:\n{text}"
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
}

#[test]
fn backends_survives_a_driver_that_crashes_while_probing() {
    let ws = MisbehavingWorkspace::new();
    let target = module_target_dir();
    let out = Command::new(kiln_binary())
        .current_dir(ws.root())
        .args(["backends", "misbehaving"])
        .env("KILN_MODULE_TARGET_DIR", target.as_os_str() as &OsStr)
        .env("KILN_TEST_PROBE_MISBEHAVE", "abort")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("kiln runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("misbehaving unavailable: its probe crashed: killed by SIGABRT"),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("cannot run here: misbehaving"), "{stderr}");
}

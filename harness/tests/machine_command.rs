//! `kiln machine` end to end: the real binary, a target directory of its
//! own (`CARGO_TARGET_DIR`), real measurements.

use std::path::Path;
use std::process::Command;

fn kiln_machine(target: &Path, args: &[&str]) -> (String, String) {
    // The CPU only: the GPU modules' peaks are tested on lavapipe in
    // tests/machine_vulkan.rs (measuring them here builds both modules).
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["machine", "--backends", "cpu"])
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "kiln machine failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn prints_the_peaks_measures_once_and_again_on_request() {
    let target = tempfile::tempdir().unwrap();
    let (first, err) = kiln_machine(target.path(), &["--threads", "1"]);
    eprintln!("{first}");
    assert!(
        err.contains("measuring the CPU's peaks with 1 thread "),
        "{err}"
    );
    for needle in [
        ", 1 thread, CPU quota ",
        "memory bandwidth",
        "GB/s",
        "STREAM",
        "GFLOP/s",
        "FMA = 2 flops",
        "ridge point",
        "last-level cache",
        "cold-cache flush",
        "not timed",
        "(just now)",
        "load average",
    ] {
        assert!(first.contains(needle), "no {needle:?} in:\n{first}");
    }
    // The FMA loop's instructions, and the i8 peak where there is an i8 loop.
    assert!(
        first.contains(kiln::machine::fma::instructions()),
        "{first}"
    );
    assert_eq!(
        first.contains("compute (i8)"),
        kiln::machine::i8dot::I8Isa::detected().is_some(),
        "{first}"
    );
    let files: Vec<_> = std::fs::read_dir(target.path().join("kiln/machine"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(first.contains(&files[0].path().display().to_string()));

    // Again: served from the file, nothing measured. (Marked as measured
    // on a quiet machine first, so that the rule "busy peaks are measured
    // again once it is quiet" cannot kick in whatever this machine's load.)
    let file = files[0].path();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    json["load_before"] = serde_json::json!(0.0);
    std::fs::write(&file, json.to_string()).unwrap();
    let (second, err) = kiln_machine(target.path(), &["--threads", "1"]);
    assert!(!err.contains("measuring"), "{err}");
    assert!(second.contains(" s ago)"), "{second}");
    let bandwidth = |s: &str| {
        s.lines()
            .find(|l| l.trim_start().starts_with("memory bandwidth"))
            .unwrap()
            .to_string()
    };
    assert_eq!(bandwidth(&first), bandwidth(&second));

    // --remeasure measures again, into the same file.
    let (third, err) = kiln_machine(target.path(), &["--threads", "1", "--remeasure"]);
    assert!(err.contains("measuring"), "{err}");
    assert!(third.contains("(just now)"), "{third}");
    let count = std::fs::read_dir(target.path().join("kiln/machine"))
        .unwrap()
        .count();
    assert_eq!(count, 1);
}

//! A workload file written in the previous format version (1) still
//! replays: `docs/write_workload.py` writes version 1 when no f16/bf16/i8
//! tensor is in it, and the real `kiln replay` runs it on the cpu module
//! against its stored expected outputs. Needs python3 with numpy (CI sets
//! KILN_REQUIRE_PYTHON=1).

use std::process::Command;

use kiln_e2e::dev_session::kiln_binary;

fn python_with_numpy() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("KILN_REQUIRE_PYTHON").is_none(),
            "python3 with numpy is required (KILN_REQUIRE_PYTHON is set)"
        );
        eprintln!("skipped: python3 with numpy not found");
    }
    ok
}

#[test]
fn a_version_1_file_replays_on_the_cpu_module() {
    if !python_with_numpy() {
        return;
    }
    let root = kiln_e2e::workspace_root();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("v1.kwl");
    let run = Command::new("python3")
        .arg(root.join("docs/write_workload.py"))
        .arg(&file)
        .args(["--seed", "3"])
        .output()
        .expect("run python3");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(&file).unwrap();
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    assert_eq!(
        version, 1,
        "the writer writes version 1 for f32-only workloads"
    );

    let out = Command::new(kiln_binary())
        .current_dir(&root)
        .arg("replay")
        .arg(&file)
        .args(["--backend", "cpu", "--no-timing"])
        .output()
        .expect("kiln runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kiln replay of a v1 file failed:\n{text}"
    );
    for kernel in ["saxpy", "dot", "matmul", "softmax", "stencil2d"] {
        assert!(text.contains(kernel), "{kernel} not replayed:\n{text}");
    }
    assert!(!text.contains("skipped"), "nothing may be skipped:\n{text}");
}

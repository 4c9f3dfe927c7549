//! `docs/write_workload.py` writes a valid file: run it (when python3 with
//! numpy is here), read the file, and check its expected outputs (computed
//! with numpy) against the Rust reference backend.
//!
//! Skipped with a message when python3 or numpy is missing, unless
//! `KILN_REQUIRE_PYTHON=1` (CI sets it), which makes that a failure.

mod workload_util;

use std::path::Path;
use std::process::Command;

use kiln::workload::compare::{Tolerances, compare};
use kiln::workload::reference::expected_outputs;
use kiln::workload::{Step, read};
use workload_util::scratch_dir;

fn python_with_numpy() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("KILN_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "KILN_REQUIRE_PYTHON=1 but python3 with numpy is not available"
        );
        eprintln!("skipped: python3 with numpy is not available");
    }
    ok
}

#[test]
fn the_python_example_writes_a_file_kiln_reads_and_agrees_with() {
    if !python_with_numpy() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/write_workload.py");
    let out = scratch_dir("python").join("example.kwl");
    let run = Command::new("python3")
        .arg(&script)
        .arg(&out)
        .args(["--seed", "7"])
        .output()
        .expect("run python3");
    assert!(
        run.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let w = read(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.name, "python-example-s7");
    assert_eq!(
        w.kernels_used().into_iter().collect::<Vec<_>>(),
        ["dot", "matmul", "saxpy", "softmax", "stencil2d"]
    );
    assert_eq!(w.call_count(), 7);
    assert!(
        matches!(&w.steps[0], Step::Load { name, tensor } if name == "grid" && tensor.shape() == [48, 64])
    );

    let reference = expected_outputs(&w).unwrap();
    let tolerances = Tolerances::default().for_workload(&w);
    let mut checked = 0;
    for (i, step) in w.steps.iter().enumerate() {
        if let Step::Call {
            call,
            expected: Some(expected),
        } = step
        {
            let ours = reference[i].as_ref().unwrap();
            let c = compare(expected, ours, tolerances[i].as_ref().unwrap());
            assert!(c.passed(), "step {i} ({}): {}", call.kernel, c.summary());
            checked += 1;
        }
    }
    assert_eq!(checked, 5);
}

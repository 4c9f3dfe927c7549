//! `docs/write_workload.py` writes a valid file: run it (when python3 with
//! numpy is here), read the file, and check its expected outputs (computed
//! with numpy) against the plain reference kernels.
//!
//! Skipped with a message when python3 or numpy is missing, unless
//! `KILN_REQUIRE_PYTHON=1` (CI sets it), which makes that a failure.

mod workload_util;

use std::path::Path;
use std::process::Command;

use kernel_reference::{dot, matmul, saxpy, softmax, stencil2d};
use kiln::workload::compare::{Scaling, Tolerance, compare};
use kiln::workload::{Step, read};
use shared_state::{Arg, Scalar, Tensor};
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

    // The numpy outputs agree with the plain reference kernels (the ones
    // the reference module wraps) on the same inputs. The script writes
    // format version 1: this also proves a file of the previous version
    // still reads.
    let mut residents: std::collections::BTreeMap<String, Tensor> = Default::default();
    let mut checked = 0;
    for (i, step) in w.steps.iter().enumerate() {
        let c = match step {
            Step::Load { name, tensor } => {
                residents.insert(name.clone(), tensor.clone());
                continue;
            }
            Step::Call(c) => c,
        };
        let args: Vec<Tensor> = c
            .call
            .args
            .iter()
            .map(|a| match a {
                Arg::Tensor(t) => t.clone(),
                Arg::Resident(n) => residents[n].clone(),
            })
            .collect();
        let f = |i: usize| args[i].as_f32().unwrap();
        let p = |name: &str| c.call.params.get(name).and_then(Scalar::as_f64);
        let (ours, n) = match c.call.kernel.as_str() {
            "saxpy" => (saxpy(p("a").unwrap_or(2.0) as f32, f(0), f(1)), 1),
            "dot" => (vec![dot(f(0), f(1))], f(0).len()),
            "matmul" => {
                let (m, k) = (args[0].shape()[0], args[0].shape()[1]);
                (matmul(f(0), f(1), (m, k, args[1].shape()[1])), k)
            }
            "softmax" => {
                let s = args[0].shape();
                (softmax(f(0), (s[0], s[1])), s[1])
            }
            "stencil2d" => {
                let s = args[0].shape();
                (
                    stencil2d(f(0), (s[0], s[1]), p("alpha").unwrap_or(0.1) as f32),
                    1,
                )
            }
            other => panic!("unexpected kernel {other}"),
        };
        let ours = Tensor::from_f32(
            c.expected.first().map_or(args[0].shape(), |e| e.shape()),
            ours,
        );
        if let Some(name) = &c.call.store_as {
            residents.insert(name.clone(), ours.clone());
        }
        let Some(expected) = c.expected.first() else {
            continue;
        };
        let tol = Tolerance {
            abs: 1e-5,
            rel: 1e-5,
            ulps: 8,
            scale: Scaling::Sqrt,
        }
        .scaled(n);
        let cmp = compare(expected, &ours, &tol);
        assert!(
            cmp.passed(),
            "step {i} ({}): {}",
            c.call.kernel,
            cmp.summary()
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// `--mixed`: f16 (numpy float16), bf16 (raw uint16 words, or ml_dtypes when
/// installed) and i8 (int8) tensors, in a version-2 file. Every expected
/// output agrees with the plain reference kernels: f16/bf16 within the
/// per-dtype default tolerance of the kernel's declaration (numpy sums in
/// f64, the kernels in f32), i8 kernels' i32 outputs exactly, including a
/// dot of 2^20 products of 127*127 that wraps to -267_386_880.
#[test]
fn the_python_writer_writes_f16_bf16_and_i8() {
    use kernel_reference::{dot_i8, matmul_bf16, matmul_f16, matmul_i8, softmax_bf16};
    use kiln::workload::compare::Tolerances;
    use shared_state::{DType, KernelSet, bf16, f16};

    if !python_with_numpy() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/write_workload.py");
    let out = scratch_dir("python-mixed").join("mixed.kwl");
    let run = Command::new("python3")
        .arg(&script)
        .arg(&out)
        .args(["--mixed", "--seed", "5"])
        .output()
        .expect("run python3");
    assert!(
        run.status.success(),
        "{} --mixed failed: {}",
        script.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        2,
        "a file with f16/bf16/i8 is version 2"
    );
    let w = read(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.name, "python-mixed-s5");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (decls, errors) = kiln_decl::load_dir(&root, &root.join(kiln_decl::DECLARATIONS_DIR));
    assert!(errors.is_empty(), "{errors:?}");
    let decls = KernelSet::new(decls);
    let tolerances = Tolerances::default();
    let mut checked = Vec::new();
    for step in &w.steps {
        let Step::Call(c) = step else { continue };
        let args: Vec<&Tensor> = c
            .call
            .args
            .iter()
            .map(|a| match a {
                Arg::Tensor(t) => t,
                Arg::Resident(n) => panic!("no residents in the mixed example: {n}"),
            })
            .collect();
        let expected = &c.expected[0];
        let kernel = c.call.kernel.as_str();
        let s = |i: usize| args[i].shape().to_vec();
        let (ours, n) = match kernel {
            "matmul_f16" => {
                let (a, b) = (
                    args[0].as_slice::<f16>().unwrap(),
                    args[1].as_slice::<f16>().unwrap(),
                );
                let dims = (s(0)[0], s(0)[1], s(1)[1]);
                (
                    Tensor::from_vec(&[dims.0, dims.2], matmul_f16(a, b, dims)),
                    dims.1,
                )
            }
            "matmul_bf16" => {
                let (a, b) = (
                    args[0].as_slice::<bf16>().unwrap(),
                    args[1].as_slice::<bf16>().unwrap(),
                );
                let dims = (s(0)[0], s(0)[1], s(1)[1]);
                (
                    Tensor::from_vec(&[dims.0, dims.2], matmul_bf16(a, b, dims)),
                    dims.1,
                )
            }
            "softmax_bf16" => {
                let x = args[0].as_slice::<bf16>().unwrap();
                (
                    Tensor::from_vec(&s(0), softmax_bf16(x, (s(0)[0], s(0)[1]))),
                    s(0)[1],
                )
            }
            "dot_i8" => {
                let (x, y) = (
                    args[0].as_slice::<i8>().unwrap(),
                    args[1].as_slice::<i8>().unwrap(),
                );
                (Tensor::from_vec(&[1], vec![dot_i8(x, y)]), x.len())
            }
            "matmul_i8" => {
                let (a, b) = (
                    args[0].as_slice::<i8>().unwrap(),
                    args[1].as_slice::<i8>().unwrap(),
                );
                let dims = (s(0)[0], s(0)[1], s(1)[1]);
                (
                    Tensor::from_vec(&[dims.0, dims.2], matmul_i8(a, b, dims)),
                    dims.1,
                )
            }
            other => panic!("unexpected kernel {other}"),
        };
        assert_eq!(expected.dtype(), ours.dtype(), "{kernel}");
        let dims: shared_state::Dims = [("k", n as u64), ("n", n as u64), ("cols", n as u64)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let tol = tolerances.for_call(kernel, decls.get(kernel), &dims, ours.dtype());
        if ours.dtype() == DType::I32 {
            assert!(expected.bit_eq(&ours), "{kernel}: i32 results are exact");
        }
        let cmp = compare(expected, &ours, &tol);
        assert!(cmp.passed(), "{kernel}: {}", cmp.summary());
        checked.push(kernel.to_string());
        if kernel == "dot_i8" && args[0].len() == 1 << 20 {
            assert_eq!(expected.as_slice::<i32>().unwrap(), [-267_386_880]);
        }
    }
    assert_eq!(
        checked,
        [
            "matmul_f16",
            "matmul_bf16",
            "softmax_bf16",
            "dot_i8",
            "dot_i8",
            "matmul_i8"
        ]
    );
}

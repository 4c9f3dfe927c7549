//! Relations between the bundled kernels' roofline points, through the
//! functions the replay table uses (`work_of` over the declaration's work
//! at fixed dims, then `RoofSource::rates_only` / `achieved`).

use shared_state::Dims;

use super::replay_roof::RoofSource;
use super::roofline::{Bound, Roof, achieved};
use crate::workload::replay::work_of;

fn dims(pairs: &[(&str, u64)]) -> Dims {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn intensity(kernel: &str, at: &Dims) -> f64 {
    let set = crate::swap::version_files::declarations(&crate::workspace::built_workspace_root())
        .expect("the bundled declarations parse");
    let decl = set.get(kernel).expect("bundled kernel declared");
    let work = work_of(decl, at).expect("work declared");
    // Any positive time: intensity does not depend on it.
    RoofSource::rates_only(1e-3, work)
        .and_then(|a| a.intensity)
        .expect("flops and bytes declared")
}

#[test]
fn a_large_matmul_is_more_arithmetically_intense_than_a_saxpy() {
    let matmul = intensity("matmul", &dims(&[("m", 1024), ("k", 1024), ("n", 1024)]));
    let saxpy = intensity("saxpy", &dims(&[("n", 1 << 24)]));
    // saxpy: 2n flops over 12n bytes; matmul: 2mnk over 4(mk+kn+mn).
    assert!(
        (saxpy - 2.0 / 12.0).abs() < 1e-12,
        "saxpy intensity {saxpy}"
    );
    let expected = 2.0 * 1024f64.powi(3) / (4.0 * 3.0 * 1024f64.powi(2));
    assert!(
        (matmul - expected).abs() < 1e-9,
        "matmul intensity {matmul}"
    );
    assert!(matmul > 100.0 * saxpy, "matmul {matmul} vs saxpy {saxpy}");

    // On one roof (fixed numbers) saxpy is memory-bound, the large matmul
    // compute-bound.
    let roof = Roof {
        bandwidth_gbs: 20.0,
        compute_gflops: 200.0,
    };
    let set = crate::swap::version_files::declarations(&crate::workspace::built_workspace_root())
        .unwrap();
    let point = |kernel: &str, at: &Dims| {
        let work = work_of(set.get(kernel).unwrap(), at).unwrap();
        achieved(1e-3, work, roof).unwrap()
    };
    assert_eq!(
        point("saxpy", &dims(&[("n", 1 << 24)])).bound,
        Bound::Memory
    );
    assert_eq!(
        point("matmul", &dims(&[("m", 1024), ("k", 1024), ("n", 1024)])).bound,
        Bound::Compute
    );
}

//! Every kernel against the plain reference, at sizes that include 0, 1,
//! primes, and sizes that are not multiples of the workgroup sizes (256 for
//! the 1-D shaders, 16x16 tiles for matmul, 1024-element tiles for the
//! prefix sum).

use super::support::{DOT, LAYER_NORM, MATMUL, PREFIX_SUM, SAXPY, SOFTMAX, STENCIL2D};
use shared_state::{Call, DType, Engine, ErrorKind, Scalar, Tensor};

use super::support::{assert_close, dot_scale, engine, layer_norm_ref, prefix_sum_ref, run_value};
use kernel_reference::{self as reference, test_values};

const SIZES: &[usize] = &[0, 1, 2, 3, 7, 31, 255, 256, 257, 4097, 65_537, 1_000_003];
const DIMS: &[usize] = &[0, 1, 2, 5, 13, 16, 17, 31, 64, 97];

#[test]
fn saxpy_matches_reference() {
    let Some(mut e) = engine() else { return };
    for &n in SIZES {
        let (x, y) = (test_values(n, 1), test_values(n, 2));
        for a in [None, Some(-1.5)] {
            let mut call = Call::new(SAXPY)
                .arg(Tensor::from_f32(&[n], x.clone()))
                .arg(Tensor::from_f32(&[n], y.clone()));
            if let Some(a) = a {
                call = call.param("a", Scalar::F64(a));
            }
            let got = run_value(&mut e, call);
            assert_eq!(got.shape(), &[n]);
            let want = reference::saxpy(a.unwrap_or(2.0) as f32, &x, &y);
            // A fused multiply-add on the device may round once less.
            assert_close(
                got.as_f32().unwrap(),
                &want,
                1e-6,
                &format!("saxpy n={n} a={a:?}"),
            );
        }
    }
}

#[test]
fn dot_matches_reference() {
    let Some(mut e) = engine() else { return };
    for &n in SIZES {
        let (x, y) = (test_values(n, 3), test_values(n, 4));
        let got = run_value(
            &mut e,
            Call::new(DOT)
                .arg(Tensor::from_f32(&[n], x.clone()))
                .arg(Tensor::from_f32(&[n], y.clone())),
        );
        assert_eq!(got.shape(), &[1]);
        let got = got.as_f32().unwrap()[0];
        let (want, scale) = (reference::dot(&x, &y), dot_scale(&x, &y));
        assert!(
            (got - want).abs() <= 1e-5 * (1.0 + scale),
            "dot n={n}: got {got}, want {want} (sum |x*y| = {scale})"
        );
    }
    // Exact where every partial sum is exact: n ones.
    let n = 70_001;
    let ones = Tensor::from_f32(&[n], vec![1.0; n]);
    let got = run_value(&mut e, Call::new(DOT).arg(ones.clone()).arg(ones));
    assert_eq!(got.as_f32().unwrap(), &[n as f32]);
}

#[test]
fn matmul_matches_reference() {
    let Some(mut e) = engine() else { return };
    for &m in &[0usize, 1, 2, 13, 16, 17, 33] {
        for &k in &[0usize, 1, 7, 16, 17, 65] {
            for &n in &[0usize, 1, 5, 16, 31, 97] {
                let (a, b) = (test_values(m * k, 5), test_values(k * n, 6));
                let got = run_value(
                    &mut e,
                    Call::new(MATMUL)
                        .arg(Tensor::from_f32(&[m, k], a.clone()))
                        .arg(Tensor::from_f32(&[k, n], b.clone())),
                );
                assert_eq!(got.shape(), &[m, n]);
                let want = reference::matmul(&a, &b, (m, k, n));
                let tol = 1e-6 * (k as f32 + 1.0);
                assert_close(
                    got.as_f32().unwrap(),
                    &want,
                    tol,
                    &format!("matmul {m}x{k}x{n}"),
                );
            }
        }
    }
}

#[test]
fn stencil2d_matches_reference_with_clamped_edges() {
    let Some(mut e) = engine() else { return };
    for &h in DIMS {
        for &w in DIMS {
            let g = test_values(h * w, 7);
            for alpha in [None, Some(0.25)] {
                let mut call = Call::new(STENCIL2D).arg(Tensor::from_f32(&[h, w], g.clone()));
                if let Some(alpha) = alpha {
                    call = call.param("alpha", Scalar::F64(alpha));
                }
                let got = run_value(&mut e, call);
                assert_eq!(got.shape(), &[h, w]);
                let want = reference::stencil2d(&g, (h, w), alpha.unwrap_or(0.1) as f32);
                assert_close(
                    got.as_f32().unwrap(),
                    &want,
                    1e-6,
                    &format!("stencil {h}x{w} alpha {alpha:?}"),
                );
            }
        }
    }
    // Clamped edges: a constant grid is a fixed point.
    let got = run_value(
        &mut e,
        Call::new(STENCIL2D).arg(Tensor::from_f32(&[3, 5], vec![2.5; 15])),
    );
    assert_eq!(got.as_f32().unwrap(), &[2.5; 15]);
}

#[test]
fn softmax_matches_reference_and_is_stable() {
    let Some(mut e) = engine() else { return };
    for &(rows, cols) in &[
        (0, 0),
        (0, 3),
        (3, 0),
        (1, 1),
        (2, 7),
        (5, 255),
        (3, 256),
        (4, 257),
        (7, 1031),
        (600, 13),
    ] {
        let x: Vec<f32> = test_values(rows * cols, 8)
            .iter()
            .map(|v| v * 20.0)
            .collect();
        let got = run_value(
            &mut e,
            Call::new(SOFTMAX).arg(Tensor::from_f32(&[rows, cols], x.clone())),
        );
        assert_eq!(got.shape(), &[rows, cols]);
        let want = reference::softmax(&x, (rows, cols));
        assert_close(
            got.as_f32().unwrap(),
            &want,
            1e-5,
            &format!("softmax {rows}x{cols}"),
        );
    }
    let got = run_value(
        &mut e,
        Call::new(SOFTMAX).arg(Tensor::from_f32(&[1, 3], vec![1000.0, 1000.0, -1000.0])),
    );
    assert_eq!(got.as_f32().unwrap(), &[0.5, 0.5, 0.0]);
}

#[test]
fn bad_calls_are_errors_and_leave_nothing_allocated() {
    let Some(mut e) = engine() else { return };
    let before = e.live_allocations();
    let err = e
        .run(
            Call::new(MATMUL)
                .arg(Tensor::from_f32(&[2, 3], vec![0.0; 6]))
                .arg(Tensor::from_f32(&[4, 2], vec![0.0; 8])),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(
        err.message
            .contains("matmul: dim k is 4 in input b but 3 in input a"),
        "{err}"
    );
    let err = e
        .run(
            Call::new(SAXPY)
                .arg(Tensor::zeros(DType::F64, &[3]).unwrap())
                .arg(Tensor::from_f32(&[3], vec![0.0; 3])),
        )
        .unwrap_err();
    assert!(err.message.contains("must be f32, got f64"), "{err}");
    let err = e.run(Call::new("fft")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownKernel);
    let err = e
        .run(
            Call::new(DOT)
                .resident("nope")
                .arg(Tensor::from_f32(&[1], vec![1.0])),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownBuffer);
    let err = e
        .run(
            Call::new(STENCIL2D)
                .arg(Tensor::from_f32(&[2, 2], vec![0.0; 4]))
                .param("alpha", Scalar::Bool(true)),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert_eq!(
        e.live_allocations(),
        before,
        "a failed call left device memory behind"
    );
    assert!(
        e.info()
            .unwrap()
            .notes
            .keys()
            .all(|k| !k.starts_with("counters/")),
        "failed calls are not counted"
    );
}

#[test]
fn layer_norm_matches_reference() {
    let Some(mut e) = engine() else { return };
    for &(rows, cols) in &[
        (0, 0),
        (0, 5),
        (3, 0),
        (1, 1),
        (2, 7),
        (5, 255),
        (3, 256),
        (4, 257),
        (7, 1031),
        (600, 13),
    ] {
        let x: Vec<f32> = test_values(rows * cols, 21)
            .iter()
            .map(|v| v * 10.0 + 3.0)
            .collect();
        let gamma = test_values(cols, 22);
        let beta = test_values(cols, 23);
        for eps in [None, Some(0.5)] {
            let mut call = Call::new(LAYER_NORM)
                .arg(Tensor::from_f32(&[rows, cols], x.clone()))
                .arg(Tensor::from_f32(&[cols], gamma.clone()))
                .arg(Tensor::from_f32(&[cols], beta.clone()));
            if let Some(eps) = eps {
                call = call.param("eps", Scalar::F64(eps));
            }
            let got = run_value(&mut e, call);
            assert_eq!(got.shape(), &[rows, cols]);
            let want = layer_norm_ref(&x, &gamma, &beta, (rows, cols), eps.unwrap_or(1e-5));
            assert_close(
                got.as_f32().unwrap(),
                &want,
                2e-5,
                &format!("layer_norm {rows}x{cols} eps {eps:?}"),
            );
        }
    }
    // gamma and beta must have `cols` elements.
    let err = e
        .run(
            Call::new(LAYER_NORM)
                .arg(Tensor::from_f32(&[2, 3], vec![0.0; 6]))
                .arg(Tensor::from_f32(&[4], vec![0.0; 4]))
                .arg(Tensor::from_f32(&[3], vec![0.0; 3])),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(
        err.message
            .contains("dim cols is 4 in input gamma but 3 in input x"),
        "{err}"
    );
}

#[test]
fn prefix_sum_matches_reference_at_every_tile_boundary() {
    let Some(mut e) = engine() else { return };
    // Around the 256-thread group, the 1024-element tile and the 1024-tile
    // chunks of the second pass (1024 * 1024). The workgroup cap of passes
    // 1 and 3 (they then loop over tiles) is beyond lavapipe's largest
    // binding; `sources::capped_workgroups_loop_over_the_rest` covers it.
    let sizes = [
        0, 1, 2, 255, 256, 1023, 1024, 1025, 4097, 65_537, 1_048_575, 1_048_576, 1_048_577,
        3_000_017, 8_000_003,
    ];
    for &n in &sizes {
        // Small integers: every partial sum is exact in f32 whatever the
        // order of additions, so the GPU must match bit for bit.
        let x: Vec<f32> = test_values(n, 31)
            .iter()
            .map(|v| (v * 4.0).round())
            .collect();
        let got = run_value(
            &mut e,
            Call::new(PREFIX_SUM).arg(Tensor::from_f32(&[n], x.clone())),
        );
        assert_eq!(got.shape(), &[n]);
        let want = prefix_sum_ref(&x);
        let got = got.as_f32().unwrap();
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            panic!(
                "prefix_sum n={n}: element {i}: got {}, want {}",
                got[i], want[i]
            );
        }
    }
    // Real values: f32 rounding, bounded by the running sum of |x|.
    for &n in &[1000, 300_007] {
        let x = test_values(n, 32);
        let got = run_value(
            &mut e,
            Call::new(PREFIX_SUM).arg(Tensor::from_f32(&[n], x.clone())),
        );
        let want = prefix_sum_ref(&x);
        let mut scale = 0.0f64;
        for (i, (g, w)) in got.as_f32().unwrap().iter().zip(&want).enumerate() {
            scale += f64::from(x[i].abs());
            let err = f64::from((g - w).abs());
            assert!(
                err <= 1e-6 * (1.0 + scale),
                "prefix_sum n={n}: element {i}: got {g}, want {w}"
            );
        }
    }
}

//! Every f32 kernel against the plain reference, at the backend's sizes
//! ([`Cases`](crate::Cases): 0, 1, primes, sizes that are not multiples of
//! its workgroups, blocks, tiles or grid caps) and with its tolerances; and
//! calls that do not fit their declaration.

use shared_state::{Call, DType, Engine, ErrorKind, Scalar, Tensor};

use kernel_reference::{self as reference, test_values};

use crate::Backend;
use crate::support::{
    DOT, LAYER_NORM, MATMUL, PREFIX_SUM, SAXPY, SOFTMAX, STENCIL2D, assert_close, assert_dot,
    assert_matches, engine, run_f32, run_value, state_sections, t1, t2,
};

/// `(rows, cols)` of row-wise kernels: empty either way, one element, and
/// around the 256-thread row groups.
pub const ROWS: &[(usize, usize)] = &[
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
];

pub fn saxpy_matches_the_reference<B: Backend>() {
    let Some(mut e) = engine::<B>("saxpy_matches_the_reference") else {
        return;
    };
    for &n in B::CASES.lengths {
        let (x, y) = (test_values(n, 1), test_values(n, 2));
        for a in [None, Some(-1.5), Some(1.5)] {
            let mut call = Call::new(SAXPY).arg(t1(x.clone())).arg(t1(y.clone()));
            if let Some(a) = a {
                call = call.param("a", Scalar::F64(a));
            }
            let got = run_value(&mut e, call);
            assert_eq!(got.shape(), &[n]);
            // The default a is 2.
            let want = reference::saxpy(a.unwrap_or(2.0) as f32, &x, &y);
            assert_matches(
                got.as_f32().unwrap(),
                &want,
                B::CASES.saxpy,
                &format!("saxpy n={n} a={a:?}"),
            );
        }
    }
}

pub fn dot_matches_the_reference<B: Backend>() {
    let Some(mut e) = engine::<B>("dot_matches_the_reference") else {
        return;
    };
    for &n in B::CASES.lengths {
        let (x, y) = (test_values(n, 3), test_values(n, 4));
        let got = run_value(&mut e, Call::new(DOT).arg(t1(x.clone())).arg(t1(y.clone())));
        assert_eq!(got.shape(), &[1]);
        assert_dot(
            got.as_f32().unwrap()[0],
            &x,
            &y,
            B::CASES.dot,
            &format!("dot n={n}"),
        );
    }
    // Exact where every partial sum is exact: n ones.
    let n = 70_001;
    let ones = t1(vec![1.0; n]);
    let got = run_f32(&mut e, Call::new(DOT).arg(ones.clone()).arg(ones));
    assert_eq!(got, [n as f32]);
}

pub fn matmul_matches_the_reference_for_every_shape<B: Backend>() {
    let Some(mut e) = engine::<B>("matmul_matches_the_reference_for_every_shape") else {
        return;
    };
    for &m in B::CASES.matmul_m {
        for &k in B::CASES.matmul_k {
            for &n in B::CASES.matmul_n {
                let (a, b) = (test_values(m * k, 5), test_values(k * n, 6));
                let got = run_value(
                    &mut e,
                    Call::new(MATMUL)
                        .arg(t2(m, k, a.clone()))
                        .arg(t2(k, n, b.clone())),
                );
                assert_eq!(got.shape(), &[m, n]);
                let want = reference::matmul(&a, &b, (m, k, n));
                // f32 accumulation (maybe fused) vs an f64 reference.
                let tol = B::CASES.matmul_per_k * (k as f32 + 1.0);
                assert_close(
                    got.as_f32().unwrap(),
                    &want,
                    tol,
                    &format!("matmul {m}x{k}x{n}"),
                );
            }
        }
    }
    // Larger than any tile in every dimension, none a multiple of one.
    let (m, k, n) = (257, 513, 129);
    let (a, b) = (test_values(m * k, 5), test_values(k * n, 6));
    let got = run_f32(
        &mut e,
        Call::new(MATMUL)
            .arg(t2(m, k, a.clone()))
            .arg(t2(k, n, b.clone())),
    );
    assert_close(
        &got,
        &reference::matmul(&a, &b, (m, k, n)),
        1e-4,
        "matmul 257x513x129",
    );
}

pub fn stencil2d_and_softmax_match_the_reference_on_every_grid<B: Backend>() {
    let Some(mut e) = engine::<B>("stencil2d_and_softmax_match_the_reference_on_every_grid") else {
        return;
    };
    let sides = B::CASES.grid_sides;
    let mut shapes: Vec<(usize, usize)> = sides
        .iter()
        .flat_map(|&h| sides.iter().map(move |&w| (h, w)))
        .collect();
    shapes.extend(B::CASES.wide_grids);
    for (h, w) in shapes {
        let g = test_values(h * w, 7);
        for alpha in [None, Some(0.25), Some(0.2)] {
            let mut call = Call::new(STENCIL2D).arg(t2(h, w, g.clone()));
            if let Some(alpha) = alpha {
                call = call.param("alpha", Scalar::F64(alpha));
            }
            let got = run_value(&mut e, call);
            assert_eq!(got.shape(), &[h, w]);
            // The default alpha is 0.1.
            let want = reference::stencil2d(&g, (h, w), alpha.unwrap_or(0.1) as f32);
            assert_matches(
                got.as_f32().unwrap(),
                &want,
                B::CASES.stencil,
                &format!("stencil {h}x{w} alpha {alpha:?}"),
            );
        }
        let got = run_f32(&mut e, Call::new(SOFTMAX).arg(t2(h, w, g.clone())));
        assert_close(
            &got,
            &reference::softmax(&g, (h, w)),
            1e-5,
            &format!("softmax {h}x{w}"),
        );
    }
    // Clamped edges: a constant grid is a fixed point.
    let got = run_f32(&mut e, Call::new(STENCIL2D).arg(t2(3, 5, vec![2.5; 15])));
    assert_eq!(got, [2.5; 15]);
}

pub fn softmax_matches_the_reference_and_is_stable<B: Backend>() {
    let Some(mut e) = engine::<B>("softmax_matches_the_reference_and_is_stable") else {
        return;
    };
    // Values large enough that an unshifted exp would overflow.
    for &(rows, cols) in ROWS {
        let x: Vec<f32> = test_values(rows * cols, 8)
            .iter()
            .map(|v| v * 20.0)
            .collect();
        let got = run_value(&mut e, Call::new(SOFTMAX).arg(t2(rows, cols, x.clone())));
        assert_eq!(got.shape(), &[rows, cols]);
        assert_close(
            got.as_f32().unwrap(),
            &reference::softmax(&x, (rows, cols)),
            1e-5,
            &format!("softmax {rows}x{cols}"),
        );
    }
    let got = run_f32(
        &mut e,
        Call::new(SOFTMAX).arg(t2(1, 3, vec![1000.0, 1000.0, -1000.0])),
    );
    assert_eq!(got, [0.5, 0.5, 0.0], "softmax is stable");
}

pub fn layer_norm_matches_the_reference<B: Backend>() {
    let Some(mut e) = engine::<B>("layer_norm_matches_the_reference") else {
        return;
    };
    for &(rows, cols) in B::CASES.layer_norm_shapes {
        let x: Vec<f32> = test_values(rows * cols, 21)
            .iter()
            .map(|v| v * 10.0 + 3.0)
            .collect();
        let (gamma, beta) = (test_values(cols, 22), test_values(cols, 23));
        for eps in [None, Some(0.5), Some(0.25)] {
            let mut call = Call::new(LAYER_NORM)
                .arg(t2(rows, cols, x.clone()))
                .arg(t1(gamma.clone()))
                .arg(t1(beta.clone()));
            if let Some(eps) = eps {
                call = call.param("eps", Scalar::F64(eps));
            }
            let got = run_value(&mut e, call);
            assert_eq!(got.shape(), &[rows, cols]);
            // The default eps is 1e-5.
            let want = reference::layer_norm(&x, &gamma, &beta, (rows, cols), eps.unwrap_or(1e-5));
            assert_close(
                got.as_f32().unwrap(),
                &want,
                B::CASES.layer_norm_tol,
                &format!("layer_norm {rows}x{cols} eps {eps:?}"),
            );
        }
    }
    // gamma and beta must have `cols` elements.
    let err = e
        .run(
            Call::new(LAYER_NORM)
                .arg(t2(2, 3, vec![0.0; 6]))
                .arg(t1(vec![0.0; 4]))
                .arg(t1(vec![0.0; 3])),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(
        err.message
            .contains("dim cols is 4 in input gamma but 3 in input x"),
        "{err}"
    );
}

pub fn prefix_sum_matches_the_reference_at_every_tile_boundary<B: Backend>() {
    let Some(mut e) = engine::<B>("prefix_sum_matches_the_reference_at_every_tile_boundary") else {
        return;
    };
    for &n in B::CASES.prefix_sum_exact {
        // Small integers: every partial sum is exact in f32 whatever the
        // order of additions, so the device must match bit for bit.
        let x: Vec<f32> = test_values(n, 31)
            .iter()
            .map(|v| (v * 4.0).round())
            .collect();
        let got = run_value(&mut e, Call::new(PREFIX_SUM).arg(t1(x.clone())));
        assert_eq!(got.shape(), &[n]);
        let want = reference::prefix_sum(&x);
        let got = got.as_f32().unwrap();
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            panic!(
                "prefix_sum n={n}: element {i}: got {}, want {}",
                got[i], want[i]
            );
        }
    }
    // Real values: f32 rounding, bounded by the running sum of |x|.
    for &n in B::CASES.prefix_sum_rounded {
        let x = test_values(n, 32);
        let got = run_f32(&mut e, Call::new(PREFIX_SUM).arg(t1(x.clone())));
        let want = reference::prefix_sum(&x);
        let mut scale = 0.0f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            scale += f64::from(x[i].abs());
            let err = f64::from((g - w).abs());
            assert!(
                err <= 1e-6 * (1.0 + scale),
                "prefix_sum n={n}: element {i}: got {g}, want {w}"
            );
        }
    }
}

pub fn bad_calls_are_clear_errors_and_leave_nothing_behind<B: Backend>() {
    let Some(mut e) = engine::<B>("bad_calls_are_clear_errors_and_leave_nothing_behind") else {
        return;
    };
    let before = B::device_memory(&e);
    let err = e
        .run(
            Call::new(MATMUL)
                .arg(t2(2, 3, test_values(6, 1)))
                .arg(t2(4, 2, test_values(8, 1))),
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
                .arg(t1(vec![0.0; 3])),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(err.message.contains("must be f32, got f64"), "{err}");
    let err = e
        .run(
            Call::new(SAXPY)
                .arg(t1(vec![1.0]))
                .arg(t1(vec![1.0]))
                .param("a", Scalar::Text("x".into())),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    let err = e
        .run(
            Call::new(STENCIL2D)
                .arg(t2(2, 2, vec![0.0; 4]))
                .param("alpha", Scalar::Bool(true)),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCall);
    let err = e.run(Call::new("fft")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownKernel);
    let err = e
        .run(Call::new(DOT).resident("nope").arg(t1(vec![1.0])))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownBuffer);
    assert_eq!(
        B::device_memory(&e),
        before,
        "a failed call left device memory behind"
    );
    // Nothing was counted for failed calls, in the notes or the state.
    let info = e.info().unwrap();
    assert!(
        info.notes.keys().all(|k| !k.starts_with("counters/")),
        "failed calls are not counted: {:?}",
        info.notes.keys()
    );
    assert_eq!(state_sections(&e.export_state().unwrap()), [] as [&str; 0]);
    assert_eq!(info.backend, B::NAME);
    assert_eq!(info.kernels, crate::support::BUNDLED_KERNELS);
}

//! The f16, bf16 and i8 kernels against the plain reference, at lengths
//! that are odd (a half-used last 32-bit word where a backend packs them),
//! not multiples of 4 (i8) and not multiples of the workgroup or block
//! sizes. i8 results are exact, including i32 wrap-around; matmuls are f32
//! sums in the reference's order, so they differ at most by the backend's
//! f32 -> f16/bf16 rounding (checked at 1 ulp; bf16 rounds to nearest even
//! as `half` does: the same bits); softmax in f32 vs f64 within 2 ulp.

use shared_state::{Call, Tensor, bf16, f16};

use kernel_reference::{self as reference, test_values};

use crate::Backend;
use crate::support::{engine, run_value};

const DIMS: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 3),
    (5, 13, 17),
    (17, 33, 65),
    (2, 0, 3),
    (0, 4, 5),
];

/// Units in the last place between two 16-bit floats of one sign-magnitude
/// encoding (f16 or bf16 bits).
fn ulps16(a: u16, b: u16) -> u32 {
    let key = |x: u16| -> i32 {
        if x & 0x8000 != 0 {
            -i32::from(x & 0x7fff)
        } else {
            i32::from(x)
        }
    };
    key(a).abs_diff(key(b))
}

pub fn half_matmuls_match_the_reference_within_one_rounding<B: Backend>() {
    let Some(mut e) = engine::<B>("half_matmuls_match_the_reference_within_one_rounding") else {
        return;
    };
    for &(m, k, n) in DIMS {
        let a = test_values(m * k, 21);
        let b = test_values(k * n, 22);
        let ah: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
        let bh: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
        let got = run_value(
            &mut e,
            Call::new("matmul_f16")
                .arg(Tensor::from_vec(&[m, k], ah.clone()))
                .arg(Tensor::from_vec(&[k, n], bh.clone())),
        );
        assert_eq!(got.shape(), &[m, n]);
        let want = reference::matmul_f16(&ah, &bh, (m, k, n));
        for (i, (g, w)) in got.as_slice::<f16>().unwrap().iter().zip(&want).enumerate() {
            assert!(
                ulps16(g.to_bits(), w.to_bits()) <= 1,
                "matmul_f16 {m}x{k}x{n} [{i}]: {g} vs {w}"
            );
        }
        let ab: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
        let bb: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
        let got = run_value(
            &mut e,
            Call::new("matmul_bf16")
                .arg(Tensor::from_vec(&[m, k], ab.clone()))
                .arg(Tensor::from_vec(&[k, n], bb.clone())),
        );
        let want = reference::matmul_bf16(&ab, &bb, (m, k, n));
        // The kernel rounds f32 -> bf16 to nearest even, as `half` does:
        // the same bits.
        let got: Vec<u16> = got
            .as_slice::<bf16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let want: Vec<u16> = want.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "matmul_bf16 {m}x{k}x{n}");
    }
}

pub fn softmax_bf16_matches_the_reference_on_odd_rows<B: Backend>() {
    let Some(mut e) = engine::<B>("softmax_bf16_matches_the_reference_on_odd_rows") else {
        return;
    };
    for &(rows, cols) in &[
        (1, 1),
        (3, 1),
        (7, 3),
        (5, 257),
        (300, 3),
        (2, 1001),
        (0, 5),
    ] {
        let x: Vec<bf16> = test_values(rows * cols, 23)
            .iter()
            .map(|&v| bf16::from_f32(v * 8.0))
            .collect();
        let got = run_value(
            &mut e,
            Call::new("softmax_bf16").arg(Tensor::from_vec(&[rows, cols], x.clone())),
        );
        let want = reference::softmax_bf16(&x, (rows, cols));
        for (i, (g, w)) in got
            .as_slice::<bf16>()
            .unwrap()
            .iter()
            .zip(&want)
            .enumerate()
        {
            assert!(
                ulps16(g.to_bits(), w.to_bits()) <= 2,
                "softmax_bf16 {rows}x{cols} [{i}]: {g} vs {w}"
            );
        }
    }
}

pub fn i8_kernels_are_exact_and_wrap<B: Backend>() {
    let Some(mut e) = engine::<B>("i8_kernels_are_exact_and_wrap") else {
        return;
    };
    let i8s = |n: usize, seed: u64| -> Vec<i8> {
        test_values(n, seed)
            .iter()
            .map(|&v| (v * 127.0) as i8)
            .collect()
    };
    for n in [0, 1, 3, 5, 255, 257, 65_537] {
        let (x, y) = (i8s(n, 24), i8s(n, 25));
        let got = run_value(
            &mut e,
            Call::new("dot_i8")
                .arg(Tensor::from_vec(&[n], x.clone()))
                .arg(Tensor::from_vec(&[n], y.clone())),
        );
        assert_eq!(
            got.as_slice::<i32>().unwrap(),
            [reference::dot_i8(&x, &y)],
            "dot_i8 n={n}"
        );
    }
    // 2^20 products of 127*127 wrap to -267_386_880.
    let x = vec![127i8; 1 << 20];
    let got = run_value(
        &mut e,
        Call::new("dot_i8")
            .arg(Tensor::from_vec(&[1 << 20], x.clone()))
            .arg(Tensor::from_vec(&[1 << 20], x)),
    );
    assert_eq!(got.as_slice::<i32>().unwrap(), [-267_386_880]);
    for &(m, k, n) in DIMS {
        let (a, b) = (i8s(m * k, 26), i8s(k * n, 27));
        let got = run_value(
            &mut e,
            Call::new("matmul_i8")
                .arg(Tensor::from_vec(&[m, k], a.clone()))
                .arg(Tensor::from_vec(&[k, n], b.clone())),
        );
        assert_eq!(
            got.as_slice::<i32>().unwrap(),
            reference::matmul_i8(&a, &b, (m, k, n)),
            "matmul_i8 {m}x{k}x{n}"
        );
    }
    // A long k of products of (-128)*(-128) = 16384, each backend as far as
    // it can loop: k = 65535 is 1_073_725_440, exact; past 2^17 the sum
    // wraps in i32 (k = 2^18 + 1 gives 2^14). llvmpipe (lavapipe) ends an
    // invocation's loops after 65535 iterations in all (measured: k = 2^18 +
    // 1 gave 65535 * 2^14), so there dot_i8 above is the wrapping check.
    for &k in B::CASES.matmul_i8_long_k {
        let a = vec![-128i8; k];
        let got = run_value(
            &mut e,
            Call::new("matmul_i8")
                .arg(Tensor::from_vec(&[1, k], a.clone()))
                .arg(Tensor::from_vec(&[k, 1], a)),
        );
        let want = (k as i64 * 16_384) as i32;
        assert_eq!(got.as_slice::<i32>().unwrap(), [want], "matmul_i8 k={k}");
    }
}

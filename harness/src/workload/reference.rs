//! The host-side reference backend: runs calls of the five standard kernels
//! on the plain implementations in the `kernel-reference` crate
//! (`kernels/reference`), with exactly the semantics of the CPU module
//! (`kernels/cpu/src/kernels.rs`): saxpy's `a` and stencil2d's `alpha` are
//! taken as f32, saxpy and stencil2d are exact f32, dot, matmul and softmax
//! accumulate in f64, stencil edges are clamped, softmax is row-wise and
//! shifted by the row maximum. Used to compute expected outputs and to check
//! a backend when a workload has none.

use std::collections::BTreeMap;

use kernel_reference::{dot, matmul, saxpy, softmax, stencil2d};
use shared_state::kernels::{self as std_kernels, DOT, MATMUL, SAXPY, SOFTMAX, STENCIL2D};
use shared_state::{Arg, Call, DType, EngineError, ErrorKind, Tensor};

use crate::workload::{Step, Workload};

/// Runs one standard kernel call on the reference backend. Resident
/// arguments are looked up in `residents`; `store_as` is ignored (the caller
/// stores the result, see [`expected_outputs`]).
pub fn run_reference(
    call: &Call,
    residents: &BTreeMap<String, Tensor>,
) -> Result<Tensor, EngineError> {
    let args = call
        .args
        .iter()
        .map(|arg| match arg {
            Arg::Tensor(t) => Ok(t),
            Arg::Resident(name) => residents.get(name).ok_or_else(|| {
                EngineError::new(
                    ErrorKind::UnknownBuffer,
                    format!("no resident buffer {name:?}"),
                )
            }),
        })
        .collect::<Result<Vec<&Tensor>, EngineError>>()?;
    let shapes: Vec<(DType, &[usize])> = args.iter().map(|t| (t.dtype(), t.shape())).collect();
    let out_shape = std_kernels::output_shape(&call.kernel, &shapes)?;
    let f = |i: usize| args[i].as_f32().expect("output_shape checked the dtype");
    let data = match call.kernel.as_str() {
        SAXPY => {
            let a = std_kernels::param_f64(&call.params, "a", 2.0)? as f32;
            saxpy(a, f(0), f(1))
        }
        DOT => vec![dot(f(0), f(1))],
        MATMUL => {
            let (m, k) = (args[0].shape()[0], args[0].shape()[1]);
            matmul(f(0), f(1), (m, k, args[1].shape()[1]))
        }
        STENCIL2D => {
            let alpha =
                std_kernels::param_f64(&call.params, "alpha", std_kernels::STENCIL_ALPHA)? as f32;
            let s = args[0].shape();
            stencil2d(f(0), (s[0], s[1]), alpha)
        }
        SOFTMAX => {
            let s = args[0].shape();
            softmax(f(0), (s[0], s[1]))
        }
        other => {
            return Err(EngineError::new(
                ErrorKind::UnknownKernel,
                format!("the reference backend has no kernel {other:?}"),
            ));
        }
    };
    Ok(Tensor::from_f32(&out_shape, data))
}

/// The reference output of every step of `workload`, in step order: `None`
/// for a load, the output for a call (for a call with `store_as`, the value
/// the resident holds after it). Residents are tracked through loads and
/// `store_as`. An error names the step.
pub fn expected_outputs(workload: &Workload) -> Result<Vec<Option<Tensor>>, EngineError> {
    let mut residents: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut outputs = Vec::with_capacity(workload.steps.len());
    for (i, step) in workload.steps.iter().enumerate() {
        match step {
            Step::Load { name, tensor } => {
                residents.insert(name.clone(), tensor.clone());
                outputs.push(None);
            }
            Step::Call { call, .. } => {
                let out = run_reference(call, &residents).map_err(|e| EngineError {
                    kind: e.kind,
                    message: format!("step {i} ({}): {}", call.kernel, e.message),
                })?;
                if let Some(name) = &call.store_as {
                    residents.insert(name.clone(), out.clone());
                }
                outputs.push(Some(out));
            }
        }
    }
    Ok(outputs)
}

/// Sets the expected output of every call in `workload` to the reference's.
pub fn fill_expected(workload: &mut Workload) -> Result<(), EngineError> {
    let outputs = expected_outputs(workload)?;
    for (step, out) in workload.steps.iter_mut().zip(outputs) {
        if let Step::Call { expected, .. } = step {
            *expected = out;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_state::Scalar;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape, v.to_vec())
    }

    #[test]
    fn small_cases_by_hand() {
        let none = BTreeMap::new();
        let call = Call::new(SAXPY)
            .arg(t(&[3], &[1.0, 2.0, 3.0]))
            .arg(t(&[3], &[10.0, 20.0, 30.0]));
        // default a = 2
        assert_eq!(
            run_reference(&call, &none).unwrap(),
            t(&[3], &[12.0, 24.0, 36.0])
        );
        let call = call.param("a", Scalar::I64(-1));
        assert_eq!(
            run_reference(&call, &none).unwrap(),
            t(&[3], &[9.0, 18.0, 27.0])
        );
        let call = Call::new(DOT)
            .arg(t(&[3], &[1.0, 2.0, 3.0]))
            .arg(t(&[3], &[4.0, 5.0, 6.0]));
        assert_eq!(run_reference(&call, &none).unwrap(), t(&[1], &[32.0]));
        let call = Call::new(MATMUL)
            .arg(t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
            .arg(t(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]));
        assert_eq!(
            run_reference(&call, &none).unwrap(),
            t(&[2, 2], &[58.0, 64.0, 139.0, 154.0])
        );
        let call = Call::new(SOFTMAX).arg(t(&[2, 2], &[0.0, 0.0, 1000.0, -1000.0]));
        assert_eq!(
            run_reference(&call, &none).unwrap(),
            t(&[2, 2], &[0.5, 0.5, 1.0, 0.0])
        );
    }

    #[test]
    fn residents_and_store_as_are_tracked() {
        let mut w = Workload::new("t");
        w.load("g", t(&[1, 3], &[0.0, 4.0, 0.0]));
        let step = Call::new(STENCIL2D)
            .resident("g")
            .param("alpha", Scalar::F64(0.25))
            .store_as("g");
        w.call(step.clone(), None);
        w.call(step, None);
        fill_expected(&mut w).unwrap();
        let outs: Vec<_> = w.calls().map(|(_, e)| e.unwrap().clone()).collect();
        assert_eq!(outs[0], t(&[1, 3], &[1.0, 2.0, 1.0]));
        assert_eq!(outs[1], t(&[1, 3], &[1.25, 1.5, 1.25]));

        let mut bad = Workload::new("bad");
        bad.call(Call::new(STENCIL2D).resident("nope"), None);
        let err = expected_outputs(&bad).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnknownBuffer);
        assert_eq!(
            err.message,
            "step 0 (stencil2d): no resident buffer \"nope\""
        );
        let err = run_reference(&Call::new("fft"), &BTreeMap::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnknownKernel);
    }
}

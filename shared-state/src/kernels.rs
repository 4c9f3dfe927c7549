//! The standard kernels: the names and signatures every backend provides,
//! so one workload runs on all of them and their outputs can be compared.

use std::collections::BTreeMap;

use crate::engine::{ArgSpec, EngineError, KernelSpec, ParamSpec};
use crate::snapshot::Scalar;
use crate::tensor::{DType, format_shape};

pub const SAXPY: &str = "saxpy";
pub const DOT: &str = "dot";
pub const MATMUL: &str = "matmul";
pub const STENCIL2D: &str = "stencil2d";
pub const SOFTMAX: &str = "softmax";

/// Default diffusion coefficient of `stencil2d`.
pub const STENCIL_ALPHA: f64 = 0.1;

fn arg(name: &str, shape: &[&str]) -> ArgSpec {
    ArgSpec {
        name: name.to_string(),
        dtype: DType::F32,
        shape: shape.iter().map(|s| s.to_string()).collect(),
    }
}

fn param(name: &str, default: Scalar) -> ParamSpec {
    ParamSpec {
        name: name.to_string(),
        default,
    }
}

/// Signatures of the standard kernels.
pub fn standard_kernels() -> Vec<KernelSpec> {
    vec![
        KernelSpec {
            name: SAXPY.into(),
            summary: "out = a*x + y".into(),
            args: vec![arg("x", &["n"]), arg("y", &["n"])],
            params: vec![param("a", Scalar::F64(2.0))],
            output: arg("out", &["n"]),
        },
        KernelSpec {
            name: DOT.into(),
            summary: "out[0] = sum(x*y)".into(),
            args: vec![arg("x", &["n"]), arg("y", &["n"])],
            params: vec![],
            output: arg("out", &["1"]),
        },
        KernelSpec {
            name: MATMUL.into(),
            summary: "out = a @ b (row-major f32)".into(),
            args: vec![arg("a", &["m", "k"]), arg("b", &["k", "n"])],
            params: vec![],
            output: arg("out", &["m", "n"]),
        },
        KernelSpec {
            name: STENCIL2D.into(),
            summary: "one explicit heat-diffusion step, 5-point, edges clamped: \
                      out = g + alpha*(N+S+E+W-4g)"
                .into(),
            args: vec![arg("grid", &["h", "w"])],
            params: vec![param("alpha", Scalar::F64(STENCIL_ALPHA))],
            output: arg("out", &["h", "w"]),
        },
        KernelSpec {
            name: SOFTMAX.into(),
            summary: "row-wise softmax, numerically stable".into(),
            args: vec![arg("x", &["rows", "cols"])],
            params: vec![],
            output: arg("out", &["rows", "cols"]),
        },
    ]
}

/// Checks the dtypes and shapes of a standard kernel's arguments and returns
/// the output shape.
pub fn output_shape(kernel: &str, args: &[(DType, &[usize])]) -> Result<Vec<usize>, EngineError> {
    let spec = standard_kernels()
        .into_iter()
        .find(|k| k.name == kernel)
        .ok_or_else(|| {
            EngineError::new(
                crate::ErrorKind::UnknownKernel,
                format!(
                    "no kernel {kernel:?} (known: {})",
                    standard_kernels()
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    if args.len() != spec.args.len() {
        return Err(EngineError::bad_call(format!(
            "{kernel} takes {} arguments, got {}",
            spec.args.len(),
            args.len()
        )));
    }
    let mut dims: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, ((dtype, shape), want)) in args.iter().zip(&spec.args).enumerate() {
        if *dtype != want.dtype {
            return Err(EngineError::bad_call(format!(
                "{kernel} argument {i} ({}) must be {}, got {dtype}",
                want.name, want.dtype
            )));
        }
        if shape.len() != want.shape.len() {
            return Err(EngineError::bad_call(format!(
                "{kernel} argument {i} ({}) must have shape [{}], got [{}]",
                want.name,
                want.shape.join("x"),
                format_shape(shape)
            )));
        }
        for (sym, &d) in want.shape.iter().zip(shape.iter()) {
            match dims.get(sym.as_str()) {
                Some(&seen) if seen != d => {
                    return Err(EngineError::bad_call(format!(
                        "{kernel}: dimension {sym} is {seen} in one argument and {d} in argument {i} ({})",
                        want.name
                    )));
                }
                _ => {
                    dims.insert(sym, d);
                }
            }
        }
    }
    Ok(spec
        .output
        .shape
        .iter()
        .map(|sym| sym.parse().unwrap_or_else(|_| dims[sym.as_str()]))
        .collect())
}

/// A float parameter of a call, or its default.
pub fn param_f64(
    params: &BTreeMap<String, Scalar>,
    name: &str,
    default: f64,
) -> Result<f64, EngineError> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| {
            EngineError::bad_call(format!("parameter {name} must be a number, got {v}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_and_output_derived() {
        assert_eq!(
            output_shape(MATMUL, &[(DType::F32, &[3, 5]), (DType::F32, &[5, 7])]).unwrap(),
            vec![3, 7]
        );
        assert_eq!(
            output_shape(DOT, &[(DType::F32, &[9]), (DType::F32, &[9])]).unwrap(),
            vec![1]
        );
        let err =
            output_shape(MATMUL, &[(DType::F32, &[3, 5]), (DType::F32, &[4, 7])]).unwrap_err();
        assert!(err.message.contains("dimension k is 5"), "{err}");
        let err = output_shape(SAXPY, &[(DType::F64, &[3]), (DType::F32, &[3])]).unwrap_err();
        assert!(err.message.contains("must be f32, got f64"), "{err}");
        let err = output_shape("nope", &[]).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::UnknownKernel);
    }
}

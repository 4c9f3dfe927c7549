//! The argument convention between a kernel's declaration and its `.cu`
//! file, the same as the Vulkan module's binding convention, so that adding
//! a kernel means writing its `.cu` file and its declaration, never launch
//! code. Each pass of a kernel is one `extern "C" __global__` function,
//! named `KERNEL` for the entry `main` and `KERNEL_ENTRY` for any other
//! (`dot_partial`, `prefix_sum_scan_tiles`), taking, in order:
//!
//! 1. a pointer per input, in declaration order (`const float*`, ...);
//! 2. a pointer per output, in declaration order;
//! 3. a pointer per scratch buffer of `launch.scratch` (zero-filled);
//! 4. the dims as `unsigned int`, in order of first appearance in the
//!    inputs' shapes;
//! 5. the parameters in declaration order, then the tunables (`float` for a
//!    float, `int` for an integer, `unsigned int` 0/1 for a bool).
//!
//! Trailing parameters a kernel does not need may be left out. An empty
//! tensor is passed as a null pointer. The grid is the pass's `workgroups`,
//! the block its `group`.

use shared_state::{Bound, EngineError, KernelDecl, Scalar, TensorDecl};

/// The type of one scalar argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    U32,
    F32,
    I32,
}

impl FieldKind {
    /// Its CUDA C type.
    pub fn c_type(self) -> &'static str {
        match self {
            FieldKind::U32 => "unsigned int",
            FieldKind::F32 => "float",
            FieldKind::I32 => "int",
        }
    }

    /// Its PTX parameter type.
    pub fn ptx(self) -> &'static str {
        match self {
            FieldKind::U32 | FieldKind::I32 => ".u32",
            FieldKind::F32 => ".f32",
        }
    }

    /// The field type of a parameter with this default; `None` for a text
    /// parameter, which kernels do not get.
    fn of_param(default: &Scalar) -> Option<FieldKind> {
        match default {
            Scalar::F64(_) => Some(FieldKind::F32),
            Scalar::I64(_) => Some(FieldKind::I32),
            Scalar::Bool(_) => Some(FieldKind::U32),
            Scalar::Text(_) => None,
        }
    }
}

/// One scalar argument, after the pointers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
    /// A dim (else a parameter or tunable).
    pub is_dim: bool,
}

/// What a pointer argument points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Input,
    Output,
    Scratch,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Output => "output",
            Role::Scratch => "scratch",
        }
    }
}

/// The arguments of one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Pointer arguments: role and declaration.
    pub storage: Vec<(Role, TensorDecl)>,
    /// The scalar arguments, in order.
    pub fields: Vec<Field>,
}

impl Layout {
    pub fn of(decl: &KernelDecl) -> Layout {
        let storage = decl
            .inputs
            .iter()
            .map(|t| (Role::Input, t.clone()))
            .chain(decl.outputs.iter().map(|t| (Role::Output, t.clone())))
            .chain(
                decl.launch
                    .scratch
                    .iter()
                    .map(|t| (Role::Scratch, t.clone())),
            )
            .collect();
        let mut fields: Vec<Field> = Vec::new();
        for dim in decl
            .inputs
            .iter()
            .flat_map(|t| t.shape.iter().filter_map(|e| e.as_dim()))
        {
            if !fields.iter().any(|f| f.name == dim) {
                fields.push(Field {
                    name: dim.to_string(),
                    kind: FieldKind::U32,
                    is_dim: true,
                });
            }
        }
        let params = decl.params.iter().map(|p| (&p.name, &p.default));
        let tunables = decl.tunables.iter().map(|t| (&t.name, &t.default));
        for (name, default) in params.chain(tunables) {
            if let Some(kind) = FieldKind::of_param(default) {
                fields.push(Field {
                    name: name.clone(),
                    kind,
                    is_dim: false,
                });
            }
        }
        Layout { storage, fields }
    }

    /// The scalar arguments of a bound call.
    pub fn values(&self, kernel: &str, bound: &Bound) -> Result<Vec<Value>, EngineError> {
        self.fields
            .iter()
            .map(|field| {
                if field.is_dim {
                    let v = bound.dims.get(&field.name).copied().unwrap_or(0);
                    return u32::try_from(v).map(Value::U32).map_err(|_| {
                        EngineError::bad_call(format!(
                            "{kernel}: dim {} = {v} does not fit the unsigned int a kernel takes",
                            field.name
                        ))
                    });
                }
                let value = bound.params.get(&field.name).ok_or_else(|| {
                    EngineError::internal(format!("{kernel}: parameter {} unbound", field.name))
                })?;
                let bad = || {
                    EngineError::bad_call(format!(
                        "{kernel}: parameter {} = {value} does not fit the kernel's {}",
                        field.name,
                        field.kind.c_type()
                    ))
                };
                Ok(match field.kind {
                    FieldKind::F32 => Value::F32(value.as_f64().ok_or_else(bad)? as f32),
                    FieldKind::I32 => Value::I32(
                        i32::try_from(value.as_i64().ok_or_else(bad)?).map_err(|_| bad())?,
                    ),
                    FieldKind::U32 => Value::U32(u32::from(value.as_bool().ok_or_else(bad)?)),
                })
            })
            .collect()
    }
}

/// A scalar argument's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    U32(u32),
    F32(f32),
    I32(i32),
}

/// The CUDA function of a pass: `KERNEL` for the entry `main` (a
/// `__global__` function cannot be called `main`), `KERNEL_ENTRY` otherwise.
pub fn function_name(kernel: &str, entry: &str) -> String {
    if entry == "main" {
        kernel.to_string()
    } else {
        format!("{kernel}_{entry}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shared_state::DType;

    use super::*;

    #[test]
    fn arguments_are_pointers_then_dims_then_params() {
        let d = kiln_decl::parse(
            std::path::Path::new("k.toml"),
            r#"
inputs = ["a: f32[m, k]", "b: f32[k, n]"]
outputs = ["out: f32[m, n]"]
scratch = ["tmp: f32[n]"]
params = { alpha = 0.5, steps = 3, relu = true }
[[launch]]
group = [16, 16]
workgroups = ["n", "m"]
"#,
        )
        .unwrap();
        let l = Layout::of(&d);
        let roles: Vec<Role> = l.storage.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            roles,
            [Role::Input, Role::Input, Role::Output, Role::Scratch]
        );
        let bound = d
            .bind(
                &[(DType::F32, &[2, 3]), (DType::F32, &[3, 5])],
                &BTreeMap::from([("steps".to_string(), Scalar::I64(-7))]),
            )
            .unwrap();
        assert_eq!(
            l.values("k", &bound).unwrap(),
            [
                Value::U32(2),
                Value::U32(3),
                Value::U32(5),
                Value::F32(0.5),
                Value::I32(-7),
                Value::U32(1)
            ]
        );
        assert_eq!(function_name("saxpy", "main"), "saxpy");
        assert_eq!(function_name("dot", "finish"), "dot_finish");
    }
}

//! The binding convention between a kernel's declaration and its shader, so
//! that adding a kernel means writing its WGSL and its declaration, never
//! dispatch code. Every pass of a kernel binds the same set, group 0:
//!
//! | binding | what |
//! |---|---|
//! | `0 ..` | each input, in declaration order (`var<storage, read>`) |
//! | then | each output, in declaration order (`var<storage, read_write>`) |
//! | then | each scratch buffer of `launch.scratch` (`var<storage, read_write>`) |
//! | last | one uniform block (`var<uniform>`): the dims as `u32`, in order of first appearance in the inputs' shapes; then the parameters in declaration order, then the tunables (`f32` for a float, `i32` for an integer, `u32` 0/1 for a bool) |
//!
//! A shader may leave out bindings it does not use, and trailing fields of
//! the uniform block; the fields it declares must have the names and types
//! of the convention (checked when the engine is created, see
//! [`crate::shaders::check_bindings`]). Element types: `f32`, `i32`, `u32`,
//! `f16` (`array<f16>`, with `enable f16;`, or packed two to a 32-bit word);
//! `bf16`, `i8` and `u8` are packed into 32-bit words (`array<u32>` or
//! `array<i32>`). Buffers are allocated in whole 32-bit words, so a packed
//! tensor of odd length has a readable (and writable) last word.

use shared_state::{Bound, DType, EngineError, KernelDecl, Scalar, TensorDecl};

/// The type of one field of the uniform block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    U32,
    F32,
    I32,
}

impl FieldKind {
    pub fn wgsl(self) -> &'static str {
        match self {
            FieldKind::U32 => "u32",
            FieldKind::F32 => "f32",
            FieldKind::I32 => "i32",
        }
    }

    /// The field type of a parameter with this default; `None` for a text
    /// parameter, which shaders do not get.
    fn of_param(default: &Scalar) -> Option<FieldKind> {
        match default {
            Scalar::F64(_) => Some(FieldKind::F32),
            Scalar::I64(_) => Some(FieldKind::I32),
            Scalar::Bool(_) => Some(FieldKind::U32),
            Scalar::Text(_) => None,
        }
    }
}

/// One field of the uniform block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
    /// A dim (else a parameter or tunable).
    pub is_dim: bool,
}

/// What a storage binding holds.
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

/// The bindings of one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Storage bindings `0..storage.len()`: role and declaration.
    pub storage: Vec<(Role, TensorDecl)>,
    /// The uniform block's fields, in order.
    pub fields: Vec<Field>,
    /// Inputs (by index) the shader declares `read_write`: a resident
    /// bound there is written in place, so one shared with another
    /// version is first copied on the device (see the engine's `run`).
    pub written_inputs: Vec<usize>,
}

/// Bytes of one uniform field.
const FIELD_BYTES: usize = 4;

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
        Layout {
            storage,
            fields,
            written_inputs: Vec::new(),
        }
    }

    /// The binding of the uniform block (after every storage binding).
    pub fn uniform_binding(&self) -> u32 {
        self.storage.len() as u32
    }

    /// Bytes of the uniform buffer: the fields, rounded up to 16 (at least
    /// 16, so a kernel with no dims and no parameters binds one too).
    pub fn uniform_bytes(&self) -> usize {
        (self.fields.len() * FIELD_BYTES)
            .next_multiple_of(16)
            .max(16)
    }

    /// The uniform block's bytes for a bound call.
    pub fn encode(&self, kernel: &str, bound: &Bound) -> Result<Vec<u8>, EngineError> {
        let mut out = vec![0u8; self.uniform_bytes()];
        for (field, slot) in self.fields.iter().zip(out.chunks_exact_mut(FIELD_BYTES)) {
            let word: [u8; 4] = if field.is_dim {
                let v = bound.dims.get(&field.name).copied().unwrap_or(0);
                u32::try_from(v)
                    .map_err(|_| {
                        EngineError::bad_call(format!(
                            "{kernel}: dim {} = {v} does not fit the u32 a shader takes",
                            field.name
                        ))
                    })?
                    .to_le_bytes()
            } else {
                let value = bound.params.get(&field.name).ok_or_else(|| {
                    EngineError::internal(format!("{kernel}: parameter {} unbound", field.name))
                })?;
                let bad = || {
                    EngineError::bad_call(format!(
                        "{kernel}: parameter {} = {value} does not fit the shader's {}",
                        field.name,
                        field.kind.wgsl()
                    ))
                };
                match field.kind {
                    FieldKind::F32 => (value.as_f64().ok_or_else(bad)? as f32).to_le_bytes(),
                    FieldKind::I32 => i32::try_from(value.as_i64().ok_or_else(bad)?)
                        .map_err(|_| bad())?
                        .to_le_bytes(),
                    FieldKind::U32 => u32::from(value.as_bool().ok_or_else(bad)?).to_le_bytes(),
                }
            };
            slot.copy_from_slice(&word);
        }
        Ok(out)
    }
}

/// How a tensor of `dtype` is seen by a shader: the 32-bit (or 16-bit) word
/// type of its array elements. `None`: no WGSL type holds it (f64, i64).
pub fn element_kinds(dtype: DType) -> Option<&'static [(naga::ScalarKind, u8)]> {
    use naga::ScalarKind::{Float, Sint, Uint};
    Some(match dtype {
        DType::F32 => &[(Float, 4)],
        DType::I32 => &[(Sint, 4)],
        DType::U32 => &[(Uint, 4)],
        // `array<f16>` (with `enable f16;` and a device with 16-bit storage)
        // or packed two to a 32-bit word (`unpack2x16float`, no feature
        // needed).
        DType::F16 => &[(Float, 2), (Uint, 4), (Sint, 4)],
        // Packed four (or two) to a 32-bit word.
        DType::BF16 | DType::I8 | DType::U8 => &[(Uint, 4), (Sint, 4)],
        DType::F64 | DType::I64 => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn decl(text: &str) -> KernelDecl {
        kiln_decl::parse(std::path::Path::new("k.toml"), text).unwrap()
    }

    #[test]
    fn bindings_follow_inputs_outputs_scratch_then_the_uniform_block() {
        let d = decl(
            r#"
inputs = ["a: f32[m, k]", "b: f32[k, n]", "bias: f32[n]"]
outputs = ["out: f32[m, n]", "max: f32[m]"]
scratch = ["tmp: f32[ceil_div(n, 16)]"]
params = { alpha = 0.5, steps = 3, relu = true }
[[tunables]]
name = "tile"
candidates = [16, 32]
[[launch]]
group = [16, 16]
workgroups = ["ceil_div(n, 16)", "ceil_div(m, 16)"]
"#,
        );
        let l = Layout::of(&d);
        let roles: Vec<(Role, &str)> = l.storage.iter().map(|(r, t)| (*r, &*t.name)).collect();
        assert_eq!(
            roles,
            [
                (Role::Input, "a"),
                (Role::Input, "b"),
                (Role::Input, "bias"),
                (Role::Output, "out"),
                (Role::Output, "max"),
                (Role::Scratch, "tmp")
            ]
        );
        assert_eq!(l.uniform_binding(), 6);
        let fields: Vec<(&str, FieldKind)> = l.fields.iter().map(|f| (&*f.name, f.kind)).collect();
        // Dims in order of first appearance; params in the file's order,
        // then tunables.
        assert_eq!(
            fields,
            [
                ("m", FieldKind::U32),
                ("k", FieldKind::U32),
                ("n", FieldKind::U32),
                ("alpha", FieldKind::F32),
                ("steps", FieldKind::I32),
                ("relu", FieldKind::U32),
                ("tile", FieldKind::I32)
            ]
        );
        assert_eq!(l.uniform_bytes(), 32);
        let bound = d
            .bind(
                &[
                    (DType::F32, &[2, 3]),
                    (DType::F32, &[3, 5]),
                    (DType::F32, &[5]),
                ],
                &BTreeMap::from([("alpha".to_string(), Scalar::I64(2))]),
            )
            .unwrap();
        let bytes = l.encode("k", &bound).unwrap();
        let word = |i: usize| <[u8; 4]>::try_from(&bytes[4 * i..4 * i + 4]).unwrap();
        assert_eq!(u32::from_le_bytes(word(0)), 2);
        assert_eq!(u32::from_le_bytes(word(1)), 3);
        assert_eq!(u32::from_le_bytes(word(2)), 5);
        assert_eq!(
            f32::from_le_bytes(word(3)),
            2.0,
            "an integer given for a float"
        );
        assert_eq!(i32::from_le_bytes(word(4)), 3, "steps default");
        assert_eq!(u32::from_le_bytes(word(5)), 1, "relu = true");
        assert_eq!(i32::from_le_bytes(word(6)), 16, "tile: first candidate");
    }

    #[test]
    fn values_a_shader_cannot_take_are_bad_calls() {
        let d = decl("inputs = [\"x: f32[n]\"]\noutputs = [\"y: f32[n]\"]\nparams = { k = 1 }\n");
        let l = Layout::of(&d);
        assert_eq!(l.uniform_bytes(), 16);
        let bound = d
            .bind(
                &[(DType::F32, &[4])],
                &BTreeMap::from([("k".to_string(), Scalar::I64(1 << 40))]),
            )
            .unwrap();
        let e = l.encode("k", &bound).unwrap_err();
        assert!(
            e.message
                .contains("parameter k = 1099511627776 does not fit the shader's i32"),
            "{e}"
        );
        let mut bound = d.bind(&[(DType::F32, &[4])], &BTreeMap::new()).unwrap();
        bound.dims.insert("n".into(), 1 << 33);
        let e = l.encode("k", &bound).unwrap_err();
        assert!(e.message.contains("dim n = 8589934592 does not fit"), "{e}");
    }
}

//! Kernel declarations: what a kernel takes and returns, as data.
//!
//! A kernel is declared once, in a file under `kernels/declarations/` that
//! the host reads (the file format lives in the host; this module holds the
//! *type*, so that the host can hand a version's declarations to an engine).
//! The contract names no kernel: modules look kernels up by the name in the
//! call and take everything else (dtypes, shapes, parameter defaults, GPU
//! launch sizes) from the declaration.
//!
//! [`KernelDecl::bind`] checks a call against its declaration (dtypes, dims
//! bound consistently across arguments) and derives the output shapes, with
//! errors that name the argument and the dim.

use std::collections::BTreeMap;
use std::fmt;

use crate::expr::{Dims, Expr, ExprError};
use crate::snapshot::Scalar;
use crate::tensor::DType;

/// One tensor of a signature: `x: f32[rows, cols]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub dtype: DType,
    /// One expression per dim. In an input, a bare name binds that dim; any
    /// other expression is checked against the dims bound so far.
    pub shape: Vec<Expr>,
}

impl TensorDecl {
    /// Parses `name: dtype[dim, dim, ...]` (`[]` for a rank-0 tensor).
    pub fn parse(text: &str) -> Result<TensorDecl, ExprError> {
        let err = |what: &str| ExprError(format!("`{text}`: {what}"));
        let (name, rest) = text
            .split_once(':')
            .ok_or_else(|| err("expected `name: dtype[dims]`"))?;
        let name = name.trim();
        if !is_identifier(name) {
            return Err(err("the name must be an identifier (letters, digits, `_`)"));
        }
        let rest = rest.trim();
        let (dtype, dims) = rest
            .split_once('[')
            .ok_or_else(|| err("expected `[` after the dtype"))?;
        let dtype = DType::from_name(dtype.trim()).ok_or_else(|| {
            err(&format!(
                "unknown dtype `{}` (known: {})",
                dtype.trim(),
                DType::ALL.map(DType::name).join(", ")
            ))
        })?;
        let dims = dims
            .trim_end()
            .strip_suffix(']')
            .ok_or_else(|| err("expected `]` at the end"))?;
        let shape = split_top_level(dims)
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| Expr::parse(s.trim()).map_err(|e| err(&e.0)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TensorDecl {
            name: name.to_string(),
            dtype,
            shape,
        })
    }

    /// The shape for `dims`.
    pub fn eval_shape(&self, dims: &Dims) -> Result<Vec<usize>, ExprError> {
        self.shape
            .iter()
            .map(|e| {
                let v = e.eval(dims)?;
                usize::try_from(v).map_err(|_| ExprError(format!("`{e}` = {v} does not fit")))
            })
            .collect()
    }
}

impl fmt::Display for TensorDecl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(Expr::to_string).collect();
        write!(f, "{}: {}[{}]", self.name, self.dtype, dims.join(", "))
    }
}

/// A scalar parameter with its default (its type is the default's type).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub name: String,
    pub default: Scalar,
}

impl ParamDecl {
    /// Parses `name=value` (`eps=1e-5`, `steps=4`, `exact=true`).
    pub fn parse(text: &str) -> Result<ParamDecl, ExprError> {
        let err = |what: &str| ExprError(format!("`{text}`: {what}"));
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| err("expected `name=default`"))?;
        let name = name.trim();
        if !is_identifier(name) {
            return Err(err("the name must be an identifier"));
        }
        let value = value.trim();
        let default = if let Ok(v) = value.parse::<i64>() {
            Scalar::I64(v)
        } else if let Ok(v) = value.parse::<f64>() {
            Scalar::F64(v)
        } else if let Ok(v) = value.parse::<bool>() {
            Scalar::Bool(v)
        } else {
            return Err(err("the default must be a number or true/false"));
        };
        Ok(ParamDecl {
            name: name.to_string(),
            default,
        })
    }
}

/// One GPU dispatch of a kernel. A kernel with several passes (a prefix sum:
/// scan blocks, scan block sums, add) runs them in order on the same
/// bindings.
#[derive(Clone, Debug, PartialEq)]
pub struct PassDecl {
    /// Entry point in the shader / `.cu` file (`main`, `scan_blocks`).
    pub entry: String,
    /// Threads per workgroup (Vulkan: must equal the shader's
    /// `@workgroup_size`; CUDA: the block size), up to three dims.
    pub group: Vec<u32>,
    /// Workgroups (Vulkan) or blocks (CUDA) to launch, up to three dims, as
    /// expressions over the dims.
    pub workgroups: Vec<Expr>,
}

/// How a GPU backend launches the kernel: passes and scratch buffers (which
/// follow the inputs and outputs in binding order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchDecl {
    pub passes: Vec<PassDecl>,
    pub scratch: Vec<TensorDecl>,
}

/// The work one call does, for achieved rates (GB/s, GFLOP/s).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkDecl {
    pub flops: Option<Expr>,
    pub bytes: Option<Expr>,
}

/// A tunable parameter: passed to the kernel as a call parameter; the host
/// times the candidates and keeps the best.
#[derive(Clone, Debug, PartialEq)]
pub struct TunableDecl {
    pub name: String,
    pub candidates: Vec<Scalar>,
    pub default: Scalar,
}

/// A tolerance override for one dtype of this kernel's outputs (`None`:
/// every dtype). Unset fields keep the host's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToleranceDecl {
    pub dtype: Option<DType>,
    pub abs: Option<f64>,
    pub rel: Option<f64>,
    pub ulps: Option<u64>,
    /// Length of the reduction behind each output element (`k` for a
    /// matmul): error bounds grow with its square root.
    pub reduction: Option<Expr>,
}

/// One kernel's declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelDecl {
    pub name: String,
    pub summary: String,
    pub inputs: Vec<TensorDecl>,
    pub params: Vec<ParamDecl>,
    pub outputs: Vec<TensorDecl>,
    pub launch: LaunchDecl,
    pub work: WorkDecl,
    pub tunables: Vec<TunableDecl>,
    pub tolerances: Vec<ToleranceDecl>,
    /// Where it was declared (a path relative to the workspace) and a hash
    /// of that file's bytes: a version's declarations are immutable.
    pub file: String,
    pub hash: String,
}

/// A call checked against its declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    /// Every dim, bound from the input shapes.
    pub dims: Dims,
    /// The declared parameters (and tunables), with defaults filled in.
    pub params: BTreeMap<String, Scalar>,
    /// Dtype and shape of each output, in declaration order.
    pub outputs: Vec<(DType, Vec<usize>)>,
}

impl Bound {
    /// A parameter as f64 (numbers only; the declaration fixes the name).
    pub fn f64(&self, name: &str) -> Option<f64> {
        self.params.get(name).and_then(Scalar::as_f64)
    }

    pub fn i64(&self, name: &str) -> Option<i64> {
        self.params.get(name).and_then(Scalar::as_i64)
    }

    /// A dim as usize (0 if unbound, which `bind` never leaves).
    pub fn dim(&self, name: &str) -> usize {
        self.dims.get(name).map_or(0, |&d| d as usize)
    }
}

/// Why a call does not fit its declaration; the message names the argument
/// and the dim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindError(pub String);

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BindError {}

impl KernelDecl {
    /// `saxpy(x: f32[n], y: f32[n]; a=2) -> out: f32[n]`.
    pub fn signature(&self) -> String {
        let ins: Vec<String> = self.inputs.iter().map(ToString::to_string).collect();
        let outs: Vec<String> = self.outputs.iter().map(ToString::to_string).collect();
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}={}", p.name, p.default))
            .collect();
        let params = if params.is_empty() {
            String::new()
        } else {
            format!("; {}", params.join(", "))
        };
        format!(
            "{}({}{params}) -> {}",
            self.name,
            ins.join(", "),
            outs.join(", ")
        )
    }

    /// Checks the call's input dtypes and shapes and its parameters against
    /// the declaration; returns the dims, the parameters with defaults and
    /// the output shapes.
    pub fn bind(
        &self,
        inputs: &[(DType, &[usize])],
        params: &BTreeMap<String, Scalar>,
    ) -> Result<Bound, BindError> {
        let name = &self.name;
        if inputs.len() != self.inputs.len() {
            return Err(BindError(format!(
                "{name} takes {} input(s) ({}), got {}",
                self.inputs.len(),
                self.inputs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                inputs.len()
            )));
        }
        let mut dims = Dims::new();
        // Where each dim was bound, for messages.
        let mut bound_by: BTreeMap<String, String> = BTreeMap::new();
        // Bare names bind first (in order), so `x: f32[n + 1]` before
        // `y: f32[n]` still works; then every expression is checked.
        for ((dtype, shape), decl) in inputs.iter().zip(&self.inputs) {
            if *dtype != decl.dtype {
                return Err(BindError(format!(
                    "{name}: input {} must be {}, got {dtype}",
                    decl.name, decl.dtype
                )));
            }
            if shape.len() != decl.shape.len() {
                return Err(BindError(format!(
                    "{name}: input {} must have {} dim(s) ({decl}), got shape [{}]",
                    decl.name,
                    decl.shape.len(),
                    crate::tensor::format_shape(shape)
                )));
            }
            for (expr, &got) in decl.shape.iter().zip(shape.iter()) {
                if let Some(dim) = expr.as_dim() {
                    match dims.get(dim) {
                        Some(&seen) if seen != got as u64 => {
                            return Err(BindError(format!(
                                "{name}: dim {dim} is {got} in input {} but {seen} in input {}",
                                decl.name, bound_by[dim]
                            )));
                        }
                        Some(_) => {}
                        None => {
                            dims.insert(dim.to_string(), got as u64);
                            bound_by.insert(dim.to_string(), decl.name.clone());
                        }
                    }
                }
            }
        }
        for ((_, shape), decl) in inputs.iter().zip(&self.inputs) {
            for (expr, &got) in decl.shape.iter().zip(shape.iter()) {
                if expr.as_dim().is_some() {
                    continue;
                }
                let want = expr
                    .eval(&dims)
                    .map_err(|e| BindError(format!("{name}: input {}: {e}", decl.name)))?;
                if want != got as u64 {
                    return Err(BindError(format!(
                        "{name}: input {} has a dim of {got} where `{expr}` = {want}",
                        decl.name
                    )));
                }
            }
        }
        let mut values = BTreeMap::new();
        for p in &self.params {
            values.insert(p.name.clone(), p.default.clone());
        }
        for t in &self.tunables {
            values.insert(t.name.clone(), t.default.clone());
        }
        for (key, value) in params {
            let Some(default) = values.get(key) else {
                let known: Vec<&str> = values.keys().map(String::as_str).collect();
                return Err(BindError(format!(
                    "{name} has no parameter {key} (it has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            let fits = match (default, value) {
                (Scalar::F64(_), Scalar::F64(_) | Scalar::I64(_)) => true,
                (Scalar::I64(_), v) => v.as_i64().is_some(),
                (Scalar::Bool(_), Scalar::Bool(_)) => true,
                (Scalar::Text(_), Scalar::Text(_)) => true,
                _ => false,
            };
            if !fits {
                return Err(BindError(format!(
                    "{name}: parameter {key} must be {}, got {value}",
                    default.kind()
                )));
            }
            values.insert(key.clone(), value.clone());
        }
        let outputs = self
            .outputs
            .iter()
            .map(|o| {
                o.eval_shape(&dims)
                    .map(|s| (o.dtype, s))
                    .map_err(|e| BindError(format!("{name}: output {}: {e}", o.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Bound {
            dims,
            params: values,
            outputs,
        })
    }

    /// Checks what can be checked without a call: every dim used by an
    /// output, scratch buffer, launch size, work or tolerance expression is
    /// bound by an input; names are unique; tunables have their default
    /// among the candidates. Returns every problem found.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_identifier(&self.name) {
            problems.push(format!("kernel name `{}` is not an identifier", self.name));
        }
        if self.outputs.is_empty() {
            problems.push("a kernel needs at least one output".to_string());
        }
        let bound: Vec<String> = self
            .inputs
            .iter()
            .flat_map(|t| {
                t.shape
                    .iter()
                    .filter_map(|e| e.as_dim().map(str::to_string))
            })
            .collect();
        let mut check = |what: String, e: &Expr| {
            for d in e.dims() {
                if !bound.contains(&d) {
                    problems.push(format!(
                        "{what}: dim `{d}` is not bound by any input (inputs bind: {})",
                        if bound.is_empty() {
                            "none".to_string()
                        } else {
                            bound.join(", ")
                        }
                    ));
                }
            }
        };
        for t in self
            .inputs
            .iter()
            .chain(&self.outputs)
            .chain(&self.launch.scratch)
        {
            for e in &t.shape {
                check(format!("{}", t), e);
            }
        }
        for (i, p) in self.launch.passes.iter().enumerate() {
            for e in &p.workgroups {
                check(format!("launch pass {i} ({}) workgroups", p.entry), e);
            }
        }
        if let Some(e) = &self.work.flops {
            check("work.flops".into(), e);
        }
        if let Some(e) = &self.work.bytes {
            check("work.bytes".into(), e);
        }
        for t in &self.tolerances {
            if let Some(e) = &t.reduction {
                check("tolerance reduction".into(), e);
            }
        }
        let mut names: Vec<&str> = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .chain(&self.launch.scratch)
            .map(|t| t.name.as_str())
            .chain(self.params.iter().map(|p| p.name.as_str()))
            .chain(self.tunables.iter().map(|t| t.name.as_str()))
            .collect();
        names.sort_unstable();
        for pair in names.windows(2) {
            if pair[0] == pair[1] {
                problems.push(format!("the name `{}` is used twice", pair[0]));
            }
        }
        for t in &self.tunables {
            if !t.candidates.contains(&t.default) {
                problems.push(format!(
                    "tunable {}: the default {} is not among the candidates",
                    t.name, t.default
                ));
            }
        }
        problems
    }
}

/// The declarations of one version, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelSet {
    kernels: BTreeMap<String, KernelDecl>,
}

impl KernelSet {
    pub fn new(decls: impl IntoIterator<Item = KernelDecl>) -> KernelSet {
        KernelSet {
            kernels: decls.into_iter().map(|d| (d.name.clone(), d)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&KernelDecl> {
        self.kernels.get(name)
    }

    /// The declaration of `name`, or an `UnknownKernel` error listing what
    /// is declared.
    pub fn lookup(&self, name: &str) -> Result<&KernelDecl, crate::EngineError> {
        self.get(name).ok_or_else(|| {
            crate::EngineError::new(
                crate::ErrorKind::UnknownKernel,
                format!(
                    "no kernel {name:?} is declared (declared: {})",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kernels.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &KernelDecl> {
        self.kernels.values()
    }

    pub fn len(&self) -> usize {
        self.kernels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty()
    }
}

/// A source file handed to an engine with its version (a WGSL shader, a
/// `.cu` file): staged next to the library, hashed, immutable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the module's directory (`shaders/saxpy.wgsl`).
    pub path: String,
    pub text: String,
    /// Hash of `text` as staged.
    pub hash: String,
}

/// First line of a GPU source stub (`kiln new kernel` writes them): a
/// backend does not list the kernel as implemented while its source starts
/// with it, so replay skips the kernel's calls there (delete the line when
/// the kernel is written).
pub const GPU_STUB_MARKER: &str = "// kiln: stub";

impl SourceFile {
    /// A scaffold's stub, not written yet (starts with [`GPU_STUB_MARKER`]).
    pub fn is_stub(&self) -> bool {
        self.text.trim_start().starts_with(GPU_STUB_MARKER)
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(inputs: &[&str], outputs: &[&str], params: &[&str]) -> KernelDecl {
        KernelDecl {
            name: "k".into(),
            summary: String::new(),
            inputs: inputs
                .iter()
                .map(|s| TensorDecl::parse(s).unwrap())
                .collect(),
            params: params
                .iter()
                .map(|s| ParamDecl::parse(s).unwrap())
                .collect(),
            outputs: outputs
                .iter()
                .map(|s| TensorDecl::parse(s).unwrap())
                .collect(),
            launch: LaunchDecl::default(),
            work: WorkDecl::default(),
            tunables: vec![],
            tolerances: vec![],
            file: "k.toml".into(),
            hash: String::new(),
        }
    }

    #[test]
    fn binds_dims_and_derives_outputs() {
        let d = decl(&["a: f32[m, k]", "b: f32[k, n]"], &["out: f32[m, n]"], &[]);
        let b = d
            .bind(
                &[(DType::F32, &[3, 5]), (DType::F32, &[5, 7])],
                &BTreeMap::new(),
            )
            .unwrap();
        assert_eq!(b.outputs, vec![(DType::F32, vec![3, 7])]);
        assert_eq!(b.dim("k"), 5);
        let d = decl(
            &["x: f32[n]"],
            &["sums: f32[ceil_div(n, 256)]", "y: i32[]"],
            &[],
        );
        let b = d.bind(&[(DType::F32, &[1000])], &BTreeMap::new()).unwrap();
        assert_eq!(b.outputs, vec![(DType::F32, vec![4]), (DType::I32, vec![])]);
    }

    #[test]
    fn errors_name_the_argument_and_the_dim() {
        let d = decl(&["a: f32[m, k]", "b: f32[k, n]"], &["out: f32[m, n]"], &[]);
        let e = d
            .bind(
                &[(DType::F32, &[3, 5]), (DType::F32, &[4, 7])],
                &BTreeMap::new(),
            )
            .unwrap_err();
        assert_eq!(e.0, "k: dim k is 4 in input b but 5 in input a");
        let e = d
            .bind(
                &[(DType::F64, &[3, 5]), (DType::F32, &[5, 7])],
                &BTreeMap::new(),
            )
            .unwrap_err();
        assert_eq!(e.0, "k: input a must be f32, got f64");
        let e = d.bind(&[(DType::F32, &[3])], &BTreeMap::new()).unwrap_err();
        assert!(e.0.contains("takes 2 input(s)"), "{e}");
        let e = d
            .bind(
                &[(DType::F32, &[3]), (DType::F32, &[5, 7])],
                &BTreeMap::new(),
            )
            .unwrap_err();
        assert!(e.0.contains("input a must have 2 dim(s)"), "{e}");
        let d = decl(&["x: f32[n]", "y: f32[n + 1]"], &["out: f32[n]"], &[]);
        let e = d
            .bind(&[(DType::F32, &[4]), (DType::F32, &[4])], &BTreeMap::new())
            .unwrap_err();
        assert!(
            e.0.contains("input y has a dim of 4 where `n + 1` = 5"),
            "{e}"
        );
    }

    #[test]
    fn params_get_defaults_and_are_type_checked() {
        let d = decl(&["x: f32[n]"], &["y: f32[n]"], &["eps=1e-5", "steps=2"]);
        let mut p = BTreeMap::new();
        let b = d.bind(&[(DType::F32, &[2])], &p).unwrap();
        assert_eq!(b.f64("eps"), Some(1e-5));
        assert_eq!(b.i64("steps"), Some(2));
        p.insert("steps".to_string(), Scalar::F64(1.5));
        let e = d.bind(&[(DType::F32, &[2])], &p).unwrap_err();
        assert!(e.0.contains("parameter steps must be i64"), "{e}");
        p.clear();
        p.insert("nope".to_string(), Scalar::I64(1));
        let e = d.bind(&[(DType::F32, &[2])], &p).unwrap_err();
        assert!(
            e.0.contains("has no parameter nope (it has: eps, steps)"),
            "{e}"
        );
    }

    #[test]
    fn validate_finds_unbound_dims_and_duplicates() {
        let d = decl(&["x: f32[n]"], &["x: f32[m]"], &[]);
        let problems = d.validate();
        assert!(
            problems.iter().any(|p| p.contains("dim `m` is not bound")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("`x` is used twice")),
            "{problems:?}"
        );
    }

    #[test]
    fn signatures_parse_and_print() {
        let t = TensorDecl::parse("x: bf16[rows, ceil_div(cols, 2)]").unwrap();
        assert_eq!(t.to_string(), "x: bf16[rows, ceil_div(cols, 2)]");
        assert!(
            TensorDecl::parse("x: f17[n]")
                .unwrap_err()
                .0
                .contains("unknown dtype")
        );
        assert!(TensorDecl::parse("x f32[n]").is_err());
        assert!(TensorDecl::parse("x: f32[n").is_err());
        assert_eq!(TensorDecl::parse("s: f32[]").unwrap().shape, vec![]);
        assert_eq!(
            ParamDecl::parse("eps=1e-5").unwrap().default,
            Scalar::F64(1e-5)
        );
        assert!(ParamDecl::parse("eps").is_err());
        let d = decl(&["x: f32[n]"], &["y: f32[n]"], &["a=2"]);
        assert_eq!(d.signature(), "k(x: f32[n]; a=2) -> y: f32[n]");
    }
}

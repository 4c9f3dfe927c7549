//! Generated workloads: a call of any declared kernel with inputs made from
//! its declaration (`kiln record --kernel layer_norm --dims rows=512,cols=1024
//! --seed 7 --trials 3`), and the bundled workload (`kernels/workload.toml`
//! plus every declared kernel it does not mention).
//!
//! Inputs, per dtype (deterministic in the seed, the same on every machine):
//! - `f32`, `f64`, `f16`, `bf16`: uniform in [-1, 1) on a 2^-24 grid,
//!   rounded to the dtype;
//! - `i8`, `u8`: uniform over every value of the type;
//! - `i32`, `i64`: uniform in [-32768, 32768); `u32`: uniform in [0, 65536).
//!
//! Expected outputs are not made here: they come from the reference module
//! (see [`crate::workload::reference`]) when the workload is recorded, or at
//! replay time.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use shared_state::{
    Buffer, Call, DType, Dims, EngineError, KernelDecl, KernelSet, Scalar, Tensor, bf16,
    element_count, f16,
};

use super::model::{CallStep, Step, Trial, Workload};

/// A generator spec that does not make sense.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateError(pub String);

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GenerateError {}

impl From<EngineError> for GenerateError {
    fn from(e: EngineError) -> Self {
        GenerateError(format!("reference: {e}"))
    }
}

/// Largest tensor a generated workload may hold (elements), so a typo in a
/// dim does not try to fill all memory.
pub const MAX_ELEMENTS: usize = 1 << 30;

/// Every dim of a kernel the bundled workload spec does not mention.
pub const DEFAULT_DIM: u64 = 200;

/// What to generate: one call of one declared kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct GenSpec {
    pub kernel: String,
    pub dims: Dims,
    pub seed: u64,
    /// Independent input sets (at least 1).
    pub trials: usize,
    /// Parameters passed with the call (the declaration's defaults apply
    /// to the others).
    pub params: BTreeMap<String, Scalar>,
}

impl GenSpec {
    pub fn new(kernel: &str, dims: Dims, seed: u64, trials: usize) -> GenSpec {
        GenSpec {
            kernel: kernel.to_string(),
            dims,
            seed,
            trials: trials.max(1),
            params: BTreeMap::new(),
        }
    }

    /// Parses `rows=512,cols=1024`.
    pub fn parse_dims(text: &str) -> Result<Dims, GenerateError> {
        let mut dims = Dims::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                GenerateError(format!(
                    "--dims {text:?}: {part:?} is not NAME=VALUE (write e.g. rows=512,cols=1024)"
                ))
            })?;
            let value = value.trim().parse::<u64>().map_err(|_| {
                GenerateError(format!(
                    "--dims {text:?}: {:?} is not a whole number",
                    value.trim()
                ))
            })?;
            dims.insert(name.trim().to_string(), value);
        }
        Ok(dims)
    }

    /// `rows=512,cols=1024`.
    pub fn dims_text(&self) -> String {
        self.dims
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `layer_norm-cols1024-rows512-s7`: a name for the generated workload.
    pub fn name(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|(k, v)| format!("{k}{v}")).collect();
        format!("{}-{}-s{}", self.kernel, dims.join("-"), self.seed)
    }

    /// The command that records this call again.
    pub fn command(&self) -> String {
        format!(
            "kiln record --kernel {} --dims {} --seed {} --trials {}",
            self.kernel,
            self.dims_text(),
            self.seed,
            self.trials
        )
    }
}

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same inputs on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`, on a 2^-24 grid (exact in f32).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// `shape` of f32 values uniform in `[lo, hi)`.
    pub fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(shape, (0..n).map(|_| self.uniform(lo, hi)).collect())
    }

    /// A tensor of `dtype` with the distribution stated in the module
    /// documentation.
    pub fn tensor_of(&mut self, dtype: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let buffer = match dtype {
            DType::F32 => Buffer::F32((0..n).map(|_| self.uniform(-1.0, 1.0)).collect()),
            DType::F64 => Buffer::F64((0..n).map(|_| f64::from(self.uniform(-1.0, 1.0))).collect()),
            DType::F16 => Buffer::F16(
                (0..n)
                    .map(|_| f16::from_f32(self.uniform(-1.0, 1.0)))
                    .collect(),
            ),
            DType::BF16 => Buffer::BF16(
                (0..n)
                    .map(|_| bf16::from_f32(self.uniform(-1.0, 1.0)))
                    .collect(),
            ),
            DType::I8 => Buffer::I8((0..n).map(|_| self.next_u64() as i8).collect()),
            DType::U8 => Buffer::U8((0..n).map(|_| self.next_u64() as u8).collect()),
            DType::I32 => Buffer::I32(
                (0..n)
                    .map(|_| (self.next_u64() % 65536) as i32 - 32768)
                    .collect(),
            ),
            DType::I64 => Buffer::I64(
                (0..n)
                    .map(|_| (self.next_u64() % 65536) as i64 - 32768)
                    .collect(),
            ),
            DType::U32 => Buffer::U32((0..n).map(|_| (self.next_u64() % 65536) as u32).collect()),
        };
        Tensor::new(shape.to_vec(), buffer).expect("length is the shape's product")
    }
}

/// Checks `dims` against what `decl`'s inputs bind: every one given, none
/// unknown.
pub fn check_dims(decl: &KernelDecl, dims: &Dims) -> Result<(), GenerateError> {
    let needed: Vec<String> = {
        let mut v: Vec<String> = decl
            .inputs
            .iter()
            .flat_map(|t| {
                t.shape
                    .iter()
                    .filter_map(|e| e.as_dim().map(str::to_string))
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let missing: Vec<&str> = needed
        .iter()
        .filter(|d| !dims.contains_key(*d))
        .map(String::as_str)
        .collect();
    let unknown: Vec<&str> = dims
        .keys()
        .filter(|d| !needed.contains(d))
        .map(String::as_str)
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        return Ok(());
    }
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("missing {}", missing.join(", ")));
    }
    if !unknown.is_empty() {
        why.push(format!("{} has no dim {}", decl.name, unknown.join(", ")));
    }
    Err(GenerateError(format!(
        "{}: --dims must give {} ({}): {}",
        decl.signature(),
        if needed.is_empty() {
            "nothing".to_string()
        } else {
            needed.join(", ")
        },
        needed
            .iter()
            .map(|d| format!("{d}=N"))
            .collect::<Vec<_>>()
            .join(","),
        why.join("; ")
    )))
}

/// Random inputs for `decl` at `dims`, in declared order.
pub fn inputs(decl: &KernelDecl, dims: &Dims, rng: &mut Rng) -> Result<Vec<Tensor>, GenerateError> {
    decl.inputs
        .iter()
        .map(|t| {
            let shape = t
                .eval_shape(dims)
                .map_err(|e| GenerateError(format!("{}: input {}: {e}", decl.name, t.name)))?;
            match element_count(&shape) {
                Some(n) if n <= MAX_ELEMENTS => Ok(rng.tensor_of(t.dtype, &shape)),
                _ => Err(GenerateError(format!(
                    "{}: input {} of shape {:?}: a tensor of more than {MAX_ELEMENTS} elements is too large to generate",
                    decl.name, t.name, shape
                ))),
            }
        })
        .collect()
}

/// One call of `decl` at `spec`'s dims, with `spec.trials` independent input
/// sets, tagged with the declaration's signature and the command that
/// records it. No expected outputs (see the module documentation).
pub fn generate(decl: &KernelDecl, spec: &GenSpec) -> Result<Workload, GenerateError> {
    let mut w = Workload::new(spec.name());
    w.call_step(generate_step(decl, spec)?);
    Ok(w)
}

/// The call step [`generate`] makes.
pub fn generate_step(decl: &KernelDecl, spec: &GenSpec) -> Result<CallStep, GenerateError> {
    check_dims(decl, &spec.dims)?;
    let mut rng = Rng::new(spec.seed);
    let mut call = Call::new(&decl.name);
    for t in inputs(decl, &spec.dims, &mut rng)? {
        call = call.arg(t);
    }
    call.params = spec.params.clone();
    let shapes: Vec<(DType, Vec<usize>)> = call
        .args
        .iter()
        .filter_map(|a| match a {
            shared_state::Arg::Tensor(t) => Some((t.dtype(), t.shape().to_vec())),
            shared_state::Arg::Resident(_) => None,
        })
        .collect();
    let typed: Vec<(DType, &[usize])> = shapes.iter().map(|(d, s)| (*d, s.as_slice())).collect();
    decl.bind(&typed, &call.params)
        .map_err(|e| GenerateError(e.0))?;
    let mut trials = Vec::new();
    for _ in 1..spec.trials.max(1) {
        trials.push(Trial {
            inputs: inputs(decl, &spec.dims, &mut rng)?,
            expected: Vec::new(),
        });
    }
    Ok(CallStep {
        call,
        expected: Vec::new(),
        trials,
        signature: Some(decl.signature()),
        recorded_by: Some(spec.command()),
    })
}

/// Where the bundled workload's spec lives, relative to the workspace.
pub const BUNDLED_SPEC: &str = "kernels/workload.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleFile {
    #[serde(default)]
    call: Vec<BundleCall>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleCall {
    kernel: String,
    #[serde(default)]
    dims: BTreeMap<String, u64>,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    /// Input name -> resident name: that input is a resident buffer,
    /// loaded once before the calls.
    #[serde(default)]
    resident: BTreeMap<String, String>,
    /// Store the (single) output as this resident.
    store: Option<String>,
    #[serde(default = "one")]
    repeat: usize,
    #[serde(default = "two")]
    trials: usize,
}

fn one() -> usize {
    1
}

fn two() -> usize {
    2
}

/// The bundled workload: the calls `spec` (the text of
/// `kernels/workload.toml`) lists, then one call of every declared kernel
/// it does not mention, with every dim [`DEFAULT_DIM`]. So a new declared
/// kernel is in the bundled workload at once. Calls that return a value
/// carry two trials unless the spec says otherwise; no expected outputs
/// (they come from the reference at replay).
pub fn bundled_workload(kernels: &KernelSet, spec: &str) -> Result<Workload, GenerateError> {
    let file: BundleFile = toml::from_str(spec)
        .map_err(|e| GenerateError(format!("{BUNDLED_SPEC}: {}", e.message().trim())))?;
    let mut rng = Rng::new(0x6b69_6c6e); // "kiln"
    let mut w = Workload::new("default");
    let mut loads = Vec::new();
    let mut mentioned = std::collections::BTreeSet::new();
    for (i, c) in file.call.iter().enumerate() {
        let Some(decl) = kernels.get(&c.kernel) else {
            // A kernel no longer declared: the spec is stale for it; the
            // rest of the workload still runs.
            tracing::warn!(
                "{BUNDLED_SPEC}: call {} names kernel {:?}, which is not declared; left out",
                i + 1,
                c.kernel
            );
            continue;
        };
        mentioned.insert(c.kernel.clone());
        let dims: Dims = c.dims.clone().into_iter().collect();
        check_dims(decl, &dims).map_err(|e| GenerateError(format!("{BUNDLED_SPEC}: {e}")))?;
        let mut call = Call::new(&decl.name);
        for t in &decl.inputs {
            match c.resident.get(&t.name) {
                Some(name) => {
                    if !loads.iter().any(|(n, _)| n == name) {
                        let shape = t
                            .eval_shape(&dims)
                            .map_err(|e| GenerateError(format!("{BUNDLED_SPEC}: {e}")))?;
                        loads.push((name.clone(), rng.tensor_of(t.dtype, &shape)));
                    }
                    call = call.resident(name);
                }
                None => {
                    let shape = t
                        .eval_shape(&dims)
                        .map_err(|e| GenerateError(format!("{BUNDLED_SPEC}: {e}")))?;
                    call = call.arg(rng.tensor_of(t.dtype, &shape));
                }
            }
        }
        for (k, v) in &c.params {
            let s = match v {
                toml::Value::Integer(i) => Scalar::I64(*i),
                toml::Value::Float(f) => Scalar::F64(*f),
                toml::Value::Boolean(b) => Scalar::Bool(*b),
                toml::Value::String(s) => Scalar::Text(s.clone()),
                other => {
                    return Err(GenerateError(format!(
                        "{BUNDLED_SPEC}: call {}: parameter {k} cannot be {}",
                        i + 1,
                        other.type_str()
                    )));
                }
            };
            call = call.param(k, s);
        }
        if let Some(name) = &c.store {
            call = call.store_as(name);
        }
        for _ in 0..c.repeat.max(1) {
            let mut trials = Vec::new();
            if c.store.is_none() {
                let spec = GenSpec::new(&decl.name, dims.clone(), 0, 1);
                for _ in 1..c.trials.max(1) {
                    let mut t = Vec::new();
                    for (input, decl_t) in call.args.iter().zip(&decl.inputs) {
                        if let shared_state::Arg::Tensor(_) = input {
                            let shape = decl_t.eval_shape(&spec.dims).expect("evaluated above");
                            t.push(rng.tensor_of(decl_t.dtype, &shape));
                        }
                    }
                    trials.push(Trial {
                        inputs: t,
                        expected: Vec::new(),
                    });
                }
            }
            w.call_step(CallStep {
                call: call.clone(),
                expected: Vec::new(),
                trials,
                signature: Some(decl.signature()),
                recorded_by: Some("the bundled workload (kernels/workload.toml)".to_string()),
            });
        }
    }
    for decl in kernels.iter().filter(|d| !mentioned.contains(&d.name)) {
        let dims: Dims = decl
            .inputs
            .iter()
            .flat_map(|t| t.shape.iter().filter_map(|e| e.as_dim()))
            .map(|d| (d.to_string(), DEFAULT_DIM))
            .collect();
        let spec = GenSpec::new(&decl.name, dims, rng.next_u64(), 2);
        match generate_step(decl, &spec) {
            Ok(mut step) => {
                step.recorded_by = Some(format!(
                    "the bundled workload ({} is not in {BUNDLED_SPEC}: every dim {DEFAULT_DIM})",
                    decl.name
                ));
                w.call_step(step);
            }
            Err(e) => tracing::warn!("bundled workload: {} left out: {e}", decl.name),
        }
    }
    let mut steps: Vec<Step> = loads
        .into_iter()
        .map(|(name, tensor)| Step::Load { name, tensor })
        .collect();
    steps.append(&mut w.steps);
    w.steps = steps;
    Ok(w)
}

/// The bundled workload of the workspace at `root` (its declarations and
/// `kernels/workload.toml`; a missing spec file means every kernel at
/// [`DEFAULT_DIM`]).
pub fn bundled_workload_at(
    root: &std::path::Path,
    kernels: &KernelSet,
) -> Result<Workload, GenerateError> {
    let path = root.join(BUNDLED_SPEC);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(GenerateError(format!("{}: {e}", path.display()))),
    };
    bundled_workload(kernels, &text)
}

/// The bundled workload of the workspace at `root`, from its declarations
/// (any that does not parse is an error) and `kernels/workload.toml`.
pub fn workspace_bundled_workload(root: &std::path::Path) -> Result<Workload, String> {
    let kernels = crate::swap::version_files::declarations(root)?;
    bundled_workload_at(root, &kernels).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_state::{LaunchDecl, TensorDecl, WorkDecl};

    fn decl(name: &str, inputs: &[&str], outputs: &[&str]) -> KernelDecl {
        KernelDecl {
            name: name.into(),
            summary: String::new(),
            inputs: inputs
                .iter()
                .map(|s| TensorDecl::parse(s).unwrap())
                .collect(),
            params: vec![],
            outputs: outputs
                .iter()
                .map(|s| TensorDecl::parse(s).unwrap())
                .collect(),
            launch: LaunchDecl::default(),
            work: WorkDecl::default(),
            tunables: vec![],
            tolerances: vec![],
            file: format!("{name}.toml"),
            hash: String::new(),
        }
    }

    #[test]
    fn dims_parse_and_are_checked_against_the_declaration() {
        let d = decl(
            "ln",
            &["x: f32[rows, cols]", "g: f32[cols]"],
            &["y: f32[rows, cols]"],
        );
        let dims = GenSpec::parse_dims("rows=3, cols=5").unwrap();
        check_dims(&d, &dims).unwrap();
        let err = check_dims(&d, &GenSpec::parse_dims("rows=3").unwrap()).unwrap_err();
        assert!(err.0.contains("missing cols"), "{err}");
        let err = check_dims(&d, &GenSpec::parse_dims("rows=3,cols=4,n=2").unwrap()).unwrap_err();
        assert!(err.0.contains("ln has no dim n"), "{err}");
        assert!(
            GenSpec::parse_dims("rows")
                .unwrap_err()
                .0
                .contains("NAME=VALUE")
        );
        assert!(
            GenSpec::parse_dims("rows=x")
                .unwrap_err()
                .0
                .contains("whole number")
        );
    }

    #[test]
    fn same_seed_same_call_trials_differ() {
        let d = decl(
            "ln",
            &["x: f32[rows, cols]", "g: f32[cols]"],
            &["y: f32[rows, cols]"],
        );
        let spec = GenSpec::new("ln", GenSpec::parse_dims("rows=3,cols=5").unwrap(), 7, 3);
        let a = generate(&d, &spec).unwrap();
        assert_eq!(a, generate(&d, &spec).unwrap());
        let step = a.call_steps().next().unwrap();
        assert_eq!(step.trial_count(), 3);
        assert_ne!(step.trial(0).0, step.trial(1).0);
        assert_eq!(step.trial(1).0.args.len(), 2);
        assert_eq!(
            step.signature.as_deref(),
            Some("ln(x: f32[rows, cols], g: f32[cols]) -> y: f32[rows, cols]")
        );
        assert_eq!(
            step.recorded_by.as_deref(),
            Some("kiln record --kernel ln --dims cols=5,rows=3 --seed 7 --trials 3")
        );
        let other = generate(&d, &GenSpec { seed: 8, ..spec }).unwrap();
        assert_ne!(a, other);
    }

    #[test]
    fn every_dtype_has_its_distribution() {
        let mut rng = Rng::new(1);
        for dtype in DType::ALL {
            let t = rng.tensor_of(dtype, &[4096]);
            assert_eq!((t.dtype(), t.len()), (dtype, 4096));
        }
        let t = rng.tensor_of(DType::I8, &[4096]);
        let v = t.as_slice::<i8>().unwrap();
        assert!(
            v.contains(&-128) || v.iter().any(|&x| x < -100),
            "covers negatives"
        );
        let t = rng.tensor_of(DType::F16, &[4096]);
        assert!(
            t.as_slice::<f16>()
                .unwrap()
                .iter()
                .all(|x| (-1.0..=1.0).contains(&x.to_f32()))
        );
    }

    #[test]
    fn the_bundled_workload_covers_every_declared_kernel() {
        let kernels = KernelSet::new([
            decl("sx", &["x: f32[n]", "y: f32[n]"], &["out: f32[n]"]),
            decl("new_one", &["a: f32[rows, cols]"], &["b: f32[rows]"]),
        ]);
        let spec = r#"
[[call]]
kernel = "sx"
dims = { n = 10 }
resident = { y = "ys" }
[[call]]
kernel = "gone"
"#;
        let w = bundled_workload(&kernels, spec).unwrap();
        assert!(matches!(&w.steps[0], super::super::Step::Load { name, .. } if name == "ys"));
        let names: Vec<&str> = w.call_steps().map(|c| c.call.kernel.as_str()).collect();
        assert_eq!(names, ["sx", "new_one"]);
        assert!(w.call_steps().all(|c| c.trial_count() == 2));
        let err = bundled_workload(&kernels, "[[call]]\nkernel = \"sx\"\n").unwrap_err();
        assert!(err.0.contains("missing n"), "{err}");
    }
}

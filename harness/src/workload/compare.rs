//! Correctness: an output against its expected tensor, with a tolerance per
//! kernel and dtype.
//!
//! An element passes when `|got - want| <= abs + rel*|want|` or when it is
//! within `ulps` units in the last place. For reduction kernels (matmul,
//! dot, softmax) `abs` and `rel` are multiplied by the square root of the
//! reduction length (rounding errors of a sum of n terms grow like
//! sqrt(n)), so one setting fits every size. Integer dtypes compare exactly.
//! A NaN or infinity where the reference is finite always fails.
//!
//! Defaults can be overridden in `kiln.toml`:
//!
//! ```toml
//! [tolerance.matmul]        # applies to f32 (and to f64 unless set below)
//! abs = 1e-5
//! rel = 1e-4
//! ulps = 8
//! scale = "sqrt"            # "none", "sqrt" or "linear" in the reduction length
//!
//! [tolerance.matmul.f64]    # f64 outputs only
//! abs = 1e-12
//!
//! [tolerance.default]       # kernels without their own entry
//! rel = 1e-5
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use shared_state::kernels::{DOT, MATMUL, SAXPY, SOFTMAX, STENCIL2D};
use shared_state::{Arg, Buffer, DType, Tensor};

use crate::workload::{Step, Workload};

/// How a tolerance grows with the reduction length `n` of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scaling {
    /// Independent of `n` (element-wise kernels).
    None,
    /// Times `sqrt(n)`.
    Sqrt,
    /// Times `n` (worst-case bound for a sequential sum).
    Linear,
}

impl Scaling {
    fn factor(self, n: usize) -> f64 {
        let n = n.max(1) as f64;
        match self {
            Scaling::None => 1.0,
            Scaling::Sqrt => n.sqrt(),
            Scaling::Linear => n,
        }
    }

    fn parse(s: &str) -> Option<Scaling> {
        match s {
            "none" => Some(Scaling::None),
            "sqrt" => Some(Scaling::Sqrt),
            "linear" => Some(Scaling::Linear),
            _ => None,
        }
    }
}

/// The tolerance of one kernel and dtype, before scaling by the reduction
/// length ([`Tolerance::scaled`] gives the one a comparison uses).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute error allowed.
    pub abs: f64,
    /// Error allowed relative to the expected value.
    pub rel: f64,
    /// Distance in units in the last place that always passes.
    pub ulps: u64,
    pub scale: Scaling,
}

impl Tolerance {
    /// Exact equality (integers, or a kernel that must be bit-exact).
    pub const EXACT: Tolerance = Tolerance {
        abs: 0.0,
        rel: 0.0,
        ulps: 0,
        scale: Scaling::None,
    };

    /// `abs` and `rel` scaled for a reduction of length `n`.
    pub fn scaled(&self, n: usize) -> Tolerance {
        let f = self.scale.factor(n);
        Tolerance {
            abs: self.abs * f,
            rel: self.rel * f,
            ulps: self.ulps,
            scale: Scaling::None,
        }
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "abs {:.1e}, rel {:.1e}", self.abs, self.rel)?;
        if self.ulps > 0 {
            write!(f, " or {} ulp", self.ulps)?;
        }
        match self.scale {
            Scaling::None => Ok(()),
            Scaling::Sqrt => f.write_str(" x sqrt(n)"),
            Scaling::Linear => f.write_str(" x n"),
        }
    }
}

/// A `kiln.toml` whose tolerances cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Tolerances for every kernel and float dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct Tolerances {
    /// `(kernel, dtype)`; `"default"` is the fallback kernel.
    table: BTreeMap<(String, DType), Tolerance>,
}

const FALLBACK: &str = "default";

impl Default for Tolerances {
    /// Defaults: saxpy and stencil2d tight (a few ulp, plus a small absolute
    /// term for cancellation); matmul, dot and softmax scaled by the square
    /// root of their reduction length. f64 ones are 1e-9 times the f32 ones.
    fn default() -> Tolerances {
        let t = |abs, rel, ulps, scale| Tolerance {
            abs,
            rel,
            ulps,
            scale,
        };
        let f32_table = [
            (SAXPY, t(1e-6, 1e-6, 4, Scaling::None)),
            (STENCIL2D, t(1e-5, 1e-5, 8, Scaling::None)),
            (MATMUL, t(2e-6, 1e-5, 8, Scaling::Sqrt)),
            (DOT, t(2e-6, 1e-5, 8, Scaling::Sqrt)),
            (SOFTMAX, t(1e-7, 1e-6, 8, Scaling::Sqrt)),
            (FALLBACK, t(1e-5, 1e-5, 8, Scaling::None)),
        ];
        let mut table = BTreeMap::new();
        for (kernel, tol) in f32_table {
            table.insert((kernel.to_string(), DType::F32), tol);
            table.insert(
                (kernel.to_string(), DType::F64),
                Tolerance {
                    abs: tol.abs * 1e-9,
                    rel: tol.rel * 1e-9,
                    ..tol
                },
            );
        }
        Tolerances { table }
    }
}

impl Tolerances {
    /// The defaults, overridden by the `[tolerance]` tables of a `kiln.toml`
    /// (see the module documentation). A missing file is an error: use
    /// `default()` when there is none.
    pub fn load(path: &Path) -> Result<Tolerances, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        Tolerances::from_toml(&text, path)
    }

    /// As [`Tolerances::load`], from text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Tolerances, ConfigError> {
        let fail = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let doc: toml::Table =
            toml::from_str(text).map_err(|e| fail(format!("not valid TOML: {e}")))?;
        let mut tolerances = Tolerances::default();
        let Some(section) = doc.get("tolerance") else {
            return Ok(tolerances);
        };
        let section = section
            .as_table()
            .ok_or_else(|| fail("[tolerance] must be a table".into()))?;
        for (kernel, entry) in section {
            let entry = entry.as_table().ok_or_else(|| {
                fail(format!(
                    "tolerance.{kernel} must be a table like {{ abs = 1e-5, rel = 1e-4 }}"
                ))
            })?;
            let base = |dtype| tolerances.get_or_fallback(kernel, dtype);
            let (f32_tol, f64_tol) = (base(DType::F32), base(DType::F64));
            let mut f32_keys = toml::Table::new();
            let mut f64_keys = None;
            for (key, value) in entry {
                match (key.as_str(), value) {
                    ("f32", toml::Value::Table(t)) => f32_keys.extend(t.clone()),
                    ("f64", toml::Value::Table(t)) => f64_keys = Some(t.clone()),
                    _ => {
                        f32_keys.insert(key.clone(), value.clone());
                    }
                }
            }
            let f32_new =
                apply(f32_tol, &f32_keys, &format!("tolerance.{kernel}")).map_err(fail)?;
            // Keys at the kernel level apply to f64 too, unless it has its own.
            let mut f64_new =
                apply(f64_tol, &f32_keys, &format!("tolerance.{kernel}")).map_err(fail)?;
            if let Some(keys) = f64_keys {
                f64_new =
                    apply(f64_new, &keys, &format!("tolerance.{kernel}.f64")).map_err(fail)?;
            }
            tolerances
                .table
                .insert((kernel.clone(), DType::F32), f32_new);
            tolerances
                .table
                .insert((kernel.clone(), DType::F64), f64_new);
        }
        Ok(tolerances)
    }

    fn get_or_fallback(&self, kernel: &str, dtype: DType) -> Tolerance {
        let dtype = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        self.table
            .get(&(kernel.to_string(), dtype))
            .or_else(|| self.table.get(&(FALLBACK.to_string(), dtype)))
            .copied()
            .unwrap_or(Tolerance::EXACT)
    }

    /// The (unscaled) tolerance of `kernel` for outputs of `dtype`: integer
    /// dtypes are exact; a kernel with no entry gets `[tolerance.default]`.
    pub fn get(&self, kernel: &str, dtype: DType) -> Tolerance {
        if dtype.is_float() {
            self.get_or_fallback(kernel, dtype)
        } else {
            Tolerance::EXACT
        }
    }

    /// The tolerance to compare with, scaled for a reduction of length
    /// `reduction_len` (see [`reduction_len`]).
    pub fn for_call(&self, kernel: &str, dtype: DType, reduction_len: usize) -> Tolerance {
        self.get(kernel, dtype).scaled(reduction_len)
    }

    /// The scaled tolerance of every step of `workload` (`None` for loads),
    /// tracking resident shapes through loads and `store_as` to find each
    /// call's reduction length. A resident the workload never defines
    /// counts as length 1.
    pub fn for_workload(&self, workload: &Workload) -> Vec<Option<Tolerance>> {
        let mut residents: BTreeMap<String, (DType, Vec<usize>)> = BTreeMap::new();
        let mut out = Vec::with_capacity(workload.steps.len());
        for step in &workload.steps {
            match step {
                Step::Load { name, tensor } => {
                    residents.insert(name.clone(), (tensor.dtype(), tensor.shape().to_vec()));
                    out.push(None);
                }
                Step::Call { call, expected } => {
                    let args: Vec<(DType, Vec<usize>)> = call
                        .args
                        .iter()
                        .map(|a| match a {
                            Arg::Tensor(t) => (t.dtype(), t.shape().to_vec()),
                            Arg::Resident(n) => residents
                                .get(n)
                                .cloned()
                                .unwrap_or((DType::F32, Vec::new())),
                        })
                        .collect();
                    let shapes: Vec<Vec<usize>> = args.iter().map(|(_, s)| s.clone()).collect();
                    let dtype = expected.as_ref().map_or(DType::F32, Tensor::dtype);
                    let n = reduction_len(&call.kernel, &shapes);
                    out.push(Some(self.for_call(&call.kernel, dtype, n)));
                    if let Some(name) = &call.store_as {
                        let typed: Vec<(DType, &[usize])> =
                            args.iter().map(|(d, s)| (*d, s.as_slice())).collect();
                        let shape = shared_state::kernels::output_shape(&call.kernel, &typed)
                            .unwrap_or_else(|_| shapes.first().cloned().unwrap_or_default());
                        residents.insert(name.clone(), (dtype, shape));
                    }
                }
            }
        }
        out
    }
}

fn apply(mut tol: Tolerance, keys: &toml::Table, context: &str) -> Result<Tolerance, String> {
    for (key, value) in keys {
        let number = || {
            value
                .as_float()
                .or_else(|| value.as_integer().map(|i| i as f64))
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    format!("{context}.{key} must be a number >= 0, got {}", show(value))
                })
        };
        match key.as_str() {
            "abs" => tol.abs = number()?,
            "rel" => tol.rel = number()?,
            "ulps" => {
                tol.ulps = value
                    .as_integer()
                    .and_then(|i| u64::try_from(i).ok())
                    .ok_or_else(|| {
                        format!(
                            "{context}.{key} must be a whole number >= 0, got {}",
                            show(value)
                        )
                    })?
            }
            "scale" => {
                tol.scale = value.as_str().and_then(Scaling::parse).ok_or_else(|| {
                    format!(
                        "{context}.scale must be \"none\", \"sqrt\" or \"linear\", got {}",
                        show(value)
                    )
                })?
            }
            other => {
                return Err(format!(
                    "{context}: unknown key {other:?} (known: abs, rel, ulps, scale, f32, f64)"
                ));
            }
        }
    }
    Ok(tol)
}

/// A TOML value in a message (`1e-5`, `"sqrt"`, `a table`).
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_str()),
    }
}

/// The length of the sum behind each output element of a standard kernel:
/// matmul `k`, dot `n`, softmax the row length; 1 for element-wise kernels
/// and for kernels it does not know.
pub fn reduction_len(kernel: &str, arg_shapes: &[Vec<usize>]) -> usize {
    let dim = |arg: usize, axis: usize| {
        arg_shapes
            .get(arg)
            .and_then(|s| s.get(axis))
            .copied()
            .unwrap_or(1)
    };
    match kernel {
        MATMUL => dim(0, 1),
        DOT => dim(0, 0),
        SOFTMAX => dim(0, 1),
        _ => 1,
    }
}

/// How an output compares with its expected tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Set when the shapes or dtypes differ (nothing else is compared).
    pub structure: Option<String>,
    pub elements: usize,
    /// Elements beyond tolerance (non-finite ones included).
    pub mismatches: usize,
    /// NaN or infinity in the output where the expected value is finite.
    pub non_finite: usize,
    pub max_abs: f64,
    /// Largest `|got - want| / |want|` over elements where `want != 0`.
    pub max_rel: f64,
    /// Largest distance in units in the last place (float dtypes).
    pub max_ulps: u64,
    /// The first element beyond tolerance: index, got, want.
    pub first_mismatch: Option<(usize, f64, f64)>,
    pub shape: Vec<usize>,
    pub tolerance: Tolerance,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.structure.is_none() && self.mismatches == 0
    }

    /// One line: pass/fail, the errors and the tolerance.
    pub fn summary(&self) -> String {
        if let Some(s) = &self.structure {
            return format!("FAIL: {s}");
        }
        let stats = format!(
            "max abs {:.2e}, max rel {:.2e}, max {} ulp (tolerance {})",
            self.max_abs, self.max_rel, self.max_ulps, self.tolerance
        );
        if self.passed() {
            return format!("ok: {} elements, {stats}", self.elements);
        }
        let mut line = format!(
            "FAIL: {} of {} elements beyond tolerance",
            self.mismatches, self.elements
        );
        if self.non_finite > 0 {
            line += &format!(
                " ({} NaN/inf where the reference is finite)",
                self.non_finite
            );
        }
        if let Some((i, got, want)) = self.first_mismatch {
            line += &format!(
                "; first at [{}]: got {got}, want {want}",
                unravel(i, &self.shape)
            );
        }
        format!("{line}; {stats}")
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// Row-major multi-index of flat index `i`, as `3, 17`.
fn unravel(mut i: usize, shape: &[usize]) -> String {
    if shape.is_empty() {
        return i.to_string();
    }
    let mut idx = vec![0; shape.len()];
    for (slot, &d) in idx.iter_mut().zip(shape).rev() {
        if d > 0 {
            *slot = i % d;
            i /= d;
        }
    }
    idx.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Order-preserving integer image of an f32 (so ulp distance is a difference).
fn ordered_f32(v: f32) -> i64 {
    let b = v.to_bits() as i32;
    if b < 0 {
        i64::from(i32::MIN) - i64::from(b)
    } else {
        i64::from(b)
    }
}

fn ordered_f64(v: f64) -> i128 {
    let b = v.to_bits() as i64;
    if b < 0 {
        i128::from(i64::MIN) - i128::from(b)
    } else {
        i128::from(b)
    }
}

/// Distance between two f32 values in units in the last place.
pub fn ulp_distance_f32(a: f32, b: f32) -> u64 {
    (ordered_f32(a) - ordered_f32(b)).unsigned_abs()
}

/// Distance between two f64 values in units in the last place.
pub fn ulp_distance_f64(a: f64, b: f64) -> u64 {
    u64::try_from((ordered_f64(a) - ordered_f64(b)).unsigned_abs()).unwrap_or(u64::MAX)
}

/// Compares `got` with `expected` under `tolerance` (already scaled: see
/// [`Tolerances::for_call`]).
pub fn compare(expected: &Tensor, got: &Tensor, tolerance: &Tolerance) -> Comparison {
    let mut c = Comparison {
        structure: None,
        elements: expected.len(),
        mismatches: 0,
        non_finite: 0,
        max_abs: 0.0,
        max_rel: 0.0,
        max_ulps: 0,
        first_mismatch: None,
        shape: expected.shape().to_vec(),
        tolerance: *tolerance,
    };
    if expected.dtype() != got.dtype() || expected.shape() != got.shape() {
        c.structure = Some(format!(
            "output is {}, expected {}",
            got.describe(),
            expected.describe()
        ));
        return c;
    }
    match (expected.data(), got.data()) {
        (Buffer::F32(want), Buffer::F32(have)) => {
            for (i, (&w, &g)) in want.iter().zip(have).enumerate() {
                let ulps = if w.is_finite() && g.is_finite() {
                    ulp_distance_f32(w, g)
                } else {
                    0
                };
                check(&mut c, i, f64::from(w), f64::from(g), ulps);
            }
        }
        (Buffer::F64(want), Buffer::F64(have)) => {
            for (i, (&w, &g)) in want.iter().zip(have).enumerate() {
                let ulps = if w.is_finite() && g.is_finite() {
                    ulp_distance_f64(w, g)
                } else {
                    0
                };
                check(&mut c, i, w, g, ulps);
            }
        }
        (want, have) => {
            // Integers: exact, byte for byte per element.
            let size = want.dtype().size();
            let (wb, hb) = (want.as_bytes(), have.as_bytes());
            for (i, (w, g)) in wb.chunks_exact(size).zip(hb.chunks_exact(size)).enumerate() {
                if w != g {
                    let (wv, gv) = (int_value(want, i), int_value(have, i));
                    let diff = (wv - gv).abs();
                    c.max_abs = c.max_abs.max(diff);
                    if wv != 0.0 {
                        c.max_rel = c.max_rel.max(diff / wv.abs());
                    }
                    c.mismatches += 1;
                    c.first_mismatch.get_or_insert((i, gv, wv));
                }
            }
        }
    }
    c
}

fn int_value(b: &Buffer, i: usize) -> f64 {
    match b {
        Buffer::I32(v) => f64::from(v[i]),
        Buffer::I64(v) => v[i] as f64,
        Buffer::U32(v) => f64::from(v[i]),
        Buffer::U8(v) => f64::from(v[i]),
        Buffer::F32(v) => f64::from(v[i]),
        Buffer::F64(v) => v[i],
    }
}

fn check(c: &mut Comparison, i: usize, want: f64, got: f64, ulps: u64) {
    let t = c.tolerance;
    let ok = if !want.is_finite() {
        // NaN matches NaN; an infinity matches the same infinity.
        (want.is_nan() && got.is_nan()) || want == got
    } else if !got.is_finite() {
        c.non_finite += 1;
        false
    } else {
        let diff = (got - want).abs();
        c.max_abs = c.max_abs.max(diff);
        if want != 0.0 {
            c.max_rel = c.max_rel.max(diff / want.abs());
        }
        c.max_ulps = c.max_ulps.max(ulps);
        diff <= t.abs + t.rel * want.abs() || ulps <= t.ulps
    };
    if !ok {
        c.mismatches += 1;
        c.first_mismatch.get_or_insert((i, got, want));
    }
}

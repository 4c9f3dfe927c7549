//! Correctness: an output against its expected tensor, with a tolerance per
//! dtype, kernel and dtype.
//!
//! An element passes when `|got - want| <= abs + rel*|want|` or when it is
//! within `ulps` units in the last place. For a kernel whose declaration
//! names a reduction length (`[tolerance] reduction = "k"` for a matmul),
//! `abs` and `rel` are multiplied by its square root (rounding errors of a
//! sum of n terms grow like sqrt(n)), so one setting fits every size.
//! Integer dtypes compare exactly. A NaN or infinity where the reference is
//! finite always fails.
//!
//! Where a tolerance comes from, each later source overriding the fields it
//! sets: the per-dtype defaults ([`DTYPE_DEFAULTS`]); `[tolerance.default]`
//! and `[tolerance.default.DTYPE]` in `kiln.toml`; the kernel's declaration
//! (`[tolerance]`, `[tolerance.DTYPE]`); `[tolerance.KERNEL]` and
//! `[tolerance.KERNEL.DTYPE]` in `kiln.toml`:
//!
//! ```toml
//! [tolerance.matmul]        # every float dtype of matmul's outputs
//! abs = 1e-5
//! rel = 1e-4
//! ulps = 8
//! scale = "sqrt"            # "none", "sqrt" or "linear" in the reduction length
//!
//! [tolerance.matmul.f16]    # f16 outputs only
//! rel = 2e-3
//!
//! [tolerance.default]       # every kernel
//! rel = 1e-5
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use shared_state::{Buffer, DType, Dims, KernelDecl, Tensor, ToleranceDecl, bf16, f16};

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

/// The default tolerance of each float dtype (integers are exact): about
/// 2^-17 (f32), a few ulp of a 10-bit (f16) and 7-bit (bf16) mantissa,
/// 1e-9 times f32's for f64. Extend the table to add a dtype.
pub const DTYPE_DEFAULTS: &[(DType, Tolerance)] = &[
    (DType::F32, tol(1e-5, 1e-5, 8)),
    (DType::F64, tol(1e-14, 1e-14, 8)),
    (DType::F16, tol(1e-3, 2e-3, 2)),
    (DType::BF16, tol(8e-3, 1.6e-2, 2)),
];

const fn tol(abs: f64, rel: f64, ulps: u64) -> Tolerance {
    Tolerance {
        abs,
        rel,
        ulps,
        scale: Scaling::None,
    }
}

/// Some fields of a tolerance, from a declaration or `kiln.toml`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Override {
    pub abs: Option<f64>,
    pub rel: Option<f64>,
    pub ulps: Option<u64>,
    pub scale: Option<Scaling>,
}

impl Override {
    fn apply(&self, mut t: Tolerance) -> Tolerance {
        if let Some(v) = self.abs {
            t.abs = v;
        }
        if let Some(v) = self.rel {
            t.rel = v;
        }
        if let Some(v) = self.ulps {
            t.ulps = v;
        }
        if let Some(v) = self.scale {
            t.scale = v;
        }
        t
    }
}

/// Tolerances: the per-dtype defaults and the `kiln.toml` overrides; the
/// declaration's overrides are applied per call (see
/// [`Tolerances::for_call`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Tolerances {
    defaults: BTreeMap<DType, Tolerance>,
    /// `(kernel, dtype)` from `kiln.toml`; kernel `"default"` applies to
    /// every kernel, dtype `None` to every dtype.
    config: BTreeMap<(String, Option<DType>), Override>,
}

const FALLBACK: &str = "default";

impl Default for Tolerances {
    fn default() -> Tolerances {
        Tolerances {
            defaults: DTYPE_DEFAULTS.iter().copied().collect(),
            config: BTreeMap::new(),
        }
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
            let mut all = toml::Table::new();
            for (key, value) in entry {
                match (DType::from_name(key), value) {
                    (Some(dtype), toml::Value::Table(t)) => {
                        let o = parse_override(t, &format!("tolerance.{kernel}.{key}"))
                            .map_err(fail)?;
                        tolerances.config.insert((kernel.clone(), Some(dtype)), o);
                    }
                    _ => {
                        all.insert(key.clone(), value.clone());
                    }
                }
            }
            let o = parse_override(&all, &format!("tolerance.{kernel}")).map_err(fail)?;
            tolerances.config.insert((kernel.clone(), None), o);
        }
        Ok(tolerances)
    }

    /// The (unscaled) tolerance of `kernel` (declared by `decl`, when there
    /// is one) for outputs of `dtype`: integer dtypes are exact.
    pub fn get(&self, kernel: &str, decl: Option<&KernelDecl>, dtype: DType) -> Tolerance {
        if !dtype.is_float() {
            return Tolerance::EXACT;
        }
        let mut t = self
            .defaults
            .get(&dtype)
            .copied()
            .unwrap_or(Tolerance::EXACT);
        let config = |t: Tolerance, kernel: &str| {
            let t = self
                .config
                .get(&(kernel.to_string(), None))
                .map_or(t, |o| o.apply(t));
            self.config
                .get(&(kernel.to_string(), Some(dtype)))
                .map_or(t, |o| o.apply(t))
        };
        t = config(t, FALLBACK);
        if let Some(decl) = decl {
            for d in decl.tolerances.iter().filter(|d| d.dtype.is_none()) {
                t = from_decl(d).apply(t);
            }
            if reduction_expr(decl).is_some() && t.scale == Scaling::None {
                t.scale = Scaling::Sqrt;
            }
            for d in decl.tolerances.iter().filter(|d| d.dtype == Some(dtype)) {
                t = from_decl(d).apply(t);
            }
        }
        config(t, kernel)
    }

    /// The tolerance to compare an output of `dtype` with, for a call of
    /// `kernel` whose dims are `dims`: scaled by the declaration's reduction
    /// length (see [`reduction_len`]).
    pub fn for_call(
        &self,
        kernel: &str,
        decl: Option<&KernelDecl>,
        dims: &Dims,
        dtype: DType,
    ) -> Tolerance {
        let n = decl.map_or(1, |d| reduction_len(d, dims));
        self.get(kernel, decl, dtype).scaled(n)
    }
}

fn from_decl(d: &ToleranceDecl) -> Override {
    Override {
        abs: d.abs,
        rel: d.rel,
        ulps: d.ulps,
        scale: None,
    }
}

fn reduction_expr(decl: &KernelDecl) -> Option<&shared_state::Expr> {
    decl.tolerances.iter().find_map(|t| t.reduction.as_ref())
}

/// The length of the sum behind each output element: the declaration's
/// `[tolerance] reduction` evaluated on the call's dims (matmul `k`, dot
/// `n`, softmax `cols`); 1 when it declares none.
pub fn reduction_len(decl: &KernelDecl, dims: &Dims) -> usize {
    reduction_expr(decl)
        .and_then(|e| e.eval(dims).ok())
        .map_or(1, |n| n.max(1) as usize)
}

fn parse_override(keys: &toml::Table, context: &str) -> Result<Override, String> {
    let mut o = Override::default();
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
            "abs" => o.abs = Some(number()?),
            "rel" => o.rel = Some(number()?),
            "ulps" => {
                o.ulps = Some(
                    value
                        .as_integer()
                        .and_then(|i| u64::try_from(i).ok())
                        .ok_or_else(|| {
                            format!(
                                "{context}.{key} must be a whole number >= 0, got {}",
                                show(value)
                            )
                        })?,
                )
            }
            "scale" => {
                o.scale = Some(value.as_str().and_then(Scaling::parse).ok_or_else(|| {
                    format!(
                        "{context}.scale must be \"none\", \"sqrt\" or \"linear\", got {}",
                        show(value)
                    )
                })?)
            }
            other => {
                return Err(format!(
                    "{context}: unknown key {other:?} (known: abs, rel, ulps, scale, and a table per dtype: {})",
                    DType::ALL.map(DType::name).join(", ")
                ));
            }
        }
    }
    Ok(o)
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

/// Order-preserving integer image of a 16-bit float's bits.
fn ordered_16(bits: u16) -> i32 {
    let b = bits as i16;
    if b < 0 {
        i32::from(i16::MIN) - i32::from(b)
    } else {
        i32::from(b)
    }
}

/// Distance between two f16 values in units in the last place.
pub fn ulp_distance_f16(a: f16, b: f16) -> u64 {
    u64::from((ordered_16(a.to_bits()) - ordered_16(b.to_bits())).unsigned_abs())
}

/// Distance between two bf16 values in units in the last place.
pub fn ulp_distance_bf16(a: bf16, b: bf16) -> u64 {
    u64::from((ordered_16(a.to_bits()) - ordered_16(b.to_bits())).unsigned_abs())
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
        (Buffer::F16(want), Buffer::F16(have)) => {
            for (i, (&w, &g)) in want.iter().zip(have).enumerate() {
                let ulps = if w.is_finite() && g.is_finite() {
                    ulp_distance_f16(w, g)
                } else {
                    0
                };
                check(&mut c, i, f64::from(w), f64::from(g), ulps);
            }
        }
        (Buffer::BF16(want), Buffer::BF16(have)) => {
            for (i, (&w, &g)) in want.iter().zip(have).enumerate() {
                let ulps = if w.is_finite() && g.is_finite() {
                    ulp_distance_bf16(w, g)
                } else {
                    0
                };
                check(&mut c, i, f64::from(w), f64::from(g), ulps);
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
        Buffer::I8(v) => f64::from(v[i]),
        Buffer::F16(v) => f64::from(v[i]),
        Buffer::BF16(v) => f64::from(v[i]),
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

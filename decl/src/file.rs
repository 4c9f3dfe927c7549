//! Parsing one declaration file, and loading a folder of them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared_state::{
    DType, Expr, KernelDecl, LaunchDecl, ParamDecl, PassDecl, Scalar, TensorDecl, ToleranceDecl,
    TunableDecl, WorkDecl,
};
use toml::Spanned;

/// A problem in a declaration file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for DeclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

impl std::error::Error for DeclError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecl {
    name: Option<Spanned<String>>,
    #[serde(default)]
    summary: String,
    inputs: Spanned<Vec<Spanned<String>>>,
    outputs: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    // In file order: GPU modules pass params in declaration order.
    params: indexmap::IndexMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    launch: Vec<RawPass>,
    #[serde(default)]
    scratch: Vec<Spanned<String>>,
    #[serde(default)]
    work: RawWork,
    #[serde(default)]
    tunables: Vec<RawTunable>,
    #[serde(default)]
    tolerance: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPass {
    #[serde(default = "main_entry")]
    entry: String,
    group: Spanned<Vec<u32>>,
    workgroups: Spanned<Vec<Spanned<String>>>,
}

fn main_entry() -> String {
    "main".to_string()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWork {
    flops: Option<Spanned<String>>,
    bytes: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunable {
    name: String,
    candidates: Spanned<Vec<toml::Value>>,
    default: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTolerance {
    abs: Option<f64>,
    rel: Option<f64>,
    ulps: Option<u64>,
    reduction: Option<String>,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn at(&self, offset: usize, message: impl Into<String>) -> DeclError {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |i| before.len() - i - 1)
            + 1;
        DeclError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn whole(&self, message: impl Into<String>) -> DeclError {
        DeclError {
            file: self.file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }

    fn expr(&self, s: &Spanned<String>) -> Result<Expr, DeclError> {
        Expr::parse(s.get_ref()).map_err(|e| self.at(s.span().start, e.0))
    }

    fn tensor(&self, s: &Spanned<String>) -> Result<TensorDecl, DeclError> {
        TensorDecl::parse(s.get_ref()).map_err(|e| self.at(s.span().start, e.0))
    }
}

fn scalar(v: &toml::Value) -> Option<Scalar> {
    Some(match v {
        toml::Value::Integer(i) => Scalar::I64(*i),
        toml::Value::Float(f) => Scalar::F64(*f),
        toml::Value::Boolean(b) => Scalar::Bool(*b),
        toml::Value::String(s) => Scalar::Text(s.clone()),
        _ => return None,
    })
}

/// Parses the text of one declaration file. `file` is the path used in
/// messages and recorded in the declaration (relative to the workspace);
/// the kernel's name is the file's stem unless `name` says the same.
pub fn parse(file: &Path, text: &str) -> Result<KernelDecl, DeclError> {
    let ctx = Ctx { file, text };
    let raw: RawDecl = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => ctx.at(span.start, e.message().trim().to_string()),
        None => ctx.whole(e.message().trim().to_string()),
    })?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match &raw.name {
        Some(n) if n.get_ref() != &stem => {
            return Err(ctx.at(
                n.span().start,
                format!(
                    "name {:?} differs from the file name {stem:?}: a kernel is declared in NAME.toml",
                    n.get_ref()
                ),
            ));
        }
        _ => stem,
    };
    let inputs = raw
        .inputs
        .get_ref()
        .iter()
        .map(|s| ctx.tensor(s))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = raw
        .outputs
        .get_ref()
        .iter()
        .map(|s| ctx.tensor(s))
        .collect::<Result<Vec<_>, _>>()?;
    let params = raw
        .params
        .iter()
        .map(|(k, v)| {
            let default = match v.get_ref() {
                toml::Value::Integer(i) => Scalar::I64(*i),
                toml::Value::Float(f) => Scalar::F64(*f),
                toml::Value::Boolean(b) => Scalar::Bool(*b),
                _ => {
                    return Err(ctx.at(
                        v.span().start,
                        format!("parameter {k}: the default must be a number or true/false"),
                    ));
                }
            };
            Ok(ParamDecl {
                name: k.clone(),
                default,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let passes = raw
        .launch
        .iter()
        .map(|p| {
            if p.group.get_ref().is_empty() || p.group.get_ref().len() > 3 {
                return Err(ctx.at(p.group.span().start, "group takes 1 to 3 sizes"));
            }
            if p.workgroups.get_ref().is_empty() || p.workgroups.get_ref().len() > 3 {
                return Err(ctx.at(
                    p.workgroups.span().start,
                    "workgroups takes 1 to 3 expressions",
                ));
            }
            Ok(PassDecl {
                entry: p.entry.clone(),
                group: p.group.get_ref().clone(),
                workgroups: p
                    .workgroups
                    .get_ref()
                    .iter()
                    .map(|w| ctx.expr(w))
                    .collect::<Result<Vec<_>, _>>()?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scratch = raw
        .scratch
        .iter()
        .map(|s| ctx.tensor(s))
        .collect::<Result<Vec<_>, _>>()?;
    let work = WorkDecl {
        flops: raw.work.flops.as_ref().map(|e| ctx.expr(e)).transpose()?,
        bytes: raw.work.bytes.as_ref().map(|e| ctx.expr(e)).transpose()?,
    };
    let tunables = raw
        .tunables
        .iter()
        .map(|t| {
            let candidates = t
                .candidates
                .get_ref()
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    ctx.at(
                        t.candidates.span().start,
                        format!(
                            "tunable {}: candidates must be a non-empty list of numbers",
                            t.name
                        ),
                    )
                })?;
            let default = match &t.default {
                Some(v) => scalar(v).ok_or_else(|| {
                    ctx.at(
                        t.candidates.span().start,
                        format!("tunable {}: bad default", t.name),
                    )
                })?,
                None => candidates[0].clone(),
            };
            Ok(TunableDecl {
                name: t.name.clone(),
                candidates,
                default,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tolerances = tolerances(&ctx, &raw.tolerance)?;
    let decl = KernelDecl {
        name,
        summary: raw.summary,
        inputs,
        params,
        outputs,
        launch: LaunchDecl { passes, scratch },
        work,
        tunables,
        tolerances,
        file: file.display().to_string(),
        hash: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes())),
    };
    let problems = decl.validate();
    if !problems.is_empty() {
        let line_of = |needle: &str| text.find(needle).unwrap_or(0);
        // Point at the first line that mentions the first problem's subject
        // when it can be found; the message lists every problem.
        let offset = problems[0].split('`').nth(1).map(line_of).unwrap_or(0);
        return Err(ctx.at(offset, problems.join("; ")));
    }
    Ok(decl)
}

fn tolerances(
    ctx: &Ctx<'_>,
    table: &BTreeMap<String, toml::Value>,
) -> Result<Vec<ToleranceDecl>, DeclError> {
    let field = |v: &toml::Value, dtype: Option<DType>| -> Result<ToleranceDecl, DeclError> {
        let raw: RawTolerance = v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| ctx.whole(format!("[tolerance]: {}", e.message())))?;
        let reduction = raw
            .reduction
            .as_deref()
            .map(Expr::parse)
            .transpose()
            .map_err(|e| ctx.whole(format!("[tolerance] reduction: {e}")))?;
        Ok(ToleranceDecl {
            dtype,
            abs: raw.abs,
            rel: raw.rel,
            ulps: raw.ulps,
            reduction,
        })
    };
    let mut all = toml::Table::new();
    let mut out = Vec::new();
    for (key, value) in table {
        match DType::from_name(key) {
            Some(dtype) => out.push(field(value, Some(dtype))?),
            None => {
                all.insert(key.clone(), value.clone());
            }
        }
    }
    if !all.is_empty() {
        out.insert(0, field(&toml::Value::Table(all), None)?);
    }
    Ok(out)
}

/// Reads every `*.toml` file in `dir` (sorted by name). Paths in the
/// declarations and errors are shown relative to `root`. Returns every
/// declaration that parsed and every error: a caller serving a session
/// keeps its old declarations when the list of errors is not empty.
pub fn load_dir(root: &Path, dir: &Path) -> (Vec<KernelDecl>, Vec<DeclError>) {
    let mut decls = Vec::new();
    let mut errors = Vec::new();
    let shown = |p: &Path| p.strip_prefix(root).unwrap_or(p).to_path_buf();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(DeclError {
                file: shown(dir),
                line: 0,
                column: 0,
                message: format!("cannot read the declarations folder: {e}"),
            });
            return (decls, errors);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&shown(&path), &text) {
                Ok(d) => decls.push(d),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(DeclError {
                file: shown(&path),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    (decls, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAXPY: &str = r#"
summary = "out = a*x + y"
inputs = ["x: f32[n]", "y: f32[n]"]
outputs = ["out: f32[n]"]
params = { a = 2.0 }
work = { flops = "2*n", bytes = "12*n" }

[[launch]]
entry = "main"
group = [256]
workgroups = ["ceil_div(n, 256)"]

[[tunables]]
name = "chunk"
candidates = [1024, 4096]
default = 4096

[tolerance]
reduction = "1"
[tolerance.f16]
ulps = 2
"#;

    #[test]
    fn params_keep_the_order_of_the_file() {
        let text = "inputs = [\"x: f32[n]\"]\noutputs = [\"y: f32[n]\"]\nparams = { zeta = 1.0, alpha = 2, mid = true }\n";
        let d = parse(Path::new("k.toml"), text).unwrap();
        let names: Vec<&str> = d.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn a_full_declaration_parses() {
        let d = parse(Path::new("kernels/declarations/saxpy.toml"), SAXPY).unwrap();
        assert_eq!(d.name, "saxpy");
        assert_eq!(
            d.signature(),
            "saxpy(x: f32[n], y: f32[n]; a=2) -> out: f32[n]"
        );
        assert_eq!(d.launch.passes[0].group, vec![256]);
        assert_eq!(d.tunables[0].default, Scalar::I64(4096));
        assert_eq!(d.tolerances.len(), 2);
        assert_eq!(d.tolerances[1].dtype, Some(DType::F16));
        assert_eq!(d.tolerances[1].ulps, Some(2));
        assert_eq!(d.hash.len(), 16);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let file = Path::new("kernels/declarations/bad.toml");
        let e = parse(
            file,
            "inputs = [\"x: f32[n]\"]\noutputs = [\"y: f99[n]\"]\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (2, 12), "{e}");
        assert!(
            e.to_string()
                .starts_with("kernels/declarations/bad.toml:2:12: "),
            "{e}"
        );
        assert!(e.message.contains("unknown dtype `f99`"), "{e}");
        let e = parse(file, "inputs = [\"x: f32[n]\"\noutputs = []\n").unwrap_err();
        assert!(e.line >= 1 && e.message.contains(','), "{e}");
        let e = parse(
            file,
            "inputs = [\"x: f32[n]\"]\noutputs = [\"y: f32[m]\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("dim `m` is not bound"), "{e}");
        assert_eq!(e.line, 2, "{e}");
        let e = parse(file, "inputs = []\noutputs = [\"y: f32[1]\"]\ncolour = 3\n").unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        let e = parse(
            file,
            "name = \"other\"\ninputs = []\noutputs = [\"y: f32[1]\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("differs from the file name"), "{e}");
    }

    #[test]
    fn a_folder_loads_what_parses_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("saxpy.toml"), SAXPY).unwrap();
        std::fs::write(dir.path().join("broken.toml"), "inputs = [").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a declaration").unwrap();
        let (decls, errors) = load_dir(dir.path(), dir.path());
        assert_eq!(decls.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, Path::new("broken.toml"));
        assert_eq!(decls[0].file, "saxpy.toml");
    }
}

#[cfg(test)]
mod bundled {
    /// Every declaration shipped in the workspace parses.
    #[test]
    fn the_bundled_declarations_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (decls, errors) = super::load_dir(&root, &root.join(crate::DECLARATIONS_DIR));
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
        for want in ["dot", "matmul", "saxpy", "softmax", "stencil2d"] {
            assert!(names.contains(&want), "{names:?}");
        }
    }
}

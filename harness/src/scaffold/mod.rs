//! `kiln new kernel NAME --inputs "x: f32[rows, cols], gamma: f32[cols]"
//! --outputs "y: f32[rows, cols]" [--params "eps=1e-5"]`: writes the
//! declaration, a reference stub and a stub on every backend, each with a
//! comment that says what to fill in. A stub is not listed as implemented
//! (so the session goes on serving, and replay skips the kernel as "not on
//! BACKEND yet") until it is written.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use shared_state::{KernelDecl, LaunchDecl, ParamDecl, Scalar, TensorDecl, WorkDecl};

/// First line of a GPU source stub (defined by the contract: the backends
/// read it).
pub use shared_state::GPU_STUB_MARKER;

mod gpu_stub;
use gpu_stub::{cuda_stub, wgsl_stub};

/// The line in a module's `src/declared/mod.rs` above which new kernels go.
pub const REGISTRY_MARKER: &str = "// `kiln new kernel` adds kernels above this line.";

/// What `kiln new` scaffolds.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum NewCommand {
    /// Declare a kernel and write a stub for it in the reference module and
    /// on every backend.
    Kernel(NewKernel),
}

impl NewCommand {
    pub fn run(&self) -> Result<(), String> {
        match self {
            NewCommand::Kernel(k) => new_kernel_command(k),
        }
    }
}

/// What `kiln new kernel` was asked.
#[derive(Clone, Debug, clap::Args)]
pub struct NewKernel {
    /// The kernel's name (an identifier): kernels/declarations/NAME.toml.
    pub name: String,
    /// Tensor inputs: "x: f32[rows, cols], gamma: f32[cols]".
    #[arg(long)]
    pub inputs: String,
    /// Outputs, shapes over the inputs' dims: "y: f32[rows, cols]".
    #[arg(long)]
    pub outputs: String,
    /// Scalar parameters with defaults: "eps=1e-5, steps=2".
    #[arg(long, default_value = "")]
    pub params: String,
}

/// Splits on commas outside `[...]` and `(...)`.
fn split_list(s: &str) -> Vec<String> {
    let (mut depth, mut cur, mut out) = (0i32, String::new(), Vec::new());
    for c in s.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl NewKernel {
    /// The declaration it describes, checked (dims bound, names unique).
    pub fn declaration(&self) -> Result<KernelDecl, String> {
        let tensors = |what: &str, text: &str| -> Result<Vec<TensorDecl>, String> {
            split_list(text)
                .iter()
                .map(|t| TensorDecl::parse(t).map_err(|e| format!("--{what}: {e}")))
                .collect()
        };
        let decl = KernelDecl {
            name: self.name.clone(),
            summary: String::new(),
            inputs: tensors("inputs", &self.inputs)?,
            params: split_list(&self.params)
                .iter()
                .map(|p| ParamDecl::parse(p).map_err(|e| format!("--params: {e}")))
                .collect::<Result<_, _>>()?,
            outputs: tensors("outputs", &self.outputs)?,
            launch: LaunchDecl::default(),
            work: WorkDecl::default(),
            tunables: Vec::new(),
            tolerances: Vec::new(),
            file: format!("{}/{}.toml", kiln_decl::DECLARATIONS_DIR, self.name),
            hash: String::new(),
        };
        let problems = decl.validate();
        if !problems.is_empty() {
            return Err(format!("{}: {}", self.name, problems.join("; ")));
        }
        Ok(decl)
    }
}

fn toml_scalar(s: &Scalar) -> String {
    match s {
        Scalar::F64(v) => format!("{v:?}"),
        Scalar::I64(v) => v.to_string(),
        Scalar::Bool(v) => v.to_string(),
        Scalar::Text(v) => format!("{v:?}"),
    }
}

fn quoted_list(items: &[TensorDecl]) -> String {
    let items: Vec<String> = items.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// The elements of the first output, as an expression (for the default
/// one-thread-per-element launch).
fn first_output_elements(decl: &KernelDecl) -> String {
    let dims: Vec<String> = decl.outputs[0]
        .shape
        .iter()
        .map(|e| match e.as_dim() {
            Some(d) => d.to_string(),
            None => format!("({e})"),
        })
        .collect();
    if dims.is_empty() {
        "1".to_string()
    } else {
        dims.join("*")
    }
}

/// The text of `kernels/declarations/NAME.toml`.
pub fn declaration_text(decl: &KernelDecl) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {}: declared by `kiln new kernel`. Say what it computes in `summary`;",
        decl.name
    );
    let _ = writeln!(
        s,
        "# see docs/kernel-declarations.md for every field (work, tunables, tolerance)."
    );
    let _ = writeln!(s, "summary = \"TODO: what {} computes\"", decl.name);
    let _ = writeln!(s, "inputs = {}", quoted_list(&decl.inputs));
    let _ = writeln!(s, "outputs = {}", quoted_list(&decl.outputs));
    if !decl.params.is_empty() {
        let params: Vec<String> = decl
            .params
            .iter()
            .map(|p| format!("{} = {}", p.name, toml_scalar(&p.default)))
            .collect();
        let _ = writeln!(s, "params = {{ {} }}", params.join(", "));
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "# GPU launch: one pass, a thread per element of the first output, at most 65535"
    );
    let _ = writeln!(
        s,
        "# workgroups (the devices' limit): the stubs loop over the rest (grid-stride)."
    );
    let _ = writeln!(s, "[[launch]]");
    let _ = writeln!(s, "entry = \"main\"");
    let _ = writeln!(s, "group = [256]");
    let _ = writeln!(
        s,
        "workgroups = [\"min(max(ceil_div({}, 256), 1), 65535)\"]",
        first_output_elements(decl)
    );
    s
}

/// A Rust stub for a module with a `registry::Args` (cpu, reference).
fn rust_stub(decl: &KernelDecl, backend: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "//! {} on {backend}: {}", decl.name, decl.signature());
    let _ = writeln!(s, "//!");
    let _ = writeln!(
        s,
        "//! TODO: write `run`, then set `IMPLEMENTED` to true. Until then the module"
    );
    let _ = writeln!(
        s,
        "//! does not list {} and replay skips it (\"not on {backend} yet\").",
        decl.name
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "use shared_state::{{EngineError, Tensor}};");
    let _ = writeln!(s);
    let _ = writeln!(s, "use crate::registry::Args;");
    let _ = writeln!(s);
    let _ = writeln!(s, "pub const IMPLEMENTED: bool = false;");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, EngineError> {{"
    );
    let _ = writeln!(s, "    // Inputs, in declared order:");
    for (i, t) in decl.inputs.iter().enumerate() {
        let _ = writeln!(
            s,
            "    //   let {} = args.input::<{}>({i})?; // {t}",
            t.name,
            rust_type(t)
        );
    }
    let mut dims: Vec<&str> = decl
        .inputs
        .iter()
        .flat_map(|t| t.shape.iter().filter_map(|e| e.as_dim()))
        .collect();
    dims.dedup();
    if !dims.is_empty() {
        let _ = writeln!(s, "    // Dims:");
        for d in dims {
            let _ = writeln!(s, "    //   let {d} = args.dim(\"{d}\");");
        }
    }
    if !decl.params.is_empty() {
        let _ = writeln!(
            s,
            "    // Parameters (their defaults when a call omits them):"
        );
        for p in &decl.params {
            let _ = writeln!(s, "    //   let {} = args.param(\"{}\")?;", p.name, p.name);
        }
    }
    if backend == "cpu" {
        let _ = writeln!(
            s,
            "    // The engine's rayon pool: args.pool.install(|| ...) (never the global pool)."
        );
    }
    let _ = writeln!(s, "    // Outputs, in declared order:");
    for (i, t) in decl.outputs.iter().enumerate() {
        let _ = writeln!(s, "    //   args.output({i}, data)? // {t}");
    }
    let _ = writeln!(s, "    let _ = args;");
    let _ = writeln!(
        s,
        "    Err(EngineError::internal(\"{} is not written yet\"))",
        decl.name
    );
    let _ = writeln!(s, "}}");
    s
}

fn rust_type(t: &TensorDecl) -> &'static str {
    match t.dtype.name() {
        "f16" => "shared_state::f16",
        "bf16" => "shared_state::bf16",
        other => match other {
            "f32" => "f32",
            "f64" => "f64",
            "i32" => "i32",
            "i64" => "i64",
            "u32" => "u32",
            "u8" => "u8",
            _ => "i8",
        },
    }
}

/// Adds `name,` above the marker line of a module's kernel list.
fn register(mod_rs: &Path, name: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(mod_rs).map_err(|e| format!("{}: {e}", mod_rs.display()))?;
    let Some(at) = text.find(REGISTRY_MARKER) else {
        return Err(format!(
            "{}: no line `{REGISTRY_MARKER}` to add {name} above",
            mod_rs.display()
        ));
    };
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = &text[line_start..at];
    let new = format!(
        "{}{indent}{name},\n{}",
        &text[..line_start],
        &text[line_start..]
    );
    write_new_or_replace(mod_rs, &new)
}

fn write_new_or_replace(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("kiln-new.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the declaration and the stubs under `root`; returns the files
/// written. Refuses a name that is already declared or has a stub.
pub fn new_kernel(root: &Path, spec: &NewKernel) -> Result<Vec<PathBuf>, String> {
    let decl = spec.declaration()?;
    let name = &decl.name;
    let decl_path = root
        .join(kiln_decl::DECLARATIONS_DIR)
        .join(format!("{name}.toml"));
    if decl_path.exists() {
        return Err(format!(
            "{} already exists: {name} is declared",
            decl_path.display()
        ));
    }
    let mut planned: Vec<(PathBuf, String, Option<PathBuf>)> =
        vec![(decl_path.clone(), declaration_text(&decl), None)];
    for backend in ["reference", "cpu"] {
        let dir = root.join("kernels").join(backend).join("src/declared");
        if dir.is_dir() {
            planned.push((
                dir.join(format!("{name}.rs")),
                rust_stub(&decl, backend),
                Some(dir.join("mod.rs")),
            ));
        }
    }
    let vulkan = root.join("kernels/vulkan/shaders");
    if vulkan.is_dir() {
        planned.push((vulkan.join(format!("{name}.wgsl")), wgsl_stub(&decl), None));
    }
    let cuda = root.join("kernels/cuda/kernels");
    if cuda.is_dir() {
        planned.push((cuda.join(format!("{name}.cu")), cuda_stub(&decl), None));
    }
    if let Some((path, _, _)) = planned.iter().find(|(p, _, _)| p.exists()) {
        return Err(format!(
            "{} already exists; nothing written",
            path.display()
        ));
    }
    // The stubs first, the declaration last: a session watching the
    // workspace sees a declared kernel only once its stubs exist.
    let mut written = Vec::new();
    for (path, text, registry) in planned.iter().skip(1) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        write_new_or_replace(path, text)?;
        if let Some(registry) = registry {
            register(registry, name)?;
        }
        written.push(path.clone());
    }
    std::fs::create_dir_all(decl_path.parent().expect("has a parent"))
        .map_err(|e| format!("{}: {e}", decl_path.display()))?;
    write_new_or_replace(&decl_path, &planned[0].1)?;
    written.insert(0, decl_path);
    Ok(written)
}

/// `kiln new kernel ...`.
pub fn new_kernel_command(spec: &NewKernel) -> Result<(), String> {
    let root = crate::kernel_commands::workspace_root();
    let written = new_kernel(&root, spec)?;
    let decl = spec.declaration()?;
    println!("declared {}", decl.signature());
    for path in written {
        println!(
            "  wrote {}",
            path.strip_prefix(&root).unwrap_or(&path).display()
        );
    }
    println!(
        "Fill in the reference stub and a backend's, set IMPLEMENTED to true (Rust) or remove the\n\
         `{GPU_STUB_MARKER}` line (WGSL, CUDA), then record calls:\n  \
         kiln record --kernel {} --dims {} -o FILE",
        decl.name,
        {
            let mut dims: Vec<String> = decl
                .inputs
                .iter()
                .flat_map(|t| {
                    t.shape
                        .iter()
                        .filter_map(|e| e.as_dim().map(|d| format!("{d}=N")))
                })
                .collect();
            dims.dedup();
            dims.join(",")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NewKernel {
        NewKernel {
            name: "layer_norm".into(),
            inputs: "x: f32[rows, cols], gamma: f32[cols], beta: f32[cols]".into(),
            outputs: "y: f32[rows, cols]".into(),
            params: "eps=1e-5".into(),
        }
    }

    #[test]
    fn the_declaration_written_parses_back_to_the_same_signature() {
        let decl = spec().declaration().unwrap();
        let text = declaration_text(&decl);
        let back =
            kiln_decl::parse(Path::new("kernels/declarations/layer_norm.toml"), &text).unwrap();
        assert_eq!(back.signature(), decl.signature());
        assert_eq!(back.launch.passes.len(), 1);
        let mut bad = spec();
        bad.outputs = "y: f32[n]".into();
        assert!(
            bad.declaration()
                .unwrap_err()
                .contains("dim `n` is not bound")
        );
    }

    #[test]
    fn the_gpu_stubs_bind_what_the_convention_binds() {
        let decl = spec().declaration().unwrap();
        // docs/kernel-declarations.md's layer_norm example, line for line.
        let wgsl = wgsl_stub(&decl);
        assert!(wgsl.starts_with(GPU_STUB_MARKER), "{wgsl}");
        for line in [
            "struct Params {\n    rows: u32,\n    cols: u32,\n    eps: f32,\n}",
            "@group(0) @binding(0) var<storage, read> x: array<f32>;",
            "@group(0) @binding(1) var<storage, read> gamma: array<f32>;",
            "@group(0) @binding(2) var<storage, read> beta: array<f32>;",
            "@group(0) @binding(3) var<storage, read_write> y: array<f32>;",
            "@group(0) @binding(4) var<uniform> params: Params;",
            "@compute @workgroup_size(256)",
            "    let count = params.rows * params.cols;",
            "    for (var i = gid.x; i < count; i += stride) {",
        ] {
            assert!(wgsl.contains(line), "no {line:?} in\n{wgsl}");
        }
        // CUDA: the entry `main` is the function named after the kernel.
        let cuda = cuda_stub(&decl);
        assert!(
            cuda.contains(
                "extern \"C\" __global__ void layer_norm(const float* x, const float* gamma, \
                 const float* beta, float* y, unsigned int rows, unsigned int cols, float eps) {"
            ),
            "{cuda}"
        );
        assert!(
            cuda.contains(
                "unsigned long long count = (unsigned long long)rows * (unsigned long long)cols;"
            ),
            "{cuda}"
        );
        // An i8 input is bound as words; a bool parameter is a u32.
        let packed = NewKernel {
            name: "q".into(),
            inputs: "a: i8[n]".into(),
            outputs: "s: i32[n]".into(),
            params: "relu=true, scale=2".into(),
        }
        .declaration()
        .unwrap();
        let wgsl = wgsl_stub(&packed);
        assert!(
            wgsl.contains("var<storage, read> a: array<u32>; // a: i8[n]: four bytes per word"),
            "{wgsl}"
        );
        assert!(
            wgsl.contains("struct Params {\n    n: u32,\n    relu: u32,\n    scale: i32,\n}"),
            "{wgsl}"
        );
        assert!(
            cuda_stub(&packed).contains(
                "void q(const signed char* a, int* s, unsigned int n, unsigned int relu, int scale)"
            ),
            "{}",
            cuda_stub(&packed)
        );
    }

    #[test]
    fn writes_declaration_and_stubs_and_registers_them() {
        let root = tempfile::tempdir().unwrap();
        for m in ["cpu", "reference"] {
            let dir = root.path().join("kernels").join(m).join("src/declared");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("mod.rs"),
                format!("crate::kernels! {{\n    saxpy,\n    {REGISTRY_MARKER}\n}}\n"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(root.path().join("kernels/vulkan/shaders")).unwrap();
        let written = new_kernel(root.path(), &spec()).unwrap();
        assert_eq!(written.len(), 4, "{written:?}");
        let registry =
            std::fs::read_to_string(root.path().join("kernels/cpu/src/declared/mod.rs")).unwrap();
        assert!(
            registry.contains("    saxpy,\n    layer_norm,\n    // `kiln new"),
            "{registry}"
        );
        let stub =
            std::fs::read_to_string(root.path().join("kernels/cpu/src/declared/layer_norm.rs"))
                .unwrap();
        assert!(stub.contains("pub const IMPLEMENTED: bool = false;"));
        assert!(stub.contains("args.param(\"eps\")"));
        let again = new_kernel(root.path(), &spec()).unwrap_err();
        assert!(again.contains("already exists"), "{again}");
    }
}

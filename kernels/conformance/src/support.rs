//! What the tests of a GPU module set up: engine contexts with the
//! workspace's declarations and the module's sources read from disk (as the
//! host stages them), a spawner that refuses (the engines never start
//! threads), the skip-or-fail rule, comparisons with the reference, and
//! tests re-run in a child process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use shared_state::{
    Call, Engine, EngineContext, EngineError, ErrorKind, KernelDecl, KernelSet, Output, Scalar,
    Snapshot, SourceFile, Tensor, ThreadSpawner,
};

use crate::{Backend, DotBound, Exactness};

/// The bundled kernels' names (declared in `kernels/declarations/`).
pub const SAXPY: &str = "saxpy";
pub const DOT: &str = "dot";
pub const MATMUL: &str = "matmul";
pub const STENCIL2D: &str = "stencil2d";
pub const SOFTMAX: &str = "softmax";
pub const LAYER_NORM: &str = "layer_norm";
pub const PREFIX_SUM: &str = "prefix_sum";

/// Every bundled kernel, in declaration (file name) order: each GPU module
/// implements them all.
pub const BUNDLED_KERNELS: [&str; 12] = [
    "dot",
    "dot_i8",
    "layer_norm",
    "matmul",
    "matmul_bf16",
    "matmul_f16",
    "matmul_i8",
    "prefix_sum",
    "saxpy",
    "softmax",
    "softmax_bf16",
    "stencil2d",
];

/// Fails the test if an engine ever asks for a thread.
struct NoThreads(&'static str);

impl ThreadSpawner for NoThreads {
    fn spawn_boxed(&self, name: String, _body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        panic!(
            "the {} engine must not start threads, but asked for {name:?}",
            self.0
        );
    }
}

/// Installs the module's panic hook (as its exported entry points do) with
/// a printer chained after it: the module's hook only logs through
/// `tracing`, which would leave failing assertions silent in tests.
pub fn install_test_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        shared_state::export::install_panic_hook();
        let module_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            module_hook(info);
            eprintln!("{info}");
        }));
    });
}

/// The workspace root: where the modules were built, or (a test binary
/// carried to another machine and run from the repository root) the
/// current folder.
pub fn workspace_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if built.join("kernels/declarations").is_dir() {
        built
    } else {
        PathBuf::from(".")
    }
}

/// The workspace's kernel declarations (every file must parse).
pub fn declarations() -> KernelSet {
    let root = workspace_root();
    let (decls, errors) = kiln_decl::load_dir(&root, &root.join(kiln_decl::DECLARATIONS_DIR));
    assert!(errors.is_empty(), "declarations: {errors:?}");
    KernelSet::new(decls)
}

/// A declaration written in a test, as if read from
/// `kernels/declarations/NAME.toml`.
pub fn decl(name: &str, text: &str) -> KernelDecl {
    kiln_decl::parse(
        Path::new(&format!("kernels/declarations/{name}.toml")),
        text,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A source file as the host stages it: path relative to the module.
pub fn source(path: &str, text: &str) -> SourceFile {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    SourceFile {
        path: path.to_string(),
        text: text.to_string(),
        hash: format!("{hash:016x}"),
    }
}

/// The path of kernel `name`'s source in backend `B` (`shaders/saxpy.wgsl`).
pub fn source_path<B: Backend>(name: &str) -> String {
    B::SOURCES.replacen('*', name, 1)
}

/// The module's kernel sources, read from disk, sorted by path.
pub fn sources<B: Backend>() -> Vec<SourceFile> {
    let (folder, suffix) = B::SOURCES
        .split_once("/*")
        .expect("SOURCES is FOLDER/*.EXT");
    let dir = workspace_root().join("kernels").join(B::NAME).join(folder);
    let mut files: Vec<SourceFile> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .map(|name| {
            source(
                &format!("{folder}/{name}"),
                &std::fs::read_to_string(dir.join(&name)).unwrap(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The module's sources with kernel `name`'s edited by `edit`.
pub fn edited<B: Backend>(name: &str, edit: impl Fn(&str) -> String) -> Vec<SourceFile> {
    let path = source_path::<B>(name);
    sources::<B>()
        .into_iter()
        .map(|s| {
            if s.path == path {
                source(&s.path, &edit(&s.text))
            } else {
                s
            }
        })
        .collect()
}

/// The module's sources with `from` replaced by `to` in saxpy's (which must
/// contain it).
pub fn saxpy_replaced<B: Backend>((from, to): (&str, &str)) -> Vec<SourceFile> {
    edited::<B>(SAXPY, |text| {
        assert!(text.contains(from), "saxpy's source has no {from:?}");
        text.replace(from, to)
    })
}

/// An engine context with the given options, declarations and sources
/// (installs the test panic hook).
pub fn context_with<B: Backend>(
    label: &str,
    options: &[(&str, &str)],
    kernels: KernelSet,
    sources: Vec<SourceFile>,
) -> EngineContext {
    install_test_panic_hook();
    EngineContext {
        label: label.to_string(),
        threads: 1,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        spawner: Arc::new(NoThreads(B::NAME)),
        kernels: Arc::new(kernels),
        sources: Arc::new(sources),
    }
}

/// An engine context with the workspace's declarations and the module's
/// sources.
pub fn context<B: Backend>(label: &str, options: &[(&str, &str)]) -> EngineContext {
    context_with::<B>(label, options, declarations(), sources::<B>())
}

fn flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// The variable that turns a missing device into a failure
/// (`KILN_REQUIRE_VULKAN`).
pub fn require_device_var<B: Backend>() -> String {
    format!("KILN_REQUIRE_{}", B::NAME.to_uppercase())
}

/// Whether a missing device must fail the tests.
pub fn device_required<B: Backend>() -> bool {
    flag(&require_device_var::<B>())
}

/// Whether a missing compiler must fail the tests.
pub fn compiler_required<B: Backend>() -> bool {
    B::REQUIRE_COMPILER.iter().any(|v| flag(v)) || device_required::<B>()
}

/// The skip rule for an engine creation that failed: prints the skip line
/// for an `Unavailable` error (the device or driver is absent); panics on
/// any other error, and on this one when the device is required.
pub fn skip<B: Backend>(test: &str, err: &EngineError) {
    assert_eq!(
        err.kind,
        ErrorKind::Unavailable,
        "{test}: engine creation failed: {err}"
    );
    assert!(
        !device_required::<B>(),
        "{test}: {}=1 but the {} engine is unavailable: {err}",
        require_device_var::<B>(),
        B::NAME
    );
    println!("{test}: skipped: {}", B::unavailable(err));
}

/// An engine from `ctx` (with nothing to default), or `None` after the skip
/// rule.
pub fn engine_from<B: Backend>(
    test: &str,
    ctx: EngineContext,
    prior: Option<&mut Snapshot>,
) -> Option<B::Engine> {
    match (B::CREATE)(ctx, prior) {
        Ok((engine, defaulted)) => {
            assert!(defaulted.is_empty(), "{test}: defaulted: {defaulted:?}");
            Some(engine)
        }
        Err(err) => {
            skip::<B>(test, &err);
            None
        }
    }
}

/// An engine on the default device with the workspace's declarations and
/// the module's sources, or `None` after the skip rule.
pub fn engine<B: Backend>(test: &str) -> Option<B::Engine> {
    engine_from::<B>(test, context::<B>(test, &[]), None)
}

/// `true` when the backend's compiler is here; otherwise prints the skip
/// line (or panics when the compiler is required).
pub fn compiler_or_skip<B: Backend>(test: &str) -> bool {
    match B::compiler() {
        Ok(()) => true,
        Err(err) => {
            assert_eq!(err.kind, ErrorKind::Unavailable, "{test}: {err}");
            assert!(
                !compiler_required::<B>(),
                "{test}: {}=1 but {}",
                B::REQUIRE_COMPILER.join("=1 or "),
                err.message
            );
            println!("{test}: skipped: {}", B::unavailable(&err));
            false
        }
    }
}

/// Runs a call and returns its one output.
pub fn run_value(engine: &mut impl Engine, call: Call) -> Tensor {
    let what = format!(
        "{} {:?}",
        call.kernel,
        call.args.iter().map(|a| a.describe()).collect::<Vec<_>>()
    );
    match engine.run(call) {
        Ok(Output::Value(t)) => t,
        other => panic!("{what}: {other:?}"),
    }
}

/// A call's one f32 output.
pub fn run_f32(engine: &mut impl Engine, call: Call) -> Vec<f32> {
    run_value(engine, call).as_f32().unwrap().to_vec()
}

/// A 1-D f32 tensor.
pub fn t1(data: Vec<f32>) -> Tensor {
    Tensor::from_f32(&[data.len()], data)
}

/// A `rows x cols` f32 tensor.
pub fn t2(rows: usize, cols: usize, data: Vec<f32>) -> Tensor {
    Tensor::from_f32(&[rows, cols], data)
}

/// `|got - want| <= tol * (1 + |want|)` element by element.
pub use kernel_reference::assert_close;

/// `got` is `want` as `exactness` says.
pub fn assert_matches(got: &[f32], want: &[f32], exactness: Exactness, what: &str) {
    match exactness {
        Exactness::BitForBit => {
            assert_eq!(got.len(), want.len(), "{what}: length");
            if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                panic!("{what}: element {i}: got {}, want {}", got[i], want[i]);
            }
        }
        Exactness::Within(tol) => assert_close(got, want, tol, what),
    }
}

/// The sum of |x*y| in f64: the scale of a dot product's rounding error.
pub fn dot_scale(x: &[f32], y: &[f32]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
        .sum::<f64>() as f32
}

/// A dot product of `x` and `y` is `got` within `bound`.
pub fn assert_dot(got: f32, x: &[f32], y: &[f32], bound: DotBound, what: &str) {
    let want = kernel_reference::dot(x, y);
    let (err, limit) = match bound {
        DotBound::OfResult(tol) => ((got - want).abs(), tol * (1.0 + want.abs())),
        DotBound::OfMagnitudes(tol) => ((got - want).abs(), tol * (1.0 + dot_scale(x, y))),
    };
    assert!(
        err <= limit,
        "{what}: got {got}, want {want} (error {err}, bound {limit})"
    );
}

/// An integer note of the engine's info.
pub fn note(engine: &dyn Engine, key: &str) -> i64 {
    match engine.info().unwrap().notes.get(key) {
        Some(Scalar::I64(v)) => *v,
        other => panic!("note {key}: {other:?}"),
    }
}

/// The names of a snapshot's sections that are not caches.
pub fn state_sections(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .section_names()
        .into_iter()
        .filter(|n| !Snapshot::is_cache_section(n))
        .collect()
}

/// Marks a test process started by [`run_child`].
pub const CHILD_MARK: &str = "KILN_CONFORMANCE_TEST_CHILD";

/// The libtest path of test `name` defined next to the caller:
/// `test_path(module_path!(), "child")` in `kernel_vulkan::tests::x` is
/// `tests::x::child` (libtest names tests without the crate).
pub fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, inner)) => format!("{inner}::{name}"),
        None => name.to_string(),
    }
}

/// Re-runs this test binary on the single ignored test `name` (its full
/// path) in a child process with `env` set, so the environment and
/// process-wide state (loader variables, the `tracing` dispatcher) stay out
/// of the other tests. Returns the child's stdout; fails the test if the
/// child failed. A skip line of the child is passed on.
pub fn run_child(name: &str, env: &[(String, String)]) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_MARK, "1")
    .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child {name} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // libtest prints `test NAME ... ` before the test's own output, on the
    // same line.
    if let Some(line) = stdout
        .lines()
        .find_map(|l| l.find("skipped: ").map(|i| &l[i..]))
    {
        println!("{line}");
    }
    stdout
}

/// Fails unless this process was started by [`run_child`].
pub fn assert_child(parent: &str) {
    assert_eq!(
        std::env::var(CHILD_MARK).as_deref(),
        Ok("1"),
        "only meant to run in a child process started by {parent}"
    );
}

/// The `KILN-CHILD key: value` lines of a child's output, by key.
pub fn child_lines(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once("KILN-CHILD ").map(|(_, rest)| rest))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// How a child describes a result on its `KILN-CHILD` lines.
pub fn describe<T: std::fmt::Debug>(r: Result<T, EngineError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({:?}: {})", e.kind, e.message),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("kiln-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

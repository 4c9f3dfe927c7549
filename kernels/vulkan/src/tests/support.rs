//! Engine set-up for the tests: a context with the workspace's declarations
//! and this module's shaders read from disk (as the host stages them), a
//! spawner that refuses (the engine must never ask for a thread), and the
//! skip-or-fail rule when there is no Vulkan device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shared_state::{
    Call, EngineContext, ErrorKind, KernelSet, Output, Snapshot, SourceFile, Tensor, ThreadSpawner,
};

use crate::engine::VulkanEngine;

/// Fails the test if the engine ever asks for a thread.
struct NoThreads;

impl ThreadSpawner for NoThreads {
    fn spawn_boxed(&self, name: String, _body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        panic!("the Vulkan engine must not start threads, but asked for {name:?}");
    }
}

/// The workspace root: where the module was built, or (a test binary run
/// from the repository root on another machine) the current folder.
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

/// This module's `shaders/*.wgsl`, read from disk.
pub fn shader_sources() -> Vec<SourceFile> {
    let dir = workspace_root().join("kernels/vulkan/shaders");
    let mut files: Vec<SourceFile> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            source(
                &format!("shaders/{name}"),
                &std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// A context with the given declarations and sources.
pub fn context_with(
    options: &[(&str, &str)],
    kernels: KernelSet,
    sources: Vec<SourceFile>,
) -> EngineContext {
    EngineContext {
        label: "kernel-vulkan-test".to_string(),
        threads: 1,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        spawner: Arc::new(NoThreads),
        kernels: Arc::new(kernels),
        sources: Arc::new(sources),
    }
}

/// A context with the workspace's declarations and shaders.
pub fn context(options: &[(&str, &str)]) -> EngineContext {
    context_with(options, declarations(), shader_sources())
}

/// Whether a missing device must fail the test instead of skipping it.
pub fn vulkan_required() -> bool {
    std::env::var("KILN_REQUIRE_VULKAN").is_ok_and(|v| v == "1")
}

/// An engine on the default device, or `None` (after printing why) when this
/// machine has no Vulkan device and it is not required.
pub fn engine_with(options: &[(&str, &str)], prior: Option<&mut Snapshot>) -> Option<VulkanEngine> {
    engine_from(context(options), prior)
}

/// An engine from `ctx`, or `None` (after printing why) as [`engine_with`].
pub fn engine_with_context(ctx: EngineContext) -> Option<VulkanEngine> {
    engine_from(ctx, None)
}

fn engine_from(ctx: EngineContext, prior: Option<&mut Snapshot>) -> Option<VulkanEngine> {
    match VulkanEngine::create(ctx, prior) {
        Ok((engine, defaulted)) => {
            assert!(defaulted.is_empty(), "defaulted: {defaulted:?}");
            Some(engine)
        }
        Err(e) if e.kind == ErrorKind::Unavailable => {
            if vulkan_required() {
                panic!(
                    "KILN_REQUIRE_VULKAN=1 but there is no usable Vulkan device: {}",
                    e.message
                );
            }
            println!("skipped: no Vulkan device ({})", e.message);
            None
        }
        Err(e) => panic!("engine creation failed: {e:?}"),
    }
}

pub fn engine() -> Option<VulkanEngine> {
    engine_with(&[], None)
}

/// The sum of |x*y| in f64: the scale of a dot product's rounding error
/// (the tolerance of the dot tests).
pub fn dot_scale(x: &[f32], y: &[f32]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
        .sum::<f64>() as f32
}

/// Runs a call and returns its output tensor's data.
pub fn run_value(engine: &mut VulkanEngine, call: Call) -> Tensor {
    use shared_state::Engine;
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

/// `|got - want| <= tol * (1 + scale)` element-wise, where `scale` is
/// `|want|` unless given per element.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w} (error {err})"
        );
    }
}

/// Marks a test process started by [`run_child`].
pub const CHILD_MARK: &str = "KILN_VULKAN_TEST_CHILD";

/// Re-runs this test binary on the single ignored test `name` (full path)
/// in a child process with `env` set, so the environment and process-wide
/// state (loader variables, the `tracing` dispatcher) stay out of the other
/// tests. Returns the child's stdout; fails the test if the child failed.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_MARK, "1");
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
    // Pass a skip on to this test's output.
    // (libtest prints `test NAME ... ` before the test's own output, on
    // the same line.)
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

/// The bundled kernels' names (declared in `kernels/declarations/`).
pub const SAXPY: &str = "saxpy";
pub const DOT: &str = "dot";
pub const MATMUL: &str = "matmul";
pub const STENCIL2D: &str = "stencil2d";
pub const SOFTMAX: &str = "softmax";
pub const LAYER_NORM: &str = "layer_norm";
pub const PREFIX_SUM: &str = "prefix_sum";

/// Row-wise layer norm with the biased variance, in f64, rounded once (the
/// semantics of `kernels/declarations/layer_norm.toml`).
// TODO(khost): replace with `kernel_reference::layer_norm` once it lands.
pub fn layer_norm_ref(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    (rows, cols): (usize, usize),
    eps: f64,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let count = cols.max(1) as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / count;
        let inv = 1.0 / (var + eps).sqrt();
        for (c, &v) in row.iter().enumerate() {
            out.push(
                ((f64::from(v) - mean) * inv * f64::from(gamma[c]) + f64::from(beta[c])) as f32,
            );
        }
    }
    out
}

/// Inclusive prefix sum in f64, each element rounded once.
// TODO(khost): replace with `kernel_reference::prefix_sum` once it lands.
pub fn prefix_sum_ref(x: &[f32]) -> Vec<f32> {
    let mut acc = 0.0f64;
    x.iter()
        .map(|&v| {
            acc += f64::from(v);
            acc as f32
        })
        .collect()
}

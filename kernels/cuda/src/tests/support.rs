//! Shared helpers of the tests: engine contexts, skipping, test data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use shared_state::{
    EngineContext, EngineError, ErrorKind, KernelSet, Snapshot, SourceFile, ThreadSpawner,
};

use crate::engine::CudaEngine;

/// A spawner that refuses: the CUDA engine must never ask for a thread.
pub struct NoThreads;

impl ThreadSpawner for NoThreads {
    fn spawn_boxed(&self, name: String, _body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        panic!("the CUDA engine asked for a thread ({name}); it must spawn none")
    }
}

/// Installs the module's panic hook (as the exported entry points do) and
/// chains a printer after it: the module's hook only logs through
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

/// The workspace root: where the module was built, or (the test binary
/// carried to a GPU machine and run from the repository root) the current
/// folder.
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

/// This module's `kernels/*.cu`, read from disk.
pub fn cuda_sources() -> Vec<SourceFile> {
    let dir = workspace_root().join("kernels/cuda/kernels");
    let mut files: Vec<SourceFile> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            source(
                &format!("kernels/{name}"),
                &std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// An engine context for tests with the given declarations and sources
/// (installs the test panic hook).
pub fn context_with(
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
        spawner: Arc::new(NoThreads),
        kernels: Arc::new(kernels),
        sources: Arc::new(sources),
    }
}

/// An engine context with the workspace's declarations and `.cu` files.
pub fn context(label: &str, options: &[(&str, &str)]) -> EngineContext {
    context_with(label, options, declarations(), cuda_sources())
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Whether tests must fail rather than skip without a GPU.
pub fn cuda_required() -> bool {
    required("KILN_REQUIRE_CUDA")
}

/// Whether tests must fail rather than skip without NVRTC.
pub fn nvrtc_required() -> bool {
    required("KILN_REQUIRE_NVRTC") || cuda_required()
}

/// Creates an engine on the default device, or prints why the test is
/// skipped and returns `None` (panics instead under `KILN_REQUIRE_CUDA=1`).
pub fn engine_or_skip(test: &str, prior: Option<&mut Snapshot>) -> Option<CudaEngine> {
    match CudaEngine::create(context(test, &[]), prior) {
        Ok((engine, defaulted)) => {
            assert!(defaulted.is_empty(), "nothing to default: {defaulted:?}");
            Some(engine)
        }
        Err(err) => {
            skip_unavailable(test, &err);
            None
        }
    }
}

/// Prints the skip line for an `Unavailable` error; panics on any other
/// error, or on this one when the GPU is required.
pub fn skip_unavailable(test: &str, err: &EngineError) {
    assert_eq!(
        err.kind,
        ErrorKind::Unavailable,
        "{test}: engine creation failed: {err}"
    );
    assert!(
        !cuda_required(),
        "{test}: KILN_REQUIRE_CUDA=1 but the CUDA engine is unavailable: {err}"
    );
    if err.message.starts_with("no NVRTC") {
        println!("{test}: skipped: no NVRTC ({})", err.message);
    } else {
        println!("{test}: skipped: no CUDA device ({})", err.message);
    }
}

/// Asserts `|got - want| <= tol * (1 + |want|)` element by element.
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

/// The bundled kernels' names (declared in `kernels/declarations/`).
pub const SAXPY: &str = "saxpy";
pub const DOT: &str = "dot";
pub const MATMUL: &str = "matmul";
pub const STENCIL2D: &str = "stencil2d";
pub const SOFTMAX: &str = "softmax";
pub const LAYER_NORM: &str = "layer_norm";
pub const PREFIX_SUM: &str = "prefix_sum";

//! Shared helpers of the tests: engine contexts, skipping, test data.

use std::collections::BTreeMap;
use std::sync::{Arc, Once};

use shared_state::{EngineContext, EngineError, ErrorKind, Snapshot, ThreadSpawner};

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

/// An engine context for tests (installs the test panic hook).
pub fn context(label: &str, options: &[(&str, &str)]) -> EngineContext {
    install_test_panic_hook();
    EngineContext {
        label: label.to_string(),
        threads: 1,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        spawner: Arc::new(NoThreads),
    }
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

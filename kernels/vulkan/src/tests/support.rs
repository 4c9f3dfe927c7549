//! Engine set-up for the tests: a context whose spawner refuses (the engine
//! must never ask for a thread), and the skip-or-fail rule when there is no
//! Vulkan device.

use std::collections::BTreeMap;
use std::sync::Arc;

use shared_state::{Call, EngineContext, ErrorKind, Output, Snapshot, Tensor, ThreadSpawner};

use crate::engine::VulkanEngine;

/// Fails the test if the engine ever asks for a thread.
struct NoThreads;

impl ThreadSpawner for NoThreads {
    fn spawn_boxed(&self, name: String, _body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        panic!("the Vulkan engine must not start threads, but asked for {name:?}");
    }
}

pub fn context(options: &[(&str, &str)]) -> EngineContext {
    EngineContext {
        label: "kernel-vulkan-test".to_string(),
        threads: 1,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        spawner: Arc::new(NoThreads),
    }
}

/// Whether a missing device must fail the test instead of skipping it.
pub fn vulkan_required() -> bool {
    std::env::var("KILN_REQUIRE_VULKAN").is_ok_and(|v| v == "1")
}

/// An engine on the default device, or `None` (after printing why) when this
/// machine has no Vulkan device and it is not required.
pub fn engine_with(options: &[(&str, &str)], prior: Option<&mut Snapshot>) -> Option<VulkanEngine> {
    match VulkanEngine::create(context(options), prior) {
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

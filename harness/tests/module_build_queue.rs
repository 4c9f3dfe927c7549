//! The build queue coalesces requests that arrive during a build. The build
//! is held open by a build script that waits for a gate file, so the test
//! controls exactly when it ends (no timing assumptions).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use kiln::build::module_build::{BuildOutcome, ModuleBuilder};
use kiln::build::module_graph::ModuleGraph;
use kiln::build::queue::{BuildEvent, BuildQueue, BuildReport, UnknownModule};

const DEADLINE: Duration = Duration::from_secs(120);
const GRACE: Duration = Duration::from_millis(500);

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn source(version: u32) -> String {
    format!(
        "#[no_mangle]\npub static KILN_TEST_VERSION: [u8; 16] = *b\"source-version-{version}\";\n"
    )
}

const GATED_BUILD_SCRIPT: &str = r#"
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let gate = Path::new(&dir).join("gate");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !gate.exists() {
        assert!(Instant::now() < deadline, "the test never opened {}", gate.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}
"#;

/// A workspace with one kernel module whose build waits for `gate`.
fn gated_workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    write(
        &root.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"kernels/gated\"]\n",
    );
    write(
        &root.join("kernels/gated/Cargo.toml"),
        "[package]\nname = \"kernel-gated\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n",
    );
    write(&root.join("kernels/gated/build.rs"), GATED_BUILD_SCRIPT);
    write(&root.join("kernels/gated/src/lib.rs"), &source(0));
    (dir, root)
}

fn next_event(events: &Receiver<BuildEvent>) -> BuildEvent {
    events
        .recv_timeout(DEADLINE)
        .expect("no build event within the deadline")
}

/// Skips progress events; returns the next start or result.
fn next_milestone(events: &Receiver<BuildEvent>) -> BuildEvent {
    loop {
        match next_event(events) {
            BuildEvent::Progress { .. } => continue,
            other => return other,
        }
    }
}

fn finished(event: BuildEvent) -> BuildReport {
    match event {
        BuildEvent::Finished(report) => report,
        other => panic!("expected a finished build, got {other:?}"),
    }
}

#[test]
fn requests_during_a_build_coalesce_into_one_follow_up() {
    let (_dir, root) = gated_workspace();
    let graph = ModuleGraph::discover(&root).unwrap();
    let builder = ModuleBuilder::new(&root, root.join("target/kiln-modules"))
        .with_profile("dev")
        .with_color(false);
    let queue = BuildQueue::start(builder, graph.modules().to_vec()).unwrap();
    let events = queue.events();
    let caller = std::thread::current().id();

    let first_change = Instant::now();
    queue.request("kernel-gated", first_change).unwrap();
    match next_milestone(events) {
        BuildEvent::Started { module, requests } => {
            assert_eq!(module, "kernel-gated");
            assert_eq!(requests, 1);
        }
        other => panic!("expected a start, got {other:?}"),
    }
    // The first build is now held in the build script: five saves land.
    let lib = root.join("kernels/gated/src/lib.rs");
    for version in 1..=5 {
        write(&lib, &source(version));
        queue.request("kernel-gated", Instant::now()).unwrap();
    }
    // The test thread was never blocked by the build.
    assert_eq!(std::thread::current().id(), caller);
    write(&root.join("kernels/gated/gate"), "");

    let first = finished(next_milestone(events));
    assert_eq!(first.requests, 1);
    assert_eq!(first.changed_at, first_change);
    assert!(first.started_at <= first.finished_at);
    assert!(
        matches!(first.result, Ok(BuildOutcome::Built { .. })),
        "{first:?}"
    );

    match next_milestone(events) {
        BuildEvent::Started { module, requests } => {
            assert_eq!(module, "kernel-gated");
            assert_eq!(requests, 5, "the five saves should coalesce");
        }
        other => panic!("expected the follow-up build, got {other:?}"),
    }
    let second = finished(next_milestone(events));
    assert_eq!(second.requests, 5);
    assert!(second.started_at >= first.finished_at);
    let Ok(BuildOutcome::Built { artifact, .. }) = &second.result else {
        panic!("follow-up build failed: {second:?}");
    };
    let bytes = fs::read(artifact).unwrap();
    assert!(
        bytes.windows(16).any(|w| w == b"source-version-5"),
        "the last build did not see the last source"
    );

    // Two builds, no third.
    match events.recv_timeout(GRACE) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("unexpected build event: {other:?}"),
    }
    queue.shutdown();
}

#[test]
fn unknown_modules_are_refused_and_progress_is_reported() {
    let (_dir, root) = gated_workspace();
    write(&root.join("kernels/gated/gate"), "");
    let graph = ModuleGraph::discover(&root).unwrap();
    let builder = ModuleBuilder::new(&root, root.join("target/kiln-modules"))
        .with_profile("dev")
        .with_color(false);
    let queue = BuildQueue::start(builder, graph.modules().to_vec()).unwrap();
    assert_eq!(
        queue.request("kernel-nope", Instant::now()),
        Err(UnknownModule("kernel-nope".to_string()))
    );
    queue.request("kernel-gated", Instant::now()).unwrap();
    let mut steps = BTreeSet::new();
    let report = loop {
        match next_event(queue.events()) {
            BuildEvent::Progress { progress, .. } => {
                steps.insert(progress.step);
            }
            BuildEvent::Started { .. } => {}
            BuildEvent::Finished(report) => break report,
        }
    };
    assert!(
        matches!(report.result, Ok(BuildOutcome::Built { .. })),
        "{report:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("Compiling kernel-gated")),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("Ran build script of kernel-gated")),
        "{steps:?}"
    );
    queue.shutdown();
}

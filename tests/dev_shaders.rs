//! `kiln dev --backend vulkan` on lavapipe, end to end: a WGSL edit is a
//! version of its own (the serving library re-staged with the new shader,
//! no cargo build) whose new behaviour the replay sees; a shader that does
//! not compile is reported with file and line and the old version keeps
//! serving; `--reference cpu` checks every call of the bundled workload
//! against the cpu module.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_shaders`.

use std::time::Duration;

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, EventKind, WorkspaceCopy, events, replace_once, save_in_place,
    save_via_rename,
};

const SAXPY_WGSL: &str = "kernels/vulkan/shaders/saxpy.wgsl";
const SAXPY_BODY: &str = "out[i] = a * x[i] + y[i];";

#[test]
fn a_wgsl_edit_swaps_without_cargo_and_a_broken_shader_keeps_serving() {
    let copy = WorkspaceCopy::new();
    let mut session = DevSession::start(&copy, &["--backend", "vulkan"]);
    let pristine = copy.read(SAXPY_WGSL);
    let path = copy.root().join(SAXPY_WGSL);

    // A wrong saxpy shader: swapped in without a build, and the replay sees
    // its new behaviour (the call fails), so it is rolled back.
    let mark = session.mark();
    save_via_rename(
        &path,
        &replace_once(&pristine, SAXPY_BODY, "out[i] = a * x[i] + y[i] + 1.0;"),
    );
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(swapped.bool("restaged"), Some(true), "{}", swapped.line);
    let saxpy = session.wait_for("the saxpy call of the new shader", BUILD_DEADLINE, |e| {
        e.is_replay_of("saxpy")
    });
    assert_eq!(saxpy.version(), swapped.version());
    assert!(!saxpy.fields::<events::Replay>().pass, "{}", saxpy.line);
    session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    assert!(
        session
            .named_since(mark, EventKind::BuildStarted)
            .is_empty(),
        "a shader edit needs no cargo build"
    );

    // A shader that does not compile: file and line, nothing swapped.
    let mark = session.mark();
    save_in_place(
        &path,
        &replace_once(&pristine, SAXPY_BODY, "out[i] = a * x[i] + ;"),
    );
    let refused = session.wait_event(EventKind::Refused, BUILD_DEADLINE);
    let message = refused.message().to_string();
    assert!(
        message.contains("saxpy.wgsl:"),
        "names file and line: {message}"
    );
    assert!(message.contains("keeps serving"), "{message}");
    session.wait_quiet(Duration::from_millis(1500), BUILD_DEADLINE);
    assert!(session.named_since(mark, EventKind::Swapped).is_empty());
    assert!(
        session
            .named_since(mark, EventKind::BuildStarted)
            .is_empty()
    );

    // The pristine shader again: the rolled-back version serves exactly it
    // (a version is what was staged, not the workspace's files), so it is
    // the same version and nothing is swapped.
    let mark = session.mark();
    save_in_place(&path, &pristine);
    session.wait_for("the identical version noticed", BUILD_DEADLINE, |e| {
        e.message()
            .contains("has the same library, declarations and sources")
    });
    session.wait_quiet(Duration::from_millis(1500), BUILD_DEADLINE);
    assert!(session.named_since(mark, EventKind::Swapped).is_empty());

    // An edited good shader: swaps in and passes.
    save_in_place(&path, &format!("{pristine}// edited again\n"));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let saxpy = session.wait_for("the saxpy call of the fixed shader", BUILD_DEADLINE, |e| {
        e.is_replay_of("saxpy")
    });
    assert_eq!(saxpy.version(), swapped.version());
    assert!(saxpy.fields::<events::Replay>().pass, "{}", saxpy.line);
    let _ = session.stop();
}

#[test]
fn reference_cpu_checks_every_vulkan_call_against_the_cpu_module() {
    let copy = WorkspaceCopy::new();
    let session = DevSession::start(&copy, &["--backend", "vulkan", "--reference", "cpu"]);
    let replay: Vec<_> = session
        .since(0)
        .iter()
        .filter(|e| e.is(EventKind::Replay))
        .collect();
    assert!(!replay.is_empty(), "the first replay ran");
    let declared = std::fs::read_dir(copy.root().join("kernels/declarations"))
        .expect("declarations")
        .count();
    let kernels: std::collections::BTreeSet<&str> =
        replay.iter().filter_map(|e| e.str("kernel")).collect();
    assert_eq!(
        kernels.len(),
        declared,
        "every declared kernel: {kernels:?}"
    );
    for e in replay {
        assert!(e.fields::<events::Replay>().pass, "{}", e.line);
        let reference = e.str("reference").unwrap_or_default();
        assert!(reference.starts_with("vs backend kernel-cpu"), "{}", e.line);
    }
    let _ = session.stop();
}

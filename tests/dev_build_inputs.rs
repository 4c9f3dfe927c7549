//! `kiln dev` end to end: what a module's build reads besides its Rust
//! sources is an input of the build.
//!
//! - A build script that generates code from `src/` (`cargo:rerun-if-changed
//!   =src`): an edit of a source goes through cargo, which re-runs the
//!   script, never through the recorded rustc command (which would compile
//!   the edit against stale generated code).
//! - A data file of the module read with `include_str!`: saving it starts a
//!   build, and the new data is what the new version serves.
//!
//! Real binary, real cargo, real inotify. The served module is the
//! misbehaving test module, moved under `kernels/` in a workspace copy and
//! edited before the session starts. Run with
//! `cargo test --release -p kiln-e2e --test dev_build_inputs`.

use std::path::Path;

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, EventKind, events, replace_once, save_in_place,
    save_via_rename,
};
use kiln_e2e::misbehaving::{MISBEHAVE_CALL, MisbehavingWorkspace, REVISION_LINE, SOURCE};

/// The `misbehave` kernel's output when it does not misbehave.
const MISBEHAVE_OUTPUT: &str = "let out = Tensor::from_f32(&[1], vec![0.0]);";

/// A build script that generates code from a source: the revision
/// `src/lib.rs` declares, as `GENERATED_REVISION`.
const BUILD_RS: &str = r#"use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src");
    let source = std::fs::read_to_string("src/lib.rs").expect("read src/lib.rs");
    let revision = source
        .lines()
        .find_map(|l| l.trim().strip_prefix("pub const REVISION: i64 = "))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("a `pub const REVISION: i64 = N;` line");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(
        Path::new(&out_dir).join("generated.rs"),
        format!("pub const GENERATED_REVISION: i64 = {revision};\n"),
    )
    .expect("write generated.rs");
}
"#;

/// The served module's package.
const MODULE: &str = "kiln-test-misbehaving";

/// The data file the module reads with `include_str!`.
const DATA: &str = "kernels/misbehaving/data/offset.txt";

fn start(ws: &MisbehavingWorkspace) -> DevSession {
    ws.start_session(&[])
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The replay event of the `misbehave` call of `version` (from the last
/// match on).
fn misbehave_replay(session: &mut DevSession, version: u64) -> Event {
    let replay = session.wait_for(
        &format!("the replay of v{version}'s misbehave call"),
        BUILD_DEADLINE,
        |e| e.is_replay_of("misbehave") && e.version() == Some(version),
    );
    assert_eq!(
        replay.fields::<events::Replay>().call,
        MISBEHAVE_CALL,
        "{}",
        replay.line
    );
    replay
}

/// The version served at start-up, and the replay event of its
/// `misbehave` call (both logged before the session serves).
fn first_misbehave(session: &DevSession) -> (u64, Event) {
    let replay = session
        .events
        .iter()
        .find(|e| e.is_replay_of("misbehave"))
        .cloned()
        .unwrap_or_else(|| session.fail("no first replay of misbehave"));
    let version = replay
        .version()
        .unwrap_or_else(|| session.fail("a replay event without a version"));
    (version, replay)
}

fn all_json(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| e.line.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module's `misbehave` returns `GENERATED_REVISION - REVISION`: 0.0
/// (what the workload expects) exactly when the generated code is that of
/// the source compiled. Editing `REVISION` must re-run the build script,
/// so the build goes through cargo, and the new version passes.
#[test]
fn an_edit_of_a_crate_with_a_build_script_goes_through_cargo_and_regenerates() {
    let ws = MisbehavingWorkspace::new();
    let source_path = ws.root().join(SOURCE);
    write(&ws.root().join("kernels/misbehaving/build.rs"), BUILD_RS);
    let source = ws.copy.read(SOURCE);
    let source = replace_once(
        &source,
        REVISION_LINE,
        &format!("{REVISION_LINE}\ninclude!(concat!(env!(\"OUT_DIR\"), \"/generated.rs\"));"),
    );
    let source = replace_once(
        &source,
        MISBEHAVE_OUTPUT,
        "let out = Tensor::from_f32(&[1], vec![(GENERATED_REVISION - REVISION) as f32]);",
    );
    write(&source_path, &source);

    // The start-up build is a cargo build: it ran the build script and
    // recorded the crate's rustc command.
    let mut session = start(&ws);
    let (v1, first) = first_misbehave(&session);
    assert!(first.fields::<events::Replay>().pass, "{}", first.line);

    // An edit of the source the build script reads.
    let mark = session.mark();
    save_in_place(
        &source_path,
        &replace_once(&source, REVISION_LINE, "pub const REVISION: i64 = 2;"),
    );
    let path = session.wait_for("the build path of the edit", BUILD_DEADLINE, |e| {
        e.is(EventKind::BuildPath) && e.module() == Some(MODULE)
    });
    let build_path = path.fields::<events::BuildPath>();
    assert_eq!(
        build_path.via, "cargo",
        "a crate with a build script is built by cargo: {}",
        path.line
    );
    let why = build_path.why.as_deref().unwrap_or_default();
    assert!(
        why.contains("build script"),
        "the reason names the build script: {}",
        path.line
    );
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(
        swapped.fields::<events::Swapped>().from_version,
        v1,
        "{}",
        swapped.line
    );
    let v2 = swapped.version().expect("swapped.version");
    let replay = misbehave_replay(&mut session, v2);
    assert!(
        replay.fields::<events::Replay>().pass,
        "the generated code is fresh (GENERATED_REVISION == REVISION): {}",
        replay.line
    );
    let since = session.since(mark);
    assert!(
        !since
            .iter()
            .any(|e| e.is_any(&[EventKind::ReplayFailed, EventKind::RolledBack])),
        "the new version neither failed nor was rolled back:\n{}",
        all_json(since)
    );
    let builds = since
        .iter()
        .filter(|e| e.is(EventKind::BuildPath) && e.module() == Some(MODULE))
        .count();
    assert_eq!(builds, 1, "one build:\n{}", all_json(since));
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
}

/// The module's `misbehave` returns the number in `data/offset.txt`
/// (`include_str!`); the workload expects 0.0. Saving the file as an
/// editor does builds a new version that serves the new number (and fails,
/// and is rolled back); saving a zero again builds one that passes.
#[test]
fn saving_a_data_file_the_module_includes_builds_a_version_that_serves_it() {
    let ws = MisbehavingWorkspace::new();
    let data = ws.root().join(DATA);
    write(&data, "0\n");
    let source = replace_once(
        &ws.copy.read(SOURCE),
        MISBEHAVE_OUTPUT,
        "let offset: f32 = include_str!(\"../data/offset.txt\").trim().parse().unwrap();\n\
         let out = Tensor::from_f32(&[1], vec![offset]);",
    );
    write(&ws.root().join(SOURCE), &source);

    let mut session = start(&ws);
    let (v1, first) = first_misbehave(&session);
    assert!(first.fields::<events::Replay>().pass, "{}", first.line);

    // Only the data file changes: a build, and the new data served.
    let mark = session.mark();
    save_via_rename(&data, "1\n");
    let change = session.wait_event(EventKind::Change, BUILD_DEADLINE);
    let fields = change.fields::<events::Change>();
    assert!(fields.paths.contains("offset.txt"), "{}", change.line);
    assert!(fields.build, "{}", change.line);
    session.wait_for("the build of the data change", BUILD_DEADLINE, |e| {
        e.is(EventKind::BuildStarted) && e.module() == Some(MODULE)
    });
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(
        swapped.fields::<events::Swapped>().from_version,
        v1,
        "{}",
        swapped.line
    );
    let v2 = swapped.version().expect("swapped.version");
    let replay = misbehave_replay(&mut session, v2);
    let fields = replay.fields::<events::Replay>();
    assert!(
        !fields.pass,
        "v{v2} serves the new data (1.0, not the expected 0.0): {}",
        replay.line
    );
    assert_eq!(
        fields.max_abs_err,
        Some(1.0),
        "the output is 1.0: {}",
        replay.line
    );
    let rolled = session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    let v3 = rolled.version().expect("rolled_back.version");
    assert!(
        rolled.message().contains(&format!("code of v{v1}")),
        "{}",
        rolled.line
    );
    for (name, n) in [
        (EventKind::Change, 1),
        (EventKind::BuildStarted, 1),
        (EventKind::Swapped, 1),
    ] {
        let of_module = session
            .named_since(mark, name)
            .into_iter()
            .filter(|e| e.module() == Some(MODULE))
            .count();
        assert_eq!(
            of_module,
            n,
            "one save, one `{name}`:\n{}",
            all_json(session.since(mark))
        );
    }

    // A zero again (written "0.0", so that the build is not byte for byte
    // v1's, which kiln would rightly not swap in): a new version that passes.
    let mark = session.mark();
    save_via_rename(&data, "0.0\n");
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(
        swapped.fields::<events::Swapped>().from_version,
        v3,
        "{}",
        swapped.line
    );
    let v4 = swapped.version().expect("swapped.version");
    let replay = misbehave_replay(&mut session, v4);
    assert!(replay.fields::<events::Replay>().pass, "{}", replay.line);
    let since = session.since(mark);
    assert!(
        !since
            .iter()
            .any(|e| e.is_any(&[EventKind::ReplayFailed, EventKind::RolledBack])),
        "{}",
        all_json(since)
    );
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
}

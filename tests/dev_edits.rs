//! `kiln dev` end to end: saving a kernel source the way editors do gives
//! exactly one build and one swap; a wrong kernel fails replay and is rolled
//! back (or kept with `--on-fail keep`); a syntax error keeps the old version
//! serving; a burst of saves during a build gives at most two builds and
//! ends on the latest source; a save made during the first replay is built
//! once it is done.
//!
//! Real binary, real cargo, real inotify; each test works in its own copy of
//! the workspace. Run with `cargo test --release -p kiln-e2e --test dev_edits`.

use std::time::Duration;

use kiln::workload::Workload;
use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, EventKind, QUIET, WorkspaceCopy, events, first_version,
    save_in_place, save_via_rename, with_chunk, with_wrong_saxpy,
};
use shared_state::Call;

const QUIET_MAX: Duration = Duration::from_secs(240);

fn count(events: &[Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.is(kind)).count()
}

fn assert_counts(events: &[Event], expected: &[(EventKind, usize)]) {
    for &(name, n) in expected {
        assert_eq!(
            count(events, name),
            n,
            "expected exactly {n} `{name}` event(s) after the save; got:\n{}",
            events
                .iter()
                .map(|e| e.line.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// How the builds among `events` were done (`build_path` events' `via`:
/// `rustc direct` or `cargo`).
fn build_paths(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.is(EventKind::BuildPath))
        .map(|e| e.fields::<events::BuildPath>().via.clone())
        .collect()
}

/// Waits for a replay of `version` and returns whether its saxpy call passed.
fn saxpy_passed(session: &mut DevSession, version: u64) -> bool {
    let replay = session.wait_replay(BUILD_DEADLINE);
    let saxpy: Vec<&Event> = replay.iter().filter(|e| e.is_replay_of("saxpy")).collect();
    assert_eq!(saxpy.len(), 1, "one saxpy call per replay: {replay:?}");
    assert_eq!(saxpy[0].version(), Some(version), "replay of {version}");
    saxpy[0].fields::<events::Replay>().pass
}

fn assert_all_pass(replay: &[Event]) {
    let bundled = kiln::workload::generate::workspace_bundled_workload(&kiln_e2e::workspace_root())
        .expect("the bundled workload")
        .call_count();
    assert_eq!(
        replay.len(),
        bundled,
        "one replay event per call of the bundled workload: {replay:?}"
    );
    for e in replay {
        assert!(e.fields::<events::Replay>().pass, "call failed: {}", e.line);
    }
}

#[test]
fn in_place_save_swaps_once_and_a_wrong_saxpy_is_rolled_back() {
    let copy = WorkspaceCopy::new();
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    let mut session = DevSession::start(&copy, &[]);
    let v1 = first_version(&session.events);

    // A deliberately wrong saxpy, saved in place.
    let mark = session.mark();
    save_in_place(&copy.kernels_rs(), &with_wrong_saxpy(&pristine));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let v2 = swapped.version().expect("swapped.version");
    assert_eq!(swapped.fields::<events::Swapped>().from_version, v1);
    assert!(v2 > v1);
    assert!(
        !saxpy_passed(&mut session, v2),
        "the new saxpy (a*x+y+1) must fail replay"
    );
    // An edit of the module crate's own source skips cargo: the recorded
    // rustc command ran, and it built the new code (the replay failed).
    assert_eq!(
        build_paths(session.since(mark)),
        ["rustc direct"],
        "the edit is built by rustc directly"
    );
    let failed = session.wait_event(EventKind::ReplayFailed, BUILD_DEADLINE);
    assert_eq!(failed.version(), Some(v2));
    let rolled = session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    let v3 = rolled.version().expect("rolled_back.version");
    assert!(v3 > v2, "the rollback loads a fresh copy of v{v1}'s code");
    assert!(
        rolled.message().contains(&format!("code of v{v1}")),
        "{}",
        rolled.line
    );
    session.wait_quiet(QUIET, QUIET_MAX);
    assert_counts(
        session.since(mark),
        &[
            (EventKind::Change, 1),
            (EventKind::BuildStarted, 1),
            (EventKind::BuildFinished, 1),
            (EventKind::Swapped, 1),
            (EventKind::ReplayFailed, 1),
            (EventKind::RolledBack, 1),
        ],
    );

    // The rolled-back version serves, with the state: the next swap comes
    // from it, carries the resident buffers, and its replay passes again.
    let mark = session.mark();
    save_in_place(&copy.kernels_rs(), &with_chunk(&pristine, 8192));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(
        swapped.fields::<events::Swapped>().from_version,
        v3,
        "{}",
        swapped.line
    );
    let v4 = swapped.version().expect("version");
    let replay = session.wait_replay(BUILD_DEADLINE);
    assert!(replay.iter().all(|e| e.version() == Some(v4)));
    assert_all_pass(&replay);
    session.wait_quiet(QUIET, QUIET_MAX);
    assert_counts(
        session.since(mark),
        &[
            (EventKind::BuildStarted, 1),
            (EventKind::Swapped, 1),
            (EventKind::ReplayFailed, 0),
            (EventKind::RolledBack, 0),
        ],
    );
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
}

#[test]
fn rename_save_swaps_once_and_keep_keeps_the_wrong_version() {
    let copy = WorkspaceCopy::new();
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    let mut session = DevSession::start(&copy, &["--on-fail", "keep"]);
    let v1 = first_version(&session.events);

    let mark = session.mark();
    save_via_rename(&copy.kernels_rs(), &with_wrong_saxpy(&pristine));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(swapped.fields::<events::Swapped>().from_version, v1);
    let v2 = swapped.version().expect("version");
    assert!(!saxpy_passed(&mut session, v2), "a*x+y+1 must fail replay");
    let failed = session.wait_event(EventKind::ReplayFailed, BUILD_DEADLINE);
    assert!(
        failed.message().contains("--on-fail keep"),
        "{}",
        failed.line
    );
    session.wait_quiet(QUIET, QUIET_MAX);
    assert_counts(
        session.since(mark),
        &[
            (EventKind::Change, 1),
            (EventKind::BuildStarted, 1),
            (EventKind::BuildFinished, 1),
            (EventKind::Swapped, 1),
            (EventKind::RolledBack, 0),
            (EventKind::Unloaded, 1), // v1 only
        ],
    );
    let unloaded = session.named_since(mark, EventKind::Unloaded);
    assert_eq!(unloaded[0].version(), Some(v1));

    // The wrong version still serves: the next swap comes from it.
    save_via_rename(
        &copy.kernels_rs(),
        &with_chunk(&with_wrong_saxpy(&pristine), 8192),
    );
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(
        swapped.fields::<events::Swapped>().from_version,
        v2,
        "{}",
        swapped.line
    );
    let v3 = swapped.version().expect("version");
    assert!(!saxpy_passed(&mut session, v3));
    drop(session.stop());
}

#[test]
fn syntax_error_keeps_the_old_version_serving_and_the_fix_swaps_in() {
    let copy = WorkspaceCopy::new();
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    let mut session = DevSession::start(&copy, &[]);
    let v1 = first_version(&session.events);

    let mark = session.mark();
    let broken = pristine.replacen("*o = a * xi + yi)", "*o = a * xi + yi +)", 1);
    assert_ne!(broken, pristine);
    save_in_place(&copy.kernels_rs(), &broken);
    let failed = session.wait_event(EventKind::BuildFailed, BUILD_DEADLINE);
    let diagnostics = failed
        .fields::<events::BuildFailed>()
        .diagnostics
        .as_deref()
        .unwrap_or_default();
    // Built by rustc directly, reported as cargo reports it: the file, the
    // line and the column of the stray `)`.
    let (line, col) = broken
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("yi +)").map(|c| (i + 1, c + "yi +".len() + 1)))
        .expect("the broken line");
    assert!(
        diagnostics.contains(&format!("kernels/cpu/src/kernels.rs:{line}:{col}")),
        "diagnostics give file:line:col ({line}:{col}): {diagnostics}"
    );
    assert_eq!(build_paths(session.since(mark)), ["rustc direct"]);
    assert!(
        diagnostics.contains("expected"),
        "diagnostics carry the compiler's message: {diagnostics}"
    );
    assert!(
        diagnostics.contains("kernels.rs"),
        "diagnostics name the file: {diagnostics}"
    );
    assert!(
        !diagnostics.contains('\x1b'),
        "no colour codes in JSON: {diagnostics:?}"
    );
    assert_eq!(failed.version(), Some(v1), "v{v1} keeps serving");
    session.wait_quiet(QUIET, QUIET_MAX);
    assert_counts(
        session.since(mark),
        &[
            (EventKind::BuildStarted, 1),
            (EventKind::BuildFailed, 1),
            (EventKind::Swapped, 0),
            (EventKind::Staged, 0),
            (EventKind::Retired, 0),
            (EventKind::Unloaded, 0),
        ],
    );

    // The fix swaps in, from the last good version.
    let mark = session.mark();
    save_in_place(&copy.kernels_rs(), &with_chunk(&pristine, 2048));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(
        swapped.fields::<events::Swapped>().from_version,
        v1,
        "{}",
        swapped.line
    );
    let replay = session.wait_replay(BUILD_DEADLINE);
    assert_all_pass(&replay);
    session.wait_quiet(QUIET, QUIET_MAX);
    assert_counts(
        session.since(mark),
        &[
            (EventKind::BuildStarted, 1),
            (EventKind::BuildFailed, 0),
            (EventKind::Swapped, 1),
        ],
    );
    assert_eq!(build_paths(session.since(mark)), ["rustc direct"]);

    // A manifest edit is not the crate's own source: cargo builds it.
    let mark = session.mark();
    let manifest = copy.root().join("kernels/cpu/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("the module's manifest");
    save_in_place(&manifest, &format!("{text}# edited by a test\n"));
    session.wait_event(EventKind::BuildFinished, BUILD_DEADLINE);
    assert_eq!(build_paths(session.since(mark)), ["cargo"]);
    drop(session.stop());
}

#[test]
fn five_quick_saves_during_a_build_give_at_most_two_builds_and_end_on_the_last() {
    let copy = WorkspaceCopy::new();
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    let mut session = DevSession::start(&copy, &["--on-fail", "keep"]);
    let mark = session.mark();
    let path = copy.kernels_rs();

    save_in_place(&path, &with_chunk(&pristine, 1024));
    session.wait_event(EventKind::BuildStarted, BUILD_DEADLINE);
    // Four more saves while that build runs; the last one breaks saxpy.
    save_in_place(&path, &with_chunk(&pristine, 2048));
    save_via_rename(&path, &with_chunk(&pristine, 8192));
    save_in_place(&path, &with_chunk(&pristine, 16384));
    save_in_place(&path, &with_chunk(&with_wrong_saxpy(&pristine), 16384));

    // Wait for the wrong saxpy to be served (only the fifth save has it).
    let last = session.wait_for("a failing saxpy replay", BUILD_DEADLINE * 2, |e| {
        e.get::<events::Replay>()
            .is_some_and(|r| r.kernel == "saxpy" && !r.pass)
    });
    session.wait_quiet(QUIET, QUIET_MAX);
    let events = session.since(mark);
    let builds = count(events, EventKind::BuildStarted);
    assert!(
        (1..=2).contains(&builds),
        "five quick saves gave {builds} builds"
    );
    let swaps: Vec<&Event> = events.iter().filter(|e| e.is(EventKind::Swapped)).collect();
    eprintln!(
        "five quick saves: {} change set(s), {builds} build(s), {} swap(s)",
        count(events, EventKind::Change),
        swaps.len()
    );
    assert!(!swaps.is_empty() && swaps.len() <= builds);
    let final_version = swaps.last().and_then(|e| e.version());
    assert_eq!(
        last.version(),
        final_version,
        "the failing replay is of the last swapped version"
    );
    // Nothing after it: the session ends on the fifth save's source.
    let last_replay = events
        .iter()
        .rev()
        .find(|e| e.is_replay_of("saxpy"))
        .expect("a saxpy replay");
    assert!(!last_replay.fields::<events::Replay>().pass);
    assert_eq!(last_replay.version(), final_version);
    drop(session.stop());
}

/// A save made while the session's first replay runs (the watcher starts
/// before the first checkpoint) is built and swapped in once that replay
/// is done. Before, the sources were first hashed after the replay, so
/// such a save was taken as the starting source and never built: the
/// session served the old code while the file said otherwise.
#[test]
fn a_save_during_the_first_replay_is_built_after_it() {
    let copy = WorkspaceCopy::new();
    // A first replay of seconds: 24 saxpy calls over 4M elements, each
    // timed and checked against the reference module.
    let n = 4 << 20;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    let mut workload = Workload::new("slow-first-replay");
    workload.load("x", shared_state::Tensor::from_f32(&[n], x.clone()));
    workload.load("y", shared_state::Tensor::from_f32(&[n], x));
    for i in 0..24 {
        workload.call(
            Call::new("saxpy")
                .resident("x")
                .resident("y")
                .param("a", shared_state::Scalar::F64(1.0 + i as f64)),
            None,
        );
    }
    let path = copy.root().join("target/slow-first-replay.kiln");
    std::fs::create_dir_all(path.parent().unwrap()).expect("target dir");
    kiln::workload::write(&workload, &path).expect("write the workload");
    let mut session = DevSession::spawn(
        &copy,
        &["--no-tune", "--workload", path.to_str().expect("utf-8")],
    );
    // The first checkpoint is taken just before the first replay.
    session.wait_event(EventKind::Checkpoint, BUILD_DEADLINE);
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    save_in_place(&copy.kernels_rs(), &with_chunk(&pristine, 8192));
    let saved = session.mark();
    session.wait_for("the watcher to start", BUILD_DEADLINE, |e| {
        kiln_dev_driver::is_watching(e)
    });
    let replays_before_watching = session
        .since(saved)
        .iter()
        .filter(|e| e.is(EventKind::Replay) && e.version() == Some(1))
        .count();
    assert!(
        replays_before_watching > 0,
        "the first replay was over before the save: no test (make it longer)"
    );
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(swapped.version(), Some(2), "{}", swapped.line);
    drop(session.stop());
}

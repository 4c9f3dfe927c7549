//! A version is what was staged: a restart after a hang, a rollback after a
//! failed replay and a restart of a second served backend all serve the
//! last good version's own library, declarations and shaders, never the
//! workspace's files of the moment (which hold the bad edit). End to end
//! through the real `kiln dev` on lavapipe, with a one-saxpy workload
//! recorded by `kiln record` (the bundled workload takes a minute there).
//!
//! - a spinning WGSL shader is reported as hung, the restarted worker
//!   serves the last good shader (read back from its staged files) with the
//!   checkpoint's state, and the next good save swaps in, is judged and
//!   serves;
//! - a wrong shader is rolled back and stays rolled back: the rolled-back
//!   version's files hold the good shader and a replay of it passes;
//! - a declaration edit that makes the GPU pass fail (no workgroups) is
//!   rolled back to the version with the old declaration, and stays so;
//! - an *old* version that hangs while it is timed against the new one
//!   (the interleaved replay) costs the comparison, not the new version:
//!   the new one starts again in a new worker, is judged on its own and
//!   serves (the misbehaving test module, on the CPU);
//! - under `--backends cpu,vulkan` a hang of the second backend restarts
//!   that backend at once on its last good version (no save needed), with
//!   its checkpoint's state;
//! - under `--backends cpu,vulkan` a second backend's worker killed by
//!   SIGABRT while idle is noticed and restarted at once on its last good
//!   version with its checkpoint's state, and the cpu worker serves on.
//!
//! Restart and rollback stage the last good version through one function
//! for every backend and lane (`LastGood::stage_again`); the CPU module's
//! crash, hang and rollback paths are tested end to end in `dev_crash.rs`
//! and `dev_edits.rs`.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_staged_versions`.

use std::path::PathBuf;
use std::time::Duration;

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, EventKind, WorkspaceCopy, events, kiln_ctl,
    record_small_saxpy, replace_once, save_in_place, save_via_rename, serving_state_hash,
};
use kiln_e2e::misbehaving::MisbehavingWorkspace;

const SAXPY_WGSL: &str = "kernels/vulkan/shaders/saxpy.wgsl";
const SAXPY_TOML: &str = "kernels/declarations/saxpy.toml";
const SAXPY_LOOP: &str = "    for (var i = gid.x; i < n; i += stride) {";
/// The spinning loop: never ends for n > 0.
const SPIN: &str = "    loop { out[gid.x % n] = out[gid.x % n] + 1.0; if (n == 0u) { break; } }";
const SAXPY_BODY: &str = "out[i] = a * x[i] + y[i];";
const WRONG_BODY: &str = "out[i] = a * x[i] + y[i] + 1.0;";
const WORKGROUPS: &str = "workgroups = [\"min(ceil_div(n, 256), 65535)\"]";
const NO_WORKGROUPS: &str = "workgroups = [\"0\"]";
const QUIET: Duration = Duration::from_millis(1500);

fn module_of(e: &Event) -> &str {
    e.module().unwrap_or_default()
}

/// The staged files (`.files.json`) of `module`'s version `version` in the
/// session's staging directory, as text.
fn staged_files(session: &DevSession, module: &str, version: u64) -> String {
    let prefix = format!("{module}-v{version}-");
    let dir = session.stage_dir();
    let path: PathBuf = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".files.json"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no staged files of {module}-v{version} in {}",
                dir.display()
            )
        });
    std::fs::read_to_string(&path).expect("read staged files")
}

/// The replay event of saxpy for `version`, waiting for it.
fn saxpy_replay_of(session: &mut DevSession, version: u64) -> Event {
    session.wait_for(
        &format!("the saxpy replay of v{version}"),
        BUILD_DEADLINE,
        |e| e.is_replay_of("saxpy") && e.version() == Some(version),
    )
}

/// `kiln ctl replay` on the serving version: its saxpy call passes.
fn replay_passes(copy: &WorkspaceCopy, session: &mut DevSession, version: u64) {
    let (ok, out) = kiln_ctl(copy, &["replay"]);
    assert!(ok, "kiln ctl replay: {out}");
    let replay = saxpy_replay_of(session, version);
    assert!(replay.fields::<events::Replay>().pass, "{}", replay.line);
}

#[test]
fn a_hung_shader_restarts_on_the_last_good_shader_and_bad_edits_stay_rolled_back() {
    let copy = WorkspaceCopy::new();
    let workload = record_small_saxpy(&copy);
    let mut session = DevSession::start(
        &copy,
        &[
            "--backend",
            "vulkan",
            "--call-timeout",
            "3",
            "--no-tune",
            "--workload",
            &workload,
        ],
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    let shader = copy.root().join(SAXPY_WGSL);
    let pristine = copy.read(SAXPY_WGSL);

    // 1. The spinning shader: hung, and the restart serves v1's shader.
    let mark = session.mark();
    save_via_rename(
        &shader,
        &replace_once(&pristine, SAXPY_LOOP, &format!("{SPIN}\n{SAXPY_LOOP}")),
    );
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let spinning = swapped.version().expect("version");
    let hung = session.wait_event(EventKind::Hung, BUILD_DEADLINE);
    assert_eq!(hung.version(), Some(spinning), "{}", hung.line);
    let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
    assert_eq!(
        restarted.fields::<events::Restarted>().state_matches,
        Some(true),
        "the restarted engine's state is the checkpoint's: {}",
        restarted.line
    );
    let serving = restarted.version().expect("version");
    let files = staged_files(&session, "kernel-vulkan", serving);
    assert!(
        !files.contains("out[gid.x % n] = out[gid.x % n] + 1.0"),
        "the restarted version carries the spinning shader: {files}"
    );
    assert!(files.contains(SAXPY_BODY), "{files}");
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    assert_eq!(
        session.named_since(mark, EventKind::Hung).len(),
        1,
        "the restarted version hung too"
    );
    replay_passes(&copy, &mut session, serving);

    // 2. A good shader (the restarted version already serves the pristine
    // one, which would be "identical, not swapped"): swapped in, judged,
    // serving.
    let mark = session.mark();
    save_in_place(&shader, &format!("{pristine}// saved again\n"));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let good = swapped.version().expect("version");
    let replay = saxpy_replay_of(&mut session, good);
    assert!(replay.fields::<events::Replay>().pass, "{}", replay.line);
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    for name in [
        EventKind::Hung,
        EventKind::Crashed,
        EventKind::RolledBack,
        EventKind::Restarted,
    ] {
        assert!(
            session.named_since(mark, name).is_empty(),
            "{name} after the good save: {:?}",
            session.named_since(mark, name)
        );
    }
    let (ok, status) = kiln_ctl(&copy, &["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains(&format!("kernel-vulkan-v{good}")),
        "v{good} serves: {status}"
    );

    // 3. A wrong shader: rolled back, and it stays rolled back.
    save_via_rename(&shader, &replace_once(&pristine, SAXPY_BODY, WRONG_BODY));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let wrong = swapped.version().expect("version");
    let replay = saxpy_replay_of(&mut session, wrong);
    assert!(!replay.fields::<events::Replay>().pass, "{}", replay.line);
    let rolled = session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    let back = rolled.version().expect("version");
    let files = staged_files(&session, "kernel-vulkan", back);
    assert!(
        !files.contains(WRONG_BODY),
        "the rolled-back version carries the wrong shader"
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    replay_passes(&copy, &mut session, back);
    save_in_place(&shader, &pristine);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let fixed = swapped.version().expect("version");
    assert!(
        saxpy_replay_of(&mut session, fixed)
            .fields::<events::Replay>()
            .pass
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    // The history tells the versions apart by what they serve: the same
    // library with another shader is another source hash.
    let history =
        kiln::history::History::load(&copy.root().join("target/kiln/history/kernel-vulkan.json"))
            .expect("history");
    let hash_of = |v: u64| {
        history
            .versions
            .iter()
            .find(|r| r.version == v)
            .map(|r| r.source_hash.clone())
            .unwrap_or_else(|| panic!("v{v} not in the history: {history:?}"))
    };
    assert_ne!(
        hash_of(good),
        hash_of(wrong),
        "a shader edit changes the source hash"
    );
    assert_ne!(hash_of(wrong), hash_of(fixed));

    // 4. A declaration edit that makes the GPU pass fail: no workgroups.
    let declaration = copy.root().join(SAXPY_TOML);
    let toml = copy.read(SAXPY_TOML);
    save_in_place(
        &declaration,
        &replace_once(&toml, WORKGROUPS, NO_WORKGROUPS),
    );
    let rolled = session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    let back = rolled.version().expect("version");
    let files = staged_files(&session, "kernel-vulkan", back);
    assert!(
        !files.contains("workgroups = [\\\"0\\\"]"),
        "the rolled-back version carries the edited declaration"
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    replay_passes(&copy, &mut session, back);
    let _ = session.stop();
}

#[test]
fn a_hung_second_backend_restarts_at_once_on_its_last_good_version() {
    let copy = WorkspaceCopy::new();
    let workload = record_small_saxpy(&copy);
    let mut session = DevSession::start(
        &copy,
        &[
            "--backends",
            "cpu,vulkan",
            "--call-timeout",
            "3",
            "--no-tune",
            "--workload",
            &workload,
        ],
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    let vulkan_checkpoint = session
        .named_since(0, EventKind::Checkpoint)
        .into_iter()
        .rfind(|e| module_of(e) == "kernel-vulkan")
        .map(|e| e.fields::<events::Checkpoint>().state_hash.clone());
    let shader = copy.root().join(SAXPY_WGSL);
    let pristine = copy.read(SAXPY_WGSL);
    let mark = session.mark();
    save_via_rename(
        &shader,
        &replace_once(&pristine, SAXPY_LOOP, &format!("{SPIN}\n{SAXPY_LOOP}")),
    );
    let hung = session.wait_event(EventKind::Hung, BUILD_DEADLINE);
    assert_eq!(module_of(&hung), "kernel-vulkan", "{}", hung.line);
    // Restarted at once: no save in between.
    let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
    assert_eq!(module_of(&restarted), "kernel-vulkan", "{}", restarted.line);
    let fields = restarted.fields::<events::Restarted>();
    assert_eq!(fields.state_matches, Some(true), "{}", restarted.line);
    if let Some(hash) = vulkan_checkpoint {
        assert_eq!(fields.checkpoint_hash, Some(hash));
    }
    let serving = restarted.version().expect("version");
    let files = staged_files(&session, "kernel-vulkan", serving);
    assert!(!files.contains("out[gid.x % n] = out[gid.x % n] + 1.0"));
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    assert_eq!(session.named_since(mark, EventKind::Hung).len(), 1);
    // The cpu backend went on serving its version in its own worker.
    assert!(
        session
            .named_since(mark, EventKind::Restarted)
            .iter()
            .all(|e| module_of(e) == "kernel-vulkan")
    );
    // The table names the restarted version as not replayed (it did not
    // fail: the hung one did), and nothing was cross-compared with it.
    let replayed = session.wait_event(EventKind::BackendsReplayed, BUILD_DEADLINE);
    let table = &replayed.fields::<events::BackendsReplayed>().table;
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(&format!("kernel-vulkan-v{serving} not replayed"))),
        "{table}"
    );
    assert!(
        session
            .named_since(mark, EventKind::CrossCompared)
            .is_empty()
            && session
                .named_since(mark, EventKind::CrossCompareFailed)
                .is_empty()
    );
    // A good shader swaps in on vulkan and passes (the pristine one is what
    // the restarted version serves already: identical, not swapped).
    save_in_place(&shader, &format!("{pristine}// saved again\n"));
    let swapped = session.wait_for("vulkan swapped", BUILD_DEADLINE, |e| {
        e.is(EventKind::Swapped) && module_of(e) == "kernel-vulkan"
    });
    let good = swapped.version().expect("version");
    let replay = session.wait_for("the vulkan saxpy replay", BUILD_DEADLINE, |e| {
        e.is_replay_of("saxpy") && e.version() == Some(good) && module_of(e) == "kernel-vulkan"
    });
    assert!(replay.fields::<events::Replay>().pass, "{}", replay.line);
    session.wait_quiet(QUIET, BUILD_DEADLINE);

    // A wrong shader is rolled back: the backends are not cross-compared
    // with the rolled-back version's outputs (the version serving has not
    // replayed), and that is no error.
    let mark = session.mark();
    save_in_place(&shader, &replace_once(&pristine, SAXPY_BODY, WRONG_BODY));
    session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    let replayed = session.wait_event(EventKind::BackendsReplayed, BUILD_DEADLINE);
    let line = replayed.message();
    assert!(line.contains("kernel-vulkan-v"), "{line}");
    for kind in [
        EventKind::CrossCompared,
        EventKind::CrossCompareFailed,
        EventKind::Refused,
    ] {
        let seen = session.named_since(mark, kind);
        assert!(seen.is_empty(), "{seen:?}");
    }
    assert!(
        session.since(mark).iter().any(|e| e
            .message()
            .starts_with("not cross-compared this time: kernel-vulkan-v")),
        "the log says why the backends were not compared"
    );
    let _ = session.stop();
}

/// The pid of `module`'s worker serving now: its last `worker_started` or
/// `restarted` event.
fn worker_of(session: &DevSession, module: &str) -> u32 {
    session
        .named_since(0, EventKind::WorkerStarted)
        .into_iter()
        .chain(session.named_since(0, EventKind::Restarted))
        .filter(|e| module_of(e) == module)
        .max_by_key(|e| e.at)
        .and_then(|e| e.u64("pid"))
        .unwrap_or_else(|| panic!("no worker of {module} with a pid")) as u32
}

#[test]
fn a_crashed_second_backend_restarts_at_once_on_its_last_good_version() {
    let copy = WorkspaceCopy::new();
    let workload = record_small_saxpy(&copy);
    let mut session = DevSession::start(
        &copy,
        &[
            "--backends",
            "cpu,vulkan",
            "--no-tune",
            "--workload",
            &workload,
        ],
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    let checkpoint = session
        .named_since(0, EventKind::Checkpoint)
        .into_iter()
        .rfind(|e| module_of(e) == "kernel-vulkan")
        .expect("a checkpoint of the vulkan lane");
    let checkpoint_hash = checkpoint
        .str("state_hash")
        .expect("state_hash")
        .to_string();
    let serving = checkpoint.version().expect("version");
    let vulkan_worker = worker_of(&session, "kernel-vulkan");
    let cpu_worker = worker_of(&session, "kernel-cpu");
    assert_ne!(vulkan_worker, cpu_worker, "one worker per lane");

    let mark = session.mark();
    // A SIGSEGV sent with kill(2), as a user trying the recovery by hand
    // sends it: not a fault, which Rust's stack-overflow handler in the
    // worker used to return from (`worker/sent_signals.rs` ends the worker).
    // SAFETY: kill(2) with a pid read from this session's own log; the
    // process is the vulkan lane's worker, a child of kiln dev.
    let killed = unsafe { libc::kill(vulkan_worker as libc::pid_t, libc::SIGSEGV) };
    assert_eq!(killed, 0, "kill -SEGV {vulkan_worker}");

    // Noticed and restarted with no save in between.
    let crashed = session.wait_event(EventKind::Crashed, BUILD_DEADLINE);
    assert_eq!(module_of(&crashed), "kernel-vulkan", "{}", crashed.line);
    assert_eq!(crashed.str("signal"), Some("SIGSEGV"), "{}", crashed.line);
    let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
    assert_eq!(module_of(&restarted), "kernel-vulkan", "{}", restarted.line);
    // The code of the version that served, as a new version number.
    assert_eq!(
        restarted.u64("from_version"),
        Some(serving),
        "{}",
        restarted.line
    );
    let restarted_version = restarted.version().expect("version");
    assert_eq!(
        restarted.bool("state_matches"),
        Some(true),
        "{}",
        restarted.line
    );
    assert_eq!(
        restarted.str("checkpoint_hash"),
        Some(checkpoint_hash.as_str()),
        "{}",
        restarted.line
    );
    let new_worker = worker_of(&session, "kernel-vulkan");
    assert_ne!(new_worker, vulkan_worker);
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    assert!(
        session
            .named_since(mark, EventKind::Swapped)
            .iter()
            .all(|e| module_of(e) != "kernel-vulkan"),
        "a restart, not a new version"
    );
    // The cpu lane was not touched: same worker, alive.
    assert_eq!(worker_of(&session, "kernel-cpu"), cpu_worker);
    assert!(std::path::Path::new(&format!("/proc/{cpu_worker}")).exists());
    assert!(
        session
            .named_since(mark, EventKind::Crashed)
            .iter()
            .all(|e| module_of(e) == "kernel-vulkan")
    );
    // The restarted worker serves: a replay of the vulkan lane passes.
    let (ok, out) = kiln_ctl(&copy, &["replay"]);
    assert!(ok, "kiln ctl replay: {out}");
    let replay = session.wait_for("the vulkan saxpy replay", BUILD_DEADLINE, |e| {
        e.is_replay_of("saxpy")
            && e.version() == Some(restarted_version)
            && module_of(e) == "kernel-vulkan"
    });
    assert_eq!(replay.bool("pass"), Some(true), "{}", replay.line);
    let _ = session.stop();
}

#[test]
fn an_old_version_that_hangs_while_timed_costs_the_comparison_not_the_new_version() {
    let ws = MisbehavingWorkspace::new();
    let flag = ws.root().join("old-version-hangs");
    // v1 serves well until the flag file exists, then its `misbehave` loops.
    ws.save(&format!("loop_if_file:{}", flag.display()), 1);
    let mut session = ws.start_session(&["--call-timeout", "3", "--no-tune"]);
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    let v1 = session
        .named_since(0, EventKind::Replay)
        .first()
        .and_then(|e| e.version())
        .expect("a first replay");

    std::fs::write(&flag, b"").expect("write the flag file");
    let mark = session.mark();
    ws.save("none", 2);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let v2 = swapped.version().expect("version");
    let hung = session.wait_event(EventKind::Hung, BUILD_DEADLINE);
    assert_eq!(
        hung.version(),
        Some(v1),
        "the old version is named: {}",
        hung.line
    );
    assert!(hung.fields::<events::WentDown>().old, "{}", hung.line);
    assert!(
        hung.message().contains("judged on its own"),
        "{}",
        hung.message()
    );
    let started = session.wait_event(EventKind::WorkerStarted, BUILD_DEADLINE);
    assert_eq!(started.version(), Some(v2), "{}", started.line);
    let misbehave = session.wait_for("the new version's misbehave call", BUILD_DEADLINE, |e| {
        e.is_replay_of("misbehave") && e.version() == Some(v2)
    });
    assert!(
        misbehave.fields::<events::Replay>().pass,
        "{}",
        misbehave.line
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    for name in [
        EventKind::RolledBack,
        EventKind::Restarted,
        EventKind::ReplayFailed,
    ] {
        assert!(
            session.named_since(mark, name).is_empty(),
            "{name}: {:?}",
            session.named_since(mark, name)
        );
    }
    assert_eq!(session.named_since(mark, EventKind::Hung).len(), 1);
    let (ok, status) = kiln_ctl(&ws.copy, &["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains(&format!("kiln-test-misbehaving-v{v2}")),
        "v{v2} serves: {status}"
    );
    let _ = session.stop();
}

/// Elements of the resident `x` of [`saxpy_on_a_resident`].
const X_LEN: usize = 65536;
/// saxpy's `x` binding, read-only as declared, and as the scribbling
/// shader declares it: written.
const X_READ: &str = "var<storage, read> x: array<f32>;";
const X_WRITTEN: &str = "var<storage, read_write> x: array<f32>;";
/// A body that writes over every element of `x` it reads, and is wrong.
const SCRIBBLE_BODY: &str = "out[i] = a * x[i] + y[i] + 1.0; x[i] = 90.0;";

/// A one-saxpy workload whose `x` is the engine's resident `x` (state),
/// with its expected output, in `copy`; returns its path.
fn saxpy_on_a_resident(copy: &WorkspaceCopy) -> String {
    use shared_state::{Call, Tensor};
    let x: Vec<f32> = (0..X_LEN)
        .map(|i| (i % 1000) as f32 / 1024.0 - 0.5)
        .collect();
    let y: Vec<f32> = (0..X_LEN).map(|i| (i % 7) as f32).collect();
    // a = 2 (the declared default): 2x is exact, so is the sum's rounding.
    let out: Vec<f32> = x.iter().zip(&y).map(|(x, y)| 2.0 * x + y).collect();
    let mut workload = kiln::workload::Workload::new("saxpy-on-a-resident");
    workload.load("x", Tensor::from_f32(&[X_LEN], x));
    workload.call(
        Call::new("saxpy")
            .resident("x")
            .arg(Tensor::from_f32(&[X_LEN], y)),
        Some(Tensor::from_f32(&[X_LEN], out)),
    );
    let path = copy.root().join("target/saxpy-on-a-resident.kiln");
    std::fs::create_dir_all(copy.root().join("target")).expect("target dir");
    kiln::workload::write(&workload, &path).expect("write the workload");
    path.display().to_string()
}

/// The Vulkan variant of `dev_crash.rs`'s scribbling version: a shader
/// that writes over the resident it was handed (its `x`) and computes a
/// wrong result. Once with `--on-fail keep`, to show its writes reach the
/// state it serves (the state hash changes: what a rollback must not carry
/// back); then with the default rollback, after which the serving state is
/// the good version's, bit for bit, and replays right.
#[test]
fn a_shader_that_writes_over_its_handed_over_state_and_fails_leaves_the_state_as_it_was() {
    let copy = WorkspaceCopy::new();
    let workload = saxpy_on_a_resident(&copy);
    let shader = copy.root().join(SAXPY_WGSL);
    let pristine = copy.read(SAXPY_WGSL);
    let scribbling = replace_once(
        &replace_once(&pristine, X_READ, X_WRITTEN),
        SAXPY_BODY,
        SCRIBBLE_BODY,
    );
    let args = |on_fail: &'static str| {
        [
            "--backend",
            "vulkan",
            "--no-tune",
            "--on-fail",
            on_fail,
            "--workload",
            &workload,
        ]
        .map(String::from)
    };
    let start = |on_fail: &'static str| {
        let args = args(on_fail);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut session = DevSession::start(&copy, &args);
        session.wait_quiet(QUIET, BUILD_DEADLINE);
        session
    };

    // 1. Kept: the failed version's state is not the good one's.
    let mut session = start("keep");
    let good = serving_state_hash(&copy);
    save_via_rename(&shader, &scribbling);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let failed = session.wait_event(EventKind::ReplayFailed, BUILD_DEADLINE);
    assert_eq!(failed.version(), swapped.version(), "{}", failed.line);
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    assert_ne!(
        serving_state_hash(&copy),
        good,
        "the scribbling shader's writes reach the state it serves"
    );
    drop(session.stop());

    // 2. Rolled back: the good version's state, bit for bit.
    save_via_rename(&shader, &pristine);
    let mut session = start("rollback");
    let before = serving_state_hash(&copy);
    save_via_rename(&shader, &scribbling);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let failed = session.wait_event(EventKind::ReplayFailed, BUILD_DEADLINE);
    assert_eq!(failed.version(), swapped.version(), "{}", failed.line);
    let rolled = session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    assert_eq!(
        serving_state_hash(&copy),
        before,
        "the rolled-back version's state is the good version's, bit for bit: {}",
        rolled.line
    );
    let serving = rolled.version().expect("version");
    let files = staged_files(&session, "kernel-vulkan", serving);
    assert!(!files.contains("x[i] = 90.0"), "{files}");
    replay_passes(&copy, &mut session, serving);
    drop(session.stop());
}

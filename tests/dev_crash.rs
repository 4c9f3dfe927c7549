//! `kiln dev` end to end: a kernel that writes through a bad pointer,
//! aborts, overflows its stack, loops forever or allocates past the
//! worker's limit costs that version, never the session or its state. For
//! each: the log names what happened and where (signal, version, call,
//! kernel, last words); a new worker serves the last good version's code;
//! its state is the checkpoint's, bit for bit; the next good save swaps in;
//! the crashed worker is gone. Ctrl-C during an infinite loop ends the
//! session within 2 s with the state file written from the last good point.
//!
//! Real binary, real cargo, real signals. The served module is the
//! misbehaving test module, moved under `kernels/` in a workspace copy.
//! Run with `cargo test --release -p kiln-e2e --test dev_crash`.

use std::time::Duration;

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, EventKind, QUIET, events, kiln_ctl, serving_state_hash,
};
use kiln_e2e::misbehaving::{self, MISBEHAVE_CALL, MisbehavingWorkspace, state_tensor};
use shared_state::{Call, Scalar};

const QUIET_MAX: Duration = Duration::from_secs(240);

fn start(ws: &MisbehavingWorkspace, extra: &[&str]) -> DevSession {
    ws.start_session(extra)
}

/// The last checkpoint event so far (the state of the last good point).
fn last_checkpoint(session: &DevSession) -> Event {
    session
        .events
        .iter()
        .rev()
        .find(|e| e.is(EventKind::Checkpoint))
        .cloned()
        .unwrap_or_else(|| session.fail("no checkpoint event"))
}

fn first_version(session: &DevSession) -> u64 {
    session
        .events
        .iter()
        .find(|e| e.is(EventKind::Replay))
        .and_then(|e| e.version())
        .unwrap_or_else(|| session.fail("no first replay"))
}

/// What one misbehaving version must produce.
struct Expect {
    mode: &'static str,
    /// `crashed` or `hung`.
    event: EventKind,
    signal: Option<&'static str>,
    /// Words the `crashed`/`hung` message must contain (last words too).
    says: &'static [&'static str],
    /// Save the good version while the bad one is still running (a hang):
    /// it must be built and tried after the recovery, not dropped.
    save_during: bool,
}

/// Serves a good version, saves one that does `expect.mode`, checks the
/// crash is named and recovered from with the checkpoint's state, then
/// saves a good version again and checks it swaps in; stops with
/// `--state` and checks the file holds the last good point.
fn crash_and_recover(expect: Expect, extra: &[&str]) {
    let ws = MisbehavingWorkspace::new();
    let state_file = ws.root().join("session.snapshot");
    let mut args = vec!["--state", state_file.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let mut session = start(&ws, &args);
    let v1 = first_version(&session);
    session.wait_quiet(QUIET, QUIET_MAX);
    let checkpoint = last_checkpoint(&session);
    let checkpoint_hash = checkpoint.fields::<events::Checkpoint>().state_hash.clone();
    let first_worker = session.worker_pid();

    // The misbehaving version: built, swapped in, and down in its replay.
    ws.save(expect.mode, 1);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let v2 = swapped.version().expect("version");
    assert_eq!(swapped.fields::<events::Swapped>().from_version, v1);
    if expect.save_during {
        session.wait_for("the module misbehaving", BUILD_DEADLINE, |e| {
            e.message() == format!("misbehaving: {}", expect.mode)
        });
        ws.save("none", 2);
    }
    let down = session.wait_event(expect.event, BUILD_DEADLINE);
    let message = down.message().to_string();
    assert_eq!(
        down.version(),
        Some(v2),
        "the new version is named: {}",
        down.line
    );
    let went_down = down.fields::<events::WentDown>();
    assert_eq!(went_down.call, Some(MISBEHAVE_CALL), "{}", down.line);
    assert_eq!(
        went_down.kernel.as_deref(),
        Some("misbehave"),
        "{}",
        down.line
    );
    assert_eq!(went_down.signal.as_deref(), expect.signal, "{}", down.line);
    assert!(
        message.contains(&format!("kiln-test-misbehaving-v{v2}")),
        "the message names the version: {message}"
    );
    assert!(
        message.contains(&format!("call {MISBEHAVE_CALL} (misbehave)")),
        "the message names the call: {message}"
    );
    for word in expect.says {
        assert!(message.contains(word), "{word:?} in: {message}");
    }
    // A new worker on the last good version's code, with the checkpoint.
    let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
    let v3 = restarted.version().expect("version");
    assert!(v3 > v2, "{}", restarted.line);
    let fields = restarted.fields::<events::Restarted>();
    assert_eq!(fields.from_version, v2);
    assert!(
        restarted.message().contains(&format!("the code of v{v1}")),
        "{}",
        restarted.line
    );
    assert_eq!(
        fields.checkpoint_hash.as_deref(),
        Some(checkpoint_hash.as_str()),
        "restarted from the last checkpoint taken: {}",
        restarted.line
    );
    assert_eq!(
        fields.state_hash.as_deref(),
        Some(checkpoint_hash.as_str()),
        "the restarted engine's state is the checkpoint's, bit for bit: {}",
        restarted.line
    );
    assert_eq!(fields.state_matches, Some(true));
    let second_worker = session.worker_pid();
    assert_ne!(second_worker, first_worker);
    assert!(
        !std::path::Path::new(&format!("/proc/{first_worker}")).exists(),
        "the crashed worker {first_worker} is gone (reaped, no zombie)"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{}", session.pid())).exists(),
        "kiln dev runs on"
    );

    // `kiln ctl status` names the version that went down, in its verdict
    // and in its last replay alike (not an earlier version's replay).
    if !expect.save_during {
        let status = kiln_e2e::dev_session::status(&ws.copy);
        let failed = format!("v{v2} FAILED");
        assert!(
            status["verdict"]
                .as_str()
                .is_some_and(|v| v.starts_with(&failed)),
            "{status}"
        );
        assert_eq!(status["last_replay"], failed.as_str(), "{status}");
    }

    // The next good save (or the one made during the hang) swaps in from
    // the restarted version and passes.
    if !expect.save_during {
        ws.save("none", 2);
    }
    let swapped = session.wait_for("the good version's swap", BUILD_DEADLINE, |e| {
        e.is(EventKind::Swapped)
    });
    assert_eq!(
        swapped.fields::<events::Swapped>().from_version,
        v3,
        "{}",
        swapped.line
    );
    let v4 = swapped.version().expect("version");
    let replayed = session.wait_for("the good version's replay", BUILD_DEADLINE, |e| {
        e.is_replay_of("misbehave") && e.version() == Some(v4)
    });
    assert!(
        replayed.fields::<events::Replay>().pass,
        "{}",
        replayed.line
    );
    session.wait_for("its checkpoint", BUILD_DEADLINE, |e| {
        e.is(EventKind::Checkpoint) && e.version() == Some(v4)
    });
    session.wait_quiet(QUIET, QUIET_MAX);
    assert!(
        !session
            .events
            .iter()
            .any(|e| e.get::<events::Replay>().is_some_and(|r| !r.pass)),
        "no replay failed"
    );

    // The history marks the crashed version.
    let history = kiln::history::History::load(
        &ws.root()
            .join("target/kiln/history/kiln-test-misbehaving.json"),
    )
    .expect("history");
    let record = history
        .versions
        .iter()
        .find(|v| v.version == v2)
        .expect("the crashed version is in the history");
    assert!(record.crashed && !record.passed, "{record:?}");

    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    let state = kiln::swap::snapshot_file::load(&state_file).expect("state file written");
    let mut state = state;
    let resident = state.take_tensor("resident/state").expect("the resident");
    assert!(
        resident.bit_eq(&state_tensor()),
        "the resident state survived bit for bit"
    );
    assert!(matches!(state.take_scalar("count"), Some(Scalar::I64(n)) if n > 0));
}

#[test]
fn a_write_through_a_bad_pointer_costs_one_version() {
    crash_and_recover(
        Expect {
            mode: "segv",
            event: EventKind::Crashed,
            signal: Some("SIGSEGV"),
            says: &["killed by SIGSEGV", "segmentation fault"],
            save_during: false,
        },
        &[],
    );
}

#[test]
fn an_abort_costs_one_version() {
    crash_and_recover(
        Expect {
            mode: "abort",
            event: EventKind::Crashed,
            signal: Some("SIGABRT"),
            says: &["killed by SIGABRT"],
            save_during: false,
        },
        &[],
    );
}

#[test]
fn a_stack_overflow_costs_one_version_and_its_last_words_are_kept() {
    crash_and_recover(
        Expect {
            mode: "stack_overflow",
            event: EventKind::Crashed,
            signal: Some("SIGABRT"),
            says: &["has overflowed its stack"],
            save_during: false,
        },
        &[],
    );
}

#[test]
fn an_allocation_past_the_worker_limit_fails_in_the_worker() {
    crash_and_recover(
        Expect {
            mode: "oom",
            event: EventKind::Crashed,
            signal: Some("SIGABRT"),
            says: &["memory allocation of 4294967296 bytes failed"],
            save_during: false,
        },
        &["--worker-memory", "1G"],
    );
}

#[test]
fn an_infinite_loop_is_killed_at_its_deadline_and_a_save_made_meanwhile_is_tried() {
    crash_and_recover(
        Expect {
            mode: "infinite_loop",
            event: EventKind::Hung,
            signal: None,
            says: &["past its 2.0 s deadline"],
            save_during: true,
        },
        &["--call-timeout", "2"],
    );
}

#[test]
fn ctrl_c_during_an_infinite_loop_ends_the_session_within_two_seconds() {
    let ws = MisbehavingWorkspace::new();
    let state_file = ws.root().join("session.snapshot");
    let mut session = start(
        &ws,
        &[
            "--state",
            state_file.to_str().expect("utf-8 path"),
            "--call-timeout",
            "600",
        ],
    );
    session.wait_quiet(QUIET, QUIET_MAX);
    let checkpoint_hash = last_checkpoint(&session)
        .fields::<events::Checkpoint>()
        .state_hash
        .clone();
    let worker = session.worker_pid();
    ws.save("infinite_loop", 1);
    // The module says so (through the worker's log) as it starts looping.
    session.wait_for("the module entering its loop", BUILD_DEADLINE, |e| {
        e.message() == "misbehaving: infinite_loop"
    });
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    assert!(
        stopped.exited_after < Duration::from_secs(2),
        "kiln dev took {:?} to end after Ctrl-C",
        stopped.exited_after
    );
    // The checkpoint's hash is of the state it holds (every section, caches
    // aside): the file read back holds that same state.
    let snapshot = kiln::swap::snapshot_file::load(&state_file).expect("state file written");
    assert_eq!(
        kiln::worker::checkpoint_writer::state_hash(&snapshot),
        checkpoint_hash,
        "the state file holds the last good point's checkpoint"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{worker}")).exists(),
        "the looping worker {worker} was killed"
    );
}

/// A second resident buffer, other values than `state`'s.
fn extra_tensor() -> shared_state::Tensor {
    shared_state::Tensor::from_f32(&[1024], (0..1024).map(|i| i as f32 * 0.25).collect())
}

/// The workload read again (a new resident and a call reading it) loads
/// that resident into the engine when the served version is re-checked;
/// the recheck passes, so that state is the last good point: a crash
/// afterwards restarts on a checkpoint that holds it, not on the one taken
/// before the workload changed.
#[test]
fn a_crash_after_a_workload_change_restarts_with_the_state_it_loaded() {
    let ws = MisbehavingWorkspace::new();
    let state_file = ws.root().join("session.snapshot");
    let mut session = start(&ws, &["--state", state_file.to_str().expect("utf-8 path")]);
    session.wait_quiet(QUIET, QUIET_MAX);
    let before = last_checkpoint(&session)
        .fields::<events::Checkpoint>()
        .state_hash
        .clone();

    // The workload file rewritten (as `kiln record` does): the same calls,
    // the `misbehave` call still at its index, and a new resident read back
    // by a call after it.
    let mut workload = misbehaving::workload();
    workload.load("extra", extra_tensor());
    workload.call(Call::new("read").resident("extra"), Some(extra_tensor()));
    kiln::workload::write(&workload, &ws.workload).expect("write the workload");

    let rechecked = session.wait_event(EventKind::Rechecked, BUILD_DEADLINE);
    assert!(
        rechecked.fields::<events::Rechecked>().pass,
        "{}",
        rechecked.line
    );
    let after = session
        .wait_event(EventKind::Checkpoint, BUILD_DEADLINE)
        .fields::<events::Checkpoint>()
        .state_hash
        .clone();
    assert_ne!(
        after, before,
        "the checkpoint after the recheck holds the new resident"
    );
    session.wait_quiet(QUIET, QUIET_MAX);

    ws.save("abort", 1);
    let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
    let fields = restarted.fields::<events::Restarted>();
    assert_eq!(
        fields.checkpoint_hash.as_deref(),
        Some(after.as_str()),
        "restarted from the checkpoint taken after the recheck: {}",
        restarted.line
    );
    assert_eq!(fields.state_matches, Some(true), "{}", restarted.line);
    session.wait_quiet(QUIET, QUIET_MAX);
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    let mut state = kiln::swap::snapshot_file::load(&state_file).expect("state file written");
    let extra = state
        .take_tensor("resident/extra")
        .expect("the new resident survived the crash");
    assert!(extra.bit_eq(&extra_tensor()), "bit for bit");
}

/// A worker killed between requests (the OOM killer, `kill -9`) is noticed
/// when its output ends, not at the next save: the lane restarts at once
/// on the serving version's code with the checkpoint's state. The same for
/// a SIGSEGV and a SIGBUS sent with kill(2), as a user trying the recovery
/// by hand sends them: Rust's stack-overflow handler in the worker used to
/// return from a sent one, and the worker went on as if nothing happened
/// (`worker/sent_signals.rs`). (SIGSEGV for a second backend on lavapipe:
/// `dev_staged_versions.rs`.)
#[test]
fn a_worker_killed_while_idle_is_restarted_at_once() {
    let ws = MisbehavingWorkspace::new();
    let mut session = start(&ws, &[]);
    let v1 = first_version(&session);
    session.wait_quiet(QUIET, QUIET_MAX);
    let checkpoint_hash = last_checkpoint(&session)
        .str("state_hash")
        .expect("hash")
        .to_string();
    let mark = session.mark();
    let signals = [
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGBUS, "SIGBUS"),
    ];
    // The version serving: v1, then each restart's (v1's code again).
    let mut serving = v1;
    for (signal, name) in signals {
        let worker = session.worker_pid();
        let before = session.mark();
        // SAFETY: kill(2) with the pid of this session's worker, read from
        // its own log (a child of kiln dev).
        assert_eq!(unsafe { libc::kill(worker as libc::pid_t, signal) }, 0);
        let crashed = session.wait_event(EventKind::Crashed, BUILD_DEADLINE);
        assert_eq!(crashed.str("signal"), Some(name), "{}", crashed.line);
        let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
        assert_eq!(
            restarted.u64("from_version"),
            Some(serving),
            "{}",
            restarted.line
        );
        assert!(
            restarted
                .line
                .message
                .contains(&format!("(the code of v{v1})")),
            "{}",
            restarted.line
        );
        assert_eq!(restarted.bool("state_matches"), Some(true));
        assert_eq!(
            restarted.str("checkpoint_hash"),
            Some(checkpoint_hash.as_str())
        );
        serving = restarted.version().expect("version");
        session.wait_quiet(QUIET, QUIET_MAX);
        assert_ne!(session.worker_pid(), worker, "{name}: a new worker");
        assert_eq!(
            session.named_since(before, EventKind::Restarted).len(),
            1,
            "{name}: one restart"
        );
    }
    assert!(session.named_since(mark, EventKind::Swapped).is_empty());
    assert_eq!(
        session.named_since(mark, EventKind::Restarted).len(),
        signals.len()
    );
    let _ = session.stop();
}

/// The state is handed to a new version without a copy (shared, copied on
/// write). A version that writes over every byte of the buffers it was
/// handed, and counts, then fails its replay is rolled back with the last
/// good point's state: bit for bit what the good version held, not the
/// failed version's writes.
#[test]
fn a_version_that_writes_over_its_handed_over_state_and_fails_leaves_the_state_as_it_was() {
    let ws = MisbehavingWorkspace::new();
    let mut session = start(&ws, &[]);
    let v1 = first_version(&session);
    session.wait_quiet(QUIET, QUIET_MAX);
    let before = serving_state_hash(&ws.copy);
    assert_eq!(before, last_checkpoint(&session).str("state_hash").unwrap());

    ws.save("scribble", 1);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(swapped.u64("from_version"), Some(v1));
    let failed = session.wait_event(EventKind::ReplayFailed, BUILD_DEADLINE);
    assert_eq!(failed.version(), swapped.version(), "{}", failed.line);
    let rolled = session.wait_event(EventKind::RolledBack, BUILD_DEADLINE);
    assert!(
        rolled
            .message()
            .contains("the state of the last good point"),
        "{}",
        rolled.line
    );
    session.wait_quiet(QUIET, QUIET_MAX);
    assert_eq!(
        serving_state_hash(&ws.copy),
        before,
        "the rolled-back version's state is the good version's, bit for bit"
    );
    // And it serves: the resident reads back as the workload loaded it.
    let (ok, out) = kiln_ctl(&ws.copy, &["replay"]);
    assert!(ok, "kiln ctl replay: {out}");
    let read = session.wait_for("the read call's replay", BUILD_DEADLINE, |e| {
        e.is_replay_of("read") && e.version() == rolled.version()
    });
    assert_eq!(read.bool("pass"), Some(true), "{}", read.line);
    let _ = session.stop();
}

/// Two bad versions in a row: each restart serves the last good code, and
/// the log names the version that code came from (v1), not the previous
/// restart's number (it read "the code of v3", then "of v5", ... a chain
/// a user had to follow back by hand).
#[test]
fn restarts_in_a_row_name_the_version_the_code_came_from() {
    let ws = MisbehavingWorkspace::new();
    let mut session = start(&ws, &[]);
    let v1 = first_version(&session);
    session.wait_quiet(QUIET, QUIET_MAX);
    let mut restarts = Vec::new();
    for revision in [2, 3] {
        ws.save("abort", revision);
        session.wait_event(EventKind::Crashed, BUILD_DEADLINE);
        let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
        assert!(
            restarted.message().contains(&format!("the code of v{v1})")),
            "{}",
            restarted.line
        );
        restarts.push(restarted.version().expect("version"));
        session.wait_quiet(QUIET, QUIET_MAX);
    }
    assert!(
        restarts[1] > restarts[0] && restarts[0] > v1,
        "{restarts:?}"
    );
    let _ = session.stop();
}

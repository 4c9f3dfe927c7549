//! Every way a terminal or a service manager ends `kiln dev` does what
//! Ctrl-C does: `kill -TERM` (a service manager stopping it) and `kill -HUP`
//! (a closed terminal, `tmux kill-session`) of `kiln dev --state FILE`
//! write the state file with the last good point's state, stop the worker
//! and remove the staged files, and the session exits with success.
//!
//! With `--state FILE`, a clean end whose last checkpoint is on disk
//! already puts FILE in place as a hard link to that copy (no byte
//! written, whatever the size): FILE restores bit for bit, and no later
//! session or checkpoint changes it (kiln only ever replaces its kept
//! files by renaming new ones over them); the next start finds the kept
//! file and sets it aside as the README says.
//!
//! Real processes, real signals; the misbehaving test module (small and
//! quick to serve) with its resident `state` buffer.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_signals`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln::events::{self, EventKind};
use kiln_e2e::dev_session::{BUILD_DEADLINE, DevSession, Event, QUIET};
use kiln_e2e::misbehaving::{MisbehavingWorkspace, module_target_dir, state_tensor};

fn ends_like_ctrl_c(signal: i32, name: &str) {
    let ws = MisbehavingWorkspace::new();
    let state_file = ws.root().join("session.snapshot");
    let mut session = ws.start_session(&["--state", state_file.to_str().expect("utf-8 path")]);
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    let checkpoint = session
        .named_since(0, EventKind::Checkpoint)
        .last()
        .map(|e| e.fields::<events::Checkpoint>().state_hash.clone())
        .expect("a checkpoint");
    let worker = session.worker_pid();
    assert!(!state_file.exists());
    // `stop_with` fails the test if the staging directory is left behind.
    let stopped = session.stop_with(signal);
    assert!(
        stopped.status.success(),
        "{name}: kiln dev exited with {:?}",
        stopped.status
    );
    assert!(
        stopped.exited_after < Duration::from_secs(5),
        "{name}: kiln dev took {:?} to end",
        stopped.exited_after
    );
    let saved = stopped
        .events
        .iter()
        .find(|e| e.is(EventKind::StateSaved))
        .unwrap_or_else(|| panic!("{name}: no state_saved event"));
    assert!(
        saved.fields::<events::StateSaved>().bytes > 0,
        "{}",
        saved.line
    );
    let snapshot = kiln::swap::snapshot_file::load(&state_file)
        .unwrap_or_else(|e| panic!("{name}: the state file does not load: {e}"));
    assert_eq!(
        kiln::worker::checkpoint_writer::state_hash(&snapshot),
        checkpoint,
        "{name}: the state file holds the last good point"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{worker}")).exists(),
        "{name}: the worker {worker} outlived the session"
    );
}

#[test]
fn sigterm_ends_the_session_as_ctrl_c_does() {
    ends_like_ctrl_c(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sighup_ends_the_session_as_ctrl_c_does() {
    ends_like_ctrl_c(libc::SIGHUP, "SIGHUP");
}

#[test]
fn sigint_ends_the_session_as_documented() {
    ends_like_ctrl_c(libc::SIGINT, "SIGINT");
}

/// The module the misbehaving workspace serves (its kept files' names).
const MODULE: &str = "kiln-test-misbehaving";

/// Starts `kiln dev --state FILE` (plus `extra`) with the disk copies
/// logged (`state_kept` is a debug event); waits until it is quiet.
fn start_logging_copies(ws: &MisbehavingWorkspace, extra: &[&str]) -> DevSession {
    let mut args = ws.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let target = module_target_dir();
    let mut session = DevSession::start_with_env(
        &ws.copy,
        &args,
        &[
            ("KILN_MODULE_TARGET_DIR", target.as_os_str()),
            (
                "RUST_LOG",
                std::ffi::OsStr::new("info,kiln::isolation::disk_copy=debug"),
            ),
        ],
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    session
}

/// The state hashes of the session's `checkpoint` events, in order.
fn checkpoints(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.is(EventKind::Checkpoint))
        .map(|e| e.fields::<events::Checkpoint>().state_hash.clone())
        .collect()
}

/// Waits until the session's last checkpoint is on disk; returns its hash.
fn wait_last_kept(session: &mut DevSession) -> String {
    let last = checkpoints(&session.events)
        .pop()
        .unwrap_or_else(|| session.fail("no checkpoint"));
    let is_kept = |e: &Event| e.is(EventKind::StateKept) && e.str("state_hash") == Some(&last);
    if !session.events.iter().any(is_kept) {
        session.wait_for("the last checkpoint on disk", BUILD_DEADLINE, is_kept);
    }
    last
}

/// The file's identity: two names of one file share it.
fn inode(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.dev(), m.ino())
}

fn hash_of(path: &Path) -> String {
    kiln::swap::snapshot_file::verify(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .state_hash
}

fn kept_dir(ws: &MisbehavingWorkspace) -> PathBuf {
    ws.root().join("target/kiln/state")
}

#[test]
fn ctrl_c_links_the_kept_copy_into_place_and_later_sessions_leave_it_alone() {
    let ws = MisbehavingWorkspace::new();
    let state_file = ws.root().join("session.snapshot");
    let state_arg = state_file.to_str().expect("utf-8 path").to_string();
    let kept = kept_dir(&ws).join(format!("{MODULE}.last-good.snapshot"));
    let previous = kept_dir(&ws).join(format!("{MODULE}.previous.snapshot"));

    // 1. Ctrl-C once the last checkpoint is on disk: FILE is that copy.
    let mut session = start_logging_copies(&ws, &["--state", &state_arg]);
    let first_end = wait_last_kept(&mut session);
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    assert_eq!(
        inode(&state_file),
        inode(&kept),
        "FILE is not the kept copy: its bytes were written again"
    );
    assert_eq!(hash_of(&state_file), first_end);
    assert_eq!(
        kiln_e2e::resident_bits_in(&state_file, "state"),
        state_tensor()
            .as_f32()
            .expect("f32")
            .iter()
            .map(|f| f.to_bits())
            .collect::<Vec<_>>(),
        "the resident, bit for bit"
    );
    assert!(!state_file.with_extension("partial").exists());
    let first_bytes = std::fs::read(&state_file).expect("read FILE");

    // 2. The next session restores FILE, bit for bit, and sets the kept
    //    file (the same file) aside as the README says; its checkpoints
    //    replace the kept file, never FILE.
    let mut session = start_logging_copies(&ws, &["--state", &state_arg]);
    let set_aside = session
        .named_since(0, EventKind::StateNotRecovered)
        .first()
        .map(|e| e.fields::<events::StateNotRecovered>().clone())
        .unwrap_or_else(|| session.fail("no state_not_recovered at start"));
    assert_eq!(set_aside.reason, "ended_cleanly");
    assert_eq!(Path::new(&set_aside.kept), previous);
    let hashes = checkpoints(&session.events);
    assert_eq!(
        hashes.first(),
        Some(&first_end),
        "the restored state is FILE's, bit for bit"
    );
    let second_end = wait_last_kept(&mut session);
    assert_ne!(second_end, first_end, "the replay changed the state");
    assert_eq!(hash_of(&kept), second_end);
    assert_eq!(
        std::fs::read(&state_file).expect("read FILE"),
        first_bytes,
        "a later checkpoint changed FILE"
    );
    let stopped = session.stop_with(libc::SIGTERM);
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    // FILE now names the new copy; the old file (now only
    // previous.snapshot) was replaced, not written into.
    assert_eq!(inode(&state_file), inode(&kept));
    assert_eq!(hash_of(&state_file), second_end);
    assert_eq!(
        std::fs::read(&previous).expect("read previous.snapshot"),
        first_bytes,
        "the previous session's file was written into"
    );

    // 3. A session without --state starts from the workload, moves the
    //    kept file aside again, and leaves FILE as it was.
    let second_bytes = std::fs::read(&state_file).expect("read FILE");
    let mut session = start_logging_copies(&ws, &[]);
    assert!(
        session
            .named_since(0, EventKind::StateNotRecovered)
            .iter()
            .any(|e| e.fields::<events::StateNotRecovered>().reason == "ended_cleanly"),
        "the kept file is set aside"
    );
    wait_last_kept(&mut session);
    assert!(session.stop().status.success());
    assert_eq!(hash_of(&previous), second_end);
    assert_eq!(
        std::fs::read(&state_file).expect("read FILE"),
        second_bytes,
        "a later session changed FILE"
    );
}

//! Every way a terminal or a service manager ends `kiln dev` does what
//! Ctrl-C does: `kill -TERM` (a service manager stopping it) and `kill -HUP`
//! (a closed terminal, `tmux kill-session`) of `kiln dev --state FILE`
//! write the state file with the last good point's state, stop the worker
//! and remove the staged files, and the session exits with success.
//!
//! Real processes, real signals; the misbehaving test module (small and
//! quick to serve) with its resident `state` buffer.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_signals`.

use std::time::Duration;

use kiln::events::{self, EventKind};
use kiln_e2e::dev_session::{BUILD_DEADLINE, QUIET};
use kiln_e2e::misbehaving::MisbehavingWorkspace;

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

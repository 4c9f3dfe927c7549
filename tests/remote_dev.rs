//! `kiln dev --on DEST` through a real OpenSSH server on 127.0.0.1
//! (kiln_e2e::sshd): the session runs in the agent's mirror, the log shows
//! here (the driver reads the remote session's JSON events from the local
//! kiln's stdout), saves here travel there.
//!
//! One test walks one mirror through every step, so the remote build is
//! warm after the first start (the modules build into the misbehaving
//! tests' target directory, shared with dev_crash):
//!
//! - start: the workspace mirrored, the module built, swapped in and
//!   replayed there; an edit (a real file write here) is built, swapped
//!   and replayed there, the mirror holding the edited file;
//! - a save the remote cannot keep: refused, said here, the session
//!   serves on;
//! - a crashing version: named, the worker restarted from the checkpoint;
//! - `kiln ctl status` here answers for the remote session;
//! - Ctrl-C: the session ends, its state left on the remote (path said),
//!   fetched with `--state FILE`, the history fetched for `kiln report`;
//! - the connection cut (the ssh client killed): kiln says so; the remote
//!   session keeps its worker; started again, kiln reattaches, the state
//!   hash the same; then the connection cut and never restored with a
//!   short `--grace`: the remote session saves its state there and ends;
//! - the agent killed outright: the session there saves its state and
//!   ends (no orphan);
//! - a session that cannot start there (no such backend): its message
//!   here, kiln fails; its older `--state FILE` does not replace the newer
//!   state saved there.
//!
//! Skipped without /usr/sbin/sshd unless KILN_REQUIRE_SSHD is set.
//! Run with `cargo test --release -p kiln-e2e --test remote_dev`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_e2e::dev_session::{BUILD_DEADLINE, DevCommand, EventKind, Session, kiln_binary};
use kiln_e2e::misbehaving::{self, MisbehavingWorkspace, REVISION_LINE};
use kiln_e2e::sshd::{HOST, Sshd, agent_command, mirrors_dir, ssh_child};

/// A server, where its agent keeps its mirrors, and the workspace.
struct Remote {
    sshd: Sshd,
    mirrors: tempfile::TempDir,
    ws: MisbehavingWorkspace,
}

impl Remote {
    fn start() -> Option<Remote> {
        let sshd = Sshd::start()?;
        let mirrors = mirrors_dir();
        Some(Remote {
            sshd,
            mirrors,
            ws: MisbehavingWorkspace::new(),
        })
    }

    /// `kiln dev --log-format json --on kiln-test ... EXTRA`, serving the
    /// misbehaving module.
    fn dev(&self, extra: &[&str]) -> Session {
        let mut args = self.ws.args();
        args.extend(extra.iter().map(|a| a.to_string()));
        self.dev_with(&args)
    }

    /// `kiln dev --log-format json --on kiln-test ... ARGS`.
    fn dev_with(&self, args: &[String]) -> Session {
        let remote_kiln = agent_command(
            &kiln_binary(),
            self.mirrors.path(),
            Some(misbehaving::module_target_dir().as_path()),
            &[],
        );
        DevCommand::new(&kiln_binary(), self.ws.root())
            .args(["--on", HOST, "--ssh-config"])
            .args([self.sshd.ssh_config()])
            .args(["--remote-kiln", &remote_kiln])
            .args(args)
            .env_remove("CARGO_TARGET_DIR")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The one mirror's directory.
    fn mirror(&self) -> PathBuf {
        let dirs: Vec<PathBuf> = std::fs::read_dir(self.mirrors.path())
            .expect("mirrors")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(dirs.len(), 1, "one workspace, one mirror: {dirs:?}");
        dirs[0].clone()
    }

    /// `kiln ctl ARGS` here: (success, output).
    fn ctl(&self, args: &[&str]) -> (bool, String) {
        kiln_e2e::dev_session::kiln_ctl(&self.ws.copy, args)
    }

    /// The serving state hash, asked here, answered there.
    fn state_hash(&self) -> String {
        kiln_e2e::dev_session::serving_state_hash(&self.ws.copy)
    }
}

/// Waits until the session serves (the watcher running there, after the
/// first replay); the version it replayed.
fn wait_serving(session: &mut Session) -> u64 {
    session.wait_for("the remote watcher", BUILD_DEADLINE, |e| {
        kiln_dev_driver::is_watching(e)
    });
    session
        .events
        .iter()
        .rev()
        .find(|e| e.is(EventKind::Replay))
        .and_then(|e| e.version())
        .unwrap_or_else(|| session.fail("no replay before the watcher"))
}

fn kill(pid: u32) {
    // SAFETY: kill(2) with a pid read from /proc just before (an ssh client
    // or an agent this test's kiln started, alive) and a valid signal
    // number.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Waits for the local kiln to exit by itself; its exit status and stderr.
fn wait_exit(session: Session, within: Duration) -> kiln_dev_driver::Stopped {
    let pid = session.pid();
    wait_until("kiln exits", within, || !running(pid));
    session.stop()
}

/// The parent of `pid` (from /proc).
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("ppid")
}

/// The remote session's pid (from its record in the mirror).
fn remote_pid(mirror: &Path) -> u32 {
    let text = std::fs::read_to_string(mirror.join("session/pid")).expect("session/pid");
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// Whether a process with this pid runs (not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s[s.rfind(')').unwrap() + 1..].split_whitespace().next();
        !matches!(state, Some("Z" | "X" | "x"))
    })
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_session_on_the_remote_edits_crashes_answers_stops_and_survives_a_cut() {
    let Some(remote) = Remote::start() else {
        return;
    };
    let fetched = tempfile::tempdir().expect("temporary directory");
    let state_file = fetched.path().join("remote.state");
    let state_arg = state_file.to_str().expect("utf-8 path");

    // Start: built, swapped in and replayed there, the log here.
    let mut session = remote.dev(&["--state", state_arg]);
    let v1 = wait_serving(&mut session);
    let mirror = remote.mirror();
    assert!(
        mirror.join("session/stdout.log").is_file(),
        "the remote session's log lies in the mirror"
    );

    // An edit here: sent, built, swapped and replayed there.
    remote.ws.save("none", 2);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let v2 = swapped.version().expect("version");
    assert!(v2 > v1, "{}", swapped.line);
    session.wait_for("the edited version's replay", BUILD_DEADLINE, |e| {
        e.is(EventKind::Replay) && e.version() == Some(v2)
    });
    let source = std::fs::read_to_string(mirror.join("tree").join(misbehaving::SOURCE)).unwrap();
    assert!(
        source.contains(&REVISION_LINE.replace("= 1", "= 2")),
        "the mirror holds the edit"
    );
    assert!(
        session
            .stderr()
            .contains("kiln: sent kernels/misbehaving/src/lib.rs to kiln-test: 1 file(s)"),
        "a save sends that file alone: {}",
        session.stderr()
    );

    // A save the remote cannot keep (its incoming folder a file: nothing
    // can be written there, as with a full disk): refused and said here;
    // the session serves on, and the next save goes through (below).
    let incoming = mirror.join("incoming");
    std::fs::remove_dir_all(&incoming).unwrap();
    std::fs::write(&incoming, b"").unwrap();
    remote.ws.save("none", 20);
    wait_until("the refused save reported", BUILD_DEADLINE, || {
        session.stderr().contains("refused: cannot keep blob")
    });
    std::fs::remove_file(&incoming).unwrap();
    std::fs::create_dir(&incoming).unwrap();

    // A crashing version: named there, its worker restarted.
    remote.ws.save("abort", 3);
    let down = session.wait_event(EventKind::Crashed, BUILD_DEADLINE);
    assert!(down.message().contains("misbehave"), "{}", down.line);
    let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
    assert!(restarted.version() > down.version(), "{}", restarted.line);

    // `kiln ctl` here answers for the session there.
    let (ok, out) = remote.ctl(&["status"]);
    assert!(ok, "{out}");
    assert!(out.contains("misbehaving"), "{out}");
    let hash = remote.state_hash();
    assert!(!hash.is_empty());

    // Ctrl-C: ended there, the state left there and fetched here, the
    // history fetched for `kiln report`.
    let stopped = session.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let remote_state = mirror.join("session/state.kiln");
    assert!(
        stopped.stderr.contains(&format!(
            "the state is on {HOST} at {}",
            remote_state.display()
        )),
        "{}",
        stopped.stderr
    );
    assert!(remote_state.is_file());
    assert_eq!(
        std::fs::read(&state_file).expect("the state fetched with --state"),
        std::fs::read(&remote_state).unwrap(),
    );
    assert!(
        stopped.stderr.contains("fetching the state into"),
        "progress shown"
    );
    let history = remote
        .ws
        .root()
        .join("target/kiln/history/kiln-test-misbehaving.json");
    assert!(history.is_file(), "{}", stopped.stderr);
    eprintln!(
        "Ctrl-C to the end of kiln: {:.2} s",
        stopped.exited_after.as_secs_f64()
    );

    // The connection cut mid-session: reported here; the session there
    // keeps its worker and state; started again, kiln reattaches. (A
    // good version saved first: the start sends it.)
    remote.ws.save("none", 4);
    let mut session = remote.dev(&[]);
    wait_serving(&mut session);
    session.wait_quiet(Duration::from_millis(1500), BUILD_DEADLINE);
    let before = remote.state_hash();
    let worker = session.worker_pid();
    let dev_pid = remote_pid(&mirror);
    let cut_at = Instant::now();
    kill(ssh_child(session.pid()));
    let lost = wait_exit(session, Duration::from_secs(60));
    eprintln!(
        "the cut reported {:.2} s after the ssh client was killed",
        cut_at.elapsed().as_secs_f64()
    );
    assert!(!lost.status.success());
    assert!(
        lost.stderr.contains("was lost") && lost.stderr.contains("to reattach"),
        "{}",
        lost.stderr
    );
    assert!(running(dev_pid), "the remote session {dev_pid} lives on");
    assert!(running(worker), "the remote worker {worker} lives on");

    // Again, with a short grace period: reattached, the same state.
    let session = remote.dev(&["--grace", "2"]);
    wait_until("kiln ctl answers", BUILD_DEADLINE, || {
        remote.ctl(&["status"]).0
    });
    wait_until("kiln says it reattached", BUILD_DEADLINE, || {
        session
            .stderr()
            .contains("reattached to the session running on")
    });
    assert_eq!(remote_pid(&mirror), dev_pid, "the same remote session");
    assert_eq!(
        remote.state_hash(),
        before,
        "the state as it was at the cut"
    );

    // Cut and never restored: after the grace period the session there
    // saves its state there and ends.
    let remote_state = mirror.join("session/state.kiln");
    let saved_before = std::fs::metadata(&remote_state)
        .and_then(|m| m.modified())
        .ok();
    kill(ssh_child(session.pid()));
    let lost = wait_exit(session, Duration::from_secs(60));
    assert!(!lost.status.success(), "{}", lost.stderr);
    wait_until(
        "the remote session ends after its grace",
        BUILD_DEADLINE,
        || !running(dev_pid),
    );
    let saved = std::fs::metadata(&remote_state)
        .and_then(|m| m.modified())
        .ok();
    assert!(
        saved.is_some() && saved != saved_before,
        "the state saved again at the end"
    );
    assert!(!running(worker), "its worker ended with it");

    // The agent killed outright (a cancelled Slurm step does so): the
    // session there gets SIGTERM, saves its state and ends; kiln here
    // reports the lost connection.
    let mut session = remote.dev(&[]);
    wait_serving(&mut session);
    let dev_pid = remote_pid(&mirror);
    let agent = parent_of(dev_pid);
    let saved_before = std::fs::metadata(&remote_state)
        .and_then(|m| m.modified())
        .ok();
    kill(agent);
    let lost = wait_exit(session, Duration::from_secs(60));
    assert!(!lost.status.success(), "{}", lost.stderr);
    wait_until("the orphaned session ends", BUILD_DEADLINE, || {
        !running(dev_pid)
    });
    let saved = std::fs::metadata(&remote_state)
        .and_then(|m| m.modified())
        .ok();
    assert!(saved != saved_before, "the state saved as it ended");

    // A session that cannot start there: its own message shown here, and
    // kiln fails with the remote exit code. Its `--state FILE` (fetched at
    // the Ctrl-C above) is older than the state saved there since: sent,
    // but the newer state there is kept, and kiln says so.
    let saved_before = std::fs::metadata(&remote_state)
        .and_then(|m| m.modified())
        .ok();
    let session = remote.dev_with(&[
        "--backend".into(),
        "nosuch".into(),
        "--state".into(),
        state_arg.into(),
    ]);
    let failed = wait_exit(session, BUILD_DEADLINE);
    assert!(!failed.status.success(), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("nosuch") && failed.stderr.contains("exited with code 1"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("is newer than the one sent"),
        "{}",
        failed.stderr
    );
    let saved = std::fs::metadata(&remote_state)
        .and_then(|m| m.modified())
        .ok();
    assert_eq!(saved, saved_before, "the newer state there not overwritten");
    assert!(!mirror.join("session/state.sent.kiln").exists());
}

//! `kiln ctl` driving one real `kiln dev` session: status, refusals that
//! leave the session serving, the control socket's guards (one session per
//! workspace, a stale socket replaced, another uid refused by SO_PEERCRED
//! even when file modes let it in), a command sent during a build answered
//! twice, undo back to the previous good version with the state, and bless
//! (expected outputs written, a later wrong version fails against them).
//!
//! Real binaries (`kiln dev`, `kiln ctl`), real cargo, real sockets; one
//! session for the whole file (CI time). Run with
//! `cargo test --release -p kiln-e2e --test dev_control`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kiln::workspace;
use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, EventKind, SAXPY_LINE, WorkspaceCopy, events, kiln_binary,
    kiln_command, replace_once, save_in_place, with_wrong_saxpy,
};
use kiln_e2e::workspace_root;
use serde_json::{Value, json};

/// What one `kiln ctl` run printed.
struct Ctl {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ctl {
    /// The answers of a `--json` run.
    fn answers(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    /// The final answer's data (of a `--json` run that was done).
    fn data(&self) -> Value {
        let last = self.answers().pop().expect("an answer");
        assert_eq!(last["answer"], "done", "{}", self.stdout);
        last["data"].clone()
    }
}

fn ctl_command(copy: &WorkspaceCopy, args: &[&str]) -> Command {
    let mut cmd = Command::new(kiln_binary());
    cmd.current_dir(copy.root())
        .arg("ctl")
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Ctl {
    let out = cmd.output().expect("kiln ctl runs");
    Ctl {
        code: out.status.code().expect("kiln ctl exited"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ctl(copy: &WorkspaceCopy, args: &[&str]) -> Ctl {
    run(ctl_command(copy, args))
}

/// `kiln ctl ARGS` as uid/gid 65534 (nobody).
fn ctl_as_nobody(copy: &WorkspaceCopy, args: &[&str]) -> Ctl {
    let mut cmd = ctl_command(copy, args);
    cmd.uid(65534).gid(65534);
    run(cmd)
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Holds cargo's lock on the shared module target directory: a module
/// build started meanwhile waits ("Blocking waiting for file lock"), so a
/// command sent now surely arrives during the build.
struct CargoLock {
    _file: File,
}

impl CargoLock {
    fn take() -> CargoLock {
        let artifact = workspace::artifact_path(
            &workspace::module_target_dir(&workspace_root()),
            workspace::HOST_PROFILE,
            "kernel-cpu",
        );
        let lock = artifact.parent().expect("profile dir").join(".cargo-lock");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .unwrap_or_else(|e| panic!("open {}: {e}", lock.display()));
        // SAFETY: flock(2) on a descriptor this File owns for the call.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", lock.display());
        CargoLock { _file: file }
    }
}

#[test]
fn kiln_ctl_drives_a_session() {
    let copy = WorkspaceCopy::new();
    let kernels = copy.kernels_rs();
    let pristine = std::fs::read_to_string(&kernels).expect("kernels.rs");
    let socket: PathBuf = copy.root().join("target/kiln/dev.sock");

    // What a killed session leaves: a socket file nobody listens on.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(UnixListener::bind(&socket).expect("bind a socket to leave stale"));
    let none = ctl(&copy, &["status"]);
    assert_eq!(none.code, 2, "no session: exit 2\n{}", none.stderr);
    assert!(
        none.stderr.contains("no kiln dev session is running")
            && none.stderr.contains(&socket.display().to_string())
            && none.stderr.contains("stale"),
        "{}",
        none.stderr
    );

    // Builds go through cargo (not the direct rustc path, which takes no
    // cargo lock), so that holding cargo's lock really holds the build.
    let mut session = DevSession::start_with_env(
        &copy,
        &["--on-fail", "keep", "--no-tune"],
        &[("KILN_DIRECT_RUSTC", std::ffi::OsStr::new("0"))],
    );
    assert!(
        session
            .events
            .iter()
            .any(|e| e.is(EventKind::StaleSocketReplaced)),
        "the stale socket is replaced and said so"
    );

    // status: what serves, as data.
    let status = ctl(&copy, &["status", "--json"]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    let data = status.data();
    let v1 = data["version"].as_u64().expect("version");
    assert_eq!(data["serving"], format!("kernel-cpu-v{v1}"));
    assert_eq!(data["backend"], "cpu");
    assert_eq!(data["module"], "kernel-cpu");
    assert_eq!(data["verdict"], format!("v{v1} passed"));
    // The session's own replay counts, not only a `replay` command's.
    assert_eq!(data["last_replay"], format!("v{v1} passed"));
    assert_eq!(data["socket"], socket.display().to_string());
    assert!(
        data["state_hash"].as_str().is_some_and(|h| h.len() == 32),
        "{data}"
    );
    let human = ctl(&copy, &["status"]);
    assert!(
        human
            .stdout
            .contains(&format!("serving kernel-cpu-v{v1} (cpu backend)")),
        "{}",
        human.stdout
    );

    // A second session in the same workspace is refused at once.
    let second = kiln_command(&copy, &["dev", "--no-tune"])
        .stdin(Stdio::null())
        .output()
        .expect("kiln dev runs");
    let second_err = String::from_utf8_lossy(&second.stderr);
    let second_out = String::from_utf8_lossy(&second.stdout);
    assert!(!second.status.success(), "{second_err}");
    assert!(
        !second_out.contains("building") && !second_err.contains("building"),
        "refused before any build: {second_out}{second_err}"
    );
    assert!(
        second_err.contains(&format!(
            "another kiln dev (pid {}) already serves this workspace",
            session.pid()
        )),
        "{second_err}"
    );

    // Unknown commands and backends are refused; the session goes on.
    let unknown = ctl(&copy, &["frobnicate"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("known: status, replay"),
        "{}",
        unknown.stderr
    );
    // The same from a tool writing to the socket itself.
    let raw = raw_request(&socket, r#"{"command":"frobnicate"}"#);
    assert_eq!(raw["answer"], "refused");
    assert!(
        raw["reason"]
            .as_str()
            .unwrap()
            .contains("unknown command \"frobnicate\""),
        "{raw}"
    );
    let backend = ctl(&copy, &["switch", "no-such-backend"]);
    assert_eq!(backend.code, 1, "{}", backend.stdout);
    assert!(
        backend.stdout.starts_with("refused: "),
        "{}",
        backend.stdout
    );
    assert_eq!(ctl(&copy, &["status"]).code, 0, "the session goes on");

    // Another uid: the socket's mode keeps it out; with the modes opened
    // (as they are for root), SO_PEERCRED refuses it.
    for dir in [
        copy.root(),
        &copy.root().join("target"),
        socket.parent().unwrap(),
    ] {
        set_mode(dir, 0o711);
    }
    let by_mode = ctl_as_nobody(&copy, &["status"]);
    assert_eq!(by_mode.code, 2, "{}{}", by_mode.stdout, by_mode.stderr);
    assert!(
        by_mode.stderr.contains("ermission denied"),
        "{}",
        by_mode.stderr
    );
    set_mode(&socket, 0o666);
    let by_uid = ctl_as_nobody(&copy, &["status"]);
    assert_eq!(by_uid.code, 1, "{}{}", by_uid.stdout, by_uid.stderr);
    assert!(
        by_uid
            .stdout
            .contains("uid 65534 may not drive it (checked with SO_PEERCRED)"),
        "{}",
        by_uid.stdout
    );
    set_mode(&socket, 0o600);

    // A command sent during a build: queued at once, then applied.
    let lock = CargoLock::take();
    let mark = session.mark();
    save_in_place(&kernels, &with_wrong_saxpy(&pristine));
    session.wait_event(EventKind::BuildStarted, BUILD_DEADLINE);
    let mut replay = ctl_command(&copy, &["replay", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kiln ctl replay");
    let mut answers = BufReader::new(replay.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&answers.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["answer"], "queued", "{first}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("build of kernel-cpu"),
        "{first}"
    );
    drop(lock);
    let second: Value = serde_json::from_str(&answers.next().unwrap().unwrap()).unwrap();
    assert!(replay.wait().unwrap().success());
    assert_eq!(second["answer"], "done", "{second}");
    session.wait_for(
        "the queued replay, applied after the swap",
        BUILD_DEADLINE,
        |e| {
            e.get::<events::Control>().is_some_and(|c| {
                c.command.as_deref() == Some("replay") && c.outcome.as_deref() == Some("done")
            })
        },
    );
    let v2 = session
        .named_since(mark, EventKind::Swapped)
        .first()
        .and_then(|e| e.version())
        .expect("the wrong saxpy was swapped in");
    assert_eq!(second["data"], json!({"version": v2, "passed": false}));

    // Undo: back to v1's code without a build, with the state.
    let mark = session.mark();
    let undo = ctl(&copy, &["undo", "--json"]);
    assert_eq!(undo.code, 0, "{}{}", undo.stdout, undo.stderr);
    let undone = undo.data();
    assert_eq!(undone["code_of"], v1, "{undone}");
    assert_eq!(undone["from"], format!("kernel-cpu-v{v2}"));
    let v3 = undone["version"].as_u64().unwrap();
    assert!(v3 > v2, "{undone}");
    assert_eq!(undone["passed"], true, "v1's behaviour is back: {undone}");
    assert!(undone["handoff_bytes"].as_u64().unwrap() > 0, "{undone}");
    assert!(undone["state_hash_before"].is_string(), "{undone}");
    assert_eq!(
        undone["state_hash_before"], undone["state_hash_after"],
        "the state as it was, bit for bit"
    );
    let replay = session.wait_replay(BUILD_DEADLINE);
    let saxpy = replay.iter().find(|e| e.is_replay_of("saxpy"));
    assert_eq!(saxpy.and_then(|e| e.version()), Some(v3));
    assert_eq!(
        saxpy.map(|e| e.fields::<events::Replay>().pass),
        Some(true),
        "saxpy is right again"
    );
    assert_eq!(session.named_since(mark, EventKind::Undone).len(), 1);
    assert!(
        session
            .named_since(mark, EventKind::BuildStarted)
            .is_empty(),
        "no build"
    );
    let status = ctl(&copy, &["status", "--json"]).data();
    assert_eq!(status["serving"], format!("kernel-cpu-v{v3}"));
    assert_eq!(
        status["verdict"],
        format!("v{v3} passed (undo: code of v{v1})")
    );
    let again = ctl(&copy, &["undo"]);
    assert_eq!(
        again.code, 1,
        "nothing earlier to undo to: {}",
        again.stdout
    );
    assert!(
        again.stdout.contains("no earlier good version"),
        "{}",
        again.stdout
    );

    // Bless: v3's outputs become the expected outputs; the session replays
    // that file; a later wrong version fails against them.
    let blessed_path = copy.root().join("target/kiln/workloads/default.kiln");
    let mark = session.mark();
    let bless = ctl(&copy, &["bless", "--json"]);
    assert_eq!(bless.code, 0, "{}{}", bless.stdout, bless.stderr);
    let blessed = bless.data();
    assert_eq!(blessed["path"], blessed_path.display().to_string());
    assert_eq!(blessed["passed"], true, "{blessed}");
    assert!(blessed["previous"].is_null());
    let written = kiln::workload::read(&blessed_path).expect("the blessed workload reads");
    assert!(
        written.describe().contains("of expected outputs"),
        "{}",
        written.describe()
    );
    session.wait_for("the blessed file's replay", BUILD_DEADLINE, |e| {
        e.get::<events::Control>()
            .is_some_and(|c| c.command.as_deref() == Some("bless"))
    });
    let rechecked = session
        .since(mark)
        .iter()
        .filter(|e| e.is(EventKind::Replay))
        .count();
    assert!(rechecked > 0, "the blessed file was replayed");
    let off: Vec<String> = session
        .since(mark)
        .iter()
        .filter_map(|e| Some((e, e.get::<events::Replay>()?)))
        .filter(|(_, r)| r.reference != "vs stored outputs" || !r.pass)
        .map(|(e, _)| e)
        .map(|e| e.line.to_string())
        .collect();
    assert!(
        off.is_empty(),
        "every call checked against the blessed outputs, and passing:\n{}",
        off.join("\n")
    );
    save_in_place(
        &kernels,
        &replace_once(&pristine, SAXPY_LINE, "*o = a * xi + yi + 2.0)"),
    );
    let failed = session.wait_for("the wrong saxpy's replay", BUILD_DEADLINE, |e| {
        e.is_replay_of("saxpy") && e.version().is_some_and(|v| v > v3)
    });
    let fields = failed.fields::<events::Replay>();
    assert!(!fields.pass, "fails against the blessed outputs");
    assert_eq!(fields.reference, "vs stored outputs");
    let _ = session.wait_replay(BUILD_DEADLINE);
    let first_bytes = std::fs::read(&blessed_path).unwrap();
    let rebless = ctl(&copy, &["bless", "--json"]).data();
    let prev = PathBuf::from(
        rebless["previous"]
            .as_str()
            .expect("the previous file is kept"),
    );
    assert_eq!(
        std::fs::read(&prev).unwrap(),
        first_bytes,
        "the previous file, as it was"
    );

    let stopped = session.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(!socket.exists(), "the socket is removed at exit");
}

/// One command written to the socket as a tool would; its final answer.
fn raw_request(socket: &Path, line: &str) -> Value {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    writeln!(stream, "{line}").unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
}

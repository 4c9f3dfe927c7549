//! Drive the real `kiln dev` binary: copy the workspace to a temporary
//! directory, start `kiln dev --log-format json` there through the shared
//! driver (kiln-dev-driver: the JSON event stream followed on a reader
//! thread, typed), and edit kernel sources the way editors do.
//!
//! Sessions in one test process run one at a time (they share one module
//! target directory, and cargo's uplifted artifact in it; see
//! [`DevSession::start`]), and each is stopped with SIGINT on drop.

use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::{cargo, workspace_root};
use kiln::workspace;
pub use kiln_dev_driver::{DevCommand, Event, EventKind, LogLine, Session, Stopped, events};

/// How long a module build may take on a busy 2-core machine.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(180);
/// How long the session must stay silent to count as quiet.
pub const QUIET: Duration = Duration::from_millis(1500);

/// A temporary copy of the workspace's tracked sources.
pub struct WorkspaceCopy {
    dir: tempfile::TempDir,
}

impl WorkspaceCopy {
    /// Copies every file `git ls-files` lists, tracked or new but not
    /// ignored (falling back to everything but `target/` and `.git/` when
    /// git cannot say).
    pub fn new() -> WorkspaceCopy {
        let root = workspace_root();
        let dir = tempfile::Builder::new()
            .prefix("kiln-dev-e2e-")
            .tempdir()
            .expect("temporary directory");
        for rel in kiln::remote::manifest::file_set(&root) {
            let from = root.join(&rel);
            if !from.is_file() {
                continue; // deleted in the worktree but still tracked
            }
            let to = dir.path().join(&rel);
            std::fs::create_dir_all(to.parent().expect("file has a parent")).expect("mkdir");
            std::fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
        }
        WorkspaceCopy { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `kernels/cpu/src/kernels.rs` in the copy.
    pub fn kernels_rs(&self) -> PathBuf {
        self.root().join("kernels/cpu/src/kernels.rs")
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).expect("read source")
    }
}

impl Default for WorkspaceCopy {
    fn default() -> Self {
        Self::new()
    }
}

/// Records a one-saxpy workload (n = 65536) in the copy with the real
/// `kiln record`; returns its path. Sessions on lavapipe replay it in
/// milliseconds where the bundled workload takes a minute.
pub fn record_small_saxpy(copy: &WorkspaceCopy) -> String {
    let workload = copy.root().join("target/saxpy-small.kiln");
    kiln_in(
        copy,
        &[
            "record",
            "--kernel",
            "saxpy",
            "--dims",
            "n=65536",
            "-o",
            workload.to_str().expect("utf-8 path"),
        ]
        .map(String::from),
    );
    workload.display().to_string()
}

/// Saves `contents` the way editors that write in place do (VS Code, vim
/// with `backupcopy=yes`): open, truncate, write.
pub fn save_in_place(path: &Path, contents: &str) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(contents.as_bytes()).expect("write");
    file.sync_all().expect("fsync");
}

/// Saves `contents` the way vim and JetBrains do by default: write a temp
/// file next to it, then rename it over the original.
pub fn save_via_rename(path: &Path, contents: &str) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.kiln-e2e~"));
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the source");
}

/// `source` with `from` replaced by `to` exactly once (panics otherwise, so
/// a drifting kernel source fails the test loudly).
pub fn replace_once(source: &str, from: &str, to: &str) -> String {
    assert_eq!(
        source.matches(from).count(),
        1,
        "expected exactly one {from:?} in the source"
    );
    source.replacen(from, to, 1)
}

/// The saxpy line of `kernels/cpu/src/kernels.rs`.
pub const SAXPY_LINE: &str = "*o = a * xi + yi)";

/// `kiln ctl ARGS` in `copy`: (exit success, stdout + stderr).
pub fn kiln_ctl(copy: &WorkspaceCopy, args: &[&str]) -> (bool, String) {
    let out = Command::new(kiln_binary())
        .current_dir(copy.root())
        .arg("ctl")
        .args(args)
        .output()
        .expect("run kiln ctl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What `kiln ctl status --json` answers for the `kiln dev` of `copy`: its
/// `data` object.
pub fn status(copy: &WorkspaceCopy) -> serde_json::Value {
    let (ok, out) = kiln_ctl(copy, &["status", "--json"]);
    assert!(ok, "kiln ctl status: {out}");
    let json = &out[out.find('{').expect("a JSON answer")..=out.rfind('}').expect("json")];
    let data: serde_json::Value = serde_json::from_str(json).expect("status JSON");
    data["data"].clone()
}

/// The state hash of the version `kiln dev` serves in `copy` now (`kiln
/// ctl status --json`, `data.state_hash`).
pub fn serving_state_hash(copy: &WorkspaceCopy) -> String {
    let data = status(copy);
    data["state_hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no state_hash: {data}"))
        .to_string()
}

/// The `kiln` binary of this test run's profile, next to the test
/// executable (`<target>/<profile>/kiln`); built (or confirmed fresh) with
/// cargo once per test process.
pub fn kiln_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let status = Command::new(cargo())
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "kiln",
                "--bin",
                "kiln",
                "--profile",
                workspace::HOST_PROFILE,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p kiln --bin kiln failed");
        let bin = profile_dir.join("kiln");
        assert!(bin.exists(), "no kiln binary at {}", bin.display());
        bin
    })
    .clone()
}

/// One session at a time per test process.
fn session_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `kiln dev --log-format json` in a workspace copy: the driver's
/// [`Session`] (waits, events, stop), one at a time per test process.
pub struct DevSession {
    // Dropped first: the session is interrupted before the lock is freed.
    session: Session,
    _lock: MutexGuard<'static, ()>,
}

impl Deref for DevSession {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl DerefMut for DevSession {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

impl DevSession {
    /// Starts `kiln dev --log-format json ARGS` in `copy`, with the shared
    /// module target directory of the real workspace, and waits until it
    /// serves (its first replay done, the watcher running).
    pub fn start(copy: &WorkspaceCopy, args: &[&str]) -> DevSession {
        Self::start_with_env(copy, args, &[])
    }

    /// [`DevSession::start`] with extra environment (set after the
    /// defaults, so it can override `KILN_MODULE_TARGET_DIR`).
    pub fn start_with_env(
        copy: &WorkspaceCopy,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> DevSession {
        let lock = session_lock();
        let mut command = DevCommand::new(&kiln_binary(), copy.root())
            .args(args)
            .module_target_dir(&workspace::module_target_dir(&workspace_root()))
            // The copy's own target/ holds staging, history and state.
            .env_remove("CARGO_TARGET_DIR");
        for (k, v) in env {
            command = command.env(k, v);
        }
        let session = command.spawn().unwrap_or_else(|e| panic!("{e}"));
        let mut session = DevSession {
            session,
            _lock: lock,
        };
        session.wait_for("the watcher to start", BUILD_DEADLINE, |e| {
            kiln_dev_driver::is_watching(e)
        });
        session
    }

    /// [`DevSession::start`] without waiting for anything: the session's
    /// start-up (build, first checkpoint, first replay) is still to come.
    pub fn spawn(copy: &WorkspaceCopy, args: &[&str]) -> DevSession {
        let lock = session_lock();
        let session = DevCommand::new(&kiln_binary(), copy.root())
            .args(args)
            .module_target_dir(&workspace::module_target_dir(&workspace_root()))
            .env_remove("CARGO_TARGET_DIR")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        DevSession {
            session,
            _lock: lock,
        }
    }

    /// Waits until a whole replay (the last call of the default workload,
    /// softmax) has been logged; returns that replay's events.
    pub fn wait_replay(&mut self, deadline: Duration) -> Vec<Event> {
        let start = self.next_index();
        // The bundled workload follows the declarations: a full replay ends
        // with the replay event of its last call.
        let last_call =
            kiln::workload::generate::workspace_bundled_workload(&crate::workspace_root())
                .expect("the bundled workload")
                .call_count()
                .saturating_sub(1) as u64;
        let last = self.wait_for("a full replay", deadline, |e| {
            e.get::<events::Replay>()
                .is_some_and(|replay| replay.call == last_call)
        });
        let version = last.version();
        self.events[start..self.next_index()]
            .iter()
            .filter(|e| e.is(EventKind::Replay) && e.version() == version)
            .cloned()
            .collect()
    }

    /// Stops the session with SIGINT (Ctrl-C), waits for it to exit and for
    /// its output to end, and checks its staged files are gone.
    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGINT)
    }

    /// Kills the session outright (SIGKILL: no clean end, as the OOM killer
    /// or a power cut would), waits for it to exit and for its output to
    /// end. Its staging directory stays (the next start removes it).
    pub fn kill(self) -> Stopped {
        let DevSession { session, _lock } = self;
        session.stop_with(libc::SIGKILL)
    }

    /// [`DevSession::stop`] with another signal (SIGTERM, SIGHUP).
    pub fn stop_with(self, signal: i32) -> Stopped {
        let DevSession { session, _lock } = self;
        let stage = session.stage_dir();
        let stopped = session.stop_with(signal);
        let left: Vec<PathBuf> = std::fs::read_dir(&stage)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if stage.exists() {
            stopped.fail(&format!(
                "staging dir {} still exists after exit (holds {left:?})",
                stage.display()
            ));
        }
        stopped
    }
}

/// Whether process `pid` is gone (or a zombie no one reaped yet: it runs
/// no more code).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// SIGKILLs the session's worker and asserts that the restarted one
/// serves the last checkpoint's state (`state_matches`: the hash of what
/// it serves is the checkpoint's); `why` says what that shows.
pub fn kill_worker_and_see_the_state_restored(session: &mut DevSession, why: &str) {
    let worker = session.worker_pid();
    // SAFETY: kill(2) with the pid of this session's worker, read from its
    // own log (a child of kiln dev).
    assert_eq!(
        unsafe { libc::kill(worker as libc::pid_t, libc::SIGKILL) },
        0
    );
    let restarted = session.wait_event(EventKind::Restarted, BUILD_DEADLINE);
    assert_eq!(
        restarted.bool("state_matches"),
        Some(true),
        "{why}: {}",
        restarted.line
    );
}

/// The chunk-size line of `kernels/cpu/src/kernels.rs`: changing it changes
/// the build but not the results.
pub const CHUNK_LINE: &str = "const MIN_CHUNK: usize = 4096;";

/// `source` (the pristine kernels.rs) with `MIN_CHUNK = n`.
pub fn with_chunk(source: &str, n: usize) -> String {
    replace_once(
        source,
        CHUNK_LINE,
        &format!("const MIN_CHUNK: usize = {n};"),
    )
}

/// `source` with a saxpy that adds 1 to every element (fails replay).
pub fn with_wrong_saxpy(source: &str) -> String {
    replace_once(source, SAXPY_LINE, "*o = a * xi + yi + 1.0)")
}

/// The version the session served first (that of its first replay).
pub fn first_version(events: &[Event]) -> u64 {
    events
        .iter()
        .find(|e| e.is(EventKind::Replay))
        .and_then(|e| e.version())
        .expect("a first replay with a version")
}

/// `kiln ARGS` to run in `copy`, with the shared module target directory
/// (no session lock: for a session started by hand, or a command).
pub fn kiln_command<S: AsRef<std::ffi::OsStr>>(copy: &WorkspaceCopy, args: &[S]) -> Command {
    let mut command = Command::new(kiln_binary());
    command
        .current_dir(copy.root())
        .args(args)
        .env(
            "KILN_MODULE_TARGET_DIR",
            workspace::module_target_dir(&workspace_root()),
        )
        .env_remove("CARGO_TARGET_DIR");
    command
}

/// Runs `kiln ARGS` in `copy` (as a user would in another terminal while
/// `kiln dev` serves), with the shared module target directory; panics
/// with its output if it fails.
pub fn kiln_in(copy: &WorkspaceCopy, args: &[String]) -> String {
    let output = kiln_command(copy, args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kiln");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "`kiln {}` failed: {text}",
        args.join(" ")
    );
    text
}

/// Splits a shell command line into words (double and single quotes,
/// no escapes: what the README's commands use).
pub fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            (_, c) => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// The fenced code blocks (language, text) of the README section titled
/// `title` (a `## ` heading), in order.
pub fn readme_blocks(title: &str) -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let heading = format!("## {title}");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    let rest = &readme[start + heading.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let mut text = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            blocks.push((lang.trim().to_string(), text));
        }
    }
    blocks
}

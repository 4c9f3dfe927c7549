//! kiln over SSH, through a real OpenSSH server on 127.0.0.1 (started per
//! test by kiln_e2e::sshd, keys made for the run) and the real `kiln agent
//! --stdio` at the other end of the system `ssh`:
//!
//! - the handshake is accepted; the workspace is mirrored (not target/),
//!   contents, times and modes kept; an unchanged sync sends nothing, a
//!   one-line edit sends that file only; a deleted file is deleted there;
//! - an agent of another version is refused, both versions named, with the
//!   command that updates it;
//! - a transfer cut half-way (ssh killed) leaves the mirror as it was, no
//!   file half-written; the next sync completes it;
//! - `kiln backends --on` prints the remote's cpu and vulkan lines; the
//!   binary says why it cannot use a remote (another version, no kiln
//!   there, nothing listening).
//!
//! Skipped without /usr/sbin/sshd unless KILN_REQUIRE_SSHD is set.
//! Run with `cargo test --release -p kiln-e2e --test remote_ssh`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kiln::remote::session::Session;
use kiln::remote::ssh::SshTarget;
use kiln::remote::version;
use kiln::workspace;
use kiln_e2e::dev_session::kiln_binary;
use kiln_e2e::sshd::{HOST, Sshd, agent_command, mirrors_dir};
use kiln_e2e::workspace_root;

/// A server, and where its agent keeps its mirrors.
struct Remote {
    sshd: Sshd,
    mirrors: tempfile::TempDir,
}

impl Remote {
    fn start() -> Option<Remote> {
        let sshd = Sshd::start()?;
        let mirrors = mirrors_dir();
        Some(Remote { sshd, mirrors })
    }

    /// The agent's command: this test's kiln, its mirrors in a temporary
    /// directory, `extra` variables set (sshd gives it a clean
    /// environment), the shared module target directory (warm builds).
    fn target_with(&self, extra: &[(&str, &str)]) -> SshTarget {
        let module_target = workspace::module_target_dir(&workspace_root());
        SshTarget {
            destination: HOST.to_string(),
            config: Some(self.sshd.ssh_config()),
            remote_kiln: agent_command(
                &kiln_binary(),
                self.mirrors.path(),
                Some(module_target.as_path()),
                extra,
            ),
        }
    }

    fn target(&self) -> SshTarget {
        self.target_with(&[])
    }

    /// The one mirror's tree (tests mirror one workspace each).
    fn tree(&self, session: &Session) -> PathBuf {
        let dir = PathBuf::from(&session.mirror);
        assert!(
            dir.starts_with(self.mirrors.path()),
            "the mirror lies under KILN_MIRROR_ROOT: {}",
            dir.display()
        );
        dir.join("tree")
    }
}

/// A small workspace (no git: every file but target/ travels).
fn small_workspace() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("kiln-remote-ws-")
        .tempdir()
        .expect("temporary directory");
    let d = dir.path();
    fs::create_dir_all(d.join("src")).unwrap();
    fs::create_dir_all(d.join("scripts")).unwrap();
    fs::create_dir_all(d.join("target/release")).unwrap();
    fs::write(
        d.join("Cargo.toml"),
        "[package]\nname = \"small\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    fs::write(
        d.join("src/lib.rs"),
        "pub fn one() -> u32 {\n    1\n}\n\npub fn two() -> u32 {\n    2\n}\n",
    )
    .unwrap();
    fs::write(d.join("scripts/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(d.join("scripts/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(d.join("notes.txt"), "notes\n").unwrap();
    fs::write(d.join("target/release/big-artifact"), vec![7u8; 1 << 20]).unwrap();
    dir
}

fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn the_mirror_follows_the_workspace_and_a_one_line_edit_sends_that_file_only() {
    let Some(remote) = Remote::start() else {
        return;
    };
    let ws = small_workspace();
    let root = ws.path();

    let mut session = Session::connect(&remote.target(), root).expect("handshake accepted");
    let first = session.sync(root).expect("first sync");
    let tree = remote.tree(&session);
    let expected = ["Cargo.toml", "notes.txt", "scripts/run.sh", "src/lib.rs"];
    assert_eq!(files_under(&tree), expected, "target/ never travels");
    assert_eq!(first.files, 4, "{first:?}");
    assert_eq!(first.sent_paths.len(), 4, "{first:?}");
    assert_eq!(first.written, 4, "{first:?}");
    for rel in expected {
        assert_eq!(
            fs::read(tree.join(rel)).unwrap(),
            fs::read(root.join(rel)).unwrap(),
            "{rel}"
        );
        let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
        assert_eq!(
            mtime(&tree.join(rel)),
            mtime(&root.join(rel)),
            "{rel}'s time"
        );
    }
    let mode = fs::metadata(tree.join("scripts/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "the executable bit travels: {mode:o}");
    session.close();

    // A second session: nothing changed, nothing sent.
    let mut session = Session::connect(&remote.target(), root).expect("handshake");
    let before = session.wire_bytes();
    let unchanged = session.sync(root).expect("sync");
    assert!(unchanged.sent_paths.is_empty(), "{unchanged:?}");
    assert_eq!((unchanged.written, unchanged.deleted), (0, 0));
    let manifest_only = session.wire_bytes() - before;

    // A one-line edit: that file only, and its bytes only.
    let lib = root.join("src/lib.rs");
    let edited = fs::read_to_string(&lib)
        .unwrap()
        .replace("    2\n", "    22\n");
    fs::write(&lib, &edited).unwrap();
    let before = session.wire_bytes();
    let one = session.sync(root).expect("sync after an edit");
    assert_eq!(one.sent_paths, ["src/lib.rs"], "{one:?}");
    assert_eq!(one.sent_bytes, edited.len() as u64);
    assert_eq!(one.written, 1);
    let wire = session.wire_bytes() - before;
    assert!(
        wire < manifest_only + edited.len() as u64 + 200,
        "{wire} bytes on the wire for a {}-byte file and a {manifest_only}-byte manifest",
        edited.len()
    );
    assert_eq!(fs::read_to_string(tree.join("src/lib.rs")).unwrap(), edited);

    // A deleted file is deleted in the mirror (its empty folder too).
    fs::remove_file(root.join("scripts/run.sh")).unwrap();
    let gone = session.sync(root).expect("sync after a delete");
    assert_eq!((gone.written, gone.deleted), (0, 1), "{gone:?}");
    assert_eq!(
        files_under(&tree),
        ["Cargo.toml", "notes.txt", "src/lib.rs"]
    );
    assert!(!tree.join("scripts").exists());
    session.close();
}

#[test]
fn an_agent_of_another_version_is_refused_naming_both() {
    let Some(remote) = Remote::start() else {
        return;
    };
    let ws = small_workspace();
    let other = "0.0.1+fp.00000000deadbeef";
    let target = remote.target_with(&[(version::PRETEND_VERSION_ENV, other)]);
    let err = match Session::connect(&target, ws.path()) {
        Ok(_) => panic!("an agent of version {other} was accepted"),
        Err(e) => e,
    };
    assert!(err.contains(other), "the remote's version: {err}");
    assert!(err.contains(&version::own()), "this version: {err}");
    assert!(
        err.contains("cargo install --locked --path harness"),
        "{err}"
    );
    assert!(
        err.contains(&format!("-F {}", remote.sshd.ssh_config().display())),
        "the update command uses the same ssh config: {err}"
    );
    assert!(
        fs::read_dir(remote.mirrors.path())
            .unwrap()
            .next()
            .is_none(),
        "a refused agent opens no mirror"
    );
}

#[test]
fn a_transfer_cut_half_way_leaves_no_half_written_file() {
    let Some(remote) = Remote::start() else {
        return;
    };
    let ws = small_workspace();
    let root = ws.path();
    let old: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("data.bin"), &old).unwrap();
    let mut session = Session::connect(&remote.target(), root).expect("handshake");
    session.sync(root).expect("first sync");
    let tree = remote.tree(&session);
    let mirror = PathBuf::from(&session.mirror);
    session.close();
    let before = files_under(&tree);

    // data.bin changes, new.bin appears; the connection is cut 1 MiB into
    // the contents (ssh killed: the agent sees its input end mid-file).
    let new: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 13) as u8).collect();
    fs::write(root.join("data.bin"), &new).unwrap();
    fs::write(root.join("new.bin"), &new[..(3 << 19)]).unwrap();
    let mut session = Session::connect(&remote.target(), root).expect("handshake");
    session.cut_after_for_test(1 << 20);
    let err = session.sync(root).expect_err("the transfer was cut");
    assert!(err.contains("cut"), "{err}");
    drop(session);

    // The tree is as it was: data.bin whole and old, no new.bin, nothing
    // else. (The agent removes its partial blob once its input ends; the
    // next agent removes any it left.)
    assert_eq!(files_under(&tree), before);
    assert!(
        fs::read(tree.join("data.bin")).unwrap() == old,
        "data.bin is the old one, whole"
    );

    // The next sync completes it and leaves no temporary file behind.
    let mut session = Session::connect(&remote.target(), root).expect("handshake");
    let report = session.sync(root).expect("sync after the cut");
    let mut sent = report.sent_paths.clone();
    sent.sort();
    assert_eq!(sent, ["data.bin", "new.bin"], "{report:?}");
    assert!(fs::read(tree.join("data.bin")).unwrap() == new);
    assert!(fs::read(tree.join("new.bin")).unwrap() == new[..(3 << 19)]);
    session.close();
    assert_eq!(
        files_under(&mirror.join("incoming")),
        Vec::<String>::new(),
        "no temporary or received file left"
    );
}

/// `kiln backends NAMES --on kiln-test`, run in `dir`: (success, stdout, stderr).
fn backends_on(remote: &Remote, dir: &Path, names: &[&str]) -> (bool, String, String) {
    let target = remote.target();
    let started = SystemTime::now();
    let out = std::process::Command::new(kiln_binary())
        .current_dir(dir)
        .arg("backends")
        .args(names)
        .args(["--on", HOST, "--ssh-config"])
        .arg(remote.sshd.ssh_config())
        .arg("--remote-kiln")
        .arg(&target.remote_kiln)
        .output()
        .expect("kiln runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "kiln backends --on took {:.1} s\n{stdout}\n{stderr}",
        started.elapsed().unwrap_or(Duration::ZERO).as_secs_f64()
    );
    (out.status.success(), stdout, stderr)
}

#[test]
fn backends_on_prints_the_remote_machines_cpu_and_vulkan_lines() {
    let Some(remote) = Remote::start() else {
        return;
    };
    // This workspace itself: the mirror keeps its files' times, so the
    // shared module target directory's builds are fresh there too.
    let root = workspace_root();
    let (ok, stdout, stderr) = backends_on(&remote, &root, &["cpu", "vulkan"]);
    assert!(
        stdout.starts_with(&format!("on {HOST}:\n")),
        "{stdout}\n{stderr}"
    );
    let line = |backend: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(backend))
            .unwrap_or_else(|| panic!("no {backend} line: {stdout}\n{stderr}"))
            .to_string()
    };
    assert!(line("cpu ").contains("available"), "{stdout}");
    let vulkan = line("vulkan ");
    if std::env::var_os("KILN_REQUIRE_VULKAN").is_some() {
        assert!(
            vulkan.contains(" available"),
            "lavapipe: {stdout}\n{stderr}"
        );
    }
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("kiln: mirrored ") && !stderr.contains(" sent 0 file(s)"),
        "the first run sends the workspace, and says so: {stderr}"
    );

    // The agent's working files lie under the mirror: the staged
    // libraries in its own target directory.
    let mirrors: Vec<PathBuf> = fs::read_dir(remote.mirrors.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert!(
        mirrors[0].join("target/kiln-stage").is_dir(),
        "staged under {}",
        mirrors[0].display()
    );

    // Again: the mirror is there, nothing is sent; an unknown backend is
    // refused by the remote kiln, which says why.
    let (ok, stdout, stderr) = backends_on(&remote, &root, &["nosuch"]);
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(" sent 0 file(s), 0 B of contents"),
        "{stderr}"
    );
    assert!(stderr.contains("nosuch"), "{stderr}");
}

#[test]
fn the_binary_says_why_it_cannot_use_the_remote() {
    let Some(remote) = Remote::start() else {
        return;
    };
    let root = workspace_root();
    let run = |config: &Path, remote_kiln: &str| {
        let out = std::process::Command::new(kiln_binary())
            .current_dir(&root)
            .args(["backends", "--on", HOST, "--ssh-config"])
            .arg(config)
            .arg("--remote-kiln")
            .arg(remote_kiln)
            .output()
            .expect("kiln runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("{stderr}");
        assert!(!out.status.success(), "{stderr}");
        stderr
    };
    let config = remote.sshd.ssh_config();

    // Another version: both named, the update command, exit status 1.
    let other = "0.0.2+fp.00000000feedface";
    let target = remote.target_with(&[(version::PRETEND_VERSION_ENV, other)]);
    let stderr = run(&config, &target.remote_kiln);
    assert!(
        stderr.contains(other) && stderr.contains(&version::own()),
        "{stderr}"
    );
    assert!(stderr.contains("cargo install --locked"), "{stderr}");

    // No such kiln there: the shell's exit 127, explained.
    let stderr = run(&config, "/nonexistent/kiln");
    assert!(
        stderr.contains("has no `/nonexistent/kiln` to run") && stderr.contains("--remote-kiln"),
        "{stderr}"
    );

    // Nothing listening: ssh's own message, and what it means.
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("ssh_config");
    let text = fs::read_to_string(&config).unwrap().replace(
        &format!("Port {}", remote.sshd.port),
        &format!("Port {}", unused_port()),
    );
    fs::write(&closed, text).unwrap();
    let stderr = run(&closed, &target.remote_kiln);
    assert!(
        stderr.contains(&format!("ssh could not reach {HOST}")),
        "{stderr}"
    );
    assert!(
        fs::read_dir(remote.mirrors.path())
            .unwrap()
            .next()
            .is_none(),
        "no mirror was opened"
    );
}

fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

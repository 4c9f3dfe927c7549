//! The watcher on a real (tiny) workspace: real files, real inotify, real
//! `cargo metadata`. Each save style must give exactly one change set for the
//! edited module; noise must give none.
//!
//! The watcher runs with wide windows here ([`WINDOWS`]): what is tested is
//! how bursts are grouped and classified, and with the real windows (10 ms
//! settle, 50 ms debounce) a stall of this test's thread between two steps
//! of one save (routine on a loaded 2-core machine) splits the save in two
//! change sets. The real windows' latency is shown by the save-to-serving
//! figures of the bench and by the `kiln dev` tests that edit files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use kiln::build::module_graph::ModuleGraph;
use kiln::supervisor::watch::{ChangeSet, ModuleWatcher, WatchOptions};

/// How long to wait for an expected change set.
const DEADLINE: Duration = Duration::from_secs(60);
/// The watcher's windows in these tests: a step of a save may come this
/// late after the one before and still belong to the same burst.
const WINDOWS: WatchOptions = WatchOptions {
    debounce: Duration::from_millis(2000),
    settle: Duration::from_millis(400),
};
/// How long nothing more may arrive after a change set (over the debounce
/// window).
const GRACE: Duration = Duration::from_millis(2500);

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A workspace with two kernel modules (`kernel-foo`, `kernel-bar`), a path
/// package `util` used by foo only, and the contract `shared-state`.
struct Workspace {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(
            &root.join("Cargo.toml"),
            "[workspace]\nresolver = \"3\"\nmembers = [\"kernels/foo\", \"kernels/bar\", \"shared-state\", \"util\"]\n",
        );
        write(
            &root.join("shared-state/Cargo.toml"),
            "[package]\nname = \"shared-state\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        );
        write(
            &root.join("shared-state/src/lib.rs"),
            "pub const V: u32 = 1;\n",
        );
        write(
            &root.join("util/Cargo.toml"),
            "[package]\nname = \"util\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        );
        write(&root.join("util/src/lib.rs"), "pub fn one() -> u32 { 1 }\n");
        for (name, deps) in [
            (
                "foo",
                "shared-state = { path = \"../../shared-state\" }\nutil = { path = \"../../util\" }\n",
            ),
            ("bar", "shared-state = { path = \"../../shared-state\" }\n"),
        ] {
            write(
                &root.join(format!("kernels/{name}/Cargo.toml")),
                &format!(
                    "[package]\nname = \"kernel-{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                     [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n{deps}"
                ),
            );
            write(
                &root.join(format!("kernels/{name}/src/lib.rs")),
                "pub fn kernel() -> u32 { 1 }\n",
            );
        }
        Workspace { _dir: dir, root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn watch(&self) -> ModuleWatcher {
        let graph = ModuleGraph::discover(&self.root).unwrap();
        ModuleWatcher::start(graph, WINDOWS).unwrap()
    }
}

/// Waits for one change set, then asserts that no other follows.
fn expect_exactly_one(changes: &Receiver<ChangeSet>) -> ChangeSet {
    let set = changes
        .recv_timeout(DEADLINE)
        .expect("no change set within the deadline");
    expect_none(changes);
    set
}

fn expect_none(changes: &Receiver<ChangeSet>) {
    match changes.recv_timeout(GRACE) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("unexpected change set: {other:?}"),
    }
}

fn assert_foo_only(set: &ChangeSet, ws: &Workspace) {
    assert_eq!(
        set.modules.iter().map(String::as_str).collect::<Vec<_>>(),
        ["kernel-foo"]
    );
    assert!(!set.contract_changed);
    assert_eq!(set.paths, [ws.path("kernels/foo/src/lib.rs")]);
}

#[test]
fn write_in_place_gives_one_change_set() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    let written = Instant::now();
    write(
        &ws.path("kernels/foo/src/lib.rs"),
        "pub fn kernel() -> u32 { 2 }\n",
    );
    let set = watcher
        .changes()
        .recv_timeout(DEADLINE)
        .expect("no change set within the deadline");
    let latency = written.elapsed();
    eprintln!(
        "write -> change set: {:.1} ms (first event -> change set: {:.1} ms)",
        latency.as_secs_f64() * 1e3,
        set.first_event_at.elapsed().as_secs_f64() * 1e3
    );
    assert!(set.first_event_at >= written);
    expect_none(watcher.changes());
    assert_foo_only(&set, &ws);
}

#[test]
fn vim_style_backup_rename_and_write_gives_one_change_set() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    let src = ws.path("kernels/foo/src");
    // What vim does with `backupcopy=no`: probe file, swap file, rename the
    // original to the backup, write a new file, delete the backup.
    write(&src.join("4913"), "");
    fs::remove_file(src.join("4913")).unwrap();
    write(&src.join(".lib.rs.swp"), "swap");
    fs::rename(src.join("lib.rs"), src.join("lib.rs~")).unwrap();
    write(&src.join("lib.rs"), "pub fn kernel() -> u32 { 3 }\n");
    fs::remove_file(src.join("lib.rs~")).unwrap();
    fs::remove_file(src.join(".lib.rs.swp")).unwrap();
    let set = expect_exactly_one(watcher.changes());
    assert_foo_only(&set, &ws);
}

#[test]
fn write_temp_then_rename_gives_one_change_set() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    let src = ws.path("kernels/foo/src");
    // VS Code / JetBrains style atomic save.
    write(
        &src.join(".lib.rs.8f3a.tmp"),
        "pub fn kernel() -> u32 { 4 }\n",
    );
    fs::rename(src.join(".lib.rs.8f3a.tmp"), src.join("lib.rs")).unwrap();
    let set = expect_exactly_one(watcher.changes());
    assert_foo_only(&set, &ws);
}

#[test]
fn rename_of_identical_content_gives_nothing() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    let src = ws.path("kernels/foo/src");
    let same = fs::read_to_string(src.join("lib.rs")).unwrap();
    write(&src.join("lib.rs.tmp"), &same);
    fs::rename(src.join("lib.rs.tmp"), src.join("lib.rs")).unwrap();
    // A touch (metadata only) and a rewrite of the same bytes.
    fs::File::options()
        .append(true)
        .open(src.join("lib.rs"))
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    write(&src.join("lib.rs"), &same);
    expect_none(watcher.changes());
    // Still watching: a real edit comes through, once.
    write(&src.join("lib.rs"), "pub fn kernel() -> u32 { 5 }\n");
    assert_foo_only(&expect_exactly_one(watcher.changes()), &ws);
}

#[test]
fn delete_then_create_gives_one_change_set() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    let lib = ws.path("kernels/foo/src/lib.rs");
    fs::remove_file(&lib).unwrap();
    write(&lib, "pub fn kernel() -> u32 { 6 }\n");
    let set = expect_exactly_one(watcher.changes());
    assert_foo_only(&set, &ws);
}

#[test]
fn a_writer_pausing_mid_file_gives_one_change_set_of_the_whole_file() {
    use std::io::Write;
    let ws = Workspace::new();
    let watcher = ws.watch();
    let lib = ws.path("kernels/foo/src/lib.rs");
    let whole = "pub fn kernel() -> u32 {\n    10\n}\n";
    let mut file = fs::File::create(&lib).unwrap();
    file.write_all(&whole.as_bytes()[..10]).unwrap();
    file.flush().unwrap();
    // A pause longer than the settle period (the file is still open for
    // writing: not a complete save), shorter than the debounce window.
    std::thread::sleep(WINDOWS.settle * 2);
    file.write_all(&whole.as_bytes()[10..]).unwrap();
    drop(file);
    let set = expect_exactly_one(watcher.changes());
    assert_foo_only(&set, &ws);
    assert_eq!(fs::read_to_string(&lib).unwrap(), whole);
}

#[test]
fn a_save_in_two_steps_gives_one_change_set() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    let lib = ws.path("kernels/foo/src/lib.rs");
    // Truncate and close, then write and close: two complete saves in a row.
    fs::File::create(&lib).unwrap();
    write(&lib, "pub fn kernel() -> u32 { 11 }\n");
    let set = expect_exactly_one(watcher.changes());
    assert_foo_only(&set, &ws);
}

#[test]
fn deleting_a_source_gives_one_change_set() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    let lib = ws.path("kernels/foo/src/lib.rs");
    fs::remove_file(&lib).unwrap();
    let set = expect_exactly_one(watcher.changes());
    assert_foo_only(&set, &ws);
    // Created again with the same bytes as before the deletion: a change
    // (the build saw no file).
    write(&lib, "pub fn kernel() -> u32 { 1 }\n");
    assert_foo_only(&expect_exactly_one(watcher.changes()), &ws);
}

#[test]
fn swap_and_temp_files_are_ignored() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    let src = ws.path("kernels/foo/src");
    for noise in [
        ".lib.rs.swp",
        ".lib.rs.swx",
        "lib.rs~",
        "4913",
        "#lib.rs#",
        ".#lib.rs",
        "lib.rs.tmp",
        ".lib.rs.tmp",
        "lib.rs.crswap",
        "notes.md",
    ] {
        write(&src.join(noise), "fn noise() {}\n");
        write(&src.join(noise), "fn noise() { 1; }\n");
        fs::remove_file(src.join(noise)).unwrap();
    }
    expect_none(watcher.changes());
    write(&src.join("lib.rs"), "pub fn kernel() -> u32 { 7 }\n");
    assert_foo_only(&expect_exactly_one(watcher.changes()), &ws);
}

#[test]
fn target_dirs_are_ignored() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    write(&ws.path("target/release/build/x/out/gen.rs"), "fn a() {}\n");
    write(&ws.path("kernels/foo/target/debug/gen.rs"), "fn a() {}\n");
    write(
        &ws.path("kernels/foo/target/debug/Cargo.toml"),
        "[package]\n",
    );
    fs::create_dir_all(ws.path("kernels/foo/.git")).unwrap();
    write(&ws.path("kernels/foo/.git/index.rs"), "x\n");
    expect_none(watcher.changes());
    write(
        &ws.path("kernels/foo/src/lib.rs"),
        "pub fn kernel() -> u32 { 8 }\n",
    );
    assert_foo_only(&expect_exactly_one(watcher.changes()), &ws);
}

#[test]
fn contract_edit_says_restart() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    write(
        &ws.path("shared-state/src/lib.rs"),
        "pub const V: u32 = 2;\n",
    );
    let set = expect_exactly_one(watcher.changes());
    assert!(set.contract_changed);
    assert!(set.modules.is_empty(), "{set:?}");
    assert_eq!(set.paths, [ws.path("shared-state/src/lib.rs")]);
}

#[test]
fn path_dependency_edit_rebuilds_its_users_only() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    write(
        &ws.path("util/src/lib.rs"),
        "pub fn one() -> u32 { 2 - 1 }\n",
    );
    let set = expect_exactly_one(watcher.changes());
    assert_eq!(
        set.modules.iter().map(String::as_str).collect::<Vec<_>>(),
        ["kernel-foo"]
    );
    assert!(!set.contract_changed);
}

#[test]
fn new_source_file_and_root_lock_file() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    write(&ws.path("kernels/bar/src/shaders/add.wgsl"), "// add\n");
    let set = expect_exactly_one(watcher.changes());
    assert_eq!(
        set.modules.iter().map(String::as_str).collect::<Vec<_>>(),
        ["kernel-bar"]
    );
    let lock = fs::read_to_string(ws.path("Cargo.lock")).unwrap();
    write(&ws.path("Cargo.lock"), &format!("{lock}\n"));
    let set = expect_exactly_one(watcher.changes());
    assert_eq!(
        set.modules.iter().map(String::as_str).collect::<Vec<_>>(),
        ["kernel-bar", "kernel-foo"]
    );
}

#[test]
fn edits_to_two_modules_in_one_burst_give_one_change_set() {
    let ws = Workspace::new();
    let watcher = ws.watch();
    write(
        &ws.path("kernels/foo/src/lib.rs"),
        "pub fn kernel() -> u32 { 9 }\n",
    );
    write(
        &ws.path("kernels/bar/src/lib.rs"),
        "pub fn kernel() -> u32 { 9 }\n",
    );
    let set = expect_exactly_one(watcher.changes());
    assert_eq!(
        set.modules.iter().map(String::as_str).collect::<Vec<_>>(),
        ["kernel-bar", "kernel-foo"]
    );
    assert_eq!(set.paths.len(), 2);
}

/// A change of the workspace root's attributes (a `chmod` of it) concerns
/// every source under it: the watcher re-hashes them all, and its own reads
/// give open events. Those must not keep the burst going: they did, and a
/// save after it was never reported.
#[test]
fn rehashing_the_whole_workspace_does_not_hold_a_save_back() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    for i in 0..400 {
        write(
            &ws.path(&format!("kernels/bar/src/part{i}.rs")),
            &format!("pub fn part{i}() -> u32 {{ {i} }}\n"),
        );
    }
    let watcher = ws.watch();
    fs::set_permissions(&ws.root, fs::Permissions::from_mode(0o711)).unwrap();
    std::thread::sleep(WINDOWS.settle);
    write(
        &ws.path("kernels/foo/src/lib.rs"),
        "pub fn kernel() -> u32 { 2 }\n",
    );
    assert_foo_only(&expect_exactly_one(watcher.changes()), &ws);
}

//! Direct rustc builds with real cargo and rustc: after a cargo build of a
//! tiny cdylib, an edit of the crate's own source is built by re-running the
//! recorded rustc command (cargo made unusable proves it is not run), a
//! compile error on that path is reported with file, line and column, and a
//! manifest edit or unknown changes go through cargo.

use std::fs;
use std::path::{Path, PathBuf};

use kiln::build::module_build::{BuildOutcome, ModuleBuilder};
use kiln::build::module_graph::{KernelModule, ModuleGraph};

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn lib_rs(answer: &str) -> String {
    format!("#[no_mangle]\npub extern \"C\" fn tiny_answer() -> u32 {{\n    {answer}\n}}\n")
}

/// A workspace holding one kernel module, `kernel-tiny`, with no dependencies.
fn tiny_workspace() -> (tempfile::TempDir, PathBuf, KernelModule) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    write(
        &root.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"kernels/tiny\"]\n",
    );
    write(
        &root.join("kernels/tiny/Cargo.toml"),
        "[package]\nname = \"kernel-tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n",
    );
    write(&root.join("kernels/tiny/src/lib.rs"), &lib_rs("42"));
    let graph = ModuleGraph::discover(&root).unwrap();
    let module = graph.module("kernel-tiny").unwrap().clone();
    (dir, root, module)
}

fn build(builder: &ModuleBuilder, module: &KernelModule) -> BuildOutcome {
    builder.build(module, &mut |_| {}).unwrap()
}

fn answer_of(artifact: &Path, scratch: &Path) -> u32 {
    let copy = scratch.join(format!(
        "answer-{}.so",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    fs::copy(artifact, &copy).unwrap();
    // SAFETY: the library is the tiny module built above: no initialisers,
    // and `tiny_answer` is `extern "C" fn() -> u32` as declared here; the
    // library outlives the call.
    unsafe {
        let lib = libloading::Library::new(&copy).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn() -> u32> = lib.get(b"tiny_answer").unwrap();
        f()
    }
}

fn built(outcome: BuildOutcome) -> PathBuf {
    match outcome {
        BuildOutcome::Built { artifact, .. } => artifact,
        BuildOutcome::Failed { rendered, .. } => panic!("build failed:\n{rendered}"),
    }
}

fn failed(outcome: BuildOutcome) -> String {
    match outcome {
        BuildOutcome::Failed { rendered, .. } => rendered,
        BuildOutcome::Built { .. } => panic!("the build succeeded"),
    }
}

#[test]
fn own_source_edits_skip_cargo_and_manifest_edits_do_not() {
    let (dir, root, module) = tiny_workspace();
    let graph = ModuleGraph::discover(&root).unwrap();
    let builder = ModuleBuilder::for_workspace(&graph).with_color(false);
    let source = root.join("kernels/tiny/src/lib.rs");
    let manifest = root.join("kernels/tiny/Cargo.toml");
    // Any build that runs cargo fails: cargo cannot run `/bin/false -vV`.
    let no_cargo = builder.clone().with_env("RUSTC", "/bin/false");

    // The first build goes through cargo and records rustc's invocation.
    let first = built(build(&builder, &module));
    assert_eq!(answer_of(&first, dir.path()), 42);

    // An edit of the crate's own source: rustc directly, new code.
    write(&source, &lib_rs("43"));
    let direct = built(build(
        &no_cargo.after_changes(std::slice::from_ref(&source)),
        &module,
    ));
    assert_eq!(answer_of(&direct, dir.path()), 43, "the edit is built");

    // A compile error on the direct path: file, line and column, as cargo
    // reports them, and no colour.
    write(&source, &lib_rs("40 +"));
    let rendered = failed(build(
        &no_cargo.after_changes(std::slice::from_ref(&source)),
        &module,
    ));
    assert!(
        rendered.contains("error: expected expression, found `}`"),
        "{rendered}"
    );
    assert!(rendered.contains("src/lib.rs:4:1"), "{rendered}");
    assert!(
        rendered.contains("could not compile `kernel-tiny` (lib) due to 1 previous error"),
        "{rendered}"
    );
    assert!(!rendered.contains('\u{1b}'), "colour while off: {rendered}");
    // The fix, still without cargo.
    write(&source, &lib_rs("40 + 4"));
    let fixed = built(build(
        &no_cargo.after_changes(std::slice::from_ref(&source)),
        &module,
    ));
    assert_eq!(answer_of(&fixed, dir.path()), 44);

    // A manifest edit goes through cargo (here: made to fail), and so does
    // a build whose changes are unknown.
    write(
        &manifest,
        &(fs::read_to_string(&manifest).unwrap() + "# a comment\n"),
    );
    let rendered = failed(build(
        &no_cargo.after_changes(std::slice::from_ref(&manifest)),
        &module,
    ));
    assert!(rendered.contains("/bin/false"), "cargo ran: {rendered}");
    failed(build(&no_cargo, &module));
    // A failed cargo build drops the recording: the next own-source edit
    // goes through cargo too, until cargo succeeds.
    write(&source, &lib_rs("45"));
    failed(build(
        &no_cargo.after_changes(std::slice::from_ref(&source)),
        &module,
    ));

    // Real cargo: it compiles the crate again (a direct build left its
    // fingerprint stale on purpose) and records again.
    let by_cargo = built(build(
        &builder.after_changes(std::slice::from_ref(&manifest)),
        &module,
    ));
    assert_eq!(answer_of(&by_cargo, dir.path()), 45);
    write(&source, &lib_rs("46"));
    let direct = built(build(
        &no_cargo.after_changes(std::slice::from_ref(&source)),
        &module,
    ));
    assert_eq!(answer_of(&direct, dir.path()), 46);

    // A new file is not among the sources rustc listed: cargo.
    let new_file = root.join("kernels/tiny/src/extra.rs");
    write(&new_file, "pub fn extra() {}\n");
    failed(build(&no_cargo.after_changes(&[source, new_file]), &module));
}

#[test]
fn another_workspaces_recording_is_never_replayed() {
    let (dir, a_root, a_module) = tiny_workspace();
    let (_b_dir, b_root, b_module) = tiny_workspace();
    let shared = dir.path().join("shared-target");
    let a = ModuleBuilder::new(&a_root, &shared).with_color(false);
    let b = ModuleBuilder::new(&b_root, &shared).with_color(false);
    let a_source = a_root.join("kernels/tiny/src/lib.rs");

    assert_eq!(answer_of(&built(build(&a, &a_module)), dir.path()), 42);
    // A edits its own source: rustc directly.
    write(&a_source, &lib_rs("1"));
    let no_cargo = a.clone().with_env("RUSTC", "/bin/false");
    let direct = built(build(
        &no_cargo.after_changes(std::slice::from_ref(&a_source)),
        &a_module,
    ));
    assert_eq!(answer_of(&direct, dir.path()), 1);

    // B builds into the same target dir: the recording is B's now, so A's
    // next own-source edit must go through cargo (made to fail here), and
    // real cargo builds A's code.
    write(&b_root.join("kernels/tiny/src/lib.rs"), &lib_rs("7"));
    assert_eq!(answer_of(&built(build(&b, &b_module)), dir.path()), 7);
    write(&a_source, &lib_rs("2"));
    failed(build(
        &no_cargo.after_changes(std::slice::from_ref(&a_source)),
        &a_module,
    ));
    let by_cargo = built(build(
        &a.after_changes(std::slice::from_ref(&a_source)),
        &a_module,
    ));
    assert_eq!(answer_of(&by_cargo, dir.path()), 2);
}

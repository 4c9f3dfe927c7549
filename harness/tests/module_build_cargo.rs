//! Builds a real tiny cdylib with real cargo: success, a syntax error, the fix.

use std::fs;
use std::path::{Path, PathBuf};

use kiln::build::module_build::{BuildOutcome, BuildProgress, ModuleBuilder};
use kiln::build::module_graph::{KernelModule, ModuleGraph};

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
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
    write(
        &root.join("kernels/tiny/src/lib.rs"),
        "#[no_mangle]\npub extern \"C\" fn tiny_answer() -> u32 {\n    42\n}\n",
    );
    let graph = ModuleGraph::discover(&root).unwrap();
    let module = graph.module("kernel-tiny").unwrap().clone();
    (dir, root, module)
}

fn build(builder: &ModuleBuilder, module: &KernelModule) -> (BuildOutcome, Vec<BuildProgress>) {
    let mut steps = Vec::new();
    let outcome = builder
        .build(module, &mut |p| steps.push(p.clone()))
        .unwrap();
    (outcome, steps)
}

#[test]
fn builds_fails_with_rustc_message_and_recovers() {
    let (_dir, root, module) = tiny_workspace();
    let target = root.join("target/kiln-modules");
    let graph = ModuleGraph::discover(&root).unwrap();
    let builder = ModuleBuilder::for_workspace(&graph).with_color(false);
    assert_eq!(builder.target_dir(), target);

    let (outcome, steps) = build(&builder, &module);
    let BuildOutcome::Built {
        artifact, fresh, ..
    } = outcome
    else {
        panic!("first build failed: {outcome:?}");
    };
    assert!(!fresh);
    assert!(artifact.starts_with(&target), "{}", artifact.display());
    assert_eq!(
        artifact.extension().and_then(|e| e.to_str()),
        Some("so"),
        "{}",
        artifact.display()
    );
    let bytes = fs::read(&artifact).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "not a shared object");
    assert!(
        steps
            .iter()
            .any(|s| s.step.starts_with("Compiling kernel-tiny")),
        "{steps:?}"
    );
    assert!(steps.iter().any(|s| s.units_done >= 1), "{steps:?}");

    // Nothing changed: cargo reports the artifact fresh.
    let (outcome, _) = build(&builder, &module);
    assert!(
        matches!(&outcome, BuildOutcome::Built { fresh: true, artifact: a, .. } if *a == artifact),
        "{outcome:?}"
    );

    // A syntax error: rustc's message, the file and cargo's summary.
    let lib = root.join("kernels/tiny/src/lib.rs");
    write(
        &lib,
        "#[no_mangle]\npub extern \"C\" fn tiny_answer() -> u32 {\n    40 +\n}\n",
    );
    let (outcome, _) = build(&builder, &module);
    let BuildOutcome::Failed { rendered, .. } = outcome else {
        panic!("a syntax error built: {outcome:?}");
    };
    assert!(
        rendered.contains("error: expected expression, found `}`"),
        "{rendered}"
    );
    assert!(rendered.contains("src/lib.rs:4:1"), "{rendered}");
    assert!(
        rendered.contains("could not compile `kernel-tiny`"),
        "{rendered}"
    );
    assert!(
        !rendered.contains("Compiling"),
        "status lines leaked: {rendered}"
    );
    assert!(!rendered.contains('\u{1b}'), "colour while off: {rendered}");

    // Fixed: built again, from the new source.
    write(
        &lib,
        "#[no_mangle]\npub extern \"C\" fn tiny_answer() -> u32 {\n    40 + 2\n}\n",
    );
    let (outcome, _) = build(&builder, &module);
    assert!(
        matches!(&outcome, BuildOutcome::Built { fresh: false, artifact: a, .. } if a.exists()),
        "{outcome:?}"
    );
}

#[test]
fn colour_and_warnings_are_rendered_by_cargo() {
    let (_dir, root, module) = tiny_workspace();
    let builder = ModuleBuilder::new(&root, root.join("target/kiln-modules")).with_color(true);
    write(
        &root.join("kernels/tiny/src/lib.rs"),
        "#[no_mangle]\npub extern \"C\" fn tiny_answer() -> u32 {\n    let unused = 1;\n    42\n}\n",
    );
    let (outcome, _) = build(&builder, &module);
    let BuildOutcome::Built { warnings, .. } = outcome else {
        panic!("build failed: {outcome:?}");
    };
    assert!(warnings.contains("unused variable"), "{warnings}");
    assert!(warnings.contains('\u{1b}'), "no colour: {warnings}");

    write(
        &root.join("kernels/tiny/src/lib.rs"),
        "pub fn f() -> u32 { undefined_name }\n",
    );
    let (outcome, _) = build(&builder, &module);
    let BuildOutcome::Failed { rendered, .. } = outcome else {
        panic!("an error built: {outcome:?}");
    };
    assert!(rendered.contains("E0425"), "{rendered}");
    assert!(rendered.contains('\u{1b}'), "no colour: {rendered}");
}

/// Calls `tiny_answer` in a copy of `artifact` (a copy: the file is
/// rewritten by the next build, and dlopen caches by path).
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

#[test]
fn a_shared_target_dir_never_serves_another_workspaces_build() {
    let (_a_dir, a_root, a_module) = tiny_workspace();
    let (_b_dir, b_root, b_module) = tiny_workspace();
    write(
        &b_root.join("kernels/tiny/src/lib.rs"),
        "#[no_mangle]\npub extern \"C\" fn tiny_answer() -> u32 {\n    7\n}\n",
    );
    let shared = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let a = ModuleBuilder::new(&a_root, shared.path()).with_color(false);
    let b = ModuleBuilder::new(&b_root, shared.path()).with_color(false);

    let (outcome, _) = build(&a, &a_module);
    let BuildOutcome::Built { artifact, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(answer_of(&artifact, scratch.path()), 42);
    let (outcome, _) = build(&b, &b_module);
    let BuildOutcome::Built {
        artifact: b_artifact,
        ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_ne!(b_artifact, artifact, "each workspace gets its own copy");
    assert_eq!(answer_of(&b_artifact, scratch.path()), 7);
    assert_eq!(
        answer_of(&artifact, scratch.path()),
        42,
        "A's copy is A's code although B rewrote the shared file"
    );
    let shared_file = shared
        .path()
        .join("release")
        .join(artifact.file_name().unwrap());
    assert_eq!(
        answer_of(&shared_file, scratch.path()),
        7,
        "the shared file holds B's code"
    );

    // A's sources did not change, so cargo would call A's build fresh and
    // hand back B's file: the builder rebuilds it instead.
    let (outcome, _) = build(&a, &a_module);
    let BuildOutcome::Built {
        artifact: again,
        fresh,
        ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(again, artifact);
    assert!(!fresh, "rebuilt, not served as fresh");
    assert_eq!(
        answer_of(&again, scratch.path()),
        42,
        "A's build serves A's code"
    );

    // And A's next build, with nothing changed, is fresh again.
    let (outcome, _) = build(&a, &a_module);
    assert!(
        matches!(outcome, BuildOutcome::Built { fresh: true, .. }),
        "{outcome:?}"
    );
}

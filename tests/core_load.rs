//! Loading: versioned copies are independent libraries; every kind of bad
//! library is refused with its own clear message before any Rust-ABI call.

use kiln::process::mapped_files_under;
use kiln::{EngineHandle, EngineOptions, LoadError, LoadedModule};
use kiln_e2e::*;
use shared_state::{Call, Tensor};
use std::sync::Arc;

fn open_err(stage: &kiln::StagingDir, name: &str, artifact: &std::path::Path) -> LoadError {
    let staged = stage_file(stage, name, artifact);
    LoadedModule::open(staged).expect_err("must be refused")
}

#[test]
fn two_versioned_copies_are_two_independent_libraries() {
    let stage = staging("two-copies");
    let a = load_fresh(&stage, "kernel-cpu");
    let b = load_fresh(&stage, "kernel-cpu");
    assert_ne!(a.staged.path, b.staged.path);
    assert!(
        a.staged
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("kernel-cpu-v1-")
    );
    assert!(
        b.staged
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("kernel-cpu-v2-")
    );

    let mapped = mapped_files_under(stage.path(), None);
    assert_eq!(
        mapped.iter().filter(|m| m.executable).count(),
        2,
        "{mapped:?}"
    );

    let options = EngineOptions {
        threads: 2,
        ..Default::default()
    };
    let (ea, _) = EngineHandle::start(Arc::new(a), &options, None).unwrap();
    let (eb, _) = EngineHandle::start(Arc::new(b), &options, None).unwrap();
    ea.put_resident("x", Tensor::from_f32(&[2], vec![1.0, 2.0]))
        .unwrap();
    eb.put_resident("x", Tensor::from_f32(&[1], vec![9.0]))
        .unwrap();
    ea.run(Call::new("saxpy").resident("x").resident("x"))
        .unwrap();
    assert_eq!(ea.read_resident("x").unwrap().as_f32().unwrap(), [1.0, 2.0]);
    assert_eq!(eb.read_resident("x").unwrap().as_f32().unwrap(), [9.0]);
    let ca = ea.info().unwrap().notes["counters/calls/saxpy"].clone();
    assert_eq!(ca, shared_state::Scalar::I64(1));
    assert!(
        !eb.info()
            .unwrap()
            .notes
            .contains_key("counters/calls/saxpy")
    );

    drop(ea);
    let mapped = mapped_files_under(stage.path(), None);
    assert_eq!(mapped.len(), 1, "only b stays mapped: {mapped:?}");
    drop(eb);
    assert!(mapped_files_under(stage.path(), None).is_empty());
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let stage = staging("not-a-library");
    let dir = stage.path().join("src-files");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, b"this is a text file, not an ELF object\n").unwrap();
    let err = open_err(&stage, "fake", &fake);
    assert!(matches!(err, LoadError::NotALibrary { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("refused fake-v1: "), "{text}");
    assert!(text.contains("is not a loadable library"), "{text}");
}

#[test]
fn a_library_without_a_fingerprint_is_refused() {
    let stage = staging("no-fingerprint");
    let err = open_err(&stage, "kiln-test-bare", &module_artifact("kiln-test-bare"));
    assert!(matches!(err, LoadError::NoFingerprint { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no `kiln_abi_fingerprint` symbol"),
        "{err}"
    );
}

#[test]
fn a_library_without_a_factory_is_refused() {
    let stage = staging("no-factory");
    let err = open_err(
        &stage,
        "kiln-test-no-factory",
        &module_artifact("kiln-test-no-factory"),
    );
    match &err {
        LoadError::MissingEntryPoint { symbol, .. } => assert_eq!(*symbol, "kiln_create_engine"),
        other => panic!("wrong refusal: {other:?}"),
    }
    assert!(err.to_string().contains("no engine factory"), "{err}");
}

#[test]
fn a_module_built_with_other_settings_is_refused_naming_the_field() {
    // A real second build of a module with a different opt-level, in its own
    // target directory.
    let host_opt = kiln::host_fingerprint()
        .get("opt-level")
        .unwrap()
        .to_string();
    let other_opt = if host_opt == "1" { "2" } else { "1" };
    let profile_var = if kiln::workspace::HOST_PROFILE == "dev" {
        "CARGO_PROFILE_DEV_OPT_LEVEL"
    } else {
        "CARGO_PROFILE_RELEASE_OPT_LEVEL"
    };
    let target = kiln::workspace::target_dir(&workspace_root()).join("kiln-test-other-opt");
    let artifact = build_module_into(
        "kiln-test-misbehaving",
        &target,
        &[(profile_var, other_opt)],
    );
    let stage = staging("mismatch");
    let err = open_err(&stage, "kiln-test-misbehaving", &artifact);
    let LoadError::Mismatch { differences, .. } = &err else {
        panic!("wrong refusal: {err:?}")
    };
    assert!(
        differences.iter().any(|d| d.field == "opt-level"),
        "{differences:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("refused kiln-test-misbehaving-v1: built with opt-level {other_opt}, host has {host_opt}")),
        "{text}"
    );
    // Nothing of it stays mapped: refused before any Rust-ABI call, closed.
    assert!(mapped_files_under(stage.path(), None).is_empty());
}

#[test]
fn a_staged_file_changed_after_copy_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let stage = staging("changed");
    let staged = stage_file(&stage, "kernel-cpu", &module_artifact("kernel-cpu"));
    std::fs::set_permissions(&staged.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = std::fs::read(&staged.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&staged.path, bytes).unwrap();
    let err = LoadedModule::open(staged).expect_err("changed file must be refused");
    assert!(
        err.to_string().contains("changed after it was copied"),
        "{err}"
    );
}

#[test]
fn the_staging_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let stage = staging("private");
    let mode = std::fs::metadata(stage.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let staged = stage_file(&stage, "kernel-cpu", &module_artifact("kernel-cpu"));
    let mode = std::fs::metadata(&staged.path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o500, "staged copies are read-only");
    assert!(
        !staged
            .path
            .starts_with(kiln::workspace::module_target_dir(&workspace_root()).join("release"))
    );
}

#[test]
fn module_tracing_events_reach_the_host_subscriber() {
    let logs = CapturedLogs::default();
    let stage = staging("tracing");
    let module = load_fresh(&stage, "kernel-cpu");
    tracing::subscriber::with_default(logs.subscriber(), || {
        let (engine, _) =
            EngineHandle::start(Arc::new(module), &EngineOptions::default(), None).unwrap();
        drop(engine);
    });
    let text = logs.text();
    // Emitted by kernels/cpu/src/engine.rs inside the module.
    assert!(
        text.contains("cpu engine created"),
        "module event missing:\n{text}"
    );
    assert!(
        text.contains("kernel_cpu"),
        "module target missing:\n{text}"
    );
}

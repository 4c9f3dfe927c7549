//! A panic in any entry point stays inside the module: the host keeps
//! serving the previous version with its state, and the error carries the
//! panic message and location.

use kiln::process::mapped_files_under;
use kiln::{CallError, EngineHandle, EngineOptions, ServedModule, SwapError};
use kiln_e2e::*;
use shared_state::{Call, ErrorKind, Scalar};
use std::sync::Arc;

const MODULE: &str = "kiln-test-misbehaving";

fn count(served: &ServedModule) -> f32 {
    served
        .call(Call::new("count"))
        .unwrap()
        .into_tensor()
        .unwrap()
        .as_f32()
        .unwrap()[0]
}

fn arm(served: &ServedModule, place: &str) {
    served
        .call(Call::new("arm").param("panic_in", Scalar::Text(place.into())))
        .unwrap();
}

fn assert_panic(err: &CallError, message: &str) {
    let e = err
        .engine_error()
        .unwrap_or_else(|| panic!("not an engine error: {err:?}"));
    assert_eq!(e.kind, ErrorKind::Panic, "{err}");
    assert!(e.message.contains(message), "{err}");
    assert!(
        e.message.contains("misbehaving/src/lib.rs"),
        "location missing: {err}"
    );
}

#[test]
fn panic_in_create_is_an_error() {
    let stage = staging("panic-create");
    let mut options = EngineOptions::default();
    options.options.insert("panic_in".into(), "create".into());
    let err =
        EngineHandle::start(Arc::new(load_fresh(&stage, MODULE)), &options, None).unwrap_err();
    assert_panic(&err, "deliberate panic in create");
    assert!(
        mapped_files_under(stage.path(), None)
            .iter()
            .all(|m| !m.executable),
        "failed version must be unloaded"
    );
}

#[test]
fn panic_in_run_leaves_the_engine_serving_with_its_state() {
    let stage = staging("panic-run");
    let (served, _) =
        ServedModule::start(load_fresh(&stage, MODULE), EngineOptions::default(), None).unwrap();
    assert_eq!(count(&served), 1.0);
    let err = served.call(Call::new("panic")).unwrap_err();
    assert_panic(&err, "deliberate panic in run");
    assert_eq!(count(&served), 2.0);
}

#[test]
fn panic_in_export_keeps_the_old_version_serving() {
    let stage = staging("panic-export");
    let (served, _) =
        ServedModule::start(load_fresh(&stage, MODULE), EngineOptions::default(), None).unwrap();
    count(&served);
    arm(&served, "export");
    let err = served.swap(load_fresh(&stage, MODULE)).unwrap_err();
    let SwapError::Export { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_panic(error, "deliberate panic in export");
    assert_eq!(served.label(), format!("{MODULE}-v1"));
    assert_eq!(count(&served), 2.0);
}

#[test]
fn panic_in_import_keeps_the_old_version_serving() {
    let stage = staging("panic-import");
    let (served, _) =
        ServedModule::start(load_fresh(&stage, MODULE), EngineOptions::default(), None).unwrap();
    count(&served);
    count(&served);
    arm(&served, "import");
    let err = served.swap(load_fresh(&stage, MODULE)).unwrap_err();
    let SwapError::Create { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_panic(error, "deliberate panic in import");
    assert_eq!(served.label(), format!("{MODULE}-v1"));
    assert_eq!(count(&served), 3.0);
    // The failed version is gone; only v1 is mapped.
    let mapped = mapped_files_under(stage.path(), None);
    assert_eq!(
        mapped.iter().filter(|m| m.executable).count(),
        1,
        "{mapped:?}"
    );
}

#[test]
fn panic_in_drop_is_contained_and_the_library_still_unloads() {
    let stage = staging("panic-drop");
    let logs = CapturedLogs::default();
    tracing::subscriber::with_default(logs.subscriber(), || {
        let (served, _) =
            ServedModule::start(load_fresh(&stage, MODULE), EngineOptions::default(), None)
                .unwrap();
        count(&served);
        arm(&served, "drop");
        served.swap(load_fresh(&stage, MODULE)).unwrap();
        assert_eq!(count(&served), 2.0);
    });
    assert!(
        logs.text().contains("deliberate panic in drop"),
        "{}",
        logs.text()
    );
    assert!(
        mapped_files_under(stage.path(), None)
            .iter()
            .all(|m| !m.executable)
    );
}

//! Rules about the workspace itself that make loading sound.

use kiln_e2e::workspace_root;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Boxes and Strings cross the module boundary, so every crate must use the
/// one system allocator: a custom global allocator in the host or a module
/// crashes the first time one side frees what the other allocated.
#[test]
fn no_global_allocator_anywhere_in_the_workspace() {
    let needle = concat!("#[global", "_allocator]");
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    assert!(files.len() > 10, "scan found too few files: {files:?}");
    let offenders: Vec<_> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains(needle)
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "custom global allocator in {offenders:?}"
    );

    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    for allocator in [
        "mimalloc",
        "tikv-jemallocator",
        "jemallocator",
        "snmalloc-rs",
        "rpmalloc",
    ] {
        assert!(
            !lock.contains(&format!("name = \"{allocator}\"")),
            "allocator crate {allocator} is in Cargo.lock"
        );
    }
    assert_eq!(kiln::host_fingerprint().get("allocator"), Some("system"));
}

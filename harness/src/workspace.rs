//! Where things are: the workspace root, the target directories, and the
//! cargo profile the host was built with (modules must use the same).

use std::path::{Path, PathBuf};

/// Backend name of the reference module (its directory under `kernels/`):
/// the expected outputs of calls whose workload stores none.
pub const REFERENCE_BACKEND: &str = "reference";

/// The cargo profile this host binary was built with (`dev`, `release`, or
/// a custom profile name). Modules are built with the same one.
pub const HOST_PROFILE: &str = env!("KILN_HOST_PROFILE");

/// The workspace the host was built from.
pub fn built_workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ has a parent")
        .to_path_buf()
}

/// Finds the kiln workspace containing `start`: the nearest ancestor whose
/// `Cargo.toml` declares a `[workspace]` and which has `shared-state/`.
pub fn find_workspace_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        (manifest.contains("[workspace]") && dir.join("shared-state").is_dir())
            .then(|| dir.to_path_buf())
    })
}

/// Cargo's target directory for `workspace` (honours `CARGO_TARGET_DIR`).
pub fn target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace.join(dir)
            }
        }
        _ => workspace.join("target"),
    }
}

/// The target directory kernel modules are built in: separate from the
/// host's, so module builds never wait on (or invalidate) the host's own
/// build lock while it serves. `KILN_MODULE_TARGET_DIR` overrides it (tests
/// share one across workspace copies).
pub fn module_target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("KILN_MODULE_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir(workspace).join("kiln-modules"),
    }
}

/// Where cargo puts a package's cdylib for `profile` under `target_dir`.
pub fn artifact_path(target_dir: &Path, profile: &str, package: &str) -> PathBuf {
    let dir = if profile == "dev" { "debug" } else { profile };
    target_dir
        .join(dir)
        .join(format!("lib{}.so", package.replace('-', "_")))
}

/// The staging root: under the target directory (not /tmp, which may be
/// mounted noexec, where dlopen fails with "failed to map segment").
pub fn staging_root(workspace: &Path) -> PathBuf {
    target_dir(workspace).join("kiln-stage")
}

//! Builds the modules the benchmark loads, with real cargo, the way
//! `kiln dev` does: the host's profile, into the module target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::workspace;

/// The cargo profile the benchmark itself was built with, which modules
/// are built with too: under `cargo bench` that is `bench` (which
/// [`workspace::HOST_PROFILE`] reports as `release`, the directory both
/// build into). Building modules with the very profile the host used keeps
/// every setting identical even if `[profile.bench]` is ever customized.
pub fn host_cargo_profile(is_bench: bool) -> &'static str {
    if is_bench && workspace::HOST_PROFILE == "release" {
        "bench"
    } else {
        workspace::HOST_PROFILE
    }
}

/// Where cargo puts `package`'s cdylib for `profile` under `target_dir`
/// (`dev` and `test` build into `debug/`, `release` and `bench` into
/// `release/`, a custom profile into its own name).
pub fn artifact_path(target_dir: &Path, profile: &str, package: &str) -> PathBuf {
    let dir = match profile {
        "dev" | "test" => "debug",
        "release" | "bench" => "release",
        custom => custom,
    };
    target_dir
        .join(dir)
        .join(format!("lib{}.so", package.replace('-', "_")))
}

/// Builds `package` with cargo profile `profile` (see
/// [`host_cargo_profile`]) into the workspace's module target directory and
/// returns its cdylib.
///
/// `unify_with` are extra cargo arguments naming what the host was built
/// together with (e.g. `-p kiln-bench --lib --bench alternatives`): cargo
/// unifies features across everything one invocation builds, and a
/// dev-dependency of the host (here hot-lib-reloader, whose macro enables
/// more `syn` features) changes the features, hence the crate metadata and
/// the `TypeId`s, of the contract's dependencies (`tracing` through
/// `tracing-attributes`). Building the module in the same invocation gives
/// it the very same contract build, which the fingerprint checks.
pub fn build_module(
    workspace_root: &Path,
    package: &str,
    profile: &str,
    unify_with: &[String],
) -> Result<PathBuf, String> {
    let target_dir = workspace::module_target_dir(workspace_root);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut lib_only = Vec::new();
    if !unify_with.is_empty() {
        // Target filters apply to every selected package: keep the
        // module's library in.
        lib_only.push("--lib");
    }
    let out = Command::new(&cargo)
        .current_dir(workspace_root)
        .args(["build", "--quiet", "-p", package, "--profile", profile])
        .args(&lib_only)
        .args(unify_with)
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .map_err(|e| format!("cannot run {cargo} to build {package}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} --profile {profile} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let artifact = artifact_path(&target_dir, profile, package);
    if !artifact.is_file() {
        return Err(format!(
            "cargo built {package} but there is no {}",
            artifact.display()
        ));
    }
    Ok(artifact)
}

/// Builds the `kiln` binary (`cargo build --release -p kiln`) in the
/// workspace's target directory and returns its path.
pub fn build_kiln(workspace_root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(&cargo)
        .current_dir(workspace_root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "kiln",
            "--bin",
            "kiln",
        ])
        .output()
        .map_err(|e| format!("cannot run {cargo} to build kiln: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release -p kiln failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let exe = workspace::target_dir(workspace_root)
        .join("release")
        .join("kiln");
    if !exe.is_file() {
        return Err(format!(
            "cargo built kiln but there is no {}",
            exe.display()
        ));
    }
    Ok(exe)
}

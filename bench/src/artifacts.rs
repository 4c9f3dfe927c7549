//! Builds the modules the benchmark loads, with real cargo, the way
//! `kiln dev` does: the host's profile (into the host's own target
//! directory when built together with the host's targets).

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
/// [`host_cargo_profile`]) through kiln's own module builder, and returns
/// its cdylib (a private copy: stage it before the next build).
///
/// With `unify_with` (what the benchmark host was built with, e.g. `-p
/// kiln-bench --lib --bench alternatives`: `ModuleBuilder::with_unify`, so
/// the module gets the same contract build), it builds into the workspace's
/// own target directory, where that host was just built: everything but
/// the module is fresh there (2.6 s on a fresh clone's `cargo test`
/// build). In the module target directory, the one invocation built the
/// host's whole dependency graph (the harness included) a second time
/// first: about 3 minutes of the bench test's run in CI. Without it, into
/// the module target directory, as `kiln dev` builds.
pub fn build_module(
    workspace_root: &Path,
    package: &str,
    profile: &str,
    unify_with: &[String],
) -> Result<PathBuf, String> {
    let target_dir = if unify_with.is_empty() {
        workspace::module_target_dir(workspace_root)
    } else {
        workspace::target_dir(workspace_root)
    };
    build_module_into(workspace_root, &target_dir, package, profile, unify_with)
}

/// [`build_module`] into `target_dir`.
pub fn build_module_into(
    workspace_root: &Path,
    target_dir: &Path,
    package: &str,
    profile: &str,
    unify_with: &[String],
) -> Result<PathBuf, String> {
    use kiln::build::module_build::{BuildOutcome, ModuleBuilder};
    let builder = ModuleBuilder::new(workspace_root, target_dir)
        .with_profile(profile)
        .with_color(false)
        .with_unify(unify_with);
    match builder.build_package(package, &mut |_| {}) {
        Ok(BuildOutcome::Built { artifact, .. }) => Ok(artifact),
        Ok(BuildOutcome::Failed { rendered, .. }) => Err(format!(
            "cargo build -p {package} --profile {profile} failed:\n{rendered}"
        )),
        Err(e) => Err(format!("cannot build {package}: {e}")),
    }
}

/// Builds the `kiln` binary (`cargo build --release -p kiln --features
/// png`) in the workspace's target directory and returns its path. With
/// the features the workspace's tests and this crate build it with, so
/// that a bench section run from `cargo test --workspace` finds it fresh
/// instead of building it again without them under the running tests.
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
            "--features",
            "png",
        ])
        .output()
        .map_err(|e| format!("cannot run {cargo} to build kiln: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release -p kiln --features png failed:\n{}",
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

//! Builds one kernel module with cargo and finds its `cdylib`.
//!
//! Runs `cargo build -p PACKAGE --profile PROFILE
//! --message-format=json-render-diagnostics --target-dir DIR` on the calling
//! thread. Cargo's JSON messages (stdout) give the artifact path and whether
//! it was fresh; its stderr carries the status lines (`Compiling rayon
//! v1.10.0`), reported as progress, and the compiler's diagnostics exactly as
//! cargo renders them, collected for the caller to print.
//!
//! No flags are added that the host's own build does not have (never
//! `RUSTFLAGS`): host and modules must agree on the ABI fingerprint. The
//! only setting added is `CARGO_PROFILE_RELEASE_INCREMENTAL=true` for release
//! builds, and only when the workspace does not decide incremental
//! compilation itself.

use std::fs;
use std::io::{self, BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use cargo_metadata::{CrateType, Message};

use crate::build::direct_rustc::{CargoResult, Recorder};
use crate::build::module_graph::{KernelModule, ModuleGraph};
use crate::build::provenance;
use crate::events::{self, emit};

/// Subdirectory of the workspace target dir that module builds use, so they
/// never wait on the lock of the host's own build.
pub use super::outcome::{BuildError, BuildOutcome, BuildProgress, strip_ansi};

pub const MODULE_TARGET_SUBDIR: &str = "kiln-modules";

/// Builds kernel modules of one workspace into one target directory.
#[derive(Clone, Debug)]
pub struct ModuleBuilder {
    workspace_root: PathBuf,
    target_dir: PathBuf,
    profile: String,
    color: bool,
    cargo: PathBuf,
    env: Vec<(String, String)>,
    /// Sources the watcher saw change since the last build, when known: a
    /// build of only the module crate's own sources skips cargo.
    changed: Option<Vec<PathBuf>>,
    /// Whether such a build may run rustc directly (`KILN_DIRECT_RUSTC=0`
    /// turns it off).
    direct_rustc: bool,
    /// Extra cargo arguments naming what the host was built together with
    /// ([`ModuleBuilder::with_unify`]).
    unify_with: Vec<String>,
}

impl ModuleBuilder {
    /// A builder for the workspace at `workspace_root` writing to
    /// `target_dir` (use a directory of its own, e.g.
    /// `<workspace target>/kiln-modules`, so module builds never wait on the
    /// host build's lock). Profile `release`; colour when stderr is a terminal;
    /// cargo from `$CARGO`, else `cargo` on the `PATH`.
    pub fn new(workspace_root: impl Into<PathBuf>, target_dir: impl Into<PathBuf>) -> Self {
        ModuleBuilder {
            workspace_root: workspace_root.into(),
            target_dir: target_dir.into(),
            profile: "release".to_string(),
            color: io::stderr().is_terminal(),
            cargo: std::env::var_os("CARGO")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("cargo")),
            env: Vec::new(),
            changed: None,
            direct_rustc: std::env::var_os("KILN_DIRECT_RUSTC").is_none_or(|v| v != "0"),
            unify_with: Vec::new(),
        }
    }

    /// A builder for `graph`'s workspace writing to
    /// `<workspace target dir>/kiln-modules`.
    pub fn for_workspace(graph: &ModuleGraph) -> Self {
        Self::new(
            graph.workspace_root(),
            graph.target_dir().join(MODULE_TARGET_SUBDIR),
        )
    }

    /// Builds with this cargo profile (`release`, `dev`, a custom one).
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = profile.into();
        self
    }

    /// Forces colour on or off (`--color=always|never`, `CARGO_TERM_COLOR`).
    pub fn with_color(mut self, color: bool) -> Self {
        self.color = color;
        self
    }

    /// Builds the module in one cargo invocation with `args` (e.g. `-p
    /// kiln-bench --bench alternatives`: what a host other than `kiln` was
    /// built with), the module's library only. Cargo unifies features across
    /// everything one invocation builds, so a dev-dependency of that host
    /// (hot-lib-reloader's macro enables more `syn` features) changes the
    /// features, hence the metadata and the `TypeId`s, of the contract's
    /// dependencies; built together, the module gets the very contract build
    /// the host has, which the fingerprint checks. Never through the direct
    /// rustc path.
    pub fn with_unify(mut self, args: &[String]) -> Self {
        self.unify_with = args.to_vec();
        if !args.is_empty() {
            self.direct_rustc = false;
        }
        self
    }

    /// Sets an environment variable for cargo (tests use it to build a
    /// module with another profile setting, e.g. `CARGO_PROFILE_RELEASE_OPT_LEVEL`).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Builds the workspace package `package` (any cdylib package, not only
    /// one of `kernels/`), as [`ModuleBuilder::build`] does: under the build
    /// lock, returning a private copy of its cdylib.
    pub fn build_package(
        &self,
        package: &str,
        progress: &mut dyn FnMut(&BuildProgress),
    ) -> Result<BuildOutcome, BuildError> {
        let module = KernelModule {
            package: package.to_string(),
            backend: String::new(),
            dir: self.workspace_root.clone(),
            manifest_path: self.workspace_root.join("Cargo.toml"),
            // Matched by name in cargo's messages.
            package_id: String::new(),
            path_deps: Vec::new(),
        };
        self.build(&module, progress)
    }

    /// This builder for a build after a save that changed `paths` (as the
    /// watcher reports them): when all of them are sources of the module
    /// crate itself and cargo's last build recorded its rustc invocation,
    /// the build runs that rustc command directly, without cargo (see
    /// `direct_rustc.rs`). Without it (or with unknown changes) a build
    /// always goes through cargo.
    pub fn after_changes(&self, paths: &[PathBuf]) -> Self {
        let mut builder = self.clone();
        builder.changed = Some(paths.to_vec());
        builder
    }

    /// Allows or forbids direct rustc builds (on by default).
    pub fn with_direct_rustc(mut self, on: bool) -> Self {
        self.direct_rustc = on;
        self
    }

    /// The target directory builds go to.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// Builds `module`, calling `progress` as cargo moves on. Blocks until
    /// cargo exits.
    ///
    /// The artifact returned is a private copy for this workspace, taken
    /// under an exclusive lock on the target dir (`kiln-build.lock`) held
    /// for the whole build: the file cargo writes is shared by every
    /// workspace building the same package into this dir (cdylib names carry
    /// no hash), so another builder may overwrite it the moment the lock is
    /// released. When the dir is shared with another workspace (a shared
    /// `CARGO_TARGET_DIR` or `KILN_MODULE_TARGET_DIR`), cargo's freshness
    /// check (file times) can also call this workspace's build fresh while
    /// the file holds the other one's code: each build records which
    /// workspace wrote the artifact, and a fresh artifact another workspace
    /// wrote is removed and built again, still under the lock.
    pub fn build(
        &self,
        module: &KernelModule,
        progress: &mut dyn FnMut(&BuildProgress),
    ) -> Result<BuildOutcome, BuildError> {
        let _lock = provenance::lock(&self.target_dir);
        let outcome = self.build_once(module, progress)?;
        let outcome = match &outcome {
            BuildOutcome::Built {
                artifact,
                fresh: true,
                ..
            } if !provenance::built_by(artifact, &self.workspace_root) => {
                provenance::remove_artifact(artifact);
                self.build_once(module, progress)?
            }
            _ => outcome,
        };
        let BuildOutcome::Built {
            artifact,
            ms,
            fresh,
            warnings,
        } = outcome
        else {
            return Ok(outcome);
        };
        provenance::record(&artifact, &self.workspace_root);
        let private = provenance::private_copy(&artifact, &self.target_dir, &self.workspace_root)
            .map_err(|source| BuildError::Copy {
            artifact: artifact.clone(),
            source,
        })?;
        Ok(BuildOutcome::Built {
            artifact: private,
            ms,
            fresh,
            warnings,
        })
    }

    fn build_once(
        &self,
        module: &KernelModule,
        progress: &mut dyn FnMut(&BuildProgress),
    ) -> Result<BuildOutcome, BuildError> {
        let recorder = Recorder::new(&self.target_dir, &module.package, &self.profile);
        if let Some(outcome) = self.try_direct(&recorder, module, progress) {
            return Ok(outcome);
        }
        let mut command = self.command(&module.package);
        let own_wrapper = self.env.iter().any(|(k, _)| k.contains("RUSTC_WRAPPER"));
        // The recording wrapper is for the direct rustc path, which a build
        // together with another host's targets never takes (and whose
        // integration tests need cargo's own `CARGO_BIN_EXE_*` set up).
        if !own_wrapper && self.unify_with.is_empty() {
            recorder.prepare(&mut command);
        }
        let describe = || {
            format!(
                "{} build -p {} --profile {}",
                self.cargo.display(),
                module.package,
                self.profile
            )
        };
        let started = Instant::now();
        let started_clock = std::time::SystemTime::now();
        let mut child = command.spawn().map_err(|source| BuildError::Cargo {
            command: describe(),
            source,
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let mut run = CargoRun::default();
        let (tx, rx) = crossbeam_channel::unbounded::<Output>();
        let read_result = std::thread::scope(|scope| {
            let stderr_tx = tx.clone();
            scope.spawn(move || {
                for line in BufReader::new(stderr).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if stderr_tx.send(Output::Stderr(text)).is_err() {
                        break;
                    }
                }
            });
            let stdout_tx = tx;
            scope.spawn(move || {
                for message in Message::parse_stream(BufReader::new(stdout)) {
                    let item = match message {
                        Ok(m) => Output::Stdout(Box::new(m)),
                        Err(e) => Output::ReadError(e),
                    };
                    if stdout_tx.send(item).is_err() {
                        break;
                    }
                }
            });
            let mut read_error = None;
            for item in rx {
                match item {
                    Output::Stderr(line) => run.stderr_line(line, progress),
                    Output::Stdout(message) => run.message(*message, module, progress),
                    Output::ReadError(e) => read_error = Some(e),
                }
            }
            read_error.map_or(Ok(()), Err)
        });
        let status = child.wait();
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status = status.map_err(|source| BuildError::Cargo {
            command: describe(),
            source,
        })?;
        read_result.map_err(|source| BuildError::Cargo {
            command: describe(),
            source,
        })?;
        let cargo_result = match &run.artifact {
            Some((_, true)) if status.success() => CargoResult::Fresh,
            Some((_, false)) if status.success() => CargoResult::Compiled,
            _ => CargoResult::Failed,
        };
        recorder.after_cargo(module, cargo_result, started_clock);
        if !status.success() {
            let mut rendered = run.rendered;
            if rendered.trim().is_empty() {
                rendered = format!("{} failed ({status}) without a message\n", describe());
            }
            return Ok(BuildOutcome::Failed { rendered, ms });
        }
        match run.artifact {
            Some((artifact, fresh)) => Ok(BuildOutcome::Built {
                artifact,
                ms,
                fresh,
                warnings: run.rendered,
            }),
            None => Err(BuildError::NoArtifact {
                package: module.package.clone(),
                manifest: module.manifest_path.clone(),
            }),
        }
    }

    /// Builds with the recorded rustc command when only the module crate's
    /// own sources changed; `None` when the build must go through cargo
    /// (logged with the reason).
    fn try_direct(
        &self,
        recorder: &Recorder,
        module: &KernelModule,
        progress: &mut dyn FnMut(&BuildProgress),
    ) -> Option<BuildOutcome> {
        let package = &module.package;
        let why_cargo = match (&self.changed, self.direct_rustc) {
            (_, false) => "direct rustc builds are off".to_string(),
            (None, true) => "which sources changed is not known".to_string(),
            (Some(changed), true) => match recorder.direct_build(changed) {
                Err(why) => why,
                Ok(direct) => match direct.run(package, self.color, progress) {
                    Ok(outcome) => {
                        emit!(
                            tracing::Level::INFO,
                            events::BuildPath {
                                module: package.clone(),
                                via: "rustc direct".into(),
                                why: None,
                            },
                            "{package}: rustc direct (only the crate's own sources changed)"
                        );
                        return Some(outcome);
                    }
                    Err(e) => format!("cannot run the recorded rustc command: {e}"),
                },
            },
        };
        emit!(
            tracing::Level::INFO,
            events::BuildPath {
                module: package.clone(),
                via: "cargo".into(),
                why: Some(why_cargo.clone()),
            },
            "{package}: cargo ({why_cargo})"
        );
        None
    }

    fn command(&self, package: &str) -> Command {
        let mut command = Command::new(&self.cargo);
        let color = if self.color { "always" } else { "never" };
        command
            .current_dir(&self.workspace_root)
            .arg("build")
            .arg("-p")
            .arg(package)
            .arg("--profile")
            .arg(&self.profile)
            .arg("--message-format=json-render-diagnostics")
            .arg("--target-dir")
            .arg(&self.target_dir)
            .arg(format!("--color={color}"))
            .env("CARGO_TERM_COLOR", color)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !self.unify_with.is_empty() {
            // Target filters apply to every selected package: keep the
            // module's library in.
            command.arg("--lib").args(&self.unify_with);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if self.profile == "release" && !workspace_sets_incremental(&self.workspace_root, "release")
        {
            command.env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true");
        }
        command
    }
}

/// One piece of cargo's output, from either stream.
enum Output {
    Stderr(String),
    Stdout(Box<Message>),
    ReadError(io::Error),
}

/// What has been seen of one cargo run so far.
#[derive(Default)]
struct CargoRun {
    rendered: String,
    artifact: Option<(PathBuf, bool)>,
    units_done: usize,
}

impl CargoRun {
    fn stderr_line(&mut self, line: String, progress: &mut dyn FnMut(&BuildProgress)) {
        let plain = strip_ansi(&line);
        if let Some(step) = status_line(&plain) {
            progress(&BuildProgress {
                step: step.to_string(),
                units_done: self.units_done,
            });
        } else {
            self.rendered.push_str(&line);
            self.rendered.push('\n');
        }
    }

    fn message(
        &mut self,
        message: Message,
        module: &KernelModule,
        progress: &mut dyn FnMut(&BuildProgress),
    ) {
        let step = match message {
            Message::CompilerArtifact(artifact) => {
                let ours = if module.package_id.is_empty() {
                    package_name(&artifact.package_id.repr) == module.package
                } else {
                    artifact.package_id.repr == module.package_id
                };
                if ours && artifact.target.crate_types.contains(&CrateType::CDyLib) {
                    let suffix = std::env::consts::DLL_SUFFIX;
                    if let Some(file) = artifact
                        .filenames
                        .iter()
                        .find(|f| f.as_str().ends_with(suffix))
                    {
                        self.artifact = Some((file.clone().into_std_path_buf(), artifact.fresh));
                    }
                }
                format!("Compiled {}", artifact.target.name)
            }
            Message::BuildScriptExecuted(script) => {
                format!(
                    "Ran build script of {}",
                    package_name(&script.package_id.repr)
                )
            }
            _ => return,
        };
        self.units_done += 1;
        progress(&BuildProgress {
            step,
            units_done: self.units_done,
        });
    }
}

/// A readable name from a package id (`path+file:///k/cpu#kernel-cpu@0.1.0`,
/// `registry+https://...#rayon@1.10.0`).
fn package_name(id: &str) -> &str {
    let Some((url, fragment)) = id.rsplit_once('#') else {
        return id;
    };
    match fragment.split_once('@') {
        Some((name, _version)) => name,
        // `path+file:///w/kernels/tiny#0.1.0`: the name is the last segment.
        None => url.rsplit('/').next().unwrap_or(url),
    }
}

/// Cargo's status lines are a verb right-aligned in 12 columns, a space and
/// the message (`   Compiling rayon v1.10.0`). Returns `Compiling rayon
/// v1.10.0` for such a line.
fn status_line(line: &str) -> Option<&str> {
    let verb_end = line.len().min(12);
    let (head, rest) = line.split_at_checked(verb_end)?;
    let verb = head.trim_start();
    let is_status = verb.len() >= 4
        && verb.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && verb.chars().all(|c| c.is_ascii_alphabetic())
        && rest.starts_with(' ');
    is_status.then(|| line.trim_start())
}

/// Whether incremental compilation for `profile` is already decided by the
/// environment (`CARGO_INCREMENTAL`, `CARGO_PROFILE_<P>_INCREMENTAL`) or by
/// `[profile.<p>] incremental = ...` in the workspace manifest or
/// `.cargo/config.toml`.
fn workspace_sets_incremental(workspace_root: &Path, profile: &str) -> bool {
    let env_key = format!(
        "CARGO_PROFILE_{}_INCREMENTAL",
        profile.to_ascii_uppercase().replace('-', "_")
    );
    std::env::var_os("CARGO_INCREMENTAL").is_some()
        || std::env::var_os(env_key).is_some()
        || manifests_set_incremental(workspace_root, profile)
}

/// Whether `[profile.<profile>]` of the workspace manifest or of
/// `.cargo/config.toml` has an `incremental` key.
fn manifests_set_incremental(workspace_root: &Path, profile: &str) -> bool {
    let section = format!("[profile.{profile}]");
    [
        workspace_root.join("Cargo.toml"),
        workspace_root.join(".cargo/config.toml"),
        workspace_root.join(".cargo/config"),
    ]
    .iter()
    .filter_map(|file| fs::read_to_string(file).ok())
    .any(|text| {
        let mut in_section = false;
        text.lines().map(str::trim).any(|line| {
            if line.starts_with('[') {
                in_section = line == section;
                false
            } else {
                in_section
                    && line
                        .split_once('=')
                        .is_some_and(|(key, _)| key.trim() == "incremental")
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_recognised() {
        assert_eq!(
            status_line("   Compiling rayon v1.10.0"),
            Some("Compiling rayon v1.10.0")
        );
        assert_eq!(
            status_line("    Finished `release` profile [optimized] target(s) in 0.25s"),
            Some("Finished `release` profile [optimized] target(s) in 0.25s")
        );
        assert_eq!(status_line("error[E0425]: cannot find value `x`"), None);
        assert_eq!(status_line("  --> src/lib.rs:3:5"), None);
        assert_eq!(status_line("3 |     Some text here"), None);
        assert_eq!(status_line("   |"), None);
        assert_eq!(
            strip_ansi("\u{1b}[1m\u{1b}[32m   Compiling\u{1b}[0m foo"),
            "   Compiling foo"
        );
        // A progress line's erase-to-end keeps its carriage return; a
        // hyperlink (OSC 8) keeps its text only.
        assert_eq!(strip_ansi("\r\u{1b}[K  Building"), "\r  Building");
        assert_eq!(
            strip_ansi("see \u{1b}]8;;file:///src/lib.rs\u{1b}\\lib.rs\u{1b}]8;;\u{1b}\\ now"),
            "see lib.rs now"
        );
    }

    #[test]
    fn incremental_setting_is_read_from_the_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(
            root.join("Cargo.toml"),
            "[workspace]\n[profile.dev]\nincremental = false\n",
        )
        .unwrap();
        assert!(!manifests_set_incremental(root, "release"));
        assert!(manifests_set_incremental(root, "dev"));
        fs::create_dir(root.join(".cargo")).unwrap();
        fs::write(
            root.join(".cargo/config.toml"),
            "[profile.release]\nincremental=false\n",
        )
        .unwrap();
        assert!(manifests_set_incremental(root, "release"));
        // This workspace sets it in [profile.release].
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert!(manifests_set_incremental(workspace, "release"));
    }

    #[test]
    fn package_names_from_ids() {
        assert_eq!(
            package_name("path+file:///w/kernels/cpu#kernel-cpu@0.1.0"),
            "kernel-cpu"
        );
        assert_eq!(
            package_name("registry+https://github.com/rust-lang/crates.io-index#rayon@1.10.0"),
            "rayon"
        );
        assert_eq!(package_name("path+file:///w/kernels/tiny#0.1.0"), "tiny");
    }
}

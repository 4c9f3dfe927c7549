//! Re-runs a module crate's own rustc invocation without cargo, when a save
//! changed only that crate's own sources.
//!
//! A no-op `cargo build -p MODULE` in a workspace costs 0.1-0.16 s (load the
//! workspace, resolve, check every unit's fingerprint) before rustc starts;
//! for a one-line kernel edit that is a third of the build. So:
//!
//! - **Recording.** Every cargo build of a module runs with
//!   `RUSTC_WRAPPER` set to a small shell script this file writes into the
//!   target dir. The script runs rustc unchanged (`exec "$@"`: no argument
//!   added or removed) and, for the one `cdylib` compiled (the module crate),
//!   first writes its working directory, arguments and environment. Not
//!   `RUSTC_WORKSPACE_WRAPPER`: cargo hashes that one into the `-C metadata`
//!   of every workspace member, `shared-state` included, which changes the
//!   contract's `TypeId`s and the ABI fingerprint would refuse every module.
//!   `RUSTC_WRAPPER` changes neither metadata nor fingerprints: builds with
//!   and without it reuse each other's artifacts.
//! - **Keeping.** After a successful cargo build the recording is checked
//!   (the crate root lies in the module's directory, the module is a
//!   `cdylib`) and kept with a stamp (size, mtime, inode) of the rustc binary,
//!   of every `--extern` library and of the artifact. A failed cargo build
//!   drops it: until cargo succeeds again, something outside the crate may be
//!   broken and only cargo says what.
//! - **Re-running.** A build whose changed paths are all among the sources
//!   rustc's dep-info lists for the crate (`<out-dir>/<crate>.d`), with every
//!   stamp unchanged, runs the recorded command directly: same program,
//!   arguments, working directory and environment (less cargo's jobserver
//!   variables). Its JSON diagnostics are rendered the way cargo renders
//!   them, the artifact is hard-linked where cargo puts it, and cargo's
//!   fingerprint of the crate is removed so that the next cargo build
//!   compiles it again instead of trusting file times. Anything else (a
//!   manifest, a build script, another crate, a new file, unknown changes,
//!   no recording, another rustc, a dependency rebuilt) goes through cargo.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::build::module_graph::KernelModule;
use crate::build::outcome::{BuildOutcome, BuildProgress, strip_ansi};

/// Directory of the target dir holding the wrapper and the recordings.
const DIR: &str = "kiln-direct";

/// The wrapper cargo runs rustc through (see the module docs).
const WRAPPER: &str = r#"#!/bin/sh
# kiln's RUSTC_WRAPPER for module builds (harness/src/build/direct_rustc.rs).
# Runs rustc unchanged; for the cdylib (the module crate) it first records the
# working directory, the arguments and the environment, so that kiln can re-run
# exactly this command when only the crate's own sources change.
if [ -n "$KILN_RUSTC_RECORD_TO" ]; then
  prev=
  for arg in "$@"; do
    if [ "$prev" = --crate-type ] && [ "$arg" = cdylib ]; then
      printf '%s\0' "$(pwd -P)" "$@" > "$KILN_RUSTC_RECORD_TO.args" &&
        env -0 > "$KILN_RUSTC_RECORD_TO.env"
      break
    fi
    prev=$arg
  done
fi
exec "$@"
"#;

/// Environment variables of the recording that are not passed on: cargo's
/// jobserver (its file descriptors are gone) and the recorder's own.
const DROPPED_ENV: &[&str] = &[
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC_WRAPPER",
    "KILN_RUSTC_RECORD_TO",
];

/// Size, modification time and inode of a file: changes when it is rewritten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let m = fs::metadata(path).ok()?;
        Some(Stamp {
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ino: m.ino(),
        })
    }
}

/// A kept recording: the command and what must not have changed since.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Recording {
    /// Working directory of the rustc run.
    cwd: PathBuf,
    /// The rustc program and its arguments (raw bytes of each).
    argv: Vec<Vec<u8>>,
    /// The environment, less [`DROPPED_ENV`].
    env: Vec<(Vec<u8>, Vec<u8>)>,
    /// `--crate-name`.
    crate_name: String,
    /// `--out-dir`, absolute.
    out_dir: PathBuf,
    /// Stamps of the rustc binary and every `--extern` library.
    inputs: BTreeMap<PathBuf, Stamp>,
    /// The crate's library in `out_dir` and its stamp when last built.
    artifact: PathBuf,
    artifact_stamp: Stamp,
    /// The package has a build script: only cargo knows whether it must
    /// run again (it may read the sources, `rerun-if-changed=src`).
    #[serde(default)]
    build_script: bool,
}

/// How a cargo build of the module ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CargoResult {
    /// It failed.
    Failed,
    /// It succeeded and found the module crate up to date.
    Fresh,
    /// It succeeded and compiled the module crate.
    Compiled,
}

/// Where one module's recording lives in a target dir.
#[derive(Clone, Debug)]
pub(super) struct Recorder {
    dir: PathBuf,
    /// `<dir>/<package>-<profile>`: the wrapper writes `.args` and `.env`.
    raw: PathBuf,
    /// The kept recording (JSON).
    kept: PathBuf,
}

impl Recorder {
    pub(super) fn new(target_dir: &Path, package: &str, profile: &str) -> Recorder {
        let dir = target_dir.join(DIR);
        let raw = dir.join(format!("{package}-{profile}"));
        let kept = dir.join(format!("{package}-{profile}.json"));
        Recorder { dir, raw, kept }
    }

    fn raw_file(&self, ext: &str) -> PathBuf {
        let mut name = self.raw.as_os_str().to_os_string();
        name.push(ext);
        PathBuf::from(name)
    }

    /// Sets up `cargo` to record the module's rustc invocation. Does nothing
    /// (and direct builds stay off) when the user runs rustc through a
    /// wrapper of their own.
    pub(super) fn prepare(&self, cargo: &mut Command) {
        if user_wrapper_set() {
            return;
        }
        match self.write_wrapper() {
            Ok(wrapper) => {
                cargo
                    .env("RUSTC_WRAPPER", wrapper)
                    .env("KILN_RUSTC_RECORD_TO", &self.raw);
            }
            Err(e) => tracing::debug!(
                "cannot write the rustc recorder in {}: {e}",
                self.dir.display()
            ),
        }
    }

    fn write_wrapper(&self) -> io::Result<PathBuf> {
        let path = self.dir.join("record-rustc.sh");
        if fs::read(&path).is_ok_and(|text| text == WRAPPER.as_bytes()) {
            return Ok(path);
        }
        fs::create_dir_all(&self.dir)?;
        let partial = self
            .dir
            .join(format!("record-rustc.sh.{}", std::process::id()));
        fs::write(&partial, WRAPPER)?;
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))?;
        fs::rename(&partial, &path)?;
        Ok(path)
    }

    /// After cargo's build of `module` ended (`compiled`: cargo ran rustc
    /// for the crate, as opposed to finding it fresh; `started`: when cargo
    /// was started). Keeps a recording only when the build succeeded: the
    /// one written during this very cargo run if cargo compiled the crate
    /// (checked against the module), the one kept before if cargo found the
    /// crate fresh and nothing rewrote the artifact since. Drops it
    /// otherwise.
    pub(super) fn after_cargo(
        &self,
        module: &KernelModule,
        outcome: CargoResult,
        started: SystemTime,
    ) {
        let compiled = match outcome {
            CargoResult::Failed => false,
            CargoResult::Fresh => {
                let still_valid = fs::read(&self.kept)
                    .ok()
                    .and_then(|text| serde_json::from_slice::<Recording>(&text).ok())
                    .is_some_and(|r| Stamp::of(&r.artifact).as_ref() == Some(&r.artifact_stamp));
                if still_valid {
                    return;
                }
                false
            }
            CargoResult::Compiled => true,
        };
        // File times come from a coarser clock than `SystemTime::now()`.
        let since = started - Duration::from_millis(50);
        let recorded_now = fs::metadata(self.raw_file(".args"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if !compiled || !recorded_now || user_wrapper_set() {
            let _ = fs::remove_file(&self.kept);
            return;
        }
        match self.keep(module) {
            Ok(()) => {}
            Err(why) => {
                tracing::debug!("no direct rustc builds of {}: {why}", module.package);
                let _ = fs::remove_file(&self.kept);
            }
        }
    }

    fn keep(&self, module: &KernelModule) -> Result<(), String> {
        let args = fs::read(self.raw_file(".args")).map_err(|e| format!("no recording: {e}"))?;
        let env = fs::read(self.raw_file(".env")).map_err(|e| format!("no recording: {e}"))?;
        let mut fields = split_nul(&args).into_iter();
        let cwd = PathBuf::from(OsString::from_vec(fields.next().ok_or("empty recording")?));
        let argv: Vec<Vec<u8>> = fields.collect();
        if argv.len() < 2 {
            return Err("recording without arguments".into());
        }
        let arg = |name: &str| {
            argv.windows(2)
                .find(|w| w[0] == name.as_bytes())
                .map(|w| String::from_utf8_lossy(&w[1]).into_owned())
        };
        let crate_name = arg("--crate-name").ok_or("no --crate-name")?;
        let out_dir = cwd.join(arg("--out-dir").ok_or("no --out-dir")?);
        let root = argv
            .iter()
            .skip(1)
            .find(|a| a.ends_with(b".rs") && !a.starts_with(b"-"))
            .map(|a| cwd.join(OsString::from_vec(a.clone())))
            .ok_or("no crate root")?;
        let module_dir = module.dir.canonicalize().unwrap_or(module.dir.clone());
        let root = root.canonicalize().unwrap_or(root);
        if !root.starts_with(&module_dir) {
            return Err(format!(
                "the recording compiled {} (another workspace sharing the target dir?)",
                root.display()
            ));
        }
        let mut inputs = BTreeMap::new();
        let rustc = PathBuf::from(OsString::from_vec(argv[0].clone()));
        let externs = argv
            .windows(2)
            .filter(|w| w[0] == b"--extern")
            .filter_map(|w| w[1].splitn(2, |b| *b == b'=').nth(1))
            .map(|p| cwd.join(OsString::from_vec(p.to_vec())));
        for input in std::iter::once(rustc).chain(externs) {
            let stamp =
                Stamp::of(&input).ok_or_else(|| format!("{} is missing", input.display()))?;
            inputs.insert(input, stamp);
        }
        let artifact = out_dir.join(format!(
            "{}{crate_name}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        let artifact_stamp =
            Stamp::of(&artifact).ok_or_else(|| format!("{} is missing", artifact.display()))?;
        let env = split_nul(&env)
            .into_iter()
            .filter_map(|pair| {
                let eq = pair.iter().position(|b| *b == b'=')?;
                let (key, value) = (pair[..eq].to_vec(), pair[eq + 1..].to_vec());
                let dropped = DROPPED_ENV.iter().any(|d| d.as_bytes() == key.as_slice());
                (!dropped).then_some((key, value))
            })
            .collect();
        let recording = Recording {
            cwd,
            argv,
            env,
            crate_name,
            out_dir,
            inputs,
            artifact,
            artifact_stamp,
            build_script: has_build_script(module),
        };
        let text = serde_json::to_vec(&recording).map_err(|e| e.to_string())?;
        let partial = self.raw_file(".json.partial");
        fs::write(&partial, text)
            .and_then(|()| fs::rename(&partial, &self.kept))
            .map_err(|e| format!("cannot write {}: {e}", self.kept.display()))
    }

    /// The kept recording, if a direct build of these changes is sound;
    /// otherwise why not (said in the log).
    pub(super) fn direct_build(&self, changed: &[PathBuf]) -> Result<DirectBuild, String> {
        if changed.is_empty() {
            return Err("no changed sources known".into());
        }
        let text = fs::read(&self.kept).map_err(|_| "no recorded rustc invocation".to_string())?;
        let recording: Recording =
            serde_json::from_slice(&text).map_err(|e| format!("unreadable recording: {e}"))?;
        for (input, stamp) in &recording.inputs {
            if Stamp::of(input).as_ref() != Some(stamp) {
                return Err(format!("{} changed since the recording", input.display()));
            }
        }
        if Stamp::of(&recording.artifact).as_ref() != Some(&recording.artifact_stamp) {
            return Err(format!(
                "{} was rebuilt by something else",
                recording.artifact.display()
            ));
        }
        // A build script may read the sources, generate code or set flags
        // from them (`rerun-if-changed=src`): only cargo knows whether it
        // must run again, so such a crate always goes through cargo.
        if recording.build_script {
            return Err(
                "the crate has a build script (cargo decides whether it runs again)".into(),
            );
        }
        let sources = dep_info_sources(&recording)?;
        for path in changed {
            let path = path.canonicalize().unwrap_or(path.clone());
            if !sources.contains(&path) {
                return Err(format!(
                    "{} is not one of the crate's own sources",
                    path.display()
                ));
            }
        }
        Ok(DirectBuild {
            recording,
            kept: self.kept.clone(),
        })
    }
}

/// Whether `module`'s package has a build script: `build.rs` beside its
/// manifest (cargo's default) or a `build = "PATH"` key, unless `build =
/// false`. (The recorded `OUT_DIR` cannot tell: a kiln started by cargo
/// inherits one.)
fn has_build_script(module: &KernelModule) -> bool {
    let manifest = fs::read_to_string(&module.manifest_path).unwrap_or_default();
    let key = manifest
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("build ") || l.starts_with("build="))
        .and_then(|l| l.split_once('='))
        .map(|(_, v)| v.trim().to_string());
    match key.as_deref() {
        Some("false") => false,
        Some(_) => true,
        None => module.dir.join("build.rs").is_file(),
    }
}

/// Whether the user's environment runs rustc through a wrapper already.
fn user_wrapper_set() -> bool {
    ["RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|w| !w.is_empty()))
}

fn split_nul(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The source files rustc's dep-info for the crate lists, canonical: the
/// `path:` rule lines (`\ ` escapes a space).
fn dep_info_sources(recording: &Recording) -> Result<Vec<PathBuf>, String> {
    let d = recording
        .out_dir
        .join(format!("{}.d", recording.crate_name));
    let text = fs::read_to_string(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_suffix(':'))
        .map(|p| {
            let p = recording.cwd.join(p.replace("\\ ", " "));
            p.canonicalize().unwrap_or(p)
        })
        .collect())
}

/// A direct rustc build ready to run.
#[derive(Debug)]
pub(super) struct DirectBuild {
    recording: Recording,
    kept: PathBuf,
}

impl DirectBuild {
    /// Runs rustc as recorded; renders its diagnostics as cargo does
    /// (without colour codes unless `color`).
    pub(super) fn run(
        mut self,
        package: &str,
        color: bool,
        progress: &mut dyn FnMut(&BuildProgress),
    ) -> io::Result<BuildOutcome> {
        let r = &self.recording;
        progress(&BuildProgress {
            step: format!("Compiling {package} (rustc direct)"),
            units_done: 0,
        });
        let started = Instant::now();
        let mut command = Command::new(OsString::from_vec(r.argv[0].clone()));
        command
            .args(r.argv[1..].iter().map(|a| OsString::from_vec(a.clone())))
            .current_dir(&r.cwd)
            .env_clear()
            .envs(
                r.env
                    .iter()
                    .map(|(k, v)| (OsString::from_vec(k.clone()), OsString::from_vec(v.clone()))),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut diagnostics = Diagnostics::default();
        for line in BufReader::new(stderr).split(b'\n') {
            diagnostics.line(&String::from_utf8_lossy(&line?), color);
        }
        let status = child.wait()?;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if !status.success() {
            return Ok(BuildOutcome::Failed {
                rendered: diagnostics.failed(package, &status.to_string()),
                ms,
            });
        }
        let built = diagnostics.artifact.take().unwrap_or(r.artifact.clone());
        let warnings = diagnostics.succeeded(package);
        // Where cargo puts it: a hard link one level above `deps/`.
        let artifact = match (built.parent().and_then(Path::parent), built.file_name()) {
            (Some(dir), Some(name)) => {
                let uplifted = dir.join(name);
                let _ = fs::remove_file(&uplifted);
                if fs::hard_link(&built, &uplifted).is_err() {
                    fs::copy(&built, &uplifted)?;
                }
                uplifted
            }
            _ => built.clone(),
        };
        self.forget_cargo_fingerprint();
        if let Some(stamp) = Stamp::of(&self.recording.artifact) {
            self.recording.artifact_stamp = stamp;
            if let Ok(text) = serde_json::to_vec(&self.recording) {
                let mut partial = self.kept.as_os_str().to_os_string();
                partial.push(".partial");
                let _ = fs::write(&partial, text).and_then(|()| fs::rename(&partial, &self.kept));
            }
        }
        Ok(BuildOutcome::Built {
            artifact,
            ms,
            fresh: false,
            warnings,
        })
    }

    /// Removes cargo's fingerprint of the crate (`.fingerprint/*/lib-<crate>`
    /// beside `deps/`): cargo then compiles it again on its next build
    /// instead of judging by file times a file this build rewrote.
    fn forget_cargo_fingerprint(&self) {
        let Some(profile_dir) = self.recording.out_dir.parent() else {
            return;
        };
        let Ok(entries) = fs::read_dir(profile_dir.join(".fingerprint")) else {
            return;
        };
        let name = format!("lib-{}", self.recording.crate_name);
        for entry in entries.flatten() {
            let file = entry.path().join(&name);
            if file.exists() {
                let _ = fs::remove_file(file);
            }
        }
    }
}

/// rustc's JSON messages (`--error-format=json`), rendered as cargo does.
#[derive(Default)]
struct Diagnostics {
    rendered: String,
    errors: usize,
    warnings: usize,
    artifact: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "$message_type")]
    kind: Option<String>,
    rendered: Option<String>,
    level: Option<String>,
    message: Option<String>,
    artifact: Option<PathBuf>,
    emit: Option<String>,
}

impl Diagnostics {
    fn line(&mut self, line: &str, color: bool) {
        let Ok(message) = serde_json::from_str::<Message>(line) else {
            // Not JSON: a linker error, an internal compiler error.
            self.rendered.push_str(line);
            self.rendered.push('\n');
            return;
        };
        match message.kind.as_deref() {
            Some("artifact") if message.emit.as_deref() == Some("link") => {
                self.artifact = message.artifact;
            }
            Some("diagnostic") => {
                let text = message.message.unwrap_or_default();
                match message.level.as_deref() {
                    // rustc's own summary: cargo writes its own instead.
                    Some("error") if text.starts_with("aborting due to") => return,
                    Some("warning")
                        if text.ends_with("warnings emitted")
                            || text.ends_with("warning emitted") =>
                    {
                        return;
                    }
                    Some("error" | "error: internal compiler error") => self.errors += 1,
                    Some("warning") => self.warnings += 1,
                    _ => {}
                }
                if let Some(rendered) = message.rendered {
                    if color {
                        self.rendered.push_str(&rendered);
                    } else {
                        self.rendered.push_str(&strip_ansi(&rendered));
                    }
                }
            }
            _ => {}
        }
    }

    fn count(n: usize, what: &str) -> String {
        format!("{n} {what}{}", if n == 1 { "" } else { "s" })
    }

    fn succeeded(self, package: &str) -> String {
        let mut out = self.rendered;
        if self.warnings > 0 {
            out.push_str(&format!(
                "warning: `{package}` (lib) generated {}\n",
                Self::count(self.warnings, "warning")
            ));
        }
        out
    }

    fn failed(self, package: &str, status: &str) -> String {
        let mut out = self.rendered;
        let mut summary = format!("error: could not compile `{package}` (lib)");
        if self.errors > 0 {
            summary.push_str(&format!(
                " due to {}",
                Self::count(self.errors, "previous error")
            ));
        } else {
            summary.push_str(&format!(" (rustc {status})"));
        }
        if self.warnings > 0 {
            summary.push_str(&format!(
                "; {} emitted",
                Self::count(self.warnings, "warning")
            ));
        }
        out.push_str(&summary);
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_render_like_cargo() {
        let mut d = Diagnostics::default();
        d.line(r#"{"$message_type":"diagnostic","message":"expected expression, found `}`","level":"error","rendered":"error: expected expression, found `}`\n --> src/lib.rs:4:1\n"}"#, false);
        d.line(r#"{"$message_type":"diagnostic","message":"aborting due to 1 previous error","level":"error","rendered":"error: aborting due to 1 previous error\n\n"}"#, false);
        d.line(
            r#"{"$message_type":"artifact","artifact":"/t/deps/kernel_cpu.d","emit":"dep-info"}"#,
            false,
        );
        d.line("plain text", false);
        assert!(d.artifact.is_none(), "dep-info is not the artifact");
        let out = d.failed("kernel-tiny", "exit status: 1");
        assert_eq!(
            out,
            "error: expected expression, found `}`\n --> src/lib.rs:4:1\nplain text\nerror: could not compile `kernel-tiny` (lib) due to 1 previous error\n"
        );
        let mut d = Diagnostics::default();
        d.line("{\"$message_type\":\"diagnostic\",\"message\":\"unused variable\",\"level\":\"warning\",\"rendered\":\"\\u001b[33mwarning\\u001b[0m: unused variable\\n\"}", false);
        d.line(
            r#"{"$message_type":"artifact","artifact":"/t/deps/libkernel_cpu.so","emit":"link"}"#,
            false,
        );
        assert_eq!(
            d.artifact.as_deref(),
            Some(Path::new("/t/deps/libkernel_cpu.so"))
        );
        assert_eq!(
            d.succeeded("kernel-cpu"),
            "warning: unused variable\nwarning: `kernel-cpu` (lib) generated 1 warning\n"
        );
    }
}

//! The restart-loop side of "save to serving": the program of
//! `src/bin/restart_loop.rs` (the CPU module's kernel sources compiled in
//! statically) in a crate of its own, so that an edit of its copy of the
//! kernels rebuilds it; a round is edit, `cargo build --release`, start,
//! load the state from a file, answer one call of each f32 kernel.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use super::edit::{ConstantEdit, KERNELS_SOURCE};

/// The program's source in the workspace (and in the crate copy).
const PROGRAM_SOURCE: &str = "bench/src/bin/restart_loop.rs";
/// Its package and binary name in the crate copy.
const PROGRAM: &str = "kiln-bench-restart-loop";
/// The kernels of `kernels/cpu/src/kernels.rs`, every one of which the
/// program calls (it answers how many were right).
pub const KERNELS: usize = 5;
/// The CPU module's kernel sources the program compiles (copied with it).
const MODULE_SOURCES: &str = "kernels/cpu/src";
/// Its path dependencies, as the module has them (compiled once).
const PATH_DEPENDENCIES: [(&str, &str); 2] = [
    ("shared-state", "shared-state"),
    ("kernel-cpu-engine", "kernels/cpu-engine"),
];
/// What the program compiles, for the report.
pub const COMPILES: &str = "binary: kernel-cpu's kernel sources (kernels.rs, low_precision.rs, \
     registry.rs, declared/*.rs: every kernel reachable from the table, as in the module) + main \
     (state from a file, calls the 5 f32 kernels of kernels.rs); kernel-cpu-engine and shared-state \
     as dependencies, compiled once";

/// What one edit cost (ms).
#[derive(Clone, Copy, Debug)]
pub struct RestartEdit {
    /// From the write of the file to the end of `cargo build`.
    pub build_ms: f64,
    /// From there to the answer of the started program (state read).
    pub start_load_ms: f64,
    pub total_ms: f64,
}

/// The crate copy, its build directory and the state file.
pub struct RestartLoop {
    crate_dir: PathBuf,
    target_dir: PathBuf,
    exe: PathBuf,
    edit: ConstantEdit,
    state_file: PathBuf,
    state_bytes: usize,
    threads: usize,
}

/// The lines of `manifest` from the header `table` to the next header, if
/// it has that table.
pub(crate) fn toml_table(manifest: &str, table: &str) -> Option<String> {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != table);
    let header = lines.next()?;
    let body: Vec<&str> = lines
        .take_while(|l| !l.trim_start().starts_with('['))
        .collect();
    Some(format!("{header}\n{}\n", body.join("\n")))
}

/// `Cargo.toml` of the crate copy: rayon as the workspace declares it, the
/// module's path dependencies (from `workspace`) and the workspace's
/// `[profile.release]` (incremental, no debug info), the settings kiln's
/// modules are built with.
fn manifest(workspace_manifest: &str, workspace: &Path) -> Result<String, String> {
    let rayon = workspace_manifest
        .lines()
        .find(|l| l.starts_with("rayon ="))
        .ok_or("the workspace's Cargo.toml declares no `rayon = ...` dependency")?;
    let profile = toml_table(workspace_manifest, "[profile.release]").unwrap_or_default();
    let paths: String = PATH_DEPENDENCIES
        .iter()
        .map(|(name, dir)| format!("{name} = {{ path = {:?} }}\n", workspace.join(dir)))
        .collect();
    Ok(format!(
        "# Written by kiln-bench: the restart-loop program, rebuilt after each edit.\n\
         [package]\nname = \"{PROGRAM}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [[bin]]\nname = \"{PROGRAM}\"\npath = \"{PROGRAM_SOURCE}\"\n\n\
         [dependencies]\n{rayon}\n{paths}\n{profile}\n[workspace]\n"
    ))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

impl RestartLoop {
    /// Writes the crate copy into `crate_dir` (replaced) from `workspace`,
    /// builds it into `target_dir` (kept between runs: dependencies are
    /// built once) and runs it once. `state_file` is where the state goes
    /// (see [`RestartLoop::set_state`]).
    pub fn prepare(
        workspace: &Path,
        crate_dir: &Path,
        target_dir: &Path,
        state_file: &Path,
        threads: usize,
    ) -> Result<RestartLoop, String> {
        let _ = std::fs::remove_dir_all(crate_dir);
        let workspace_manifest = workspace.join("Cargo.toml");
        let text = std::fs::read_to_string(&workspace_manifest)
            .map_err(|e| format!("cannot read {}: {e}", workspace_manifest.display()))?;
        let manifest = manifest(&text, workspace)
            .map_err(|e| format!("{}: {e}", workspace_manifest.display()))?;
        std::fs::create_dir_all(crate_dir)
            .map_err(|e| format!("cannot create {}: {e}", crate_dir.display()))?;
        let manifest_path = crate_dir.join("Cargo.toml");
        std::fs::write(&manifest_path, manifest)
            .map_err(|e| format!("cannot write {}: {e}", manifest_path.display()))?;
        // The workspace's lock file: the same rayon, nothing resolved anew.
        for file in ["Cargo.lock", PROGRAM_SOURCE] {
            copy(&workspace.join(file), &crate_dir.join(file))?;
        }
        super::kiln_dev::copy_sources(
            &workspace.join(MODULE_SOURCES),
            &crate_dir.join(MODULE_SOURCES),
        )?;
        let mut this = RestartLoop {
            crate_dir: crate_dir.to_path_buf(),
            target_dir: target_dir.to_path_buf(),
            exe: target_dir.join("release").join(PROGRAM),
            edit: ConstantEdit::new(&crate_dir.join(KERNELS_SOURCE))?,
            state_file: state_file.to_path_buf(),
            state_bytes: 0,
            threads,
        };
        this.set_state(0)?;
        this.build()?;
        this.answer()?;
        Ok(this)
    }

    /// Writes `bytes` of state (f32 values) to the state file.
    pub fn set_state(&mut self, bytes: usize) -> Result<(), String> {
        let data = crate::kiln_side::state_tensor(bytes);
        std::fs::write(&self.state_file, data.data().as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.state_file.display()))?;
        self.state_bytes = bytes / 4 * 4;
        Ok(())
    }

    /// The bytes the program loads at start.
    pub fn state_bytes(&self) -> usize {
        self.state_bytes
    }

    fn build(&self) -> Result<(), String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let out = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "--offline",
                "--manifest-path",
            ])
            .arg(self.crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&self.target_dir)
            .output()
            .map_err(|e| format!("cannot run {cargo} to build {PROGRAM}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build of {} failed:\n{}",
                self.crate_dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Starts the program and reads its answer.
    fn answer(&self) -> Result<(), String> {
        let mut child = Command::new(&self.exe)
            .arg(&self.state_file)
            .arg(self.threads.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the restart-loop program has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading {}'s answer: {e}", self.exe.display()))?;
        let status = child.wait().map_err(|e| e.to_string())?;
        let expected = format!("answer 3.5 kernels {KERNELS} table ");
        let state = format!(" state {}", self.state_bytes);
        let answered = line.trim();
        if !status.success() || !answered.starts_with(&expected) || !answered.ends_with(&state) {
            return Err(format!(
                "{} answered {:?} ({status}), expected {expected:?}...{state:?}",
                self.exe.display(),
                line.trim()
            ));
        }
        Ok(())
    }

    /// One edit: save the other value of the constant, rebuild, start,
    /// answer. An error if the build did not produce a new program.
    pub fn round(&mut self) -> Result<RestartEdit, String> {
        let saved = SystemTime::now();
        let t0 = Instant::now();
        self.edit.save_next()?;
        self.build()?;
        let t_built = Instant::now();
        self.answer()?;
        let t_answered = Instant::now();
        let modified = std::fs::metadata(&self.exe)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", self.exe.display()))?;
        if modified < saved {
            return Err(format!(
                "cargo did not rebuild {} after the edit of {}",
                self.exe.display(),
                self.crate_dir.join(KERNELS_SOURCE).display()
            ));
        }
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        Ok(RestartEdit {
            build_ms: ms(t_built - t0),
            start_load_ms: ms(t_answered - t_built),
            total_ms: ms(t_answered - t0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_takes_rayon_and_the_release_profile_from_the_workspace() {
        let workspace = "[workspace]\nmembers = []\n\n[workspace.dependencies]\nlibc = \"0.2\"\n\
                         rayon = { version = \"1.10\", default-features = false }\n\n\
                         [profile.release]\nincremental = true\ndebug = false\n\n[profile.dev]\nopt-level = 1\n";
        let m = manifest(workspace, Path::new("/ws")).unwrap();
        assert!(
            m.contains(
                "[dependencies]\nrayon = { version = \"1.10\", default-features = false }\n"
            ),
            "{m}"
        );
        assert!(
            m.contains("[profile.release]\nincremental = true\ndebug = false\n"),
            "{m}"
        );
        assert!(!m.contains("opt-level") && !m.contains("libc"), "{m}");
        assert!(
            m.contains("shared-state = { path = \"/ws/shared-state\" }\n")
                && m.contains("kernel-cpu-engine = { path = \"/ws/kernels/cpu-engine\" }\n"),
            "{m}"
        );
        assert!(manifest("[workspace]\n", Path::new("/ws")).is_err());
    }
}

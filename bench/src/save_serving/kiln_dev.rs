//! The kiln side of "save to serving": the real `kiln dev` binary serving
//! a copy of the workspace, followed through its JSON log with the driver
//! the end-to-end tests use (kiln-dev-driver: typed events, one object per
//! line on stdout, fields at the top level).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_dev_driver::{DevCommand, Event, EventKind, OnDrop, Session, WaitError, events};

use super::edit::ConstantEdit;

/// Events that mean the edit will not be served: the run stops on them.
pub(crate) const FAILURE_EVENTS: [EventKind; 6] = [
    EventKind::BuildFailed,
    EventKind::Refused,
    EventKind::ReplayFailed,
    EventKind::RolledBack,
    EventKind::RestartRequired,
    EventKind::Error,
];

/// What one edit cost, from the `swapped` event (kiln's own timings) and
/// from this side (the write, the arrival of events).
#[derive(Clone, Debug)]
pub struct KilnEdit {
    /// The version the edit became.
    pub version: u64,
    pub debounce_ms: f64,
    pub build_ms: f64,
    pub stage_load_ms: f64,
    pub handoff_ms: f64,
    pub handoff_bytes: u64,
    /// kiln's own save-to-serving figure (from the first file event).
    pub reported_total_ms: f64,
    /// From the write of the file to the arrival of `swapped`.
    pub total_ms: f64,
    /// From `swapped` to the last `replay` event of the version.
    pub replay_ms: f64,
    /// How the edit was built: `rustc direct` or `cargo` (the
    /// `build_path` events of its builds, comma separated).
    pub build_path: String,
}

/// What one edit of a version source (a shader, a `.cu` file) cost: no
/// cargo build, the serving library re-staged with the new source and
/// swapped in (engine creation compiles it: pipeline creation included).
#[derive(Clone, Debug)]
pub struct RestagedEdit {
    pub version: u64,
    /// From the first file event to the change being seen.
    pub debounce_ms: f64,
    /// Re-staging the library with the new sources (copy, hash, files).
    pub stage_ms: f64,
    /// The swap: the new engine created (shaders compiled, pipelines
    /// created) and the state handed over.
    pub swap_ms: f64,
    /// kiln's own figure (from the first file event).
    pub reported_total_ms: f64,
    /// From the write of the file to the arrival of `swapped`.
    pub total_ms: f64,
    pub replay_ms: f64,
    /// `build_started` events between the write and `swapped` (collected,
    /// not asserted: the report shows them).
    pub builds: usize,
    /// The `swapped` event's `restaged` field.
    pub restaged: bool,
}

/// The `swapped` event of an edit and what this side saw around it.
struct Swap {
    swapped: events::Swapped,
    total_ms: f64,
    replay_ms: f64,
    builds: usize,
    build_paths: Vec<String>,
}

/// A running `kiln dev`, killed when dropped.
pub struct DevSession {
    session: Session,
    log: PathBuf,
    /// Calls per replay (counted in the replay at start).
    pub replay_calls: usize,
    version: u64,
}

/// A copy of `workspace`'s sources in a new temporary directory named
/// `prefix...`, outside the workspace (cargo merges the `.cargo/config.toml`
/// of every parent directory: a copy under `target/` got the workspace's
/// rustflags twice). Returns the directory (removed when dropped) and the
/// copy's root.
pub fn scratch_copy(
    workspace: &Path,
    prefix: &str,
) -> Result<(tempfile::TempDir, PathBuf), String> {
    let scratch = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let copy = scratch.path().join("workspace");
    copy_sources(workspace, &copy)?;
    Ok((scratch, copy))
}

/// Copies `from` into `to` (created), all but `from/target` and
/// `from/.git`: a workspace's sources.
pub fn copy_sources(from: &Path, to: &Path) -> Result<(), String> {
    fn copy_dir(from: &Path, to: &Path, top: bool) -> Result<(), String> {
        std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
        let entries =
            std::fs::read_dir(from).map_err(|e| format!("cannot list {}: {e}", from.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", from.display()))?;
            let name = entry.file_name();
            if top && (name == "target" || name == ".git") {
                continue;
            }
            let (src, dst) = (entry.path(), to.join(&name));
            let kind = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", src.display()))?;
            if kind.is_dir() {
                copy_dir(&src, &dst, false)?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&src)
                    .map_err(|e| format!("cannot read link {}: {e}", src.display()))?;
                std::os::unix::fs::symlink(&target, &dst)
                    .map_err(|e| format!("cannot create link {}: {e}", dst.display()))?;
            } else {
                std::fs::copy(&src, &dst).map_err(|e| {
                    format!("cannot copy {} to {}: {e}", src.display(), dst.display())
                })?;
            }
        }
        Ok(())
    }
    copy_dir(from, to, true)
}

/// A field of a `swapped` event that this edit must have.
fn present(value: Option<f64>, name: &str, swapped: &events::Swapped) -> Result<f64, String> {
    value.ok_or_else(|| format!("kiln dev's `swapped` event has no `{name}`: {swapped:?}"))
}

impl DevSession {
    /// Starts `kiln dev --log-format json` in `workspace` (a copy), with
    /// modules built into `module_target_dir` (shared with the real
    /// workspace, so dependencies are not rebuilt). Its log is also
    /// written to `log` (standard error next to it). Returns at once: see
    /// [`DevSession::wait_ready`].
    pub fn spawn(
        kiln_exe: &Path,
        workspace: &Path,
        module_target_dir: &Path,
        threads: usize,
        debounce_ms: u64,
        extra_args: &[&str],
        log: &Path,
    ) -> Result<DevSession, String> {
        let session = DevCommand::new(kiln_exe, workspace)
            .args(["--threads".to_string(), threads.to_string()])
            .args(["--debounce-ms".to_string(), debounce_ms.to_string()])
            .args(extra_args)
            .module_target_dir(module_target_dir)
            .log_to(log)
            .stderr_to(&log.with_extension("stderr"))
            .on_drop(OnDrop::Kill)
            .spawn()?;
        Ok(DevSession {
            session,
            log: log.to_path_buf(),
            replay_calls: 0,
            version: 0,
        })
    }

    /// The next log line, or an error if kiln dev stops, reports a failure
    /// or says nothing more before `deadline`.
    fn next(&mut self, deadline: Instant, waiting_for: &str) -> Result<Event, String> {
        let event = match self.session.try_next(deadline) {
            Ok(event) => event,
            Err(WaitError::TimedOut) => {
                return Err(format!(
                    "kiln dev: no {waiting_for} in time (log: {})",
                    self.log.display()
                ));
            }
            Err(exited @ WaitError::Exited(_)) => {
                return Err(format!(
                    "{exited} while the benchmark waited for {waiting_for} (log: {}, stderr next to it)",
                    self.log.display()
                ));
            }
        };
        if event.is_any(&FAILURE_EVENTS) {
            return Err(format!(
                "kiln dev reported {}: {} (log: {})",
                event.kind().map_or("?", EventKind::as_str),
                event.message(),
                self.log.display()
            ));
        }
        Ok(event)
    }

    /// Waits for the first build, load and replay and for the watcher to
    /// be on (the `watching ...` line): edits from now on are seen.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let event = self.next(deadline, "start (first build, replay, watcher)")?;
            match event.kind() {
                Some(EventKind::Replay) => self.replay_calls += 1,
                Some(EventKind::Loaded) => self.version = event.version().unwrap_or(0),
                _ => {}
            }
            if kiln_dev_driver::is_watching(&event) {
                break;
            }
        }
        if self.replay_calls == 0 {
            return Err(format!(
                "kiln dev replayed no calls at start (log: {})",
                self.log.display()
            ));
        }
        Ok(())
    }

    /// Saves the next variant of `edit` (a file of the copy kiln dev
    /// serves) and waits for the new version to be swapped in and
    /// replayed, every call passing.
    pub fn edit(&mut self, edit: &mut ConstantEdit, timeout: Duration) -> Result<KilnEdit, String> {
        let Swap {
            swapped,
            total_ms,
            replay_ms,
            build_paths,
            ..
        } = self.swap_after(edit, timeout)?;
        Ok(KilnEdit {
            version: self.version,
            debounce_ms: present(swapped.debounce_ms, "debounce_ms", &swapped)?,
            build_ms: present(swapped.build_ms, "build_ms", &swapped)?,
            stage_load_ms: swapped.stage_load_ms,
            handoff_ms: swapped.handoff_ms,
            handoff_bytes: swapped.handoff_bytes,
            reported_total_ms: swapped.ms,
            total_ms,
            replay_ms,
            build_path: build_paths.join(","),
        })
    }

    /// Like [`DevSession::edit`], for an edit of a version source (shader,
    /// `.cu`): kiln re-stages the library without cargo.
    pub fn edit_source(
        &mut self,
        edit: &mut ConstantEdit,
        timeout: Duration,
    ) -> Result<RestagedEdit, String> {
        let Swap {
            swapped,
            total_ms,
            replay_ms,
            builds,
            ..
        } = self.swap_after(edit, timeout)?;
        Ok(RestagedEdit {
            version: self.version,
            debounce_ms: present(swapped.debounce_ms, "debounce_ms", &swapped)?,
            stage_ms: swapped.stage_load_ms,
            swap_ms: swapped.handoff_ms,
            reported_total_ms: swapped.ms,
            total_ms,
            replay_ms,
            builds,
            restaged: swapped.restaged,
        })
    }

    /// Saves the next variant of `edit`, waits for the new version's
    /// `swapped` event and its whole replay (every call passing).
    fn swap_after(&mut self, edit: &mut ConstantEdit, timeout: Duration) -> Result<Swap, String> {
        let deadline = Instant::now() + timeout;
        let t0 = Instant::now();
        edit.save_next()?;
        let mut builds = 0;
        let mut build_paths = Vec::new();
        let swapped = loop {
            let event = self.next(deadline, "swap of the edited version")?;
            match event.kind() {
                Some(EventKind::BuildStarted) => builds += 1,
                Some(EventKind::BuildPath) => build_paths.push(
                    event
                        .get::<events::BuildPath>()
                        .map_or("?", |path| path.via.as_str())
                        .to_string(),
                ),
                Some(EventKind::Swapped) if event.version().is_some_and(|n| n > self.version) => {
                    break event;
                }
                _ => {}
            }
        };
        let swapped_at = swapped.at;
        let swapped = swapped.get::<events::Swapped>().cloned().ok_or_else(|| {
            format!(
                "kiln dev's `swapped` event does not read as one: {} (log: {})",
                swapped.line,
                self.log.display()
            )
        })?;
        let version = swapped.version;
        self.version = version;
        let mut replayed = 0;
        let mut last_replay = swapped_at;
        while replayed < self.replay_calls {
            let event = self.next(deadline, "replay of the edited version")?;
            if event.is(EventKind::Replay) && event.version() == Some(version) {
                if !event
                    .get::<events::Replay>()
                    .is_some_and(|replay| replay.pass)
                {
                    return Err(format!(
                        "kiln dev: v{version} failed replay after the edit: {} (log: {})",
                        event.line,
                        self.log.display()
                    ));
                }
                replayed += 1;
                last_replay = event.at;
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(Swap {
            swapped,
            total_ms: ms(swapped_at - t0),
            replay_ms: ms(last_replay - swapped_at),
            builds,
            build_paths,
        })
    }
}

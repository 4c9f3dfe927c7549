//! What supervisor and worker say to each other: one JSON object per line
//! (serde_json), requests on the worker's standard input, messages (log
//! lines and replies) on its standard output. Bulk data never travels here:
//! state goes through checkpoints (memfds the supervisor creates and seals,
//! named by a `/proc/<supervisor>/fd/N` path), workloads are files both
//! sides read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::swap::engine_handle::EngineOptions;
use crate::swap::stage::Staged;

/// File descriptor of the status record (shared memory) in the worker.
pub const STATUS_FD: i32 = 3;

/// A request from the supervisor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Once, first: what this worker serves and replays.
    Configure(Box<WorkerConfig>),
    /// Load `staged` and start its engine from `state`.
    Start {
        staged: StagedWire,
        state: StateSource,
        /// A fresh memfd (part number, path) to read the workload's large
        /// residents into, written once and sealed, so that they are in
        /// memory once: the engine serves them mapped and the first
        /// checkpoint points there (`Started::loads_bytes`).
        #[serde(default)]
        loads: Option<(u64, PathBuf)>,
        /// The supervisor already wrote the large residents into `loads`
        /// (while the modules built: `isolation/preload.rs`), checked
        /// them, and sealed the part: what it holds. The worker serves
        /// them from it, after checking that they are the loads the
        /// workload leaves in its file.
        #[serde(default)]
        prewritten: Option<crate::swap::snapshot_file::PartWritten>,
    },
    /// Load the workload's resident buffers the engine does not hold yet.
    LoadWorkloadState,
    /// Swap to `staged` with the state handoff. With `keep_old`, the old
    /// version stays alive (calls no longer go there) until the next replay
    /// is done, to be timed against; otherwise it retires now.
    Swap {
        staged: StagedWire,
        keep_old: bool,
        /// The state the new version starts from; `None`: the serving
        /// version's (the handoff). A rollback gives the last good point's
        /// checkpoint, so what a failed version wrote is not carried back.
        #[serde(default)]
        state: Option<StateSource>,
    },
    /// Replay the workload on the serving version (timed interleaved with
    /// the version it replaced, if alive; else against `recorded`).
    Replay {
        recorded: Option<crate::workload::timing::Timings>,
    },
    /// Export the engine's state into the fresh memfd at `file` (the
    /// supervisor seals it once this is answered), unless it is exactly
    /// what this worker last wrote and that checkpoint, whose hash is
    /// `current`, is still the supervisor's current one (then nothing is
    /// written: [`Checkpointed::unchanged`]).
    ///
    /// The memfd is checkpoint part `part`; `held` lists the earlier parts
    /// the supervisor still holds (the current checkpoint's): a section
    /// unchanged since this worker wrote it into one of those is not
    /// copied again, the new part points to it.
    Checkpoint {
        file: PathBuf,
        #[serde(default)]
        current: Option<String>,
        #[serde(default)]
        part: u64,
        #[serde(default)]
        held: Vec<u64>,
    },
    /// Export the engine's state and hash it (after a restart: is it the
    /// checkpoint's, bit for bit?), in one pass; the reply's `bytes` are
    /// the state's tensor bytes.
    StateHash,
    /// Write the session as a workload (the last passing replay's calls).
    Record { path: PathBuf },
    /// Bless: write the serving version's last replay (passing or not) as
    /// a workload with its outputs as expected values, then replay that
    /// file from now on (`kiln ctl bless`).
    Bless { path: PathBuf },
    /// Write the last replay's calls with what each produced as expected
    /// values (`--backends`: the other backends compare with it).
    WriteOutputs { path: PathBuf },
    /// Compare the last replay's outputs with another backend's
    /// (`WriteOutputs` file at `path`, that backend labelled `against`).
    CompareOutputs { path: PathBuf, against: String },
    /// Read the workload again (its file was re-recorded, or the
    /// declarations the bundled one follows changed): the next replay uses
    /// it.
    ReloadWorkload,
    /// Replace the reference module's engine with `staged`'s (the
    /// reference module was edited and rebuilt).
    SetReference { staged: StagedWire },
    /// Probe `staged`'s devices (for `kiln backends`).
    Probe { staged: StagedWire },
    /// Advance the autotuning of the serving version for about
    /// `budget_ms` (the tuner a passing replay planned; nothing if none).
    TuneStep { budget_ms: u64 },
    /// Retire everything and exit.
    Shutdown,
}

/// Where a starting engine's state comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StateSource {
    Empty,
    /// A snapshot file (`--state`).
    File(PathBuf),
    /// A sealed checkpoint memfd holding a snapshot file's bytes, opened
    /// by this path and served in place (mapped): its newest part; the
    /// earlier parts it points to are in `parts` (number, path).
    Checkpoint {
        file: PathBuf,
        bytes: u64,
        #[serde(default)]
        parts: Vec<(u64, PathBuf)>,
        /// The newest part's number (0: not known), so that the worker's
        /// next checkpoint can point into the parts it serves.
        #[serde(default)]
        newest: u64,
    },
}

/// The worker's configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub threads: usize,
    pub engine_options: BTreeMap<String, String>,
    /// `None`: the bundled default workload.
    pub workload: Option<PathBuf>,
    /// `kiln.toml` with tolerances, if any.
    pub tolerances: Option<PathBuf>,
    /// Time calls (and judge against the previous version).
    pub timing: bool,
    /// Keep outputs of passing replays (to record the session).
    pub keep_outputs: bool,
    /// The workspace (for the bundled workload, built from its
    /// declarations, when `workload` is `None`).
    pub workspace: Option<PathBuf>,
    /// The reference module: expected outputs of calls whose workload
    /// stores none.
    pub reference: Option<StagedWire>,
    /// `--reference BACKEND`: every call's expected outputs come from this
    /// module, run on the same inputs.
    pub cross_reference: Option<StagedWire>,
    /// `--cold`: flush the caches before every timed run.
    #[serde(default)]
    pub cold: bool,
    /// Autotune the declared tunables after every passing replay (off:
    /// `--no-tune`, and in `kiln replay`).
    #[serde(default)]
    pub tune: bool,
}

impl WorkerConfig {
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            threads: self.threads,
            options: self.engine_options.clone(),
        }
    }
}

/// A message from the worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// A formatted log line (with its newline), to print as is.
    Log(String),
    /// The answer to the last request.
    Reply(Reply),
    /// The last request failed; the worker is fine and keeps serving.
    Failed(String),
}

/// Replies, one kind per request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Configured,
    Started(Started),
    Loaded { count: usize },
    Swapped(Swapped),
    Replayed(ReplaySummary),
    Checkpointed(Checkpointed),
    StateHash(Checkpointed),
    Recorded { description: String },
    WorkloadReloaded { description: String },
    ReferenceSet { label: String },
    Probed { devices: Vec<DeviceWire> },
    Tuned(TuneProgress),
    Compared(crate::workload::cross_compare::CrossCheck),
    Bye,
}

/// What a tuning step did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TuneProgress {
    /// Tunables left to tune.
    pub more: bool,
    /// The table of candidates of each tunable finished in this step.
    pub tables: Vec<String>,
    /// `KERNEL/PARAM` -> the value kept (`-`: every candidate rejected).
    pub kept: BTreeMap<String, String>,
    /// A result came from the tuning cache.
    pub from_cache: bool,
    /// Tunables not tuned, with why.
    pub skipped: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Started {
    pub label: String,
    pub version: u64,
    pub device: String,
    /// The import report, readable.
    pub import: String,
    /// Sections of the state given that the engine did not take.
    #[serde(default)]
    pub dropped: Vec<String>,
    /// The bytes written into the loads part (`Request::Start::loads`),
    /// sealed against writing; `None`: nothing was (it is let go).
    #[serde(default)]
    pub loads_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Swapped {
    pub from: String,
    pub to: String,
    pub bytes: usize,
    pub paused_ms: f64,
    /// Sections of the old engine's state the new one does not know (not
    /// carried over: another backend's cache, a CPU-only tuning value).
    #[serde(default)]
    pub dropped: Vec<String>,
    /// State the new engine expected and did not find (set to a default).
    #[serde(default)]
    pub defaulted: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Checkpointed {
    /// The length of the part this checkpoint wrote (its sections that
    /// earlier parts hold are pointed to, not written).
    pub bytes: u64,
    /// The state's tensor bytes, wherever they are (this part and earlier
    /// ones): what the log calls the state's size.
    #[serde(default)]
    pub state_bytes: u64,
    /// xxh3-128 of the state (every section but the caches an engine
    /// rebuilds: `checkpoint_writer::state_hash`), hex.
    pub hash: String,
    pub ms: f64,
    /// The state is the current checkpoint's, section for section: nothing
    /// was written, the current slot stays current.
    #[serde(default)]
    pub unchanged: bool,
    /// The tensor bytes copied into this checkpoint's new part: the
    /// sections that changed since the last one (all of them when there
    /// was none).
    #[serde(default)]
    pub copied_bytes: u64,
    /// Every checkpoint part this checkpoint's sections are in, its new
    /// one included.
    #[serde(default)]
    pub parts: Vec<u64>,
}

/// What the supervisor needs of a replay (the worker logs the per-call
/// events itself).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplaySummary {
    /// Every call's result, figures and verdict, with the version's label,
    /// whether it passed and the replay's time: rendered by the
    /// supervisor as the one-backend table, or as a column beside other
    /// backends'.
    pub table: crate::workload::replay_table::ReplayTable,
    pub first_failure: Option<CallFailure>,
    pub timings: crate::workload::timing::Timings,
    /// Calls not run, with why (recorded for an old signature, kernel not
    /// declared, not on this backend yet).
    #[serde(default)]
    pub skipped: Vec<CallFailure>,
    /// Per-call achieved rates and % of the roofline, by call key, and
    /// what they were judged against (for the history).
    #[serde(default)]
    pub rates: Box<crate::machine::recorded::ReplayRates>,
}

impl ReplaySummary {
    pub fn label(&self) -> &str {
        &self.table.label
    }

    pub fn passed(&self) -> bool {
        self.table.passed
    }

    /// Each call's ratio to the previous version (timed calls with a
    /// previous version to compare with), by call key (`3:matmul`), for
    /// the history.
    pub fn ratios(&self) -> BTreeMap<String, crate::workload::timing::Ratio> {
        self.table
            .lines
            .iter()
            .filter_map(|l| Some((format!("{}:{}", l.index, l.kernel), l.ratio?)))
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallFailure {
    pub index: usize,
    pub kernel: String,
    pub why: String,
}

/// A device, as `kiln backends` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceWire {
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub driver: String,
    pub api: String,
}

/// [`Staged`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StagedWire {
    pub module: String,
    pub version: u64,
    pub label: String,
    pub path: PathBuf,
    pub source: PathBuf,
    pub hash: String,
    pub bytes: u64,
    pub ms: f64,
    /// The version's declarations and sources, staged next to the library.
    pub files_path: PathBuf,
    pub version_hash: String,
}

impl From<&Staged> for StagedWire {
    fn from(s: &Staged) -> Self {
        StagedWire {
            module: s.module.clone(),
            version: s.version,
            label: s.label.clone(),
            path: s.path.clone(),
            source: s.source.clone(),
            hash: s.hash.clone(),
            bytes: s.bytes,
            ms: s.ms,
            files_path: s.files_path.clone(),
            version_hash: s.version_hash.clone(),
        }
    }
}

impl StagedWire {
    /// The staged version, with its declarations and sources read back
    /// from the staging directory; refused if they are not the ones staged
    /// (the version hash differs).
    pub fn into_staged(self) -> Result<Staged, String> {
        let files = crate::swap::version_files::VersionFiles::read_staged(&self.files_path)?;
        let version_hash = format!("{}-{}", &self.hash[..16.min(self.hash.len())], files.hash());
        if version_hash != self.version_hash {
            return Err(format!(
                "the staged declarations and sources of {} changed after staging ({} is {version_hash}, staged as {})",
                self.label,
                self.files_path.display(),
                self.version_hash
            ));
        }
        Ok(Staged {
            module: self.module,
            version: self.version,
            label: self.label,
            path: self.path,
            source: self.source,
            hash: self.hash,
            bytes: self.bytes,
            ms: self.ms,
            files,
            version_hash,
            files_path: self.files_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::swap::stage::StagingDir;

    const SHADER: &str = "// saxpy v1\n@compute @workgroup_size(64) fn main() {}\n";

    /// A workspace with one module (`kernels/gpu`, package `kernel-gpu`)
    /// holding one shader, and a fake library to stage.
    fn workspace() -> (tempfile::TempDir, std::path::PathBuf) {
        let ws = tempfile::tempdir().expect("tempdir");
        let module = ws.path().join("kernels/gpu");
        std::fs::create_dir_all(module.join("shaders")).expect("mkdir");
        std::fs::write(
            module.join("Cargo.toml"),
            "[package]\nname = \"kernel-gpu\"\n",
        )
        .expect("write manifest");
        std::fs::write(module.join("shaders/saxpy.wgsl"), SHADER).expect("write shader");
        let library = ws.path().join("libkernel_gpu.so");
        std::fs::write(&library, b"not really a library").expect("write library");
        (ws, library)
    }

    #[test]
    fn a_staged_version_keeps_its_shader_text_and_refuses_edited_staged_files() {
        let (ws, library) = workspace();
        let stage_root = tempfile::tempdir().expect("tempdir");
        let stage = StagingDir::create(stage_root.path())
            .expect("staging dir")
            .for_workspace(ws.path());
        let staged = stage.stage("kernel-gpu", &library).expect("stage");
        assert_eq!(staged.files.sources.len(), 1, "the shader is staged");
        assert_eq!(staged.files.sources[0].text, SHADER);

        // The source on disk changes after staging: the version does not.
        std::fs::write(
            ws.path().join("kernels/gpu/shaders/saxpy.wgsl"),
            "// saxpy v2\n",
        )
        .expect("edit shader");
        let read_back = StagedWire::from(&staged)
            .into_staged()
            .expect("the staged files are intact");
        assert_eq!(
            read_back.files.sources[0].text, SHADER,
            "the worker gets the text as staged, not as on disk now"
        );
        assert_eq!(read_back.version_hash, staged.version_hash);

        // The staged copy itself is read-only; rewritten anyway (as its
        // owner can), the worker refuses the version.
        let mode = std::fs::metadata(&staged.files_path)
            .expect("staged files")
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0, "the staged files are read-only");
        std::fs::set_permissions(&staged.files_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let text = std::fs::read_to_string(&staged.files_path).expect("read staged");
        assert!(text.contains("saxpy v1"));
        std::fs::write(&staged.files_path, text.replace("saxpy v1", "saxpy v3"))
            .expect("rewrite staged");
        let refused = StagedWire::from(&staged)
            .into_staged()
            .expect_err("an edited staged file must be refused");
        assert!(
            refused.contains("changed after staging"),
            "names the problem: {refused}"
        );
    }
}

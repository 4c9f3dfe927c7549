//! A workspace copy whose served module is the misbehaving test module
//! (moved under `kernels/`, where `kiln dev` finds modules), with a
//! workload of its own: a resident buffer (the state), a call that reads
//! it back, one that counts (changes the engine's state on every call), and
//! `misbehave`, which does what the build's `BUILT_MODE` line says.

use std::path::{Path, PathBuf};

use kiln::isolation::isolated::IsolationOptions;
use kiln::isolation::worker_process::SpawnOptions;
use kiln::logging::LogFormat;
use kiln::worker::protocol::WorkerConfig;
use kiln::workload::{Workload, write};
use shared_state::{Call, Tensor};

use crate::dev_session::{WorkspaceCopy, replace_once, save_in_place};
use crate::workspace_root;

/// The module's source in the copy.
pub const SOURCE: &str = "kernels/misbehaving/src/lib.rs";
/// The line that chooses what the build's `misbehave` does.
pub const MODE_LINE: &str = "pub const BUILT_MODE: &str = \"none\";";
/// The line a harmless edit changes.
pub const REVISION_LINE: &str = "pub const REVISION: i64 = 1;";
/// Index of the `misbehave` call in the workload.
pub const MISBEHAVE_CALL: u64 = 2;
/// Elements of the resident `state` buffer.
pub const STATE_LEN: usize = 1 << 16;

/// The copy, and its workload file.
pub struct MisbehavingWorkspace {
    pub copy: WorkspaceCopy,
    pub workload: PathBuf,
    pristine: String,
}

/// The resident buffer the workload loads: finite values, a fixed pattern.
pub fn state_tensor() -> Tensor {
    let values: Vec<f32> = (0..STATE_LEN)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0 - 0.5)
        .collect();
    Tensor::from_f32(&[STATE_LEN], values)
}

/// The workload the copy is served with: the `state` resident, a call that
/// reads it back, `count`, and `misbehave` (at [`MISBEHAVE_CALL`]).
pub fn workload() -> Workload {
    let mut workload = Workload::new("misbehaving");
    workload.load("state", state_tensor());
    workload.call(Call::new("read").resident("state"), Some(state_tensor()));
    workload.call(Call::new("count"), None);
    workload.call(
        Call::new("misbehave"),
        Some(Tensor::from_f32(&[1], vec![0.0])),
    );
    workload
}

impl MisbehavingWorkspace {
    pub fn new() -> MisbehavingWorkspace {
        let copy = WorkspaceCopy::new();
        let root = copy.root();
        let from = root.join("tests/modules/misbehaving");
        let to = root.join("kernels/misbehaving");
        std::fs::create_dir_all(to.join("src")).expect("mkdir");
        for rel in ["Cargo.toml", "src/lib.rs"] {
            std::fs::rename(from.join(rel), to.join(rel)).expect("move the module");
        }
        let manifest = root.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("read Cargo.toml");
        std::fs::write(
            &manifest,
            replace_once(
                &text,
                "\"tests/modules/misbehaving\"",
                "\"kernels/misbehaving\"",
            ),
        )
        .expect("write Cargo.toml");
        let path = root.join("misbehaving.kiln");
        write(&workload(), &path).expect("write the workload");
        let pristine = std::fs::read_to_string(root.join(SOURCE)).expect("read source");
        MisbehavingWorkspace {
            copy,
            workload: path,
            pristine,
        }
    }

    pub fn root(&self) -> &Path {
        self.copy.root()
    }

    /// Saves the module with `misbehave` doing `mode` and revision `revision`.
    pub fn save(&self, mode: &str, revision: i64) {
        let source = replace_once(
            &self.pristine,
            MODE_LINE,
            &format!("pub const BUILT_MODE: &str = \"{mode}\";"),
        );
        let source = replace_once(
            &source,
            REVISION_LINE,
            &format!("pub const REVISION: i64 = {revision};"),
        );
        save_in_place(&self.root().join(SOURCE), &source);
    }

    /// Starts `kiln dev` serving this module with this workload and `extra`
    /// arguments, building in [`module_target_dir`].
    pub fn start_session(&self, extra: &[&str]) -> crate::dev_session::DevSession {
        let mut args: Vec<String> = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let target = module_target_dir();
        crate::dev_session::DevSession::start_with_env(
            &self.copy,
            &args,
            &[("KILN_MODULE_TARGET_DIR", target.as_os_str())],
        )
    }

    /// The arguments that serve this module with this workload.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--backend".into(),
            "misbehaving".into(),
            "--workload".into(),
            self.workload.display().to_string(),
        ]
    }
}

impl Default for MisbehavingWorkspace {
    fn default() -> Self {
        Self::new()
    }
}

/// A module target directory for these tests alone: their edited builds of
/// the misbehaving module never replace the artifact other tests load.
pub fn module_target_dir() -> PathBuf {
    kiln::workspace::target_dir(&workspace_root()).join("kiln-e2e-misbehaving")
}

/// Options for an `IsolatedEngine` whose workers are this build's
/// `kiln worker` on `workload`: calls untimed, output not forwarded, under
/// `memory_limit` bytes if given.
pub fn worker_options(workload: PathBuf, memory_limit: Option<u64>) -> IsolationOptions {
    IsolationOptions {
        spawn: SpawnOptions {
            program: Some(crate::dev_session::kiln_binary()),
            log_format: LogFormat::Human,
            forward_output: false,
            memory_limit,
            ..SpawnOptions::default()
        },
        worker: WorkerConfig {
            workload: Some(workload),
            timing: false,
            ..WorkerConfig::default()
        },
        call_timeout: None,
    }
}

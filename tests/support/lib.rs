//! Shared helpers for kiln's end-to-end tests: build real modules with real
//! cargo, stage them in per-test directories, read the process's state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use kiln::build::module_build::{BuildOutcome, ModuleBuilder};
use kiln::workspace;
use kiln::{LoadedModule, Staged, StagingDir};

pub mod edited_module;
pub mod misbehaving;
pub mod slurm;
pub mod sshd;
pub mod ui_page;

/// The workspace these tests belong to.
pub fn workspace_root() -> PathBuf {
    workspace::built_workspace_root()
}

/// The cargo to run (the one running the tests, if known).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Builds `package` with the host's profile into `target_dir`, with extra
/// environment, and returns a copy of its cdylib private to this workspace.
/// Real cargo, through kiln's own builder: it takes the target dir's build
/// lock and copies the artifact out under it, so a `kiln dev` of a
/// workspace copy building into the same dir never swaps its code in
/// before the copy is made. Panics with cargo's output if the build fails.
pub fn build_module_into(package: &str, target_dir: &Path, env: &[(&str, &str)]) -> PathBuf {
    build_with(&workspace_root(), package, target_dir, env)
}

/// [`build_module_into`] for the workspace at `root`.
pub fn build_with(root: &Path, package: &str, target_dir: &Path, env: &[(&str, &str)]) -> PathBuf {
    let mut builder = ModuleBuilder::new(root, target_dir)
        .with_profile(workspace::HOST_PROFILE)
        .with_color(false);
    for (k, v) in env {
        builder = builder.with_env(*k, *v);
    }
    match builder.build_package(package, &mut |_| {}) {
        Ok(BuildOutcome::Built { artifact, .. }) => artifact,
        Ok(BuildOutcome::Failed { rendered, .. }) => {
            panic!(
                "cargo build -p {package} in {} failed:\n{rendered}",
                root.display()
            )
        }
        Err(e) => panic!("cargo build -p {package} in {}: {e}", root.display()),
    }
}

/// Builds `package` (once per test process) in the shared module target
/// directory, exactly as `kiln dev` does, and returns its cdylib.
pub fn module_artifact(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(package) {
        return path.clone();
    }
    let target = workspace::module_target_dir(&workspace_root());
    let path = build_module_into(package, &target, &[]);
    built.insert(package.to_string(), path.clone());
    path
}

/// A staging directory private to one test.
/// Whether a Vulkan device is here (its names, printed once). The one
/// reason to skip a Vulkan test: the module's probe answers `Unavailable`
/// (no loader, no driver) or finds no device. Any other error is a failure,
/// and so is a skip under `KILN_REQUIRE_VULKAN=1` (CI installs lavapipe).
pub fn vulkan_present() -> bool {
    static PROBE: OnceLock<Result<String, String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        let stage = staging("vulkan-probe");
        let module = std::sync::Arc::new(load_fresh(&stage, "kernel-vulkan"));
        match kiln::swap::engine_handle::probe_devices(&module) {
            Ok(devices) if !devices.is_empty() => Ok(devices
                .iter()
                .map(|d| format!("[{}] {} ({}, {})", d.index, d.name, d.kind, d.driver))
                .collect::<Vec<_>>()
                .join("; ")),
            Ok(_) => Err("the probe found no device".to_string()),
            Err(e) if e.kind == shared_state::ErrorKind::Unavailable => Err(e.message),
            Err(e) => panic!("the Vulkan probe failed, and not for want of a driver: {e:?}"),
        }
    });
    match probe {
        Ok(devices) => {
            println!("vulkan devices: {devices}");
            true
        }
        Err(reason) => {
            assert!(
                std::env::var("KILN_REQUIRE_VULKAN").as_deref() != Ok("1"),
                "KILN_REQUIRE_VULKAN=1 but there is no Vulkan device: {reason}"
            );
            println!("skipped: no Vulkan device ({reason})");
            false
        }
    }
}

pub fn staging(test: &str) -> StagingDir {
    let root = workspace::staging_root(&workspace_root()).join(format!("test-{test}"));
    StagingDir::create(&root).expect("staging dir")
}

/// Stages and loads a fresh copy of `package`'s artifact.
pub fn load_fresh(stage: &StagingDir, package: &str) -> LoadedModule {
    let staged = stage
        .stage(package, &module_artifact(package))
        .expect("stage");
    LoadedModule::open(staged).unwrap_or_else(|e| panic!("load {package}: {e}"))
}

/// Stages `artifact` under `name` without loading it.
pub fn stage_file(stage: &StagingDir, name: &str, artifact: &Path) -> Staged {
    stage.stage(name, artifact).expect("stage")
}

/// Deterministic pseudo-random f32 bit patterns (NaNs and infinities
/// included), for bit-for-bit state checks.
pub fn random_bits(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            f32::from_bits((s >> 16) as u32)
        })
        .collect()
}

/// A `MakeWriter` that collects formatted log lines in memory.
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// A subscriber (all levels) writing into this buffer.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
pub mod dev_session;

/// The f32 resident `name` of the snapshot file at `path`, as bits.
pub fn resident_bits_in(path: &std::path::Path, name: &str) -> Vec<u32> {
    let snapshot = kiln::swap::snapshot_file::load(path).unwrap_or_else(|e| panic!("{e}"));
    match snapshot.get(&format!("resident/{name}")) {
        Some(shared_state::Section::Tensor(t)) => t
            .as_f32()
            .expect("f32 resident")
            .iter()
            .map(|f| f.to_bits())
            .collect(),
        other => panic!("no resident/{name} in {}: {other:?}", path.display()),
    }
}

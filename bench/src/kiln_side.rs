//! The kiln side: fresh staged copies of the CPU module, served with state.

use std::path::{Path, PathBuf};

use kiln::{EngineOptions, LoadedModule, ServedModule, StagingDir};
use shared_state::{Call, Output, Scalar, Tensor};

/// The CPU module's package name.
pub const MODULE: &str = "kernel-cpu";
/// Worker threads of every pool in the benchmark (kiln engine, static,
/// hot-lib-reloader library, restarted process).
pub const THREADS: usize = 2;

/// A staging directory and the artifact that every "new build" is a fresh
/// copy of.
pub struct KilnSide {
    pub stage: StagingDir,
    pub artifact: PathBuf,
}

impl KilnSide {
    /// A private staging directory named `purpose` under the workspace's
    /// staging root.
    pub fn new(workspace: &Path, artifact: &Path, purpose: &str) -> Result<KilnSide, String> {
        let root = kiln::workspace::staging_root(workspace).join(format!("bench-{purpose}"));
        let stage = StagingDir::create(&root)
            .map_err(|e| format!("cannot create staging dir under {}: {e}", root.display()))?;
        Ok(KilnSide {
            stage,
            artifact: artifact.to_path_buf(),
        })
    }

    /// Stages and loads a fresh copy of the artifact.
    pub fn fresh_module(&self) -> Result<LoadedModule, String> {
        let staged = self
            .stage
            .stage(MODULE, &self.artifact)
            .map_err(|e| e.to_string())?;
        LoadedModule::open(staged).map_err(|e| e.to_string())
    }

    /// Serves a fresh copy with `state_bytes` of resident state (one f32
    /// buffer named `state`; none for 0).
    pub fn serve(&self, state_bytes: usize) -> Result<ServedModule, String> {
        let (served, _) = ServedModule::start(self.fresh_module()?, options(), None)
            .map_err(|e| e.to_string())?;
        if state_bytes > 0 {
            served
                .handle()
                .put_resident("state", state_tensor(state_bytes))
                .map_err(|e| e.to_string())?;
        }
        Ok(served)
    }
}

/// Engine options of every kiln engine in the benchmark.
pub fn options() -> EngineOptions {
    EngineOptions {
        threads: THREADS,
        ..Default::default()
    }
}

/// An f32 tensor of `bytes` bytes (rounded down to whole elements), every
/// page written.
pub fn state_tensor(bytes: usize) -> Tensor {
    let n = bytes / 4;
    Tensor::from_f32(&[n], (0..n).map(|i| (i % 1021) as f32).collect())
}

/// `saxpy` with `a = 1.5` on tensors passed by value.
pub fn saxpy_call(x: &[f32], y: &[f32]) -> Call {
    Call::new("saxpy")
        .arg(Tensor::from_f32(&[x.len()], x.to_vec()))
        .arg(Tensor::from_f32(&[y.len()], y.to_vec()))
        .param("a", Scalar::F64(1.5))
}

/// The output tensor's f32 data, or an error naming what came back.
pub fn output_f32(out: Output) -> Result<Vec<f32>, String> {
    match out.into_tensor() {
        Some(t) => t
            .as_f32()
            .map(<[f32]>::to_vec)
            .ok_or_else(|| format!("expected f32 output, got {}", t.describe())),
        None => Err("expected a returned value, got a stored output".to_string()),
    }
}

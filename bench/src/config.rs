//! What one benchmark run measures and how often.

use std::path::PathBuf;

/// Sizes and repetition counts of one run. [`Config::full`] is the real
/// benchmark (under ~3 minutes on 2 cores); [`Config::quick`]
/// (`KILN_BENCH_QUICK=1`) is a smoke run that exercises every section in
/// seconds, for CI. Quick figures are not meant to be read.
#[derive(Clone, Debug)]
pub struct Config {
    pub quick: bool,
    /// The workspace whose `kernel-cpu` and `hot-saxpy` are built and loaded.
    pub workspace: PathBuf,
    /// Where `report.json`, `report.svg` and scratch files go.
    pub out_dir: PathBuf,
    /// The child binary of the process-restart alternative.
    pub restart_exe: PathBuf,
    /// The cargo profile modules are built with: the one this host was
    /// built with (see [`crate::artifacts::host_cargo_profile`]).
    pub module_profile: String,
    /// Extra cargo arguments naming what the host was built with, so the
    /// module's contract crates get the same features (see
    /// [`crate::artifacts::build_module`]).
    pub module_unify_with: Vec<String>,
    /// Resident state sizes for "artifact to serving" (bytes).
    pub serving_state_bytes: Vec<usize>,
    pub serving_rounds: usize,
    /// Measured one-line edits per side in "save to serving", after
    /// `save_warmup` unmeasured ones.
    pub save_rounds: usize,
    pub save_warmup: usize,
    /// Handoff sizes (bytes) with the number of rounds for each.
    pub handoff_sizes: Vec<(usize, usize)>,
    /// Swap counts after which the soak records memory.
    pub soak_checkpoints: Vec<usize>,
    pub call_rounds: usize,
    /// Target wall time of one batch of calls (one sample).
    pub call_batch_ms: f64,
    /// Debounce given to hot-lib-reloader's file watcher.
    pub watch_debounce_ms: u64,
    pub warmup: usize,
}

const MIB: usize = 1 << 20;

impl Config {
    pub fn full(workspace: PathBuf, out_dir: PathBuf, restart_exe: PathBuf) -> Config {
        Config {
            quick: false,
            workspace,
            out_dir,
            restart_exe,
            module_profile: kiln::workspace::HOST_PROFILE.to_string(),
            module_unify_with: Vec::new(),
            serving_state_bytes: vec![MIB, 256 * MIB],
            serving_rounds: 21,
            save_rounds: 5,
            save_warmup: 1,
            handoff_sizes: vec![(MIB, 31), (16 * MIB, 21), (256 * MIB, 9), (1024 * MIB, 7)],
            soak_checkpoints: vec![1, 10, 100, 500],
            call_rounds: 31,
            call_batch_ms: 30.0,
            watch_debounce_ms: 10,
            warmup: 2,
        }
    }

    pub fn quick(workspace: PathBuf, out_dir: PathBuf, restart_exe: PathBuf) -> Config {
        Config {
            quick: true,
            serving_state_bytes: vec![MIB, 8 * MIB],
            serving_rounds: 3,
            save_rounds: 2,
            save_warmup: 0,
            handoff_sizes: vec![(MIB, 3), (8 * MIB, 3)],
            soak_checkpoints: vec![1, 3, 6],
            call_rounds: 3,
            call_batch_ms: 2.0,
            warmup: 1,
            ..Config::full(workspace, out_dir, restart_exe)
        }
    }

    /// `quick` if `KILN_BENCH_QUICK` is set to anything but `0` or empty.
    pub fn from_env(workspace: PathBuf, out_dir: PathBuf, restart_exe: PathBuf) -> Config {
        let quick = std::env::var("KILN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Config::quick(workspace, out_dir, restart_exe)
        } else {
            Config::full(workspace, out_dir, restart_exe)
        }
    }
}

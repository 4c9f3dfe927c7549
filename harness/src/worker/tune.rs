//! The worker's side of the replay table's roof and of autotuning: the
//! roof of the served backend, and the tuner a passing replay starts and
//! `TuneStep` requests advance.

use std::time::Duration;

use super::protocol::{TuneProgress, WorkerConfig};
use crate::machine::replay_roof::RoofSource;
use crate::swap::engine_handle::EngineHandle;
use crate::tuning::cache::TuneCache;
use crate::tuning::tuner::{TuneConfig, Tuner};
use crate::workload::Workload;
use crate::workload::replay::ReplayOptions;

/// The workspace whose `target/` holds the caches.
fn root(config: &WorkerConfig) -> std::path::PathBuf {
    config
        .workspace
        .clone()
        .unwrap_or_else(crate::workspace::built_workspace_root)
}

/// The peaks of the served engine's device (the CPU's with the engine's
/// thread count).
pub fn roof_for(config: &WorkerConfig, handle: &EngineHandle) -> RoofSource {
    let target = crate::workspace::target_dir(&root(config));
    RoofSource::lookup(&target, handle, &config.engine_options())
}

/// The tuner for the version that just passed its replay (`None` with
/// tuning off, or when there is nothing to tune).
pub fn plan(
    config: &WorkerConfig,
    handle: &EngineHandle,
    workload: &Workload,
    options: &ReplayOptions,
) -> Option<Tuner> {
    if !config.tune {
        return None;
    }
    let root = root(config);
    let cache = TuneCache::in_target(&crate::workspace::target_dir(&root));
    match Tuner::plan(handle, workload, options, cache, TuneConfig::default()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("cannot plan the tuning of {}: {e}", handle.label());
            None
        }
    }
}

/// One bounded step of `tuner` (about `budget_ms`).
pub fn step(
    tuner: &mut Option<Tuner>,
    handle: &EngineHandle,
    options: &ReplayOptions,
    budget_ms: u64,
) -> TuneProgress {
    let Some(t) = tuner.as_mut() else {
        return TuneProgress::default();
    };
    let mut progress = TuneProgress {
        skipped: std::mem::take(&mut t.skipped),
        ..TuneProgress::default()
    };
    for done in t.step(handle, options, Duration::from_millis(budget_ms)) {
        progress.tables.push(done.table);
        progress.kept.insert(
            format!("{}/{}", done.kernel, done.param),
            done.best.unwrap_or_else(|| "-".to_string()),
        );
        progress.from_cache |= done.from_cache;
    }
    progress.more = t.pending();
    if !progress.more {
        *tuner = None;
    }
    progress
}

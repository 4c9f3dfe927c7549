//! The hot-lib-reloader side of the benchmark, as seen by the measuring
//! code. `hot-lib-reloader` is a dev-dependency of the benchmark only, so
//! its implementation lives in the bench target
//! (`benches/alternatives/hot_lib_reloader.rs`) and is handed in.

use std::fs;
use std::path::Path;

/// Calls through `#[hot_module]`-generated functions and reloaders made
/// with `LibReloader`.
pub trait HotLibReloader {
    /// Name and version, for the report.
    fn describe(&self) -> String;
    /// `a*x + y` through the generated hot function.
    fn saxpy(&self, a: f32, x: &[f32], y: &[f32]) -> Result<Vec<f32>, String>;
    /// Blocked matmul through the generated hot function.
    fn matmul(
        &self,
        a: &[f32],
        b: &[f32],
        mkn: (usize, usize, usize),
        tile: usize,
    ) -> Result<Vec<f32>, String>;
    /// A `LibReloader` watching `dir/lib{name}.so`, loaded once already.
    fn reloader(
        &self,
        dir: &Path,
        name: &str,
        debounce_ms: u64,
    ) -> Result<Box<dyn Reloader>, String>;
}

/// One `LibReloader`.
pub trait Reloader {
    /// Blocks until the watcher reports that the library file changed (or
    /// `timeout` passes: an error).
    fn wait_for_change(&mut self, timeout: std::time::Duration) -> Result<(), String>;
    /// `LibReloader::update`: closes the old copy, copies and loads the new
    /// one if the watcher saw a change. `Ok(true)` if it reloaded.
    fn update(&mut self) -> Result<bool, String>;
    /// Calls the loaded library (its C-ABI `kiln_abi_fingerprint`, which
    /// touches no thread-local state): proves the current copy answers.
    /// Returns the fingerprint's length.
    fn call(&self) -> Result<usize, String>;
}

/// Makes `dest` a new build of `artifact`: its bytes followed by an 8-byte
/// `counter` (loaders ignore bytes after the ELF's last section, and the
/// contents differ, which is what hot-lib-reloader's change check looks
/// at), written to a temporary name and renamed over `dest` the way a
/// linker's output appears.
pub fn write_new_build(artifact_bytes: &[u8], dest: &Path, counter: u64) -> Result<(), String> {
    let tmp = dest.with_extension("so.partial");
    let mut bytes = Vec::with_capacity(artifact_bytes.len() + 8);
    bytes.extend_from_slice(artifact_bytes);
    bytes.extend_from_slice(&counter.to_le_bytes());
    fs::write(&tmp, &bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, dest).map_err(|e| format!("cannot rename onto {}: {e}", dest.display()))
}

/// Makes `reloader` (just created, watching `watched`) reload once: its
/// file watcher starts on a thread of its own, so a build written before
/// that thread watches the file goes unnoticed. Writes new builds (numbered
/// from `*counter + 1`) until one is seen, waiting up to 500 ms for each,
/// 20 times at most.
pub fn prime(
    reloader: &mut dyn Reloader,
    artifact_bytes: &[u8],
    watched: &Path,
    counter: &mut u64,
) -> Result<(), String> {
    for _ in 0..20 {
        *counter += 1;
        write_new_build(artifact_bytes, watched, *counter)?;
        if reloader
            .wait_for_change(std::time::Duration::from_millis(500))
            .is_ok()
        {
            if !reloader.update()? {
                return Err("hot-lib-reloader saw a change but did not reload".to_string());
            }
            reloader.call()?;
            return Ok(());
        }
    }
    Err(format!(
        "hot-lib-reloader's watcher never noticed new builds of {}",
        watched.display()
    ))
}

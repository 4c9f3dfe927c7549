//! The hot-lib-reloader side of the benchmark: `#[hot_module]` functions
//! over the `hot-saxpy` library, and `LibReloader`s reloading the CPU
//! module's artifact. Shared by the bench and its quick test
//! (`tests/quick_run.rs` includes this file).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use hot_lib_reloader::LibReloader;
use kiln_bench::hot_reloader::{HotLibReloader, Reloader};
use shared_state::export::{FINGERPRINT_SYMBOL, FingerprintFn};

/// The directory holding `libhot_saxpy.so`, set once before the first hot
/// call (the `hot_module` below reads it when it first loads the library).
static HOT_SAXPY_DIR: OnceLock<PathBuf> = OnceLock::new();

fn hot_saxpy_dir() -> PathBuf {
    HOT_SAXPY_DIR.get().cloned().unwrap_or_default()
}

#[allow(static_mut_refs, unsafe_op_in_unsafe_fn, clippy::all)]
#[hot_lib_reloader::hot_module(
    dylib = "hot_saxpy",
    lib_dir = super::hot_saxpy_dir(),
    file_watch_debounce = 10
)]
mod hot {
    #[hot_functions]
    extern "Rust" {
        pub fn hot_saxpy(a: f32, x: &[f32], y: &[f32]) -> Result<Vec<f32>, String>;
        pub fn hot_matmul(
            a: &[f32],
            b: &[f32],
            mkn: (usize, usize, usize),
            tile: usize,
        ) -> Result<Vec<f32>, String>;
    }
}

/// hot-lib-reloader, with `hot-saxpy` built and located.
pub struct HotSide {
    version: String,
}

impl HotSide {
    /// Builds `hot-saxpy` with the host's profile (like the CPU module)
    /// and points the hot module at it.
    pub fn prepare(workspace: &Path, profile: &str) -> Result<HotSide, String> {
        let artifact = kiln_bench::artifacts::build_module(workspace, "hot-saxpy", profile, &[])?;
        let dir = artifact
            .parent()
            .ok_or_else(|| format!("{} has no parent directory", artifact.display()))?
            .to_path_buf();
        if let Some(set) = HOT_SAXPY_DIR.get() {
            if *set != dir {
                return Err(format!(
                    "hot-saxpy already loaded from {}, not {}",
                    set.display(),
                    dir.display()
                ));
            }
        }
        let _ = HOT_SAXPY_DIR.set(dir);
        Ok(HotSide {
            version: locked_version(workspace, "hot-lib-reloader"),
        })
    }
}

/// `NAME VERSION` as locked in the workspace's Cargo.lock.
fn locked_version(workspace: &Path, name: &str) -> String {
    let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).unwrap_or_default();
    let needle = format!("name = \"{name}\"\nversion = \"");
    let version = lock
        .find(&needle)
        .and_then(|i| lock[i + needle.len()..].split('"').next())
        .unwrap_or("(unknown version)");
    format!("{name} {version}")
}

impl HotLibReloader for HotSide {
    fn describe(&self) -> String {
        self.version.clone()
    }

    fn saxpy(&self, a: f32, x: &[f32], y: &[f32]) -> Result<Vec<f32>, String> {
        hot::hot_saxpy(a, x, y)
    }

    fn matmul(
        &self,
        a: &[f32],
        b: &[f32],
        mkn: (usize, usize, usize),
        tile: usize,
    ) -> Result<Vec<f32>, String> {
        hot::hot_matmul(a, b, mkn, tile)
    }

    fn reloader(
        &self,
        dir: &Path,
        name: &str,
        debounce_ms: u64,
    ) -> Result<Box<dyn Reloader>, String> {
        let mut inner = LibReloader::new(dir, name, Some(Duration::from_millis(debounce_ms)), None)
            .map_err(|e| {
                format!(
                    "hot-lib-reloader cannot load lib{name}.so from {}: {e}",
                    dir.display()
                )
            })?;
        let changes = inner.subscribe_to_file_changes();
        Ok(Box::new(HotReloader { inner, changes }))
    }
}

struct HotReloader {
    inner: LibReloader,
    changes: Receiver<()>,
}

impl Reloader for HotReloader {
    fn wait_for_change(&mut self, timeout: Duration) -> Result<(), String> {
        self.changes
            .recv_timeout(timeout)
            .map_err(|e| format!("hot-lib-reloader saw no change within {timeout:?}: {e}"))
    }

    fn update(&mut self) -> Result<bool, String> {
        self.inner.update().map_err(|e| e.to_string())
    }

    fn call(&self) -> Result<usize, String> {
        let symbol = format!("{FINGERPRINT_SYMBOL}\0");
        // SAFETY: the CPU module exports `kiln_abi_fingerprint` through
        // `shared_state::export_fingerprint!`, with exactly the C-ABI type
        // `FingerprintFn` (the macro checks it at compile time).
        let fingerprint = unsafe { self.inner.get_symbol::<FingerprintFn>(symbol.as_bytes()) }
            .map_err(|e| format!("no {FINGERPRINT_SYMBOL} in the reloaded library: {e}"))?;
        // SAFETY: a null buffer with capacity 0 is allowed: the function
        // writes only when the buffer is non-null and large enough, and
        // returns the fingerprint's length. The library stays loaded while
        // `self.inner` is borrowed.
        let len = unsafe { fingerprint(std::ptr::null_mut(), 0) };
        if len == 0 {
            return Err("the reloaded library's fingerprint function failed".to_string());
        }
        Ok(len)
    }
}

//! Measured peaks cached on disk under `target/kiln/machine/`, one JSON
//! file per [`MachineKey`] (named by a hash of it, the key stored inside
//! and compared on load): a key that changes (CPU model, threads, quota,
//! driver, LLC used, method) finds no file and is measured again.

use std::path::{Path, PathBuf};

use super::key::MachineKey;
use super::peaks::{DevicePeaks, PeakProbe};

/// The cache directory.
pub struct PeakStore {
    dir: PathBuf,
}

/// When peaks may be measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Use the cached peaks when the key matches, else measure.
    Reuse,
    /// Measure even when cached peaks match (`kiln machine --remeasure`).
    Remeasure,
    /// A build is running: never measure now (the numbers would be wrong
    /// and the build slower). Use the cached peaks when the key matches,
    /// else come back after the build ([`Lookup::Deferred`]).
    BuildRunning,
}

/// What [`PeakStore::peaks`] gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    Cached(DevicePeaks),
    Measured(DevicePeaks),
    /// Not measured now (a build runs); ask again later.
    Deferred,
}

impl Lookup {
    pub fn peaks(&self) -> Option<&DevicePeaks> {
        match self {
            Lookup::Cached(p) | Lookup::Measured(p) => Some(p),
            Lookup::Deferred => None,
        }
    }
}

impl PeakStore {
    /// `DIR` itself.
    pub fn at(dir: impl Into<PathBuf>) -> PeakStore {
        PeakStore { dir: dir.into() }
    }

    /// `TARGET_DIR/kiln/machine`.
    pub fn in_target(target_dir: &Path) -> PeakStore {
        PeakStore::at(target_dir.join("kiln").join("machine"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `key`.
    pub fn path(&self, key: &MachineKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.file_stem()))
    }

    /// The cached peaks for exactly `key`: `Ok(None)` when there are none,
    /// `Err` (naming the file) when the file is unreadable or not peaks.
    pub fn load(&self, key: &MachineKey) -> Result<Option<DevicePeaks>, String> {
        let path = self.path(key);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let peaks: DevicePeaks = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not measured peaks: {e}", path.display()))?;
        Ok((peaks.key == *key).then_some(peaks))
    }

    /// Writes `peaks` (a temporary file renamed into place: readers never
    /// see half a file).
    pub fn save(&self, peaks: &DevicePeaks) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.path(&peaks.key);
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        let json = serde_json::to_string_pretty(peaks).expect("peaks serialise");
        std::fs::write(&tmp, json).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// The peaks of `probe`'s device under `policy`. An unreadable cache
    /// file is measured over (with `Policy::BuildRunning`: deferred).
    pub fn peaks(&self, probe: &dyn PeakProbe, policy: Policy) -> Result<Lookup, String> {
        let key = probe.key();
        if policy != Policy::Remeasure {
            if let Ok(Some(peaks)) = self.load(&key) {
                return Ok(Lookup::Cached(peaks));
            }
        }
        if policy == Policy::BuildRunning {
            return Ok(Lookup::Deferred);
        }
        let peaks = probe.measure()?;
        self.save(&peaks)?;
        Ok(Lookup::Measured(peaks))
    }
}

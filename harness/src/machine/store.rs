//! Measured peaks cached on disk under `target/kiln/machine/`, one JSON
//! file per [`MachineKey`] (named by a hash of it, the key stored inside
//! and compared on load): a key that changes (CPU model, threads, quota,
//! driver, LLC used, method) finds no file and is measured again.

use std::path::{Path, PathBuf};

use super::key::MachineKey;
use super::peaks::{DevicePeaks, PeakProbe, busy, load_average};

/// The cache directory.
pub struct PeakStore {
    dir: PathBuf,
}

/// When peaks may be measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Use the cached peaks when the key matches, else measure. Peaks
    /// measured on a busy machine (see [`DevicePeaks::measured_busy`]) are
    /// measured again once it is quiet.
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

/// Whether `policy` serves `cached` peaks (of the right key) when the load
/// average is `load_now`.
pub fn serve_cached(cached: &DevicePeaks, policy: Policy, load_now: Option<f64>) -> bool {
    match policy {
        Policy::Remeasure => false,
        Policy::BuildRunning => true,
        Policy::Reuse => !cached.measured_busy() || busy(load_now, cached.key.threads),
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

    /// The cached peaks `policy` lets [`PeakStore::peaks`] serve for
    /// `key` without measuring: none for `Remeasure`; with `Reuse`, none
    /// when they were measured on a busy machine and it is quiet now.
    pub fn usable(&self, key: &MachineKey, policy: Policy) -> Option<DevicePeaks> {
        if policy == Policy::Remeasure {
            return None;
        }
        let peaks = self.load(key).ok().flatten()?;
        serve_cached(&peaks, policy, load_average()).then_some(peaks)
    }

    /// The peaks of `probe`'s device under `policy`. An unreadable cache
    /// file is measured over (with `Policy::BuildRunning`: deferred).
    pub fn peaks(&self, probe: &dyn PeakProbe, policy: Policy) -> Result<Lookup, String> {
        if let Some(peaks) = self.usable(&probe.key(), policy) {
            return Ok(Lookup::Cached(peaks));
        }
        if policy == Policy::BuildRunning {
            return Ok(Lookup::Deferred);
        }
        let peaks = probe.measure()?;
        self.save(&peaks)?;
        Ok(Lookup::Measured(peaks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::key::{METHOD_VERSION, MachineKey};
    use crate::machine::peaks::Rate;

    #[test]
    fn busy_peaks_are_measured_again_once_the_machine_is_quiet() {
        let rate = Rate::of(&[1.0], "test".into());
        let mut peaks = DevicePeaks {
            key: MachineKey {
                backend: "cpu".into(),
                device: "test".into(),
                driver: None,
                threads: 2,
                cpu_quota: "none".into(),
                llc_used_bytes: 1,
                instructions: "test".into(),
                method: METHOD_VERSION,
            },
            bandwidth: rate.clone(),
            compute: rate,
            compute_i8: None,
            llc: None,
            flush: None,
            measured_unix: 0,
            took_seconds: 1.0,
            load_before: Some(0.5),
        };
        // Quiet when measured: served whatever the load now.
        assert!(serve_cached(&peaks, Policy::Reuse, Some(9.0)));
        assert!(serve_cached(&peaks, Policy::Reuse, Some(0.1)));
        assert!(!serve_cached(&peaks, Policy::Remeasure, Some(0.1)));
        // Busy when measured (load 6 > 2 threads): served while still busy
        // or during a build, measured again once quiet.
        peaks.load_before = Some(6.0);
        assert!(peaks.measured_busy());
        assert!(serve_cached(&peaks, Policy::Reuse, Some(3.0)));
        assert!(serve_cached(&peaks, Policy::BuildRunning, Some(0.1)));
        assert!(!serve_cached(&peaks, Policy::Reuse, Some(1.5)));
    }

    /// Counts its measurements; its key's driver is settable.
    struct Counting {
        driver: String,
        measured: std::cell::Cell<usize>,
    }

    impl PeakProbe for Counting {
        fn key(&self) -> MachineKey {
            MachineKey {
                backend: "vulkan".into(),
                device: "GPU X".into(),
                driver: Some(self.driver.clone()),
                threads: 1,
                cpu_quota: "n/a".into(),
                llc_used_bytes: 0,
                instructions: "n/a".into(),
                method: METHOD_VERSION,
            }
        }

        fn measure(&self) -> Result<DevicePeaks, String> {
            self.measured.set(self.measured.get() + 1);
            let rate = Rate::of(&[self.measured.get() as f64], "test".into());
            Ok(DevicePeaks {
                key: self.key(),
                bandwidth: rate.clone(),
                compute: rate,
                compute_i8: None,
                llc: None,
                flush: None,
                measured_unix: 0,
                took_seconds: 0.1,
                load_before: None,
            })
        }
    }

    #[test]
    fn a_changed_driver_is_measured_again_and_the_old_peaks_stay_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = PeakStore::at(dir.path());
        let mut probe = Counting {
            driver: "driver=1".into(),
            measured: Default::default(),
        };
        assert!(matches!(
            store.peaks(&probe, Policy::Reuse),
            Ok(Lookup::Measured(_))
        ));
        assert!(matches!(
            store.peaks(&probe, Policy::Reuse),
            Ok(Lookup::Cached(_))
        ));
        assert_eq!(probe.measured.get(), 1);
        // A new driver: no peaks for it, and none measured during a build.
        probe.driver = "driver=2".into();
        assert_eq!(
            store.peaks(&probe, Policy::BuildRunning),
            Ok(Lookup::Deferred)
        );
        let Ok(Lookup::Measured(new)) = store.peaks(&probe, Policy::Reuse) else {
            panic!("a changed key measures again");
        };
        assert_eq!((probe.measured.get(), new.bandwidth.best), (2, 2.0));
        assert_eq!(new.key.driver.as_deref(), Some("driver=2"));
        // `--remeasure` measures whatever is cached.
        assert!(matches!(
            store.peaks(&probe, Policy::Remeasure),
            Ok(Lookup::Measured(_))
        ));
        probe.driver = "driver=1".into();
        let Ok(Lookup::Cached(old)) = store.peaks(&probe, Policy::Reuse) else {
            panic!("the first driver's peaks are still cached");
        };
        assert_eq!(old.bandwidth.best, 1.0);
    }
}

//! The measured peaks are cached under the target directory: reused while
//! their key matches, measured again when the thread count changes, never
//! measured while a build runs. Real measurements (about 1.5 s each).

use std::cell::Cell;

use kiln::machine::{
    CpuProbe, DevicePeaks, Lookup, MachineKey, PeakProbe, PeakStore, Policy, fma, key,
};

/// The real CPU probe, counting how often it measures.
struct Counting {
    probe: CpuProbe,
    measured: Cell<usize>,
}

impl Counting {
    fn new(threads: usize) -> Counting {
        Counting {
            probe: CpuProbe::new(threads),
            measured: Cell::new(0),
        }
    }
}

impl PeakProbe for Counting {
    fn key(&self) -> MachineKey {
        self.probe.key()
    }
    fn measure(&self) -> Result<DevicePeaks, String> {
        self.measured.set(self.measured.get() + 1);
        self.probe.measure()
    }
}

/// The same measurement read back (JSON floats may differ in the last
/// bit: serde_json parses them fast, not exactly).
fn same_measurement(a: &DevicePeaks, b: &DevicePeaks) -> bool {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * y.abs();
    a.key == b.key
        && a.measured_unix == b.measured_unix
        && a.bandwidth.samples == b.bandwidth.samples
        && close(a.bandwidth.best, b.bandwidth.best)
        && close(a.compute.best, b.compute.best)
        && close(a.took_seconds, b.took_seconds)
}

#[test]
fn reused_when_the_key_matches_remeasured_when_threads_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = PeakStore::in_target(dir.path());
    let two = Counting::new(2);

    let first = store.peaks(&two, Policy::Reuse).unwrap();
    let Lookup::Measured(peaks) = &first else {
        panic!("nothing cached yet, yet {first:?}")
    };
    assert_eq!(two.measured.get(), 1);
    assert_eq!(peaks.key.threads, 2);
    // Measured as configured: the triad's passes (at least 5) and the FMA
    // rounds, the peak the best of them.
    assert!(peaks.bandwidth.samples >= 5, "{peaks:?}");
    assert!(peaks.compute.samples >= 1, "{peaks:?}");
    assert!(peaks.compute.best >= peaks.compute.median, "{peaks:?}");
    // The compute peak names the instructions it ran on, and the key holds
    // them (peaks measured on other instructions are another key's); the
    // i8 peak is there where the CPU has an i8 loop.
    assert!(
        peaks.compute.method.contains(fma::instructions()),
        "{}",
        peaks.compute.method
    );
    assert_eq!(peaks.key.instructions, key::cpu_instructions());
    assert_eq!(
        peaks.compute_i8.is_some(),
        kiln::machine::i8dot::I8Isa::detected().is_some(),
        "{peaks:?}"
    );
    assert!(peaks.bandwidth.best >= peaks.bandwidth.median);
    let file = store.path(&peaks.key);
    assert!(
        file.starts_with(dir.path().join("kiln/machine")),
        "{}",
        file.display()
    );
    assert!(file.exists());

    // Same key: the file is used, nothing is measured. (Recorded as
    // measured on a quiet machine, so that the rule "busy peaks are
    // measured again once it is quiet", unit-tested in store.rs, cannot
    // kick in whatever this machine's load.)
    let mut peaks = peaks.clone();
    peaks.load_before = Some(0.0);
    store.save(&peaks).unwrap();
    let again = Counting::new(2);
    let Lookup::Cached(served) = store.peaks(&again, Policy::Reuse).unwrap() else {
        panic!("the key matched, yet the peaks were not served from the file")
    };
    assert!(same_measurement(&served, &peaks), "{served:?}\n{peaks:?}");
    assert_eq!(again.measured.get(), 0);

    // A build is running and the key has no peaks: deferred, not measured.
    let three = Counting::new(3);
    assert_eq!(
        store.peaks(&three, Policy::BuildRunning).unwrap(),
        Lookup::Deferred
    );
    assert_eq!(three.measured.get(), 0);
    // ...but cached peaks are still served during a build.
    let during = Counting::new(2);
    assert!(matches!(
        store.peaks(&during, Policy::BuildRunning).unwrap(),
        Lookup::Cached(_)
    ));
    assert_eq!(during.measured.get(), 0);

    // Another thread count: another key, measured with that count.
    let one = Counting::new(1);
    let Lookup::Measured(single) = store.peaks(&one, Policy::Reuse).unwrap() else {
        panic!("one thread was never measured, yet it was cached")
    };
    assert_eq!((one.measured.get(), single.key.threads), (1, 1));
    assert_ne!(store.path(&single.key), file);
    assert!(
        single.bandwidth.method.contains(", 1 thread,"),
        "{}",
        single.bandwidth.method
    );

    // --remeasure measures though the cache matches, and replaces the file.
    let re = Counting::new(2);
    let Lookup::Measured(fresh) = store.peaks(&re, Policy::Remeasure).unwrap() else {
        panic!("Remeasure served the cache")
    };
    assert_eq!(re.measured.get(), 1);
    let stored = store.load(&fresh.key).unwrap().unwrap();
    assert!(same_measurement(&stored, &fresh) && !same_measurement(&stored, &peaks));

    // A damaged file is named in the error and measured over.
    std::fs::write(&file, "{ not json").unwrap();
    let err = store.load(&fresh.key).unwrap_err();
    assert!(err.contains(&file.display().to_string()), "{err}");
    let fix = Counting::new(2);
    let Lookup::Measured(fixed) = store.peaks(&fix, Policy::Reuse).unwrap() else {
        panic!("a damaged file was served")
    };
    assert_eq!(fix.measured.get(), 1);

    // A file whose key differs (say, edited by hand) is not used.
    let mut other = fixed.clone();
    other.key.cpu_quota = "0.50 CPUs (50000/100000)".into();
    let json = serde_json::to_string(&other).unwrap();
    std::fs::write(store.path(&fixed.key), json).unwrap();
    assert_eq!(store.load(&fixed.key).unwrap(), None);
}

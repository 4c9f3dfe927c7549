//! The Vulkan device's peaks (lavapipe here): measured through the
//! module's peak kernels, cached under a key that includes the driver,
//! served from the cache the second time (by `kiln machine` too), and
//! used by a replay on vulkan for its roofline percentages.
//!
//! Prints `skipped: no Vulkan device (...)` and passes when there is none,
//! unless `KILN_REQUIRE_VULKAN=1` is set.

use std::process::Command;
use std::sync::Arc;

use kiln::machine::engine_peaks::EngineProbe;
use kiln::machine::replay_roof::RoofSource;
use kiln::machine::{Lookup, PeakProbe, PeakStore, Policy, Roof, achieved};
use kiln::workload::generate::workspace_bundled_workload as bundled_workload;
use kiln::workload::replay::{self, ReplayOptions, quick_timing};
use kiln::{EngineHandle, EngineOptions};
use kiln_e2e::dev_session::kiln_binary;
use kiln_e2e::*;

fn options() -> EngineOptions {
    EngineOptions {
        threads: 2,
        ..Default::default()
    }
}

#[test]
fn vulkan_peaks_are_cached_per_driver_and_judge_a_vulkan_replay() {
    let stage = staging("machine-vulkan");
    let module = Arc::new(load_fresh(&stage, "kernel-vulkan"));
    if !vulkan_present() {
        return;
    }
    let (served, _) = EngineHandle::start(module, &options(), None).expect("vulkan engine");
    let target = tempfile::tempdir().unwrap();
    let store = PeakStore::in_target(target.path());

    // Measured on the device, keyed by its driver.
    let probe = EngineProbe::for_served(&served, &options()).unwrap();
    let key = probe.key();
    assert_eq!(key.backend, "vulkan");
    let driver = key.driver.clone().expect("a GPU key has its driver");
    assert!(driver.contains("driver="), "{driver}");
    let Lookup::Measured(peaks) = store.peaks(&probe, Policy::Reuse).unwrap() else {
        panic!("the first lookup measures");
    };
    println!(
        "vulkan peaks: {:.2} GB/s, {:.1} GFLOP/s in {:.1} s ({})\n  {}\n  {}",
        peaks.bandwidth.best,
        peaks.compute.best,
        peaks.took_seconds,
        peaks.key.device,
        peaks.bandwidth.method,
        peaks.compute.method
    );
    assert_eq!(peaks.key, key);
    // Each peak is measured over the rounds configured (differences of a
    // small and a large call, the fastest of each), with its method named.
    for rate in [&peaks.bandwidth, &peaks.compute] {
        assert!(
            rate.samples >= kiln::machine::engine_peaks::ROUNDS.0,
            "{rate:?}"
        );
        assert!(rate.best.is_finite() && rate.median.is_finite(), "{rate:?}");
        assert!(!rate.method.is_empty(), "{rate:?}");
    }
    assert!(store.path(&key).is_file());
    // Served from the cache (a build running: never measured then).
    let Lookup::Cached(cached) = store.peaks(&probe, Policy::BuildRunning).unwrap() else {
        panic!("the second lookup is served from the cache");
    };
    assert_eq!(
        (&cached.key, cached.measured_unix),
        (&peaks.key, peaks.measured_unix)
    );
    assert!((cached.bandwidth.best - peaks.bandwidth.best).abs() < 1e-9);

    // A replay on vulkan judges its calls against the Vulkan peaks.
    let roof = RoofSource::lookup(target.path(), &served, &options());
    let used = roof.peaks().expect("the cached vulkan peaks").clone();
    assert_eq!(used.key, key, "the Vulkan device's peaks, not the CPU's");
    let workload = bundled_workload(&workspace_root()).expect("the bundled workload");
    let timed = ReplayOptions {
        timing: Some(quick_timing()),
        roof,
        ..ReplayOptions::default()
    };
    replay::load_state(&served, &workload).unwrap();
    let report = replay::replay(&served, &workload, &timed, None);
    assert!(report.passed());
    let header = report.timing_header.clone().unwrap();
    println!("{header}");
    assert!(
        header.contains("roofline:") && header.contains("(vulkan: "),
        "{header}"
    );
    let mut judged = 0;
    for call in &report.calls {
        let (Some(stats), Some(work), Some(point)) = (&call.stats, call.work, call.point) else {
            continue;
        };
        let expected = achieved(stats.median, work, Roof::of(&used)).unwrap();
        assert_eq!(point.percent, expected.percent, "{}", call.key);
        assert!(
            point.percent.is_finite() && point.percent > 0.0,
            "{}",
            call.key
        );
        println!(
            "  {:<12} {:.0}% of the vulkan roofline",
            call.key, point.percent
        );
        judged += 1;
    }
    assert!(judged > 0, "no call had a roofline percentage");
    drop(served);

    // `kiln machine`: the second call is served from the cache (unless the
    // first measured on a busy machine that is quiet now: then it measures
    // again, as documented).
    let machine = || {
        let out = Command::new(kiln_binary())
            .current_dir(workspace_root())
            .args(["machine", "--backends", "vulkan"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let first = machine();
    let second = machine();
    println!("{second}");
    assert!(
        second.lines().any(|l| l.starts_with("vulkan: ")),
        "{second}"
    );
    assert!(
        second.contains("device identity") && second.contains("GB/s"),
        "{second}"
    );
    if !first.contains("busy machine") {
        assert!(!second.contains("(just now)"), "measured again:\n{second}");
        assert!(second.contains(" ago)"), "{second}");
    }
}

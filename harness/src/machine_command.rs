//! `kiln machine`: prints the measured peaks of every backend this
//! machine can run (the CPU, and each device of each GPU module: how and
//! when they were measured, the LLC size used and why, the flush cost);
//! `--remeasure` measures again, `--backends` picks backends, `--module
//! FILE` measures the devices of a GPU module built elsewhere. Waits for a
//! running cargo build in this workspace's target directory before
//! measuring.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_stats::bytes;

use crate::machine::build_gate;
use crate::machine::columns::rate;
use crate::machine::engine_peaks::EngineProbe;
use crate::machine::peaks::{CpuProbe, DevicePeaks, PeakProbe, unix_now};
use crate::machine::store::{Lookup, PeakStore, Policy};
use crate::machine::{peak_kernels, threads};
use crate::swap::engine_handle::{EngineOptions, probe_devices};
use crate::swap::stage::StagingDir;
use crate::units::human_secs;

/// How long `kiln machine` waits for a build before giving up.
const BUILD_WAIT: Duration = Duration::from_secs(600);

/// `kiln machine [--threads N] [--remeasure] [--backends B,..]` in the
/// current workspace.
pub fn main(
    threads: usize,
    remeasure: bool,
    backends: &[String],
    module_file: Option<&Path>,
) -> Result<(), String> {
    let root = std::env::current_dir()
        .ok()
        .and_then(|d| crate::workspace::find_workspace_root(&d))
        .unwrap_or_else(crate::workspace::built_workspace_root);
    let target_dir = crate::workspace::target_dir(&root);
    let policy = if remeasure {
        Policy::Remeasure
    } else {
        Policy::Reuse
    };
    let wanted = |b: &str| {
        backends.is_empty()
            || backends
                .iter()
                .any(|w| w == b || w.strip_prefix("kernel-") == Some(b))
    };
    if let Some(file) = module_file {
        // `--module FILE`: that module's devices only.
        let stage = StagingDir::create(&crate::workspace::staging_root(&root))
            .map_err(|e| e.to_string())?
            .for_workspace(&root);
        let module = crate::kernel_commands::load_backend(&root, &stage, "", Some(file))?;
        return gpu_devices(&target_dir, &Arc::new(module), threads, policy);
    }
    if wanted("cpu") {
        run(&target_dir, threads, remeasure)?;
    }
    let graph =
        crate::build::module_graph::ModuleGraph::discover(&root).map_err(|e| e.to_string())?;
    let gpu: Vec<_> = graph
        .modules()
        .iter()
        .filter(|m| peak_kernels::has_peak_kernels(&m.backend) && wanted(&m.backend))
        .collect();
    for b in backends {
        let b = b.strip_prefix("kernel-").unwrap_or(b);
        if !graph.modules().iter().any(|m| m.backend == b) {
            return Err(format!("no backend {b:?} in this workspace"));
        }
    }
    let mut failed = Vec::new();
    if !gpu.is_empty() {
        let stage = StagingDir::create(&crate::workspace::staging_root(&root))
            .map_err(|e| e.to_string())?
            .for_workspace(&root);
        for module in gpu {
            if let Err(e) =
                gpu_backend(&root, &target_dir, &stage, &module.backend, threads, policy)
            {
                println!("{}: not measured: {e}", module.backend);
                failed.push(module.backend.clone());
            }
        }
    }
    // Asked for by name: its failure is the command's.
    match failed.iter().find(|b| !backends.is_empty() && wanted(b)) {
        Some(b) => Err(format!("{b}: no peaks measured (see above)")),
        None => Ok(()),
    }
}

/// The peaks of each device of the GPU module `backend` (built, staged and
/// loaded in this process; its peak kernels run on a peak engine per
/// device).
fn gpu_backend(
    root: &Path,
    target_dir: &Path,
    stage: &StagingDir,
    backend: &str,
    threads: usize,
    policy: Policy,
) -> Result<(), String> {
    let module = Arc::new(crate::kernel_commands::load_backend(
        root, stage, backend, None,
    )?);
    gpu_devices(target_dir, &module, threads, policy)
}

/// The peaks of each device of the loaded GPU module `module`.
fn gpu_devices(
    target_dir: &Path,
    module: &Arc<crate::swap::load::LoadedModule>,
    threads: usize,
    policy: Policy,
) -> Result<(), String> {
    let store = PeakStore::in_target(target_dir);
    let backend = peak_kernels::backend_of(&module.staged.module).to_string();
    let devices = probe_devices(module).map_err(|e| e.message)?;
    if devices.is_empty() {
        return Err("the module found no device".into());
    }
    for device in devices {
        let options = EngineOptions {
            threads,
            options: BTreeMap::from([("device".to_string(), device.index.to_string())]),
        };
        let probe = EngineProbe::started(module, &options)?;
        if let Err(e) = store.load(&probe.key()) {
            eprintln!("kiln: ignoring the cached peaks: {e}");
        }
        if store.usable(&probe.key(), policy).is_none() {
            wait_for_builds(target_dir)?;
            eprintln!(
                "measuring the peaks of {backend} device {} ({}) (a second or two)...",
                device.index, device.name
            );
        }
        let lookup = store.peaks(&probe, policy)?;
        let peaks = lookup
            .peaks()
            .expect("Reuse and Remeasure always give peaks");
        print!(
            "{}",
            describe(peaks, matches!(lookup, Lookup::Measured(_)), unix_now())
        );
        println!("  cached in         {}", store.path(&peaks.key).display());
    }
    Ok(())
}

/// The CPU's peaks (`kiln machine --backends cpu`) in the workspace whose
/// target directory is `target_dir`.
pub fn run(target_dir: &Path, threads: usize, remeasure: bool) -> Result<(), String> {
    let store = PeakStore::in_target(target_dir);
    let probe = CpuProbe::new(threads);
    let policy = if remeasure {
        Policy::Remeasure
    } else {
        Policy::Reuse
    };
    if let Err(e) = store.load(&probe.key()) {
        eprintln!("kiln: ignoring the cached peaks: {e}");
    }
    if store.usable(&probe.key(), policy).is_none() {
        wait_for_builds(target_dir)?;
        eprintln!(
            "measuring the CPU's peaks with {} (a second or two)...",
            threads::count_words(probe.threads)
        );
    }
    let lookup = store.peaks(&probe, policy)?;
    let peaks = lookup
        .peaks()
        .expect("Reuse and Remeasure always give peaks");
    print!(
        "{}",
        describe(peaks, matches!(lookup, Lookup::Measured(_)), unix_now())
    );
    println!("  cached in         {}", store.path(&peaks.key).display());
    Ok(())
}

/// Waits (saying so) while cargo builds in `target_dir`.
fn wait_for_builds(target_dir: &Path) -> Result<(), String> {
    let locks = build_gate::lock_files(target_dir);
    let started = Instant::now();
    let mut said = false;
    while let Some(lock) = build_gate::build_running(&locks) {
        if !said {
            eprintln!(
                "a build is running ({} is locked): measuring after it ends",
                lock.display()
            );
            said = true;
        }
        if started.elapsed() > BUILD_WAIT {
            return Err(format!(
                "a build has been running for {} s ({} is locked): not measuring during it; \
                 run `kiln machine` again when it is done",
                BUILD_WAIT.as_secs(),
                lock.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The peaks as `kiln machine` prints them.
pub fn describe(p: &DevicePeaks, just_measured: bool, now_unix: u64) -> String {
    let mut out = if p.key.backend == "cpu" || p.key.llc_used_bytes > 0 {
        // The CPU, or a software device running on it.
        format!(
            "{}: {}, {}, CPU quota {}\n",
            p.key.backend,
            p.key.device,
            threads::count_words(p.key.threads),
            p.key.cpu_quota
        )
    } else {
        format!("{}: {}\n", p.key.backend, p.key.device)
    };
    let mut line = |name: &str, value: String| out.push_str(&format!("  {name:<17} {value}\n"));
    if let Some(driver) = &p.key.driver {
        line("device identity", driver.clone());
    }
    line(
        "memory bandwidth",
        format!(
            "{} GB/s (median {})",
            rate(p.bandwidth.best),
            rate(p.bandwidth.median)
        ),
    );
    line("", p.bandwidth.method.clone());
    line(
        "compute",
        format!(
            "{} GFLOP/s (median {})",
            rate(p.compute.best),
            rate(p.compute.median)
        ),
    );
    line("", p.compute.method.clone());
    if let Some(i8) = &p.compute_i8 {
        line(
            "compute (i8)",
            format!(
                "{} GOP/s (median {}): the roof of calls with i8 inputs",
                rate(i8.best),
                rate(i8.median)
            ),
        );
        line("", i8.method.clone());
    }
    line(
        "ridge point",
        format!(
            "{:.2} flop/byte (below it a kernel is memory-bound)",
            p.compute.best / p.bandwidth.best
        ),
    );
    if let Some(llc) = &p.llc {
        line("last-level cache", llc.to_string());
    }
    if let Some(f) = &p.flush {
        line(
            "cold-cache flush",
            format!(
                "{} per flush (touches {}; not timed)",
                human_secs(f.seconds),
                bytes::human(f.buffer_bytes)
            ),
        );
    }
    let load = match p.load_before {
        Some(l) if p.measured_busy() => format!(
            ", load average {l:.2} before: a busy machine, the peaks may read low \
             (measured again when it is quiet)"
        ),
        Some(l) => format!(", load average {l:.2} before"),
        None => String::new(),
    };
    line(
        "measured",
        format!(
            "{} ({}) in {:.1} s{load}",
            utc(p.measured_unix),
            if just_measured {
                "just now".to_string()
            } else {
                ago(now_unix.saturating_sub(p.measured_unix))
            },
            p.took_seconds
        ),
    );
    out
}

/// `3 min ago`, `2 h ago`, `5 days ago`.
fn ago(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s ago"),
        120..7200 => format!("{} min ago", secs / 60),
        7200..172_800 => format!("{} h ago", secs / 3600),
        _ => format!(
            "{} days ago; `kiln machine --remeasure` to refresh",
            secs / 86_400
        ),
    }
}

/// `2025-03-01 14:05:09 UTC` from Unix seconds (proleptic Gregorian
/// calendar; days to civil date after Howard Hinnant's `civil_from_days`).
pub fn utc(unix: u64) -> String {
    let (days, rem) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_ages() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(ago(59), "59 s ago");
        assert_eq!(ago(600), "10 min ago");
        assert!(ago(900_000).starts_with("10 days ago"));
    }
}

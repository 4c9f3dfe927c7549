//! State scale on Vulkan (`cargo bench -p kiln-bench -- state-vulkan`):
//! what each size of resident state costs the Vulkan module's swaps and
//! checkpoints, by the bytes the engine copies between host and device
//! (its `transfers/*` notes) and the time each step takes, through kiln's
//! own swap (`ServedModule`, the real module library, in process).
//!
//! For each size (1 MiB, 64 MiB, 256 MiB, 1 GiB; `KILN_BENCH_STATE_MIB=1,64`
//! picks others; 1 and 16 MiB with `KILN_BENCH_QUICK=1`) f32 residents in
//! pairs of at most 64 MiB each (a storage buffer binds at most 128 MiB on
//! lavapipe), half the size `x0`, `x1`, ... put from the host and half `y0`,
//! `y1`, ... computed on the device (saxpy of each `x`, stored), and:
//!
//! - a swap to a new version of the module (`export_handoff`: residents
//!   handed over on the device as opaque fds), three times: its export +
//!   import ms and the bytes either engine copied host <-> device;
//! - the first export of the new version (a checkpoint: it downloads what it
//!   has no host copy of), then one after a replay that stored nothing
//!   (nothing to download), then one after `y0` was stored over (only it);
//! - a switch to the CPU module (through host memory, as every backend
//!   switch), and a memcpy of the size for scale.
//!
//! On lavapipe device memory is host memory: the bytes are what a GPU would
//! move over PCIe, the times are memory speed. A size is skipped when
//! `MemAvailable` is below four times it. Writes
//! `target/kiln-bench/state-scale-vulkan.json`.

use std::hint::black_box;
use std::time::Instant;

use kiln::{LoadedModule, ServedModule, StagingDir};
use serde_json::{Value, json};
use shared_state::{Call, Scalar};

use crate::config::Config;
use crate::kiln_side::{options, state_tensor};
use crate::stats::Summary;
use crate::table::{Table, num};

const VULKAN: &str = "kernel-vulkan";
const CPU: &str = "kernel-cpu";
const MIB: u64 = 1 << 20;
/// Swaps per size.
const SWAPS: usize = 3;
/// The largest resident.
const CHUNK: u64 = 64 * MIB;

/// The sizes measured: `KILN_BENCH_STATE_MIB` (MiB, comma separated), else
/// 1 and 16 MiB for a quick run, else 1 MiB, 64 MiB, 256 MiB and 1 GiB.
fn sizes(config: &Config) -> Result<Vec<u64>, String> {
    if std::env::var_os("KILN_BENCH_STATE_MIB").is_some() {
        // The CPU section's parsing of the same list.
        return crate::state_scale::sizes(config);
    }
    Ok(if config.quick {
        vec![MIB, 16 * MIB]
    } else {
        vec![MIB, 64 * MIB, 256 * MIB, 1024 * MIB]
    })
}

/// Bytes copied (host -> device, device -> host) by the engine so far.
fn transfers(served: &kiln::EngineHandle) -> Result<(i64, i64), String> {
    let notes = served.info().map_err(|e| e.to_string())?.notes;
    let get = |key: &str| match notes.get(key) {
        Some(Scalar::I64(v)) => Ok(*v),
        other => Err(format!("the Vulkan module's note {key} is {other:?}")),
    };
    Ok((
        get("transfers/host_to_device_bytes")?,
        get("transfers/device_to_host_bytes")?,
    ))
}

/// One export (a checkpoint's): its ms and the bytes it downloaded.
#[derive(Clone, Copy, Debug)]
struct Export {
    ms: f64,
    downloaded: i64,
}

impl Export {
    fn of(served: &ServedModule) -> Result<Export, String> {
        let before = transfers(&served.handle())?.1;
        let started = Instant::now();
        let snapshot = served.handle().export_state().map_err(|e| e.to_string())?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        drop(black_box(snapshot));
        Ok(Export {
            ms,
            downloaded: transfers(&served.handle())?.1 - before,
        })
    }

    fn to_json(self) -> Value {
        json!({"ms": self.ms, "downloaded_bytes": self.downloaded})
    }
}

/// Figures for one size.
struct SizeFigures {
    bytes: u64,
    /// Export + import of each swap between versions.
    swap_ms: Summary,
    /// Bytes either engine copied host <-> device during the swaps.
    swap_moved: i64,
    handed_over_bytes: usize,
    first_export: Export,
    unchanged_export: Export,
    changed_export: Export,
    switch_to_cpu_ms: f64,
    memcpy_ms: f64,
}

/// saxpy of resident `x{i}` with itself.
fn saxpy(i: u64, a: f64) -> Call {
    let x = format!("x{i}");
    Call::new("saxpy")
        .resident(&x)
        .resident(&x)
        .param("a", Scalar::F64(a))
}

fn measure_size(stage: &Stage, bytes: u64) -> Result<SizeFigures, String> {
    let (served, _) =
        ServedModule::start(stage.fresh(VULKAN)?, options(), None).map_err(|e| e.to_string())?;
    let half = bytes / 2;
    for i in 0..half.div_ceil(CHUNK) {
        let len = CHUNK.min(half - i * CHUNK);
        served
            .handle()
            .put_resident(&format!("x{i}"), state_tensor(len as usize))
            .map_err(|e| e.to_string())?;
        served
            .call(saxpy(i, 3.0).store_as(&format!("y{i}")))
            .map_err(|e| e.to_string())?;
    }
    let mut swap_ms = Vec::with_capacity(SWAPS);
    let mut swap_moved = 0;
    let mut handed_over_bytes = 0;
    for _ in 0..SWAPS {
        let old_before = transfers(&served.handle())?;
        let (report, old) = served
            .swap_keeping_old(stage.fresh(VULKAN)?)
            .map_err(|e| e.to_string())?;
        let old_after = transfers(&old)?;
        let new = transfers(&served.handle())?;
        swap_moved += (old_after.0 - old_before.0) + (old_after.1 - old_before.1) + new.0 + new.1;
        swap_ms.push(report.export_ms + report.import_ms);
        handed_over_bytes = report.bytes;
        drop(old);
    }
    let first_export = Export::of(&served)?;
    // A replay that stores nothing: its outputs come back to the host.
    for _ in 0..3 {
        served.call(saxpy(0, 0.5)).map_err(|e| e.to_string())?;
    }
    let unchanged_export = Export::of(&served)?;
    served
        .call(saxpy(0, -1.0).store_as("y0"))
        .map_err(|e| e.to_string())?;
    let changed_export = Export::of(&served)?;
    let report = served.swap(stage.fresh(CPU)?).map_err(|e| e.to_string())?;
    let switch_to_cpu_ms = report.export_ms + report.import_ms;
    drop(served);
    Ok(SizeFigures {
        bytes,
        swap_ms: Summary::of(&swap_ms).ok_or("no swap measured")?,
        swap_moved,
        handed_over_bytes,
        first_export,
        unchanged_export,
        changed_export,
        switch_to_cpu_ms,
        memcpy_ms: memcpy_ms(bytes as usize),
    })
}

/// One memcpy of `bytes` into a pre-touched buffer (ms).
fn memcpy_ms(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![2u8; bytes];
    let started = Instant::now();
    dst.copy_from_slice(black_box(&src));
    let ms = started.elapsed().as_secs_f64() * 1e3;
    black_box(&dst);
    ms
}

/// Builds the Vulkan and CPU modules once; stages a fresh copy per version.
struct Stage {
    dir: StagingDir,
    vulkan: std::path::PathBuf,
    cpu: std::path::PathBuf,
}

impl Stage {
    fn new(config: &Config) -> Result<Stage, String> {
        let build = |package: &str| {
            crate::artifacts::build_module(
                &config.workspace,
                package,
                &config.module_profile,
                &config.module_unify_with,
            )
        };
        let root = kiln::workspace::staging_root(&config.workspace).join("bench-state-vulkan");
        let dir = StagingDir::create(&root)
            .map_err(|e| format!("cannot create staging dir under {}: {e}", root.display()))?;
        Ok(Stage {
            vulkan: build(VULKAN)?,
            cpu: build(CPU)?,
            dir,
        })
    }

    fn fresh(&self, package: &str) -> Result<LoadedModule, String> {
        let artifact = if package == VULKAN {
            &self.vulkan
        } else {
            &self.cpu
        };
        let staged = self
            .dir
            .stage(package, artifact)
            .map_err(|e| e.to_string())?;
        LoadedModule::open(staged).map_err(|e| e.to_string())
    }
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Measures every size and returns the printed table.
pub fn measure(config: &Config) -> Result<String, String> {
    let load_start = crate::report::load_average();
    let started = Instant::now();
    let stage = Stage::new(config)?;
    let mut table = Table::new(&[
        "state",
        "swap ms",
        "swap host<->device",
        "1st export",
        "unchanged export",
        "changed export",
        "to cpu ms",
        "memcpy ms",
    ]);
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for bytes in sizes(config)? {
        if mem_available().is_some_and(|m| m < 4 * bytes) {
            skipped.push(format!(
                "{} MiB skipped: MemAvailable below four times it",
                bytes / MIB
            ));
            continue;
        }
        eprintln!("kiln-bench: state scale on vulkan, {} MiB", bytes / MIB);
        let f = measure_size(&stage, bytes)?;
        let export = |e: Export| format!("{} B, {} ms", e.downloaded, num(e.ms));
        table.row(vec![
            format!("{} MiB", f.bytes / MIB),
            format!("{} ± {}", num(f.swap_ms.median), num(f.swap_ms.mad)),
            format!("{} B", f.swap_moved),
            export(f.first_export),
            export(f.unchanged_export),
            export(f.changed_export),
            num(f.switch_to_cpu_ms),
            num(f.memcpy_ms),
        ]);
        rows.push(json!({
            "bytes": f.bytes,
            "swap_ms": f.swap_ms.to_json(),
            "swap_host_device_bytes": f.swap_moved,
            "handed_over_bytes": f.handed_over_bytes,
            "first_export": f.first_export.to_json(),
            "unchanged_export": f.unchanged_export.to_json(),
            "changed_export": f.changed_export.to_json(),
            "switch_to_cpu_ms": f.switch_to_cpu_ms,
            "memcpy_ms": f.memcpy_ms,
        }));
    }
    let load_end = crate::report::load_average();
    std::fs::create_dir_all(&config.out_dir).map_err(|e| e.to_string())?;
    let out = config.out_dir.join("state-scale-vulkan.json");
    let figures =
        json!({"sizes": rows, "skipped": skipped, "load_start": load_start, "load_end": load_end});
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&figures).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(format!(
        "state scale on vulkan (lavapipe: device memory is host memory; bytes are what a GPU would move over PCIe): \
         swaps hand the residents over on the device ({SWAPS} per size, median ± MAD of export + import); \
         exports are checkpoints: the first after the swaps, one after a replay that stored nothing, one after `y0` was stored over\n{}{}\
         (run took {:.0} s; load average {load_start:.1} at the start, {load_end:.1} at the end)\nraw figures: {}\n",
        table.render(),
        skipped.iter().map(|s| format!("{s}\n")).collect::<String>(),
        started.elapsed().as_secs_f64(),
        out.display()
    ))
}

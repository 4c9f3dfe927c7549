//! kiln's benchmark against the alternatives, side by side in one run:
//! hot-lib-reloader, restarting a process that reloads its state from a
//! file, and static linking.
//!
//! Run with `cargo bench -p kiln-bench` (`KILN_BENCH_QUICK=1` for a smoke
//! run). It prints a table, writes `target/kiln-bench/report.json` (raw
//! figures) and `target/kiln-bench/report.svg` (the main ratios).
//!
//! Sections: [`serving`] (artifact to serving), [`save_serving`] (save to
//! serving, through the real `kiln dev`), [`calls`] (call overhead),
//! [`handoff`] (state handoff throughput), [`soak`] (memory over many
//! reloads), [`isolation`] (the worker process: call cost, crash to
//! serving, checkpoint cost), and [`machine_relations`] (timing relations
//! between the machine's measurements, printed, never asserted); run
//! alone: [`state_scale_vulkan`] (`-- state-vulkan`: bytes the Vulkan
//! module moves host <-> device on swaps and checkpoints, by state size)
//! and [`remote_save`] (save to serving through `kiln dev --on`). `hot-lib-reloader` is a dev-dependency of the benchmark only:
//! its side comes in through the [`hot_reloader::HotLibReloader`] trait,
//! implemented in the bench target.

pub mod artifacts;
pub mod calls;
pub mod chart;
pub mod compare_builds;
pub mod config;
pub mod handoff;
pub mod hot_reloader;
pub mod isolation;
pub mod kiln_side;
pub mod machine_relations;
pub mod remote_save;
pub mod report;
pub mod save_serving;
pub mod serving;
pub mod soak;
pub mod state_scale;
pub mod state_scale_chart;
pub mod state_scale_vulkan;
pub mod stats;
pub mod table;
pub mod verdict_soak;

pub mod static_module;
pub mod workload_calls;

/// The CPU kernels, the very source the `kernel-cpu` module compiles,
/// linked statically into the benchmark: the baseline of the call overhead.
/// The module's kernel files below reach them as `crate::kernels`.
#[path = "../../kernels/cpu/src/kernels.rs"]
pub mod kernels;
pub use kernels as static_kernels;

// The rest of the CPU module's kernel sources, as `kernels/cpu/src/lib.rs`
// declares them (everything but its export glue): its kernel table, every
// declared kernel (`static_module` calls them by name).
#[path = "../../kernels/cpu/src/declared/mod.rs"]
mod declared;
#[path = "../../kernels/cpu/src/low_precision.rs"]
mod low_precision;
// The module re-exports the registry's types for its kernels.
#[allow(unused_imports)]
#[path = "../../kernels/cpu/src/registry.rs"]
mod registry;

use std::path::PathBuf;
use std::time::Instant;

pub use config::Config;
pub use report::Report;

/// Where reports go by default: `target/kiln-bench` of the workspace.
pub fn default_out_dir(workspace: &std::path::Path) -> PathBuf {
    kiln::workspace::target_dir(workspace).join("kiln-bench")
}

/// Creates the output dir and builds the CPU module every section measures.
fn prepare(config: &Config) -> Result<PathBuf, String> {
    std::fs::create_dir_all(&config.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.out_dir.display()))?;
    eprintln!(
        "kiln-bench: building kernel-cpu ({} profile)",
        config.module_profile
    );
    artifacts::build_module(
        &config.workspace,
        kiln_side::MODULE,
        &config.module_profile,
        &config.module_unify_with,
    )
}

/// Section 2 alone (`cargo bench -p kiln-bench -- save`): builds the CPU
/// module, measures save to serving, writes `save-to-serving.json` into
/// `config.out_dir` and returns the printed section with the load average.
/// Section 3 (call overhead) alone: the table and the replay's targets.
pub fn run_calls(
    config: &Config,
    hot: &dyn hot_reloader::HotLibReloader,
) -> Result<String, String> {
    let load_start = report::load_average();
    let artifact = prepare(config)?;
    eprintln!("kiln-bench: call overhead (section 3 alone)");
    let calls = calls::measure(config, &artifact, hot)?;
    let mut out = calls.render();
    for t in calls.replay_targets() {
        out.push_str(&format!(
            "  [{}] {}: {}\n",
            if t.met { "met" } else { "MISSED" },
            t.name,
            t.detail
        ));
    }
    out.push_str(&format!(
        "(load average {load_start:.1} at the start, {:.1} at the end)\n",
        report::load_average()
    ));
    Ok(out)
}

pub fn run_save(config: &Config) -> Result<String, String> {
    let start = Instant::now();
    let load_start = report::load_average();
    let artifact = prepare(config)?;
    eprintln!("kiln-bench: save to serving (section 2 alone)");
    let save = save_serving::measure(config, &artifact)?;
    let load_end = report::load_average();
    let seconds = start.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "quick": config.quick,
        "threads": kiln_side::THREADS,
        "seconds": seconds,
        "load_start": load_start,
        "load_end": load_end,
        "save_to_serving": save.to_json(),
    });
    let path = config.out_dir.join("save-to-serving.json");
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(format!(
        "kiln save to serving (section 2 of `just bench`, run alone){}: medians ± MAD; {} threads per pool\n{}\n(run took {seconds:.0} s; load average {load_start:.1} at the start, {load_end:.1} at the end)\n",
        if config.quick {
            " (QUICK smoke run: figures not meaningful)"
        } else {
            ""
        },
        kiln_side::THREADS,
        save.render(),
    ))
}

/// Builds the CPU module, measures every section (progress on stderr),
/// writes `report.json` and `report.svg` into `config.out_dir`.
pub fn run(config: &Config, hot: &dyn hot_reloader::HotLibReloader) -> Result<Report, String> {
    let start = Instant::now();
    let load_start = report::load_average();
    let artifact = prepare(config)?;
    let section = |name: &str| {
        eprintln!(
            "kiln-bench: {name} ({:.0} s)",
            start.elapsed().as_secs_f64()
        );
    };
    // The soak first: it reads the process's memory, cleanest before the
    // large buffers of the other sections.
    section("reload soak");
    let soak = soak::measure(config, &artifact, hot)?;
    section("artifact to serving");
    let serving = serving::measure(config, &artifact, hot)?;
    section("save to serving");
    let save = save_serving::measure(config, &artifact)?;
    section("call overhead");
    let calls = calls::measure(config, &artifact, hot)?;
    section("handoff throughput");
    let handoff = handoff::measure(config, &artifact)?;
    section("isolation");
    let isolation = isolation::measure(config, &artifact)?;
    let report = Report {
        isolation,
        quick: config.quick,
        serving,
        save,
        calls,
        handoff,
        soak,
        seconds: start.elapsed().as_secs_f64(),
        load_start,
        load_end: report::load_average(),
    };
    let json_path = config.out_dir.join("report.json");
    let json = serde_json::to_string_pretty(&report.to_json())
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    std::fs::write(&json_path, json)
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    let svg_path = config.out_dir.join("report.svg");
    std::fs::write(&svg_path, chart::svg(&report))
        .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
    Ok(report)
}

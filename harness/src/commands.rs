//! The one-shot commands: `kiln backends`, `kiln report`, `kiln
//! check-swap` (`kiln record`, `kiln replay`, `kiln kernels`: see
//! `kernel_commands.rs`). Each returns a message for the user on failure.

use std::path::Path;

use crate::build::module_build::ModuleBuilder;
use crate::build::module_graph::{KernelModule, ModuleGraph};
use crate::history::History;
use crate::isolation::isolated::{IsolatedEngine, IsolationOptions};
use crate::isolation::worker_client::WorkerError;
use crate::isolation::worker_process::SpawnOptions;
use crate::logging::LogFormat;
use crate::supervisor::build_at_start;
use crate::swap::engine_handle::EngineOptions;
use crate::swap::load::LoadedModule;
use crate::swap::stage::{Staged, StagingDir};
use crate::worker::protocol::{StateSource, WorkerConfig};
use crate::workload;
use crate::workspace;

fn workspace_root() -> std::path::PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|d| workspace::find_workspace_root(&d))
        .unwrap_or_else(workspace::built_workspace_root)
}

fn graph(root: &Path) -> Result<ModuleGraph, String> {
    ModuleGraph::discover(root).map_err(|e| e.to_string())
}

fn module_for(graph: &ModuleGraph, backend: &str) -> Result<KernelModule, String> {
    graph.module_for_backend(backend)
}

fn builder(root: &Path) -> ModuleBuilder {
    ModuleBuilder::new(root, workspace::module_target_dir(root))
        .with_profile(workspace::HOST_PROFILE)
}

/// Builds (or takes) a module file and stages it.
fn stage_module(
    root: &Path,
    stage: &StagingDir,
    backend: &str,
    module_file: Option<&Path>,
) -> Result<Staged, String> {
    crate::supervisor::declarations::stage_backend(root, stage, backend, module_file)
}

/// Builds (or takes) a module file, stages and loads it (in this process).
fn load_module(
    root: &Path,
    stage: &StagingDir,
    backend: &str,
    module_file: Option<&Path>,
) -> Result<LoadedModule, String> {
    crate::kernel_commands::load_backend(root, stage, backend, module_file)
}

/// Workers for the one-shot commands: module code runs there, so a module
/// that crashes or hangs is reported, not fatal.
fn isolation(log_format: LogFormat, worker: WorkerConfig) -> IsolationOptions {
    IsolationOptions {
        spawn: SpawnOptions {
            program: None,
            log_format,
            forward_output: true,
            memory_limit: crate::isolation::memory_limit::default_limit(),
            exits: None,
        },
        worker,
        call_timeout: None,
    }
}

/// `kiln backends [NAMES]`. Each module is probed in a worker process: a
/// driver that crashes while probing makes its backend unavailable, not
/// kiln fail.
pub fn backends(names: &[String], log_format: LogFormat) -> Result<(), String> {
    let root = workspace_root();
    let graph = graph(&root)?;
    let stage = StagingDir::create(&workspace::staging_root(&root))
        .map_err(|e| e.to_string())?
        .for_workspace(&root);
    let modules: Vec<KernelModule> = if names.is_empty() {
        graph.modules().to_vec()
    } else {
        names
            .iter()
            .map(|n| module_for(&graph, n))
            .collect::<Result<_, _>>()?
    };
    let builder = builder(&root);
    let mut prober = IsolatedEngine::new(isolation(log_format, WorkerConfig::default()), None)
        .map_err(|e| format!("cannot set up a worker: {e}"))?;
    let mut unavailable = Vec::new();
    for module in &modules {
        let result = build_at_start(&builder, module)
            .map_err(|e| e.to_string())
            .and_then(|(artifact, _)| {
                stage
                    .stage(&module.package, &artifact)
                    .map_err(|e| e.to_string())
            })
            .and_then(|staged| {
                prober.probe(&staged).map_err(|e| match e {
                    WorkerError::Down(down) => format!("its probe crashed: {}", down.describe()),
                    other => other.to_string(),
                })
            });
        match result {
            Ok(devices) if !devices.is_empty() => {
                println!("{:<8} available", module.backend);
                for d in devices {
                    let mut extra = vec![d.kind.clone()];
                    if !d.driver.is_empty() {
                        extra.push(d.driver.clone());
                    }
                    if !d.api.is_empty() {
                        extra.push(d.api.clone());
                    }
                    println!("         [{}] {} ({})", d.index, d.name, extra.join(", "));
                }
            }
            Ok(_) => {
                println!("{:<8} unavailable: no device found", module.backend);
                unavailable.push(module.backend.clone());
            }
            Err(why) => {
                println!("{:<8} unavailable: {why}", module.backend);
                unavailable.push(module.backend.clone());
            }
        }
    }
    if !names.is_empty() && !unavailable.is_empty() {
        return Err(format!("cannot run here: {}", unavailable.join(", ")));
    }
    Ok(())
}

/// Options of `kiln replay`.
#[derive(Clone, Debug, Default)]
pub struct ReplayCommand {
    pub backend: String,
    /// Load this module file instead of building the backend's module.
    pub module_file: Option<std::path::PathBuf>,
    pub device: Option<String>,
    pub timing: bool,
    pub call_timeout: Option<std::time::Duration>,
    pub log_format: LogFormat,
    /// `--reference BACKEND`: expected outputs from this backend's module,
    /// run on the same inputs.
    pub reference: Option<String>,
    /// `--cold`: flush the caches before every timed run.
    pub cold: bool,
}

/// `kiln replay`: the module runs in a worker process; a call that crashes
/// it or passes its deadline is reported as a failed call, with the reason.
pub fn replay(file: &Path, options: &ReplayCommand) -> Result<(), String> {
    // Checked whole (every checksum), its data streamed, not kept: the
    // worker loads it (its large residents once, into a part of their
    // own). Read into memory here too, it was a second copy of the state
    // for the whole replay (peak 2.0 x the state at 1 and 4 GiB).
    let workload = workload::format::check(file).map_err(|e| e.to_string())?;
    println!("{}", workload.describe());
    let needs_reference = workload.call_steps().any(|c| c.expected.is_empty());
    drop(workload);
    let root = workspace_root();
    let stage = StagingDir::create(&workspace::staging_root(&root))
        .map_err(|e| e.to_string())?
        .for_workspace(&root);
    // Expected outputs: another backend, else the workload's, else the
    // reference module. Each runs in the worker, like the module replayed.
    let cross_reference = match &options.reference {
        Some(backend) => Some(stage_module(&root, &stage, backend, None)?),
        None => None,
    };
    let reference = match (&cross_reference, needs_reference) {
        (None, true) => Some(stage_module(
            &root,
            &stage,
            crate::workspace::REFERENCE_BACKEND,
            None,
        )?),
        _ => None,
    };
    let backend = match options.module_file {
        Some(_) => options.backend.clone(),
        None => crate::supervisor::backend_choice::resolve(&root, &options.backend)?,
    };
    let staged = stage_module(&root, &stage, &backend, options.module_file.as_deref())?;
    let tolerances_path = root.join("kiln.toml");
    let mut engine_options = std::collections::BTreeMap::new();
    if let Some(device) = &options.device {
        engine_options.insert("device".to_string(), device.clone());
    }
    let mut isolation = isolation(
        options.log_format,
        WorkerConfig {
            threads: 0,
            engine_options,
            workload: Some(file.to_path_buf()),
            tolerances: tolerances_path.exists().then_some(tolerances_path),
            timing: options.timing,
            keep_outputs: false,
            workspace: Some(root.clone()),
            reference: reference.as_ref().map(Into::into),
            cross_reference: cross_reference.as_ref().map(Into::into),
            cold: options.cold,
            tune: false,
        },
    );
    isolation.call_timeout = options.call_timeout;
    let mut engine =
        IsolatedEngine::new(isolation, None).map_err(|e| format!("cannot set up a worker: {e}"))?;
    let went_down = |e: WorkerError| match e {
        WorkerError::Down(down) => format!("{} {}", staged.label, down.describe()),
        other => other.to_string(),
    };
    engine
        .start(&staged, StateSource::Empty)
        .map_err(went_down)?;
    engine.load_workload_state().map_err(went_down)?;
    match engine.replay(None) {
        Ok(report) => {
            print!("{}", report.table.render());
            if report.passed() {
                Ok(())
            } else {
                Err(format!(
                    "{} failed replay of {}",
                    report.label(),
                    file.display()
                ))
            }
        }
        Err(WorkerError::Down(down)) => {
            let call = down
                .running
                .as_ref()
                .and_then(|r| r.call.clone())
                .map_or("a call".to_string(), |(i, k)| format!("call {i} ({k})"));
            println!(
                "replay of {}: {call} FAILED: {}",
                staged.label,
                down.describe()
            );
            Err(format!(
                "{} failed replay of {}: {call} {}",
                staged.label,
                file.display(),
                match down.signal() {
                    Some(signal) => format!("crashed ({signal})"),
                    None => "hung".to_string(),
                }
            ))
        }
        Err(e) => Err(format!(
            "{} failed replay of {}: {e}",
            staged.label,
            file.display()
        )),
    }
}

/// The width of `kiln report`'s roofline plot.
const ROOFLINE_W: f64 = 760.0;

/// `kiln report`.
/// With `png`, each chart also as PNG next to its SVG.
/// With `ui`, then serves the session's page from its history (`kiln
/// report --ui`) until interrupted.
pub fn report(
    module: &str,
    svg: Option<&Path>,
    png: bool,
    file: Option<&Path>,
    ui: bool,
) -> Result<(), String> {
    if png && !cfg!(feature = "png") {
        return Err(
            "--png: this kiln was built without PNG output; build it with the `png` \
             feature: `cargo run --release -p kiln --features png -- report --png`"
                .to_string(),
        );
    }
    let root = workspace_root();
    let last = crate::history::default_path(&workspace::target_dir(&root), module);
    let path = file.unwrap_or(&last);
    let history = History::load(path).map_err(|e| match file {
        Some(_) => e,
        None => {
            format!("{e}\n(no kiln dev session of {module} recorded yet? run `kiln dev` first)")
        }
    })?;
    print!("{}", history.table());
    let svg_path = svg.map_or_else(|| path.with_extension("svg"), Path::to_path_buf);
    write_chart(&svg_path, &history.svg(), png, "chart")?;
    if let Some(roofline) = history.roofline_chart() {
        let roofline_path = svg_path.with_extension("roofline.svg");
        write_chart(&roofline_path, &roofline.svg(ROOFLINE_W), png, "roofline")?;
    }
    if ui {
        let url = crate::ui::serve_events(&history.events())?;
        println!("ui: {url}  (the session's page from its history; Ctrl-C ends it)");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        loop {
            std::thread::park();
        }
    }
    if file.is_none() {
        let earlier = crate::history::earlier(&last);
        if let Some(newest) = earlier.last() {
            println!(
                "earlier sessions: {} kept (the newest: `kiln report --file {}`)",
                earlier.len(),
                newest.display()
            );
        }
    }
    Ok(())
}

/// Writes the chart `svg` to `path`, and with `png` the PNG drawn from
/// that same text next to it (`path` with `.png`); prints both as `what`.
fn write_chart(path: &Path, svg: &str, png: bool, what: &str) -> Result<(), String> {
    let png_path = path.with_extension("png");
    if png && png_path == path {
        return Err(format!(
            "{}: the SVG's name ends in .png; its PNG would overwrite it",
            path.display()
        ));
    }
    std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{what}: {}", path.display());
    #[cfg(feature = "png")]
    if png {
        let bytes =
            crate::chart::png::render(svg).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&png_path, bytes).map_err(|e| format!("{}: {e}", png_path.display()))?;
        println!("{what} png: {}", png_path.display());
    }
    Ok(())
}

/// `kiln check-swap`: puts `mib` MiB of arbitrary bit patterns into a
/// backend's engine, swaps to a fresh copy of the same module, and checks
/// that the state came through bit for bit; prints the swap's timings.
pub fn check_swap(
    backend: &str,
    module_file: Option<&Path>,
    device: Option<String>,
    mib: usize,
) -> Result<(), String> {
    use crate::swap::served::ServedModule;
    use kiln_stats::bytes;
    use shared_state::{Call, Tensor};
    let root = workspace_root();
    let stage = StagingDir::create(&workspace::staging_root(&root))
        .map_err(|e| e.to_string())?
        .for_workspace(&root);
    let first = load_module(&root, &stage, backend, module_file)?;
    let artifact = first.staged.source.clone();
    let name = first.staged.module.clone();
    let mut options = EngineOptions::default();
    if let Some(device) = device {
        options.options.insert("device".into(), device);
    }
    let (served, _) = ServedModule::start(first, options, None).map_err(|e| e.to_string())?;
    let elements = (mib << 20) / 4;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bits: Vec<f32> = (0..elements)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            f32::from_bits((state >> 16) as u32)
        })
        .collect();
    let handle = served.handle();
    handle
        .put_resident("check/state", Tensor::from_f32(&[elements], bits))
        .map_err(|e| e.to_string())?;
    handle
        .put_resident("check/grid", Tensor::from_f32(&[64, 64], vec![1.0; 4096]))
        .map_err(|e| e.to_string())?;
    handle
        .run(
            Call::new("stencil2d")
                .resident("check/grid")
                .store_as("check/grid"),
        )
        .map_err(|e| e.to_string())?;
    let before = handle.export_state().map_err(|e| e.to_string())?;
    drop(handle);
    let staged = stage.stage(&name, &artifact).map_err(|e| e.to_string())?;
    let next = LoadedModule::open(staged).map_err(|e| e.to_string())?;
    let report = served.swap(next).map_err(|e| e.to_string())?;
    let after = served.handle().export_state().map_err(|e| e.to_string())?;
    let gbps = report.bytes as f64 / (report.paused_ms / 1e3) / 1e9;
    println!(
        "swap {} -> {}: {} handed over; calls paused {:.1} ms (export {:.1} ms, create+import {:.1} ms, {gbps:.2} GB/s); old version retired in {:.1} ms",
        report.from,
        report.to,
        bytes::human(report.bytes as u64),
        report.paused_ms,
        report.export_ms,
        report.import_ms,
        report.retire_ms
    );
    if after.bit_eq(&before) {
        println!(
            "state after the swap: identical, bit for bit ({} sections)",
            after.len()
        );
        Ok(())
    } else {
        Err("state changed across the swap".to_string())
    }
}

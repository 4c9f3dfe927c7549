//! The commands about declared kernels and their workloads:
//! `kiln kernels`, `kiln record --kernel NAME --dims ...`, `kiln replay
//! [--reference BACKEND]`. (`kiln new kernel` is in [`crate::scaffold`].)
//! Each returns a message for the user on failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::build::module_graph::ModuleGraph;
use crate::supervisor::declarations::stage_backend;
use crate::swap::engine_handle::{EngineHandle, EngineOptions};
use crate::swap::load::LoadedModule;
use crate::swap::stage::StagingDir;
use crate::swap::version_files::declarations;
use crate::workload::generate::{self, GenSpec};
use crate::workload::replay::fill_expected;

use crate::workload::{self, Step, Workload};
use crate::workspace::{self, REFERENCE_BACKEND};

/// The workspace the command runs in: the one containing the current
/// directory, else the one the binary was built from.
pub fn workspace_root() -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|d| workspace::find_workspace_root(&d))
        .unwrap_or_else(workspace::built_workspace_root)
}

/// Builds (or takes) a backend's module file, stages it with the
/// workspace's declarations and sources, and loads it.
pub fn load_backend(
    root: &Path,
    stage: &StagingDir,
    backend: &str,
    module_file: Option<&Path>,
) -> Result<LoadedModule, String> {
    let staged = stage_backend(root, stage, backend, module_file)?;
    LoadedModule::open(staged).map_err(|e| e.to_string())
}

/// Builds, loads and starts a backend's engine.
pub fn start_backend(
    root: &Path,
    stage: &StagingDir,
    backend: &str,
    device: Option<&str>,
) -> Result<EngineHandle, String> {
    let loaded = load_backend(root, stage, backend, None)?;
    let mut options = EngineOptions::default();
    if let Some(device) = device {
        options.options.insert("device".into(), device.to_string());
    }
    EngineHandle::start(Arc::new(loaded), &options, None)
        .map(|(h, _)| h)
        .map_err(|e| e.to_string())
}

fn staging(root: &Path) -> Result<StagingDir, String> {
    StagingDir::create(&workspace::staging_root(root))
        .map(|s| s.for_workspace(root))
        .map_err(|e| e.to_string())
}

/// `kiln kernels`: every declared kernel with its signature and the
/// backends that implement it.
pub fn kernels() -> Result<(), String> {
    let root = workspace_root();
    let declared = declarations(&root)?;
    let graph = ModuleGraph::discover(&root).map_err(|e| e.to_string())?;
    let stage = staging(&root)?;
    let mut implemented: Vec<(String, Result<Vec<String>, String>)> = Vec::new();
    for module in graph.modules() {
        let found = start_backend(&root, &stage, &module.backend, None)
            .and_then(|h| h.info().map(|i| i.kernels).map_err(|e| e.to_string()));
        implemented.push((module.backend.clone(), found));
    }
    println!(
        "{} declared kernel(s) (kernels/declarations/):",
        declared.len()
    );
    for decl in declared.iter() {
        let on: Vec<&str> = implemented
            .iter()
            .filter(|(_, k)| k.as_ref().is_ok_and(|k| k.contains(&decl.name)))
            .map(|(b, _)| b.as_str())
            .collect();
        println!("  {}", decl.signature());
        if !decl.summary.is_empty() {
            println!("      {}", decl.summary);
        }
        println!(
            "      on: {}",
            if on.is_empty() {
                "no backend yet".to_string()
            } else {
                on.join(", ")
            }
        );
    }
    for (backend, found) in &implemented {
        if let Err(why) = found {
            println!("{backend}: cannot say what it implements: {why}");
        }
    }
    Ok(())
}

/// What `kiln record` was asked.
#[derive(Clone, Debug)]
pub struct RecordArgs {
    pub kernel: String,
    pub dims: String,
    pub seed: u64,
    pub trials: usize,
    pub output: PathBuf,
}

/// `kiln record --kernel NAME --dims a=1,b=2 [--seed S] [--trials N] -o
/// FILE`: a call of a declared kernel with generated inputs and the
/// reference module's outputs as expected values. When FILE is already a
/// workload, the kernel's calls in it are replaced (where the first one
/// was) and the rest kept; otherwise a new file is written. `--kernel
/// default` writes the bundled workload.
pub fn record(args: &RecordArgs) -> Result<(), String> {
    let root = workspace_root();
    let declared = declarations(&root)?;
    let stage = staging(&root)?;
    let mut workload = if args.kernel == "default" {
        generate::bundled_workload_at(&root, &declared).map_err(|e| e.to_string())?
    } else {
        let decl = declared.lookup(&args.kernel).map_err(|e| e.message)?;
        let dims = GenSpec::parse_dims(&args.dims).map_err(|e| e.to_string())?;
        let spec = GenSpec::new(&decl.name, dims, args.seed, args.trials);
        let mut spec_output = String::new();
        if let Some(p) = args.output.to_str() {
            spec_output = format!(" -o {p}");
        }
        let mut w = generate::generate(decl, &spec).map_err(|e| e.to_string())?;
        for step in &mut w.steps {
            if let Step::Call(c) = step {
                c.recorded_by = Some(format!("{}{spec_output}", spec.command()));
            }
        }
        w
    };
    let reference = start_backend(&root, &stage, REFERENCE_BACKEND, None)?;
    fill_expected(&mut workload, &reference)?;
    let workload = match (args.kernel.as_str(), args.output.exists()) {
        ("default", _) | (_, false) => workload,
        (kernel, true) => {
            let existing = workload::read(&args.output).map_err(|e| e.to_string())?;
            let merged = merge(existing, workload, kernel);
            println!(
                "replaced the calls of {kernel} in {} (other calls kept)",
                args.output.display()
            );
            merged
        }
    };
    workload::write(&workload, &args.output).map_err(|e| e.to_string())?;
    println!(
        "wrote {}: {} (expected outputs from {})",
        args.output.display(),
        workload.describe(),
        reference.label()
    );
    Ok(())
}

/// `existing` with the calls of `kernel` replaced by `new`'s steps, at the
/// place of the first one (at the end if it had none).
fn merge(existing: Workload, new: Workload, kernel: &str) -> Workload {
    let mut out = Workload::new(existing.name.clone());
    let mut inserted = false;
    for step in existing.steps {
        match &step {
            Step::Call(c) if c.call.kernel == kernel => {
                if !inserted {
                    out.steps.extend(new.steps.iter().cloned());
                    inserted = true;
                }
            }
            _ => out.steps.push(step),
        }
    }
    if !inserted {
        out.steps.extend(new.steps);
    }
    out
}

/// What `kiln replay` was asked.
#[derive(Clone, Debug)]
pub struct ReplayArgs {
    pub file: PathBuf,
    pub backend: String,
    pub module: Option<PathBuf>,
    pub device: Option<String>,
    pub timing: bool,
    /// `--reference BACKEND`.
    pub reference: Option<String>,
}

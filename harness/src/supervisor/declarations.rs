//! What `kiln dev` needs of the kernel declarations and the reference
//! module at start: the bundled workload (generated from the declarations
//! and `kernels/workload.toml`) and the reference module's engine, which
//! gives the expected outputs of calls whose workload stores none. Staging
//! a backend's module (built with [`build_at_start`]) is here too; the commands
//! (`kiln record`, `kiln replay`, `kiln machine --module`) use it.

use std::path::Path;

use super::sync_build::build_at_start;
use crate::build::module_build::ModuleBuilder;
use crate::build::module_graph::{KernelModule, ModuleGraph};
use crate::events::{self, emit};
use crate::swap::stage::{Staged, StagingDir};
use crate::workspace::{self, REFERENCE_BACKEND};

/// The bundled workload of the workspace at `root` (in `workload`, where
/// the worker takes it from too).
pub use crate::workload::generate::workspace_bundled_workload as bundled_workload;

fn module_for(graph: &ModuleGraph, backend: &str) -> Result<KernelModule, String> {
    graph.module_for_backend(backend)
}

/// Builds (or takes) a backend's module file and stages it with the
/// workspace's declarations and its sources.
pub fn stage_backend(
    root: &Path,
    stage: &StagingDir,
    backend: &str,
    module_file: Option<&Path>,
) -> Result<Staged, String> {
    let (name, artifact) = match module_file {
        Some(path) => {
            let stem = path
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .trim_start_matches("lib")
                        .replace('_', "-")
                })
                .unwrap_or_else(|| "module".to_string());
            (stem, path.to_path_buf())
        }
        None => {
            let graph = ModuleGraph::discover(root).map_err(|e| e.to_string())?;
            let module = module_for(&graph, backend)?;
            let builder = ModuleBuilder::new(root, workspace::module_target_dir(root))
                .with_profile(workspace::HOST_PROFILE);
            let (artifact, _) = build_at_start(&builder, &module).map_err(|e| e.to_string())?;
            (module.package, artifact)
        }
    };
    stage.stage(&name, &artifact).map_err(|e| e.to_string())
}

/// Builds and stages the reference module (`kernels/reference`); the
/// worker runs it. `None` (with a warning) when it cannot: calls whose
/// workload stores no expected outputs are then unchecked, and say so.
pub fn stage_reference(root: &Path, stage: &StagingDir) -> Option<Staged> {
    match stage_backend(root, stage, REFERENCE_BACKEND, None) {
        Ok(staged) => {
            emit!(
                tracing::Level::INFO,
                events::Reference {},
                "expected outputs not stored in the workload come from {}",
                staged.label
            );
            Some(staged)
        }
        Err(e) => {
            emit!(
                tracing::Level::WARN,
                events::Reference {},
                "no reference module ({e}): calls without stored expected outputs are unchecked"
            );
            None
        }
    }
}

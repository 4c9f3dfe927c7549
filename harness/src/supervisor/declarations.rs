//! What `kiln dev` needs of the kernel declarations and the reference
//! module at start: the bundled workload (generated from the declarations
//! and `kernels/workload.toml`) and the reference module's engine, which
//! gives the expected outputs of calls whose workload stores none.

use std::path::Path;

use crate::kernel_commands::{REFERENCE_BACKEND, declarations, stage_backend};
use crate::swap::stage::{Staged, StagingDir};
use crate::workload::Workload;
use crate::workload::generate::bundled_workload_at;

/// The bundled workload of the workspace at `root`.
pub fn bundled_workload(root: &Path) -> Result<Workload, String> {
    let kernels = declarations(root)?;
    bundled_workload_at(root, &kernels).map_err(|e| e.to_string())
}

/// Builds and stages the reference module (`kernels/reference`); the
/// worker runs it. `None` (with a warning) when it cannot: calls whose
/// workload stores no expected outputs are then unchecked, and say so.
pub fn stage_reference(root: &Path, stage: &StagingDir) -> Option<Staged> {
    match stage_backend(root, stage, REFERENCE_BACKEND, None) {
        Ok(staged) => {
            tracing::info!(
                event = "reference",
                "expected outputs not stored in the workload come from {}",
                staged.label
            );
            Some(staged)
        }
        Err(e) => {
            tracing::warn!(
                event = "reference",
                "no reference module ({e}): calls without stored expected outputs are unchecked"
            );
            None
        }
    }
}

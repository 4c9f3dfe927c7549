//! The backends a session may switch to, and the histories of those it
//! served earlier (`switch_backend.rs` does the switch).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::backend_choice;
use crate::build::module_graph::KernelModule;
use crate::history::History;

/// The session's other backends: the modules it may switch to, and the
/// histories of those it served earlier.
pub(super) struct Backends {
    pub(super) root: PathBuf,
    modules: Vec<KernelModule>,
    /// History of each backend served earlier in this session, by package.
    pub(super) histories: BTreeMap<String, History>,
}

impl Backends {
    pub(super) fn new(root: PathBuf, modules: Vec<KernelModule>) -> Backends {
        Backends {
            root,
            modules,
            histories: BTreeMap::new(),
        }
    }

    pub(super) fn find(&self, backend: &str) -> Option<&KernelModule> {
        self.modules
            .iter()
            .find(|m| m.backend == backend || m.package == backend)
    }

    /// The first backend after `served` (in module order, wrapping) that
    /// the probe does not rule out; never the reference module.
    pub(super) fn next_after(&self, served: &str, probe: &backend_choice::Probe) -> Option<String> {
        let at = self.modules.iter().position(|m| m.package == served)?;
        let n = self.modules.len();
        (1..n)
            .map(|i| &self.modules[(at + i) % n])
            .find(|m| {
                m.backend != crate::workspace::REFERENCE_BACKEND
                    && backend_choice::can_run(probe, &m.backend).is_ok()
            })
            .map(|m| m.backend.clone())
    }

    pub(super) fn names(&self) -> String {
        self.modules
            .iter()
            .map(|m| m.backend.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

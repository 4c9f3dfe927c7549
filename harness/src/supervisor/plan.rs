//! What the session does with a change set, and with a replay's result:
//! plain functions of their inputs that know no worker, tested alone.

use std::path::{Path, PathBuf};

use super::options::OnFail;
use super::watch::ChangeSet;
use crate::build::module_graph::KernelModule;
use crate::swap::version_files::SOURCE_EXTENSIONS;

/// Whether `path` is a file a version carries besides its library (a
/// source its engine compiles): a change to it needs no cargo build.
pub fn is_version_source(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SOURCE_EXTENSIONS.contains(&e))
}

/// Whether `path` is one of `module`'s sources: under its own or a path
/// dependency's directory, or the root manifest or lock file
/// (`kernels/NAME` is two below the root).
pub(super) fn is_in(module: &KernelModule, path: &Path) -> bool {
    let root = module.dir.parent().and_then(Path::parent);
    let root_manifest = path.parent() == root
        && path
            .file_name()
            .is_some_and(|n| n == "Cargo.toml" || n == "Cargo.lock");
    root_manifest || module.source_dirs().any(|d| path.starts_with(d))
}

/// What a change set asks of one served module (a lane).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LaneChange {
    /// A Rust source of the module or of its path dependencies, or a
    /// manifest, the lock file, a data file in its folder, changed: a
    /// build (with the new declarations and sources).
    pub(super) build: bool,
    /// Only declarations or files the module's engine compiles at creation
    /// changed: the serving library is staged again with them, no build.
    pub(super) restage: bool,
    /// The workload the lane replays changed (the `--workload` file, or the
    /// declarations the bundled one follows): the worker reads it again.
    pub(super) reload_workload: bool,
    /// The changed paths of this module.
    pub(super) paths: Vec<PathBuf>,
}

impl LaneChange {
    pub(super) fn of(change: &ChangeSet, module: &KernelModule) -> LaneChange {
        let touched = change.modules.contains(&module.package);
        let paths: Vec<PathBuf> = change
            .paths
            .iter()
            .filter(|p| touched && is_in(module, p))
            .cloned()
            .collect();
        let build = paths.iter().any(|p| !is_version_source(p));
        let files = change.declarations_changed || paths.iter().any(|p| is_version_source(p));
        LaneChange {
            build,
            restage: files && !build,
            reload_workload: change.watched_changed || change.declarations_changed,
            paths,
        }
    }

    /// Whether the lane's version changes.
    pub(super) fn new_version(&self) -> bool {
        self.build || self.restage
    }
}

/// What a change set asks of the session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ChangePlan {
    /// The contract changed: the host must restart (nothing else is done).
    pub(super) contract: bool,
    /// One per lane, in the lanes' order.
    pub(super) lanes: Vec<LaneChange>,
    /// The reference module (not served itself) changed: rebuild it, and
    /// check the served versions against it.
    pub(super) reference: bool,
    /// Only the watched workload file changed: replay it on the versions
    /// served (no version changes).
    pub(super) recheck: bool,
}

/// Routes `change` to the lanes serving `lanes` and to the `reference`
/// module.
pub(super) fn plan_change(
    change: &ChangeSet,
    lanes: &[&KernelModule],
    reference: Option<&KernelModule>,
) -> ChangePlan {
    if change.contract_changed {
        return ChangePlan {
            contract: true,
            ..ChangePlan::default()
        };
    }
    let lane_changes: Vec<LaneChange> = lanes.iter().map(|m| LaneChange::of(change, m)).collect();
    let reference = reference.is_some_and(|r| {
        change.modules.contains(&r.package) && lanes.iter().all(|m| m.package != r.package)
    });
    let recheck = change.watched_changed
        && !reference
        && !lane_changes.first().is_some_and(LaneChange::new_version);
    ChangePlan {
        contract: false,
        lanes: lane_changes,
        reference,
        recheck,
    }
}

/// What becomes of a version after its replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It passed: it is the last good version, its state the last good point.
    Good,
    /// It failed: back to the last good version, with the state.
    RollBack,
    /// It failed and there is no earlier good version: it keeps serving.
    NoGoodToRollBackTo,
    /// It failed and `--on-fail keep` keeps it.
    KeptFailing,
}

/// The verdict on a version whose replay `passed` (or did not run: `None`).
pub(super) fn verdict(passed: Option<bool>, on_fail: OnFail, has_last_good: bool) -> Verdict {
    match (passed.unwrap_or(true), on_fail, has_last_good) {
        (true, _, _) => Verdict::Good,
        (false, OnFail::Keep, _) => Verdict::KeptFailing,
        (false, OnFail::Rollback, true) => Verdict::RollBack,
        (false, OnFail::Rollback, false) => Verdict::NoGoodToRollBackTo,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use super::*;

    fn module(root: &Path, backend: &str) -> KernelModule {
        KernelModule {
            package: format!("kernel-{backend}"),
            backend: backend.to_string(),
            dir: root.join("kernels").join(backend),
            manifest_path: root.join("kernels").join(backend).join("Cargo.toml"),
            package_id: String::new(),
            path_deps: Vec::new(),
        }
    }

    fn change(root: &Path, paths: &[&str], modules: &[&str]) -> ChangeSet {
        ChangeSet {
            paths: paths.iter().map(|p| root.join(p)).collect(),
            modules: modules
                .iter()
                .map(|m| m.to_string())
                .collect::<BTreeSet<_>>(),
            contract_changed: false,
            declarations_changed: false,
            watched_changed: false,
            first_event_at: Instant::now(),
        }
    }

    #[test]
    fn a_change_goes_to_the_lane_of_its_module_only() {
        let root = Path::new("/ws");
        let (cpu, vulkan, reference) = (
            module(root, "cpu"),
            module(root, "vulkan"),
            module(root, "reference"),
        );
        let lanes = [&cpu, &vulkan];
        // A Rust edit of the cpu module: cpu builds, vulkan does nothing.
        let plan = plan_change(
            &change(root, &["kernels/cpu/src/kernels.rs"], &["kernel-cpu"]),
            &lanes,
            Some(&reference),
        );
        assert!(plan.lanes[0].build && !plan.lanes[0].restage);
        assert_eq!(plan.lanes[1], LaneChange::default());
        assert!(!plan.reference && !plan.recheck);
        // A shader: vulkan is staged again, no build.
        let plan = plan_change(
            &change(
                root,
                &["kernels/vulkan/shaders/saxpy.wgsl"],
                &["kernel-vulkan"],
            ),
            &lanes,
            Some(&reference),
        );
        assert!(plan.lanes[1].restage && !plan.lanes[1].build);
        assert!(!plan.lanes[0].new_version());
        // A shader and a Rust file of vulkan: one build.
        let plan = plan_change(
            &change(
                root,
                &[
                    "kernels/vulkan/shaders/saxpy.wgsl",
                    "kernels/vulkan/src/lib.rs",
                ],
                &["kernel-vulkan"],
            ),
            &lanes,
            None,
        );
        assert!(plan.lanes[1].build && !plan.lanes[1].restage);
        // The reference module: rebuilt, no lane changes.
        let plan = plan_change(
            &change(
                root,
                &["kernels/reference/src/lib.rs"],
                &["kernel-reference"],
            ),
            &lanes,
            Some(&reference),
        );
        assert!(plan.reference);
        assert!(plan.lanes.iter().all(|l| !l.new_version()));
    }

    #[test]
    fn declarations_restage_every_lane_and_reload_the_workload() {
        let root = Path::new("/ws");
        let (cpu, vulkan) = (module(root, "cpu"), module(root, "vulkan"));
        let mut set = change(root, &["kernels/declarations/saxpy.toml"], &[]);
        set.declarations_changed = true;
        let plan = plan_change(&set, &[&cpu, &vulkan], None);
        for lane in &plan.lanes {
            assert!(lane.restage && lane.reload_workload && !lane.build);
        }
        // The watched workload file alone: a recheck, no new version.
        let mut set = change(root, &["w.kiln"], &[]);
        set.watched_changed = true;
        let plan = plan_change(&set, &[&cpu, &vulkan], None);
        assert!(plan.recheck);
        assert!(
            plan.lanes
                .iter()
                .all(|l| l.reload_workload && !l.new_version())
        );
        // A contract change: nothing else.
        let mut set = change(root, &["kernels/cpu/src/lib.rs"], &["kernel-cpu"]);
        set.contract_changed = true;
        let plan = plan_change(&set, &[&cpu], None);
        assert!(plan.contract && plan.lanes.is_empty());
    }

    #[test]
    fn verdicts() {
        use OnFail::{Keep, Rollback};
        assert_eq!(verdict(Some(true), Rollback, false), Verdict::Good);
        assert_eq!(verdict(None, Rollback, false), Verdict::Good);
        assert_eq!(verdict(Some(false), Rollback, true), Verdict::RollBack);
        assert_eq!(
            verdict(Some(false), Rollback, false),
            Verdict::NoGoodToRollBackTo
        );
        assert_eq!(verdict(Some(false), Keep, true), Verdict::KeptFailing);
    }
}

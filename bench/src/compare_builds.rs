//! Two builds of one kernel module, the same workload, every call timed on
//! both, interleaved: which calls a build makes slower.
//!
//! The workspace's release profile has no link-time optimisation (an edit
//! then re-optimises only the edited codegen unit), so the compiler inlines
//! nothing across codegen units. A kernel whose hot loop relies on such
//! inlining (a per-element closure handed to rayon, a small helper without
//! `#[inline]` in another module) runs slower for it. `cargo lto-check`
//! finds such kernels: it builds the module as usual and once more with
//! `codegen-units = 1` for the module's package (its whole crate in one
//! unit: everything rustc's default thin-local LTO could inline, it can),
//! serves both with the same state, replays the workload on both and warns
//! for every call the usual build runs clearly slower. Given two module
//! files instead, it compares those.
//!
//! Why not build the baseline with `lto = "fat"` or `lto = false`: `lto`
//! can only be set for the whole build, and cargo hashes the profile into
//! every crate's metadata, so the contract crate's `TypeId`s differ and the
//! ABI fingerprint (rightly) refuses the module (`contract-types`). A
//! per-package `codegen-units` changes the module crate's metadata only.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::machine::replay_roof::ColdFlush;
use kiln::workload::Workload;
use kiln::workload::replay::{self, Baseline, ReplayOptions, ReplayReport};
use kiln::workload::timing::{TimingConfig, Verdict};
use kiln::{EngineOptions, LoadedModule, ServedModule, StagingDir};

/// Where the baseline build comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum BaselineBuild {
    /// The module's own sources with `codegen-units = 1` for its package,
    /// in a target directory of its own.
    OneCodegenUnit,
    /// A module file built elsewhere.
    Artifact(PathBuf),
}

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    pub workspace: PathBuf,
    /// The module package (`kernel-cpu`).
    pub module: String,
    pub baseline: BaselineBuild,
    /// The candidate: built from the workspace with its profile when `None`.
    pub candidate: Option<PathBuf>,
    /// The bundled workload when `None`.
    pub workload: Option<PathBuf>,
    /// Engine worker threads (0: one per core).
    pub threads: usize,
    pub timing: TimingConfig,
    /// Flush the caches before every timed run.
    pub cold: bool,
}

/// One call the candidate runs clearly slower than the baseline.
#[derive(Clone, Debug)]
pub struct SlowerCall {
    pub index: usize,
    pub kernel: String,
    pub description: String,
    /// Candidate median over baseline median.
    pub ratio: f64,
}

/// The comparison: the replay on the candidate with verdicts against the
/// baseline, and the calls that got clearly slower.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub baseline: String,
    pub candidate: String,
    pub report: ReplayReport,
    pub slower: Vec<SlowerCall>,
}

impl Comparison {
    /// The report table, then one warning per slower call.
    pub fn render(&self, lto_advice: bool) -> String {
        let mut out = format!(
            "baseline:  {}\ncandidate: {}\n{}",
            self.baseline,
            self.candidate,
            self.report.table()
        );
        if self.slower.is_empty() {
            out.push_str(
                "no call is clearly slower in the candidate (\"vs previous\" is the candidate against the baseline)\n",
            );
        }
        for s in &self.slower {
            out.push_str(&format!(
                "warning: call #{} ({} {}) runs {:.2}x as long in the candidate\n",
                s.index, s.kernel, s.description, s.ratio
            ));
            if lto_advice {
                out.push_str(
                    "         its hot loop probably needs inlining across codegen units, which the \
                     workspace's profile (lto = \"off\") does not do: write the inner loop as one plain \
                     loop in one function or closure body over a whole chunk (see \
                     kernels/cpu/src/kernels.rs), and mark small helpers it calls from other modules \
                     #[inline]\n",
                );
            }
        }
        out
    }
}

/// The slower calls of a replay report (verdict `Slower`).
pub fn slower_calls(report: &ReplayReport) -> Vec<SlowerCall> {
    report
        .calls
        .iter()
        .filter(|c| c.verdict == Some(Verdict::Slower))
        .filter_map(|c| {
            let ratio = c.stats.as_ref()?.median / c.previous_median?;
            Some(SlowerCall {
                index: c.index,
                kernel: c.kernel.clone(),
                description: c.description.clone(),
                ratio,
            })
        })
        .collect()
}

/// Builds `module` with the release profile and `codegen-units = 1` for
/// its package into `target_dir`; returns its cdylib.
pub fn build_one_codegen_unit(
    workspace: &Path,
    module: &str,
    target_dir: &Path,
) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(&cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "--release", "-p", module, "--config"])
        .arg(format!("profile.release.package.{module}.codegen-units=1"))
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .map_err(|e| format!("cannot run {cargo} to build {module}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {module} --release with codegen-units = 1 failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let artifact = crate::artifacts::artifact_path(target_dir, "release", module);
    if !artifact.is_file() {
        return Err(format!(
            "cargo built {module} but there is no {}",
            artifact.display()
        ));
    }
    Ok(artifact)
}

/// Stages a fresh copy of `artifact` and serves it with the workload's state.
fn serve(
    stage: &StagingDir,
    module: &str,
    artifact: &Path,
    threads: usize,
    workload: &Workload,
) -> Result<ServedModule, String> {
    let staged = stage
        .stage(module, artifact)
        .map_err(|e| format!("{}: {e}", artifact.display()))?;
    let loaded = LoadedModule::open(staged).map_err(|e| format!("{}: {e}", artifact.display()))?;
    let options = EngineOptions {
        threads,
        ..Default::default()
    };
    let (served, _) = ServedModule::start(loaded, options, None)
        .map_err(|e| format!("{}: {e}", artifact.display()))?;
    replay::load_state(&served.handle(), workload)
        .map_err(|e| format!("{}: loading the workload's state: {e}", artifact.display()))?;
    Ok(served)
}

/// Compares two artifacts directly (no build), warm caches.
pub fn compare_artifacts(
    workspace: &Path,
    module: &str,
    baseline: &Path,
    candidate: &Path,
    workload: &Workload,
    threads: usize,
    timing: &TimingConfig,
) -> Result<Comparison, String> {
    compare(&ArtifactPair {
        workspace,
        module,
        baseline,
        candidate,
        workload,
        threads,
        timing,
        cold: None,
    })
}

/// Two module files to compare on one workload.
pub struct ArtifactPair<'a> {
    pub workspace: &'a Path,
    pub module: &'a str,
    pub baseline: &'a Path,
    pub candidate: &'a Path,
    pub workload: &'a Workload,
    /// Engine worker threads (0: one per core).
    pub threads: usize,
    pub timing: &'a TimingConfig,
    /// `--cold`: the caches are flushed before every timed run.
    pub cold: Option<ColdFlush>,
}

/// Serves both files with the workload's state and times every call on
/// both, interleaved.
pub fn compare(pair: &ArtifactPair) -> Result<Comparison, String> {
    let root = kiln::workspace::staging_root(pair.workspace).join("compare-builds");
    let stage = StagingDir::create(&root)
        .map_err(|e| format!("cannot create staging dir under {}: {e}", root.display()))?;
    let old = serve(
        &stage,
        pair.module,
        pair.baseline,
        pair.threads,
        pair.workload,
    )?;
    let new = serve(
        &stage,
        pair.module,
        pair.candidate,
        pair.threads,
        pair.workload,
    )?;
    let options = ReplayOptions {
        timing: Some(pair.timing.clone()),
        cold: pair.cold.clone(),
        ..Default::default()
    };
    let report = replay::replay_with(
        &new.handle(),
        pair.workload,
        &options,
        Baseline::Interleaved(&old.handle()),
    );
    if let Some(failed) = report.first_failure() {
        return Err(format!(
            "{}: call #{} ({}) failed:\n{}",
            pair.candidate.display(),
            failed.index,
            failed.kernel,
            report.table()
        ));
    }
    Ok(Comparison {
        baseline: pair.baseline.display().to_string(),
        candidate: pair.candidate.display().to_string(),
        slower: slower_calls(&report),
        report,
    })
}

/// Builds what `options` asks for and compares.
pub fn run(options: &CompareOptions) -> Result<Comparison, String> {
    let workload = match &options.workload {
        Some(path) => kiln::workload::read(path).map_err(|e| e.to_string())?,
        None => kiln::workload::generate::workspace_bundled_workload(&options.workspace)?,
    };
    let candidate = match &options.candidate {
        Some(path) => path.clone(),
        None => crate::artifacts::build_module(
            &options.workspace,
            &options.module,
            kiln::workspace::HOST_PROFILE,
            &[],
        )?,
    };
    let (baseline, label) = match &options.baseline {
        BaselineBuild::Artifact(path) => (path.clone(), path.display().to_string()),
        BaselineBuild::OneCodegenUnit => {
            let dir = kiln::workspace::target_dir(&options.workspace).join("kiln-lto-check");
            let path = build_one_codegen_unit(&options.workspace, &options.module, &dir)?;
            let label = format!("{} (codegen-units = 1: all inlining)", path.display());
            (path, label)
        }
    };
    let cold = match options.cold {
        true => Some(ColdFlush::new(options.threads.max(1))?),
        false => None,
    };
    let mut comparison = compare(&ArtifactPair {
        workspace: &options.workspace,
        module: &options.module,
        baseline: &baseline,
        candidate: &candidate,
        workload: &workload,
        threads: options.threads,
        timing: &options.timing,
        cold,
    })?;
    comparison.baseline = label;
    if options.candidate.is_none() {
        comparison.candidate = format!("{} (the workspace's profile)", candidate.display());
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln::workload::replay::CallResult;
    use kiln::workload::timing::Stats;

    fn call(
        index: usize,
        kernel: &str,
        median: f64,
        previous: f64,
        verdict: Verdict,
    ) -> CallResult {
        CallResult {
            index,
            key: format!("{index}:{kernel}"),
            kernel: kernel.to_string(),
            description: "f32[1024]".to_string(),
            comparison: None,
            stats: Stats::from_secs(&[median; 5]),
            verdict: Some(verdict),
            previous_median: Some(previous),
            ratio: None,
            error: None,
            recorded: None,
            expected_from: kiln::workload::reference::ExpectedFrom::Unchecked,
            trials: (1, 1),
            skipped: None,
            work: None,
            point: None,
        }
    }

    #[test]
    fn warns_for_the_clearly_slower_calls_only() {
        let report = ReplayReport {
            label: "kernel-cpu-v2".to_string(),
            calls: vec![
                call(0, "saxpy", 3.0e-3, 1.0e-3, Verdict::Slower),
                call(1, "dot", 1.05e-3, 1.0e-3, Verdict::NoClearChange),
                call(2, "matmul", 0.5e-3, 1.0e-3, Verdict::Faster),
            ],
            ms: 10.0,
            timing_header: None,
            other_work_share: None,
            roof: None,
        };
        let slower = slower_calls(&report);
        assert_eq!(slower.len(), 1);
        assert_eq!((slower[0].index, slower[0].kernel.as_str()), (0, "saxpy"));
        assert!((slower[0].ratio - 3.0).abs() < 1e-9);
        let comparison = Comparison {
            baseline: "one unit".to_string(),
            candidate: "usual".to_string(),
            report,
            slower,
        };
        let text = comparison.render(true);
        assert!(
            text.contains("warning: call #0 (saxpy f32[1024]) runs 3.00x as long"),
            "{text}"
        );
        assert!(text.contains("closure body over a whole chunk"), "{text}");
        assert!(
            !text.contains("call #1") && !text.contains("call #2"),
            "{text}"
        );
        assert!(!comparison.render(false).contains("closure body"));
    }
}

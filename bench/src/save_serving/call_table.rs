//! The call table of section 2: every call of the bundled workload, timed
//! on the module built before the change and after it, interleaved on the
//! same state (kiln's own interleaved replay, [`crate::compare_builds`]),
//! with kiln's verdict per call. A faster save must not cost a slower
//! kernel.
//!
//! "After" is `kernel-cpu` built with the workspace's profile (no LTO,
//! incremental). "Before" is, by default, the same sources built as one
//! codegen unit (everything the thin-local LTO build of before the change
//! could inline, the compiler can), or a module file named by
//! `KILN_BENCH_BEFORE_MODULE` (built elsewhere with the same contract
//! build, e.g. before a profile lever).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use kiln::workload::timing::TimingConfig;

use crate::compare_builds::{self, Comparison};
use crate::config::Config;

/// One row: a call, both medians (ms) and the verdict.
#[derive(Clone, Debug)]
pub struct CallRow {
    pub index: usize,
    pub kernel: String,
    pub description: String,
    pub before_ms: Option<f64>,
    pub before_mad_ms: Option<f64>,
    pub after_ms: Option<f64>,
    pub after_mad_ms: Option<f64>,
    pub verdict: String,
}

#[derive(Clone, Debug)]
pub struct CallTable {
    pub before: String,
    pub after: String,
    pub rows: Vec<CallRow>,
}

impl CallTable {
    pub fn to_json(&self) -> Value {
        json!({
            "before": self.before,
            "after": self.after,
            "calls": self.rows.iter().map(|r| {
                let mut call = json!({
                    "index": r.index,
                    "kernel": r.kernel,
                    "description": r.description,
                    "verdict": r.verdict,
                });
                // A figure that was not measured (kiln's interleaved replay
                // keeps no spread of the baseline) is left out, not `null`.
                for (key, value) in [
                    ("before_ms", r.before_ms),
                    ("before_mad_ms", r.before_mad_ms),
                    ("after_ms", r.after_ms),
                    ("after_mad_ms", r.after_mad_ms),
                ] {
                    if let Some(v) = value {
                        call[key] = json!(v);
                    }
                }
                call
            }).collect::<Vec<_>>(),
        })
    }

    /// Calls whose verdict is "slower".
    pub fn slower(&self) -> impl Iterator<Item = &CallRow> {
        self.rows.iter().filter(|r| r.verdict == "slower")
    }

    pub fn render(&self) -> String {
        let mut t = crate::table::Table::new(&[
            "#",
            "kernel",
            "call",
            "before ms",
            "after ms",
            "after/before",
            "verdict",
        ]);
        let ms = |m: Option<f64>, d: Option<f64>| match (m, d) {
            (Some(m), Some(d)) => format!("{} ± {}", crate::table::num(m), crate::table::num(d)),
            (Some(m), None) => crate::table::num(m),
            _ => "-".to_string(),
        };
        for r in &self.rows {
            let ratio = match (r.before_ms, r.after_ms) {
                (Some(b), Some(a)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".to_string(),
            };
            t.row(vec![
                r.index.to_string(),
                r.kernel.clone(),
                r.description.clone(),
                ms(r.before_ms, r.before_mad_ms),
                ms(r.after_ms, r.after_mad_ms),
                ratio,
                r.verdict.clone(),
            ]);
        }
        format!(
            "  before: {}\n  after:  {}\n{}",
            self.before,
            self.after,
            t.render()
        )
    }
}

fn rows(comparison: &Comparison) -> Vec<CallRow> {
    comparison
        .report
        .calls
        .iter()
        .map(|c| {
            let verdict = match (&c.skipped, &c.error, c.verdict) {
                (Some(why), _, _) => format!("skipped: {why}"),
                (_, Some(e), _) => format!("error: {e}"),
                (_, _, Some(v)) => v.to_string(),
                _ => "no timing".to_string(),
            };
            CallRow {
                index: c.index,
                kernel: c.kernel.clone(),
                description: c.description.clone(),
                before_ms: c.previous_median.map(|s| s * 1e3),
                before_mad_ms: None,
                after_ms: c.stats.as_ref().map(|s| s.median * 1e3),
                after_mad_ms: c.stats.as_ref().map(|s| s.mad * 1e3),
                verdict,
            }
        })
        .collect()
}

/// `module` built with `profile` and `codegen-units = 1` for its package,
/// in the same invocation as the host (`unify_with`), into `target_dir`.
fn build_one_unit(
    workspace: &Path,
    module: &str,
    profile: &str,
    unify_with: &[String],
    target_dir: &Path,
) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "-p", module, "--profile", profile]);
    if !unify_with.is_empty() {
        cmd.arg("--lib").args(unify_with);
    }
    let out = cmd
        .arg("--config")
        .arg(format!(
            "profile.{profile}.package.{module}.codegen-units=1"
        ))
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .map_err(|e| format!("cannot run {cargo} to build {module}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {module} --profile {profile} with codegen-units = 1 failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let artifact = crate::artifacts::artifact_path(target_dir, profile, module);
    if !artifact.is_file() {
        return Err(format!(
            "cargo built {module} but there is no {}",
            artifact.display()
        ));
    }
    Ok(artifact)
}

/// Builds both modules (see the module doc) and times every call of the
/// bundled workload on both, interleaved.
pub fn measure(config: &Config, after: &Path) -> Result<CallTable, String> {
    let module = crate::kiln_side::MODULE;
    let (before, before_label) = match std::env::var_os("KILN_BENCH_BEFORE_MODULE") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            let label = format!("{} (KILN_BENCH_BEFORE_MODULE)", path.display());
            (path, label)
        }
        // The quick run (the bench's test) compares the build with itself:
        // the codegen-units = 1 build goes to a target dir of its own and
        // compiles the whole dependency tree again (minutes on 2 cores).
        _ if config.quick => (
            after.to_path_buf(),
            format!(
                "{module}, the workspace's {} profile: the same build as after (quick run: \
                 the codegen-units = 1 build is left out)",
                config.module_profile
            ),
        ),
        _ => {
            let dir = kiln::workspace::target_dir(&config.workspace).join("kiln-bench-one-unit");
            let path = build_one_unit(
                &config.workspace,
                module,
                &config.module_profile,
                &config.module_unify_with,
                &dir,
            )?;
            (
                path,
                format!(
                    "{module}, {} profile + codegen-units = 1 for {module} (all the inlining \
                     the thin-local LTO build of before lto = \"off\" could do)",
                    config.module_profile
                ),
            )
        }
    };
    let workload = kiln::workload::generate::workspace_bundled_workload(&config.workspace)?;
    let timing = if config.quick {
        TimingConfig {
            warmup_runs: 1,
            min_runs: 3,
            min_time: std::time::Duration::from_millis(10),
            max_runs: 10,
            max_time: std::time::Duration::from_millis(200),
        }
    } else {
        TimingConfig::default()
    };
    let comparison = compare_builds::compare_artifacts(
        &config.workspace,
        module,
        &before,
        after,
        &workload,
        crate::kiln_side::THREADS,
        &timing,
    )?;
    Ok(CallTable {
        before: before_label,
        after: format!(
            "{module}, the workspace's {} profile (as kiln dev builds it)",
            config.module_profile
        ),
        rows: rows(&comparison),
    })
}

//! `cargo lto-check` (see `.cargo/config.toml`): which calls of a workload
//! a module runs clearly slower under the workspace's profile (no LTO, no
//! inlining across codegen units) than built as one codegen unit; or, given
//! two module files, which calls the second runs slower than the first. See
//! `kiln_bench::compare_builds`.
//!
//! Usage: `kiln-compare-builds --help`.
//!
//! Exit status: 0 when no call is clearly slower, 1 when one is, 2 on an
//! error (a bad command line included).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln::workload::timing::TimingConfig;
use kiln_bench::compare_builds::{self, BaselineBuild, CompareOptions};

/// `cargo lto-check`: the calls of a workload that one build of a kernel
/// module runs clearly slower than another.
///
/// By default: the module built with the workspace's profile (no LTO, no
/// inlining across codegen units) against the module built as one codegen
/// unit; its slower calls probably need inlining the profile does not do.
/// Given module files, the candidate against the baseline. Both builds are
/// served with the same state and every call is timed on both, interleaved.
#[derive(Parser)]
#[command(
    name = "kiln-compare-builds",
    args_override_self = true,
    after_help = "Exit status: 0 when no call is clearly slower, 1 when one is, 2 on an error."
)]
struct Args {
    /// The module package to build and compare.
    #[arg(long, value_name = "PKG", default_value = "kernel-cpu")]
    module: String,
    /// Workload to replay (default: the bundled one).
    #[arg(long, value_name = "FILE")]
    workload: Option<PathBuf>,
    /// Engine worker threads (0: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Baseline module file (default: the module built with
    /// `codegen-units = 1`, in a target directory of its own).
    #[arg(long, value_name = "FILE.so")]
    baseline: Option<PathBuf>,
    /// Candidate module file (default: the module built with the
    /// workspace's profile).
    #[arg(long, value_name = "FILE.so")]
    candidate: Option<PathBuf>,
    /// Flush the caches before every timed run.
    #[arg(long)]
    cold: bool,
}

impl Args {
    fn options(self) -> CompareOptions {
        CompareOptions {
            workspace: kiln::workspace::built_workspace_root(),
            module: self.module,
            baseline: self
                .baseline
                .map_or(BaselineBuild::OneCodegenUnit, BaselineBuild::Artifact),
            candidate: self.candidate,
            workload: self.workload,
            threads: self.threads,
            timing: TimingConfig::default(),
            cold: self.cold,
        }
    }
}

fn main() -> ExitCode {
    // Timed as the kiln binary times (see `configure_malloc`).
    kiln::process::configure_malloc();
    let options = Args::parse().options();
    let lto_advice = options.baseline == BaselineBuild::OneCodegenUnit;
    eprintln!(
        "kiln-compare-builds: building and replaying {} (this takes a minute)",
        options.module
    );
    match compare_builds::run(&options) {
        Ok(comparison) => {
            print!("{}", comparison.render(lto_advice));
            if comparison.slower.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("kiln-compare-builds: {e}");
            ExitCode::from(2)
        }
    }
}

//! `cargo lto-check` (see `.cargo/config.toml`): which calls of a workload
//! a module runs clearly slower under the workspace's profile (no LTO, no
//! inlining across codegen units) than built as one codegen unit; or, given
//! two module files, which calls the second runs slower than the first. See
//! `kiln_bench::compare_builds`.
//!
//! Usage:
//!   kiln-compare-builds [--module PKG] [--workload FILE] [--threads N]
//!                       [--baseline FILE.so] [--candidate FILE.so] [--cold]
//!
//! Exit status: 0 when no call is clearly slower, 1 when one is, 2 on an
//! error.

use std::path::PathBuf;
use std::process::ExitCode;

use kiln::workload::timing::TimingConfig;
use kiln_bench::compare_builds::{self, BaselineBuild, CompareOptions};

const USAGE: &str = "usage: kiln-compare-builds [--module PKG] [--workload FILE] [--threads N] \
                     [--baseline FILE.so] [--candidate FILE.so] [--cold]";

fn parse() -> Result<CompareOptions, String> {
    let mut options = CompareOptions {
        workspace: kiln::workspace::built_workspace_root(),
        module: "kernel-cpu".to_string(),
        baseline: BaselineBuild::OneCodegenUnit,
        candidate: None,
        workload: None,
        threads: 0,
        timing: TimingConfig::default(),
        cold: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--module" => options.module = value()?,
            "--workload" => options.workload = Some(PathBuf::from(value()?)),
            "--threads" => {
                let v = value()?;
                options.threads = v
                    .parse()
                    .map_err(|_| format!("--threads must be a number, got {v:?}"))?;
            }
            "--baseline" => options.baseline = BaselineBuild::Artifact(PathBuf::from(value()?)),
            "--candidate" => options.candidate = Some(PathBuf::from(value()?)),
            "--cold" => options.cold = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    // Timed as the kiln binary times (see `configure_malloc`).
    kiln::process::configure_malloc();
    let options = match parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
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

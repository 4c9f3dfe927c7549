//! A module built now, on the session's thread, with the spinner: at
//! start-up, for `--backends`, for a switch, and for the one-shot commands
//! (saves build on the build thread, `crate::build::queue`).

use std::path::PathBuf;

use super::options::{DevError, err};
use super::spinner::Spinner;
use crate::build::module_build::{BuildOutcome, ModuleBuilder, strip_ansi};
use crate::build::module_graph::KernelModule;
use crate::events::{self, emit};

/// Builds `module` now, on this thread, with `spinner` on a terminal, and
/// logs `build_started` and `build_finished` or `build_failed` (with the
/// compiler's messages); `version`: what the session serves meanwhile.
/// The one synchronous build of `kiln dev` (start-up, `--backends`, a
/// switch) and the one-shot commands; saves build on the build thread.
pub fn build_now(
    builder: &ModuleBuilder,
    module: &KernelModule,
    spinner: &mut Spinner,
    version: u64,
) -> Result<(PathBuf, f64), String> {
    spinner.start(&module.package);
    emit!(
        tracing::Level::INFO,
        events::BuildStarted {
            module: module.package.clone(),
            version,
            requests: None,
        },
        "building {}",
        module.package
    );
    let outcome = builder.build(module, &mut |p| spinner.progress(&p.step));
    spinner.clear();
    match outcome.map_err(|e| format!("cannot build {}: {e}", module.package))? {
        BuildOutcome::Built { artifact, ms, .. } => {
            emit!(
                tracing::Level::INFO,
                events::BuildFinished {
                    module: module.package.clone(),
                    version,
                    ms: ms as f64,
                },
                "built {} in {ms} ms",
                module.package
            );
            Ok((artifact, ms as f64))
        }
        BuildOutcome::Failed { rendered, ms } => {
            eprint!("{rendered}");
            emit!(
                tracing::Level::ERROR,
                events::BuildFailed {
                    module: module.package.clone(),
                    version,
                    ms: ms as f64,
                    diagnostics: Some(strip_ansi(&rendered)),
                },
                "build of {} failed",
                module.package
            );
            Err(format!(
                "{} does not build (see the compiler's messages above)",
                module.package
            ))
        }
    }
}

/// [`build_now`] at start-up: a module that does not build stops `kiln dev`.
pub fn build_at_start(
    builder: &ModuleBuilder,
    module: &KernelModule,
) -> Result<(PathBuf, f64), DevError> {
    build_now(builder, module, &mut Spinner::new(), 0)
        .map_err(|e| err(format!("{e}; fix it and start kiln dev again")))
}

//! What a module build reports: how it ended, its progress, why it could
//! not run at all, and the compiler's messages without ANSI escapes. Shared
//! by the cargo path (`module_build.rs`) and the direct rustc path
//! (`direct_rustc.rs`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// How one module build ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The build succeeded.
    Built {
        /// A copy of the `cdylib` private to this workspace
        /// (`<target>/kiln-built/<workspace hash>/`), taken under the build
        /// lock. The next build of this workspace replaces it: stage it
        /// before loading it.
        artifact: PathBuf,
        /// Wall time of the cargo run, in milliseconds.
        ms: u64,
        /// Cargo found the artifact up to date and did not rebuild it.
        fresh: bool,
        /// Warnings as cargo rendered them (empty if none).
        warnings: String,
    },
    /// The build failed: compile errors, a broken manifest, ...
    Failed {
        /// Cargo's and rustc's diagnostics exactly as cargo rendered them
        /// (ANSI colours included when colour is on), status lines left out.
        rendered: String,
        /// Wall time of the cargo run, in milliseconds.
        ms: u64,
    },
}

/// What cargo is doing, for a spinner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildProgress {
    /// Cargo's latest status line without colour or indentation, e.g.
    /// `Compiling rayon-core v1.13.0` or `Blocking waiting for file lock ...`.
    pub step: String,
    /// Compilation units finished so far (libraries, build scripts run).
    pub units_done: usize,
}

/// Why a module could not be built at all (as opposed to a failed build).
#[derive(Debug)]
pub enum BuildError {
    /// Cargo could not be started or its output could not be read.
    Cargo { command: String, source: io::Error },
    /// Cargo succeeded but reported no `cdylib` for the package.
    NoArtifact { package: String, manifest: PathBuf },
    /// The artifact could not be copied out of the shared target dir.
    Copy {
        artifact: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Cargo { command, source } => write!(f, "cannot run `{command}`: {source}"),
            BuildError::NoArtifact { package, manifest } => write!(
                f,
                "{}: cargo built {package} but reported no cdylib (is its lib crate-type \"cdylib\"?)",
                manifest.display()
            ),
            BuildError::Copy { artifact, source } => write!(
                f,
                "{}: cannot copy the built module out of the target dir: {source}",
                artifact.display()
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Cargo { source, .. } | BuildError::Copy { source, .. } => Some(source),
            BuildError::NoArtifact { .. } => None,
        }
    }
}

/// Removes ANSI escape sequences (colours, hyperlinks) and the control
/// characters that are not whitespace.
pub fn strip_ansi(line: &str) -> String {
    anstream::adapter::strip_str(line).to_string()
}

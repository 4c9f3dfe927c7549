//! Load: open a staged module and check its ABI fingerprint before touching
//! any Rust-ABI symbol.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use shared_state::export::{
    CREATE_ENGINE_SYMBOL, CreateEngineFn, FINGERPRINT_SYMBOL, FingerprintFn,
    INSTALL_LOGGING_SYMBOL, InstallLoggingFn, PROBE_DEVICES_SYMBOL, ProbeDevicesFn,
};
use shared_state::{Difference, Fingerprint};

use crate::events::{self, emit};
use crate::swap::stage::{StageError, Staged};

/// Why a module was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("refused {label}: {} is not a loadable library: {reason}", path.display())]
    NotALibrary {
        label: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "refused {label}: no `{FINGERPRINT_SYMBOL}` symbol in {}: not a kiln module \
         (a module exports its entry points with shared_state::export_module!)",
        path.display()
    )]
    NoFingerprint { label: String, path: PathBuf },
    #[error("refused {label}: unreadable fingerprint: {reason}")]
    BadFingerprint { label: String, reason: String },
    #[error("refused {label}: {}", join_differences(.differences))]
    Mismatch {
        label: String,
        differences: Vec<Difference>,
    },
    #[error(
        "refused {label}: fingerprint matches but `{symbol}` is missing from {}: \
         no engine factory (use shared_state::export_module!)",
        path.display()
    )]
    MissingEntryPoint {
        label: String,
        path: PathBuf,
        symbol: &'static str,
    },
}

fn join_differences(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(Difference::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The fingerprint of this host, to which every module must match.
pub fn host_fingerprint() -> Fingerprint {
    shared_state::fingerprint!()
}

/// An open module library with its checked entry points.
///
/// The function pointers point into the library: they are only called while
/// this value (and so the library) is alive. Engines hold an `Arc` of it, so
/// the library is closed only when the last engine, thread and handle that
/// came out of it is gone.
pub struct LoadedModule {
    pub staged: Staged,
    pub fingerprint: Fingerprint,
    pub(crate) create: CreateEngineFn,
    pub(crate) install_logging: InstallLoggingFn,
    pub(crate) probe: ProbeDevicesFn,
    library: Option<Library>,
    /// Whether closing the library removes its staged files (this
    /// process's copy of the version, by default) or leaves them to the
    /// process that staged them ([`LoadedModule::leaving_files`]).
    remove_files: bool,
}

impl fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModule")
            .field("label", &self.staged.label)
            .field("path", &self.staged.path)
            .finish_non_exhaustive()
    }
}

impl LoadedModule {
    pub fn label(&self) -> &str {
        &self.staged.label
    }

    /// Opens a staged module: verifies the file's hash, dlopens it, reads
    /// and compares the C-ABI fingerprint, and only then resolves the
    /// Rust-ABI entry points.
    pub fn open(staged: Staged) -> Result<LoadedModule, LoadError> {
        let start = Instant::now();
        let label = staged.label.clone();
        staged.verify()?;
        // SAFETY: dlopen runs the library's initialisers. Modules are Rust
        // cdylibs whose only initialisers are std's (argv capture); a file
        // that is not a library fails here without running anything.
        let library =
            unsafe { Library::open(Some(&staged.path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
                LoadError::NotALibrary {
                    label: label.clone(),
                    path: staged.path.clone(),
                    reason: e.to_string(),
                }
            })?;
        let fingerprint = read_fingerprint(&library, &staged)?;
        let differences = fingerprint.differences(&host_fingerprint());
        if !differences.is_empty() {
            return Err(LoadError::Mismatch { label, differences });
        }
        let missing = |symbol| LoadError::MissingEntryPoint {
            label: label.clone(),
            path: staged.path.clone(),
            symbol,
        };
        // SAFETY: the fingerprint matched, so the module was built by the
        // same compiler, target and profile against the same contract crate
        // (invariant 2): the symbols have exactly the Rust types the
        // `export_module!` macro checked them against at compile time.
        let (create, install_logging, probe) = unsafe {
            (
                *library
                    .get::<CreateEngineFn>(CREATE_ENGINE_SYMBOL.as_bytes())
                    .map_err(|_| missing(CREATE_ENGINE_SYMBOL))?,
                *library
                    .get::<InstallLoggingFn>(INSTALL_LOGGING_SYMBOL.as_bytes())
                    .map_err(|_| missing(INSTALL_LOGGING_SYMBOL))?,
                *library
                    .get::<ProbeDevicesFn>(PROBE_DEVICES_SYMBOL.as_bytes())
                    .map_err(|_| missing(PROBE_DEVICES_SYMBOL))?,
            )
        };
        let ms = start.elapsed().as_secs_f64() * 1e3;
        emit!(
            tracing::Level::INFO,
            events::Loaded {
                module: staged.module.clone(),
                version: staged.version,
                ms,
            },
            "loaded {label} (fingerprint ok) in {ms:.1} ms"
        );
        Ok(LoadedModule {
            staged,
            fingerprint,
            create,
            install_logging,
            probe,
            library: Some(library),
            remove_files: true,
        })
    }

    /// Closing this library will leave its staged files in place: for a
    /// module a worker is handed to use but does not own (the reference
    /// modules: the supervisor stages each once and hands the same files
    /// to every worker it starts, so a worker that ends cleanly must not
    /// take them with it).
    pub fn leaving_files(mut self) -> LoadedModule {
        self.remove_files = false;
        self
    }
}

fn read_fingerprint(library: &Library, staged: &Staged) -> Result<Fingerprint, LoadError> {
    let label = staged.label.clone();
    // SAFETY: `kiln_abi_fingerprint` is looked up as a C-ABI function taking
    // a buffer and its capacity; its type does not depend on the Rust ABI,
    // which is exactly why it is the first and only symbol read before the
    // fingerprint is checked.
    let fingerprint_fn = unsafe { library.get::<FingerprintFn>(FINGERPRINT_SYMBOL.as_bytes()) }
        .map_err(|_| LoadError::NoFingerprint {
            label: label.clone(),
            path: staged.path.clone(),
        })?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the
        // function writes at most that many and returns the full length.
        let len = unsafe { fingerprint_fn(buf.as_mut_ptr(), buf.len()) };
        if len == 0 {
            return Err(LoadError::BadFingerprint {
                label,
                reason: "the module's fingerprint function failed".to_string(),
            });
        }
        if len <= buf.len() {
            let text = std::str::from_utf8(&buf[..len]).map_err(|e| LoadError::BadFingerprint {
                label: label.clone(),
                reason: e.to_string(),
            })?;
            return Fingerprint::parse(text)
                .map_err(|reason| LoadError::BadFingerprint { label, reason });
        }
        buf.resize(len, 0);
    }
    Err(LoadError::BadFingerprint {
        label,
        reason: "fingerprint length changed between calls".to_string(),
    })
}

impl Drop for LoadedModule {
    fn drop(&mut self) {
        let start = Instant::now();
        if let Some(library) = self.library.take() {
            if let Err(e) = library.close() {
                tracing::error!("dlclose of {} failed: {e}", self.staged.label);
            }
        }
        if self.remove_files {
            let _ = std::fs::remove_file(&self.staged.path);
            let _ = std::fs::remove_file(&self.staged.files_path);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        emit!(
            tracing::Level::INFO,
            events::Unloaded {
                module: self.staged.module.clone(),
                version: self.staged.version,
                ms,
            },
            "unloaded {} (dlclose {ms:.1} ms)",
            self.staged.label
        );
    }
}

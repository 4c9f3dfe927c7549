//! The peak kernels of a GPU backend, and an engine that runs only them.
//!
//! Each GPU module bundles two kernels of kiln's own under its `peaks/`
//! folder (`kernels/vulkan/peaks/{triad,fma}.wgsl`,
//! `kernels/cuda/peaks/{triad,fma}.cu`), staged with every version like any
//! source but declared by no `kernels/declarations/*.toml`: they are never
//! user kernels. To measure, the host declares them here and starts a
//! separate engine of the same module file whose version holds only these
//! declarations and sources; they are then called and timed through the
//! ordinary engine call path, so the contract does not change.
//!
//! That engine is a private copy of the module's staged library (dropping
//! it removes only the copy), opened and dropped with logging off, so it
//! never shows as a version of the session (no `loaded`/`retired` events).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shared_state::{KernelDecl, KernelSet, SourceFile};

use crate::swap::engine_handle::{EngineHandle, EngineOptions};
use crate::swap::load::LoadedModule;
use crate::swap::version_files::VersionFiles;

/// The triad, one pass per call.
pub const TRIAD: &str = "kiln_peak_triad";
/// The triad, [`TRIAD_PASSES`] passes in one submission (software
/// devices, slow per element).
pub const TRIAD_X: &str = "kiln_peak_triad_x3";
pub const TRIAD_PASSES: usize = 3;
/// The triad, [`TRIAD_LONG_PASSES`] passes in one submission (GPUs: 32
/// sweeps of 768 MiB take milliseconds, well above a call's jitter).
pub const TRIAD_LONG: &str = "kiln_peak_triad_x33";
pub const TRIAD_LONG_PASSES: usize = 33;
/// The FMA loop.
pub const FMA: &str = "kiln_peak_fma";
/// Independent FMA chains per invocation in `peaks/fma.*` (four vec4s).
pub const FMA_CHAINS: usize = 16;

/// The triad's declaration with `passes` launch passes.
fn triad_toml(passes: usize) -> String {
    let mut text = String::from(
        "summary = \"kiln's bandwidth peak: a = b + s*c (STREAM triad)\"\n\
         inputs = [\"b: f32[n]\", \"c: f32[n]\"]\n\
         outputs = [\"a: f32[n]\"]\n\
         params = { s = 3.0 }\n\
         work = { flops = \"2*n\", bytes = \"12*n\" }\n",
    );
    // 16 elements per invocation (grid-stride): few enough workgroups that
    // a software device's cost per workgroup is small, enough invocations
    // in flight for any GPU.
    for _ in 0..passes {
        text.push_str(
            "\n[[launch]]\nentry = \"main\"\ngroup = [256]\n\
             workgroups = [\"min(ceil_div(n, 4096), 65535)\"]\n",
        );
    }
    text
}

const FMA_TOML: &str = "summary = \"kiln's compute peak: 16 f32 FMA chains per invocation\"\n\
     inputs = [\"x: f32[n]\"]\n\
     outputs = [\"out: f32[n]\"]\n\
     params = { iters = 64 }\n\
     \n[[launch]]\nentry = \"main\"\ngroup = [256]\nworkgroups = [\"ceil_div(n, 256)\"]\n";

/// The declarations, with their (virtual) file names.
pub fn declaration_texts() -> Vec<(String, String)> {
    vec![
        (format!("{TRIAD}.toml"), triad_toml(1)),
        (format!("{TRIAD_X}.toml"), triad_toml(TRIAD_PASSES)),
        (format!("{TRIAD_LONG}.toml"), triad_toml(TRIAD_LONG_PASSES)),
        (format!("{FMA}.toml"), FMA_TOML.to_string()),
    ]
}

/// Where backend `backend`'s engine looks for kernel `name`'s source, and
/// the extension of its peak kernels (`None`: not a GPU backend kiln
/// measures this way).
fn source_layout(backend: &str, name: &str) -> Option<(String, &'static str)> {
    match backend {
        "vulkan" => Some((format!("shaders/{name}.wgsl"), "wgsl")),
        "cuda" => Some((format!("kernels/{name}.cu"), "cu")),
        _ => None,
    }
}

/// Whether kiln measures `backend`'s devices with peak kernels (the GPU
/// backends; not the CPU, measured in the host, nor the reference module).
pub fn has_peak_kernels(backend: &str) -> bool {
    source_layout(backend, "").is_some()
}

/// The peak version's files for `backend`, from the module's staged
/// `sources` (its `peaks/triad.EXT` and `peaks/fma.EXT`).
pub fn peak_files(backend: &str, sources: &[SourceFile]) -> Result<VersionFiles, String> {
    let texts = declaration_texts();
    let decls = texts
        .iter()
        .map(|(file, text)| kiln_decl::parse(Path::new(file), text).map_err(|e| e.to_string()))
        .collect::<Result<Vec<KernelDecl>, String>>()?;
    let mut files = Vec::new();
    for (kernel, file) in [
        (TRIAD, "triad"),
        (TRIAD_X, "triad"),
        (TRIAD_LONG, "triad"),
        (FMA, "fma"),
    ] {
        let (path, ext) = source_layout(backend, kernel)
            .ok_or_else(|| format!("{backend}: kiln has no peak kernels for this backend"))?;
        let wanted = format!("peaks/{file}.{ext}");
        let source = sources.iter().find(|s| s.path == wanted).ok_or_else(|| {
            format!(
                "the {backend} module has no {wanted} (its peak kernel) among its sources: \
                 is this workspace's kernels/{backend}/ older than kiln?"
            )
        })?;
        files.push(SourceFile {
            path,
            text: source.text.clone(),
            hash: source.hash.clone(),
        });
    }
    Ok(VersionFiles {
        kernels: Arc::new(KernelSet::new(decls)),
        sources: Arc::new(files),
        declaration_texts: Arc::new(texts),
    })
}

/// Runs `f` with logging off on this thread (and in any engine started
/// in it, which takes this thread's dispatcher).
pub fn quietly<T>(f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f)
}

/// An engine that runs only the peak kernels. Dropping it drops the engine
/// and closes (and removes) its private library copy, quietly.
pub struct PeakEngine {
    handle: Option<EngineHandle>,
}

impl PeakEngine {
    /// Starts a peak engine of `module`'s library with `options` (the
    /// device chosen as the served engine's).
    pub fn start(module: &LoadedModule, options: &EngineOptions) -> Result<PeakEngine, String> {
        let backend = backend_of(&module.staged.module);
        let mut staged = module.staged.clone();
        staged.files = peak_files(backend, &module.staged.files.sources)?;
        let copy = private_copy(&staged.path)?;
        staged.path = copy.clone();
        staged.files_path = copy.with_extension("files.json");
        staged.label = format!("{}-peaks", staged.label);
        quietly(|| {
            // `open` verifies that the copy hashes as the staged library.
            let loaded = match LoadedModule::open(staged) {
                Ok(l) => l,
                Err(e) => {
                    let _ = std::fs::remove_file(&copy);
                    return Err(e.to_string());
                }
            };
            EngineHandle::start(Arc::new(loaded), options, None)
                .map(|(handle, _)| PeakEngine {
                    handle: Some(handle),
                })
                .map_err(|e| format!("cannot start the peak engine: {e}"))
        })
    }

    pub fn handle(&self) -> &EngineHandle {
        self.handle.as_ref().expect("present until dropped")
    }
}

impl Drop for PeakEngine {
    fn drop(&mut self) {
        let handle = self.handle.take();
        quietly(move || drop(handle));
    }
}

/// `vulkan` for `kernel-vulkan`.
pub fn backend_of(package: &str) -> &str {
    package.strip_prefix("kernel-").unwrap_or(package)
}

/// A copy of the staged library `path` next to it, under a name of its
/// own (dlopen caches by path: the copy is a library instance of its own).
fn private_copy(path: &Path) -> Result<PathBuf, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let copy = path.with_file_name(format!(
        "{stem}-peaks-{}-{}.so",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::copy(path, &copy).map_err(|e| {
        format!(
            "cannot copy {} to {} for the peak engine: {e}",
            path.display(),
            copy.display()
        )
    })?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: format!("// {path}"),
            hash: "0".into(),
        }
    }

    #[test]
    fn peak_versions_declare_four_kernels_under_the_backends_paths() {
        let sources = [
            source("shaders/saxpy.wgsl"),
            source("peaks/triad.wgsl"),
            source("peaks/fma.wgsl"),
        ];
        let files = peak_files("vulkan", &sources).unwrap();
        let names: Vec<&str> = files.kernels.names().collect();
        assert_eq!(names.len(), 4, "{names:?}");
        let x = files.kernels.get(TRIAD_X).unwrap();
        assert_eq!(x.launch.passes.len(), TRIAD_PASSES);
        assert_eq!(files.kernels.get(TRIAD).unwrap().launch.passes.len(), 1);
        let paths: Vec<&str> = files.sources.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "shaders/kiln_peak_triad.wgsl",
                "shaders/kiln_peak_triad_x3.wgsl",
                "shaders/kiln_peak_triad_x33.wgsl",
                "shaders/kiln_peak_fma.wgsl"
            ]
        );
        assert_eq!(files.sources[3].text, "// peaks/fma.wgsl");
        let cuda = peak_files("cuda", &[source("peaks/triad.cu"), source("peaks/fma.cu")]);
        assert_eq!(cuda.unwrap().sources[0].path, "kernels/kiln_peak_triad.cu");
        let missing = peak_files("vulkan", &sources[..2]).unwrap_err();
        assert!(missing.contains("peaks/fma.wgsl"), "{missing}");
        assert!(peak_files("cpu", &sources).is_err());
        assert!(has_peak_kernels("cuda") && !has_peak_kernels("reference"));
    }
}

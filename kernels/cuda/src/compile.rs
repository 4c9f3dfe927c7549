//! The kernels' CUDA C sources, handed to the engine with its version
//! (`EngineContext::sources`, `kernels/NAME.cu` for kernel NAME), compiled to
//! PTX by NVRTC and checked against the declaration (one function per pass,
//! parameters by [`crate::convention`]). Needs NVRTC, not a GPU.

use std::time::{Duration, Instant};

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use shared_state::{EngineError, KernelDecl, KernelSet, SourceFile};

use crate::availability;
use crate::convention::{Layout, function_name};
use crate::ptx_cache::{self, PtxCache};

/// Where kernel NAME's source is, relative to the module's folder.
pub fn source_path(kernel: &str) -> String {
    format!("kernels/{kernel}.cu")
}

/// A kernel's source, compiled and checked.
pub struct CompiledKernel {
    pub kernel: String,
    pub path: String,
    pub layout: Layout,
    pub ptx: Ptx,
    /// One CUDA function per declared pass, in order.
    pub functions: Vec<String>,
    /// Inputs some pass may write in place ([`crate::written_inputs`]).
    pub written_inputs: Vec<usize>,
    /// NVRTC's time (zero when the PTX came from the cache).
    pub elapsed: Duration,
    /// What the PTX was compiled from and for (its cache key).
    pub key: ptx_cache::Key,
    /// Whether the PTX came from the previous engine's cache (no NVRTC run).
    pub cached: bool,
}

/// Compiles the source of every declared kernel that has one among
/// `sources`, for `arch`. A declared kernel without a source, or whose
/// source is still the scaffold's stub, is not implemented here; a `.cu`
/// file without a declaration is returned in the second list (for a log
/// line). The first source that does not compile or does not fit its
/// declaration is the error.
#[cfg(test)]
pub fn compile_all(
    kernels: &KernelSet,
    sources: &[SourceFile],
    arch: &str,
) -> Result<(Vec<CompiledKernel>, Vec<String>), EngineError> {
    compile_all_cached(
        kernels,
        sources,
        arch,
        nvrtc_version()?,
        &PtxCache::default(),
    )
}

/// [`compile_all`], taking the PTX of a source from `cache` when it was
/// compiled from exactly that text for `arch` by NVRTC `nvrtc` (see
/// [`crate::ptx_cache`]); only the others run NVRTC. Cached PTX is checked
/// against the declaration like fresh PTX.
pub fn compile_all_cached(
    kernels: &KernelSet,
    sources: &[SourceFile],
    arch: &str,
    nvrtc: (i32, i32),
    cache: &PtxCache,
) -> Result<(Vec<CompiledKernel>, Vec<String>), EngineError> {
    let mut compiled = Vec::new();
    for decl in kernels.iter() {
        let path = source_path(&decl.name);
        if let Some(source) = sources.iter().find(|s| s.path == path && !s.is_stub()) {
            let key = ptx_cache::Key::of(source, arch, nvrtc);
            let cached = cache.get(&source.path, &key);
            compiled.push(compile_kernel_with(decl, source, arch, key, cached)?);
        }
    }
    let undeclared = sources
        .iter()
        // `peaks/*.cu` are kiln's own peak kernels, declared by the host
        // when it measures the device's peaks (never a user kernel).
        .filter(|s| s.path.starts_with("kernels/") && s.path.ends_with(".cu"))
        .filter(|s| !s.is_stub())
        .filter(|s| !compiled.iter().any(|c| c.path == s.path))
        .map(|s| s.path.clone())
        .collect();
    Ok((compiled, undeclared))
}

/// Compiles one kernel's source and checks its functions' parameters.
#[cfg(test)]
pub fn compile_kernel(
    decl: &KernelDecl,
    source: &SourceFile,
    arch: &str,
) -> Result<CompiledKernel, EngineError> {
    let key = ptx_cache::Key::of(source, arch, nvrtc_version()?);
    compile_kernel_with(decl, source, arch, key, None)
}

/// Compiles one kernel's source, or takes `cached` PTX made from it, and
/// checks its functions' parameters.
fn compile_kernel_with(
    decl: &KernelDecl,
    source: &SourceFile,
    arch: &str,
    key: ptx_cache::Key,
    cached: Option<String>,
) -> Result<CompiledKernel, EngineError> {
    if decl.launch.passes.is_empty() {
        return Err(EngineError::bad_call(format!(
            "{}: {} declares no [[launch]] pass, so the GPU cannot run it",
            source.path, decl.file
        )));
    }
    let from_cache = cached.is_some();
    let compiled = match cached {
        Some(text) => Compiled {
            ptx: Ptx::from_src(text),
            elapsed: Duration::ZERO,
        },
        None => compile(&source.path, &source.text, arch, &[])?,
    };
    let layout = Layout::of(decl);
    let ptx = compiled.ptx.to_src();
    let mut functions = Vec::with_capacity(decl.launch.passes.len());
    for (i, pass) in decl.launch.passes.iter().enumerate() {
        let name = function_name(&decl.name, &pass.entry);
        check_parameters(&source.path, &ptx, &name, &layout).map_err(|why| {
            EngineError::bad_call(format!(
                "{}: {why} (launch pass {i} of {})",
                source.path, decl.file
            ))
        })?;
        functions.push(name);
    }
    let mut written_inputs: Vec<usize> = functions
        .iter()
        .flat_map(|f| crate::written_inputs::written_inputs(&source.text, f, decl.inputs.len()))
        .collect();
    written_inputs.sort_unstable();
    written_inputs.dedup();
    Ok(CompiledKernel {
        kernel: decl.name.clone(),
        path: source.path.clone(),
        layout,
        ptx: compiled.ptx,
        functions,
        written_inputs,
        elapsed: compiled.elapsed,
        key,
        cached: from_cache,
    })
}

/// The function exists in the PTX, and its parameters follow the
/// convention: a 64-bit pointer per tensor, then the scalars, as far as it
/// declares them.
fn check_parameters(path: &str, ptx: &str, function: &str, layout: &Layout) -> Result<(), String> {
    let expected = || {
        let mut args: Vec<String> = layout
            .storage
            .iter()
            .map(|(role, t)| format!("{} {t}", role.name()))
            .collect();
        args.extend(
            layout
                .fields
                .iter()
                .map(|f| format!("{} {}", f.kind.c_type(), f.name)),
        );
        format!("the convention is ({})", args.join(", "))
    };
    let marker = format!(".entry {function}(");
    let Some(start) = ptx.find(&marker) else {
        let defined: Vec<&str> = ptx
            .match_indices(".entry ")
            .filter_map(|(i, _)| ptx[i + 7..].split('(').next())
            .collect();
        return Err(format!(
            "no extern \"C\" __global__ function `{function}`; {path} defines: {}",
            if defined.is_empty() {
                "none".to_string()
            } else {
                defined.join(", ")
            }
        ));
    };
    let list = &ptx[start + marker.len()..];
    let list = &list[..list.find(')').unwrap_or(list.len())];
    let params: Vec<&str> = list
        .split(',')
        .filter_map(|p| p.split_whitespace().nth(1))
        .collect();
    let total = layout.storage.len() + layout.fields.len();
    if params.len() > total {
        return Err(format!(
            "`{function}` takes {} parameters, more than the {total} of {}",
            params.len(),
            expected()
        ));
    }
    for (i, ty) in params.iter().enumerate() {
        let want = if i < layout.storage.len() {
            ".u64"
        } else {
            layout.fields[i - layout.storage.len()].kind.ptx()
        };
        if *ty != want {
            return Err(format!(
                "parameter {i} of `{function}` is a PTX {ty} where {}",
                expected()
            ));
        }
    }
    Ok(())
}

/// A compiled source: its PTX and how long NVRTC took.
pub struct Compiled {
    pub ptx: Ptx,
    pub elapsed: Duration,
}

/// The NVRTC `--gpu-architecture` for a compute capability (`compute_90`).
pub fn virtual_arch(major: i32, minor: i32) -> String {
    format!("compute_{major}{minor}")
}

/// Compiles one source to PTX for `arch` (e.g. `compute_80`). A compile
/// error comes back with NVRTC's log, which names the file and line.
pub fn compile(
    file: &str,
    source: &str,
    arch: &str,
    extra_options: &[String],
) -> Result<Compiled, EngineError> {
    availability::require_nvrtc()?;
    if source.contains('\0') {
        return Err(EngineError::bad_call(format!(
            "{file}: source contains a NUL byte"
        )));
    }
    let mut options = vec![format!("--gpu-architecture={arch}")];
    options.extend(extra_options.iter().cloned());
    let opts = CompileOptions {
        name: Some(file.to_string()),
        options,
        ..CompileOptions::default()
    };
    let start = Instant::now();
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, opts)
        .map_err(|e| compile_error(file, arch, e))?;
    Ok(Compiled {
        ptx,
        elapsed: start.elapsed(),
    })
}

fn compile_error(file: &str, arch: &str, err: CompileError) -> EngineError {
    match err {
        CompileError::CompileError { nvrtc, log, .. } => EngineError::bad_call(format!(
            "NVRTC could not compile {file} for {arch} ({:?}):\n{}",
            nvrtc.0,
            log.to_string_lossy().trim_end()
        )),
        other => EngineError::internal(format!("NVRTC failed on {file} for {arch}: {other:?}")),
    }
}

/// NVRTC's version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32), EngineError> {
    availability::require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is present (checked above); `nvrtcVersion` writes two
    // ints through the valid pointers it is given.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    status
        .result()
        .map_err(|e| EngineError::internal(format!("nvrtcVersion failed: {:?}", e.0)))?;
    Ok((major, minor))
}

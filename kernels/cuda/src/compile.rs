//! The kernel sources and their compilation to PTX by NVRTC.

use std::time::{Duration, Instant};

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use shared_state::EngineError;

use crate::availability;

/// One CUDA C source file and the kernels (`extern "C" __global__`
/// functions) it defines.
pub struct KernelSource {
    /// File name under `kernels/cuda/kernels/`, passed to NVRTC so its log
    /// reads `saxpy.cu(12): error ...`.
    pub file: &'static str,
    pub source: &'static str,
    pub functions: &'static [&'static str],
}

/// Every kernel source of the module. `include_str!` makes cargo rebuild the
/// module when one of them changes.
pub const KERNEL_SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "saxpy.cu",
        source: include_str!("../kernels/saxpy.cu"),
        functions: &["saxpy"],
    },
    KernelSource {
        file: "dot.cu",
        source: include_str!("../kernels/dot.cu"),
        functions: &["dot_partial", "dot_finish"],
    },
    KernelSource {
        file: "matmul.cu",
        source: include_str!("../kernels/matmul.cu"),
        functions: &["matmul"],
    },
    KernelSource {
        file: "stencil2d.cu",
        source: include_str!("../kernels/stencil2d.cu"),
        functions: &["stencil2d"],
    },
    KernelSource {
        file: "softmax.cu",
        source: include_str!("../kernels/softmax.cu"),
        functions: &["softmax"],
    },
];

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

//! The `.cu` row of "save to serving", the part that runs without a GPU:
//! a one-line edit of a CUDA source, the version's files read and staged
//! the way kiln stages them (declarations + sources, written next to the
//! library read-only and read back as the worker does), then NVRTC compiles
//! the edited file to PTX with the options the CUDA engine uses
//! (`--gpu-architecture=compute_XY`, the file's path as its name). The
//! engine compiles only the files whose text changed (the others' PTX comes
//! from the previous engine's cache), so one file is what an edit costs.
//!
//! What the whole swap adds on a GPU (module load, PTX JIT, state handoff)
//! is measured by `scripts/gpu-check.sh` only.

use std::path::Path;
use std::time::Instant;

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use kiln::swap::version_files::VersionFiles;

use super::edit::ConstantEdit;
use crate::stats::Summary;

/// The CUDA module's package and the edited source (relative to the
/// module's folder, as the version carries it).
pub const MODULE: &str = "kernel-cuda";
pub const SOURCE: &str = "kernels/saxpy.cu";
/// The line flipped: the rounded add's operands swapped (the same value
/// bit for bit, another PTX instruction order).
pub const FROM: &str = "__fadd_rn(__fmul_rn(a, x[i]), y[i])";
pub const TO: &str = "__fadd_rn(y[i], __fmul_rn(a, x[i]))";
/// The architecture compiled for (the H200 of the GPU machines: sm_90).
pub const ARCH: &str = "compute_90";
/// The NVRTC library cudarc loads (CUDA 13 bindings).
const NVRTC_LIBRARY: &str = "libnvrtc.so.13";

/// The row's figures, or why it was not measured.
#[derive(Clone, Debug)]
pub enum CuCompile {
    Measured {
        /// Reading the version's declarations and sources, writing them
        /// staged and reading them back (ms).
        stage_ms: Summary,
        /// NVRTC, the edited file (ms).
        nvrtc_ms: Summary,
        /// Both, per edit (ms).
        total_ms: Summary,
        /// The first compile of the process (NVRTC loaded), unmeasured.
        first_ms: f64,
        /// Bytes of PTX of the last compile.
        ptx_bytes: usize,
        nvrtc_version: (i32, i32),
    },
    NotMeasured(String),
}

/// Edits `SOURCE` of the workspace copy at `root` `warmup + rounds` times
/// and measures staging and NVRTC for each; `NotMeasured` when NVRTC is not
/// on the library path (see `scripts/install-nvrtc.sh`).
pub fn measure(root: &Path, warmup: usize, rounds: usize) -> Result<CuCompile, String> {
    // SAFETY: `is_culib_present` only `dlopen`s cudarc's candidate names for
    // NVRTC and closes what it opened; NVRTC's initialisers are safe to run.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Ok(CuCompile::NotMeasured(format!(
            "no NVRTC: {NVRTC_LIBRARY} not on LD_LIBRARY_PATH (export \
             LD_LIBRARY_PATH=$(bash scripts/install-nvrtc.sh target/nvrtc))"
        )));
    }
    let module_dir = kiln::swap::version_files::module_dir(root, MODULE)
        .ok_or_else(|| format!("{}: no kernels/*/Cargo.toml names {MODULE}", root.display()))?;
    let mut edit = ConstantEdit::swap_text(
        &module_dir.join(SOURCE),
        &format!("kernels/cuda/{SOURCE}"),
        FROM,
        TO,
    )?;
    let staged_files = root.join("target").join("kiln-bench-cu.files.json");
    let (mut stage, mut nvrtc, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_ms = 0.0;
    let mut ptx_bytes = 0;
    for round in 0..=warmup + rounds {
        if round > 0 {
            edit.save_next()?;
        }
        let t0 = Instant::now();
        let files = VersionFiles::read(root, MODULE)
            .map_err(|e| kiln::swap::version_files::describe_errors(&e))?;
        let _ = std::fs::remove_file(&staged_files);
        std::fs::create_dir_all(root.join("target"))
            .map_err(|e| format!("cannot create {}/target: {e}", root.display()))?;
        files
            .write_staged(&staged_files)
            .map_err(|e| format!("cannot write {}: {e}", staged_files.display()))?;
        let staged = VersionFiles::read_staged(&staged_files)?;
        let source = staged
            .sources
            .iter()
            .find(|s| s.path == SOURCE)
            .ok_or_else(|| format!("the staged {MODULE} version has no {SOURCE}"))?;
        if source.text != edit.current() {
            return Err(format!(
                "the staged {SOURCE} is not the text just saved (staging read a stale file)"
            ));
        }
        let t_staged = Instant::now();
        let opts = CompileOptions {
            name: Some(source.path.clone()),
            options: vec![format!("--gpu-architecture={ARCH}")],
            ..CompileOptions::default()
        };
        let ptx = compile_ptx_with_opts(&source.text, opts)
            .map_err(|e| format!("NVRTC could not compile {SOURCE}: {e:?}"))?;
        let t_done = Instant::now();
        ptx_bytes = ptx.to_src().len();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        if round == 0 {
            first_ms = ms(t_done - t0);
        } else if round > warmup {
            stage.push(ms(t_staged - t0));
            nvrtc.push(ms(t_done - t_staged));
            total.push(ms(t_done - t0));
        }
    }
    let _ = std::fs::remove_file(&staged_files);
    let summary = |s: Vec<f64>, what: &str| {
        Summary::of(&s).ok_or_else(|| format!(".cu edit, {what}: no samples"))
    };
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is present (checked above); `nvrtcVersion` writes two
    // ints through the valid pointers it is given.
    let _ = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    Ok(CuCompile::Measured {
        stage_ms: summary(stage, "staging")?,
        nvrtc_ms: summary(nvrtc, "NVRTC")?,
        total_ms: summary(total, "total")?,
        first_ms,
        ptx_bytes,
        nvrtc_version: (major, minor),
    })
}

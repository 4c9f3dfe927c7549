//! The compiled kernels of one engine and how each standard kernel is
//! launched on them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use shared_state::EngineError;

use crate::availability::{driver_error, startup_error};
use crate::buffers::DeviceTensor;
use crate::compile::{self, KERNEL_SOURCES};

/// Threads per block of the one-dimensional kernels (`dot.cu` and
/// `softmax.cu` hard-code the same number).
const BLOCK: u32 = 256;
/// Upper bound on blocks of the grid-stride kernels.
const MAX_BLOCKS: u64 = 1 << 16;
/// Blocks of the first `dot` pass: one double partial each.
const DOT_MAX_BLOCKS: u64 = 1024;
/// Output tile of `matmul.cu`.
const MATMUL_TILE: u32 = 16;
/// Largest grid y/z dimension.
const MAX_GRID_Y: u64 = 65_535;

/// Every kernel function of the module, loaded into one context.
pub struct Kernels {
    functions: BTreeMap<&'static str, CudaFunction>,
}

/// How long NVRTC took for each source file.
pub type CompileTimes = Vec<(&'static str, Duration)>;

impl Kernels {
    /// Compiles every source for `arch` and loads it into `ctx`.
    pub fn build(
        ctx: &Arc<CudaContext>,
        arch: &str,
    ) -> Result<(Kernels, CompileTimes), EngineError> {
        let mut functions = BTreeMap::new();
        let mut times = Vec::new();
        for src in KERNEL_SOURCES {
            let compiled = compile::compile(src.file, src.source, arch, &[])?;
            times.push((src.file, compiled.elapsed));
            let module = ctx
                .load_module(compiled.ptx)
                .map_err(|e| startup_error(&format!("load the PTX of {}", src.file), e))?;
            for &name in src.functions {
                let f = module.load_function(name).map_err(|e| {
                    startup_error(&format!("find kernel {name} in {}", src.file), e)
                })?;
                functions.insert(name, f);
            }
        }
        Ok((Kernels { functions }, times))
    }

    fn get(&self, name: &str) -> Result<&CudaFunction, EngineError> {
        self.functions
            .get(name)
            .ok_or_else(|| EngineError::internal(format!("kernel function {name} not loaded")))
    }

    /// `out = a*x + y` over `n` elements.
    pub fn saxpy(
        &self,
        stream: &Arc<CudaStream>,
        a: f32,
        x: &DeviceTensor,
        y: &DeviceTensor,
        out: &mut DeviceTensor,
    ) -> Result<(), EngineError> {
        let (Some(xs), Some(ys), Some(os)) = (x.slice(), y.slice(), out.slice_mut()) else {
            return Ok(()); // empty
        };
        let n = x_len(x);
        let mut b = stream.launch_builder(self.get("saxpy")?);
        b.arg(&a).arg(xs).arg(ys).arg(os).arg(&n);
        // SAFETY: `saxpy.cu` takes (float, const float*, const float*,
        // float*, unsigned long long) and reads/writes `n` f32 elements of
        // each buffer; the shapes were checked to be `[n]` and f32.
        unsafe { b.launch(grid_1d(n)) }.map_err(|e| driver_error("launch saxpy", e))?;
        Ok(())
    }

    /// `out[0] = sum(x*y)`.
    pub fn dot(
        &self,
        stream: &Arc<CudaStream>,
        x: &DeviceTensor,
        y: &DeviceTensor,
        out: &mut DeviceTensor,
    ) -> Result<(), EngineError> {
        let (Some(xs), Some(ys), Some(os)) = (x.slice(), y.slice(), out.slice_mut()) else {
            return Ok(()); // n == 0: out stays 0.0
        };
        let n = x_len(x);
        let blocks = n.div_ceil(u64::from(BLOCK)).clamp(1, DOT_MAX_BLOCKS);
        let mut partial = stream
            .alloc_zeros::<f64>(blocks as usize)
            .map_err(|e| driver_error("allocate dot partials", e))?;
        let mut b = stream.launch_builder(self.get("dot_partial")?);
        b.arg(xs).arg(ys).arg(&mut partial).arg(&n);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `dot_partial(const float*, const float*, double*, unsigned
        // long long)` reads `n` f32 of x and y and writes one double per
        // block into `partial`, which has `blocks` elements.
        unsafe { b.launch(cfg) }.map_err(|e| driver_error("launch dot_partial", e))?;
        let count = blocks as u32;
        let mut b = stream.launch_builder(self.get("dot_finish")?);
        b.arg(&partial).arg(&count).arg(os);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `dot_finish(const double*, unsigned int, float*)` reads
        // `count` partials and writes out[0]; `out` holds one f32.
        unsafe { b.launch(cfg) }.map_err(|e| driver_error("launch dot_finish", e))?;
        Ok(())
    }

    /// `c[m,n] = a[m,k] @ b[k,n]`.
    pub fn matmul(
        &self,
        stream: &Arc<CudaStream>,
        a: &DeviceTensor,
        bm: &DeviceTensor,
        (m, k, n): (usize, usize, usize),
        out: &mut DeviceTensor,
    ) -> Result<(), EngineError> {
        let (Some(a_s), Some(b_s), Some(c_s)) = (a.slice(), bm.slice(), out.slice_mut()) else {
            return Ok(()); // an empty dimension: out is empty or all zeros
        };
        let dim = |v: usize, what: &str| {
            u32::try_from(v).map_err(|_| {
                EngineError::bad_call(format!(
                    "matmul: {what} = {v} is too large for the GPU kernel"
                ))
            })
        };
        let (m32, k32, n32) = (dim(m, "m")?, dim(k, "k")?, dim(n, "n")?);
        let rows = m32.div_ceil(MATMUL_TILE);
        if u64::from(rows) > MAX_GRID_Y {
            return Err(EngineError::bad_call(format!(
                "matmul: m = {m} rows is more than the GPU kernel's {} rows",
                MAX_GRID_Y * u64::from(MATMUL_TILE)
            )));
        }
        let cfg = LaunchConfig {
            grid_dim: (n32.div_ceil(MATMUL_TILE), rows, 1),
            block_dim: (MATMUL_TILE, MATMUL_TILE, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(self.get("matmul")?);
        b.arg(a_s).arg(b_s).arg(c_s).arg(&m32).arg(&k32).arg(&n32);
        // SAFETY: `matmul(const float*, const float*, float*, unsigned int
        // x3)` reads m*k and k*n f32 and writes m*n f32, guarded by bounds
        // checks; the buffers have exactly those shapes (checked).
        unsafe { b.launch(cfg) }.map_err(|e| driver_error("launch matmul", e))?;
        Ok(())
    }

    /// One diffusion step on an `h x w` grid.
    pub fn stencil2d(
        &self,
        stream: &Arc<CudaStream>,
        grid: &DeviceTensor,
        (h, w): (usize, usize),
        alpha: f32,
        out: &mut DeviceTensor,
    ) -> Result<(), EngineError> {
        let (Some(g), Some(o)) = (grid.slice(), out.slice_mut()) else {
            return Ok(());
        };
        let (h64, w64) = (h as u64, w as u64);
        let mut b = stream.launch_builder(self.get("stencil2d")?);
        b.arg(g).arg(o).arg(&h64).arg(&w64).arg(&alpha);
        // SAFETY: `stencil2d(const float*, float*, unsigned long long x2,
        // float)` reads and writes h*w f32; both buffers are `[h, w]` f32.
        unsafe { b.launch(grid_1d(h64 * w64)) }.map_err(|e| driver_error("launch stencil2d", e))?;
        Ok(())
    }

    /// Row-wise softmax of a `rows x cols` matrix.
    pub fn softmax(
        &self,
        stream: &Arc<CudaStream>,
        x: &DeviceTensor,
        (rows, cols): (usize, usize),
        out: &mut DeviceTensor,
    ) -> Result<(), EngineError> {
        let (Some(xs), Some(os)) = (x.slice(), out.slice_mut()) else {
            return Ok(());
        };
        let grid = u32::try_from(rows)
            .ok()
            .filter(|&r| r < i32::MAX as u32)
            .ok_or_else(|| EngineError::bad_call(format!("softmax: {rows} rows is too many")))?;
        let cols64 = cols as u64;
        let mut b = stream.launch_builder(self.get("softmax")?);
        b.arg(xs).arg(os).arg(&cols64);
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `softmax(const float*, float*, unsigned long long)` with
        // one block per row reads and writes rows*cols f32; both buffers are
        // `[rows, cols]` f32.
        unsafe { b.launch(cfg) }.map_err(|e| driver_error("launch softmax", e))?;
        Ok(())
    }
}

fn x_len(x: &DeviceTensor) -> u64 {
    x.shape().iter().product::<usize>() as u64
}

/// A grid-stride launch over `n` elements.
fn grid_1d(n: u64) -> LaunchConfig {
    let blocks = n.div_ceil(u64::from(BLOCK)).clamp(1, MAX_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

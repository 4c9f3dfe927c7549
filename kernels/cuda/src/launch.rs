//! The loaded kernels of one engine, and how a call of any declared kernel
//! is launched on them: the grid and block of each pass from the
//! declaration, the arguments by [`crate::convention`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use shared_state::{Bound, EngineError, KernelDecl};

use crate::availability::{driver_error, startup_error};
use crate::compile::CompiledKernel;
use crate::convention::{Layout, Value};

/// Most blocks in grid dimension x, and in y and z.
const MAX_GRID: [u64; 3] = [(1 << 31) - 1, 65_535, 65_535];

/// One implemented kernel: its argument layout and one function per pass.
pub struct LoadedKernel {
    pub layout: Layout,
    /// Inputs some pass may write in place ([`crate::written_inputs`]).
    pub written_inputs: Vec<usize>,
    functions: Vec<CudaFunction>,
}

/// Every implemented kernel, loaded into one context.
pub struct Kernels {
    pub kernels: BTreeMap<String, LoadedKernel>,
}

/// How long NVRTC took for each source file.
pub type CompileTimes = Vec<(String, Duration)>;

impl Kernels {
    /// Loads the compiled kernels' PTX into `ctx`.
    pub fn load(
        ctx: &Arc<CudaContext>,
        compiled: Vec<CompiledKernel>,
    ) -> Result<(Kernels, CompileTimes), EngineError> {
        let mut kernels = BTreeMap::new();
        let mut times = Vec::new();
        for c in compiled {
            times.push((c.path.clone(), c.elapsed));
            let module = ctx
                .load_module(c.ptx)
                .map_err(|e| startup_error(&format!("load the PTX of {}", c.path), e))?;
            let functions = c
                .functions
                .iter()
                .map(|name| {
                    module
                        .load_function(name)
                        .map_err(|e| startup_error(&format!("find kernel {name} in {}", c.path), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            kernels.insert(
                c.kernel,
                LoadedKernel {
                    layout: c.layout,
                    written_inputs: c.written_inputs,
                    functions,
                },
            );
        }
        Ok((Kernels { kernels }, times))
    }

    pub fn get(&self, kernel: &str) -> Option<&LoadedKernel> {
        self.kernels.get(kernel)
    }
}

/// One launch of a call: which pass, its grid and block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassLaunch {
    pub pass: usize,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

/// The launches of a call. A pass with an empty grid (an empty input) is
/// left out; a grid beyond the device's limits is a bad call naming the
/// pass.
pub fn plan(decl: &KernelDecl, bound: &Bound) -> Result<Vec<PassLaunch>, EngineError> {
    let name = &decl.name;
    let mut launches = Vec::new();
    for (i, pass) in decl.launch.passes.iter().enumerate() {
        let mut grid = [1u32; 3];
        for (axis, expr) in pass.workgroups.iter().enumerate() {
            let v = expr.eval(&bound.dims).map_err(|e| {
                EngineError::bad_call(format!(
                    "{name}: launch pass {i} ({}) workgroups: {e}",
                    pass.entry
                ))
            })?;
            if v > MAX_GRID[axis] {
                return Err(EngineError::bad_call(format!(
                    "{name}: launch pass {i} ({}) needs {v} blocks in dimension {axis} (`{expr}`); \
                     CUDA allows {}",
                    pass.entry, MAX_GRID[axis]
                )));
            }
            grid[axis] = v as u32;
        }
        if grid.contains(&0) {
            continue;
        }
        let mut block = [1u32; 3];
        block[..pass.group.len()].copy_from_slice(&pass.group);
        launches.push(PassLaunch {
            pass: i,
            grid: (grid[0], grid[1], grid[2]),
            block: (block[0], block[1], block[2]),
        });
    }
    Ok(launches)
}

impl LoadedKernel {
    /// Launches the passes on `stream` (queued, not waited for). `tensors`
    /// are the pointer arguments' device addresses in convention order (0:
    /// an empty tensor, a null pointer), `values` the scalars.
    pub fn launch(
        &self,
        kernel: &str,
        stream: &Arc<CudaStream>,
        tensors: &[u64],
        values: &[Value],
        launches: &[PassLaunch],
    ) -> Result<(), EngineError> {
        if tensors.len() != self.layout.storage.len() || values.len() != self.layout.fields.len() {
            return Err(EngineError::internal(format!(
                "{kernel}: {} tensors and {} scalars for {} and {}",
                tensors.len(),
                values.len(),
                self.layout.storage.len(),
                self.layout.fields.len()
            )));
        }
        for launch in launches {
            let function = &self.functions[launch.pass];
            let mut b = stream.launch_builder(function);
            for t in tensors {
                b.arg(t);
            }
            for v in values {
                match v {
                    Value::U32(x) => b.arg(x),
                    Value::F32(x) => b.arg(x),
                    Value::I32(x) => b.arg(x),
                };
            }
            let cfg = LaunchConfig {
                grid_dim: launch.grid,
                block_dim: launch.block,
                shared_mem_bytes: 0,
            };
            // SAFETY: the function was compiled from the kernel's source and
            // its parameters checked against the convention (a 64-bit
            // pointer per tensor, then 32-bit scalars, trailing ones
            // optional): every pointer is a live device buffer of the
            // declared dtype and shape (or null for an empty tensor, which
            // has no element to touch), so a kernel that stays within the
            // declared shapes touches only memory it was given.
            unsafe { b.launch(cfg) }
                .map_err(|e| driver_error(&format!("launch {kernel} pass {}", launch.pass), e))?;
        }
        Ok(())
    }
}

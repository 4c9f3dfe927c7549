//! Tests of the CUDA module: the backend conformance suite
//! (`kernels/conformance`, shared with the Vulkan module) through the
//! [`Cuda`] adapter, and what is CUDA's own (NVRTC and PTX specifics, the
//! PTX cache, the `device` option, timings, a stub driver). Those that need
//! NVRTC or a GPU print `TEST: skipped: ...` and pass when it is missing
//! (an `Unavailable` error), unless `KILN_REQUIRE_NVRTC=1` or
//! `KILN_REQUIRE_CUDA=1` says it must be there; any other error fails them.
//! Without a GPU only the compile-level tests run (NVRTC); the GPU machine
//! runs the rest through `scripts/gpu-check.sh`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use kernel_conformance::support::describe;
use kernel_conformance::{Backend, Cases, CreateFn, DotBound, Exactness, SaxpyText};
use shared_state::export::{CreateEngineFn, ProbeDevicesFn};
use shared_state::{EngineError, KernelSet, SourceFile};

use crate::availability;
use crate::compile;
use crate::engine::CudaEngine;

mod gpu;
mod handoff;
mod nvrtc_compile;
mod ptx_cache;
mod unavailable;

/// The CUDA module, as the conformance suite sees it.
pub struct Cuda;

/// The architecture the suite's compile-level tests compile for (H100/H200,
/// the lent GPU machines).
const ARCH: &str = "compute_90";

/// The suite's `split` kernel in CUDA: pointers, then the dims, then the
/// parameters in declaration order (the bool as an unsigned int). Rounded
/// multiply and add, as the test computes it.
const SPLIT_CU: &str = "extern \"C\" __global__ void split(const float* x, const float* bias,
                                 float* pos, float* neg, unsigned int rows, unsigned int cols,
                                 float scale, int shift, unsigned int absolute) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows * cols) {
        float v = __fadd_rn(x[i], bias[i % cols]);
        pos[i] = __fadd_rn(__fmul_rn(fmaxf(v, 0.0f), scale), (float)shift);
        float m = fminf(v, 0.0f);
        neg[i] = absolute != 0u ? fabsf(m) : m;
    }
}
";

/// Whether the dynamic loader's cache lists a `libcuda` (a driver installed
/// system-wide): then its absence cannot be staged with `LD_LIBRARY_PATH`.
fn system_driver_listed() -> bool {
    ["/sbin/ldconfig", "ldconfig"].iter().any(|ldconfig| {
        Command::new(ldconfig)
            .arg("-p")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so"))
    })
}

impl Backend for Cuda {
    type Engine = CudaEngine;

    const NAME: &'static str = "cuda";
    const SOURCES: &'static str = "kernels/*.cu";
    const REQUIRE_COMPILER: &'static [&'static str] = &["KILN_REQUIRE_NVRTC"];
    const API_PREFIX: &'static str = "CUDA ";
    const PARAM_TOO_LARGE: &'static str = "does not fit the kernel's int";
    // 0, 1, primes, and sizes around the block and grid-stride limits (the
    // grids are capped at 65535 blocks: 16_777_259 and 67_200_001 loop).
    const CASES: Cases = Cases {
        lengths: &[
            0,
            1,
            2,
            3,
            31,
            255,
            256,
            257,
            4097,
            65_537,
            1 << 20,
            16_777_259,
        ],
        // Rounded multiply, rounded add (`__fmul_rn`, `__fadd_rn`): the
        // reference's bits.
        saxpy: Exactness::BitForBit,
        dot: DotBound::OfResult(1e-6),
        matmul_m: &[0, 1, 2, 15, 16, 17, 33, 97],
        matmul_k: &[0, 1, 7, 16, 17, 64, 65, 300],
        matmul_n: &[0, 1, 13, 16, 64, 97],
        matmul_per_k: 2e-7,
        grid_sides: &[0, 1, 2, 15, 16, 17, 33, 97],
        wide_grids: &[(1, 5000), (3, 1_000_003), (1025, 1023)],
        stencil: Exactness::BitForBit,
        layer_norm_shapes: &[
            (0, 0),
            (3, 0),
            (1, 1),
            (2, 7),
            (4, 257),
            (7, 1031),
            (600, 13),
            (70_000, 3),
        ],
        layer_norm_tol: 1e-5,
        prefix_sum_exact: &[
            0, 1, 255, 1023, 1024, 1025, 65_537, 1_048_577, 16_777_259, 67_200_001,
        ],
        prefix_sum_rounded: &[],
        // 2^18 + 1 products wrap past 2^32 to 2^14.
        matmul_i8_long_k: &[65_535, (1 << 18) + 1],
    };
    const SAXPY: SaxpyText = SaxpyText {
        subtract: ("__fadd_rn(", "__fsub_rn("),
        broken: ("y[i]", "z[i]"),
    };
    const CREATE: CreateFn<CudaEngine> = CudaEngine::create;
    const CREATE_EXPORTED: CreateEngineFn = crate::kiln_create_engine;
    const PROBE: ProbeDevicesFn = crate::kiln_probe_devices;
    const SPLIT_SOURCE: &'static str = SPLIT_CU;

    fn compiler() -> Result<(), EngineError> {
        availability::require_nvrtc()
    }

    fn compile(
        kernels: &KernelSet,
        sources: &[SourceFile],
    ) -> Result<(Vec<String>, Vec<String>), EngineError> {
        let (compiled, undeclared) = compile::compile_all(kernels, sources, ARCH)?;
        Ok((compiled.into_iter().map(|c| c.kernel).collect(), undeclared))
    }

    /// NVRTC's log: `kernels/saxpy.cu(LINE): error: ...`.
    fn names_file_and_line(message: &str, path: &str, line: usize) -> bool {
        message.contains(&format!("{path}({line}): error"))
    }

    fn unavailable(err: &EngineError) -> String {
        if err.message.starts_with("no NVRTC") {
            format!("no NVRTC ({})", err.message)
        } else {
            format!("no CUDA device ({})", err.message)
        }
    }

    /// The dynamic loader pointed at an empty directory (cudarc finds no
    /// `libcuda.so.1`).
    fn without_a_driver(scratch: &Path) -> Result<Vec<(String, String)>, String> {
        if system_driver_listed() {
            return Err(
                "a CUDA driver is installed system-wide: cannot stage its absence".to_string(),
            );
        }
        Ok(vec![(
            "LD_LIBRARY_PATH".to_string(),
            scratch.display().to_string(),
        )])
    }

    fn check_without_a_driver(create: &EngineError, report: &BTreeMap<String, String>) {
        assert_eq!(create.message, "no CUDA driver: libcuda.so.1 not found");
        // NVRTC missing too (unless installed system-wide): the clear message.
        if report["nvrtc"] != "Ok(\"present\")" {
            assert_eq!(
                report["nvrtc"],
                "Err(Unavailable: no NVRTC: libnvrtc.so.13 not found (install the \
                 nvidia-cuda-nvrtc wheel, see scripts/install-nvrtc.sh))"
            );
        } else {
            println!("note: NVRTC is installed system-wide; its absence was not staged");
        }
    }

    /// Whether NVRTC is found, as well.
    fn child_report() -> Vec<(String, String)> {
        vec![(
            "nvrtc".to_string(),
            describe(availability::require_nvrtc().map(|()| "present")),
        )]
    }
}

/// The conformance suite on this module.
mod conformance {
    kernel_conformance::suite!(super::Cuda);
}

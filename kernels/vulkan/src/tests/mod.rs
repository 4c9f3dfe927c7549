//! In-process tests of the engine on a real Vulkan device (lavapipe where
//! there is no GPU): the backend conformance suite (`kernels/conformance`,
//! shared with the CUDA module) through the [`Vulkan`] adapter, and what is
//! Vulkan's own. Tests that need a device print
//! `TEST: skipped: no Vulkan device (<reason>)` and pass when there is none
//! (engine creation says `Unavailable`), unless `KILN_REQUIRE_VULKAN=1`,
//! where they fail; any other error fails them.

use std::collections::BTreeMap;
use std::path::Path;

use kernel_conformance::support::note;
use kernel_conformance::{Backend, Cases, CreateFn, DotBound, Exactness, SaxpyText};
use shared_state::export::{CreateEngineFn, ProbeDevicesFn};
use shared_state::{Engine, EngineError, KernelSet, SourceFile};

use crate::engine::VulkanEngine;
use crate::shaders;

mod device_choice;
mod drop_log;
mod pipeline_cache;
mod sources;
mod transfers;

/// The Vulkan module, as the conformance suite sees it.
pub struct Vulkan;

/// A driver manifest that does not exist.
const MISSING_ICD: &str = "/nonexistent/kiln-test/no_such_icd.json";

/// The suite's `split` kernel in WGSL: parameters in the uniform block after
/// the dims, in declaration order; the bool as a u32.
const SPLIT_WGSL: &str = "struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    shift: i32,
    absolute: u32,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> pos: array<f32>;
@group(0) @binding(3) var<storage, read_write> neg: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i < params.rows * params.cols {
        let v = x[i] + bias[i % params.cols];
        pos[i] = max(v, 0.0) * params.scale + f32(params.shift);
        var m = min(v, 0.0);
        if params.absolute != 0u {
            m = abs(m);
        }
        neg[i] = m;
    }
}
";

impl Backend for Vulkan {
    type Engine = VulkanEngine;

    const NAME: &'static str = "vulkan";
    const SOURCES: &'static str = "shaders/*.wgsl";
    // naga is compiled in: never absent.
    const REQUIRE_COMPILER: &'static [&'static str] = &[];
    const API_PREFIX: &'static str = "Vulkan 1.";
    const PARAM_TOO_LARGE: &'static str = "does not fit the shader's i32";
    // Workgroups of 256 for the 1-D shaders, 16x16 tiles for matmul,
    // 1024-element tiles and 1024-tile chunks (1024 * 1024) for the prefix
    // sum. The workgroup cap of the prefix sum's passes 1 and 3 (they then
    // loop over tiles) is beyond lavapipe's largest binding:
    // `sources::capped_workgroups_loop_over_the_rest` covers it.
    const CASES: Cases = Cases {
        lengths: &[0, 1, 2, 3, 7, 31, 255, 256, 257, 4097, 65_537, 1_000_003],
        // A fused multiply-add on the device may round once less.
        saxpy: Exactness::Within(1e-6),
        dot: DotBound::OfMagnitudes(1e-5),
        matmul_m: &[0, 1, 2, 13, 16, 17, 33],
        matmul_k: &[0, 1, 7, 16, 17, 65],
        matmul_n: &[0, 1, 5, 16, 31, 97],
        matmul_per_k: 1e-6,
        grid_sides: &[0, 1, 2, 5, 13, 16, 17, 31, 64, 97],
        wide_grids: &[],
        stencil: Exactness::Within(1e-6),
        layer_norm_shapes: kernel_conformance::kernels::ROWS,
        layer_norm_tol: 2e-5,
        prefix_sum_exact: &[
            0, 1, 2, 255, 256, 1023, 1024, 1025, 4097, 65_537, 1_048_575, 1_048_576, 1_048_577,
            3_000_017, 8_000_003,
        ],
        prefix_sum_rounded: &[1000, 300_007],
        // A matmul_i8 output cannot wrap on lavapipe: that needs k > 2^17,
        // and llvmpipe ends an invocation's loops after 65535 iterations.
        matmul_i8_long_k: &[65_535],
    };
    const SAXPY: SaxpyText = SaxpyText {
        subtract: ("a * x[i] + y[i]", "a * x[i] - y[i]"),
        broken: ("out[i] = a * x[i] + y[i];", "out[i] = a * x[i] + z;"),
    };
    const CREATE: CreateFn<VulkanEngine> = VulkanEngine::create;
    const CREATE_EXPORTED: CreateEngineFn = crate::kiln_create_engine;
    const PROBE: ProbeDevicesFn = crate::kiln_probe_devices;
    const SPLIT_SOURCE: &'static str = SPLIT_WGSL;

    fn compile(
        kernels: &KernelSet,
        sources: &[SourceFile],
    ) -> Result<(Vec<String>, Vec<String>), EngineError> {
        let (compiled, undeclared) = shaders::compile_all(kernels, sources)?;
        Ok((compiled.into_iter().map(|s| s.kernel).collect(), undeclared))
    }

    /// naga's first line: `shaders/saxpy.wgsl:LINE:COLUMN: error: ...`.
    fn names_file_and_line(message: &str, path: &str, line: usize) -> bool {
        let first = message.lines().next().unwrap_or("");
        first.starts_with(&format!("{path}:{line}:")) && first.contains("error:")
    }

    fn unavailable(err: &EngineError) -> String {
        format!("no Vulkan device ({})", err.message)
    }

    fn device_memory(engine: &dyn Engine) -> Option<(i64, i64)> {
        Some((
            note(engine, "device/allocations"),
            note(engine, "device/bytes"),
        ))
    }

    /// The loader pointed at a driver manifest that does not exist.
    fn without_a_driver(_scratch: &Path) -> Result<Vec<(String, String)>, String> {
        Ok([
            ("VK_ICD_FILENAMES", MISSING_ICD),
            ("VK_DRIVER_FILES", MISSING_ICD),
            ("VK_ADD_DRIVER_FILES", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
    }

    fn check_without_a_driver(create: &EngineError, _report: &BTreeMap<String, String>) {
        let no_loader = create.message.contains("libvulkan.so.1");
        if !no_loader {
            // The loader is there but finds no driver.
            assert!(
                create.message.contains("ERROR_INCOMPATIBLE_DRIVER"),
                "{create}"
            );
            assert!(
                create.message.contains(MISSING_ICD),
                "names the override: {create}"
            );
        }
    }
}

/// The conformance suite on this module.
mod conformance {
    kernel_conformance::suite!(super::Vulkan);
}

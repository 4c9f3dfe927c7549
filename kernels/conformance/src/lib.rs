//! The conformance suite of kiln's GPU kernel modules: one set of test
//! bodies that the Vulkan and the CUDA module both run, each through a
//! [`Backend`] adapter, instantiated as `#[test]`s in the module's own test
//! binary by [`suite!`] (so `cargo test -p kernel-cuda` and the binary that
//! `scripts/gpu-check.sh` carries to a GPU machine include them).
//!
//! What it checks of every backend: each declared kernel against the plain
//! reference (`kernel-reference`) at sizes that are not multiples of the
//! backend's workgroups, blocks or tiles ([`kernels`], [`low_precision`]);
//! resident buffers, `store_as` and the state handoff bit for bit
//! ([`state`]); kernels that come as a declaration plus a source file, edits
//! taking effect in the next engine, broken sources refused with file and
//! line, stubs and undeclared sources ([`sources`]); device probing and a
//! missing driver ([`devices`]). What is one backend's own (Vulkan's
//! pipeline cache and shader checks, CUDA's PTX cache and NVRTC specifics)
//! stays in that module.
//!
//! # Skipping
//!
//! A test that needs a device skips (prints `TEST: skipped: REASON` and
//! passes) only when creating the engine fails with
//! [`ErrorKind::Unavailable`](shared_state::ErrorKind::Unavailable): the
//! device, its driver or the backend's compiler is absent. Any other error
//! fails the test, and so does `Unavailable` when the backend's
//! `KILN_REQUIRE_<NAME>` variable is `1` (`KILN_REQUIRE_VULKAN`). Tests that only compile
//! sources skip only when [`Backend::compiler`] says the compiler is absent,
//! and fail instead when one of [`Backend::REQUIRE_COMPILER`] is `1`.

pub mod devices;
pub mod kernels;
pub mod low_precision;
pub mod sources;
pub mod state;
pub mod support;

use std::collections::BTreeMap;
use std::path::Path;

use shared_state::export::{CreateEngineFn, ProbeDevicesFn};
use shared_state::{Engine, EngineContext, EngineError, KernelSet, Snapshot, SourceFile};

/// A module's factory as its engine type has it
/// (`VulkanEngine::create`).
pub type CreateFn<E> =
    fn(EngineContext, Option<&mut Snapshot>) -> Result<(E, Vec<String>), EngineError>;

/// How close a backend's f32 result must be to the reference.
#[derive(Clone, Copy, Debug)]
pub enum Exactness {
    /// The same bits (the backend computes in the reference's order).
    BitForBit,
    /// `|got - want| <= tol * (1 + |want|)` element by element.
    Within(f32),
}

/// The bound on a dot product's error.
#[derive(Clone, Copy, Debug)]
pub enum DotBound {
    /// `|got - want| <= tol * (1 + |want|)`.
    OfResult(f32),
    /// `|got - want| <= tol * (1 + sum |x*y|)`: the scale of the rounding
    /// error of a sum in another order.
    OfMagnitudes(f32),
}

/// The sizes a backend is checked at (each chosen around its own workgroup,
/// block, tile and grid limits) and its tolerances.
#[derive(Clone, Copy, Debug)]
pub struct Cases {
    /// 1-D lengths (saxpy, dot): 0, 1, primes, around the block and grid
    /// limits.
    pub lengths: &'static [usize],
    pub saxpy: Exactness,
    pub dot: DotBound,
    /// matmul's m, k and n: every combination is checked.
    pub matmul_m: &'static [usize],
    pub matmul_k: &'static [usize],
    pub matmul_n: &'static [usize],
    /// matmul's tolerance is this times `k + 1`.
    pub matmul_per_k: f32,
    /// Sides of the 2-D grids (stencil2d and softmax: every h x w).
    pub grid_sides: &'static [usize],
    /// More grids, long or large ones.
    pub wide_grids: &'static [(usize, usize)],
    pub stencil: Exactness,
    /// layer_norm's (rows, cols).
    pub layer_norm_shapes: &'static [(usize, usize)],
    pub layer_norm_tol: f32,
    /// prefix_sum lengths with small integers (exact whatever the order).
    pub prefix_sum_exact: &'static [usize],
    /// prefix_sum lengths with real values (bounded by the running sum of
    /// |x|).
    pub prefix_sum_rounded: &'static [usize],
    /// matmul_i8 with m = n = 1 and this long a k, products of -128 * -128
    /// (wrapping in i32 past 2^17).
    pub matmul_i8_long_k: &'static [usize],
}

/// How the tests edit the backend's saxpy source (`out = a * x + y`, as
/// written in its language).
#[derive(Clone, Copy, Debug)]
pub struct SaxpyText {
    /// `(from, to)`: replaces `a * x + y` by `a * x - y`.
    pub subtract: (&'static str, &'static str),
    /// `(from, to)`: makes the line refer to an undeclared name `z`.
    pub broken: (&'static str, &'static str),
}

/// One GPU module, as the conformance suite sees it.
pub trait Backend: 'static {
    type Engine: Engine + 'static;

    /// The backend's name (`ModuleInfo::backend`, `Snapshot::backend`); the
    /// module is `kernels/NAME`, and `KILN_REQUIRE_NAME=1` (upper case)
    /// turns a missing device into a failure.
    const NAME: &'static str;
    /// Its kernel sources, relative to the module, as its `Cargo.toml`
    /// lists them (`[package.metadata.kiln] sources`): `shaders/*.wgsl`,
    /// the `*` standing for the kernel's name.
    const SOURCES: &'static str;
    /// The variables that turn a missing compiler into a failure.
    const REQUIRE_COMPILER: &'static [&'static str];
    /// How `DeviceInfo::api` starts (`Vulkan 1.`); its first word is in
    /// every device description.
    const API_PREFIX: &'static str;
    /// The error of an integer parameter too large for the kernel's type.
    const PARAM_TOO_LARGE: &'static str;
    const CASES: Cases;
    const SAXPY: SaxpyText;
    /// The kernel `split` of [`sources::SPLIT_DECL`] in the
    /// backend's language (two outputs; a float, an int and a bool
    /// parameter; two dims), computing exactly what its summary says in f32
    /// (no fused multiply-add).
    const SPLIT_SOURCE: &'static str;

    /// The module's factory, called directly.
    const CREATE: CreateFn<Self::Engine>;
    /// The module's exported factory (`kiln_create_engine`: panic guard and
    /// import report), as the host calls it.
    const CREATE_EXPORTED: CreateEngineFn;
    /// The module's exported `kiln_probe_devices`.
    const PROBE: ProbeDevicesFn;

    /// Whether the source compiler is here (`Unavailable` if not).
    fn compiler() -> Result<(), EngineError> {
        Ok(())
    }

    /// Compiles `sources` against `kernels` as engine creation does, with
    /// no device: the kernels compiled, in declaration order, and the
    /// sources that have no declaration.
    fn compile(
        kernels: &KernelSet,
        sources: &[SourceFile],
    ) -> Result<(Vec<String>, Vec<String>), EngineError>;

    /// Whether compile error `message` names `path` and `line` as the
    /// backend's compiler does.
    fn names_file_and_line(message: &str, path: &str, line: usize) -> bool;

    /// The skip reason for an `Unavailable` engine creation.
    fn unavailable(err: &EngineError) -> String {
        format!("no {} device ({})", Self::NAME, err.message)
    }

    /// Device memory in use `(allocations, bytes)`, where the backend counts
    /// it (calls must leave only the residents allocated).
    fn device_memory(_engine: &dyn Engine) -> Option<(i64, i64)> {
        None
    }

    /// The environment of a child process in which the backend finds no
    /// driver (`scratch` is an empty directory it may use), or why that
    /// cannot be staged here (the test then skips).
    fn without_a_driver(scratch: &Path) -> Result<Vec<(String, String)>, String>;

    /// Checks what such a child reported: `create` and `probe` (already
    /// checked to be the same `Unavailable` error) and the backend's own
    /// lines ([`Backend::child_report`]).
    fn check_without_a_driver(create: &EngineError, report: &BTreeMap<String, String>);

    /// More `(key, value)` lines the child of [`devices`] reports.
    fn child_report() -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The conformance suite as `#[test]`s of the calling module, for the
/// backend type given: `kernel_conformance::suite!(Vulkan);` in a module of
/// the kernel module's tests (its test binary then has them, under that
/// module's path).
#[macro_export]
macro_rules! suite {
    ($backend:ty) => {
        $crate::suite!(@tests $backend;
            kernels::saxpy_matches_the_reference,
            kernels::dot_matches_the_reference,
            kernels::matmul_matches_the_reference_for_every_shape,
            kernels::stencil2d_and_softmax_match_the_reference_on_every_grid,
            kernels::softmax_matches_the_reference_and_is_stable,
            kernels::layer_norm_matches_the_reference,
            kernels::prefix_sum_matches_the_reference_at_every_tile_boundary,
            kernels::bad_calls_are_clear_errors_and_leave_nothing_behind,
            low_precision::half_matmuls_match_the_reference_within_one_rounding,
            low_precision::softmax_bf16_matches_the_reference_on_odd_rows,
            low_precision::i8_kernels_are_exact_and_wrap,
            state::store_as_keeps_outputs_on_the_device_and_chains_calls,
            state::state_moves_to_the_next_engine_bit_for_bit,
            state::a_cpu_snapshot_imports_and_reports_what_it_drops,
            sources::every_source_compiles_and_fits_its_declaration,
            sources::a_stub_source_is_not_listed_until_its_stub_line_is_removed,
            sources::a_source_without_a_declaration_is_listed_apart,
            sources::a_broken_source_is_refused_naming_file_and_line,
            sources::a_new_kernel_is_a_declaration_and_a_source,
            sources::a_declared_kernel_without_a_source_is_not_listed_or_run,
            sources::an_edited_source_takes_effect_in_the_next_engine_with_the_state,
            devices::probe_lists_devices_or_says_why_none,
        );

        #[test]
        fn without_a_driver_probe_and_create_are_unavailable() {
            $crate::devices::without_a_driver_probe_and_create_are_unavailable::<$backend>(
                &$crate::support::test_path(module_path!(), "child_reports_probe_and_create"),
            );
        }

        #[test]
        #[ignore = "run in a child process by the tests that need it"]
        fn child_reports_probe_and_create() {
            $crate::devices::child_reports_probe_and_create::<$backend>();
        }
    };
    (@tests $backend:ty; $($group:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::$group::$test::<$backend>();
            }
        )*
    };
}

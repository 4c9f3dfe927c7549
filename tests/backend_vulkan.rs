//! The Vulkan module through the host: workloads replay on it and match the
//! CPU module, state survives swaps bit for bit, fifty swaps leak no device
//! memory and leave one library mapped, and with no driver the `kiln`
//! binary says so and exits non-zero.
//!
//! Tests that need a Vulkan device print `skipped: no Vulkan device (...)`
//! and pass when there is none, unless `KILN_REQUIRE_VULKAN=1` is set.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln::process::{mapped_files_under, rss_bytes};
use kiln::swap::version_files::read_declarations;
use kiln::workload::compare::{Tolerances, compare};
use kiln::workload::generate::workspace_bundled_workload as bundled_workload;
use kiln::workload::replay::{self, ReplayOptions, quick_timing};
use kiln::workload::timing::human_secs;
use kiln::workload::{GenSpec, Step, Workload, generate};
use kiln::{EngineHandle, EngineOptions, LoadedModule, ServedModule, StagingDir};
use kiln_e2e::dev_session::kiln_binary;
use kiln_e2e::*;
use shared_state::{Arg, Call, DType, KernelSet, Output, Scalar, Tensor};

const VULKAN: &str = "kernel-vulkan";
const CPU: &str = "kernel-cpu";

fn options() -> EngineOptions {
    EngineOptions {
        threads: 2,
        ..Default::default()
    }
}

/// The device tests of this file run one at a time: the RSS and device
/// memory figures of one must not move with the work of another.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this machine has a Vulkan device, found by loading the module
/// and running its probe (once per process). Without one, prints why and
/// returns false; with `KILN_REQUIRE_VULKAN=1` that is a failure instead.
fn vulkan_device_present() -> bool {
    vulkan_present()
}

/// The workspace's declarations.
fn declarations() -> KernelSet {
    let (decls, errors) = read_declarations(&workspace_root());
    assert!(errors.is_empty(), "declarations: {errors:?}");
    KernelSet::new(decls)
}

/// The workspace's bundled workload (from the declarations and
/// `kernels/workload.toml`).
fn default_workload() -> Workload {
    bundled_workload(&workspace_root()).expect("the bundled workload")
}

/// The workloads of the cross-backend check: the bundled one, and
/// generated ones at sizes that are not multiples of any workgroup size
/// (256 threads, 16x16 matmul tiles, 1024-element prefix-sum tiles), every
/// declared kernel included.
fn workloads() -> Vec<Workload> {
    let decls = declarations();
    let mut all = vec![default_workload()];
    for (kernel, dims) in [
        ("saxpy", "n=1"),
        ("saxpy", "n=255"),
        ("saxpy", "n=1000003"),
        ("dot", "n=1"),
        ("dot", "n=255"),
        ("dot", "n=1000003"),
        ("matmul", "m=17,k=33,n=65"),
        ("stencil2d", "h=31,w=47"),
        ("softmax", "rows=7,cols=1000"),
        ("layer_norm", "rows=7,cols=1000"),
        ("layer_norm", "rows=300,cols=257"),
        ("prefix_sum", "n=1"),
        ("prefix_sum", "n=1025"),
        ("prefix_sum", "n=1048577"),
        // f16, bf16, i8 (packed in 32-bit words on vulkan): odd lengths.
        ("matmul_f16", "m=17,k=33,n=65"),
        ("matmul_bf16", "m=31,k=9,n=19"),
        ("softmax_bf16", "rows=7,cols=1001"),
        ("dot_i8", "n=1000003"),
        ("matmul_i8", "m=13,k=257,n=11"),
    ] {
        let decl = decls
            .get(kernel)
            .unwrap_or_else(|| panic!("{kernel} is not declared"));
        let spec = GenSpec::new(kernel, GenSpec::parse_dims(dims).expect("dims"), 11, 2);
        all.push(generate(decl, &spec).unwrap_or_else(|e| panic!("generate {kernel} {dims}: {e}")));
    }
    all.push(mixed_workload(&decls));
    all
}

/// The bundled mixed-precision workload (`kernels/workloads/mixed.toml`),
/// over the declarations of the kernels it names.
fn mixed_workload(decls: &KernelSet) -> Workload {
    let spec = std::fs::read_to_string(workspace_root().join("kernels/workloads/mixed.toml"))
        .expect("kernels/workloads/mixed.toml");
    let names = [
        "matmul_f16",
        "matmul_bf16",
        "softmax_bf16",
        "dot_i8",
        "matmul_i8",
    ];
    let only = KernelSet::new(
        names
            .iter()
            .map(|n| decls.get(n).expect("declared").clone())
            .collect::<Vec<_>>(),
    );
    kiln::workload::generate::bundled_workload(&only, &spec).expect("the mixed workload")
}

/// A call's outputs: returned, or read back from the resident it stored.
fn outputs_of(handle: &EngineHandle, call: &Call) -> Vec<Tensor> {
    match handle
        .run(call.clone())
        .unwrap_or_else(|e| panic!("{} on {}: {e}", call.kernel, handle.label()))
    {
        Output::Value(t) => vec![t],
        Output::Values(ts) => ts,
        Output::Stored { name, .. } => {
            vec![handle.read_resident(&name).expect("read stored output")]
        }
    }
}

/// Dtypes and shapes of a call's arguments, residents looked up on
/// `handle`.
fn arg_shapes(handle: &EngineHandle, call: &Call) -> Vec<(DType, Vec<usize>)> {
    let residents: BTreeMap<String, (DType, Vec<usize>)> = handle
        .residents()
        .expect("residents")
        .into_iter()
        .map(|r| (r.name, (r.dtype, r.shape)))
        .collect();
    call.args
        .iter()
        .map(|a| match a {
            Arg::Tensor(t) => (t.dtype(), t.shape().to_vec()),
            Arg::Resident(n) => residents[n].clone(),
        })
        .collect()
}

#[test]
fn workloads_replay_on_vulkan_and_match_the_cpu_module() {
    let _serial = one_at_a_time();
    if !vulkan_device_present() {
        return;
    }
    let stage = staging("vulkan-vs-cpu");
    let (vk, _) = EngineHandle::start(Arc::new(load_fresh(&stage, VULKAN)), &options(), None)
        .expect("start the vulkan engine");
    let (cpu, _) = EngineHandle::start(Arc::new(load_fresh(&stage, CPU)), &options(), None)
        .expect("start the cpu engine");
    let info = vk.info().unwrap();
    println!("vulkan engine on {}", info.device);
    let decls = declarations();
    // Every declared kernel has a shader: none is skipped on vulkan.
    let declared: Vec<&str> = decls.names().collect();
    assert_eq!(info.kernels, declared, "kernels implemented on vulkan");
    let tolerances = Tolerances::default();
    let correctness_only = ReplayOptions {
        timing: None,
        ..ReplayOptions::default()
    };
    for workload in workloads() {
        // 1. Replay against the workload's expected outputs.
        replay::load_state(&vk, &workload).expect("load the workload's buffers");
        let report = replay::replay(&vk, &workload, &correctness_only, None);
        assert!(
            report.passed(),
            "{} on vulkan:\n{}",
            workload.name,
            report.table()
        );
        assert_eq!(report.calls.len(), workload.call_count());

        // 2. Every call on both engines, from the same freshly loaded state.
        for step in &workload.steps {
            if let Step::Load { name, tensor } = step {
                vk.put_resident(name, tensor.clone()).unwrap();
                cpu.put_resident(name, tensor.clone()).unwrap();
            }
        }
        for (i, (call, _)) in workload.calls().enumerate() {
            let decl = decls.get(&call.kernel).expect("declared");
            let shapes = arg_shapes(&cpu, call);
            let view: Vec<(DType, &[usize])> =
                shapes.iter().map(|(d, s)| (*d, s.as_slice())).collect();
            let bound = decl.bind(&view, &call.params).expect("the call fits");
            let want = outputs_of(&cpu, call);
            let got = outputs_of(&vk, call);
            assert_eq!(want.len(), got.len(), "{} call {i}: outputs", workload.name);
            for (o, (want, got)) in want.iter().zip(&got).enumerate() {
                let tol = tolerances.for_call(&call.kernel, Some(decl), &bound.dims, want.dtype());
                let cmp = compare(want, got, &tol);
                assert!(
                    cmp.passed(),
                    "{} call {i} ({}) output {o}: vulkan vs cpu: {}",
                    workload.name,
                    call.kernel,
                    cmp.summary()
                );
                println!(
                    "{:<30} call {i} {:<10} vulkan vs cpu: {}",
                    workload.name,
                    call.kernel,
                    cmp.summary()
                );
            }
        }
    }

    // Timings of the bundled workload on both, for the record (not asserted).
    let workload = default_workload();
    let timed = ReplayOptions {
        timing: Some(quick_timing()),
        ..ReplayOptions::default()
    };
    replay::load_state(&cpu, &workload).unwrap();
    replay::load_state(&vk, &workload).unwrap();
    let on_cpu = replay::replay(&cpu, &workload, &timed, None);
    let on_vk = replay::replay(&vk, &workload, &timed, None);
    assert!(on_cpu.passed() && on_vk.passed());
    println!("default workload, median per call (cpu 2 threads vs vulkan):");
    for (c, v) in on_cpu.calls.iter().zip(&on_vk.calls) {
        let (cm, vm) = (
            c.stats.as_ref().map_or(f64::NAN, |s| s.median),
            v.stats.as_ref().map_or(f64::NAN, |s| s.median),
        );
        println!(
            "  {:<10} cpu {:>10}  vulkan {:>10}  ({:.1}x)",
            c.key,
            human_secs(cm),
            human_secs(vm),
            vm / cm
        );
    }
}

#[test]
fn a_vulkan_swap_keeps_device_state_bit_for_bit() {
    let _serial = one_at_a_time();
    if !vulkan_device_present() {
        return;
    }
    let stage = staging("vulkan-swap-bits");
    let (served, _) = ServedModule::start(load_fresh(&stage, VULKAN), options(), None).unwrap();
    // 16 MiB of arbitrary bit patterns (NaN payloads, infinities, denormals).
    let big = Tensor::from_f32(&[2048, 2048], random_bits(2048 * 2048, 21));
    served.handle().put_resident("big", big.clone()).unwrap();
    // A resident computed on the device, and one of another dtype.
    let grid = Tensor::from_f32(
        &[37, 29],
        random_bits(37 * 29, 22)
            .iter()
            .map(|v| {
                if v.is_finite() {
                    v.clamp(-1.0, 1.0)
                } else {
                    0.5
                }
            })
            .collect(),
    );
    served.handle().put_resident("grid", grid).unwrap();
    for _ in 0..3 {
        served
            .call(Call::new("stencil2d").resident("grid").store_as("grid"))
            .unwrap();
    }
    let bytes: Vec<u8> = (0..1001u32).map(|i| (i * 37 % 251) as u8).collect();
    let raw = Tensor::new(vec![7, 143], shared_state::Buffer::U8(bytes.into())).unwrap();
    served.handle().put_resident("raw", raw.clone()).unwrap();
    let before = served.handle().export_state().unwrap();
    let grid_before = served.handle().read_resident("grid").unwrap();

    let swap = served.swap(load_fresh(&stage, VULKAN)).unwrap();
    assert_eq!(
        (swap.from.as_str(), swap.to.as_str()),
        ("kernel-vulkan-v1", "kernel-vulkan-v2")
    );
    assert!(swap.bytes >= 16 << 20, "{}", swap.bytes);
    assert!(swap.import.is_lossless(), "{}", swap.import);
    println!(
        "vulkan handoff of {} bytes: export {:.1} ms, import {:.1} ms, paused {:.1} ms",
        swap.bytes, swap.export_ms, swap.import_ms, swap.paused_ms
    );

    let after = served.handle().export_state().unwrap();
    assert!(after.bit_eq(&before), "state changed across the swap");
    assert!(served.handle().read_resident("big").unwrap().bit_eq(&big));
    assert!(served.handle().read_resident("raw").unwrap().bit_eq(&raw));
    assert!(
        served
            .handle()
            .read_resident("grid")
            .unwrap()
            .bit_eq(&grid_before)
    );
    // The counter moved over: 3 stencil calls before the swap, 1 after.
    served
        .call(Call::new("stencil2d").resident("grid").store_as("grid"))
        .unwrap();
    let notes = served.handle().info().unwrap().notes;
    assert_eq!(notes["counters/calls/stencil2d"], Scalar::I64(4));
}

/// Set in the child process that runs the fifty-swap test (see
/// [`in_a_child_with_one_malloc_arena`]).
const CHILD_ENV: &str = "KILN_E2E_ONE_ARENA_CHILD";

/// Runs the calling test again in a child process of this test binary with
/// glibc limited to one malloc arena, and checks that it passed; returns
/// true in that child, where the test body should run.
///
/// Why: every version runs on a fresh engine thread, and each new malloc
/// arena such a thread happened to get kept ~20 MiB resident (even after
/// `malloc_trim`): steps at random swaps that stopped once glibc's 8 arenas
/// per core were all made (+127 MiB over 200 swaps, flat for the last 66).
/// With one arena RSS stayed within 1 MiB over 200 swaps. A leak grows
/// whatever arena it is in, so this hides none. It must be set when the
/// process starts (`mallopt` later leaves the arenas other tests made).
fn in_a_child_with_one_malloc_arena(test: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return true;
    }
    let out = Command::new(std::env::current_exe().expect("test executable"))
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "{test} failed in its child process");
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run in its child process"
    );
    false
}

/// This process's resident set after handing the allocator's free memory
/// back to the system, so it counts live memory.
fn live_rss() -> u64 {
    // SAFETY: `malloc_trim` only returns free memory of glibc's heaps to the
    // system; it has no preconditions and touches no live allocation.
    unsafe { libc::malloc_trim(0) };
    rss_bytes()
}

/// Live device allocations the module reports: (count, bytes).
fn device_allocations(handle: &EngineHandle) -> (i64, i64) {
    let notes = handle.info().unwrap().notes;
    let get = |key: &str| match notes.get(key) {
        Some(Scalar::I64(v)) => *v,
        other => panic!("note {key} missing or not an integer: {other:?}"),
    };
    (get("device/allocations"), get("device/bytes"))
}

#[test]
fn fifty_vulkan_swaps_leak_no_device_memory_and_unmap_old_versions() {
    if !in_a_child_with_one_malloc_arena(
        "fifty_vulkan_swaps_leak_no_device_memory_and_unmap_old_versions",
    ) {
        return;
    }
    if !vulkan_device_present() {
        return;
    }
    const SWAPS: usize = 50;
    let stage = staging("vulkan-fifty-swaps");
    let artifact = module_artifact(VULKAN);
    let open = |stage: &StagingDir| LoadedModule::open(stage.stage(VULKAN, &artifact).unwrap());
    let (served, _) = ServedModule::start(open(&stage).unwrap(), options(), None).unwrap();
    let x = Tensor::from_f32(
        &[1 << 20],
        (0..1 << 20).map(|i| (i % 1000) as f32 * 1e-3).collect(),
    );
    served.handle().put_resident("x", x).unwrap();
    served
        .handle()
        .put_resident("grid", Tensor::from_f32(&[64, 80], vec![0.25; 64 * 80]))
        .unwrap();
    // What the residents account for: one allocation each, at least their
    // bytes (rounded up to 4), and at most one 4 KiB page more each.
    let residents = served.handle().residents().unwrap();
    let data_bytes: i64 = residents
        .iter()
        .map(|r| {
            let n: usize = r.shape.iter().product();
            ((n * r.dtype.size()).max(4).next_multiple_of(4)) as i64
        })
        .sum();
    let (count0, bytes0) = device_allocations(&served.handle());
    assert_eq!(count0, residents.len() as i64);
    assert!(
        bytes0 >= data_bytes && bytes0 <= data_bytes + 4096 * residents.len() as i64,
        "device bytes {bytes0} for residents of {data_bytes} bytes"
    );

    let mut rss_after_fifth = 0;
    for i in 1..=SWAPS {
        // Calls that make and free temporary device buffers, and replace a
        // resident with a computed one.
        served
            .call(
                Call::new("saxpy")
                    .resident("x")
                    .arg(Tensor::from_f32(&[1 << 20], vec![1.0; 1 << 20])),
            )
            .unwrap();
        served
            .call(Call::new("stencil2d").resident("grid").store_as("grid"))
            .unwrap();
        assert_eq!(
            device_allocations(&served.handle()),
            (count0, bytes0),
            "before swap {i}: calls left device buffers behind"
        );
        let report = served
            .swap(open(&stage).unwrap())
            .unwrap_or_else(|e| panic!("swap {i}: {e}"));
        assert!(report.import.is_lossless(), "swap {i}: {}", report.import);
        let (count, bytes) = device_allocations(&served.handle());
        assert_eq!(
            (count, bytes),
            (count0, bytes0),
            "swap {i}: device allocations differ from what the residents account for"
        );
        let mapped = mapped_files_under(stage.path(), None);
        assert!(
            mapped.iter().filter(|m| m.executable).count() <= 1,
            "swap {i}: {mapped:?}"
        );
        if i == 5 {
            rss_after_fifth = live_rss();
        }
    }
    let rss_end = live_rss();
    println!(
        "RSS after swap 5: {:.1} MiB, after swap {SWAPS}: {:.1} MiB",
        rss_after_fifth as f64 / 1048576.0,
        rss_end as f64 / 1048576.0
    );
    // Each version holds ~4.3 MiB of residents and exports them in every
    // handoff: a leak of those, or of a per-version instance and device,
    // would grow RSS by hundreds of MiB over 45 swaps.
    assert!(
        rss_end <= rss_after_fifth + (8 << 20),
        "RSS grew from {rss_after_fifth} to {rss_end} bytes over {} swaps",
        SWAPS - 5
    );
    assert_eq!(served.label(), format!("kernel-vulkan-v{}", SWAPS + 1));
    let notes = served.handle().info().unwrap().notes;
    assert_eq!(notes["counters/calls/saxpy"], Scalar::I64(SWAPS as i64));
    let mapped = mapped_files_under(stage.path(), None);
    assert_eq!(
        mapped.iter().filter(|m| m.executable).count(),
        1,
        "{mapped:?}"
    );
    drop(served);
    assert!(
        !mapped_files_under(stage.path(), None)
            .iter()
            .any(|m| m.executable),
        "a vulkan module stays mapped after the last version is dropped"
    );
}

/// Runs the real `kiln` with no Vulkan driver visible to the loader.
fn kiln_without_icd(args: &[&str]) -> (bool, String, String) {
    let missing = "/nonexistent/kiln-e2e/no_icd.json";
    let out = Command::new(kiln_binary())
        .args(args)
        .current_dir(workspace_root())
        .env("VK_ICD_FILENAMES", missing)
        .env("VK_DRIVER_FILES", missing)
        .env("RUST_BACKTRACE", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kiln runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_panic_noise(stderr: &str) {
    for noise in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "fatal runtime",
    ] {
        assert!(!stderr.contains(noise), "{noise:?} in stderr:\n{stderr}");
    }
}

#[test]
fn with_no_vulkan_driver_the_binary_says_so_and_fails() {
    // Make sure the module is built before the binary is asked to build it.
    module_artifact(VULKAN);
    let (ok, stdout, stderr) = kiln_without_icd(&["backends", "vulkan"]);
    println!("kiln backends vulkan:\n{stdout}{stderr}");
    assert!(!ok, "kiln backends vulkan succeeded with no driver");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("vulkan"))
        .unwrap_or_else(|| panic!("no vulkan line in:\n{stdout}"));
    assert!(line.contains("unavailable"), "{line}");
    assert!(
        line.contains("no Vulkan driver") || line.contains("no Vulkan loader"),
        "{line}"
    );
    if line.contains("no Vulkan driver") {
        // The message names the override that hid the drivers.
        assert!(line.contains("VK_DRIVER_FILES="), "{line}");
    }
    assert!(stderr.contains("cannot run here: vulkan"), "{stderr}");
    assert_no_panic_noise(&stderr);
    // Standard output is the answer alone: the build's log lines (`0.163s
    // built kernel-vulkan ...`) go to standard error.
    let logged = |l: &str| {
        l.split_whitespace()
            .next()
            .and_then(|t| t.strip_suffix('s'))
            .is_some_and(|t| t.parse::<f64>().is_ok())
    };
    assert!(
        !stdout.lines().any(logged),
        "log lines on stdout:
{stdout}"
    );
    assert!(
        stderr.lines().any(logged),
        "no log lines on stderr:
{stderr}"
    );

    let (ok, stdout, stderr) = kiln_without_icd(&["dev", "--backend", "vulkan", "--no-replay"]);
    println!("kiln dev --backend vulkan:\n{stdout}{stderr}");
    assert!(!ok, "kiln dev --backend vulkan succeeded with no driver");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("kiln: "), "last line: {last}");
    assert!(last.contains("kernel-vulkan"), "{last}");
    assert!(
        last.contains("no Vulkan driver") || last.contains("no Vulkan loader"),
        "{last}"
    );
    assert!(!stderr.contains("serving on"), "{stderr}");
    assert_no_panic_noise(&stderr);
}

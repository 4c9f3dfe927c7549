//! Switching backends with the state, at the level `kiln dev` drives it
//! (`IsolatedEngine`: a real worker process, real modules): cpu -> vulkan
//! (lavapipe here) -> cpu keeps every resident buffer bit for bit, the
//! device buffers included (the Vulkan engine holds its residents on the
//! device and downloads them to export); what the other backend does not
//! take is listed, not silently dropped; the workload replays on the new
//! backend and passes against another backend's module.
//!
//! Run with `cargo test --release -p kiln-e2e --test switch_backend`.

use std::collections::BTreeMap;

use kiln::isolation::isolated::{IsolatedEngine, IsolationOptions};
use kiln::isolation::worker_process::SpawnOptions;
use kiln::logging::LogFormat;
use kiln::swap::snapshot_file;
use kiln::worker::protocol::{StagedWire, StateSource, WorkerConfig};
use kiln::workload::{Workload, write};
use kiln_e2e::dev_session::kiln_binary;
use kiln_e2e::{module_artifact, staging, workspace_root};
use shared_state::{Buffer, Call, Section, Snapshot, Tensor};

const CPU: &str = "kernel-cpu";
const VULKAN: &str = "kernel-vulkan";

/// Arbitrary f32 bit patterns: NaN payloads, infinities, denormals.
fn random_bits(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f32::from_bits((x >> 16) as u32)
        })
        .collect()
}

/// The `resident/` sections of the engine's state now (through a
/// checkpoint, as `kiln dev` keeps it).
fn residents(engine: &mut IsolatedEngine, dir: &std::path::Path) -> BTreeMap<String, Tensor> {
    engine.take_checkpoint().expect("checkpoint");
    let file = dir.join("state.snapshot");
    engine.write_state_file(&file).expect("state file");
    let snapshot: Snapshot = snapshot_file::load(&file).expect("read state file");
    snapshot
        .sections()
        .filter_map(
            |(name, section)| match (name.strip_prefix("resident/"), section) {
                (Some(n), Section::Tensor(t)) => Some((n.to_string(), t.clone())),
                _ => None,
            },
        )
        .collect()
}

fn assert_bit_equal(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, when: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{when}: resident names"
    );
    for (name, t) in a {
        assert!(t.bit_eq(&b[name]), "{when}: resident {name} changed");
    }
}

#[test]
fn cpu_to_vulkan_to_cpu_keeps_every_resident_bit_for_bit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = 100_003; // not a multiple of any workgroup size
    let mut workload = Workload::new("switch");
    workload.load("x", Tensor::from_f32(&[n], random_bits(n, 1)));
    let finite: Vec<f32> = random_bits(n, 2)
        .into_iter()
        .map(|v| {
            if v.is_finite() {
                v.clamp(-1e3, 1e3)
            } else {
                0.25
            }
        })
        .collect();
    workload.load("xs", Tensor::from_f32(&[n], finite.clone()));
    workload.load(
        "ys",
        Tensor::from_f32(&[n], finite.iter().map(|v| v * 0.5).collect()),
    );
    let bytes: Vec<u8> = (0..1001u32).map(|i| (i * 37 % 251) as u8).collect();
    workload.load(
        "raw",
        Tensor::new(vec![7, 143], Buffer::U8(bytes.into())).expect("u8"),
    );
    // A call the replay checks on each backend (expected outputs from the
    // cpu module, run on the same inputs in the worker).
    workload.call(Call::new("saxpy").resident("xs").resident("ys"), None);
    let file = dir.path().join("switch.kiln");
    write(&workload, &file).expect("write workload");

    let root = workspace_root();
    let stage = staging("switch-backend").for_workspace(&root);
    let cpu_reference = stage.stage(CPU, &module_artifact(CPU)).expect("stage");
    let options = IsolationOptions {
        spawn: SpawnOptions {
            program: Some(kiln_binary()),
            log_format: LogFormat::Human,
            forward_output: true,
            memory_limit: None,
            ..SpawnOptions::default()
        },
        worker: WorkerConfig {
            workload: Some(file),
            timing: false,
            workspace: Some(root.clone()),
            cross_reference: Some(StagedWire::from(&cpu_reference)),
            ..WorkerConfig::default()
        },
        call_timeout: None,
    };
    let mut engine = IsolatedEngine::new(options, None).expect("shared memory");
    let cpu = stage.stage(CPU, &module_artifact(CPU)).expect("stage cpu");
    engine.start(&cpu, StateSource::Empty).expect("cpu worker");
    assert_eq!(engine.load_workload_state().expect("load"), 4);
    let before = residents(&mut engine, dir.path());
    assert_eq!(before.len(), 4);
    assert!(engine.replay(None).expect("replay on cpu").passed());

    // cpu -> vulkan: every resident moves to the device.
    let vulkan = stage
        .stage(VULKAN, &module_artifact(VULKAN))
        .expect("stage vulkan");
    // Skipped only where there is no Vulkan device; any other error fails.
    if !kiln_e2e::vulkan_present() {
        return;
    }
    let swapped = engine.swap(&vulkan, false).expect("cpu -> vulkan");
    assert_eq!(swapped.from, cpu.label);
    assert_eq!(swapped.to, vulkan.label);
    assert!(swapped.bytes >= 3 * 4 * n, "{}", swapped.bytes);
    // The CPU module's tuning value is listed as not carried over.
    assert!(
        swapped.dropped.iter().any(|s| s.starts_with("tuning/")),
        "cpu-only tuning state must be listed: {:?}",
        swapped.dropped
    );
    assert!(
        swapped.dropped.iter().all(|s| !s.starts_with("resident/")),
        "{:?}",
        swapped.dropped
    );
    let on_vulkan = residents(&mut engine, dir.path());
    assert_bit_equal(&before, &on_vulkan, "cpu -> vulkan");
    let replay = engine.replay(None).expect("replay on vulkan");
    assert!(replay.passed(), "{:?}", replay.first_failure);
    assert!(replay.label().starts_with(VULKAN), "{}", replay.label());

    // vulkan -> cpu: back from the device, and Vulkan's pipeline cache is
    // listed as what the CPU module does not take.
    let cpu_again = stage.stage(CPU, &module_artifact(CPU)).expect("stage cpu");
    let back = engine.swap(&cpu_again, false).expect("back to cpu");
    assert_eq!(back.from, vulkan.label);
    assert!(
        back.dropped.iter().any(|s| s.starts_with("cache/vulkan/")),
        "the Vulkan cache sections must be listed: {:?}",
        back.dropped
    );
    let after = residents(&mut engine, dir.path());
    assert_bit_equal(&before, &after, "cpu -> vulkan -> cpu");
    let replay = engine.replay(None).expect("replay on cpu again");
    assert!(replay.passed(), "{:?}", replay.first_failure);
    engine.stop_worker(std::time::Duration::from_secs(2));
}

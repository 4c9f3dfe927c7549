//! Switching backends in a running `kiln dev`, end to end through the real
//! binary:
//!
//! - `--backend auto` on a machine with no GPU (lavapipe only, no CUDA
//!   driver) serves the CPU module and says why not vulkan and cuda;
//! - `kiln ctl switch vulkan` then `kiln ctl switch cpu` moves the running
//!   state to lavapipe and back: every resident buffer is bit for bit the
//!   workload's; what the other backend does not take is in the answer; the
//!   workload replays on each backend; a save after the switch swaps the
//!   new backend's module; an unknown backend and one that
//!   cannot run here (cuda, no driver) are refused with the reason and the
//!   session goes on.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_switch`.

use kiln::history::History;
use kiln::swap::snapshot_file;
use kiln::workload::Step;
use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, EventKind, WorkspaceCopy, events, kiln_binary, kiln_ctl,
    save_in_place,
};
use shared_state::Section;
use std::process::Command;

/// What `kiln probe-devices` says here (the probe `auto` uses).
fn probe() -> serde_json::Value {
    let out = Command::new(kiln_binary())
        .arg("probe-devices")
        .output()
        .expect("run kiln probe-devices");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("probe JSON")
}

#[test]
fn auto_serves_cpu_without_a_gpu_and_says_why_not_the_others() {
    let probe = probe();
    let no_cuda = probe["cuda"].get("Err").is_some();
    let vulkan_gpu = probe["vulkan"]["Ok"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| d["kind"] != "Cpu" && d["kind"] != "Other"));
    let copy = WorkspaceCopy::new();
    // Started means serving: its events up to the watcher are all here.
    let session = DevSession::start(&copy, &["--backend", "auto"]);
    let chosen = session.named_since(0, EventKind::BackendChosen);
    assert_eq!(chosen.len(), 1, "one backend_chosen event");
    let chosen = chosen[0].clone();
    let line = chosen.message().to_string();
    println!("{line}");
    let started = session.named_since(0, EventKind::WorkerStarted);
    let served = started
        .first()
        .and_then(|e| e.module())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        format!(
            "kernel-{}",
            chosen.fields::<events::BackendChosen>().backend
        ),
        served,
        "the log says what it chose, and that is what serves"
    );
    if no_cuda && !vulkan_gpu {
        // This machine: lavapipe at most, no CUDA driver.
        assert_eq!(served, "kernel-cpu", "{line}");
        assert!(line.contains("not cuda: "), "{line}");
        assert!(line.contains("not vulkan: "), "{line}");
        if probe["vulkan"]["Ok"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
        {
            assert!(
                line.contains("slower than the CPU module"),
                "lavapipe is never the automatic choice: {line}"
            );
        }
    } else {
        assert_ne!(served, "kernel-cpu", "a GPU is here: {line}");
        assert!(line.contains("not cpu: "), "{line}");
    }
    session.stop();
}

#[test]
fn switch_cpu_vulkan_cpu_keeps_every_resident_bit_for_bit() {
    let copy = WorkspaceCopy::new();
    let state = copy.root().join("switch.snapshot");
    let state_arg = state.display().to_string();
    let mut session = DevSession::start(&copy, &["--state", &state_arg]);

    // Refusals first: the session goes on serving cpu.
    let (ok, answer) = kiln_ctl(&copy, &["switch", "no-such-backend"]);
    assert!(!ok && answer.contains("unknown backend"), "{answer}");
    let cuda_usable = probe()["cuda"]["Ok"]
        .as_array()
        .is_some_and(|d| !d.is_empty());
    if !cuda_usable {
        let (ok, answer) = kiln_ctl(&copy, &["switch", "cuda"]);
        assert!(!ok, "{answer}");
        assert!(answer.contains("cuda cannot run here"), "{answer}");
        assert!(answer.contains("keeps serving"), "{answer}");
    }
    let (ok, answer) = kiln_ctl(&copy, &["switch", "cpu"]);
    assert!(!ok && answer.contains("already serves"), "{answer}");

    // cpu -> vulkan: the state moves to the device; the CPU-only tuning
    // value is named as not carried over; the workload replays there.
    let mark = session.mark();
    let (ok, answer) = kiln_ctl(&copy, &["switch", "vulkan"]);
    assert!(ok, "{answer}");
    assert!(answer.contains("switched kernel-cpu-v"), "{answer}");
    assert!(
        answer.contains("not carried over: ") && answer.contains("tuning/"),
        "{answer}"
    );
    let switched = session.wait_event(EventKind::Switched, BUILD_DEADLINE);
    assert_eq!(
        switched.module(),
        Some("kernel-vulkan"),
        "{}",
        switched.line
    );
    let replays = session.wait_replay(BUILD_DEADLINE);
    assert!(
        replays.iter().all(|e| e.fields::<events::Replay>().pass),
        "{replays:?}"
    );
    assert!(
        session
            .named_since(mark, EventKind::ReplayFailed)
            .is_empty()
    );

    // Saves now go to the served module: a shader edit re-stages vulkan.
    let wgsl = copy.root().join("kernels/vulkan/shaders/saxpy.wgsl");
    let shader = copy.read("kernels/vulkan/shaders/saxpy.wgsl");
    save_in_place(&wgsl, &format!("{shader}\n// edited after the switch\n"));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(swapped.module(), Some("kernel-vulkan"), "{}", swapped.line);
    let replays = session.wait_replay(BUILD_DEADLINE);
    assert!(
        replays.iter().all(|e| e.fields::<events::Replay>().pass),
        "{replays:?}"
    );

    // vulkan -> cpu: Vulkan's cache sections are named, not carried over.
    let (ok, answer) = kiln_ctl(&copy, &["switch", "cpu"]);
    assert!(ok, "{answer}");
    assert!(answer.contains("cache/vulkan/"), "{answer}");
    session.wait_replay(BUILD_DEADLINE);
    let stopped = session.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    // The history groups versions by backend: cpu's file has both stints
    // on cpu (and no vulkan version), vulkan's has its own.
    let history_dir = copy.root().join("target/kiln/history");
    let cpu = History::load(&history_dir.join("kernel-cpu.json")).expect("cpu history");
    let vulkan = History::load(&history_dir.join("kernel-vulkan.json")).expect("vulkan history");
    assert_eq!(vulkan.backend, "vulkan");
    assert!(
        vulkan.versions.len() >= 2,
        "switch + shader save: {vulkan:?}"
    );
    assert!(
        vulkan
            .versions
            .iter()
            .all(|v| v.label.starts_with("kernel-vulkan-"))
    );
    assert!(cpu.versions.len() >= 2, "start + switch back: {cpu:?}");
    assert!(
        cpu.versions
            .iter()
            .all(|v| v.label.starts_with("kernel-cpu-"))
    );

    // Every resident is the workload's, bit for bit, after two handoffs
    // through the device (replays never write residents).
    let snapshot = snapshot_file::load(&state).expect("state file");
    assert_eq!(snapshot.module, "kernel-cpu");
    let workload = kiln::workload::generate::workspace_bundled_workload(copy.root())
        .expect("bundled workload");
    let mut checked = 0;
    for step in &workload.steps {
        if let Step::Load { name, tensor } = step {
            match snapshot.get(&format!("resident/{name}")) {
                Some(Section::Tensor(t)) => assert!(t.bit_eq(tensor), "resident {name} changed"),
                other => panic!("resident {name}: {other:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "the bundled workload has resident buffers");
}

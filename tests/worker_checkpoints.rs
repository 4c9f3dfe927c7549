//! A checkpoint of state that has not changed since the last one copies
//! nothing: the worker marks what it last wrote (large buffers by identity,
//! `shared_state::Mark`; small sections by value) and, when the state is
//! still exactly that and that checkpoint is still the supervisor's current
//! one, says so instead of writing it again. A new version whose
//! handoff shared every buffer holds the same state; a call that changes
//! any of it gets a full checkpoint; a restarted worker (a new process)
//! writes its first checkpoint in full. A worker serves its residents from
//! the sealed checkpoint it wrote and a restarted one from the one it
//! starts with, mapped; a write into a mapped resident leaves the
//! checkpoint as it was.
//!
//! A real worker process on the test module, with a 256 KiB resident.
//! Run with `cargo test --release -p kiln-e2e --test worker_checkpoints`.

use std::time::Duration;

use kiln::isolation::isolated::IsolatedEngine;
use kiln::worker::protocol::StateSource;
use kiln::workload::{Workload, write};
use kiln_e2e::misbehaving::{state_tensor, worker_options};
use kiln_e2e::{module_artifact, staging};
use shared_state::Call;

const MODULE: &str = "kiln-test-misbehaving";

/// A workload of the 256 KiB `state` resident and one `count` call (which
/// changes the state), written under `dir`.
fn count_workload(dir: &std::path::Path) -> std::path::PathBuf {
    let mut workload = Workload::new("count-once");
    workload.load("state", state_tensor());
    workload.call(Call::new("count"), None);
    let file = dir.join("count.kiln");
    write(&workload, &file).expect("write workload");
    file
}

#[test]
fn a_checkpoint_of_unchanged_state_writes_nothing_and_a_change_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = count_workload(dir.path());

    let artifact = module_artifact(MODULE);
    let stage = staging("worker-checkpoints");
    let options = worker_options(file, None);
    let mut engine = IsolatedEngine::new(options, None).expect("shared memory");
    let staged = stage.stage(MODULE, &artifact).expect("stage");
    engine.start(&staged, StateSource::Empty).expect("worker");
    assert_eq!(engine.load_workload_state().expect("load"), 1);

    let first = engine.take_checkpoint().expect("checkpoint");
    let state_bytes = state_tensor().byte_len() as u64;
    assert!(!first.unchanged, "the first checkpoint is written");
    // The workload's resident was read into a part of its own at the
    // start (served from there): the first checkpoint points to it.
    assert!(first.copied_bytes < state_bytes, "{first:?}");
    assert_eq!(first.parts.len(), 2, "{first:?}");
    // The part written is small; the state's size counts the resident in
    // the earlier part too.
    assert!(first.bytes < state_bytes, "{first:?}");
    assert!(first.state_bytes >= state_bytes, "{first:?}");

    // Nothing ran since: nothing is written, the current checkpoint stays.
    let again = engine.take_checkpoint().expect("checkpoint");
    assert!(again.unchanged, "{again:?}");
    assert_eq!(
        (again.hash.as_str(), again.bytes),
        (first.hash.as_str(), first.bytes)
    );
    assert_eq!(
        engine.checkpoint().map(|c| c.hash.as_str()),
        Some(first.hash.as_str())
    );

    // A new version, the state handed over shared: the same state.
    let v2 = stage.stage(MODULE, &artifact).expect("stage");
    engine.swap(&v2, false).expect("swap");
    let after_swap = engine.take_checkpoint().expect("checkpoint");
    assert!(after_swap.unchanged, "{after_swap:?}");
    assert_eq!(after_swap.hash, first.hash);

    // `count` changes the state: written in full.
    let replay = engine.replay(None).expect("replay");
    assert!(replay.passed(), "{}", replay.table.render());
    let counted = engine.take_checkpoint().expect("checkpoint");
    assert!(!counted.unchanged, "{counted:?}");
    assert_ne!(counted.hash, first.hash);
    assert_eq!(engine.state_hash().expect("hash").hash, counted.hash);

    // A restarted worker starts from that checkpoint, bit for bit, and
    // knows it serves that checkpoint's parts: its first checkpoint of the
    // same state writes nothing.
    engine.stop_worker(Duration::from_secs(60));
    assert!(!engine.is_serving());
    let v3 = stage.stage(MODULE, &artifact).expect("stage");
    engine
        .start(&v3, engine.checkpoint_source())
        .expect("restart");
    assert_eq!(engine.state_hash().expect("hash").hash, counted.hash);
    let restarted = engine.take_checkpoint().expect("checkpoint");
    assert!(restarted.unchanged, "{restarted:?}");
    assert_eq!(restarted.hash, counted.hash);
    let unchanged = engine.take_checkpoint().expect("checkpoint");
    assert!(unchanged.unchanged, "{unchanged:?}");
}

/// The memfd checkpoints worker `pid` maps (`/proc/PID/maps`).
fn mapped_checkpoints(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("maps")
        .lines()
        .filter(|l| l.contains("/memfd:kiln-checkpoint"))
        .count()
}

#[test]
fn a_restarted_worker_serves_the_sealed_checkpoint_in_place_and_a_write_leaves_it_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = count_workload(dir.path());
    let artifact = module_artifact(MODULE);
    let stage = staging("worker-checkpoints-mapped");
    let mut engine = IsolatedEngine::new(worker_options(file, None), None).expect("engine");
    let staged = stage.stage(MODULE, &artifact).expect("stage");
    engine.start(&staged, StateSource::Empty).expect("worker");
    engine.load_workload_state().expect("load");
    let replay = engine.replay(None).expect("replay");
    assert!(replay.passed(), "{}", replay.table.render());
    let good = engine.take_checkpoint().expect("checkpoint");
    let first_pid = engine.worker_pid().expect("pid");
    // Once written, the checkpoint is what the worker serves its resident
    // from (its own copy dropped): the state exists once.
    assert_eq!(
        mapped_checkpoints(first_pid),
        1,
        "served from the checkpoint"
    );
    let again = engine.take_checkpoint().expect("checkpoint");
    assert!(
        again.unchanged,
        "the mapped resident is still the checkpoint's"
    );

    // Restarted from the checkpoint: mapped, bit for bit.
    let v2 = stage.stage(MODULE, &artifact).expect("stage");
    engine
        .start(&v2, engine.checkpoint_source())
        .expect("restart");
    let pid = engine.worker_pid().expect("pid");
    assert_ne!(pid, first_pid);
    assert_eq!(mapped_checkpoints(pid), 1, "restarted from the checkpoint");
    assert_eq!(engine.state_hash().expect("hash").hash, good.hash);

    // `count` writes the mapped resident: the engine writes its own copy
    // (the mapping is read-only), the sealed checkpoint keeps its bytes.
    let replay = engine.replay(None).expect("replay");
    assert!(replay.passed(), "{}", replay.table.render());
    assert_ne!(engine.state_hash().expect("hash").hash, good.hash);
    // A worker restarted now (the write was never checkpointed) starts
    // from the checkpoint's bytes, untouched by that write.
    engine.stop_worker(Duration::from_secs(60));
    let v3 = stage.stage(MODULE, &artifact).expect("stage");
    engine
        .start(&v3, engine.checkpoint_source())
        .expect("restart");
    assert_eq!(engine.state_hash().expect("hash").hash, good.hash);
    // It serves the checkpoint's parts as they are: the next checkpoint
    // of that state writes nothing.
    let again = engine.take_checkpoint().expect("checkpoint");
    assert!(again.unchanged, "{again:?}");
    assert_eq!(again.hash, good.hash);
}

#[test]
fn a_reference_engine_lets_go_of_a_superseded_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = count_workload(dir.path());
    let artifact = module_artifact(MODULE);
    let stage = staging("worker-checkpoints-reference");
    let mut engine = IsolatedEngine::new(worker_options(file, None), None).expect("engine");
    let staged = stage.stage(MODULE, &artifact).expect("stage");
    engine.start(&staged, StateSource::Empty).expect("worker");
    let reference = stage.stage(MODULE, &artifact).expect("stage");
    engine.set_reference(&reference).expect("reference");
    engine.load_workload_state().expect("load");
    // The start-up checkpoint, before the first replay (as in `kiln dev`):
    // served engine and workload serve the resident from it.
    engine.take_checkpoint().expect("checkpoint");
    let pid = engine.worker_pid().expect("pid");
    assert_eq!(mapped_checkpoints(pid), 1, "served from the checkpoint");

    // The replay gives the reference engine the workload's resident (the
    // checkpoint's mapped buffer); `count` changes a scalar only. The next
    // checkpoint is written, the resident's buffer is the same, and every
    // holder of it (served engine, workload, reference engine) follows it
    // to the new one: no one maps the superseded checkpoint, its memory
    // goes.
    engine.replay(None).expect("replay");
    let second = engine.take_checkpoint().expect("checkpoint");
    assert!(!second.unchanged, "{second:?}");
    assert_eq!(
        mapped_checkpoints(pid),
        1,
        "the superseded checkpoint is still mapped"
    );
}

/// Anonymous (private) memory of process `pid`, in bytes.
fn anonymous_bytes(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("rollup");
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("Anonymous: in smaps_rollup")
        << 10
}

#[test]
fn a_restarted_worker_holds_the_workloads_residents_once() {
    // A 128 MiB resident (32 Mi f32): the workload file's copy of it, read at
    // Configure, is measurable against the worker's other memory.
    const BIG: usize = 32 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut workload = Workload::new("big-and-count");
    workload.load("state", state_tensor());
    let values: Vec<f32> = (0..BIG).map(|i| (i % 1031) as f32).collect();
    workload.load("big", shared_state::Tensor::from_f32(&[BIG], values));
    workload.call(Call::new("count"), None);
    let file = dir.path().join("big.kiln");
    write(&workload, &file).expect("write workload");
    drop(workload);

    let artifact = module_artifact(MODULE);
    let stage = staging("worker-checkpoints-once");
    let mut engine = IsolatedEngine::new(worker_options(file, None), None).expect("engine");
    let staged = stage.stage(MODULE, &artifact).expect("stage");
    engine.start(&staged, StateSource::Empty).expect("worker");
    engine.load_workload_state().expect("load");
    let good = engine.take_checkpoint().expect("checkpoint");

    // Restarted from the checkpoint: the engine serves `big` from the
    // mapping, and the workload's load of it (the same bytes) shares that
    // mapping instead of keeping the copy it read from the file.
    engine.stop_worker(Duration::from_secs(60));
    let v2 = stage.stage(MODULE, &artifact).expect("stage");
    engine
        .start(&v2, engine.checkpoint_source())
        .expect("restart");
    assert_eq!(engine.state_hash().expect("hash").hash, good.hash);
    let pid = engine.worker_pid().expect("pid");
    let big_bytes = (BIG * 4) as u64;
    let anonymous = anonymous_bytes(pid);
    assert!(
        anonymous < big_bytes / 2,
        "the restarted worker holds {anonymous} private bytes: the workload's {big_bytes}-byte resident is held a second time"
    );
    // Still the workload's bytes: a replay (its loads) passes.
    let replay = engine.replay(None).expect("replay");
    assert!(replay.passed(), "{}", replay.table.render());
}

#[test]
fn a_checkpoint_copies_only_what_changed_and_restores_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = count_workload(dir.path());
    let artifact = module_artifact(MODULE);
    let stage = staging("worker-checkpoints-parts");
    let mut engine = IsolatedEngine::new(worker_options(file.clone(), None), None).expect("engine");
    let staged = stage.stage(MODULE, &artifact).expect("stage");
    engine.start(&staged, StateSource::Empty).expect("worker");
    engine.load_workload_state().expect("load");
    let state_bytes = state_tensor().byte_len() as u64;
    let first = engine.take_checkpoint().expect("checkpoint");
    // The resident is in the part the start read it into.
    assert!(first.copied_bytes < state_bytes, "{first:?}");

    // `count` changes a scalar only: the new part holds no copy of the
    // 256 KiB resident (it points to the first part), and the state's hash
    // is the whole state's, as a pass over every byte computes it.
    let replay = engine.replay(None).expect("replay");
    assert!(replay.passed(), "{}", replay.table.render());
    let counted = engine.take_checkpoint().expect("checkpoint");
    assert!(!counted.unchanged, "{counted:?}");
    assert!(counted.copied_bytes < state_bytes, "{counted:?}");
    assert_eq!(counted.parts.len(), 2, "{counted:?}");
    assert_ne!(counted.hash, first.hash);
    assert_eq!(engine.state_hash().expect("hash").hash, counted.hash);

    // The --state file and the disk copy: one whole snapshot file each,
    // assembled from the parts, that restores the same state.
    let state_file = dir.path().join("saved.snapshot");
    engine.write_state_file(&state_file).expect("state file");
    let verified = kiln::swap::snapshot_file::verify(&state_file).expect("whole file");
    assert_eq!(verified.state_hash, counted.hash);
    let kept = dir.path().join("kept.snapshot");
    engine.keep_on_disk(&kept, MODULE).expect("keep");
    let copy = engine.stop_keeping().expect("copied").expect("copy");
    assert_eq!(copy.state_hash, counted.hash);
    let verified = kiln::swap::snapshot_file::verify(&kept).expect("whole file");
    assert_eq!(verified.state_hash, counted.hash);
    let restored = kiln::swap::snapshot_file::load(&kept).expect("load");
    assert!(
        restored.get("resident/state").is_some_and(|s| matches!(
            s, shared_state::Section::Tensor(t) if t.bit_eq(&state_tensor())
        )),
        "the resident restored bit for bit"
    );

    // A worker restarted from the two parts serves the state bit for bit,
    // and so does one started from the --state file.
    let pid = engine.worker_pid().expect("pid");
    engine.stop_worker(Duration::from_secs(60));
    let v2 = stage.stage(MODULE, &artifact).expect("stage");
    engine
        .start(&v2, engine.checkpoint_source())
        .expect("restart");
    assert_ne!(engine.worker_pid(), Some(pid));
    assert_eq!(engine.state_hash().expect("hash").hash, counted.hash);
    let v3 = stage.stage(MODULE, &artifact).expect("stage");
    engine
        .start(&v3, StateSource::File(state_file))
        .expect("from the file");
    assert_eq!(engine.state_hash().expect("hash").hash, counted.hash);

    // A workload reload with another resident: the resident it adds is a
    // new buffer, copied into the next checkpoint.
    let mut workload = Workload::new("count-twice");
    workload.load("state", state_tensor());
    workload.load("other", state_tensor());
    workload.call(Call::new("count"), None);
    write(&workload, &file).expect("write workload");
    engine.take_checkpoint().expect("checkpoint");
    engine.reload_workload().expect("reload");
    engine.load_workload_state().expect("load");
    let reloaded = engine.take_checkpoint().expect("checkpoint");
    assert!(reloaded.copied_bytes >= state_bytes, "{reloaded:?}");
    assert!(reloaded.parts.len() <= 2, "{reloaded:?}");
    let replay = engine.replay(None).expect("replay");
    assert!(replay.passed(), "{}", replay.table.render());
    let after = engine.take_checkpoint().expect("checkpoint");
    assert!(after.copied_bytes < state_bytes, "{after:?}");
    assert_eq!(engine.state_hash().expect("hash").hash, after.hash);
}

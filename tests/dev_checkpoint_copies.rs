//! What a checkpoint copies, through the real `kiln dev` (issue #25): only
//! the sections that changed since the last one, on the CPU and on a
//! Vulkan device (lavapipe), and never the replay's scratch.
//!
//! - On Vulkan, a checkpoint after a replay that stores nothing into the
//!   large residents copies none of them, and neither does the one after a
//!   shader save (the swap hands each resident's host copy over with its
//!   device memory, so the new engine's export is the very buffer the last
//!   checkpoint marked); a workload reload that replaces two residents
//!   copies those two and not the third; a SIGKILL of the worker restarts
//!   it on the checkpoint with the same state hash, and the `--state`
//!   file at the end holds the reloaded residents bit for bit.
//! - Replay scratch is not state (`swap/state_hash.rs`): the `replay/out`
//!   output a call stores is in no checkpoint, no handoff and no state
//!   file, and a worker restarted without it serves the same state and
//!   replays.
//! - On disk too (CPU): the first copy of the last good point writes the
//!   whole file, every later one appends what changed, never a resident.
//!
//! The Vulkan test prints `skipped: no Vulkan device (...)` and passes
//! when there is no driver, unless `KILN_REQUIRE_VULKAN=1`; any other
//! failure of the probe fails it.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_checkpoint_copies`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, EventKind, QUIET, WorkspaceCopy, events,
    kill_worker_and_see_the_state_restored, kiln_ctl, save_in_place, with_chunk,
};
use shared_state::{Call, Scalar, Tensor};

const QUIET_MAX: Duration = Duration::from_secs(240);
/// Elements of each resident (1 MiB of f32: far above the 64 KiB under
/// which the worker compares small tensors by value).
const N: usize = 1 << 18;
const BYTES: u64 = (N * 4) as u64;
/// Elements of `w` and `v` after the reload.
const N2: usize = N + 4096;
/// Elements of `keep`: the largest, so that the checkpoint part holding
/// the three stays more than half live after `w` and `v` are replaced
/// (else the next checkpoint copies it from there on purpose, to let that
/// part's memory go).
const KEEP: usize = 3 * N;

/// `n` finite f32 values from `seed`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    kiln_e2e::random_bits(n, seed)
        .into_iter()
        .map(|v| if v.is_finite() { v } else { 0.5 })
        .collect()
}

/// A workload of three residents (`w` and `v` of `n` elements, `keep` of
/// `KEEP`, never read by a call) and two saxpy calls over `w` and `v`: one
/// returns its output, one stores it as `out` (replay scratch:
/// `replay/out`).
fn write_workload(path: &Path, n: usize, seed: u64) -> Vec<u32> {
    let mut workload = kiln::workload::Workload::new("checkpoint-copies");
    let w = values(n, seed);
    let bits = w.iter().map(|f| f.to_bits()).collect();
    workload.load("w", Tensor::from_f32(&[n], w));
    workload.load("v", Tensor::from_f32(&[n], values(n, seed + 1)));
    workload.load("keep", Tensor::from_f32(&[KEEP], values(KEEP, 99)));
    let saxpy = |a: f64| {
        Call::new("saxpy")
            .resident("w")
            .resident("v")
            .param("a", Scalar::F64(a))
    };
    workload.call(saxpy(2.0), None);
    workload.call(saxpy(0.5).store_as("out"), None);
    kiln::workload::write(&workload, path).expect("write the workload");
    bits
}

/// The checkpoints written (not `unchanged`) from `mark` on.
fn written_since(session: &DevSession, mark: usize) -> Vec<events::Checkpoint> {
    session
        .named_since(mark, EventKind::Checkpoint)
        .into_iter()
        .map(|e| e.fields::<events::Checkpoint>().clone())
        .filter(|c| !c.unchanged)
        .collect()
}

/// Every checkpoint written from `mark` on copied less than a resident
/// (`why` says what was done).
fn none_copied_a_resident(session: &DevSession, mark: usize, why: &str) {
    let written = written_since(session, mark);
    if written.is_empty() {
        session.fail(&format!("{why}: no checkpoint written"));
    }
    for c in &written {
        if c.copied_bytes >= BYTES / 8 {
            session.fail(&format!(
                "{why}: a checkpoint copied {} bytes (a resident is {BYTES}): {c:?}",
                c.copied_bytes
            ));
        }
    }
}

/// The index of the event after the session's first checkpoint (the
/// state loaded at the start, before the first replay).
fn after_first_checkpoint(session: &DevSession) -> usize {
    session
        .events
        .iter()
        .position(|e| e.is(EventKind::Checkpoint))
        .map_or_else(|| session.fail("no checkpoint"), |i| i + 1)
}

/// The `--state` file at the end: whole and verified, its hash the last
/// checkpoint's, no replay scratch in it; returns it.
fn stop_and_check_the_state_file(session: DevSession, state_file: &Path) -> shared_state::Snapshot {
    let stopped = session.stop();
    assert!(stopped.status.success());
    let last = stopped
        .events
        .iter()
        .rev()
        .find(|e| e.is(EventKind::Checkpoint))
        .map(|e| e.fields::<events::Checkpoint>().state_hash.clone())
        .expect("a checkpoint");
    let verified = kiln::swap::snapshot_file::verify(state_file).expect("one whole file");
    assert_eq!(verified.state_hash, last);
    let snapshot = kiln::swap::snapshot_file::load(state_file).expect("load");
    let scratch: Vec<String> = snapshot
        .section_names()
        .into_iter()
        .filter(|n| n.contains("replay"))
        .collect();
    assert!(
        scratch.is_empty(),
        "replay scratch in the state file: {scratch:?}"
    );
    assert!(
        snapshot.get("resident/keep").is_some(),
        "the state is there"
    );
    snapshot
}

/// The replay of call 1 (`out = 0.5 w + v`) by the version `version`
/// passed.
fn replayed(session: &mut DevSession, version: Option<u64>) {
    let replay = session.wait_for("the stored saxpy's replay", BUILD_DEADLINE, |e| {
        e.get::<events::Replay>().is_some_and(|r| r.call == 1)
            && (version.is_none() || e.version() == version)
    });
    assert!(replay.fields::<events::Replay>().pass, "{}", replay.line);
}

/// `kiln dev --backend BACKEND --no-tune` in a workspace copy, with the
/// workload of [`write_workload`] (`N` elements) and a `--state` file,
/// once it serves and is quiet: (the copy, the workload's path, the state
/// file's, the session).
fn start(backend: &str) -> (WorkspaceCopy, PathBuf, PathBuf, DevSession) {
    let copy = WorkspaceCopy::new();
    let workload = copy.root().join("target/checkpoint-copies.kiln");
    std::fs::create_dir_all(workload.parent().unwrap()).expect("target dir");
    write_workload(&workload, N, 1);
    let state_file = copy.root().join("session.snapshot");
    let mut session = DevSession::start_with_env(
        &copy,
        &[
            "--backend",
            backend,
            "--no-tune",
            "--workload",
            workload.to_str().expect("utf-8"),
            "--state",
            state_file.to_str().expect("utf-8"),
        ],
        // The disk copies logged (`state_kept` is a debug event).
        &[(
            "RUST_LOG",
            std::ffi::OsStr::new("info,kiln::isolation::disk_copy=debug"),
        )],
    );
    session.wait_quiet(QUIET, QUIET_MAX);
    // The three residents were copied into memory while the module built,
    // once (`isolation/preload.rs`): the first checkpoint points there.
    let preloaded = session.named_since(0, EventKind::WorkloadPreloaded);
    assert_eq!(preloaded.len(), 1, "one copy of the residents at the start");
    assert_eq!(
        preloaded[0].u64("residents"),
        Some(3),
        "{}",
        preloaded[0].line
    );
    assert_eq!(
        preloaded[0].u64("bytes"),
        Some(5 * BYTES),
        "{}",
        preloaded[0].line
    );
    (copy, workload, state_file, session)
}

#[test]
fn vulkan_checkpoints_copy_only_what_changed_and_restore_bit_for_bit() {
    if !kiln_e2e::vulkan_present() {
        return;
    }
    let (copy, workload, state_file, mut session) = start("vulkan");
    let written = written_since(&session, 0);
    let first = written
        .first()
        .unwrap_or_else(|| session.fail("no checkpoint written"));
    // The workload's residents were read into a part of their own at the
    // start (`worker/workload_loads.rs`), whose mapped bytes the engine
    // took as its host copies: the first checkpoint points there.
    assert!(first.copied_bytes < BYTES, "{first:?}");
    // Its part is small; the state it records (and the log gives) is the
    // residents' bytes, wherever they are: the log once said "4.0 KiB"
    // of a 1 GiB state.
    assert!(first.bytes < BYTES, "{first:?}");
    assert!(first.state_bytes >= 5 * BYTES, "{first:?}");
    // The start's replay stored `out` (scratch) and read `w`, `v`.
    none_copied_a_resident(
        &session,
        after_first_checkpoint(&session),
        "the first replay",
    );

    let mark = session.mark();
    let (ok, out) = kiln_ctl(&copy, &["replay"]);
    assert!(ok, "kiln ctl replay: {out}");
    replayed(&mut session, None);
    session.wait_quiet(QUIET, QUIET_MAX);
    none_copied_a_resident(&session, mark, "a replay");

    // A shader save: a new version, the residents handed over on the
    // device with their host copies.
    let mark = session.mark();
    let shader = copy.root().join("kernels/vulkan/shaders/saxpy.wgsl");
    let text = std::fs::read_to_string(&shader).expect("read the shader");
    save_in_place(&shader, &format!("{text}\n// a new version\n"));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    replayed(&mut session, swapped.version());
    session.wait_quiet(QUIET, QUIET_MAX);
    none_copied_a_resident(&session, mark, "a shader save");

    // A reload that replaces `w` and `v` (other lengths): both copied,
    // `keep` not.
    let mark = session.mark();
    let w_bits = write_workload(&workload, N2, 5);
    session.wait_event(EventKind::WorkloadReloaded, BUILD_DEADLINE);
    session.wait_event(EventKind::Rechecked, BUILD_DEADLINE);
    session.wait_quiet(QUIET, QUIET_MAX);
    let reloaded = written_since(&session, mark);
    let replaced = (2 * N2 * 4) as u64;
    assert!(
        reloaded
            .iter()
            .any(|c| c.copied_bytes >= replaced && c.copied_bytes < replaced + BYTES / 2),
        "the reload's checkpoint copies `w` and `v`, not `keep`: {reloaded:?}"
    );

    kill_worker_and_see_the_state_restored(&mut session, "the reloaded state");
    session.wait_quiet(QUIET, QUIET_MAX);
    let snapshot = stop_and_check_the_state_file(session, &state_file);
    let Some(shared_state::Section::Tensor(w)) = snapshot.get("resident/w") else {
        panic!("no w in the state file");
    };
    let bits: Vec<u32> = w
        .as_f32()
        .expect("f32")
        .iter()
        .map(|f| f.to_bits())
        .collect();
    assert!(bits == w_bits, "the reloaded `w`, bit for bit");
}

#[test]
fn replay_scratch_is_in_no_checkpoint_handoff_or_state_file() {
    let (copy, _, state_file, mut session) = start("cpu");
    // The replay stored `out` (1 MiB of scratch): not copied.
    none_copied_a_resident(
        &session,
        after_first_checkpoint(&session),
        "the first replay",
    );

    // A save: the handoff carries the three residents, not the scratch.
    let mark = session.mark();
    let kernels = copy.kernels_rs();
    let source = std::fs::read_to_string(&kernels).expect("read kernels.rs");
    save_in_place(&kernels, &with_chunk(&source, 8192));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let handed = swapped.fields::<events::Swapped>().handoff_bytes;
    assert!(
        (5 * BYTES..5 * BYTES + BYTES / 2).contains(&handed),
        "the handoff carried {handed} bytes: the residents are {}",
        5 * BYTES
    );
    replayed(&mut session, swapped.version());
    session.wait_quiet(QUIET, QUIET_MAX);
    none_copied_a_resident(&session, mark, "a save");

    // A worker restarted without the scratch serves the same state, and
    // replays (its own scratch, made again).
    kill_worker_and_see_the_state_restored(&mut session, "restarted without the scratch");
    session.wait_quiet(QUIET, QUIET_MAX);
    let (ok, out) = kiln_ctl(&copy, &["replay"]);
    assert!(ok, "kiln ctl replay: {out}");
    replayed(&mut session, None);
    session.wait_quiet(QUIET, QUIET_MAX);
    every_disk_copy_after_the_first_appends_only_what_changed(&session);
    stop_and_check_the_state_file(session, &state_file);
}

/// The last good point on disk (`target/kiln/state/`): the first copy
/// writes the whole file; every later one (after the replays, the save,
/// the restart) appends what changed to it (the counters, the header),
/// never a resident again (`swap/snapshot_append.rs`).
fn every_disk_copy_after_the_first_appends_only_what_changed(session: &DevSession) {
    let kept = session.named_since(0, EventKind::StateKept);
    let Some((first, later)) = kept.split_first() else {
        session.fail("no copy of the last good point on disk");
    };
    assert_eq!(first.bool("appended"), Some(false), "{}", first.line);
    assert!(
        first.u64("written").unwrap_or(0) >= 5 * BYTES,
        "the first copy holds the residents: {}",
        first.line
    );
    assert!(
        !later.is_empty(),
        "the replays, the save and the restart changed the state: more than one copy"
    );
    for copy in later {
        assert_eq!(copy.bool("appended"), Some(true), "{}", copy.line);
        assert!(
            copy.u64("written").unwrap_or(u64::MAX) < BYTES / 4,
            "a copy after the first wrote a resident again: {}",
            copy.line
        );
    }
}

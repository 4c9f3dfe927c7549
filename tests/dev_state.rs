//! `kiln dev` end to end: the engine's state survives every swap (the
//! resident buffers loaded at start are handed over and read correctly by
//! the next replay), `--state FILE` is saved at exit and restored at start
//! (from a file in the old format 1 too),
//! and a contract change asks for a restart while the host keeps serving.
//! A worker restarted from a checkpoint reads from the workload file only
//! the residents its checkpoint lacks or holds other bytes of. A checkpoint
//! after a replay copies only what changed.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_state`.

use std::time::Duration;

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, EventKind, QUIET, WorkspaceCopy, events, first_version,
    kill_worker_and_see_the_state_restored, record_small_saxpy, save_in_place, with_chunk,
};

const QUIET_MAX: Duration = Duration::from_secs(240);

/// `weights` (256x256) and `grid` (512x512) of the default workload, f32.
const RESIDENT_BYTES: u64 = (256 * 256 + 512 * 512) * 4;

fn assert_all_pass(replay: &[Event]) {
    let bundled = kiln::workload::generate::workspace_bundled_workload(&kiln_e2e::workspace_root())
        .expect("the bundled workload")
        .call_count();
    assert_eq!(
        replay.len(),
        bundled,
        "one replay event per call of the bundled workload: {replay:?}"
    );
    for e in replay {
        assert!(e.fields::<events::Replay>().pass, "call failed: {}", e.line);
    }
}

#[test]
fn resident_state_is_handed_over_on_every_swap() {
    let copy = WorkspaceCopy::new();
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    // Without autotuning: a tuned value is kept in the state as a scalar
    // (`tuning/KERNEL/PARAM`) whenever the tuner ends, which may fall
    // between two saves and make one handoff 8 bytes larger than the next.
    let mut session = DevSession::start(&copy, &["--no-tune"]);
    let mut from = first_version(&session.events);
    // The residents are loaded once, at start, and never again.
    assert!(
        session
            .events
            .iter()
            .any(|e| e.message().starts_with("loaded 2 resident buffer(s)")),
        "the workload's two residents are loaded at start"
    );
    let mut handed = Vec::new();
    for chunk in [2048, 4096, 8192] {
        let mark = session.mark();
        save_in_place(&copy.kernels_rs(), &with_chunk(&pristine, chunk));
        let handoff = session.wait_event(EventKind::Handoff, BUILD_DEADLINE);
        let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
        let to = swapped.version().expect("version");
        assert_eq!(swapped.fields::<events::Swapped>().from_version, from);
        let bytes = handoff.fields::<events::Handoff>().bytes;
        assert_eq!(
            swapped.fields::<events::Swapped>().handoff_bytes,
            bytes,
            "{}",
            swapped.line
        );
        assert!(
            bytes >= RESIDENT_BYTES,
            "handoff moved {bytes} bytes, less than the residents' {RESIDENT_BYTES}"
        );
        assert!(
            handoff.message().contains(&format!("v{from} -> ")),
            "{}",
            handoff.line
        );
        // matmul reads `weights`, stencil2d iterates `grid`: both pass on
        // the new version without any reload.
        let replay = session.wait_replay(BUILD_DEADLINE);
        assert!(replay.iter().all(|e| e.version() == Some(to)));
        assert_all_pass(&replay);
        assert!(
            !session
                .since(mark)
                .iter()
                .any(|e| e.message().contains("resident buffer(s) from the workload")),
            "residents must not be reloaded after a swap"
        );
        handed.push(bytes);
        from = to;
    }
    assert!(
        handed.windows(2).all(|w| w[0] == w[1]),
        "the same state moves each time: {handed:?}"
    );
    drop(session.stop());
}

#[test]
fn state_file_is_saved_at_exit_and_restored_at_start() {
    let copy = WorkspaceCopy::new();
    let state = copy.root().join("session.snapshot");
    let state_arg = state.to_str().expect("utf-8 temp path").to_string();

    let session = DevSession::start(&copy, &["--state", &state_arg]);
    assert!(
        !session
            .events
            .iter()
            .any(|e| e.message().contains("restoring state")),
        "nothing to restore on the first start"
    );
    assert!(!state.exists());
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    assert!(
        stopped
            .events
            .iter()
            .any(|e| e.message().starts_with("state saved to")),
        "the exit says where the state went"
    );
    let saved = std::fs::metadata(&state).expect("state file written at exit");
    assert!(saved.len() >= RESIDENT_BYTES, "{} bytes", saved.len());
    // Rewritten in the old file format (1: sections 64-byte aligned, before
    // they were page-aligned): it still restores.
    let saved = kiln::swap::snapshot_file::load(&state).expect("the saved state reads");
    let mut old_format = Vec::new();
    kiln::swap::snapshot_file::write_version(&saved, &mut old_format, 1).expect("format 1");
    assert_eq!(&old_format[8..12], &1u32.to_le_bytes());
    std::fs::write(&state, &old_format).expect("write the old format");

    let session = DevSession::start(&copy, &["--state", &state_arg]);
    let restoring = session
        .events
        .iter()
        .find(|e| e.message().starts_with("restoring state from"))
        .unwrap_or_else(|| session.fail("the second start does not restore the state"))
        .clone();
    assert!(
        restoring.message().contains(&state_arg),
        "{}",
        restoring.line
    );
    assert!(
        session
            .events
            .iter()
            .any(|e| e.message().starts_with("state restored:")),
        "the engine took the restored state"
    );
    // Its large residents were copied from the file into a checkpoint part
    // of their own and served from there (`worker/state_file_part.rs`):
    // the first checkpoint points there rather than copying them (it
    // copied the whole state before, 4.2 s at 1 GiB here).
    let first = session
        .events
        .iter()
        .find(|e| e.is(EventKind::Checkpoint))
        .map(|e| e.fields::<events::Checkpoint>().clone())
        .unwrap_or_else(|| session.fail("no checkpoint after the start"));
    assert!(first.copied_bytes < RESIDENT_BYTES / 8, "{first:?}");
    assert!(first.state_bytes >= RESIDENT_BYTES, "{first:?}");
    // The replay at start (before the watcher ran) passed on that state.
    let replay: Vec<Event> = session
        .events
        .iter()
        .filter(|e| e.is(EventKind::Replay))
        .cloned()
        .collect();
    assert_all_pass(&replay);
    drop(session.stop());
    assert!(state.exists(), "an explicit state file is kept");
}

#[test]
fn contract_change_asks_for_a_restart_and_keeps_serving() {
    let copy = WorkspaceCopy::new();
    let mut session = DevSession::start(&copy, &[]);
    let serving = first_version(&session.events);
    let restart_state = copy.root().join("target/kiln/state/kernel-cpu.snapshot");
    assert!(!restart_state.exists());

    let mark = session.mark();
    let lib = copy.root().join("shared-state/src/lib.rs");
    let source = std::fs::read_to_string(&lib).expect("read contract");
    save_in_place(&lib, &format!("{source}\n// a comment\n"));
    let restart = session.wait_event(EventKind::RestartRequired, BUILD_DEADLINE);
    assert_eq!(restart.version(), Some(serving));
    let message = restart.message();
    assert!(
        message.contains(&restart_state.display().to_string()),
        "the message names the state file {}: {message}",
        restart_state.display()
    );
    assert!(restart_state.exists(), "{} exists", restart_state.display());
    session.wait_quiet(QUIET, QUIET_MAX);
    let after: Vec<EventKind> = session
        .since(mark)
        .iter()
        .filter_map(|e| e.kind())
        .collect();
    for name in [
        EventKind::BuildStarted,
        EventKind::Swapped,
        EventKind::Retired,
        EventKind::Unloaded,
    ] {
        assert!(
            !after.contains(&name),
            "no {name} after a contract change: {after:?}"
        );
    }
    assert!(
        std::path::Path::new(&format!("/proc/{}", session.pid())).exists(),
        "kiln dev still runs"
    );

    // Still serving: Ctrl-C retires and unloads the serving version cleanly.
    let pid = session.pid();
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    let tail = &stopped.events[mark..];
    for name in [EventKind::Retired, EventKind::Unloaded] {
        let e = tail
            .iter()
            .find(|e| e.is(name))
            .unwrap_or_else(|| panic!("no {name} at exit of {pid}"));
        assert_eq!(e.version(), Some(serving), "{}", e.line);
    }
}

/// Elements of each resident of the restart test (1 MiB of f32 bit
/// patterns, NaN payloads included).
const RESIDENT_LEN: usize = 1 << 18;

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|f| f.to_bits()).collect()
}

/// Flips one byte inside `values`' bytes in the file at `path`, in place
/// (the file's header, and the crc32 it records for them, unchanged).
fn damage_in_place(path: &std::path::Path, values: &[f32]) {
    use std::io::{Seek, SeekFrom, Write};
    let file_bytes = std::fs::read(path).expect("read the workload");
    let needle: Vec<u8> = values[..16].iter().flat_map(|f| f.to_le_bytes()).collect();
    let at = file_bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the resident's bytes in the file") as u64
        + 100;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the workload");
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.write_all(&[file_bytes[at as usize] ^ 0xff])
        .expect("write");
    file.sync_all().expect("fsync");
}

/// A worker restarted from a checkpoint takes the residents the
/// checkpoint holds (the same bytes as the workload's, by their crc32)
/// from it and does not read them from the workload file: here the
/// workload's copy of one is damaged after the start (a worker reading the
/// whole file would refuse it and the restart would fail), yet the restart
/// serves the checkpoint bit for bit. A resident the checkpoint holds other
/// bytes of is served as the checkpoint has it (not the workload file's),
/// and a resident only the workload file has is loaded at the start.
#[test]
fn a_restarted_worker_reads_only_what_its_checkpoint_lacks() {
    let copy = WorkspaceCopy::new();
    let workload = record_small_saxpy(&copy);
    let workload_path = std::path::Path::new(&workload);
    let recorded = kiln::workload::read(workload_path).expect("read the workload");
    let resident =
        |values: &[f32]| shared_state::Tensor::from_f32(&[RESIDENT_LEN], values.to_vec());
    let state_file = copy.root().join("session.snapshot");
    let args = cpu_session_args(&workload, &state_file);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // A first session leaves `state` (its first bytes) in the state file.
    let first = kiln_e2e::random_bits(RESIDENT_LEN, 31);
    let mut with_state = recorded.clone();
    with_state.load("state", resident(&first));
    kiln::workload::write(&with_state, workload_path).expect("write the workload");
    let mut session = DevSession::start(&copy, &args);
    session.wait_quiet(QUIET, QUIET_MAX);
    assert!(session.stop().status.success());
    assert_eq!(
        kiln_e2e::resident_bits_in(&state_file, "state"),
        bits(&first)
    );

    // The workload now holds other bytes for `state`, and a new resident.
    let other = kiln_e2e::random_bits(RESIDENT_LEN, 32);
    let extra = kiln_e2e::random_bits(RESIDENT_LEN, 33);
    let mut changed = recorded.clone();
    changed.load("state", resident(&other));
    changed.load("extra", resident(&extra));
    kiln::workload::write(&changed, workload_path).expect("write the workload");
    let mut session = DevSession::start(&copy, &args);
    session.wait_quiet(QUIET, QUIET_MAX);

    // `extra` damaged in the workload file: reading it again fails.
    let mark = session.mark();
    damage_in_place(workload_path, &extra);
    let invalid = session.wait_event(EventKind::WorkloadInvalid, BUILD_DEADLINE);
    assert!(invalid.message().contains("checksum"), "{}", invalid.line);
    session.wait_quiet(QUIET, QUIET_MAX);

    restart_once_and_stop(
        session,
        mark,
        "the restart took `extra` from its checkpoint, not the damaged file",
    );
    assert_eq!(
        kiln_e2e::resident_bits_in(&state_file, "state"),
        bits(&first),
        "the state's bytes, not the workload file's"
    );
    assert_eq!(
        kiln_e2e::resident_bits_in(&state_file, "extra"),
        bits(&extra),
        "a resident only the workload had was loaded, and survived the restart"
    );
}

/// `kiln dev` on the CPU module with `workload`, no tuning, and its state
/// kept in `state_file`.
fn cpu_session_args(workload: &str, state_file: &std::path::Path) -> Vec<String> {
    let state = state_file.to_str().expect("utf-8 path");
    [
        "--backend",
        "cpu",
        "--workload",
        workload,
        "--no-tune",
        "--state",
        state,
    ]
    .map(String::from)
    .to_vec()
}

/// SIGKILLs the session's worker, sees the state restored (`why`: what
/// that shows), and, the session quiet again with that one restart since
/// `mark`, stops it with Ctrl-C.
fn restart_once_and_stop(mut session: DevSession, mark: usize, why: &str) {
    kill_worker_and_see_the_state_restored(&mut session, why);
    session.wait_quiet(QUIET, QUIET_MAX);
    assert_eq!(session.named_since(mark, EventKind::Restarted).len(), 1);
    assert!(session.stop().status.success());
}

/// A checkpoint after a replay copies only what changed (counters: the
/// residents stay in the part that holds them, and the output the replay
/// stores is scratch, in no checkpoint), its
/// state hash is the whole state's (a worker restarted from the parts
/// serves that very state), and the --state file at exit is one whole
/// snapshot file with that hash.
#[test]
fn a_checkpoint_after_a_replay_copies_only_what_changed() {
    let copy = WorkspaceCopy::new();
    let state_file = copy.root().join("session.snapshot");
    let state_arg = state_file.to_str().expect("utf-8 path");
    let mut session = DevSession::start(
        &copy,
        &["--backend", "cpu", "--no-tune", "--state", state_arg],
    );
    session.wait_quiet(QUIET, QUIET_MAX);
    let written: Vec<events::Checkpoint> = session
        .events
        .iter()
        .filter(|e| e.is(EventKind::Checkpoint))
        .map(|e| e.fields::<events::Checkpoint>().clone())
        .filter(|c| !c.unchanged)
        .collect();
    let first = written
        .first()
        .unwrap_or_else(|| session.fail("no checkpoint written"));
    // The workload's residents were read into a part of their own at the
    // start, which the engine serves: the first checkpoint points there.
    assert!(first.copied_bytes < RESIDENT_BYTES / 8, "{first:?}");
    let after_replay = written
        .iter()
        .skip(1)
        .find(|c| c.state_hash != first.state_hash)
        .unwrap_or_else(|| session.fail("no checkpoint of a changed state"));
    // The replay stores stencil2d's output as `grid`, in the scratch
    // resident `replay/grid` (1 MiB): scratch is not state, not copied;
    // `weights` (256 KiB) and `grid` are only read: not copied again.
    const GRID_BYTES: u64 = 512 * 512 * 4;
    assert!(
        after_replay.copied_bytes < GRID_BYTES / 8,
        "a resident or the replay's scratch was copied: {after_replay:?}"
    );
    let last = written.last().expect("one").clone();

    kill_worker_and_see_the_state_restored(&mut session, "restarted from the parts, bit for bit");
    session.wait_quiet(QUIET, QUIET_MAX);
    let stopped = session.stop();
    assert!(stopped.status.success());
    let newest = stopped
        .events
        .iter()
        .rev()
        .find(|e| e.is(EventKind::Checkpoint))
        .map(|e| e.fields::<events::Checkpoint>().state_hash.clone())
        .unwrap_or(last.state_hash);
    let verified = kiln::swap::snapshot_file::verify(&state_file).expect("one whole file");
    assert_eq!(verified.state_hash, newest);
}

/// A worker restarted from a checkpoint serves its parts mapped, and its
/// first checkpoint after a replay points into them for what did not
/// change: it copies less than the large resident the replay only reads
/// (a restarted worker that knew nothing of the parts it serves copied the
/// whole state again). A second restart, from the checkpoint that points
/// into the earlier parts, still serves the state bit for bit, and the
/// `--state` file at exit holds the resident's bits.
#[test]
fn a_restarted_workers_first_checkpoint_copies_only_what_changed() {
    let copy = WorkspaceCopy::new();
    let workload = record_small_saxpy(&copy);
    let workload_path = std::path::Path::new(&workload);
    let mut with_big = kiln::workload::read(workload_path).expect("read the workload");
    let big = kiln_e2e::random_bits(RESIDENT_LEN, 41);
    with_big.load(
        "big",
        shared_state::Tensor::from_f32(&[RESIDENT_LEN], big.clone()),
    );
    kiln::workload::write(&with_big, workload_path).expect("write the workload");
    let state_file = copy.root().join("session.snapshot");
    let args = cpu_session_args(&workload, &state_file);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut session = DevSession::start(&copy, &args);
    session.wait_quiet(QUIET, QUIET_MAX);
    kill_worker_and_see_the_state_restored(&mut session, "restarted from the checkpoint");
    session.wait_quiet(QUIET, QUIET_MAX);

    // A save: the restarted worker swaps, replays and checkpoints.
    let mark = session.mark();
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    save_in_place(&copy.kernels_rs(), &with_chunk(&pristine, 2048));
    session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let checkpoint = session.wait_event(EventKind::Checkpoint, BUILD_DEADLINE);
    let checkpoint = checkpoint.fields::<events::Checkpoint>().clone();
    let big_bytes = (RESIDENT_LEN * 4) as u64;
    assert!(
        checkpoint.copied_bytes < big_bytes,
        "the restarted worker's first checkpoint copied the resident it serves from the parts again: {checkpoint:?}"
    );
    session.wait_quiet(QUIET, QUIET_MAX);

    restart_once_and_stop(
        session,
        mark,
        "restarted from a checkpoint pointing into the parts the first restart served",
    );
    assert_eq!(kiln_e2e::resident_bits_in(&state_file, "big"), bits(&big));
}

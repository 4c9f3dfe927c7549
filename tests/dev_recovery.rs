//! The last good point survives a supervisor killed outright: after every
//! checkpoint `kiln dev` copies it, behind the session, to
//! `target/kiln/state/<module>.last-good.snapshot`; after `kill -KILL` of
//! the supervisor (its worker dies with it) the next `kiln dev` restores
//! that state bit for bit (`state_recovered`, and its first checkpoint's
//! state hash is the killed session's last). A clean end is not resumed
//! (the file is kept aside as `<module>.previous.snapshot`), `--fresh`
//! ignores it, `--state FILE` wins over it, and a damaged file is named
//! with its damage and the session starts from the workload.
//!
//! Real processes, real signals, the real CPU and Vulkan (lavapipe)
//! modules on a one-saxpy workload with a 4 MiB resident of arbitrary bit
//! patterns. A replay changes the engine's state (each module counts the
//! calls of each kernel in it), so the killed session's last checkpoint is
//! not what a start from the workload has.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_recovery`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln::events::EventKind;
use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, QUIET, WorkspaceCopy, gone, record_small_saxpy,
};

/// The copy's files for the lane that serves `module`.
struct Kept {
    file: PathBuf,
    running: PathBuf,
    previous: PathBuf,
    damaged: PathBuf,
}

fn kept(copy: &WorkspaceCopy, module: &str) -> Kept {
    let dir = copy.root().join("target/kiln/state");
    Kept {
        file: dir.join(format!("{module}.last-good.snapshot")),
        running: dir.join(format!("{module}.running")),
        previous: dir.join(format!("{module}.previous.snapshot")),
        damaged: dir.join(format!("{module}.damaged.snapshot")),
    }
}

/// The state hash of a snapshot file, every checksum checked.
fn hash_of(path: &Path) -> String {
    kiln::swap::snapshot_file::verify(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .state_hash
}

/// The state hashes of the `checkpoint` events, in order.
fn checkpoints(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.is(EventKind::Checkpoint))
        .map(|e| {
            e.str("state_hash")
                .expect("checkpoint.state_hash")
                .to_string()
        })
        .collect()
}

/// Starts `kiln dev ARGS` with the disk copies logged (`state_kept` is a
/// debug event) and waits until it is quiet after its first replay.
fn start(copy: &WorkspaceCopy, args: &[&str]) -> DevSession {
    let mut session = DevSession::start_with_env(
        copy,
        args,
        &[(
            "RUST_LOG",
            std::ffi::OsStr::new("info,kiln::isolation::disk_copy=debug"),
        )],
    );
    session.wait_quiet(QUIET, BUILD_DEADLINE);
    session
}

/// Waits until the session's last checkpoint is on disk (`state_kept` with
/// its hash, logged already or to come); returns that hash.
fn wait_last_kept(session: &mut DevSession) -> String {
    let last = checkpoints(&session.events)
        .pop()
        .unwrap_or_else(|| session.fail("no checkpoint"));
    let is_kept = |e: &Event| e.is(EventKind::StateKept) && e.str("state_hash") == Some(&last);
    let kept = match session.events.iter().find(|e| is_kept(e)) {
        Some(kept) => kept.clone(),
        None => session.wait_for("the last checkpoint on disk", BUILD_DEADLINE, is_kept),
    };
    println!(
        "kept {} bytes on disk in {:.1} ms (sync {:.1} ms)",
        kept.u64("bytes").unwrap_or(0),
        kept.ms().unwrap_or(0.0),
        kept.f64("sync_ms").unwrap_or(0.0)
    );
    last
}

/// Kills the session with SIGKILL once its last checkpoint is on disk;
/// checks its worker died with it. Returns the last checkpoint's hash.
fn kill_when_kept(mut session: DevSession) -> String {
    let last = wait_last_kept(&mut session);
    let worker = session.worker_pid();
    let killed = session.kill();
    // Nothing was checkpointed after the copy waited for.
    assert_eq!(checkpoints(&killed.events).last(), Some(&last));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(libc::SIGKILL),
        "{:?}",
        killed.status
    );
    let end = Instant::now() + Duration::from_secs(60);
    while !gone(worker) {
        if Instant::now() > end {
            killed.fail(&format!(
                "the worker {worker} outlived its killed supervisor"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    last
}

/// The one event of `kind` the session logged.
fn the_event(session: &DevSession, kind: EventKind) -> Event {
    let found = session.named_since(0, kind);
    match found.as_slice() {
        [one] => (*one).clone(),
        _ => session.fail(&format!("{} `{kind}` events, not one", found.len())),
    }
}

fn none_of(session: &DevSession, kind: EventKind) {
    if !session.named_since(0, kind).is_empty() {
        session.fail(&format!("an unexpected `{kind}` event"));
    }
}

/// Elements of the resident the workload loads (4 MiB of f32 bit
/// patterns, NaN payloads and infinities included).
const RESIDENT_LEN: usize = 1 << 20;

fn resident_bits() -> Vec<u32> {
    kiln_e2e::random_bits(RESIDENT_LEN, 25)
        .iter()
        .map(|f| f.to_bits())
        .collect()
}

/// The one-saxpy workload, recorded in `copy` with the real `kiln record`,
/// with a resident `state` the calls leave alone: state that only a
/// restore or the workload can give.
fn workload_with_a_resident(copy: &WorkspaceCopy) -> String {
    let path = record_small_saxpy(copy);
    let mut workload = kiln::workload::read(Path::new(&path)).expect("read the workload");
    workload.load(
        "state",
        shared_state::Tensor::from_f32(&[RESIDENT_LEN], kiln_e2e::random_bits(RESIDENT_LEN, 25)),
    );
    kiln::workload::write(&workload, Path::new(&path)).expect("write the workload");
    path
}

/// The resident `state` of the snapshot file at `path`, as bits.
fn resident_in(path: &Path) -> Vec<u32> {
    kiln_e2e::resident_bits_in(path, "state")
}

/// One backend through a SIGKILL: the next start restores the killed
/// session's last checkpoint bit for bit; returns (the killed session's
/// first checkpoint, its last).
fn killed_and_resumed(copy: &WorkspaceCopy, args: &[&str], module: &str) -> (String, String) {
    let files = kept(copy, module);
    let session = start(copy, args);
    let hashes = checkpoints(&session.events);
    assert!(
        hashes.len() >= 2 && hashes.first() != hashes.last(),
        "the replay changed the state after the first checkpoint: {hashes:?}"
    );
    let first = hashes[0].clone();
    assert!(
        files.running.exists(),
        "{} while it runs",
        files.running.display()
    );
    let last = kill_when_kept(session);
    assert!(files.running.exists(), "a killed session leaves its marker");
    assert_eq!(
        hash_of(&files.file),
        last,
        "the file holds the last good point"
    );
    assert!(
        resident_in(&files.file) == resident_bits(),
        "the kept file holds the resident bit for bit"
    );

    // The kept file's length as the next start finds it: that start's own
    // first copy to disk replaces the file behind it.
    let kept_bytes = std::fs::metadata(&files.file).expect("kept file").len();
    let session = start(copy, args);
    let recovered = the_event(&session, EventKind::StateRecovered);
    assert_eq!(recovered.module(), Some(module), "{}", recovered.line);
    assert_eq!(
        recovered.str("path"),
        Some(files.file.to_str().expect("utf-8 path")),
        "{}",
        recovered.line
    );
    assert_eq!(
        recovered.u64("bytes"),
        Some(kept_bytes),
        "{}",
        recovered.line
    );
    assert_eq!(
        recovered.str("state_hash"),
        Some(last.as_str()),
        "the state read back is the killed session's last checkpoint"
    );
    // The engine holds it, bit for bit: the new session's first checkpoint
    // (before any replay) has the same state hash.
    let resumed = checkpoints(&session.events);
    assert_eq!(
        resumed.first(),
        Some(&last),
        "the restored engine's state is the last good point's"
    );
    assert!(
        session
            .named_since(0, EventKind::Replay)
            .iter()
            .all(|e| e.bool("pass") == Some(true)),
        "the restored session replays and passes"
    );
    drop(session.stop());
    (first, last)
}

#[test]
fn a_killed_session_is_resumed_bit_for_bit_and_a_clean_end_is_not() {
    let copy = WorkspaceCopy::new();
    let workload = workload_with_a_resident(&copy);
    let args = ["--backend", "cpu", "--workload", &workload, "--no-tune"];
    let files = kept(&copy, "kernel-cpu");

    // kill -KILL, then the next start restores the last good point.
    let (fresh_state, _) = killed_and_resumed(&copy, &args, "kernel-cpu");

    // That second session ended cleanly (Ctrl-C): its last checkpoint is
    // on disk and its marker gone, so a normal start does not resume it;
    // the file is kept aside and the log says where.
    assert!(!files.running.exists(), "a clean end removes the marker");
    let cleanly = hash_of(&files.file);
    let mut session = start(&copy, &args);
    none_of(&session, EventKind::StateRecovered);
    let not = the_event(&session, EventKind::StateNotRecovered);
    assert_eq!(not.str("reason"), Some("ended_cleanly"), "{}", not.line);
    assert!(
        not.message()
            .contains(&files.previous.display().to_string()),
        "{}",
        not.line
    );
    assert_eq!(hash_of(&files.previous), cleanly);
    // For the explicit --state start below (the next set-aside replaces
    // the previous file).
    let explicit = copy.root().join("explicit.snapshot");
    std::fs::copy(&files.previous, &explicit).expect("copy the clean end's state");
    assert_eq!(
        checkpoints(&session.events).first(),
        Some(&fresh_state),
        "a normal start after a clean end starts from the workload"
    );
    // The session's own copies replace the file.
    let last = wait_last_kept(&mut session);
    assert_eq!(hash_of(&files.file), last);
    kill_when_kept(session);

    // --fresh: the killed session's file is not restored.
    let session = start(&copy, &[&args[..], &["--fresh"]].concat());
    none_of(&session, EventKind::StateRecovered);
    let not = the_event(&session, EventKind::StateNotRecovered);
    assert_eq!(not.str("reason"), Some("fresh"), "{}", not.line);
    assert_eq!(checkpoints(&session.events).first(), Some(&fresh_state));
    kill_when_kept(session);

    // Another workload file (the same calls, another path): the killed
    // session's state is not served with another workload's calls.
    let other = copy.root().join("other.kwl");
    std::fs::copy(&workload, &other).expect("copy the workload");
    let other = other.to_str().expect("utf-8 path");
    let session = start(
        &copy,
        &["--backend", "cpu", "--workload", other, "--no-tune"],
    );
    none_of(&session, EventKind::StateRecovered);
    let not = the_event(&session, EventKind::StateNotRecovered);
    assert_eq!(not.str("reason"), Some("other_workload"), "{}", not.line);
    assert!(
        not.message().contains(&workload) && not.message().contains(other),
        "names both workloads: {}",
        not.line
    );
    assert_eq!(checkpoints(&session.events).first(), Some(&fresh_state));
    kill_when_kept(session);

    // An explicit --state FILE wins over the kept file.
    let explicit_arg = explicit.to_str().expect("utf-8 path");
    let session = start(&copy, &[&args[..], &["--state", explicit_arg]].concat());
    none_of(&session, EventKind::StateRecovered);
    let not = the_event(&session, EventKind::StateNotRecovered);
    assert_eq!(not.str("reason"), Some("state_given"), "{}", not.line);
    assert!(
        session
            .events
            .iter()
            .any(|e| e.message() == format!("restoring state from {explicit_arg}")),
        "the explicit file is restored"
    );
    assert_eq!(checkpoints(&session.events).first(), Some(&cleanly));
    kill_when_kept(session);

    // A damaged kept file (one bit of the data flipped: the middle of the
    // file is the 4 MiB resident's, written by the first copy and kept by
    // every commit appended after it): named with its damage, set aside,
    // and the session starts from the workload.
    let mut bytes = std::fs::read(&files.file).expect("kept file");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&files.file, &bytes).expect("damage the kept file");
    let session = start(&copy, &args);
    none_of(&session, EventKind::StateRecovered);
    let damaged = the_event(&session, EventKind::StateNotRecovered);
    assert_eq!(damaged.str("reason"), Some("damaged"), "{}", damaged.line);
    assert_eq!(damaged.level.as_deref(), Some("ERROR"), "{}", damaged.line);
    let message = damaged.message();
    assert!(
        message.contains(&files.file.display().to_string())
            && message.contains("checksum mismatch"),
        "the error names the file and the damage: {message}"
    );
    assert_eq!(
        std::fs::read(&files.damaged).expect("damaged file kept"),
        bytes
    );
    assert_eq!(checkpoints(&session.events).first(), Some(&fresh_state));
    drop(session.stop());
}

#[test]
fn a_killed_vulkan_session_is_resumed_bit_for_bit() {
    if !kiln_e2e::vulkan_present() {
        return;
    }
    let copy = WorkspaceCopy::new();
    let workload = workload_with_a_resident(&copy);
    let args = ["--backend", "vulkan", "--workload", &workload, "--no-tune"];
    killed_and_resumed(&copy, &args, "kernel-vulkan");
}

/// Every served backend starts from one state: after a killed cpu-only
/// session, a start serving cpu and vulkan restores cpu's last good point,
/// and vulkan, which has none of its own, starts from it too (it started
/// from the workload's buffers, and the two backends served different
/// states).
#[test]
fn a_second_backend_starts_from_the_state_the_first_restored() {
    if !kiln_e2e::vulkan_present() {
        return;
    }
    let copy = WorkspaceCopy::new();
    let workload = workload_with_a_resident(&copy);
    let (cpu, vulkan) = (kept(&copy, "kernel-cpu"), kept(&copy, "kernel-vulkan"));
    let session = start(
        &copy,
        &["--backend", "cpu", "--workload", &workload, "--no-tune"],
    );
    kill_when_kept(session);
    // The killed session's last good point, made one the workload cannot
    // give: its resident rewritten.
    let mut state = kiln::swap::snapshot_file::load(&cpu.file).expect("the kept file");
    let changed = kiln_e2e::random_bits(RESIDENT_LEN, 26);
    state.insert_tensor(
        "resident/state",
        shared_state::Tensor::from_f32(&[RESIDENT_LEN], changed.clone()),
    );
    kiln::swap::snapshot_file::save(&state, &cpu.file).expect("rewrite the kept file");
    let changed: Vec<u32> = changed.iter().map(|f| f.to_bits()).collect();
    assert_ne!(changed, resident_bits());

    let mut session = start(
        &copy,
        &[
            "--backends",
            "cpu,vulkan",
            "--workload",
            &workload,
            "--no-tune",
        ],
    );
    let recovered = the_event(&session, EventKind::StateRecovered);
    assert_eq!(recovered.module(), Some("kernel-cpu"), "{}", recovered.line);
    let on_disk = |e: &Event| e.is(EventKind::StateKept) && e.module() == Some("kernel-vulkan");
    if !session.events.iter().any(on_disk) {
        session.wait_for("vulkan's last good point on disk", BUILD_DEADLINE, on_disk);
    }
    assert!(
        resident_in(&vulkan.file) == changed,
        "vulkan serves the state cpu restored, not the workload's"
    );
    assert!(
        resident_in(&cpu.file) == changed,
        "cpu serves the state it restored"
    );
    drop(session.stop());
}

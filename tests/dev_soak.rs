//! `kiln dev` end to end, many swaps in one session: after 20 swaps the
//! process maps at most one staged module file executable and runs no more
//! threads than after the first swap. Also measures (never asserts) the
//! save-to-serving times; run with `--nocapture` to see them.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_soak -- --nocapture`.

use std::time::Duration;

use kiln::process::{mapped_files_under, thread_count};
use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, EventKind, QUIET, WorkspaceCopy, events, save_in_place, with_chunk,
};
use kiln_stats::median;

const SWAPS: usize = 20;

#[test]
fn twenty_swaps_leave_one_module_mapped_and_no_extra_threads() {
    let copy = WorkspaceCopy::new();
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    let mut session = DevSession::start(&copy, &[]);
    // Modules are loaded, and their threads run, in the worker.
    let pid = session.worker_pid();
    let stage = session.stage_dir();

    let mut figures: Vec<[f64; 6]> = Vec::new();
    let mut baseline_threads = None;
    for i in 0..SWAPS {
        // Alternate two versions: every save changes the build.
        let chunk = if i % 2 == 0 { 8192 } else { 2048 };
        save_in_place(&copy.kernels_rs(), &with_chunk(&pristine, chunk));
        let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
        let replay = session.wait_replay(BUILD_DEADLINE);
        for e in &replay {
            assert!(e.fields::<events::Replay>().pass, "swap {i}: {}", e.line);
        }
        let replay_ms = replay
            .last()
            .map(|e| e.at.duration_since(swapped.at).as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN);
        // The replaced version is kept alive through the replay (its timings
        // are interleaved with the new one's) and unloaded right after.
        let old_version = Some(swapped.fields::<events::Swapped>().from_version);
        session.wait_for(
            "the replaced version's `unloaded` event",
            BUILD_DEADLINE,
            |e| e.is(EventKind::Unloaded) && e.version() == old_version,
        );
        let field = |k: &str| swapped.f64(k).unwrap_or(f64::NAN);
        figures.push([
            field("ms"),
            field("debounce_ms"),
            field("build_ms"),
            field("stage_load_ms"),
            field("handoff_ms"),
            replay_ms,
        ]);
        // The worker also runs the reference module (one version, never
        // swapped here): count the served module's versions.
        let executable: Vec<_> = mapped_files_under(&stage, Some(pid))
            .into_iter()
            .filter(|m| m.executable && served_module(&m.path))
            .collect();
        assert!(
            executable.len() <= 1,
            "after swap {i}, {} staged modules are mapped executable: {executable:?}",
            executable.len()
        );
        if i == 0 {
            baseline_threads = Some(thread_count(Some(pid)));
        }
    }
    session.wait_quiet(QUIET, Duration::from_secs(120));
    let executable: Vec<_> = mapped_files_under(&stage, Some(pid))
        .into_iter()
        .filter(|m| m.executable && served_module(&m.path))
        .collect();
    assert_eq!(
        executable.len(),
        1,
        "exactly the serving module is mapped executable: {executable:?}"
    );
    let baseline = baseline_threads.expect("first swap measured");
    assert!(baseline > 0, "thread count readable");
    // A retired version's threads end asynchronously: give a slow machine
    // time (a leak never ends, however long it is given).
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let mut threads = thread_count(Some(pid));
    while threads > baseline && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        threads = thread_count(Some(pid));
    }
    assert!(
        threads <= baseline,
        "{threads} threads after {SWAPS} swaps, {baseline} after the first"
    );
    let retired = session
        .events
        .iter()
        .filter(|e| e.is(EventKind::Retired))
        .count();
    assert_eq!(retired, SWAPS, "every replaced version was retired");

    // Figures (measured, not asserted).
    let names = [
        "save-to-serving (swapped.ms)",
        "debounce_ms",
        "build_ms",
        "stage_load_ms",
        "handoff_ms",
        "replay after swap (ms, wall)",
    ];
    eprintln!("kiln dev over {SWAPS} swaps (medians):");
    for (j, name) in names.iter().enumerate() {
        let column: Vec<f64> = figures.iter().map(|f| f[j]).collect();
        eprintln!("  {name:32} {:10.1}", median(&column));
    }
    eprintln!("  threads after first swap {baseline}, after {SWAPS}: {threads}");
    drop(session.stop());
}

/// A staged file of the served module (`kernel-cpu-vN-HASH.so`), not of the
/// reference module the worker runs beside it.
fn served_module(path: &std::path::Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("kernel-cpu-v"))
}

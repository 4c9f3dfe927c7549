//! Verdicts through the real `kiln dev --cold` with autotuning on: saving
//! the same code again (a kept static added: a new build, a new engine, the
//! same kernels) judges every call of the bundled workload against the
//! version it replaced, timed interleaved; a saxpy made 20 ms slower reads
//! "slower". Then `kiln report` shows every version's rates against the
//! roofline, timed cold.
//!
//! What is asserted cannot depend on the machine's load. How often the same
//! code reads a change (the false-verdict rate) depends on it, and is
//! measured by the bench's same-code soak (`cargo bench -p kiln-bench --
//! verdicts`, 20+ sessions, figures in `bench/results/`), not here: an
//! earlier version of this test asserted "no clear change" with a retry,
//! which only squared the odds of a false verdict.
//!
//! One session, three versions. Run with
//! `cargo test --release -p kiln-e2e --test verdicts`.

use std::time::Duration;

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, EventKind, QUIET, WorkspaceCopy, kiln_in, replace_once,
    save_in_place,
};

/// Tuning the matmul tile on a loaded 2-core machine, then going quiet.
const SETTLE_MAX: Duration = Duration::from_secs(300);

/// The saxpy body's last line and its end (unique in kernels.rs).
const SAXPY_START: &str =
    "    pub fn saxpy(pool: &ThreadPool, a: f32, x: &[f32], y: &[f32]) -> Vec<f32> {\n";
const SAXPY_END: &str =
    "                .for_each(|((o, &xi), &yi)| *o = a * xi + yi);\n        });\n        out\n";

/// What saxpy spins for after its work (measured with `Instant`, so
/// preemption only lengthens it): ~8x its cold median here, and a fixed
/// time, so its spread does not grow with it. Against the bar of a verdict
/// (10% plus both MADs, ~1.5 ms under --cold on this machine) no load
/// short of "machine too busy" hides it.
const SAXPY_SPIN_MS: u64 = 20;

/// saxpy, slower by [`SAXPY_SPIN_MS`].
fn with_saxpy_slower(source: &str) -> String {
    let source = replace_once(
        source,
        SAXPY_START,
        &format!("{SAXPY_START}        let started = std::time::Instant::now();\n"),
    );
    replace_once(
        &source,
        SAXPY_END,
        &SAXPY_END.replace(
            "        out\n",
            &format!(
                "        let took = started.elapsed() + std::time::Duration::from_millis({SAXPY_SPIN_MS});\n        \
                 while started.elapsed() < took {{\n            \
                 std::hint::spin_loop();\n        }}\n        out\n"
            ),
        ),
    )
}

/// `kernel: verdict (ms)` lines of a replay, for failure messages.
fn lines(replay: &[Event]) -> String {
    replay
        .iter()
        .map(|e| {
            format!(
                "  {} {}: {} ({:.3} ms ± {:.3}, previous {:.3} ms, x{:.2})",
                e.u64("call").unwrap_or(0),
                e.str("kernel").unwrap_or("?"),
                e.str("verdict").unwrap_or("(none)"),
                e.f64("ms").unwrap_or(f64::NAN),
                e.f64("mad_ms").unwrap_or(f64::NAN),
                e.f64("previous_ms").unwrap_or(f64::NAN),
                e.f64("ms").unwrap_or(f64::NAN) / e.f64("previous_ms").unwrap_or(f64::NAN),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Saves `contents`, waits for the swap and the replay after it (timed
/// interleaved with the version it replaces); returns that replay's events.
fn save_and_replay(session: &mut DevSession, copy: &WorkspaceCopy, contents: &str) -> Vec<Event> {
    save_in_place(&copy.kernels_rs(), contents);
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let version = swapped.version();
    let replay = session.wait_replay(BUILD_DEADLINE);
    assert!(
        replay.iter().all(|e| e.version() == version),
        "replay of another version: {replay:?}"
    );
    for e in &replay {
        assert_eq!(e.bool("pass"), Some(true), "call failed: {}", e.line);
    }
    replay
}

/// Waits for the tuner to keep a setting, then for the session to go quiet
/// (tuning done), so the next save swaps a tuned, idle version.
fn settle(session: &mut DevSession) {
    session.wait_event(EventKind::Tuned, SETTLE_MAX);
    session.wait_quiet(QUIET, SETTLE_MAX);
}

#[test]
fn the_same_code_saved_again_is_judged_and_a_slower_saxpy_reads_slower() {
    let copy = WorkspaceCopy::new();
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    // Tuning is on by default; cold-cache timing on request.
    let mut session = DevSession::start(&copy, &["--cold"]);
    settle(&mut session);

    // 1. The same code, saved again. A comment alone builds an identical
    // library, which kiln does not swap; a kept static changes the file
    // and not one instruction of the kernels. Every timed call is judged
    // against the version it replaced (timed interleaved: the previous
    // median is there); which verdict each reads is the soak's to count.
    let same = format!(
        "{pristine}\n/// The same code, saved again.\n#[used]\nstatic SAVED_AGAIN: [u8; 13] = *b\"the same code\";\n"
    );
    let replay = save_and_replay(&mut session, &copy, &same);
    let mut versions = 2;
    let table = lines(&replay);
    println!("same code, cold, tuned:\n{table}");
    let timed: Vec<&Event> = replay
        .iter()
        .filter(|e| e.str("skipped").is_none())
        .collect();
    assert!(timed.len() >= 5, "too few timed calls:\n{table}");
    for e in &timed {
        assert!(
            matches!(
                e.str("verdict"),
                Some(
                    "no clear change"
                        | "machine too busy"
                        | "too short to compare"
                        | "too noisy to compare"
                        | "not reproduced"
                        | "slower"
                        | "faster"
                )
            ) && e.f64("previous_ms").is_some_and(|ms| ms > 0.0),
            "every call is judged against the replaced version: {}\n{table}",
            e.line
        );
    }
    settle(&mut session);

    // 2. saxpy made slower by a fixed spin reads "slower". The other calls,
    // whose code did not change (the edit moved it in the library), are
    // printed, not asserted.
    let replay = save_and_replay(&mut session, &copy, &with_saxpy_slower(&same));
    versions += 1;
    let table = lines(&replay);
    println!("saxpy {SAXPY_SPIN_MS} ms slower, cold, tuned:\n{table}");
    let saxpy = replay
        .iter()
        .find(|e| e.str("kernel") == Some("saxpy"))
        .expect("saxpy was replayed");
    // Or no verdict at all where other work took the CPUs meanwhile: never
    // "no clear change", never "faster".
    assert!(
        matches!(saxpy.str("verdict"), Some("slower" | "machine too busy")),
        "{table}"
    );
    // Its history record is written (and the tuner done) before stopping.
    settle(&mut session);
    let stopped = session.stop();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);

    // 3. `kiln report`: every version's rates against the roofline, timed
    // cold, in the table and the chart.
    let report = kiln_in(&copy, &["report".to_string()]);
    println!("{report}");
    assert!(
        report.contains("achieved rate per call"),
        "no rates in kiln report:\n{report}"
    );
    let rate_rows = report
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("cold") && l.contains("GB/s"))
        .count();
    assert_eq!(
        rate_rows, versions,
        "a cold rates row per version:\n{report}"
    );
    assert!(
        report.contains("cold caches; roofline "),
        "the peaks used are said:\n{report}"
    );
    let svg_path = report
        .lines()
        .find_map(|l| l.strip_prefix("chart: "))
        .expect("kiln report names its chart");
    let svg = std::fs::read_to_string(copy.root().join(svg_path))
        .or_else(|_| std::fs::read_to_string(svg_path))
        .expect("the chart is written");
    assert!(svg.contains("% of the roofline bound"), "{svg}");
}

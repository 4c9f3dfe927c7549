//! Several backends served at once, end to end through the real binary:
//! `kiln dev --backends cpu,vulkan` (vulkan on lavapipe here), one session.
//!
//! - both backends serve, each in its own worker, and the workload replays
//!   on both at start; their outputs are cross-compared (they agree);
//! - a save in `kernels/cpu` builds and swaps cpu only: no build of the
//!   vulkan module, no swap or new worker for it; the workload replays on
//!   both, the outputs are compared again, and the table has a column per
//!   backend;
//! - a wrong cpu kernel (kept: `--on-fail keep`) is caught twice: against
//!   the reference, and as a disagreement with vulkan on the call it broke;
//! - a shader save in `kernels/vulkan` swaps vulkan only;
//! - `undo` acts on one backend: refused with the reason while several
//!   are served, and the session goes on;
//! - each backend's history file holds its own versions only.
//!
//! Run with `cargo test --release -p kiln-e2e --test dev_backends`.

use kiln::history::History;
use kiln_e2e::dev_session::{
    BUILD_DEADLINE, DevSession, Event, EventKind, WorkspaceCopy, events, kiln_ctl,
    record_small_saxpy, save_in_place, with_chunk, with_wrong_saxpy,
};

fn module_of(e: &Event) -> &str {
    e.module().unwrap_or_default()
}

#[test]
fn a_cpu_save_swaps_cpu_only_and_both_backends_replay_and_agree() {
    let copy = WorkspaceCopy::new();
    // A small workload (one saxpy, recorded by the real `kiln record`):
    // every save replays on lavapipe too, where the bundled workload takes
    // about 36 s; what is tested here is which backend swaps and that the
    // outputs are compared, not the kernels.
    let workload_arg = record_small_saxpy(&copy);
    let mut session = DevSession::start(
        &copy,
        &[
            "--backends",
            "cpu,vulkan",
            "--on-fail",
            "keep",
            "--no-tune",
            "--workload",
            &workload_arg,
        ],
    );

    // Both serve, each in its own worker; the first replays are compared.
    let started = session.named_since(0, EventKind::WorkerStarted);
    let pid_of = |module: &str| {
        started
            .iter()
            .find(|e| module_of(e) == module)
            .and_then(|e| e.fields::<events::WorkerStarted>().pid)
            .unwrap_or_else(|| panic!("no worker_started for {module}: {started:?}"))
    };
    let (cpu_pid, vulkan_pid) = (pid_of("kernel-cpu"), pid_of("kernel-vulkan"));
    assert_ne!(cpu_pid, vulkan_pid, "one worker per backend");
    // (Started means serving: the first replays are done.)
    let first = session.named_since(0, EventKind::BackendsReplayed);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].fields::<events::BackendsReplayed>().agree,
        "{}",
        first[0].line
    );

    // A save in kernels/cpu: cpu only is built and swapped.
    let pristine = copy.read("kernels/cpu/src/kernels.rs");
    let mark = session.mark();
    save_in_place(&copy.kernels_rs(), &with_chunk(&pristine, 8192));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(module_of(&swapped), "kernel-cpu", "{}", swapped.line);
    let replayed = session.wait_event(EventKind::BackendsReplayed, BUILD_DEADLINE);
    let since = session.since(mark);
    for name in [
        EventKind::BuildStarted,
        EventKind::Swapped,
        EventKind::WorkerStarted,
        EventKind::Change,
    ] {
        let vulkan: Vec<_> = since
            .iter()
            .filter(|e| e.is(name) && module_of(e) == "kernel-vulkan")
            .collect();
        assert!(
            vulkan.is_empty(),
            "a cpu save touched the vulkan module ({name}): {vulkan:?}"
        );
    }
    assert!(
        since
            .iter()
            .any(|e| e.is(EventKind::BuildStarted) && module_of(e) == "kernel-cpu"),
        "the cpu module was built"
    );
    // The workload ran on both backends after the swap.
    for module in ["kernel-cpu", "kernel-vulkan"] {
        let replays: Vec<_> = since
            .iter()
            .filter(|e| e.is(EventKind::Replay) && module_of(e) == module)
            .collect();
        assert!(!replays.is_empty(), "no replay on {module} after the save");
        assert!(
            replays.iter().all(|e| e.fields::<events::Replay>().pass),
            "{replays:?}"
        );
    }
    // Cross-compared: vulkan's outputs against cpu's new version's.
    let cpu_label = format!("kernel-cpu-v{}", swapped.version().unwrap_or(0));
    let compared: Vec<_> = since
        .iter()
        .filter(|e| e.is(EventKind::CrossCompared))
        .collect();
    assert_eq!(compared.len(), 1, "{compared:?}");
    let check = compared[0];
    let fields = check.fields::<events::CrossCompared>();
    assert!(
        fields.backend.starts_with("kernel-vulkan-v"),
        "{}",
        check.line
    );
    assert_eq!(fields.against, cpu_label, "{}", check.line);
    assert!(fields.agree, "{}", check.line);
    assert!(fields.compared > 0, "{}", check.line);
    assert_eq!(fields.compared, fields.agreed, "{}", check.line);
    // The table: a column per backend, and the agreement.
    let table = replayed.fields::<events::BackendsReplayed>().table.clone();
    println!("{table}");
    let header = table.lines().nth(1).unwrap_or_default();
    assert!(
        header.contains(&format!("| {cpu_label}")) && header.contains("| kernel-vulkan-v"),
        "one column per backend: {table}"
    );
    assert!(header.contains("backends agree"), "{table}");
    assert!(
        table.contains(&format!("agrees with {cpu_label}")),
        "{table}"
    );

    // A wrong cpu saxpy: fails against the reference and disagrees with
    // vulkan on the saxpy call (kept: --on-fail keep).
    let mark = session.mark();
    save_in_place(&copy.kernels_rs(), &with_wrong_saxpy(&pristine));
    session.wait_event(EventKind::ReplayFailed, BUILD_DEADLINE);
    let check = session.wait_event(EventKind::CrossCompared, BUILD_DEADLINE);
    assert!(
        !check.fields::<events::CrossCompared>().agree,
        "{}",
        check.line
    );
    assert!(
        check.message().contains("DISAGREES") && check.message().contains("(saxpy)"),
        "{}",
        check.line
    );
    let replayed = session.wait_event(EventKind::BackendsReplayed, BUILD_DEADLINE);
    assert!(
        replayed
            .fields::<events::BackendsReplayed>()
            .table
            .lines()
            .any(|l| l.contains("saxpy") && l.ends_with("| NO")),
        "{}",
        replayed.line
    );
    assert!(
        session
            .since(mark)
            .iter()
            .all(|e| module_of(e) != "kernel-vulkan"
                || !e.is_any(&[EventKind::Swapped, EventKind::BuildStarted])),
        "the vulkan module is never rebuilt or swapped"
    );

    // A shader save in kernels/vulkan: vulkan only is re-staged and
    // swapped (no cargo build); both replay again.
    let mark = session.mark();
    let wgsl = copy.root().join("kernels/vulkan/shaders/saxpy.wgsl");
    let shader = copy.read("kernels/vulkan/shaders/saxpy.wgsl");
    save_in_place(&wgsl, &format!("{shader}\n// edited beside cpu\n"));
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    assert_eq!(module_of(&swapped), "kernel-vulkan", "{}", swapped.line);
    let replayed = session.wait_event(EventKind::BackendsReplayed, BUILD_DEADLINE);
    assert!(
        {
            let backends = &replayed.fields::<events::BackendsReplayed>().backends;
            backends.contains("kernel-cpu-v") && backends.contains("kernel-vulkan-v2")
        },
        "{}",
        replayed.line
    );
    assert!(
        session.since(mark).iter().all(|e| !e.is_any(&[
            EventKind::Swapped,
            EventKind::BuildStarted,
            EventKind::WorkerStarted
        ]) || module_of(e) == "kernel-vulkan"),
        "a vulkan save touched the cpu module"
    );

    // Commands that act on one backend are refused, with the reason.
    let (ok, answer) = kiln_ctl(&copy, &["undo"]);
    assert!(!ok, "{answer}");
    assert!(answer.contains("several backends are served"), "{answer}");
    let (ok, answer) = kiln_ctl(&copy, &["status"]);
    assert!(ok, "the session goes on: {answer}");

    let stopped = session.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    // The history groups versions by backend.
    let history_dir = copy.root().join("target/kiln/history");
    let cpu = History::load(&history_dir.join("kernel-cpu.json")).expect("cpu history");
    let vulkan = History::load(&history_dir.join("kernel-vulkan.json")).expect("vulkan history");
    assert_eq!(cpu.versions.len(), 3, "start, chunk, wrong saxpy: {cpu:?}");
    assert!(
        cpu.versions
            .iter()
            .all(|v| v.label.starts_with("kernel-cpu-"))
    );
    assert_eq!(vulkan.backend, "vulkan");
    assert_eq!(vulkan.versions.len(), 2, "start, shader save: {vulkan:?}");
    assert!(vulkan.versions.iter().all(|v| v.passed), "{vulkan:?}");
}

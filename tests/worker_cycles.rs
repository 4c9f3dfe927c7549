//! 200 crash-and-recover cycles through the supervisor's worker handling
//! (`IsolatedEngine`, what `kiln dev` drives): each cycle a worker serving
//! the misbehaving module aborts in the middle of a replay (a per-call mode,
//! so no rebuilds), and a new worker starts from the checkpoint. Afterwards
//! nothing has leaked in the supervisor (this test process): no child
//! processes left but the serving worker (crashed ones reaped), no file
//! descriptors or shared-memory segments beyond the session's three, no
//! staged files, no threads, and its memory flat. Every restarted engine's
//! state is the checkpoint's, bit for bit.
//!
//! Run with `cargo test --release -p kiln-e2e --test worker_cycles`.

use std::path::Path;

use kiln::isolation::isolated::IsolatedEngine;
use kiln::isolation::worker_client::WorkerError;
use kiln::process::{rss_bytes, thread_count};
use kiln::worker::protocol::StateSource;
use kiln::workload::{Workload, write};
use kiln_e2e::misbehaving::{state_tensor, worker_options};
use kiln_e2e::{module_artifact, staging};
use shared_state::{Call, Scalar, Tensor};

const MODULE: &str = "kiln-test-misbehaving";
const CYCLES: usize = 200;

/// What the supervisor holds, counted.
#[derive(Debug, PartialEq)]
struct Census {
    children: usize,
    fds: usize,
    memfds: usize,
    threads: usize,
    staged: usize,
}

fn children_of(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...: comm may hold spaces and parens.
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok())
                == Some(pid)
        })
        .count()
}

fn census(stage: &Path) -> Census {
    let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("fd dir")
        .flatten()
        .map(|e| {
            std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    Census {
        children: children_of(std::process::id()),
        fds: fds.len(),
        memfds: fds.iter().filter(|l| l.starts_with("/memfd:kiln")).count(),
        threads: thread_count(None),
        staged: std::fs::read_dir(stage).map_or(0, |d| d.count()),
    }
}

#[test]
fn two_hundred_crashes_and_restarts_leak_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut workload = Workload::new("abort-every-time");
    workload.load("state", state_tensor());
    workload.call(Call::new("count"), None);
    workload.call(
        Call::new("misbehave").param("mode", Scalar::Text("abort".into())),
        Some(Tensor::from_f32(&[1], vec![0.0])),
    );
    let file = dir.path().join("abort.kiln");
    write(&workload, &file).expect("write workload");

    let artifact = module_artifact(MODULE);
    let stage = staging("worker-cycles");
    let options = worker_options(file, Some(1 << 30));
    let mut engine = IsolatedEngine::new(options, None).expect("shared memory");
    let staged = stage.stage(MODULE, &artifact).expect("stage");
    engine
        .start(&staged, StateSource::Empty)
        .expect("first worker");
    assert_eq!(engine.load_workload_state().expect("load"), 1);
    let checkpoint = engine.take_checkpoint().expect("checkpoint");

    let mut baseline: Option<(Census, u64)> = None;
    for cycle in 0..CYCLES {
        let pid = engine.worker_pid().expect("a worker serves");
        match engine.replay(None) {
            Err(WorkerError::Down(down)) => {
                assert_eq!(down.signal(), Some("SIGABRT"), "cycle {cycle}: {down:?}");
                let running = down.running.as_ref().expect("what ran is known");
                assert_eq!(
                    running.call,
                    Some((1, "misbehave".to_string())),
                    "cycle {cycle}"
                );
            }
            other => panic!("cycle {cycle}: the replay should crash the worker: {other:?}"),
        }
        assert!(!engine.is_serving());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "cycle {cycle}: crashed worker {pid} reaped"
        );
        let staged = stage.stage(MODULE, &artifact).expect("stage");
        engine
            .start(&staged, engine.checkpoint_source())
            .unwrap_or_else(|e| panic!("cycle {cycle}: restart: {e}"));
        if cycle % 20 == 0 || cycle == CYCLES - 1 {
            let now = engine.state_hash().expect("state hash");
            assert_eq!(
                now.hash, checkpoint.hash,
                "cycle {cycle}: the restarted state is the checkpoint's"
            );
        }
        if cycle == 19 {
            baseline = Some((census(stage.path()), rss_bytes()));
        }
    }
    let (before, rss_before) = baseline.expect("baseline taken");
    let after = census(stage.path());
    let rss_after = rss_bytes();
    eprintln!(
        "after {CYCLES} cycles: {after:?}; RSS {:.1} MiB (at cycle 20: {:.1} MiB)",
        rss_after as f64 / 1048576.0,
        rss_before as f64 / 1048576.0
    );
    assert_eq!(after, before, "census at cycle 20 vs {CYCLES}");
    assert_eq!(after.children, 1, "only the serving worker runs");
    // The current checkpoint's parts: the part the start read the
    // workload's large resident into, and the one the checkpoint wrote
    // (pointing there). Superseded parts are let go, never kept as slots.
    assert_eq!(checkpoint.parts.len(), 2, "{checkpoint:?}");
    assert_eq!(
        after.memfds,
        1 + checkpoint.parts.len(),
        "status record + the current checkpoint's parts (sealed memfds are let go, not kept as slots)"
    );
    assert_eq!(
        after.staged, 2,
        "only the serving version's staged library and its .files.json"
    );
    assert!(
        rss_after < rss_before + (4 << 20),
        "supervisor memory grew from {rss_before} to {rss_after} bytes"
    );
    engine.stop_worker(std::time::Duration::from_secs(5));
    let end = census(stage.path());
    assert_eq!(end.children, 0, "the last worker exited");
    assert_eq!(end.staged, 0, "its staged file is gone");
}

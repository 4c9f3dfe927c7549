//! Autotuning through the tuner API on real built and staged modules: the
//! CPU module's matmul `tile` is tuned, kept in the engine's state, carried
//! across a swap, and served from the tuning cache the second time, but not
//! to a build whose code changed.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kiln::tuning::cache::TuneCache;
use kiln::tuning::tuner::{TuneConfig, Tuned, Tuner};
use kiln::workload::replay::{self, ReplayOptions};
use kiln::workload::{self, GenSpec, Workload};
use kiln::{EngineHandle, EngineOptions, ServedModule};
use kiln_e2e::*;
use shared_state::{Scalar, Section};

const CPU: &str = "kernel-cpu";
const REFERENCE: &str = "kernel-reference-module";

/// Timing tests of this file run one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn options() -> EngineOptions {
    EngineOptions {
        threads: 2,
        ..Default::default()
    }
}

/// Short timing: a few rounds are enough for the assertions here.
fn quick() -> TuneConfig {
    TuneConfig {
        min_rounds: 3,
        max_rounds: 8,
        max_time: Duration::from_secs(2),
    }
}

/// Generated calls of `kernel` at `dims`, with the reference module's
/// outputs as expected values.
fn workload_of(stage: &kiln::StagingDir, kernel: &str, dims: &str) -> Workload {
    let set = kiln::swap::version_files::declarations(&workspace_root()).unwrap();
    let spec = GenSpec::new(kernel, GenSpec::parse_dims(dims).unwrap(), 7, 2);
    let mut w = workload::generate(set.get(kernel).unwrap(), &spec).unwrap();
    let (reference, _) =
        EngineHandle::start(Arc::new(load_fresh(stage, REFERENCE)), &options(), None).unwrap();
    kiln::workload::replay::fill_expected(&mut w, &reference).unwrap();
    w
}

fn correctness_only() -> ReplayOptions {
    ReplayOptions {
        timing: None,
        ..ReplayOptions::default()
    }
}

/// Runs the tuner to the end, step by step, as the worker does.
fn run_to_end(tuner: &mut Tuner, handle: &EngineHandle, options: &ReplayOptions) -> Vec<Tuned> {
    let mut done = Vec::new();
    for _ in 0..1000 {
        if !tuner.pending() {
            return done;
        }
        done.extend(tuner.step(handle, options, Duration::from_millis(150)));
    }
    panic!("the tuner did not finish in 1000 steps");
}

fn note(handle: &EngineHandle, name: &str) -> Option<Scalar> {
    handle.info().unwrap().notes.get(name).cloned()
}

fn calls_of(handle: &EngineHandle, kernel: &str) -> i64 {
    note(handle, &format!("counters/calls/{kernel}"))
        .and_then(|s| s.as_i64())
        .unwrap_or(0)
}

fn kept_in_snapshot(handle: &EngineHandle, name: &str) -> Option<Scalar> {
    match handle.export_state().unwrap().get(name) {
        Some(Section::Scalar(s)) => Some(s.clone()),
        _ => None,
    }
}

#[test]
fn matmul_tile_is_tuned_kept_across_a_swap_and_served_from_the_cache() {
    let _serial = one_at_a_time();
    let stage = staging("tune-matmul");
    let cache_dir = tempfile::tempdir().unwrap();
    let workload = workload_of(&stage, "matmul", "m=96,k=80,n=72");
    let (served, _) = ServedModule::start(load_fresh(&stage, CPU), options(), None).unwrap();
    let handle = served.handle();
    replay::load_state(&handle, &workload).unwrap();
    let opts = correctness_only();

    // First run: every candidate is checked and timed.
    let mut tuner = Tuner::plan(
        &handle,
        &workload,
        &opts,
        TuneCache::at(cache_dir.path()),
        quick(),
    )
    .unwrap();
    assert!(
        tuner.pending(),
        "nothing planned; skipped: {:?}",
        tuner.skipped
    );
    let before = calls_of(&handle, "matmul");
    let done = run_to_end(&mut tuner, &handle, &opts);
    let timed_calls = calls_of(&handle, "matmul") - before;
    assert_eq!(done.len(), 1, "{done:?}");
    let tuned = &done[0];
    println!("{}", tuned.table);
    assert_eq!(
        (tuned.kernel.as_str(), tuned.param.as_str()),
        ("matmul", "tile")
    );
    assert!(!tuned.from_cache);
    let best = tuned.best.clone().expect("a candidate is chosen");
    assert!(
        ["16", "32", "64", "128"].contains(&best.as_str()),
        "{best} is not a declared candidate"
    );
    // 4 candidates x 2 calls checked, then timed rounds, then the keep call.
    assert!(
        timed_calls > 8,
        "only {timed_calls} matmul calls while tuning"
    );

    // Kept in the engine's state: its info and its exported snapshot.
    let kept = note(&handle, "tuning/matmul/tile").expect("tuning/matmul/tile in info");
    assert_eq!(kept.to_string(), best);
    let in_snapshot =
        kept_in_snapshot(&handle, "tuning/matmul/tile").expect("tuning/matmul/tile in snapshot");
    assert_eq!(in_snapshot.to_string(), best);
    drop(handle);

    // The handoff: a fresh copy of the module takes it over.
    served.swap(load_fresh(&stage, CPU)).unwrap();
    let swapped = served.handle();
    assert_eq!(
        kept_in_snapshot(&swapped, "tuning/matmul/tile").map(|s| s.to_string()),
        Some(best.clone()),
        "the kept tile did not survive the swap"
    );
    assert_eq!(
        note(&swapped, "tuning/matmul/tile").map(|s| s.to_string()),
        Some(best.clone())
    );

    // Second run, same source and declaration: served from the cache, no
    // timing (the one matmul call is the call that keeps the value).
    let mut again = Tuner::plan(
        &swapped,
        &workload,
        &opts,
        TuneCache::at(cache_dir.path()),
        quick(),
    )
    .unwrap();
    let before = calls_of(&swapped, "matmul");
    let done = run_to_end(&mut again, &swapped, &opts);
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].from_cache, "not from the cache:\n{}", done[0].table);
    assert_eq!(done[0].best.as_deref(), Some(best.as_str()));
    assert_eq!(
        calls_of(&swapped, "matmul") - before,
        1,
        "a cached tuning ran timing calls"
    );
    assert_eq!(
        std::fs::read_dir(cache_dir.path()).unwrap().count(),
        1,
        "one cache file for one tunable"
    );
}

const MISBEHAVING: &str = "kiln-test-misbehaving";

/// `tuned_double`'s declaration: `mode` 0 is fast (spins 1 ms), 1 is slow
/// (5 ms), 2 is wrong (fastest, first element off by one).
const TUNED_DOUBLE: &str = r#"
summary = "out = 2*x, with a tunable that can be slow or wrong"
inputs = ["x: f32[n]"]
outputs = ["out: f32[n]"]
work = { flops = "n", bytes = "8*n" }

[tolerance]
abs = 0.0
rel = 0.0
ulps = 0

[[tunables]]
name = "mode"
candidates = [1, 2, 0]
default = 1
"#;

#[test]
fn a_slow_candidate_and_a_wrong_one_are_never_picked() {
    let _serial = one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let decls = root.path().join("kernels/declarations");
    std::fs::create_dir_all(&decls).unwrap();
    std::fs::write(decls.join("tuned_double.toml"), TUNED_DOUBLE).unwrap();
    let set = kiln::swap::version_files::declarations(root.path()).unwrap();
    let decl = set
        .get("tuned_double")
        .expect("the test declaration parses");

    // Calls with their expected outputs (2*x), computed here.
    let spec = GenSpec::new(
        "tuned_double",
        GenSpec::parse_dims("n=20000").unwrap(),
        3,
        1,
    );
    let mut w = workload::generate(decl, &spec).unwrap();
    for step in &mut w.steps {
        if let workload::Step::Call(c) = step {
            let Some(shared_state::Arg::Tensor(x)) = c.call.args.first() else {
                panic!("a generated call takes its tensor inline");
            };
            let doubled: Vec<f32> = x.data().as_f32().unwrap().iter().map(|v| 2.0 * v).collect();
            c.expected = vec![shared_state::Tensor::from_f32(x.shape(), doubled)];
        }
    }

    let stage = staging("tune-misbehaving").for_workspace(root.path());
    let (handle, _) =
        EngineHandle::start(Arc::new(load_fresh(&stage, MISBEHAVING)), &options(), None).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let opts = correctness_only();
    let config = TuneConfig {
        min_rounds: 3,
        max_rounds: 12,
        max_time: Duration::from_secs(3),
    };
    let mut tuner =
        Tuner::plan(&handle, &w, &opts, TuneCache::at(cache_dir.path()), config).unwrap();
    assert!(
        tuner.pending(),
        "nothing planned; skipped: {:?}",
        tuner.skipped
    );
    let done = run_to_end(&mut tuner, &handle, &opts);
    assert_eq!(done.len(), 1, "{done:?}");
    let tuned = &done[0];
    println!("{}", tuned.table);
    assert_eq!(
        tuned.best.as_deref(),
        Some("0"),
        "picked {:?}, not the fast candidate:\n{}",
        tuned.best,
        tuned.table
    );
    // The table says why: the wrong one is rejected for its output.
    let line_of = |value: &str| {
        tuned
            .table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(value))
            .unwrap_or_else(|| panic!("no line for {value} in\n{}", tuned.table))
            .to_string()
    };
    assert!(
        line_of("2").contains("rejected: wrong output"),
        "{}",
        tuned.table
    );
    assert!(!line_of("1").contains("best"), "{}", tuned.table);
    assert!(line_of("0").contains("best"), "{}", tuned.table);
    // Kept in the engine.
    assert_eq!(
        note(&handle, "tuning/tuned_double/mode").and_then(|s| s.as_i64()),
        Some(0)
    );
}

/// The path `kiln dev` takes: a worker process replays the workload, plans
/// the tuning after the passing replay, and `TuneStep` requests advance it
/// until nothing is left; the second replay's tuning comes from the cache
/// (the workspace's `target/kiln/tuning/`, as in `kiln dev`).
#[test]
fn the_worker_tunes_after_a_passing_replay_and_then_from_the_cache() {
    use kiln::isolation::isolated::{IsolatedEngine, IsolationOptions};
    use kiln::isolation::worker_process::SpawnOptions;
    use kiln::logging::LogFormat;
    use kiln::worker::protocol::{StateSource, WorkerConfig};
    use kiln_e2e::dev_session::kiln_binary;

    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stage = staging("tune-worker");
    let workload = workload_of(&stage, "matmul", "m=64,k=48,n=40");
    let file = dir.path().join("matmul.kiln");
    workload::write(&workload, &file).unwrap();
    let options = IsolationOptions {
        spawn: SpawnOptions {
            program: Some(kiln_binary()),
            log_format: LogFormat::Human,
            forward_output: false,
            memory_limit: Some(4 << 30),
            ..SpawnOptions::default()
        },
        worker: WorkerConfig {
            workload: Some(file),
            timing: false,
            tune: true,
            threads: 2,
            ..WorkerConfig::default()
        },
        call_timeout: None,
    };
    let mut engine = IsolatedEngine::new(options, None).expect("shared memory");
    let staged = stage.stage(CPU, &module_artifact(CPU)).unwrap();
    engine.start(&staged, StateSource::Empty).expect("worker");
    engine.load_workload_state().expect("load");

    let tune_all = |engine: &mut IsolatedEngine| {
        let mut kept = std::collections::BTreeMap::new();
        let mut from_cache = false;
        for _ in 0..1000 {
            let p = engine.tune_step(150).expect("tune step");
            kept.extend(p.kept);
            from_cache |= p.from_cache;
            for t in &p.tables {
                println!("{t}");
            }
            if !p.more {
                return (kept, from_cache);
            }
        }
        panic!("tuning did not finish in 1000 steps");
    };

    let summary = engine.replay(None).expect("replay");
    assert!(summary.passed(), "{}", summary.table);
    let (kept, _) = tune_all(&mut engine);
    let tile = kept.get("matmul/tile").expect("matmul/tile tuned").clone();
    assert!(
        ["16", "32", "64", "128"].contains(&tile.as_str()),
        "{kept:?}"
    );

    let summary = engine.replay(None).expect("second replay");
    assert!(summary.passed(), "{}", summary.table);
    let (kept, from_cache) = tune_all(&mut engine);
    assert!(
        from_cache,
        "the second tuning was not served from the cache"
    );
    assert_eq!(kept.get("matmul/tile"), Some(&tile));
    engine.stop_worker(Duration::from_secs(10));
}

/// Where the edit goes: the end of `matmul_kernel::matmul`'s signature in
/// `kernels/cpu/src/kernels.rs` (its last parameter is the tile).
const MATMUL_SIGNATURE_END: &str = "        tile: usize,\n    ) -> Vec<f32> {\n";

/// 50 ms of sleep per call with the tile 128, at the top of the tiled
/// loop's function (3 ms was not enough: in a fresh-clone CI run beside a
/// 1 GiB state benchmark and two builds the other tiles' 96x80x72 matmul
/// took 4 to 8 ms, and 128 with its sleep read fastest).
const SLEEP_ON_128: &str =
    "        if tile == 128 { std::thread::sleep(std::time::Duration::from_millis(50)); }\n";

/// The tuning cache's stale-tile case: matmul's tiled loop lives in
/// `kernels/cpu/src/kernels.rs`, a file named after no kernel, so a key
/// made of the files named after the kernel served an edited loop the tile
/// tuned for the old one. Here that file is edited (a 50 ms sleep on tile
/// 128) in a copy of the workspace, and the edited build, planned with the
/// cache directory the pristine build was tuned into, is not served from
/// it: it times every candidate again, its key differs from the pristine
/// build's in the code hash (the staged library's bytes) and in nothing
/// else, and the value it keeps is not 128. Staging the pristine artifact
/// again gives the same code hash, and that copy is served from the cache.
///
/// It cannot flake on the cache and the keys: they depend on bytes, not
/// timing. The one timed assertion, "not 128", has a margin of 50 ms per
/// sample: every sample of 128 includes the sleep, while a sample of the
/// other tiles is one 96x80x72 matmul (well under a millisecond idle, 8 ms
/// at worst seen under heavy load); the medians of all three would need to
/// come out over 50 ms slower than 128's for it to win.
#[test]
fn an_edit_of_matmuls_shared_code_re_tunes_instead_of_serving_the_cache() {
    use kiln::LoadedModule;
    use kiln::tuning::cache::{TuneKey, TuneResult};
    use kiln::tuning::tuner::code_hash;
    use kiln_e2e::edited_module::EditedWorkspace;

    // Held through the build too: cargo next to another test's timing
    // would take a core from it.
    let _serial = one_at_a_time();
    let stage = staging("tune-edited-shared-code");
    let pristine = load_fresh(&stage, CPU);
    let copy = EditedWorkspace::copy("tune-matmul-sleep");
    copy.edit(
        "kernels/cpu/src/kernels.rs",
        MATMUL_SIGNATURE_END,
        &format!("{MATMUL_SIGNATURE_END}{SLEEP_ON_128}"),
    );
    // Staged at once: edited copies share one target directory.
    let edited = LoadedModule::open(stage_file(&stage, CPU, &copy.build(CPU)))
        .unwrap_or_else(|e| panic!("the edited module is refused: {e}"));

    let cache_dir = tempfile::tempdir().unwrap();
    let workload = workload_of(&stage, "matmul", "m=96,k=80,n=72");
    let opts = correctness_only();
    let start = |module: LoadedModule| {
        let (handle, _) = EngineHandle::start(Arc::new(module), &options(), None).unwrap();
        replay::load_state(&handle, &workload).unwrap();
        handle
    };
    // Plans with the one cache directory, runs to the end, and returns the
    // result with the number of matmul calls it made.
    let tune = |handle: &EngineHandle| {
        let mut tuner = Tuner::plan(
            handle,
            &workload,
            &opts,
            TuneCache::at(cache_dir.path()),
            quick(),
        )
        .unwrap();
        assert!(
            tuner.pending(),
            "nothing planned; skipped: {:?}",
            tuner.skipped
        );
        let before = calls_of(handle, "matmul");
        let done = run_to_end(&mut tuner, handle, &opts);
        assert_eq!(done.len(), 1, "{done:?}");
        println!("{}", done[0].table);
        (done[0].clone(), calls_of(handle, "matmul") - before)
    };

    // The pristine build: timed, into the cache.
    let handle = start(pristine);
    let pristine_hash = code_hash(&handle);
    let (first, _) = tune(&handle);
    assert!(!first.from_cache);
    let pristine_best = first.best.clone().expect("a candidate is chosen");
    drop(handle);

    // The same artifact staged again: the same code hash, served.
    let again = start(load_fresh(&stage, CPU));
    assert_eq!(
        code_hash(&again),
        pristine_hash,
        "staging the same artifact again changed its code hash"
    );
    let (served, calls) = tune(&again);
    assert!(served.from_cache, "not from the cache:\n{}", served.table);
    assert_eq!(served.best.as_deref(), Some(pristine_best.as_str()));
    assert_eq!(calls, 1, "a cached tuning ran timing calls");
    drop(again);

    // The edited build: another code hash, and every candidate timed again.
    let handle = start(edited);
    let edited_hash = code_hash(&handle);
    assert_ne!(
        edited_hash, pristine_hash,
        "an edit of kernels.rs left the code hash as it was"
    );
    let (retuned, calls) = tune(&handle);
    assert!(
        !retuned.from_cache,
        "the edited build was served the pristine build's tile:\n{}",
        retuned.table
    );
    // 4 candidates checked, then timed rounds, then the keep call.
    assert!(calls > 8, "only {calls} matmul calls while re-tuning");
    let best = retuned.best.clone().expect("a candidate is chosen");
    assert_ne!(
        best, "128",
        "the tile that sleeps 50 ms per call was kept:\n{}",
        retuned.table
    );
    assert_eq!(
        note(&handle, "tuning/matmul/tile").map(|s| s.to_string()),
        Some(best)
    );

    // Two cache files now, whose keys differ in the code hash alone.
    let mut keys: Vec<_> = std::fs::read_dir(cache_dir.path())
        .unwrap()
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            serde_json::from_str::<TuneResult>(&text).unwrap().key
        })
        .collect();
    assert_eq!(keys.len(), 2, "{keys:#?}");
    keys.sort_by_key(|k| k.code_hash != pristine_hash);
    let (old, new) = (&keys[0], &keys[1]);
    assert_eq!(old.code_hash, pristine_hash);
    assert_eq!(new.code_hash, edited_hash);
    assert_eq!(
        TuneKey {
            code_hash: new.code_hash.clone(),
            ..old.clone()
        },
        *new,
        "the keys differ in more than the code hash"
    );
}

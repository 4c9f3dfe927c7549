//! Runs the whole benchmark in its quick configuration (real modules built
//! with real cargo, real hot-lib-reloader, real child processes) and checks
//! that the report has every section, filled with finite numbers, and that
//! the things it measured behaved (right answers are checked inside the
//! run; here: what the figures say about unloading and sizes).

#[path = "../benches/alternatives/hot_lib_reloader_side.rs"]
mod hot_lib_reloader_side;

use std::path::PathBuf;

use kiln_bench::Config;
use serde_json::Value;

/// Every leaf is a finite number, a string or a bool: no `null` (which is
/// what serde_json writes for NaN and infinities).
fn assert_all_finite(v: &Value, path: &str) {
    match v {
        Value::Null => panic!("{path} is null (a non-finite figure)"),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            assert!(f.is_finite(), "{path} = {n} is not finite");
        }
        Value::Array(items) => {
            assert!(!items.is_empty(), "{path} is an empty list");
            for (i, item) in items.iter().enumerate() {
                assert_all_finite(item, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                assert_all_finite(item, &format!("{path}.{k}"));
            }
        }
        Value::String(_) | Value::Bool(_) => {}
    }
}

/// What this test's host was built with: the README's test command
/// (`cargo test --workspace`), whose features the module's build unifies
/// with (`ModuleBuilder::with_unify`), in the same target directory
/// (`artifacts::build_module`): every unit but the module is fresh there.
/// (`-p kiln-bench --test quick_run` resolves features for fewer packages:
/// the same contract build, but about 80 s of other units compiled first
/// in CI.) Run alone (`cargo test -p kiln-bench --test quick_run`), the
/// module's build compiles the workspace's tests first if they are not.
const UNIFY_WITH: [&str; 2] = ["--workspace", "--tests"];

#[test]
fn a_quick_run_reports_every_section_with_finite_numbers() {
    let workspace = kiln::workspace::built_workspace_root();
    let config_workspace = workspace.clone();
    let out_dir = kiln_bench::default_out_dir(&workspace).join("quick-test");
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut config = Config::quick(
        workspace,
        out_dir.clone(),
        PathBuf::from(env!("CARGO_BIN_EXE_kiln-bench-restart")),
    );
    config.module_unify_with = UNIFY_WITH.map(String::from).to_vec();
    let hot = hot_lib_reloader_side::HotSide::prepare(&config.workspace, &config.module_profile)
        .unwrap_or_else(|e| panic!("{e}"));
    let report = kiln_bench::run(&config, &hot).unwrap_or_else(|e| panic!("{e}"));

    let text = std::fs::read_to_string(out_dir.join("report.json")).expect("report.json");
    let json: Value = serde_json::from_str(&text).expect("report.json is JSON");
    for section in [
        "artifact_to_serving",
        "save_to_serving",
        "call_overhead",
        "handoff",
        "soak",
        "targets",
    ] {
        assert!(json.get(section).is_some(), "report.json has no {section}");
    }
    assert_all_finite(&json, "report");
    assert_eq!(json["quick"], Value::Bool(true));

    // Every configured size and checkpoint is there.
    let serving = &json["artifact_to_serving"];
    assert_eq!(serving["kiln"].as_array().unwrap().len(), 2);
    assert_eq!(serving["restart"].as_array().unwrap().len(), 2);
    // Save to serving: every edit became a new version, swapped in and
    // replayed; the restart loop loaded what kiln handed over.
    let save = &json["save_to_serving"];
    assert_eq!(save["rounds"], 2);
    let kiln_save = &save["kiln"];
    let versions: Vec<u64> = kiln_save["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(versions.len(), 2, "{save}");
    assert!(versions[0] < versions[1], "versions {versions:?}");
    for figure in [
        "debounce_ms",
        "build_ms",
        "stage_load_ms",
        "handoff_ms",
        "total_ms",
        "replay_ms",
    ] {
        assert_eq!(kiln_save[figure]["runs"], 2, "{figure}: {save}");
    }
    // The parts happen one after the other within each edit's total (with
    // two edits, medians are means: the sum of the parts' stays within).
    let median = |v: &Value| v["median"].as_f64().unwrap();
    let parts: f64 = ["debounce_ms", "build_ms", "stage_load_ms", "handoff_ms"]
        .iter()
        .map(|f| median(&kiln_save[f]))
        .sum();
    assert!(median(&kiln_save["build_ms"]) > 0.0);
    assert!(parts <= median(&kiln_save["total_ms"]), "{save}");
    assert!(kiln_save["replay_calls"].as_u64().unwrap() > 0);
    // The call table timed every call of the bundled workload on both
    // builds (in the quick run, the same build on both sides).
    let workload = kiln::workload::generate::workspace_bundled_workload(&config_workspace)
        .unwrap_or_else(|e| panic!("{e}"));
    let calls = save["call_table"]["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("call table not measured: {}", save["call_table"]));
    let workload_calls = workload
        .steps
        .iter()
        .filter(|s| matches!(s, kiln::workload::Step::Call(_)))
        .count();
    assert_eq!(calls.len(), workload_calls, "{}", save["call_table"]);
    assert!(
        calls
            .iter()
            .all(|c| c["verdict"].is_string() && c["after_ms"].as_f64().is_some_and(|ms| ms > 0.0)),
        "{}",
        save["call_table"]
    );
    let restart_save = &save["restart_loop"];
    let state = restart_save["state_bytes"].as_u64().unwrap();
    assert!(
        state > 0 && state + 4 > kiln_save["handoff_bytes"].as_u64().unwrap(),
        "{save}"
    );
    assert_eq!(restart_save["total_ms"]["runs"], 2);
    assert!(
        median(&restart_save["build_ms"]) < median(&restart_save["total_ms"]),
        "{save}"
    );

    // Section 2 says what each side compiles: the restart loop every kernel
    // of the module, as kiln's build does.
    let compiles = &save["compiles"];
    let restart_compiles = compiles["restart_loop"].as_str().unwrap();
    assert!(
        restart_compiles.contains("every kernel reachable"),
        "{save}"
    );
    assert!(restart_compiles.contains("kernel-cpu-engine"), "{save}");
    // The WGSL row swapped without a cargo build.
    assert_eq!(save["wgsl_edit"]["builds"], 0, "{save}");
    assert_eq!(save["wgsl_edit"]["all_restaged"], true, "{save}");
    assert!(
        compiles["kiln"].as_str().unwrap().contains("kernels.rs"),
        "{save}"
    );
    assert!(
        compiles["release_profile"]
            .as_str()
            .unwrap()
            .contains("incremental"),
        "{save}"
    );

    // Every kernel of the module: saxpy twice (1 and 1,024 elements), dot,
    // stencil2d, softmax (static and kiln's three ways: hot-lib-reloader's
    // library exports saxpy and matmul only), matmul last.
    let kernels = json["call_overhead"]["kernels"].as_array().unwrap();
    let names: Vec<&str> = kernels
        .iter()
        .map(|k| {
            k["kernel"]
                .as_str()
                .unwrap()
                .split([' ', ','])
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        ["saxpy", "saxpy", "dot", "stencil2d", "softmax", "matmul"]
    );
    for k in kernels {
        let ways = k["ways"].as_array().unwrap().len();
        let hot = k["ways"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["way"] == "hot-lib-reloader");
        assert_eq!(ways, if hot { 6 } else { 5 }, "{}", k["kernel"]);
        // What a replay reports for the call (timed on the engine thread).
        assert!(
            k["ways"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["way"] == kiln_bench::calls::REPLAY_WAY
                    && w["ns_per_call"]["median"].as_f64().is_some_and(|v| v > 0.0)),
            "{}",
            k["kernel"]
        );
    }
    // Every call of the bundled workload, in its order, every way (the
    // replay's targets read these): the static call, the replay's time and
    // a sample of one run alone.
    let bundled = json["call_overhead"]["bundled_workload"]
        .as_array()
        .unwrap();
    let kernels_in_order: Vec<String> = workload
        .steps
        .iter()
        .filter_map(|s| match s {
            kiln::workload::Step::Call(c) => Some(c.call.kernel.clone()),
            _ => None,
        })
        .collect();
    let timed_in_order: Vec<String> = bundled
        .iter()
        .map(|c| {
            c["call"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        timed_in_order, kernels_in_order,
        "{}",
        json["call_overhead"]
    );
    for c in bundled {
        let ways: Vec<&str> = c["ways"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["ns_per_call"]["median"].as_f64().is_some_and(|v| v > 0.0))
            .map(|w| w["way"].as_str().unwrap())
            .collect();
        assert_eq!(ways, kiln_bench::workload_calls::WAYS, "{c}");
    }
    // The empty call's row: the part of every call that is not the
    // kernel's work, all three ways.
    let fixed = &json["call_overhead"]["fixed_cost_of_a_call"];
    assert_eq!(
        fixed["ways"].as_array().map(Vec::len),
        Some(kiln_bench::workload_calls::WAYS.len()),
        "{fixed}"
    );
    let sizes: Vec<u64> = json["handoff"]["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1 << 20, 8 << 20]);
    let kiln_soak = json["soak"]["kiln"]["checkpoints"].as_array().unwrap();
    let reloads: Vec<u64> = kiln_soak
        .iter()
        .map(|c| c["reloads"].as_u64().unwrap())
        .collect();
    assert_eq!(reloads, [1, 3, 6]);
    // kiln unloads every retired version: only the serving copy is mapped.
    for c in kiln_soak {
        assert_eq!(c["mapped_executable"], 1, "{c}");
    }
    assert_eq!(
        json["soak"]["hot_lib_reloader"]["checkpoints"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // The handoff moved at least the resident state each time.
    for s in json["handoff"]["sizes"].as_array().unwrap() {
        assert!(s["handoff_gbps"]["median"].as_f64().unwrap() > 0.0);
    }

    // The printed table and the chart.
    let table = report.render();
    for heading in [
        "1. Artifact to serving",
        "2. Save to serving",
        "3. Call overhead",
        "4. Handoff throughput",
        "5. Reload soak",
        "Targets",
    ] {
        assert!(table.contains(heading), "table lacks {heading:?}:\n{table}");
    }
    let svg = std::fs::read_to_string(out_dir.join("report.svg")).expect("report.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let bars = kiln_bench::chart::bars(&report);
    assert_eq!(svg.matches("<rect x=").count(), bars.len());
    assert!(bars.iter().all(|b| b.ratio.is_finite() && b.ratio > 0.0));
}

/// A replay's sample times the run that follows untimed runs of the same
/// call on the engine's thread, back to back for at least
/// `workload::replay::WARM_SPAN` (`workload::replay::sample`), so the timed
/// run finds the engine's pool awake and busy as a program's loop of calls
/// does; a cold sample (`sample_runs` without the untimed runs, after a
/// cache flush) runs the call once.
/// Counted by the CPU engine itself (`counters/calls/KERNEL` in its notes):
/// without the untimed runs, every timed run began by waking the pool's
/// threads inside the timed span (section 3b's "one run" column). A 64-
/// element saxpy takes microseconds, so its untimed runs are many: the
/// sample lasts at least the span (a bound no load can break: the runs go
/// on until the span has passed), and with one untimed run it would end
/// long before it on an idle machine.
#[test]
fn a_sample_times_a_run_after_the_warm_span_and_a_cold_sample_its_only_run() {
    let workspace = kiln::workspace::built_workspace_root();
    let artifact = kiln_bench::artifacts::build_module(
        &workspace,
        kiln_bench::kiln_side::MODULE,
        kiln::workspace::HOST_PROFILE,
        &UNIFY_WITH.map(String::from),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let side = kiln_bench::kiln_side::KilnSide::new(&workspace, &artifact, "sample-runs")
        .unwrap_or_else(|e| panic!("{e}"));
    let served = side.serve(0).unwrap_or_else(|e| panic!("{e}"));
    let handle = served.handle();
    let call = kiln_bench::kiln_side::saxpy_call(&[1.0; 64], &[2.0; 64]);
    let mut scratch = Vec::new();
    let timed = kiln::workload::replay::timing_call(&handle, &call, 0, &mut scratch).unwrap();
    let runs = || match handle.info().unwrap().notes.get("counters/calls/saxpy") {
        Some(shared_state::Scalar::I64(n)) => *n,
        None => 0,
        Some(other) => panic!("counters/calls/saxpy is {other:?}"),
    };
    let mut samples = Vec::new();
    let before = runs();
    let started = std::time::Instant::now();
    kiln::workload::replay::sample(&handle, &timed, &mut samples).unwrap();
    let took = started.elapsed();
    let warm = runs() - before;
    assert!(
        warm >= 2,
        "a sample: untimed runs, then the timed one ({warm} runs)"
    );
    assert!(
        took >= kiln::workload::replay::WARM_SPAN,
        "the untimed runs go on for the warm span: the sample took {took:?}"
    );
    kiln::workload::replay::sample_runs(&handle, &timed, false, &mut samples).unwrap();
    assert_eq!(runs() - before, warm + 1, "a cold sample: one run");
    assert_eq!(samples.len(), 2, "one time per sample");
}

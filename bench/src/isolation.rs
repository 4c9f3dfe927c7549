//! Section 6 of the report: what running kernels in a worker process costs
//! (`kiln dev` serves from one, so a crashing or hanging kernel costs one
//! version, never the session or its state).
//!
//! - Call cost: the per-call medians of the same replay (kernel-cpu: a
//!   4-element saxpy, where overhead is everything, and a 1M one) measured
//!   in this process (`ServedModule`) and in a worker (`IsolatedEngine`),
//!   interleaved round by round. Calls in a worker are in-process calls
//!   there; the difference is the status record the watchdog reads.
//! - Crash to serving: a worker aborts in a call (the misbehaving module);
//!   from the moment the supervisor notices to a new worker serving the
//!   last good version with the checkpoint's state, for two state sizes.
//! - Checkpoint cost: writing the engine's state into the shared-memory
//!   checkpoint slot, per MiB.
//!
//! Workers run the `kiln` binary, which is built without the benchmark's
//! dev-dependencies: the modules they load are built the same way (in a
//! target directory of their own), not with the benchmark's feature
//! unification.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln::isolation::isolated::{IsolatedEngine, IsolationOptions};
use kiln::isolation::worker_client::WorkerError;
use kiln::isolation::worker_process::SpawnOptions;
use kiln::logging::LogFormat;
use kiln::worker::protocol::{StateSource, WorkerConfig};
use kiln::workload::replay::{self, ReplayOptions};
use kiln::workload::{Workload, write};
use kiln::{Staged, StagingDir};
use serde_json::{Value, json};
use shared_state::{Call, Scalar, Tensor};

use crate::config::Config;
use crate::kiln_side::{KilnSide, THREADS, saxpy_call, state_tensor};
use crate::stats::{Summary, interleaved};

const MIB: usize = 1 << 20;
const MISBEHAVING: &str = "kiln-test-misbehaving";

/// One call of the replay, both ways (ns).
#[derive(Clone, Debug)]
pub struct CallCost {
    pub call: String,
    pub in_process_ns: Summary,
    pub worker_ns: Summary,
}

/// Crash to serving for one state size (ms).
#[derive(Clone, Debug)]
pub struct Recovery {
    pub bytes: usize,
    /// From the supervisor noticing the crash to the new worker serving.
    pub crash_to_serving_ms: Summary,
}

/// Checkpoint cost for one state size.
#[derive(Clone, Debug)]
pub struct CheckpointCost {
    pub bytes: usize,
    pub ms: Summary,
}

impl CheckpointCost {
    pub fn ms_per_mib(&self) -> f64 {
        self.ms.median / (self.bytes as f64 / MIB as f64)
    }
}

#[derive(Clone, Debug)]
pub struct Isolation {
    pub calls: Vec<CallCost>,
    pub recovery: Vec<Recovery>,
    pub checkpoints: Vec<CheckpointCost>,
}

impl Isolation {
    pub fn to_json(&self) -> Value {
        json!({
            "calls": self.calls.iter().map(|c| json!({
                "call": c.call,
                "in_process_ns": c.in_process_ns.to_json(),
                "worker_ns": c.worker_ns.to_json(),
                "worker_over_in_process": c.worker_ns.median / c.in_process_ns.median,
            })).collect::<Vec<_>>(),
            "crash_to_serving": self.recovery.iter().map(|r| json!({
                "bytes": r.bytes,
                "ms": r.crash_to_serving_ms.to_json(),
            })).collect::<Vec<_>>(),
            "checkpoint": self.checkpoints.iter().map(|c| json!({
                "bytes": c.bytes,
                "ms": c.ms.to_json(),
                "ms_per_mib": c.ms_per_mib(),
            })).collect::<Vec<_>>(),
        })
    }

    /// A replay call in a worker costs no more than in-process, within the
    /// larger of 5% and the two spreads.
    pub fn targets(&self) -> Vec<crate::report::Target> {
        self.calls
            .iter()
            .map(|c| {
                let (a, b) = (&c.in_process_ns, &c.worker_ns);
                let allowed = (a.median * 0.05).max(a.mad + b.mad);
                crate::report::Target {
                    name: format!("replay call {} in a worker vs in-process", c.call),
                    met: b.median - a.median <= allowed,
                    detail: format!(
                        "{:.1} µs vs {:.1} µs (allowed +{:.1} µs: 5% or the spreads)",
                        b.median / 1e3,
                        a.median / 1e3,
                        allowed / 1e3
                    ),
                }
            })
            .collect()
    }

    /// The section's rows: (what, in-process, worker, ratio or note).
    pub fn rows(&self) -> Vec<[String; 4]> {
        let pm = |s: &Summary| format!("{:.1} ± {:.1}", s.median, s.mad);
        let mut rows = Vec::new();
        for c in &self.calls {
            rows.push([
                format!("replay call {} (µs)", c.call),
                pm(&c.in_process_ns.scaled(1e-3)),
                pm(&c.worker_ns.scaled(1e-3)),
                format!("x{:.3}", c.worker_ns.median / c.in_process_ns.median),
            ]);
        }
        for r in &self.recovery {
            rows.push([
                format!("crash to serving, {} MiB state (ms)", r.bytes / MIB),
                "-".into(),
                pm(&r.crash_to_serving_ms),
                String::new(),
            ]);
        }
        for c in &self.checkpoints {
            rows.push([
                format!("checkpoint, {} MiB state (ms)", c.bytes / MIB),
                "-".into(),
                pm(&c.ms),
                format!("{:.2} ms/MiB", c.ms_per_mib()),
            ]);
        }
        rows
    }
}

/// Builds `package` for the worker as `kiln dev` does: kiln's module
/// builder, the host's profile, a target dir of the bench's own.
fn build_for_worker(workspace: &Path, package: &str) -> Result<PathBuf, String> {
    let target = kiln::workspace::target_dir(workspace).join("kiln-bench-worker");
    crate::artifacts::build_module_into(
        workspace,
        &target,
        package,
        kiln::workspace::HOST_PROFILE,
        &[],
    )
}

fn options(kiln: &Path, workload: &Path, timing: bool) -> IsolationOptions {
    IsolationOptions {
        spawn: SpawnOptions {
            program: Some(kiln.to_path_buf()),
            log_format: LogFormat::Human,
            forward_output: false,
            memory_limit: None,
            exits: None,
        },
        worker: WorkerConfig {
            threads: THREADS,
            engine_options: BTreeMap::new(),
            workload: Some(workload.to_path_buf()),
            tolerances: None,
            timing,
            keep_outputs: false,
            ..WorkerConfig::default()
        },
        call_timeout: None,
    }
}

fn werr(e: WorkerError) -> String {
    e.to_string()
}

/// A worker serving a fresh copy of `artifact` with the workload's state.
fn serve(
    stage: &StagingDir,
    name: &str,
    artifact: &Path,
    options: IsolationOptions,
) -> Result<(IsolatedEngine, Staged), String> {
    let mut engine = IsolatedEngine::new(options, None).map_err(|e| e.to_string())?;
    let staged = stage.stage(name, artifact).map_err(|e| e.to_string())?;
    engine.start(&staged, StateSource::Empty).map_err(werr)?;
    engine.load_workload_state().map_err(werr)?;
    Ok((engine, staged))
}

pub fn measure(config: &Config, artifact: &Path) -> Result<Isolation, String> {
    let kiln = crate::artifacts::build_kiln(&config.workspace)?;
    let worker_cpu = build_for_worker(&config.workspace, crate::kiln_side::MODULE)?;
    let worker_misbehaving = build_for_worker(&config.workspace, MISBEHAVING)?;
    let dir = kiln::workspace::target_dir(&config.workspace).join("kiln-bench-isolation");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let side = KilnSide::new(&config.workspace, artifact, "isolation")?;
    let rounds = if config.quick { 3 } else { 15 };

    // Call cost: one workload, replayed here and in a worker.
    let mut calls = Workload::new("isolation-calls");
    let small = [1.0f32, 2.0, 3.0, 4.0];
    let big: Vec<f32> = (0..MIB).map(|i| (i % 7) as f32).collect();
    calls.call(saxpy_call(&small, &small), None);
    calls.call(saxpy_call(&big, &big), None);
    let calls_file = dir.join("calls.kiln");
    write(&calls, &calls_file).map_err(|e| e.to_string())?;
    let served = side.serve(0)?;
    let handle = served.handle();
    let (mut worker, _) = serve(
        &side.stage,
        crate::kiln_side::MODULE,
        &worker_cpu,
        options(&kiln, &calls_file, true),
    )?;
    let keys = ["0:saxpy", "1:saxpy"];
    let here = |_: ()| -> Result<Vec<f64>, String> {
        let report = replay::replay(&handle, &calls, &ReplayOptions::default(), None);
        let t = report.timings();
        keys.iter()
            .map(|k| {
                t.get(k)
                    .map(|s| s.median * 1e9)
                    .ok_or("no timing".to_string())
            })
            .collect()
    };
    let mut there = |_: ()| -> Result<Vec<f64>, String> {
        let report = worker.replay(None).map_err(werr)?;
        keys.iter()
            .map(|k| {
                report
                    .timings
                    .get(k)
                    .map(|s| s.median * 1e9)
                    .ok_or("no timing".to_string())
            })
            .collect()
    };
    let mut in_process: Vec<Vec<f64>> = vec![Vec::new(); keys.len()];
    let mut in_worker: Vec<Vec<f64>> = vec![Vec::new(); keys.len()];
    {
        let mut a = || -> Result<f64, String> {
            for (i, v) in here(())?.into_iter().enumerate() {
                in_process[i].push(v);
            }
            Ok(0.0)
        };
        let mut b = || -> Result<f64, String> {
            for (i, v) in there(())?.into_iter().enumerate() {
                in_worker[i].push(v);
            }
            Ok(0.0)
        };
        interleaved(1, rounds, &mut [&mut a, &mut b])?;
    }
    drop(worker);
    drop(handle);
    drop(served);
    let summary = |v: &[f64]| Summary::of(&v[v.len().saturating_sub(rounds)..]).ok_or("no samples");
    let call_costs = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Ok(CallCost {
                call: format!("{k} ({} elements)", if i == 0 { 4 } else { MIB }),
                in_process_ns: summary(&in_process[i])?,
                worker_ns: summary(&in_worker[i])?,
            })
        })
        .collect::<Result<Vec<_>, &str>>()?;

    // Crash to serving, and checkpoint cost, on the misbehaving module.
    let sizes: Vec<usize> = if config.quick {
        vec![MIB, 8 * MIB]
    } else {
        vec![MIB, 64 * MIB, 256 * MIB]
    };
    let mut recovery = Vec::new();
    let mut checkpoints = Vec::new();
    for &bytes in &sizes {
        let mut workload = Workload::new("isolation-crash");
        workload.load("state", state_tensor(bytes));
        workload.call(
            Call::new("misbehave").param("mode", Scalar::Text("abort".into())),
            Some(Tensor::from_f32(&[1], vec![0.0])),
        );
        let file = dir.join(format!("crash-{bytes}.kiln"));
        write(&workload, &file).map_err(|e| e.to_string())?;
        let (mut engine, _) = serve(
            &side.stage,
            MISBEHAVING,
            &worker_misbehaving,
            options(&kiln, &file, false),
        )?;
        let mut ms = Vec::new();
        for _ in 0..rounds {
            ms.push(engine.take_checkpoint().map_err(werr)?.ms);
        }
        checkpoints.push(CheckpointCost {
            bytes,
            ms: Summary::of(&ms).ok_or("no samples")?,
        });
        let mut restart = Vec::new();
        for _ in 0..rounds {
            let down = match engine.replay(None) {
                Err(WorkerError::Down(down)) => down,
                other => return Err(format!("the replay should crash: {other:?}")),
            };
            let staged = side
                .stage
                .stage(MISBEHAVING, &worker_misbehaving)
                .map_err(|e| e.to_string())?;
            engine
                .start(&staged, engine.checkpoint_source())
                .map_err(werr)?;
            restart.push(down.noticed.elapsed().as_secs_f64() * 1e3);
        }
        recovery.push(Recovery {
            bytes,
            crash_to_serving_ms: Summary::of(&restart).ok_or("no samples")?,
        });
        let _ = std::fs::remove_file(&file);
    }
    Ok(Isolation {
        calls: call_costs,
        recovery,
        checkpoints,
    })
}

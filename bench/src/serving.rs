//! Section 1 of the report: artifact to serving. A new build of the CPU module exists; how long
//! until calls are answered by it?
//!
//! - kiln: stage (copy + hash) + load (verify, dlopen, fingerprint) +
//!   handoff (export, create from the snapshot) + promote, then one call;
//!   retiring the old version happens after promotion and is reported
//!   apart.
//! - hot-lib-reloader: `LibReloader::update` (close the old copy, copy,
//!   hash, dlopen) and one call; it moves no state. Also from the moment
//!   the file appears, through its file watcher (debounced).
//! - restart: spawn a process that reads the state from a file (page cache
//!   warm) and answers one call.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::Config;
use crate::hot_reloader::{HotLibReloader, prime, write_new_build};
use crate::kiln_side::{KilnSide, output_f32, saxpy_call};
use crate::stats::Summary;

/// kiln's figures for one state size.
#[derive(Clone, Debug)]
pub struct KilnServing {
    pub state_bytes: usize,
    /// Artifact to first answer by the new version, retire excluded (ms).
    pub ready_ms: Summary,
    pub stage_ms: Summary,
    pub load_ms: Summary,
    /// Export + create-from-snapshot + promote: calls were held this long.
    pub handoff_ms: Summary,
    pub first_call_ms: Summary,
    /// Retiring the old version (after promotion, off the serving path).
    pub retire_ms: Summary,
}

/// The restart alternative for one state size.
#[derive(Clone, Debug)]
pub struct RestartServing {
    pub state_bytes: usize,
    pub ready_ms: Summary,
}

#[derive(Clone, Debug)]
pub struct Serving {
    pub kiln: Vec<KilnServing>,
    /// `update()` + one call.
    pub hot_update_ms: Summary,
    /// From the new file's rename to the answer, through the watcher.
    pub hot_watch_ms: Summary,
    pub restart: Vec<RestartServing>,
    pub artifact_bytes: u64,
    pub hot_describe: String,
    pub debounce_ms: u64,
}

impl Serving {
    pub fn to_json(&self) -> Value {
        json!({
            "artifact_bytes": self.artifact_bytes,
            "kiln": self.kiln.iter().map(|k| json!({
                "state_bytes": k.state_bytes,
                "ready_ms": k.ready_ms.to_json(),
                "stage_ms": k.stage_ms.to_json(),
                "load_ms": k.load_ms.to_json(),
                "handoff_ms": k.handoff_ms.to_json(),
                "first_call_ms": k.first_call_ms.to_json(),
                "retire_ms": k.retire_ms.to_json(),
            })).collect::<Vec<_>>(),
            "hot_lib_reloader": {
                "version": self.hot_describe,
                "update_and_call_ms": self.hot_update_ms.to_json(),
                "file_watch_to_answer_ms": self.hot_watch_ms.to_json(),
                "debounce_ms": self.debounce_ms,
            },
            "restart": self.restart.iter().map(|r| json!({
                "state_bytes": r.state_bytes,
                "ready_ms": r.ready_ms.to_json(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct KilnSample {
    ready: f64,
    stage: f64,
    load: f64,
    handoff: f64,
    first_call: f64,
    retire: f64,
}

fn kiln_sample(side: &KilnSide, served: &kiln::ServedModule) -> Result<KilnSample, String> {
    let t0 = Instant::now();
    let staged = side
        .stage
        .stage(crate::kiln_side::MODULE, &side.artifact)
        .map_err(|e| e.to_string())?;
    let t_staged = t0.elapsed();
    let module = kiln::LoadedModule::open(staged).map_err(|e| e.to_string())?;
    let t_loaded = t0.elapsed();
    let report = served.swap(module).map_err(|e| e.to_string())?;
    let t_swapped = t0.elapsed();
    let out = served
        .call(saxpy_call(&[1.0], &[2.0]))
        .map_err(|e| e.to_string())?;
    let t_answered = t0.elapsed();
    if output_f32(out)? != [3.5] || served.label() != report.to {
        return Err(format!(
            "{} did not answer correctly after the swap",
            report.to
        ));
    }
    Ok(KilnSample {
        ready: ms(t_answered) - report.retire_ms,
        stage: ms(t_staged),
        load: ms(t_loaded - t_staged),
        handoff: report.paused_ms,
        first_call: ms(t_answered - t_swapped),
        retire: report.retire_ms,
    })
}

fn restart_sample(exe: &Path, state_file: &Path, bytes: usize) -> Result<f64, String> {
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .arg(state_file)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading {}'s answer: {e}", exe.display()))?;
    let elapsed = ms(t0.elapsed());
    let status = child.wait().map_err(|e| e.to_string())?;
    let expected = format!("answer 3.5 state {bytes}");
    if !status.success() || line.trim() != expected {
        return Err(format!(
            "{} answered {:?} ({status}), expected {expected:?}",
            exe.display(),
            line.trim()
        ));
    }
    Ok(elapsed)
}

fn summarize(samples: &[f64], what: &str) -> Result<Summary, String> {
    Summary::of(samples).ok_or_else(|| format!("{what}: no finite samples"))
}

/// Measures every alternative, interleaved round by round.
pub fn measure(
    config: &Config,
    artifact: &Path,
    hot: &dyn HotLibReloader,
) -> Result<Serving, String> {
    let artifact_bytes_vec =
        std::fs::read(artifact).map_err(|e| format!("cannot read {}: {e}", artifact.display()))?;
    let side = KilnSide::new(&config.workspace, artifact, "serving")?;
    let served: Vec<kiln::ServedModule> = config
        .serving_state_bytes
        .iter()
        .map(|&b| side.serve(b))
        .collect::<Result<_, _>>()?;

    // hot-lib-reloader watches its own directory.
    let hot_dir = config.out_dir.join("hot-lib-reloader-serving");
    let _ = std::fs::remove_dir_all(&hot_dir);
    std::fs::create_dir_all(&hot_dir).map_err(|e| format!("{}: {e}", hot_dir.display()))?;
    let watched = hot_dir.join("libkernel_cpu.so");
    let mut counter = 0u64;
    write_new_build(&artifact_bytes_vec, &watched, counter)?;
    let mut reloader = hot.reloader(&hot_dir, "kernel_cpu", config.watch_debounce_ms)?;
    reloader.call()?;
    prime(
        reloader.as_mut(),
        &artifact_bytes_vec,
        &watched,
        &mut counter,
    )?;

    // State files for the restarted process.
    let state_files: Vec<PathBuf> = config
        .serving_state_bytes
        .iter()
        .map(|&b| {
            let path = config.out_dir.join(format!("restart-state-{b}.bin"));
            let data = crate::kiln_side::state_tensor(b);
            std::fs::write(&path, data.data().as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(path)
        })
        .collect::<Result<_, String>>()?;

    let n = config.serving_state_bytes.len();
    let mut kiln_samples: Vec<Vec<KilnSample>> = (0..n).map(|_| Vec::new()).collect();
    let mut hot_update = Vec::new();
    let mut hot_watch = Vec::new();
    let mut restart_samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let timeout = Duration::from_secs(10);
    // One step per alternative; round r starts at step r mod steps
    // (rotated, like `stats::interleaved`).
    let steps = 2 * n + 1;
    for round in 0..config.warmup + config.serving_rounds {
        let keep = round >= config.warmup;
        for k in 0..steps {
            let step = (round + k) % steps;
            if step < n {
                let sample = kiln_sample(&side, &served[step])?;
                if keep {
                    kiln_samples[step].push(sample);
                }
            } else if step == n {
                counter += 1;
                write_new_build(&artifact_bytes_vec, &watched, counter)?;
                let t0 = Instant::now();
                reloader.wait_for_change(timeout)?;
                let t_update = Instant::now();
                if !reloader.update()? {
                    return Err("hot-lib-reloader saw a change but did not reload".to_string());
                }
                reloader.call()?;
                if keep {
                    hot_update.push(ms(t_update.elapsed()));
                    hot_watch.push(ms(t0.elapsed()));
                }
            } else {
                let i = step - n - 1;
                let bytes = config.serving_state_bytes[i];
                let sample = restart_sample(&config.restart_exe, &state_files[i], bytes)?;
                if keep {
                    restart_samples[i].push(sample);
                }
            }
        }
    }
    drop(served);
    for file in &state_files {
        let _ = std::fs::remove_file(file);
    }

    let mut kiln = Vec::new();
    for (i, &b) in config.serving_state_bytes.iter().enumerate() {
        let s = &kiln_samples[i];
        let pick = |f: fn(&KilnSample) -> f64| s.iter().map(f).collect::<Vec<f64>>();
        kiln.push(KilnServing {
            state_bytes: b,
            ready_ms: summarize(&pick(|k| k.ready), "kiln ready")?,
            stage_ms: summarize(&pick(|k| k.stage), "kiln stage")?,
            load_ms: summarize(&pick(|k| k.load), "kiln load")?,
            handoff_ms: summarize(&pick(|k| k.handoff), "kiln handoff")?,
            first_call_ms: summarize(&pick(|k| k.first_call), "kiln first call")?,
            retire_ms: summarize(&pick(|k| k.retire), "kiln retire")?,
        });
    }
    let restart = config
        .serving_state_bytes
        .iter()
        .zip(&restart_samples)
        .map(|(&b, s)| {
            Ok(RestartServing {
                state_bytes: b,
                ready_ms: summarize(s, "restart")?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Serving {
        kiln,
        hot_update_ms: summarize(&hot_update, "hot-lib-reloader update")?,
        hot_watch_ms: summarize(&hot_watch, "hot-lib-reloader watch")?,
        restart,
        artifact_bytes: artifact_bytes_vec.len() as u64,
        hot_describe: hot.describe(),
        debounce_ms: config.watch_debounce_ms,
    })
}

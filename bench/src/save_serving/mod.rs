//! Section 2 of the report: save to serving. A one-line edit of a CPU
//! kernel (see [`edit`]); how long until the new version serves?
//!
//! - kiln: the real `kiln dev` on a copy of the workspace ([`kiln_dev`]);
//!   its `swapped` event splits the time into debounce, build, stage+load
//!   and handoff; the replay of the workload that follows is reported
//!   apart (the new version already serves while it runs).
//! - restart loop: `cargo build --release` of a program with the kernels
//!   compiled in, then start it, load the same amount of state from a file
//!   and answer one call ([`restart_loop`]).
//!
//! Edits alternate: kiln, restart loop, kiln, ... so drift hits both.
//!
//! Both sides compile the same kernel source with the same release profile
//! (the workspace's), and both call every kernel: the report states what
//! each side compiles ([`compiles`]).
//!
//! Then, in the same run: a WGSL edit through the real `kiln dev --backend
//! vulkan` (no cargo: the library re-staged with the new shader, compiled
//! and its pipelines created when the new engine is created), the `.cu`
//! compile path without a GPU ([`cu_compile`]), and the call table: every
//! call of the bundled workload before and after the build change
//! ([`call_table`]). Nothing here asserts a figure: the bench collects and
//! reports. Run this section alone with `cargo bench -p kiln-bench -- save`
//! (`just bench-save`).

pub mod call_table;
pub mod cu_compile;
pub mod edit;
pub mod kiln_dev;
pub mod render;
pub mod restart_loop;

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Config;
use crate::stats::Summary;
use call_table::CallTable;
use cu_compile::CuCompile;
use edit::{ConstantEdit, KERNELS_SOURCE};
use kiln_dev::{DevSession, KilnEdit, RestagedEdit, copy_sources};
use restart_loop::{RestartEdit, RestartLoop};

/// `kiln dev --debounce-ms` (its default).
pub const DEBOUNCE_MS: u64 = 50;

/// kiln's figures (ms, over the measured edits).
#[derive(Clone, Debug)]
pub struct KilnSave {
    pub debounce_ms: Summary,
    pub build_ms: Summary,
    pub stage_load_ms: Summary,
    pub handoff_ms: Summary,
    /// From the write to the `swapped` event.
    pub total_ms: Summary,
    /// kiln's own figure: from the first file event to the swap.
    pub reported_total_ms: Summary,
    /// From `swapped` to the last replay event of the version.
    pub replay_ms: Summary,
    /// State moved by the last handoff.
    pub handoff_bytes: u64,
    pub replay_calls: usize,
    /// The versions the edits became, in order.
    pub versions: Vec<u64>,
    /// How each measured edit was built (`rustc direct`, `cargo`), in order.
    pub build_paths: Vec<String>,
}

/// The restart loop's figures (ms).
#[derive(Clone, Debug)]
pub struct RestartSave {
    pub build_ms: Summary,
    pub start_load_ms: Summary,
    pub total_ms: Summary,
    /// State read from the file at each start.
    pub state_bytes: usize,
}

/// The WGSL row: kiln dev on the Vulkan module, one-line shader edits.
#[derive(Clone, Debug)]
pub struct ShaderSave {
    pub edit: String,
    pub debounce_ms: Summary,
    pub stage_ms: Summary,
    /// Engine creation (naga, pipelines) and state handoff.
    pub swap_ms: Summary,
    pub total_ms: Summary,
    pub reported_total_ms: Summary,
    pub replay_ms: Summary,
    /// `build_started` events seen during the measured edits (0 expected).
    pub builds: usize,
    /// Whether every `swapped` event said `restaged` (no build).
    pub all_restaged: bool,
    pub replay_calls: usize,
    pub versions: Vec<u64>,
}

/// A row that may not be measurable on this machine (no Vulkan, no NVRTC).
#[derive(Clone, Debug)]
pub enum Row<T> {
    Measured(T),
    NotMeasured(String),
}

/// What each side of "save to serving" compiles after an edit, and with
/// which profile.
#[derive(Clone, Debug)]
pub struct Compiles {
    /// `kernel-cpu cdylib: engine.rs, kernels.rs, lib.rs + ...`.
    pub kiln: String,
    pub restart: String,
    /// The workspace's `[profile.release]` settings, `key = value, ...`.
    pub profile: String,
}

/// What the two sides compile, read from the workspace at `root`.
pub fn compiles(root: &std::path::Path) -> Compiles {
    let src = root.join("kernels/cpu/src");
    let mut files: Vec<String> = std::fs::read_dir(&src)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".rs"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let profile = restart_loop::toml_table(&manifest, "[profile.release]")
        .map(|table| {
            table
                .lines()
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Compiles {
        kiln: format!(
            "cdylib kernel-cpu: {}, declared/*.rs (every kernel, reachable from the registry) + the \
             export glue; the engine, dispatch and snapshot code is the rlib kernel-cpu-engine, \
             compiled once (an edit rebuilds kernel-cpu only); an edit of kernel-cpu's own \
             sources runs the rustc command of cargo's last build directly, without cargo",
            files.join(", ")
        ),
        restart: restart_loop::COMPILES.to_string(),
        profile: if profile.is_empty() {
            "cargo's release defaults".to_string()
        } else {
            profile
        },
    }
}

#[derive(Clone, Debug)]
pub struct SaveToServing {
    /// What was edited.
    pub edit: String,
    /// What each side compiles.
    pub compiles: Compiles,
    pub rounds: usize,
    pub warmup: usize,
    pub kiln: KilnSave,
    pub restart: RestartSave,
    pub wgsl: Row<ShaderSave>,
    pub cu: CuCompile,
    pub calls: Row<CallTable>,
}

impl SaveToServing {
    /// Restart loop total over kiln total (medians): how many times longer
    /// a save takes to serve without kiln.
    pub fn restart_over_kiln(&self) -> f64 {
        self.restart.total_ms.median / self.kiln.total_ms.median
    }

    pub fn to_json(&self) -> Value {
        let k = &self.kiln;
        let r = &self.restart;
        json!({
            "edit": self.edit,
            "compiles": {
                "kiln": self.compiles.kiln,
                "restart_loop": self.compiles.restart,
                "release_profile": self.compiles.profile,
            },
            "wgsl_edit": render::wgsl_json(&self.wgsl),
            "cu_edit": render::cu_json(&self.cu),
            "call_table": match &self.calls {
                Row::Measured(t) => t.to_json(),
                Row::NotMeasured(why) => json!({ "not_measured": why }),
            },
            "rounds": self.rounds,
            "warmup": self.warmup,
            "kiln": {
                "debounce_setting_ms": DEBOUNCE_MS,
                "debounce_ms": k.debounce_ms.to_json(),
                "build_ms": k.build_ms.to_json(),
                "stage_load_ms": k.stage_load_ms.to_json(),
                "handoff_ms": k.handoff_ms.to_json(),
                "total_ms": k.total_ms.to_json(),
                "reported_total_ms": k.reported_total_ms.to_json(),
                "replay_ms": k.replay_ms.to_json(),
                "handoff_bytes": k.handoff_bytes,
                "replay_calls": k.replay_calls,
                "versions": k.versions,
                "build_paths": k.build_paths,
            },
            "restart_loop": {
                "build_ms": r.build_ms.to_json(),
                "start_load_ms": r.start_load_ms.to_json(),
                "total_ms": r.total_ms.to_json(),
                "state_bytes": r.state_bytes,
            },
            "restart_over_kiln": self.restart_over_kiln(),
        })
    }
}

fn summary(samples: Vec<f64>, what: &str) -> Result<Summary, String> {
    Summary::of(&samples).ok_or_else(|| format!("save to serving, {what}: no finite samples"))
}

/// Measures every row: the Rust edit on both sides, interleaved, then the
/// WGSL edit, the `.cu` compile and the call table (`artifact`: kernel-cpu
/// as the host's profile builds it). Scratch files go to
/// `out_dir/save-to-serving` (kiln dev's logs stay there); the workspace
/// copy kiln dev serves, to a temporary directory.
pub fn measure(config: &Config, artifact: &std::path::Path) -> Result<SaveToServing, String> {
    let dir = config.out_dir.join("save-to-serving");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let kiln_exe = crate::artifacts::build_kiln(&config.workspace)?;
    // The copy kiln dev serves lives outside the workspace: cargo merges the
    // `.cargo/config.toml` of every parent directory, so a copy under
    // `target/` got the workspace's rustflags twice, and the host refused
    // the modules built there (another rustflags hash).
    let scratch = tempfile::Builder::new()
        .prefix("kiln-bench-save-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let copy = scratch.path().join("workspace");
    copy_sources(&config.workspace, &copy)?;
    let mut kiln_edit = ConstantEdit::new(&copy.join(KERNELS_SOURCE))?;

    // kiln dev's first build and the restart loop's first build overlap.
    let mut dev = DevSession::spawn(
        &kiln_exe,
        &copy,
        &kiln::workspace::module_target_dir(&config.workspace),
        crate::kiln_side::THREADS,
        DEBOUNCE_MS,
        &[],
        &dir.join("kiln-dev.log"),
    )?;
    let mut restart = RestartLoop::prepare(
        &config.workspace,
        &dir.join("restart-loop"),
        &kiln::workspace::target_dir(&config.workspace).join("kiln-bench-restart-loop"),
        &dir.join("state.bin"),
        crate::kiln_side::THREADS,
    )?;
    dev.wait_ready(Duration::from_secs(600))?;

    let timeout = Duration::from_secs(180);
    let mut kiln_samples: Vec<KilnEdit> = Vec::new();
    let mut restart_samples: Vec<RestartEdit> = Vec::new();
    let mut handoff_bytes = 0;
    for round in 0..config.save_warmup + config.save_rounds {
        let k = dev.edit(&mut kiln_edit, timeout)?;
        if round == 0 {
            // The restart loop loads as much state as kiln hands over.
            restart.set_state(k.handoff_bytes as usize)?;
        }
        handoff_bytes = k.handoff_bytes;
        let r = restart.round()?;
        if round >= config.save_warmup {
            kiln_samples.push(k);
            restart_samples.push(r);
        }
    }
    let replay_calls = dev.replay_calls;
    drop(dev);

    let rust_only = rust_rows_only();
    eprintln!("kiln-bench: save to serving, WGSL edit (kiln dev --backend vulkan)");
    let wgsl = match rust_only
        .clone()
        .map_or_else(|| measure_wgsl(config, &kiln_exe, &copy, &dir), Err)
    {
        Ok(row) => Row::Measured(row),
        Err(why) => {
            eprintln!("kiln-bench: WGSL row not measured: {why}");
            Row::NotMeasured(why)
        }
    };
    eprintln!("kiln-bench: save to serving, .cu compile (NVRTC)");
    let cu = cu_compile::measure(&copy, config.save_warmup, config.save_rounds)?;
    let _ = std::fs::remove_dir_all(&copy);
    eprintln!("kiln-bench: save to serving, call table before/after");
    let calls = match rust_only.map_or_else(|| call_table::measure(config, artifact), Err) {
        Ok(t) => Row::Measured(t),
        Err(why) => {
            eprintln!("kiln-bench: call table not measured: {why}");
            Row::NotMeasured(why)
        }
    };

    let k = |f: fn(&KilnEdit) -> f64| kiln_samples.iter().map(f).collect::<Vec<f64>>();
    let r = |f: fn(&RestartEdit) -> f64| restart_samples.iter().map(f).collect::<Vec<f64>>();
    Ok(SaveToServing {
        edit: kiln_edit.describe(),
        compiles: compiles(&config.workspace),
        rounds: config.save_rounds,
        warmup: config.save_warmup,
        kiln: KilnSave {
            debounce_ms: summary(k(|e| e.debounce_ms), "kiln debounce")?,
            build_ms: summary(k(|e| e.build_ms), "kiln build")?,
            stage_load_ms: summary(k(|e| e.stage_load_ms), "kiln stage+load")?,
            handoff_ms: summary(k(|e| e.handoff_ms), "kiln handoff")?,
            total_ms: summary(k(|e| e.total_ms), "kiln total")?,
            reported_total_ms: summary(k(|e| e.reported_total_ms), "kiln reported total")?,
            replay_ms: summary(k(|e| e.replay_ms), "kiln replay")?,
            handoff_bytes,
            replay_calls,
            versions: kiln_samples.iter().map(|e| e.version).collect(),
            build_paths: kiln_samples.iter().map(|e| e.build_path.clone()).collect(),
        },
        restart: RestartSave {
            build_ms: summary(r(|e| e.build_ms), "restart build")?,
            start_load_ms: summary(r(|e| e.start_load_ms), "restart start+load")?,
            total_ms: summary(r(|e| e.total_ms), "restart total")?,
            state_bytes: restart.state_bytes(),
        },
        wgsl,
        cu,
        calls,
    })
}

/// `KILN_BENCH_SAVE_ONLY=rust`: measure the Rust edit rows (kiln and the
/// restart loop) and the `.cu` compile, leave out the WGSL row and the call
/// table (minutes); returns why they are left out.
fn rust_rows_only() -> Option<String> {
    (std::env::var("KILN_BENCH_SAVE_ONLY").as_deref() == Ok("rust"))
        .then(|| "left out (KILN_BENCH_SAVE_ONLY=rust)".to_string())
}

/// The shader edited in the WGSL row (relative to the workspace) and the
/// line flipped: the add's operands swapped (the same value, another
/// SPIR-V, so the pipeline is really created anew each time).
pub const WGSL_SOURCE: &str = "kernels/vulkan/shaders/saxpy.wgsl";
pub const WGSL_FROM: &str = "out[i] = a * x[i] + y[i];";
pub const WGSL_TO: &str = "out[i] = y[i] + a * x[i];";

/// `kiln record` of one saxpy (n = 65536) into `output`, run in `workspace`.
fn record_saxpy(
    kiln_exe: &std::path::Path,
    workspace: &std::path::Path,
    output: &std::path::Path,
) -> Result<(), String> {
    let out = std::process::Command::new(kiln_exe)
        .args(["record", "--kernel", "saxpy", "--dims", "n=65536", "-o"])
        .arg(output)
        .current_dir(workspace)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", kiln_exe.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kiln record --kernel saxpy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `kiln dev --backend vulkan` on the copy at `copy`: warm-up and measured
/// WGSL edits. An error (no Vulkan device, a failed swap) leaves the row
/// unmeasured with the reason.
fn measure_wgsl(
    config: &Config,
    kiln_exe: &std::path::Path,
    copy: &std::path::Path,
    dir: &std::path::Path,
) -> Result<ShaderSave, String> {
    let mut edit =
        ConstantEdit::swap_text(&copy.join(WGSL_SOURCE), WGSL_SOURCE, WGSL_FROM, WGSL_TO)?;
    // The quick run (the bench's test) replays one small saxpy after each
    // swap instead of the bundled workload, which takes lavapipe about a
    // minute; save to `swapped` does not include the replay.
    let quick_workload = dir.join("saxpy-quick.kiln");
    let mut args = vec!["--backend".to_string(), "vulkan".to_string()];
    if config.quick {
        record_saxpy(kiln_exe, copy, &quick_workload)?;
        args.push("--workload".to_string());
        args.push(quick_workload.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut dev = DevSession::spawn(
        kiln_exe,
        copy,
        &kiln::workspace::module_target_dir(&config.workspace),
        crate::kiln_side::THREADS,
        DEBOUNCE_MS,
        &args,
        &dir.join("kiln-dev-vulkan.log"),
    )?;
    dev.wait_ready(Duration::from_secs(900))?;
    let timeout = Duration::from_secs(120);
    let mut samples: Vec<RestagedEdit> = Vec::new();
    for round in 0..config.save_warmup + config.save_rounds {
        let e = dev.edit_source(&mut edit, timeout)?;
        if round >= config.save_warmup {
            samples.push(e);
        }
    }
    let replay_calls = dev.replay_calls;
    drop(dev);
    let s = |f: fn(&RestagedEdit) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    Ok(ShaderSave {
        edit: edit.describe(),
        debounce_ms: summary(s(|e| e.debounce_ms), "WGSL debounce")?,
        stage_ms: summary(s(|e| e.stage_ms), "WGSL stage")?,
        swap_ms: summary(s(|e| e.swap_ms), "WGSL swap")?,
        total_ms: summary(s(|e| e.total_ms), "WGSL total")?,
        reported_total_ms: summary(s(|e| e.reported_total_ms), "WGSL reported total")?,
        replay_ms: summary(s(|e| e.replay_ms), "WGSL replay")?,
        builds: samples.iter().map(|e| e.builds).sum(),
        all_restaged: samples.iter().all(|e| e.restaged),
        replay_calls,
        versions: samples.iter().map(|e| e.version).collect(),
    })
}

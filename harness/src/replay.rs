//! Replay a workload on an engine: correctness of every call against its
//! expected output, timing of every call, and the timing verdict against the
//! previous version.
//!
//! The workload's `Load` steps are the engine's state: they are loaded once
//! (when the resident is missing or has another dtype/shape) and then carried
//! across swaps like any state. Replay never changes them: a call's
//! `store_as` output goes to a scratch resident `replay/NAME`, and later
//! calls that read `NAME` read the scratch copy. So replaying twice gives
//! the same results, and a state iterated by the workload (a stencil grid)
//! starts from the loaded value each time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use shared_state::{Arg, Call, Output, Tensor};

use crate::compare::{Comparison, Tolerances, compare};
use crate::engine_handle::{CallError, EngineHandle};
use crate::timing::{Stats, TimingConfig, Verdict, human_secs, measure, verdict};
use crate::workload::{Step, Workload};

/// Prefix of the residents replay writes.
pub const SCRATCH_PREFIX: &str = "replay/";
/// Where timing runs of a `store_as` call put their output, so repeating
/// the call does not advance what later calls read.
pub const TIMING_PREFIX: &str = "replay-timing/";

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub tolerances: Tolerances,
    /// `None`: correctness only.
    pub timing: Option<TimingConfig>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            tolerances: Tolerances::default(),
            timing: Some(quick_timing()),
        }
    }
}

/// Timing settings for replays after a swap: enough runs for a verdict,
/// short enough to keep the loop fast.
pub fn quick_timing() -> TimingConfig {
    TimingConfig {
        warmup_runs: 1,
        min_runs: 7,
        min_time: std::time::Duration::from_millis(60),
        max_runs: 40,
        max_time: std::time::Duration::from_millis(600),
    }
}

/// The outcome of one call.
#[derive(Clone, Debug)]
pub struct CallResult {
    /// Index among the workload's calls.
    pub index: usize,
    /// `3:matmul`: identifies the call across versions.
    pub key: String,
    pub kernel: String,
    /// `f32[256x256] @grid -> @grid`-style description.
    pub description: String,
    pub comparison: Option<Comparison>,
    pub stats: Option<Stats>,
    pub verdict: Option<Verdict>,
    /// Median of the previous version, for the table.
    pub previous_median: Option<f64>,
    pub error: Option<String>,
}

impl CallResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.comparison.as_ref().is_none_or(Comparison::passed)
    }
}

/// The outcome of a whole replay.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    pub label: String,
    pub calls: Vec<CallResult>,
    pub ms: f64,
}

impl ReplayReport {
    pub fn passed(&self) -> bool {
        self.calls.iter().all(CallResult::passed)
    }

    pub fn first_failure(&self) -> Option<&CallResult> {
        self.calls.iter().find(|c| !c.passed())
    }

    /// Per-call timing statistics, by call key.
    pub fn timings(&self) -> BTreeMap<String, Stats> {
        self.calls
            .iter()
            .filter_map(|c| Some((c.key.clone(), c.stats.clone()?)))
            .collect()
    }

    /// A readable table, one row per call.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replay of {} ({} calls, {:.0} ms): {}",
            self.label,
            self.calls.len(),
            self.ms,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        let _ = writeln!(
            out,
            "  {:<4} {:<10} {:<34} {:<6} {:>10} {:>10} {:>10}  {}",
            "#", "kernel", "call", "result", "max abs", "median", "spread", "vs previous"
        );
        for c in &self.calls {
            let (result, abs) = match (&c.error, &c.comparison) {
                (Some(_), _) => ("ERROR".to_string(), String::new()),
                (None, Some(cmp)) => (
                    if cmp.passed() { "ok" } else { "FAIL" }.to_string(),
                    format!("{:.2e}", cmp.max_abs),
                ),
                (None, None) => ("-".to_string(), String::new()),
            };
            let (median, spread) = match &c.stats {
                Some(s) => (human_secs(s.median), format!("±{}", human_secs(s.mad))),
                None => (String::new(), String::new()),
            };
            let versus = match (&c.verdict, c.previous_median, &c.stats) {
                (Some(v), Some(prev), Some(s)) => {
                    format!("{v} ({:+.1}%)", (s.median / prev - 1.0) * 100.0)
                }
                _ => String::new(),
            };
            let mut description = c.description.clone();
            if description.len() > 34 {
                description.truncate(33);
                description.push('…');
            }
            let _ = writeln!(
                out,
                "  {:<4} {:<10} {:<34} {:<6} {:>10} {:>10} {:>10}  {}",
                c.index, c.kernel, description, result, abs, median, spread, versus
            );
            if let Some(e) = &c.error {
                let _ = writeln!(out, "       error: {e}");
            } else if let Some(cmp) = c.comparison.as_ref().filter(|c| !c.passed()) {
                let _ = writeln!(out, "       {}", cmp.summary());
            }
        }
        out
    }
}

fn describe(call: &Call) -> String {
    let args: Vec<String> = call.args.iter().map(Arg::describe).collect();
    match &call.store_as {
        Some(name) => format!("{} -> @{name}", args.join(" ")),
        None => args.join(" "),
    }
}

/// Loads the workload's resident buffers that the engine does not already
/// hold (with the same dtype and shape). Returns how many were loaded.
pub fn load_state(handle: &EngineHandle, workload: &Workload) -> Result<usize, CallError> {
    let present: BTreeMap<String, (shared_state::DType, Vec<usize>)> = handle
        .residents()?
        .into_iter()
        .map(|r| (r.name, (r.dtype, r.shape)))
        .collect();
    let mut loaded = 0;
    for step in &workload.steps {
        if let Step::Load { name, tensor } = step {
            let same = present
                .get(name)
                .is_some_and(|(d, s)| *d == tensor.dtype() && s.as_slice() == tensor.shape());
            if !same {
                handle.put_resident(name, tensor.clone())?;
                loaded += 1;
            }
        }
    }
    Ok(loaded)
}

/// Replays `workload` on `handle`. `previous` holds the last good version's
/// timings by call key, for the verdicts.
pub fn replay(
    handle: &EngineHandle,
    workload: &Workload,
    options: &ReplayOptions,
    previous: Option<&BTreeMap<String, Stats>>,
) -> ReplayReport {
    let start = Instant::now();
    let tolerances = options.tolerances.for_workload(workload);
    let mut redirect: BTreeMap<String, String> = BTreeMap::new();
    let mut calls = Vec::new();
    for (step, tolerance) in workload.steps.iter().zip(tolerances) {
        let Step::Call { call, expected } = step else {
            continue;
        };
        let index = calls.len();
        let key = format!("{index}:{}", call.kernel);
        let mut run_call = call.clone();
        for arg in &mut run_call.args {
            if let Arg::Resident(name) = arg {
                if let Some(to) = redirect.get(name) {
                    *name = to.clone();
                }
            }
        }
        if let Some(name) = &call.store_as {
            let scratch = format!("{SCRATCH_PREFIX}{name}");
            run_call.store_as = Some(scratch.clone());
            redirect.insert(name.clone(), scratch);
        }
        let mut result = CallResult {
            index,
            key: key.clone(),
            kernel: call.kernel.clone(),
            description: describe(call),
            comparison: None,
            stats: None,
            verdict: None,
            previous_median: None,
            error: None,
        };
        let output = handle.run(run_call.clone()).and_then(|out| match out {
            Output::Value(t) => Ok(t),
            Output::Stored { name, .. } => handle.read_resident(&name),
        });
        match output {
            Err(e) => result.error = Some(e.to_string()),
            Ok(got) => {
                if let (Some(want), Some(tol)) = (expected, tolerance) {
                    result.comparison = Some(compare(want, &got, &tol));
                }
                if let Some(timing) = &options.timing {
                    match time_call(handle, &run_call, index, timing) {
                        Ok(stats) => result.stats = stats,
                        Err(e) => result.error = Some(format!("while timing: {e}")),
                    }
                }
            }
        }
        if let (Some(stats), Some(prev)) = (&result.stats, previous.and_then(|p| p.get(&key))) {
            result.verdict = Some(verdict(prev, stats));
            result.previous_median = Some(prev.median);
        }
        calls.push(result);
    }
    ReplayReport {
        label: handle.label().to_string(),
        calls,
        ms: start.elapsed().as_secs_f64() * 1e3,
    }
}

/// Times a call on the kernel alone: its tensor arguments are loaded as
/// scratch residents first and its output stays on the engine (a throwaway
/// resident), so no run copies inputs or outputs through the host. The
/// scratch buffers are emptied afterwards.
fn time_call(
    handle: &EngineHandle,
    call: &Call,
    index: usize,
    timing: &TimingConfig,
) -> Result<Option<Stats>, CallError> {
    let mut timed = call.clone();
    let mut scratch = Vec::new();
    for (j, arg) in timed.args.iter_mut().enumerate() {
        if let Arg::Tensor(t) = arg {
            let name = format!("{TIMING_PREFIX}{index}/arg{j}");
            handle.put_resident(&name, t.clone())?;
            *arg = Arg::Resident(name.clone());
            scratch.push(name);
        }
    }
    let out = format!("{TIMING_PREFIX}{index}/out");
    timed.store_as = Some(out.clone());
    scratch.push(out);
    let samples = measure(timing, || handle.run(timed.clone()));
    for name in &scratch {
        handle.put_resident(name, Tensor::from_f32(&[0], Vec::new()))?;
    }
    Ok(Stats::from_samples(&samples?))
}

/// Emits one `replay` event per call (and nothing else).
pub fn log_events(report: &ReplayReport, module: &str, version: u64) {
    for c in &report.calls {
        let cmp = c.comparison.as_ref();
        tracing::info!(
            target: "kiln::replay",
            event = "replay",
            module,
            version,
            call = c.index,
            kernel = %c.kernel,
            pass = c.passed(),
            max_abs_err = cmp.map(|c| c.max_abs),
            max_rel_err = cmp.map(|c| c.max_rel),
            max_ulps = cmp.map(|c| c.max_ulps),
            mismatches = cmp.map(|c| c.mismatches),
            ms = c.stats.as_ref().map(|s| s.median * 1e3),
            mad_ms = c.stats.as_ref().map(|s| s.mad * 1e3),
            verdict = c.verdict.map(|v| v.to_string()),
            error = c.error.as_deref(),
            "replay {} call {} {}: {}",
            report.label,
            c.index,
            c.kernel,
            if c.passed() { "pass" } else { "FAIL" }
        );
    }
}

/// The tensor a workload step's expected output should be compared to.
pub fn expected_of(step: &Step) -> Option<&Tensor> {
    match step {
        Step::Call { expected, .. } => expected.as_ref(),
        Step::Load { .. } => None,
    }
}

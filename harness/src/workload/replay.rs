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
//! starts from the loaded value each time. Scratch is not state: it stays
//! in the engine until the next replay stores over it (the tuner reads it)
//! and is left out of checkpoints, state files, swaps and the state hash
//! ([`crate::swap::state_hash`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shared_state::{Arg, Call, DType, KernelDecl, Tensor};

use crate::events::{self, emit};
use crate::machine::recorded::{CallRate, RateBasis, ReplayRates};
use crate::machine::replay_roof::{ColdFlush, RoofSource};
use crate::machine::{Achieved, Arithmetic, Bound, Roof, Work};
use crate::swap::engine_handle::{CallError, EngineHandle};
use crate::workload::compare::{Comparison, Tolerance, Tolerances, compare};
use crate::workload::reference::{ExpectedFrom, outputs_of};
use crate::workload::replay_table::{CallLine, ReplayTable};
use crate::workload::timing::{
    Against, Ratio, Stats, TimingConfig, Timings, Verdict, busier, verdict_interleaved,
    verdict_recorded,
};
use crate::workload::{CallStep, Step, Workload};

/// Prefix of the residents replay writes (`replay/NAME`), and where timing
/// runs of a `store_as` call put their output, so repeating the call does
/// not advance what later calls read (`replay-timing/`). Both are scratch,
/// not state: no checkpoint, state file, swap or state hash carries them
/// ([`crate::swap::state_hash`]).
pub use crate::swap::state_hash::{SCRATCH_PREFIX, TIMING_PREFIX};

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub tolerances: Tolerances,
    /// `None`: correctness only.
    pub timing: Option<TimingConfig>,
    /// Keep every call's output in the report (to record a session).
    pub keep_outputs: bool,
    /// `--reference BACKEND`: every call's expected outputs come from this
    /// engine (another backend's module), run on the same inputs.
    pub cross_reference: Option<EngineHandle>,
    /// The reference module: expected outputs of the calls whose workload
    /// stores none.
    pub reference: Option<EngineHandle>,
    /// Told before every kernel call replay makes.
    pub watch: CallWatch,
    /// The roof achieved rates are judged against (or why there is none).
    pub roof: RoofSource,
    /// `--cold`: flush the caches before every timed run (not timed).
    pub cold: Option<ColdFlush>,
}

/// Told before every kernel call replay makes: the engine's label, the
/// call's index among the workload's calls, its kernel. `kiln dev`'s worker
/// uses it to keep the status record its supervisor's watchdog reads.
#[derive(Clone, Default)]
pub struct CallWatch(Option<std::sync::Arc<WatchFn>>);

/// `(engine label, call index, kernel)`.
type WatchFn = dyn Fn(&str, usize, &str) + Send + Sync;

impl CallWatch {
    pub fn new(f: impl Fn(&str, usize, &str) + Send + Sync + 'static) -> CallWatch {
        CallWatch(Some(std::sync::Arc::new(f)))
    }

    fn before(&self, label: &str, index: usize, kernel: &str) {
        if let Some(f) = &self.0 {
            f(label, index, kernel);
        }
    }

    /// [`Self::before`] for the same call, to be told later (on another
    /// thread).
    fn again(&self, label: &str, index: usize, kernel: &str) -> impl Fn() + Send + 'static {
        let (watch, label, kernel) = (self.clone(), label.to_string(), kernel.to_string());
        move || watch.before(&label, index, &kernel)
    }
}

impl std::fmt::Debug for CallWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CallWatch(set)"
        } else {
            "CallWatch(none)"
        })
    }
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            tolerances: Tolerances::default(),
            timing: Some(quick_timing()),
            keep_outputs: false,
            cross_reference: None,
            reference: None,
            watch: CallWatch::default(),
            roof: RoofSource::default(),
            cold: None,
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
    /// The median over the previous version's, with its interval, and how
    /// the previous one was timed (what the verdict looked at).
    pub ratio: Option<Ratio>,
    pub error: Option<String>,
    /// The call as the workload has it, and what it produced (only with
    /// [`ReplayOptions::keep_outputs`]).
    pub recorded: Option<(Call, Tensor)>,
    /// Where the expected outputs came from.
    pub expected_from: ExpectedFrom,
    /// Trials that passed, of trials run.
    pub trials: (usize, usize),
    /// Why the call was not run (not a failure): recorded for an old
    /// signature, or not on this backend yet.
    pub skipped: Option<String>,
    /// Flops and bytes of the call, from its declaration's `work`
    /// expressions over the call's dims.
    pub work: Option<Work>,
    /// Achieved rates (and % of the roofline bound when peaks are known)
    /// at the median time.
    pub point: Option<Achieved>,
}

impl CallResult {
    pub fn passed(&self) -> bool {
        self.skipped.is_some()
            || (self.error.is_none() && self.comparison.as_ref().is_none_or(Comparison::passed))
    }
}

/// The outcome of a whole replay.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    pub label: String,
    pub calls: Vec<CallResult>,
    pub ms: f64,
    /// Warm or cold, the flush, the roof (timed replays only).
    pub timing_header: Option<String>,
    /// The share of the CPUs other work used while the calls were timed
    /// (timed replays only; `None` where /proc does not say).
    pub other_work_share: Option<f64>,
    /// The peaks the calls were judged against (timed replays with
    /// measured peaks only).
    pub roof: Option<Roof>,
}

impl ReplayReport {
    pub fn passed(&self) -> bool {
        self.calls.iter().all(CallResult::passed)
    }

    pub fn first_failure(&self) -> Option<&CallResult> {
        self.calls.iter().find(|c| !c.passed())
    }

    /// The calls that were skipped, with why.
    pub fn skipped(&self) -> impl Iterator<Item = &CallResult> {
        self.calls.iter().filter(|c| c.skipped.is_some())
    }

    /// Per-call timing statistics, by call key, with the load they were
    /// measured under.
    pub fn timings(&self) -> Timings {
        Timings {
            calls: self
                .calls
                .iter()
                .filter_map(|c| Some((c.key.clone(), c.stats.clone()?)))
                .collect(),
            other_work_share: self.other_work_share,
        }
    }

    /// What a version's history keeps of this replay's rates: each timed
    /// call's, by call key, and (a timed replay only) what they were judged
    /// against. `options` are the replay's own.
    pub fn rates(&self, options: &ReplayOptions) -> ReplayRates {
        ReplayRates {
            calls: self
                .calls
                .iter()
                .filter_map(|c| Some((c.key.clone(), CallRate::of(c.point.as_ref()?))))
                .collect(),
            basis: options
                .timing
                .is_some()
                .then(|| RateBasis::new(options.cold.is_some(), options.roof.peaks())),
        }
    }

    /// The table as data (sent to the supervisor, rendered there).
    pub fn table_data(&self) -> ReplayTable {
        ReplayTable {
            label: self.label.clone(),
            ms: self.ms,
            passed: self.passed(),
            timing_header: self.timing_header.clone(),
            lines: self.lines(),
        }
    }

    /// The table's line of every call.
    pub fn lines(&self) -> Vec<CallLine> {
        self.calls
            .iter()
            .map(|c| {
                let result = match (&c.skipped, &c.error, &c.comparison) {
                    (Some(_), _, _) => "SKIP",
                    (None, Some(_), _) => "ERROR",
                    (None, None, Some(cmp)) if cmp.passed() => "ok",
                    (None, None, Some(_)) => "FAIL",
                    (None, None, None) => "-",
                };
                let [gbs, gflops, intensity, mut roof] =
                    crate::machine::columns::cells(c.point.as_ref());
                let above = c.point.filter(|p| p.percent.is_finite() && p.above_roof());
                if c.point.is_some_and(|p| !p.percent.is_finite()) {
                    roof = "-".into();
                } else if let Some(p) = above {
                    roof = format!("{:.0}%*", p.percent);
                }
                let detail = match (&c.error, &c.comparison) {
                    (Some(e), _) => Some(format!("error: {e}")),
                    (None, Some(cmp)) if !cmp.passed() => Some(cmp.summary()),
                    _ => None,
                };
                CallLine {
                    index: c.index,
                    kernel: c.kernel.clone(),
                    description: c.description.clone(),
                    result: result.to_string(),
                    max_abs: c
                        .comparison
                        .as_ref()
                        .filter(|_| c.skipped.is_none() && c.error.is_none())
                        .map(|cmp| cmp.max_abs),
                    median: c.stats.as_ref().map(|s| s.median),
                    mad: c.stats.as_ref().map(|s| s.mad),
                    verdict: c.verdict.map(|v| v.to_string()),
                    change_percent: match (c.previous_median, &c.stats) {
                        (Some(prev), Some(s)) => Some((s.median / prev - 1.0) * 100.0),
                        _ => None,
                    },
                    ratio: c.ratio,
                    rates: [gbs, gflops, intensity, roof],
                    above_roof: above.map(|p| p.roofline_text()),
                    skipped: c.skipped.clone(),
                    trials: c.trials,
                    expected_from: c.expected_from.to_string(),
                    detail,
                }
            })
            .collect()
    }

    /// A readable table, one row per call.
    pub fn table(&self) -> String {
        self.table_data().render()
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

/// Runs every trial of every call of `workload` on `reference` (its loads
/// first) and stores the outputs as the expected ones. A call with
/// `store_as` gets the value the resident holds after it. An error names
/// the step.
pub fn fill_expected(workload: &mut Workload, reference: &EngineHandle) -> Result<(), String> {
    load_state(reference, workload).map_err(|e| format!("reference: {e}"))?;
    for (i, step) in workload.steps.iter_mut().enumerate() {
        let Step::Call(c) = step else { continue };
        for t in 0..c.trial_count() {
            let (mut call, _) = c.trial(t);
            if t > 0 && call.store_as.is_some() {
                call.store_as = Some(format!("reference-trial/{i}"));
            }
            let out = reference
                .run(call)
                .and_then(|o| outputs_of(reference, o))
                .map_err(|e| format!("step {i} ({}), trial {t}: {e}", c.call.kernel))?;
            if t == 0 {
                c.expected = out;
            } else {
                c.trials[t - 1].expected = out;
            }
        }
    }
    Ok(())
}

/// What the timings of a replay are compared with.
#[derive(Clone, Copy)]
pub enum Baseline<'a> {
    /// Nothing: no verdicts.
    None,
    /// Timings recorded earlier (by call key). Drift of the machine between
    /// the two measurements shows up as a change; a baseline measured
    /// while the machine was busy gives no verdicts.
    Recorded(&'a Timings),
    /// The previous version, still alive: each call is timed on both,
    /// interleaved (old, new, old, new, ...), so drift hits both alike.
    Interleaved(&'a EngineHandle),
}

/// Replays `workload` on `handle`. `previous` holds the last good version's
/// timings by call key, for the verdicts.
pub fn replay(
    handle: &EngineHandle,
    workload: &Workload,
    options: &ReplayOptions,
    previous: Option<&Timings>,
) -> ReplayReport {
    let baseline = previous.map_or(Baseline::None, Baseline::Recorded);
    replay_with(handle, workload, options, baseline)
}

/// Replays `workload` on `handle`, comparing timings with `baseline`.
pub fn replay_with(
    handle: &EngineHandle,
    workload: &Workload,
    options: &ReplayOptions,
    baseline: Baseline<'_>,
) -> ReplayReport {
    let start = Instant::now();
    let declared = handle.module().staged.files.kernels.clone();
    let backend = handle.module().staged.module.clone();
    let implemented: Option<Vec<String>> = handle.info().ok().map(|i| i.kernels);
    // The reference engines see the workload's state, like the served one.
    for engine in [&options.cross_reference, &options.reference]
        .into_iter()
        .flatten()
    {
        if let Err(e) = load_state(engine, workload) {
            tracing::warn!(
                "{}: cannot load the workload's buffers: {e}",
                engine.label()
            );
        }
    }
    // Dtype and shape of each resident, for binding calls to declarations.
    let mut shapes: BTreeMap<String, (DType, Vec<usize>)> = handle
        .residents()
        .map(|r| {
            r.into_iter()
                .map(|r| (r.name, (r.dtype, r.shape)))
                .collect()
        })
        .unwrap_or_default();
    let mut redirect: BTreeMap<String, String> = BTreeMap::new();
    let mut calls: Vec<CallResult> = Vec::new();
    let mut to_time: Vec<(usize, Call)> = Vec::new();
    for step in &workload.steps {
        let step = match step {
            Step::Load { name, tensor } => {
                shapes.insert(name.clone(), (tensor.dtype(), tensor.shape().to_vec()));
                continue;
            }
            Step::Call(c) => c,
        };
        let call = &step.call;
        let index = calls.len();
        let mut result = CallResult {
            index,
            key: format!("{index}:{}", call.kernel),
            kernel: call.kernel.clone(),
            description: describe(call),
            comparison: None,
            stats: None,
            verdict: None,
            previous_median: None,
            ratio: None,
            error: None,
            recorded: None,
            expected_from: ExpectedFrom::Unchecked,
            trials: (0, step.trial_count()),
            skipped: None,
            work: None,
            point: None,
        };
        let decl = declared.get(&call.kernel);
        result.skipped = skip_reason(step, decl, implemented.as_deref(), &backend);
        if result.skipped.is_some() {
            calls.push(result);
            continue;
        }
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
        let dims = decl.and_then(|d| bind_dims(d, &run_call, &shapes));
        result.work = decl
            .zip(dims.as_ref())
            .and_then(|(d, dims)| work_of(d, dims));
        let mut first_failure: Option<Comparison> = None;
        let mut first: Option<Comparison> = None;
        for t in 0..step.trial_count() {
            let (mut trial_call, stored) = step.trial(t);
            trial_call.args = run_call
                .args
                .iter()
                .zip(trial_call.args)
                .map(|(run, trial)| match trial {
                    Arg::Tensor(t) => Arg::Tensor(t),
                    Arg::Resident(_) => run.clone(),
                })
                .collect();
            trial_call.store_as = match t {
                0 => run_call.store_as.clone(),
                _ => call
                    .store_as
                    .as_ref()
                    .map(|_| format!("{SCRATCH_PREFIX}trial/{index}")),
            };
            options.watch.before(handle.label(), index, &call.kernel);
            let got = match handle
                .run(trial_call.clone())
                .and_then(|o| outputs_of(handle, o))
            {
                Ok(got) => got,
                Err(e) => {
                    result.error = Some(format!("trial {t}: {e}"));
                    break;
                }
            };
            if t == 0 {
                if let (Some(name), Some(out)) = (&run_call.store_as, got.first()) {
                    shapes.insert(name.clone(), (out.dtype(), out.shape().to_vec()));
                }
                if options.keep_outputs {
                    if let Some(out) = got.first() {
                        result.recorded = Some((call.clone(), out.clone()));
                    }
                }
                if options.timing.is_some() {
                    to_time.push((index, run_call.clone()));
                }
            }
            let (want, from) = match expected_for(options, &trial_call, stored, t, decl.is_some()) {
                Ok(found) => found,
                Err(e) => {
                    result.error = Some(format!("trial {t}: reference failed: {e}"));
                    break;
                }
            };
            result.expected_from = from;
            let Some(want) = want else {
                result.trials.0 += 1;
                continue;
            };
            let cmp = compare_outputs(options, decl, &call.kernel, dims.as_ref(), &want, &got);
            if cmp.passed() {
                result.trials.0 += 1;
            } else if first_failure.is_none() {
                first_failure = Some(cmp.clone());
            }
            first.get_or_insert(cmp);
        }
        result.comparison = first_failure.or(first);
        calls.push(result);
    }
    let mut other_work_share = None;
    // A recorded baseline's own load: judged as busy as the busier side.
    let baseline_share = match baseline {
        Baseline::Recorded(p) => p.other_work_share,
        _ => None,
    };
    if let Some(timing) = &options.timing {
        let old = match baseline {
            Baseline::Interleaved(old) => Some(old),
            _ => None,
        };
        let cold = options.cold.as_ref();
        let (timed_calls, other_share) =
            time_calls(handle, old, &to_time, timing, &options.watch, cold);
        other_work_share = other_share;
        // Both kinds of baseline are another engine or another time:
        // judged with the between-runs rule (two engines of the same code
        // differ by memory layout alone; interleaving removes drift only).
        let judge = |p: &Stats, s: &Stats, other_share: Option<f64>| {
            let verdict = match baseline {
                Baseline::Interleaved(_) => verdict_interleaved(p, s),
                _ => verdict_recorded(p, s),
            };
            verdict
                .unless_busy(busier(other_share, baseline_share), s.median / p.median)
                .unless_too_short(p.median, s.median)
                .unless_too_noisy(s.median / p.median)
        };
        // A change read against the engine beside it is timed again, both
        // engines interleaved as before, and reported only if the second
        // timing reads it too (`Verdict::confirmed_by`).
        let changed: Vec<(usize, Call)> = timed_calls
            .iter()
            .filter_map(|(index, timed)| match (timed, old) {
                (Ok((Some(s), Some(p))), Some(_)) if judge(p, s, other_share).is_change() => {
                    to_time.iter().find(|(i, _)| i == index).cloned()
                }
                _ => None,
            })
            .collect();
        let mut again: BTreeMap<usize, Verdict> = BTreeMap::new();
        if !changed.is_empty() {
            let (retimed, share) = time_calls(handle, old, &changed, timing, &options.watch, cold);
            for (index, timed) in retimed {
                if let Ok((Some(s), Some(p))) = timed {
                    again.insert(index, judge(&p, &s, share));
                }
            }
        }
        for (index, timed) in timed_calls {
            let result = &mut calls[index];
            match timed {
                Ok((stats, old_stats)) => {
                    let prev = match baseline {
                        Baseline::Recorded(p) => p.get(&result.key).cloned(),
                        _ => old_stats,
                    };
                    if let (Some(s), Some(p)) = (&stats, &prev) {
                        let verdict = judge(p, s, other_share);
                        let confirmed = verdict.confirmed_by(again.get(&index).copied());
                        if confirmed != verdict {
                            tracing::debug!(
                                "call {index} ({}): read {verdict} at x{:.2}, then {} on a second timing",
                                result.key,
                                s.median / p.median,
                                again[&index]
                            );
                        }
                        result.verdict = Some(confirmed);
                        result.previous_median = Some(p.median);
                        let against = match baseline {
                            Baseline::Interleaved(_) => Against::Interleaved,
                            _ => Against::Recorded,
                        };
                        result.ratio = Ratio::of(p, s, against);
                    }
                    result.point = stats.as_ref().zip(result.work).and_then(|(s, w)| {
                        options
                            .roof
                            .point(s.median, w)
                            .or_else(|| RoofSource::rates_only(s.median, w))
                    });
                    result.stats = stats;
                }
                Err(e) => result.error = Some(format!("while timing: {e}")),
            }
        }
    }
    let timing_header = options.timing.as_ref().map(|_| {
        let header = crate::machine::columns::timing_header(
            options.cold.as_ref().map(|c| &c.cost),
            options.roof.peaks(),
        );
        let header = match &options.roof {
            RoofSource::Missing(why) => header.replace("peaks not measured yet", why),
            RoofSource::Measured(_) => header,
        };
        let header = format!("{header}; {TIMED_SPAN}");
        let busy = |share: f64| share > crate::workload::timing::BUSY_SHARE;
        let too_busy = " (machine too busy to judge changes)";
        let header = match other_work_share {
            Some(share) => format!(
                "{header}; other work used {:.0}% of the CPUs meanwhile{}",
                share * 100.0,
                if busy(share) { too_busy } else { "" }
            ),
            None => header,
        };
        match baseline_share {
            Some(share) if busy(share) => format!(
                "{header}; the previous timings were taken while other work used {:.0}% \
                 of the CPUs{too_busy}",
                share * 100.0
            ),
            _ => header,
        }
    });
    ReplayReport {
        label: handle.label().to_string(),
        calls,
        ms: start.elapsed().as_secs_f64() * 1e3,
        timing_header,
        other_work_share,
        roof: options
            .timing
            .as_ref()
            .and(options.roof.peaks())
            .map(Roof::of),
    }
}

/// The flops and bytes of a call from its declaration's `work`
/// expressions over the call's dims (`None` when neither is declared), and
/// the arithmetic of its flops by its inputs' dtypes (which compute peak
/// judges it).
pub fn work_of(decl: &KernelDecl, dims: &shared_state::Dims) -> Option<Work> {
    let eval = |e: &Option<shared_state::Expr>| {
        e.as_ref().and_then(|e| e.eval(dims).ok()).map(|v| v as f64)
    };
    let work = Work {
        flops: eval(&decl.work.flops),
        bytes: eval(&decl.work.bytes),
        arithmetic: Arithmetic::of_inputs(decl.inputs.iter().map(|t| t.dtype)),
    };
    (work.flops.is_some() || work.bytes.is_some()).then_some(work)
}

/// Timing statistics of one call: on the new version, and on the old one
/// when it was timed interleaved.
type TimedStats = (Option<Stats>, Option<Stats>);

/// A call's index and its timing statistics (or why it could not be timed).
type TimedCall = (usize, Result<TimedStats, CallError>);

/// One call being timed: the call as run on each engine (its tensor
/// arguments loaded as scratch residents, its output kept on the engine in
/// a throwaway resident, so no run copies data through the host), and the
/// samples so far.
struct Timed {
    index: usize,
    new_call: Call,
    old_call: Option<Call>,
    new_samples: Vec<Duration>,
    old_samples: Vec<Duration>,
    error: Option<CallError>,
    /// Why the previous version could not run the call (a kernel it does
    /// not have yet, a failure of its own): the call is timed on the new
    /// version alone, with no verdict. The previous version's failure
    /// costs the comparison, never the new version.
    old_error: Option<CallError>,
}

/// What a timed call's time covers, as the replay's header says it: the
/// call on the engine's thread right after untimed runs of it there, 0.3
/// ms of them and at least one ([`sample`]: its pool awake, as in a program's
/// loop of calls), so the
/// kernel with the output it allocates (as the same function linked into a
/// program allocates it), not the hand-off to that thread and back nor the
/// output's release (`cargo bench -p kiln-bench -- calls` compares it with
/// the same kernel linked statically). Cold, the call's only run after the
/// flush ([`sample_runs`]), the pool's wake-up included.
pub const TIMED_SPAN: &str = "each time is the call on the engine's thread right after 0.3 ms of untimed runs of it (at least one; cold: its only run), its output's allocation included, the hand-off not";

/// The call as a replay times it on `engine`: its tensor arguments put as
/// scratch residents (named into `scratch`), its output stored in a
/// throwaway resident. Public for the benchmark, which times the bundled
/// workload's calls exactly so against the same kernels linked statically.
pub fn timing_call(
    engine: &EngineHandle,
    call: &Call,
    index: usize,
    scratch: &mut Vec<String>,
) -> Result<Call, CallError> {
    let mut timed = call.clone();
    for (j, arg) in timed.args.iter_mut().enumerate() {
        if let Arg::Tensor(t) = arg {
            let name = format!("{TIMING_PREFIX}{index}/arg{j}");
            engine.put_resident(&name, t.clone())?;
            *arg = Arg::Resident(name.clone());
            scratch.push(name);
        }
    }
    let out = format!("{TIMING_PREFIX}{index}/out");
    timed.store_as = Some(out.clone());
    scratch.push(out);
    Ok(timed)
}

/// Times one call on the engine's thread, in one job there, handed over
/// [`SETTLE`] after the caller asked: untimed runs of the same call first,
/// back to back for at least [`WARM_SPAN`] (one run where a run takes
/// longer), then the timed run, as a program's loop of calls runs them
/// (the static call of `cargo bench -p kiln-bench -- calls`); then the
/// output it stored is released, outside the timed span.
///
/// Why the untimed runs: a CPU engine's rayon threads go to sleep within
/// microseconds of their last task, and between two samples a replay hands
/// its results to the caller and back (and runs the other calls of the
/// round), so without them every timed run began by waking the pool's
/// threads (a futex wake-up each, tens of microseconds on this VM) inside
/// the timed span, which a program's loop of calls does not pay: a
/// standalone rayon program that slept before each call timed a 512x512
/// stencil 2.2x and a 1M dot 1.12x its back-to-back calls. One untimed run
/// is not enough on a VM: a 512x512 stencil (~70 us) timed right after one
/// untimed run read 84-87 us, as if run on one thread, steadily on an idle
/// machine, and 69-72 us (the static loop's 62-72 us) after five or more,
/// or after 1 ms of them (`bench/results/call-overhead-2026-12-07-warm-span.txt`):
/// the pool's second CPU is not fully awake until it has been busy for a
/// while. With [`SETTLE`] before the job, 0.3 ms of untimed runs did as
/// well as 1 ms (stencil2d +1.6 to 8.2% paired in four runs, against +3.1
/// to 9.2% in two: within the runs' own spread), at
/// less cost to a replay's time budget: every sample of a short call pays
/// the span. Calls of 0.3 ms or more get one untimed run. Cold timing
/// ([`sample_runs`] without it) runs the call once.
///
/// The output: released after each run, so the next run of that call, on
/// either engine, allocates its output while no other output of the call
/// lives, and gets the same block of the one malloc heap
/// (`process::configure_malloc`): both engines' outputs lie alike against
/// their inputs (an engine's outputs used to take turns between two
/// blocks, and a call's times split between layouts: 4K aliasing
/// suspected, not proven).
pub fn sample(
    engine: &EngineHandle,
    call: &Call,
    into: &mut Vec<Duration>,
) -> Result<(), CallError> {
    sample_runs(engine, call, true, into)
}

/// How long a warm sample runs its call untimed before the timed run
/// ([`sample`]): at least one run, and more until this much time has gone.
pub const WARM_SPAN: Duration = Duration::from_micros(300);

/// How long the caller waits before it hands a warm sample to the engine
/// thread ([`sample`]). Handed over within microseconds of the previous
/// sample's end, every run of the new one was slow: on an idle machine a
/// 512x512 stencil read 80-83 us all through the job, and the static
/// kernel run in the same kind of jobs 75 us, against 68-69 us for both
/// when the next job came 30 us later or more, and for the static loop
/// (`bench/results/call-overhead-2026-12-07-warm-span.txt`). The pool's
/// threads, still spinning down from the previous job when the next one
/// comes, split the call's tasks unevenly (counted in the kernel: 36 to
/// 28 of 64 the most common split there, 32 to 32 in the program's
/// loop); the mechanism
/// below that (rayon's sleep protocol, the vCPUs' idle states) is not
/// pinned down. 50 us per sample is outside the timed span and within a
/// replay's time budget.
pub const SETTLE: Duration = Duration::from_micros(50);

/// [`sample`], with the untimed runs first (`warm_up`) or without: cold
/// timing (the caches just flushed) runs the call once, the wake-up of the
/// engine's pool included.
pub fn sample_runs(
    engine: &EngineHandle,
    call: &Call,
    warm_up: bool,
    into: &mut Vec<Duration>,
) -> Result<(), CallError> {
    sample_runs_watched(engine, call, warm_up, || {}, into)
}

/// [`sample_runs`], telling `before_timed` (on the engine's thread) between
/// the untimed run and the timed one: the watchdog's clock starts again
/// there, so a call's deadline (`--call-timeout`) covers one run of it, not
/// the two a warm sample makes.
pub fn sample_runs_watched(
    engine: &EngineHandle,
    call: &Call,
    warm_up: bool,
    before_timed: impl Fn() + Send + 'static,
    into: &mut Vec<Duration>,
) -> Result<(), CallError> {
    let untimed = warm_up.then(|| call.clone());
    let call = call.clone();
    let stored = call.store_as.clone();
    if warm_up {
        std::thread::sleep(SETTLE);
    }
    let job = engine.submit(move |e| {
        let release = |e: &mut dyn shared_state::Engine| match &stored {
            Some(stored) => e.put_resident(stored, Tensor::from_f32(&[0], Vec::new())),
            None => Ok(()),
        };
        if let Some(untimed) = untimed {
            let warming = Instant::now();
            loop {
                std::hint::black_box(e.run(untimed.clone())?);
                release(e)?;
                if warming.elapsed() >= WARM_SPAN {
                    break;
                }
            }
            before_timed();
        }
        // The call is moved in: no copy of it inside the timed span.
        let started = Instant::now();
        let output = e.run(call)?;
        let took = started.elapsed();
        std::hint::black_box(output);
        release(e)?;
        Ok(took)
    })?;
    into.push(engine.wait(job)?);
    Ok(())
}

/// Times `calls` on `handle` (and, interleaved, on `old`): after warm-up,
/// in rounds that run every call once per engine (old then new, new then
/// old, alternately), until every call has `min_runs` samples and
/// `min_time` per call was spent, or a maximum is reached. Round-robin
/// spreads each call's samples over the whole measurement, so a transient
/// slow spell of the machine (seen here lasting tens of milliseconds, long
/// enough to swallow all of one call's back-to-back runs) shifts no median.
/// Returns `(call index, (new stats, old stats))`, and the share of the
/// machine's CPU capacity other processes used during the measurement
/// (`None` where /proc does not say: `process::other_work_share`).
fn time_calls(
    handle: &EngineHandle,
    old: Option<&EngineHandle>,
    calls: &[(usize, Call)],
    config: &TimingConfig,
    watch: &CallWatch,
    cold: Option<&ColdFlush>,
) -> (Vec<TimedCall>, Option<f64>) {
    let mut scratch_new = Vec::new();
    let mut scratch_old = Vec::new();
    let mut timed: Vec<Timed> = Vec::new();
    // Calls may read scratch residents written by earlier calls of this
    // replay, which ran on the new version only: give the old one the same.
    if let Some(old) = old {
        let names: std::collections::BTreeSet<&String> = calls
            .iter()
            .flat_map(|(_, c)| c.args.iter())
            .filter_map(|a| match a {
                Arg::Resident(n) if n.starts_with(SCRATCH_PREFIX) => Some(n),
                _ => None,
            })
            .collect();
        for name in names {
            if let Err(e) = handle
                .read_resident(name)
                .and_then(|t| old.put_resident(name, t))
            {
                return (
                    calls.iter().map(|(i, _)| (*i, Err(e.clone()))).collect(),
                    None,
                );
            }
        }
    }
    for (index, call) in calls {
        let (new_call, error) = match timing_call(handle, call, *index, &mut scratch_new) {
            Ok(c) => (c, None),
            Err(e) => (call.clone(), Some(e)),
        };
        let (old_call, old_error) = match old {
            Some(old) if error.is_none() => {
                match timing_call(old, call, *index, &mut scratch_old) {
                    Ok(c) => (Some(c), None),
                    Err(e) => (None, Some(e)),
                }
            }
            _ => (None, None),
        };
        timed.push(Timed {
            index: *index,
            new_call,
            old_call,
            new_samples: Vec::new(),
            old_samples: Vec::new(),
            error,
            old_error,
        });
    }
    let run_round = |timed: &mut [Timed], record: bool, new_first: bool| {
        for t in timed.iter_mut().filter(|t| t.error.is_none()) {
            let mut scratch_samples = Vec::new();
            let (new_into, old_into) = if record {
                (&mut t.new_samples, &mut t.old_samples)
            } else {
                (&mut scratch_samples, &mut Vec::new())
            };
            let (index, kernel) = (t.index, t.new_call.kernel.as_str());
            // Cold: the caches are flushed before every run, outside the
            // timed interval.
            let flush = || {
                if let Some(cold) = cold {
                    cold.flush();
                }
            };
            let on_new = |into: &mut Vec<Duration>| {
                flush();
                watch.before(handle.label(), index, kernel);
                let rewatch = watch.again(handle.label(), index, kernel);
                sample_runs_watched(handle, &t.new_call, cold.is_none(), rewatch, into)
            };
            let on_old = |old: &EngineHandle, call: &Call, into: &mut Vec<Duration>| {
                flush();
                watch.before(old.label(), index, kernel);
                let rewatch = watch.again(old.label(), index, kernel);
                sample_runs_watched(old, call, cold.is_none(), rewatch, into)
            };
            let mut old_failed = None;
            let result = (|| match (old, &t.old_call) {
                (Some(old), Some(old_call)) if !new_first => {
                    old_failed = on_old(old, old_call, old_into).err();
                    on_new(new_into)
                }
                (Some(old), Some(old_call)) => {
                    on_new(new_into)?;
                    old_failed = on_old(old, old_call, old_into).err();
                    Ok(())
                }
                _ => on_new(new_into),
            })();
            if let Err(e) = result {
                t.error = Some(e);
            }
            if let Some(e) = old_failed {
                t.old_call = None;
                t.old_samples.clear();
                t.old_error = Some(e);
            }
        }
    };
    for _ in 0..config.warmup_runs {
        run_round(&mut timed, false, true);
    }
    let engines = if old.is_some() { 2 } else { 1 };
    let slots = (timed.len().max(1) * engines) as u32;
    let budget = |per_call: Duration| per_call * slots;
    let started = Instant::now();
    let ticks_before = crate::process::cpu_ticks();
    for round in 0usize.. {
        run_round(&mut timed, true, round % 2 == 1);
        let runs = round + 1;
        let spent = started.elapsed();
        let enough = runs >= config.min_runs && spent >= budget(config.min_time);
        let too_much = runs >= config.min_runs.max(1)
            && (runs >= config.max_runs || spent >= budget(config.max_time));
        if enough || too_much || timed.iter().all(|t| t.error.is_some()) {
            break;
        }
    }
    let measured = started.elapsed();
    let other_share = ticks_before
        .zip(crate::process::cpu_ticks())
        .map(|(before, after)| crate::process::other_work_share(before, after, measured));
    let release = |engine: &EngineHandle, scratch: &[String]| {
        for name in scratch {
            let _ = engine.put_resident(name, Tensor::from_f32(&[0], Vec::new()));
        }
    };
    release(handle, &scratch_new);
    if let Some(old) = old {
        release(old, &scratch_old);
    }
    let timed = timed
        .into_iter()
        .map(|t| {
            if let (Some(e), Some(old)) = (&t.old_error, old) {
                tracing::warn!(
                    "call {} ({}): {} cannot run it ({e}); timed on {} alone, not compared",
                    t.index,
                    t.new_call.kernel,
                    old.label(),
                    handle.label()
                );
            }
            let result = match t.error {
                Some(e) => Err(e),
                None => Ok((
                    Stats::from_samples(&t.new_samples),
                    Stats::from_samples(&t.old_samples),
                )),
            };
            (t.index, result)
        })
        .collect();
    (timed, other_share)
}

/// A workload of what `handle` holds and serves: its resident buffers (the
/// replay's scratch buffers left out) as loads, then the calls of `report`
/// with the outputs they produced as expected values. Needs a report made
/// with [`ReplayOptions::keep_outputs`].
pub fn session_workload(
    name: &str,
    handle: &EngineHandle,
    report: &ReplayReport,
) -> Result<Workload, CallError> {
    let mut workload = Workload::new(name);
    for resident in handle.residents()? {
        if resident.name.starts_with(SCRATCH_PREFIX) || resident.name.starts_with(TIMING_PREFIX) {
            continue;
        }
        let tensor = handle.read_resident(&resident.name)?;
        workload.load(&resident.name, tensor);
    }
    for c in &report.calls {
        if let Some((call, output)) = &c.recorded {
            workload.call(call.clone(), Some(output.clone()));
        }
    }
    Ok(workload)
}

/// Emits one `replay` event per call (and nothing else).
pub fn log_events(report: &ReplayReport, module: &str, version: u64) {
    for c in &report.calls {
        let cmp = c.comparison.as_ref();
        emit!(
            target: "kiln::workload::replay",
            tracing::Level::INFO,
            events::Replay {
                module: module.to_string(),
                version,
                call: c.index as u64,
                kernel: c.kernel.to_string(),
                pass: c.passed(),
                max_abs_err: cmp.map(|c| c.max_abs),
                max_rel_err: cmp.map(|c| c.max_rel),
                max_ulps: cmp.map(|c| c.max_ulps),
                mismatches: cmp.map(|c| c.mismatches as u64),
                ms: c.stats.as_ref().map(|s| s.median * 1e3),
                mad_ms: c.stats.as_ref().map(|s| s.mad * 1e3),
                verdict: c.verdict.map(|v| v.to_string()),
                previous_ms: c.previous_median.map(|m| m * 1e3),
                ratio: c.ratio.map(|r| r.ratio),
                ratio_low: c.ratio.map(|r| r.low),
                ratio_high: c.ratio.map(|r| r.high),
                ratio_against: c.ratio.map(|r| r.against.as_str().to_string()),
                error: c.error.clone(),
                reference: c.expected_from.to_string(),
                trials_passed: c.trials.0 as u64,
                trials: c.trials.1 as u64,
                skipped: c.skipped.clone(),
            },
            "replay {} call {} {}: {} ({})",
            report.label,
            c.index,
            c.kernel,
            if c.skipped.is_some() {
                "skipped"
            } else if c.passed() {
                "pass"
            } else {
                "FAIL"
            },
            c.skipped.clone().unwrap_or_else(|| c.expected_from.to_string())
        );
    }
    log_roofline(report, module, version);
}

/// Emits one `roofline` event for a replay with timed calls of declared
/// work: each call's point and the roofs it was judged against.
fn log_roofline(report: &ReplayReport, module: &str, version: u64) {
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    let calls: Vec<events::RooflinePoint> = report
        .calls
        .iter()
        .filter_map(|c| {
            let (point, stats) = (c.point.as_ref()?, c.stats.as_ref()?);
            Some(events::RooflinePoint {
                call: c.index as u64,
                kernel: c.kernel.clone(),
                dims: c.description.clone(),
                ms: stats.median * 1e3,
                gflops: finite(point.gflops),
                gbs: finite(point.gbs),
                intensity: finite(point.intensity),
                percent: finite(Some(point.percent)),
                compute: point.compute_peak.name().to_string(),
                bound: match point.bound {
                    Bound::Memory => "memory",
                    Bound::Compute => "compute",
                }
                .to_string(),
            })
        })
        .collect();
    if calls.is_empty() {
        return;
    }
    let (roof, points) = (report.roof.as_ref(), calls.len());
    emit!(
        target: "kiln::workload::replay",
        tracing::Level::INFO,
        events::Roofline {
            module: module.to_string(),
            version,
            roof_gbs: roof.map(|r| r.bandwidth_gbs),
            roof_gflops: roof.map(|r| r.compute_gflops),
            roof_i8_gops: roof.and_then(|r| r.compute_i8_gops),
            calls,
        },
        "roofline of {}: {points} call(s)",
        report.label
    );
}

/// The first expected output a workload step stores.
pub fn expected_of(step: &Step) -> Option<&Tensor> {
    match step {
        Step::Call(c) => c.expected.first(),
        Step::Load { .. } => None,
    }
}

/// Why a call is not run: its kernel is no longer declared, it was recorded
/// for another signature of its kernel (with the command that re-records
/// it), or the served backend does not implement the kernel yet.
fn skip_reason(
    step: &CallStep,
    decl: Option<&KernelDecl>,
    implemented: Option<&[String]>,
    backend: &str,
) -> Option<String> {
    let rerecord = || {
        step.recorded_by
            .as_deref()
            .map_or(String::new(), |c| format!("; re-record it with `{c}`"))
    };
    let Some(decl) = decl else {
        // A kernel the module itself says it implements runs undeclared:
        // the engine checks its own arguments, and only stored outputs can
        // check it (modules that predate declarations, test modules).
        if implemented.is_some_and(|list| list.contains(&step.call.kernel)) {
            return None;
        }
        // Re-recording needs the declaration: say what to declare.
        let recorded = step.signature.as_deref().map_or(String::new(), |sig| {
            format!("; its calls were recorded for `{sig}`")
        });
        return Some(format!(
            "kernel {k} is not declared (no kernels/declarations/{k}.toml){recorded}; declare it \
             (`kiln new kernel {k} --inputs ... --outputs ...`) and they run again",
            k = step.call.kernel,
        ));
    };
    if let Some(sig) = &step.signature {
        if *sig != decl.signature() {
            return Some(format!(
                "recorded for the old signature `{sig}`, now `{}`{}",
                decl.signature(),
                rerecord()
            ));
        }
    }
    if let Some(list) = implemented {
        if !list.contains(&decl.name) {
            let backend = backend.strip_prefix("kernel-").unwrap_or(backend);
            return Some(format!("{} is not on {backend} yet", decl.name));
        }
    }
    None
}

/// The dims of `call` bound to its declaration (`None` if it does not fit:
/// the engine reports why).
pub fn bind_dims(
    decl: &KernelDecl,
    call: &Call,
    shapes: &BTreeMap<String, (DType, Vec<usize>)>,
) -> Option<shared_state::Dims> {
    let args: Vec<(DType, Vec<usize>)> = call
        .args
        .iter()
        .map(|a| match a {
            Arg::Tensor(t) => Some((t.dtype(), t.shape().to_vec())),
            Arg::Resident(n) => shapes.get(n).cloned(),
        })
        .collect::<Option<_>>()?;
    let typed: Vec<(DType, &[usize])> = args.iter().map(|(d, s)| (*d, s.as_slice())).collect();
    decl.bind(&typed, &call.params).ok().map(|b| b.dims)
}

/// The expected outputs of one trial, in the stated order: the cross
/// reference, else the stored ones, else the reference module.
fn expected_for(
    options: &ReplayOptions,
    call: &Call,
    stored: &[Tensor],
    trial: usize,
    declared: bool,
) -> Result<(Option<Vec<Tensor>>, ExpectedFrom), CallError> {
    let run_on = |engine: &EngineHandle| -> Result<Vec<Tensor>, CallError> {
        let mut call = call.clone();
        if trial > 0 {
            if let Some(name) = &call.store_as {
                call.store_as = Some(format!("{name}-reference"));
            }
        }
        let out = engine.run(call)?;
        outputs_of(engine, out)
    };
    if let Some(engine) = &options.cross_reference {
        return Ok((
            Some(run_on(engine)?),
            ExpectedFrom::Backend(engine.label().to_string()),
        ));
    }
    if !stored.is_empty() {
        // Keep the reference engine's residents in step with the served
        // one's for the calls that come later.
        if let (Some(engine), Some(_), true) = (&options.reference, &call.store_as, declared) {
            let _ = run_on(engine);
        }
        return Ok((Some(stored.to_vec()), ExpectedFrom::Workload));
    }
    // The reference module implements declared kernels only.
    if let (Some(engine), true) = (&options.reference, declared) {
        return Ok((
            Some(run_on(engine)?),
            ExpectedFrom::ReferenceModule(engine.label().to_string()),
        ));
    }
    Ok((None, ExpectedFrom::Unchecked))
}

/// Compares every output; the first failing comparison, else the one with
/// the largest error.
pub fn compare_outputs(
    options: &ReplayOptions,
    decl: Option<&KernelDecl>,
    kernel: &str,
    dims: Option<&shared_state::Dims>,
    want: &[Tensor],
    got: &[Tensor],
) -> Comparison {
    let empty = shared_state::Dims::new();
    let dims = dims.unwrap_or(&empty);
    if want.len() != got.len() {
        let empty = Tensor::from_f32(&[0], vec![]);
        let mut c = compare(&empty, &empty, &Tolerance::EXACT);
        c.structure = Some(format!("{} output(s), expected {}", got.len(), want.len()));
        return c;
    }
    let mut worst: Option<Comparison> = None;
    for (w, g) in want.iter().zip(got) {
        let tol = options.tolerances.for_call(kernel, decl, dims, w.dtype());
        let c = compare(w, g, &tol);
        if !c.passed() {
            return c;
        }
        if worst.as_ref().is_none_or(|b| c.max_abs > b.max_abs) {
            worst = Some(c);
        }
    }
    worst.unwrap_or_else(|| {
        let empty = Tensor::from_f32(&[0], vec![]);
        compare(&empty, &empty, &Tolerance::EXACT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call of an undeclared kernel says what to declare: re-recording
    /// it (what a stale call's hint says) needs the declaration first.
    #[test]
    fn a_call_of_an_undeclared_kernel_says_to_declare_it_with_what_it_was_recorded_for() {
        let mut step = CallStep::new(Call::new("leaky"), Vec::new());
        step.signature = Some("leaky(x: f32[n]) -> y: f32[n]".into());
        step.recorded_by = Some("kiln record --kernel leaky --dims n=8 -o w.kwl".into());
        let why = skip_reason(&step, None, None, "cpu").expect("skipped");
        assert!(why.starts_with("kernel leaky is not declared"), "{why}");
        assert!(
            why.contains("recorded for `leaky(x: f32[n]) -> y: f32[n]`"),
            "{why}"
        );
        assert!(why.contains("kiln new kernel leaky"), "{why}");
        assert!(!why.contains("kiln record"), "{why}");
        // The module says it implements it: it runs undeclared.
        assert_eq!(
            skip_reason(&step, None, Some(&["leaky".to_string()]), "cpu"),
            None
        );
    }
}

//! The tuner: a plan of jobs (one per kernel and tunable the engine takes),
//! run in bounded steps so that the session can stop it when a save arrives
//! and so that it never runs while a replay is timed (the worker handles one
//! request at a time).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use shared_state::{Arg, Call, DType, KernelDecl, Scalar, Tensor};

use super::cache::{TuneCache, TuneKey, TuneResult};
use super::{KEEP_PARAM, note_name};
use crate::swap::engine_handle::EngineHandle;
use crate::workload::reference::outputs_of;
use crate::workload::replay::{
    ReplayOptions, SCRATCH_PREFIX, TIMING_PREFIX, bind_dims, compare_outputs,
};
use crate::workload::timing::{Stats, Verdict, human_secs, verdict};
use crate::workload::{Step, Workload};

/// How long candidates are timed.
#[derive(Clone, Debug)]
pub struct TuneConfig {
    /// Rounds before any candidate may be dropped.
    pub min_rounds: usize,
    pub max_rounds: usize,
    /// At most this long timing one tunable.
    pub max_time: Duration,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            min_rounds: 5,
            max_rounds: 25,
            max_time: Duration::from_secs(2),
        }
    }
}

/// What happened to one candidate.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Still timed (or kept at the end).
    Running,
    /// Its output was wrong, or the call failed: never picked.
    Rejected(String),
    /// Clearly slower than the best so far, after this many rounds.
    Dropped(usize),
}

struct Candidate {
    value: Scalar,
    fate: Fate,
    samples: Vec<Duration>,
}

/// One call the tunable is timed on: as run (residents redirected to the
/// replay's scratch copies), with its expected outputs.
struct TuneCall {
    call: Call,
    expected: Vec<Tensor>,
    dims: Option<shared_state::Dims>,
}

struct Job {
    decl: KernelDecl,
    param: String,
    key: TuneKey,
    calls: Vec<TuneCall>,
    candidates: Vec<Candidate>,
    checked: bool,
    rounds: usize,
    timing: Duration,
}

/// The result of a finished job.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuned {
    pub kernel: String,
    pub param: String,
    /// `None`: every candidate was rejected (nothing kept).
    pub best: Option<String>,
    pub from_cache: bool,
    pub table: String,
}

/// The tuning of one served version.
pub struct Tuner {
    jobs: VecDeque<Job>,
    cache: TuneCache,
    config: TuneConfig,
    /// Finished jobs, in order.
    pub done: Vec<Tuned>,
    /// Why a tunable is not tuned (the engine does not take it, no call).
    pub skipped: Vec<String>,
}

impl Tuner {
    /// The plan for `handle` (after a passing replay of `workload`): one
    /// job per declared tunable of a kernel the workload calls and the
    /// engine takes.
    pub fn plan(
        handle: &EngineHandle,
        workload: &Workload,
        options: &ReplayOptions,
        cache: TuneCache,
        config: TuneConfig,
    ) -> Result<Tuner, String> {
        let info = handle.info().map_err(|e| e.to_string())?;
        let machine = machine_description();
        let declared = handle.module().staged.files.kernels.clone();
        let module = handle.module().staged.module.clone();
        let residents: BTreeMap<String, (DType, Vec<usize>)> = handle
            .residents()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| (r.name, (r.dtype, r.shape)))
            .collect();
        let mut jobs = VecDeque::new();
        let mut skipped = Vec::new();
        for decl in declared.iter().filter(|d| !d.tunables.is_empty()) {
            let calls = calls_of(handle, workload, options, decl, &residents);
            if calls.is_empty() {
                continue;
            }
            for t in &decl.tunables {
                if !info.notes.contains_key(&note_name(&decl.name, &t.name)) {
                    skipped.push(format!(
                        "{}.{}: {} does not take it (no {} in its info)",
                        decl.name,
                        t.name,
                        module,
                        note_name(&decl.name, &t.name)
                    ));
                    continue;
                }
                let key = TuneKey {
                    kernel: decl.name.clone(),
                    param: t.name.clone(),
                    declaration_hash: decl.hash.clone(),
                    code_hash: code_hash(handle),
                    machine: machine.clone(),
                    candidates: t.candidates.iter().map(|c| c.to_string()).collect(),
                    device: info.device.clone(),
                    calls: calls
                        .iter()
                        .map(|c| describe_call(&c.call, c.dims.as_ref(), &residents))
                        .collect(),
                };
                jobs.push_back(Job {
                    decl: decl.clone(),
                    param: t.name.clone(),
                    key,
                    calls: calls
                        .iter()
                        .map(|c| TuneCall {
                            call: c.call.clone(),
                            expected: c.expected.clone(),
                            dims: c.dims.clone(),
                        })
                        .collect(),
                    candidates: t
                        .candidates
                        .iter()
                        .map(|v| Candidate {
                            value: v.clone(),
                            fate: Fate::Running,
                            samples: Vec::new(),
                        })
                        .collect(),
                    checked: false,
                    rounds: 0,
                    timing: Duration::ZERO,
                });
            }
        }
        Ok(Tuner {
            jobs,
            cache,
            config,
            done: Vec::new(),
            skipped,
        })
    }

    /// Whether any job is left.
    pub fn pending(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Runs for about `budget` (at least one unit of work: the checks of
    /// one tunable's candidates, or one timing round). Returns the jobs
    /// finished in this step.
    pub fn step(
        &mut self,
        handle: &EngineHandle,
        options: &ReplayOptions,
        budget: Duration,
    ) -> Vec<Tuned> {
        let started = Instant::now();
        let mut finished = Vec::new();
        while let Some(job) = self.jobs.front_mut() {
            if !job.checked {
                if let Some(hit) = self.cache.load(&job.key) {
                    let job = self.jobs.pop_front().expect("front exists");
                    let best = job
                        .candidates
                        .iter()
                        .find(|c| c.value.to_string() == hit.best)
                        .map(|c| c.value.clone());
                    let kept = best.map(|b| keep(handle, &job, &b));
                    let mut table = format!(
                        "{}.{} = {} (served from the tuning cache)\n",
                        job.key.kernel, job.key.param, hit.best
                    );
                    if let Some(Err(e)) = &kept {
                        let _ = writeln!(table, "  cannot keep it in the engine: {e}");
                    }
                    table.push_str(&hit.table);
                    finished.push(Tuned {
                        kernel: job.key.kernel.clone(),
                        param: job.key.param.clone(),
                        best: Some(hit.best),
                        from_cache: true,
                        table,
                    });
                    continue;
                }
                check(handle, options, job);
                job.checked = true;
            } else {
                round(handle, job);
            }
            let over = job.rounds >= self.config.max_rounds
                || (job.rounds >= self.config.min_rounds.max(1)
                    && job.timing >= self.config.max_time);
            let running = job
                .candidates
                .iter()
                .filter(|c| c.fate == Fate::Running)
                .count();
            if job.checked && (running <= 1 && job.rounds >= 1 || running == 0 || over) {
                let job = self.jobs.pop_front().expect("front exists");
                finished.push(self.finish(handle, job));
            } else if job.checked && job.rounds >= self.config.min_rounds {
                drop_slower(job);
            }
            if started.elapsed() >= budget {
                break;
            }
        }
        self.done.extend(finished.iter().cloned());
        finished
    }

    fn finish(&self, handle: &EngineHandle, job: Job) -> Tuned {
        let best = best_of(&job).map(|i| job.candidates[i].value.clone());
        let table = table(&job, best.as_ref());
        let mut text = table.clone();
        if let Some(b) = &best {
            match keep(handle, &job, b) {
                Ok(()) => {
                    let result = TuneResult {
                        key: job.key.clone(),
                        best: b.to_string(),
                        table: table.clone(),
                    };
                    if let Err(e) = self.cache.save(&result) {
                        let _ = writeln!(text, "  cannot cache the result: {e}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(text, "  cannot keep it in the engine: {e}");
                }
            }
        }
        Tuned {
            kernel: job.key.kernel,
            param: job.key.param,
            best: best.map(|b| b.to_string()),
            from_cache: false,
            table: text,
        }
    }
}

/// The workload's calls of `decl`, as replay ran them, with their
/// expected outputs (stored, else the reference module's, else the served
/// version's with the declared default: it just passed replay).
fn calls_of(
    handle: &EngineHandle,
    workload: &Workload,
    options: &ReplayOptions,
    decl: &KernelDecl,
    residents: &BTreeMap<String, (DType, Vec<usize>)>,
) -> Vec<TuneCall> {
    let mut out = Vec::new();
    for step in &workload.steps {
        let Step::Call(step) = step else { continue };
        if step.call.kernel != decl.name {
            continue;
        }
        let mut call = step.call.clone();
        for arg in &mut call.args {
            if let Arg::Resident(name) = arg {
                let scratch = format!("{SCRATCH_PREFIX}{name}");
                if residents.contains_key(&scratch) {
                    *name = scratch;
                }
            }
        }
        call.store_as = None;
        let dims = bind_dims(decl, &call, residents);
        let expected = if !step.expected.is_empty() && step.call.store_as.is_none() {
            step.expected.clone()
        } else {
            let mut reference_call = call.clone();
            for t in &decl.tunables {
                reference_call
                    .params
                    .insert(t.name.clone(), t.default.clone());
            }
            let from = options.reference.as_ref().unwrap_or(handle);
            let call_for = if options.reference.is_some() {
                call.clone()
            } else {
                reference_call
            };
            match from.run(call_for).and_then(|o| outputs_of(from, o)) {
                Ok(e) => e,
                Err(_) => continue,
            }
        };
        out.push(TuneCall {
            call,
            expected,
            dims,
        });
    }
    out
}

/// Runs every candidate once on every call and compares its outputs.
fn check(handle: &EngineHandle, options: &ReplayOptions, job: &mut Job) {
    for c in &mut job.candidates {
        for (i, tc) in job.calls.iter().enumerate() {
            let mut call = tc.call.clone();
            call.params.insert(job.param.clone(), c.value.clone());
            let got = match handle.run(call).and_then(|o| outputs_of(handle, o)) {
                Ok(g) => g,
                Err(e) => {
                    c.fate = Fate::Rejected(format!("call {i} failed: {e}"));
                    break;
                }
            };
            let cmp = compare_outputs(
                options,
                Some(&job.decl),
                &job.decl.name,
                tc.dims.as_ref(),
                &tc.expected,
                &got,
            );
            if !cmp.passed() {
                c.fate = Fate::Rejected(format!("wrong output on call {i}: {}", cmp.summary()));
                break;
            }
        }
    }
}

/// One timing round: every running candidate once on every call (their
/// order rotates each round), the sum of the call times its sample.
fn round(handle: &EngineHandle, job: &mut Job) {
    let started = Instant::now();
    let n = job.candidates.len();
    let out = format!("{TIMING_PREFIX}tune/out");
    for k in 0..n {
        let c = &mut job.candidates[(k + job.rounds) % n];
        if c.fate != Fate::Running {
            continue;
        }
        let mut total = Duration::ZERO;
        for tc in &job.calls {
            let mut call = tc.call.clone();
            call.params.insert(job.param.clone(), c.value.clone());
            if job.decl.outputs.len() == 1 {
                call.store_as = Some(out.clone());
            }
            let t0 = Instant::now();
            match handle.run(call) {
                Ok(o) => {
                    total += t0.elapsed();
                    std::hint::black_box(o);
                }
                Err(e) => {
                    c.fate = Fate::Rejected(format!("failed while timed: {e}"));
                    break;
                }
            }
        }
        if c.fate == Fate::Running {
            c.samples.push(total);
        }
    }
    let _ = handle.put_resident(&out, Tensor::from_f32(&[0], Vec::new()));
    job.rounds += 1;
    job.timing += started.elapsed();
}

fn stats(c: &Candidate) -> Option<Stats> {
    Stats::from_samples(&c.samples)
}

/// The running candidate with the lowest median.
fn best_of(job: &Job) -> Option<usize> {
    job.candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.fate == Fate::Running)
        .filter_map(|(i, c)| Some((i, stats(c)?.median)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// Drops every candidate clearly slower than the best so far (the
/// interleaved verdict: they were timed in the same rounds).
fn drop_slower(job: &mut Job) {
    let Some(best) = best_of(job) else { return };
    let Some(best_stats) = stats(&job.candidates[best]) else {
        return;
    };
    let rounds = job.rounds;
    for (i, c) in job.candidates.iter_mut().enumerate() {
        if i == best || c.fate != Fate::Running {
            continue;
        }
        if stats(c).is_some_and(|s| verdict(&best_stats, &s) == Verdict::Slower) {
            c.fate = Fate::Dropped(rounds);
        }
    }
}

/// Stores `best` in the engine: one call with it explicit and the keep
/// directive; checks the engine's info says so.
fn keep(handle: &EngineHandle, job: &Job, best: &Scalar) -> Result<(), String> {
    let tc = job.calls.first().ok_or("no call to keep it with")?;
    let mut call = tc.call.clone();
    call.params.insert(job.param.clone(), best.clone());
    call.params
        .insert(KEEP_PARAM.to_string(), Scalar::Bool(true));
    if job.decl.outputs.len() == 1 {
        call.store_as = Some(format!("{TIMING_PREFIX}tune/out"));
    }
    handle.run(call).map_err(|e| e.to_string())?;
    let _ = handle.put_resident(
        &format!("{TIMING_PREFIX}tune/out"),
        Tensor::from_f32(&[0], Vec::new()),
    );
    let name = note_name(&job.decl.name, &job.param);
    let info = handle.info().map_err(|e| e.to_string())?;
    match info.notes.get(&name) {
        Some(v) if v.to_string() == best.to_string() => Ok(()),
        other => Err(format!(
            "the engine's {name} is {} after keeping {best}",
            other.map_or("missing".to_string(), |v| v.to_string())
        )),
    }
}

/// The table of candidates.
fn table(job: &Job, best: Option<&Scalar>) -> String {
    let mut out = String::new();
    let best_median = best
        .and_then(|b| job.candidates.iter().find(|c| &c.value == b))
        .and_then(stats)
        .map(|s| s.median);
    let _ = writeln!(
        out,
        "tuning {}.{} on {} call(s), {} round(s): {}",
        job.key.kernel,
        job.key.param,
        job.calls.len(),
        job.rounds,
        best.map_or("every candidate rejected; nothing kept".to_string(), |b| {
            format!("keeping {b}")
        })
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>10} {:>10} {:>8}  result",
        job.param, "median", "spread", "vs best"
    );
    for c in &job.candidates {
        let s = stats(c);
        let (median, spread) = s.as_ref().map_or((String::new(), String::new()), |s| {
            (human_secs(s.median), format!("±{}", human_secs(s.mad)))
        });
        let versus = match (&s, best_median) {
            (Some(s), Some(b)) => format!("{:+.0}%", (s.median / b - 1.0) * 100.0),
            _ => String::new(),
        };
        let fate = match &c.fate {
            Fate::Running if Some(&c.value) == best => "best".to_string(),
            Fate::Running => "ok".to_string(),
            Fate::Dropped(r) => format!("dropped after {r} rounds: clearly slower"),
            Fate::Rejected(why) => format!("rejected: {why}"),
        };
        let _ = writeln!(
            out,
            "  {:<10} {:>10} {:>10} {:>8}  {fate}",
            c.value.to_string(),
            median,
            spread,
            versus
        );
    }
    out
}

fn describe_call(
    call: &Call,
    dims: Option<&shared_state::Dims>,
    residents: &BTreeMap<String, (DType, Vec<usize>)>,
) -> String {
    let dtypes: Vec<String> = call
        .args
        .iter()
        .map(|a| match a {
            Arg::Tensor(t) => t.dtype().to_string(),
            Arg::Resident(n) => residents
                .get(n)
                .map_or("?".to_string(), |(d, _)| d.to_string()),
        })
        .collect();
    let dims: Vec<String> = dims
        .map(|d| d.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    let params: Vec<String> = call
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{}({}) [{}] {}",
        call.kernel,
        dtypes.join(","),
        dims.join(","),
        params.join(",")
    )
}

/// What a tuned value was chosen for: the code the engine runs. That is
/// the staged library's bytes (every source file rustc compiled into it,
/// the dependencies linked in, the compiler, its flags and the profile: a
/// change of any of them changes the bytes, while an edit that changes no
/// code, a comment, keeps them) with the version's declarations and the
/// sources the engine reads at run time (shaders, `.cu`), as staged: the
/// staged version's hash. Any change to the module's code re-tunes its
/// kernels: a tile that suits one matmul says nothing of another, and code
/// shared by several kernels (a common file) is code of each of them.
pub fn code_hash(handle: &EngineHandle) -> String {
    handle.module().staged.version_hash.clone()
}

/// The machine a tuned value was timed on: the CPU's model and how many
/// hardware threads this process may run on (the engine's own thread count
/// is in its device description).
pub fn machine_description() -> String {
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{} ({threads} hardware threads)",
        crate::machine::key::cpu_model()
    )
}

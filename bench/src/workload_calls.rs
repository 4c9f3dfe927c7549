//! Section 3, second part: every call of the bundled workload
//! (`kernels/workload.toml`, then one call of each declared kernel it does
//! not list), as a replay times it, against the same kernel linked
//! statically.
//!
//! - kiln: the replay's own code (`workload::replay::timing_call` and
//!   `sample`): arguments resident, the output stored in a throwaway
//!   resident and released after each sample, the time taken on the
//!   engine's thread around a run that follows 0.3 ms of untimed runs of the
//!   same call there (the pool awake, as in a program's loop of calls;
//!   `workload::replay::WARM_SPAN` and `SETTLE`). This is
//!   the time `kiln dev` and `kiln replay` report. Beside it, a sample of
//!   one run alone (`sample_runs` without the untimed runs: cold timing's
//!   sample, without its flush): the cost of waking the engine's pool
//!   inside the timed span.
//! - static: the CPU module's kernel table ([`crate::static_module`], the
//!   very source files the module compiles), the call bound to its
//!   declaration as the engine binds it, run on a 2-thread pool pinned as
//!   kiln pins its pool, the output dropped inside the caller's clock.
//!
//! Both run interleaved, batch by batch, after a check that they compute
//! the same outputs (within the workload's own tolerances).

use std::collections::BTreeMap;
use std::time::Duration;

use kiln::workload::Step;
use kiln::workload::compare::{Tolerances, compare};
use shared_state::{Arg, Call, KernelSet, Tensor};

use crate::calls::{CallFn, KernelCalls, Ran, time_ways};
use crate::config::Config;
use crate::static_module::{self, StaticKernel};

/// The ways, in table order: the static call, the replay's time (a sample:
/// the timed run right after 0.3 ms of untimed ones on the engine thread) and a
/// sample of one run alone (cold timing's sample, without the flush),
/// which shows what waking the engine's pool costs inside the timed span.
pub const WAYS: [&str; 3] = ["static", "kiln replay's time", "kiln, one run per sample"];

/// One call of the bundled workload, timed both ways (ns per call).
pub type WorkloadCall = KernelCalls;

/// Times every call of the bundled workload of `config.workspace` on
/// `handle` (a served CPU module) and statically on `pool`.
pub fn measure(
    config: &Config,
    pool: &rayon::ThreadPool,
    handle: &kiln::EngineHandle,
) -> Result<Vec<WorkloadCall>, String> {
    let kernels = kiln::swap::version_files::declarations(&config.workspace)?;
    let workload = kiln::workload::generate::bundled_workload_at(&config.workspace, &kernels)
        .map_err(|e| e.to_string())?;
    let table = static_module::table();
    let mut residents: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut calls = Vec::new();
    let mut index = 0;
    for step in &workload.steps {
        match step {
            Step::Load { name, tensor } => {
                handle
                    .put_resident(name, tensor.clone())
                    .map_err(|e| format!("loading resident {name}: {e}"))?;
                residents.insert(name.clone(), tensor.clone());
            }
            Step::Call(step) => {
                let call = &step.call;
                let label = label(index, call);
                let kernel = table
                    .iter()
                    .find(|k| k.name() == call.kernel)
                    .ok_or_else(|| {
                        format!("{label}: the CPU module has no kernel {}", call.kernel)
                    })?;
                let inputs = inputs(call, &residents).map_err(|e| format!("{label}: {e}"))?;
                calls.push(measure_call(
                    config, &kernels, kernel, pool, handle, call, &inputs, index, &label,
                )?);
                // A call that stores its output changes that resident for
                // the calls after it, as in the replay.
                if let Some(stored) = &call.store_as {
                    let out = handle
                        .read_resident(stored)
                        .or_else(|_| {
                            handle
                                .run(call.clone())
                                .and_then(|_| handle.read_resident(stored))
                        })
                        .map_err(|e| format!("{label}: reading back {stored}: {e}"))?;
                    residents.insert(stored.clone(), out);
                }
                index += 1;
            }
        }
    }
    // Not a call of the workload: the fixed part of every call, both ways.
    let empty = Call::new("dot")
        .arg(Tensor::from_f32(&[0], Vec::new()))
        .arg(Tensor::from_f32(&[0], Vec::new()));
    let kernel = table
        .iter()
        .find(|k| k.name() == "dot")
        .ok_or("the CPU module has no kernel dot")?;
    let inputs = inputs(&empty, &residents)?;
    let mut fixed = measure_call(
        config, &kernels, kernel, pool, handle, &empty, &inputs, index, "   dot",
    )?;
    fixed.kernel = format!("{FIXED_COST} dot 0, 0");
    calls.push(fixed);
    Ok(calls)
}

/// Marks the row of an empty call (a dot of no elements): not a call of
/// the workload but the part every call has, the binding of the call and
/// the pool's dispatch (a job handed to a rayon thread and the caller woken
/// when it is done), in both ways' times.
pub const FIXED_COST: &str = "(fixed cost)";

/// `3 stencil2d 512x512`: the call's place in the workload, its kernel and
/// the shape of its first input.
fn label(index: usize, call: &Call) -> String {
    format!("{index:>2} {}", call.kernel)
}

/// The call's inputs as the engine sees them: resident names resolved.
fn inputs(call: &Call, residents: &BTreeMap<String, Tensor>) -> Result<Vec<Tensor>, String> {
    call.args
        .iter()
        .map(|a| match a {
            Arg::Tensor(t) => Ok(t.clone()),
            Arg::Resident(name) => residents
                .get(name)
                .cloned()
                .ok_or_else(|| format!("resident {name} is not loaded")),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn measure_call(
    config: &Config,
    kernels: &KernelSet,
    kernel: &StaticKernel,
    pool: &rayon::ThreadPool,
    handle: &kiln::EngineHandle,
    call: &Call,
    inputs: &[Tensor],
    index: usize,
    label: &str,
) -> Result<WorkloadCall, String> {
    let decl = kernels
        .get(&call.kernel)
        .ok_or_else(|| format!("{label}: {} is not declared", call.kernel))?;
    let bound = static_module::bind(decl, call, inputs).map_err(|e| format!("{label}: {e}"))?;
    let label = format!("{label} {}", shape_text(inputs));
    let mut scratch = Vec::new();
    let timed = kiln::workload::replay::timing_call(handle, call, 1000 + index, &mut scratch)
        .map_err(|e| format!("{label}: {e}"))?;

    // Both ways compute the same outputs first; the outputs are let go
    // before the timing (kiln's too), so that in the timed rounds each
    // way's output is the only output of this call alive, and takes the
    // same free block of the one malloc heap as the other way's: a stencil's
    // time depends on where its output lies against its input (see
    // `bench/results/call-overhead-2026-12-07-layout.txt`).
    check_same_outputs(decl, &bound, kernel, pool, handle, &timed, inputs, &label)?;

    let statically: CallFn<'_> = Box::new(|_| {
        std::hint::black_box(
            kernel
                .run(pool, &bound, inputs)
                .map_err(|e| format!("{label} statically: {e}"))?,
        );
        Ok(Ran {
            values: None,
            took: None,
        })
    });
    let sampled = |warm_up: bool| -> CallFn<'_> {
        let timed = &timed;
        let mut samples = Vec::with_capacity(1);
        Box::new(move |_| {
            samples.clear();
            kiln::workload::replay::sample_runs(handle, timed, warm_up, &mut samples)
                .map_err(|e| e.to_string())?;
            Ok(Ran {
                values: None,
                took: samples.first().copied().or(Some(Duration::ZERO)),
            })
        })
    };
    let result = time_ways(
        &label,
        WAYS.to_vec(),
        vec![statically, sampled(true), sampled(false)],
        config,
    );
    for name in scratch {
        let _ = handle.put_resident(&name, Tensor::from_f32(&[0], Vec::new()));
    }
    result
}

/// Checks that the static call and kiln's timed call compute the same
/// outputs (within the workload's tolerances), then lets both outputs go:
/// kiln's stored output is released as a replay's sample releases it.
#[allow(clippy::too_many_arguments)]
fn check_same_outputs(
    decl: &shared_state::KernelDecl,
    bound: &shared_state::Bound,
    kernel: &StaticKernel,
    pool: &rayon::ThreadPool,
    handle: &kiln::EngineHandle,
    timed: &Call,
    inputs: &[Tensor],
    label: &str,
) -> Result<(), String> {
    let want = kernel
        .run(pool, bound, inputs)
        .map_err(|e| format!("{label} statically: {e}"))?;
    let (got, _) = handle
        .run_timed(timed.clone())
        .map_err(|e| format!("{label} through kiln: {e}"))?;
    std::hint::black_box(got);
    // The replay's timed call stores its one output in a throwaway resident.
    let out = timed.store_as.as_deref().unwrap_or_default();
    let got = vec![
        handle
            .read_resident(out)
            .map_err(|e| format!("{label}: {e}"))?,
    ];
    handle
        .put_resident(out, Tensor::from_f32(&[0], Vec::new()))
        .map_err(|e| format!("{label}: {e}"))?;
    let tolerances = Tolerances::default();
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let tolerance = tolerances.for_call(&timed.kernel, Some(decl), &bound.dims, w.dtype());
        let c = compare(w, g, &tolerance);
        if !c.passed() {
            return Err(format!(
                "{label}: output {i} differs between the static call and kiln: {}",
                c.summary()
            ));
        }
    }
    Ok(())
}

/// `512x1024, 1024x1024`: each input's shape.
fn shape_text(inputs: &[Tensor]) -> String {
    inputs
        .iter()
        .map(|t| {
            t.shape()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("x")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

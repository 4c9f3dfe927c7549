//! Section 3 of the report: call overhead. The same kernel code called statically (linked into
//! the benchmark, its own 2-thread pool), through a hot-lib-reloader
//! generated function (library with its own 2-thread pool), and through
//! kiln (engine thread + engine-owned 2-thread pool), for a tiny kernel
//! (saxpy on 1 and on 1,024 elements), every other kernel of the module at
//! the bundled workload's sizes (dot, stencil2d, softmax: hot-lib-reloader's
//! library exports saxpy and matmul only), and one that takes about 1 ms
//! (matmul, size calibrated on this machine), last. Then every call of
//! the bundled workload, the replay's time against the static call
//! ([`crate::workload_calls`]): the calls the replay's targets read.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared_state::{Call, Output, Scalar, Tensor};

use crate::config::Config;
use crate::hot_reloader::HotLibReloader;
use crate::kiln_side::{KilnSide, THREADS, output_f32, saxpy_call};
use crate::report::Target;
use crate::static_kernels;
use crate::stats::{Summary, interleaved};
use crate::table::{Table, num};
use crate::workload_calls::WAYS as WORKLOAD_WAYS;

/// Tile of every matmul (kiln's default).
use crate::static_module::TILE;

/// The ways a kernel is called, in table order.
pub const WAYS: [&str; 6] = [
    "static",
    "hot-lib-reloader",
    "kiln EngineHandle::run",
    "kiln ServedModule::call",
    "kiln ServedModule::call, resident args",
    "kiln replay's time (engine thread), resident args",
];

/// The way whose time is what `kiln dev` and `kiln replay` report for a
/// call: measured on the engine thread around the call
/// (`EngineHandle::run_timed`), as the replay does.
pub const REPLAY_WAY: &str = WAYS[5];

/// Per-call times of one kernel, one summary per way (ns per call).
#[derive(Clone, Debug)]
pub struct KernelCalls {
    pub kernel: String,
    pub ns: Vec<(String, Summary)>,
    /// Each way's time over the first way's (static) in the same round,
    /// summarised over the rounds: the two batches of a round run next to
    /// each other, so a spell of other work on the machine (the pool's
    /// second thread off its CPU for a while: stencil2d's two speeds, see
    /// bench/results/call-overhead-2026-12-06-stencil-modes-not-page-placement.txt)
    /// hits both sides of each ratio.
    pub paired: Vec<(String, Summary)>,
}

impl KernelCalls {
    pub fn get(&self, way: &str) -> Option<&Summary> {
        self.ns.iter().find(|(w, _)| w == way).map(|(_, s)| s)
    }

    fn static_ns(&self) -> f64 {
        self.get("static").map_or(f64::NAN, |s| s.median)
    }

    /// Median ns minus the static call's median ns.
    pub fn overhead_ns(&self, way: &str) -> f64 {
        self.get(way).map_or(f64::NAN, |s| s.median) - self.static_ns()
    }

    /// Median ns over the static call's median ns.
    pub fn ratio(&self, way: &str) -> f64 {
        self.get(way).map_or(f64::NAN, |s| s.median) / self.static_ns()
    }

    /// The median over rounds of the way's time over the first way's in
    /// the same round.
    pub fn paired_ratio(&self, way: &str) -> f64 {
        self.paired
            .iter()
            .find(|(w, _)| w == way)
            .map_or(f64::NAN, |(_, s)| s.median)
    }
}

#[derive(Clone, Debug)]
pub struct Calls {
    pub kernels: Vec<KernelCalls>,
    /// The matmul is `n x n @ n x n`.
    pub matmul_n: usize,
    pub stencil_layout: Option<Layout>,
    /// Every call of the bundled workload: static and the replay's time
    /// ([`crate::workload_calls`]).
    pub workload: Vec<KernelCalls>,
    /// The share of the machine's CPUs other processes used while the
    /// bundled workload's calls were timed (`None` where /proc does not say).
    pub other_work: Option<f64>,
}

/// Where stencil2d's output lies after its input, modulo 4 KiB (bytes), in
/// kiln (the replay's way: the same on every call of a run) and in the
/// static call (a few calls).
pub type Layout = (usize, Vec<usize>);

/// `(to - from) mod 4096`: how far past `from` within a 4 KiB page `to`
/// lies. Two streams this close (a store trailing a load by less than a few
/// hundred bytes) can falsely look dependent to the CPU (4K aliasing).
pub fn page_distance(from: *const f32, to: *const f32) -> usize {
    (to as usize).wrapping_sub(from as usize) % 4096
}

/// What a replay reports for a call, at most this times the static call
/// (every call of the bundled workload within 5%).
pub const REPLAY_MAX_RATIO: f64 = 1.05;

impl Calls {
    /// Section 3 of the report.
    pub fn render(&self) -> String {
        let mut out = match self.kernels.is_empty() {
            true => "\n3. Call overhead: not measured (KILN_BENCH_CALLS=workload)\n".to_string(),
            false => format!(
                "\n3. Call overhead (ns per call; matmul is {n}x{n} @ {n}x{n}, tile 64)\n",
                n = self.matmul_n
            ),
        };
        let pm = |s: &Summary| format!("{} ± {}", num(s.median), num(s.mad));
        let mut t = Table::new(&["kernel", "way", "ns/call", "x static", "+us"]);
        for k in &self.kernels {
            for (way, summary) in &k.ns {
                t.row(vec![
                    k.kernel.clone(),
                    way.clone(),
                    pm(summary),
                    format!("{:.3}", k.ratio(way)),
                    num(k.overhead_ns(way) / 1e3),
                ]);
            }
        }
        if !self.kernels.is_empty() {
            out.push_str(&t.render());
        }
        if let Some((kiln, static_calls)) = &self.stencil_layout {
            out.push_str(&format!(
                "  stencil2d's output lies {kiln} B past its input modulo 4 KiB in kiln (every call of this run), {static_calls:?} B in static calls\n"
            ));
        }
        out.push_str(
            "\n3b. Every call of the bundled workload: the replay's time (its own code: resident arguments, \
             engine thread, the timed run right after 0.3 ms of untimed runs of the call, output released after \
             each sample) against the same kernel linked statically (the module's kernel table, the call \
             bound as the engine binds it, called in a loop), interleaved; 'one run': a sample of one run \
             alone (as cold timing samples, without the flush), the engine's pool waking inside the timed span; \
             'paired x': the median over rounds of the replay's batch over the static batch of the same round \
             (what the target reads: spells of other work hit both sides of each ratio)\n",
        );
        let mut t = Table::new(&[
            "call",
            "static ns",
            "replay ns",
            "x static",
            "paired x",
            "static spread",
            "one run ns",
            "x static",
        ]);
        for k in &self.workload {
            let (Some(s), Some(r)) = (k.get(WORKLOAD_WAYS[0]), k.get(WORKLOAD_WAYS[1])) else {
                continue;
            };
            let one = k.get(WORKLOAD_WAYS[2]);
            t.row(vec![
                k.kernel.clone(),
                pm(s),
                pm(r),
                format!("{:.3}", k.ratio(WORKLOAD_WAYS[1])),
                format!("{:.3}", k.paired_ratio(WORKLOAD_WAYS[1])),
                format!("{:.1}%", 100.0 * s.mad / s.median),
                one.map_or_else(String::new, pm),
                one.map_or_else(String::new, |_| format!("{:.3}", k.ratio(WORKLOAD_WAYS[2]))),
            ]);
        }
        out.push_str(&t.render());
        if let Some(share) = self.other_work {
            out.push_str(&format!(
                "  other processes used {:.0}% of the machine's CPUs meanwhile\n",
                share * 100.0
            ));
        }
        out
    }

    /// What a replay reports for a call (timed on the engine thread)
    /// against the same kernel linked statically, for every call of the
    /// bundled workload.
    pub fn replay_targets(&self) -> Vec<Target> {
        self.workload
            .iter()
            .filter(|kernel| !is_fixed_cost(kernel))
            .map(|kernel| {
                let ratio = kernel.paired_ratio(WORKLOAD_WAYS[1]);
                Target {
                    name: format!("replay's time of call {} vs static", kernel.kernel.trim()),
                    met: ratio <= REPLAY_MAX_RATIO,
                    detail: format!(
                        "{:+.2}% paired by round, {:+.2}% median to median (budget +{:.0}%)",
                        (ratio - 1.0) * 100.0,
                        (kernel.ratio(WORKLOAD_WAYS[1]) - 1.0) * 100.0,
                        (REPLAY_MAX_RATIO - 1.0) * 100.0
                    ),
                }
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "matmul_n": self.matmul_n,
            "threads": THREADS,
            "bundled_workload": self.workload.iter().filter(|k| !is_fixed_cost(k)).map(workload_json).collect::<Vec<_>>(),
            "fixed_cost_of_a_call": self.workload.iter().find(|k| is_fixed_cost(k)).map(workload_json),
            "stencil2d_output_past_input_mod_4k": self.stencil_layout.as_ref().map(|(kiln, static_calls)| json!({
                "kiln": kiln,
                "static": static_calls,
            })),
            "kernels": self.kernels.iter().map(|k| json!({
                "kernel": k.kernel,
                "ways": k.ns.iter().map(|(way, s)| json!({
                    "way": way,
                    "ns_per_call": s.to_json(),
                    "ratio_to_static": k.ratio(way),
                    "overhead_ns": k.overhead_ns(way),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The row of the empty call ([`crate::workload_calls::FIXED_COST`]).
fn is_fixed_cost(k: &KernelCalls) -> bool {
    k.kernel.starts_with(crate::workload_calls::FIXED_COST)
}

fn workload_json(k: &KernelCalls) -> Value {
    json!({
        "call": k.kernel,
        "ways": k.ns.iter().map(|(way, s)| json!({
            "way": way,
            "ns_per_call": s.to_json(),
            "ratio_to_static": k.ratio(way),
            "paired_ratio_to_static": k.paired_ratio(way),
        })).collect::<Vec<_>>(),
    })
}

/// What one call gave back: its values when asked for (the check before the
/// timed rounds) and, where the call timed itself (the replay's way), how
/// long it took; otherwise the caller's clock times it.
pub(crate) struct Ran {
    pub(crate) values: Option<Vec<f32>>,
    pub(crate) took: Option<Duration>,
}

/// A call; `true` asks for its values. In the timed rounds nothing is
/// asked: every way drops its output there (a kiln output is not copied
/// into a `Vec`, which cost a 1 MiB stencil2d call +45 us, as a static one
/// is not), so each way's time is the call and the freeing of its output.
pub(crate) type CallFn<'a> = Box<dyn FnMut(bool) -> Result<Ran, String> + 'a>;

/// A static call, timed by the caller's clock.
fn plain<'a>(mut f: impl FnMut() -> Result<Vec<f32>, String> + 'a) -> CallFn<'a> {
    Box::new(move |_| {
        Ok(Ran {
            values: Some(f()?),
            took: None,
        })
    })
}

/// A kiln call: its output, and its time where it timed itself.
fn kiln_call<'a>(
    mut f: impl FnMut() -> Result<(Output, Option<Duration>), String> + 'a,
) -> CallFn<'a> {
    Box::new(move |values| {
        let (out, took) = f()?;
        let values = match values {
            true => Some(output_f32(out)?),
            false => {
                black_box(out);
                None
            }
        };
        Ok(Ran { values, took })
    })
}
/// A way of calling a kernel (one of [`WAYS`]) and the call.
type Way<'a> = (&'static str, CallFn<'a>);

fn close(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= 1e-5 * (1.0 + w.abs()))
}

/// How many calls make one batch of about `batch_ms`.
fn batch_size(f: &mut CallFn<'_>, batch_ms: f64) -> Result<usize, String> {
    let t0 = Instant::now();
    let mut n = 0usize;
    while n < 3 || t0.elapsed().as_secs_f64() * 1e3 < batch_ms / 4.0 {
        black_box(f(false)?);
        n += 1;
    }
    let per_call_ms = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
    Ok(((batch_ms / per_call_ms) as usize).max(3))
}

/// Interleaved rounds of batches; checks every way's output against the
/// first way's (static).
fn measure_ways(kernel: &str, ways: Vec<Way<'_>>, config: &Config) -> Result<KernelCalls, String> {
    let (names, mut ways): (Vec<&str>, Vec<CallFn<'_>>) = ways.into_iter().unzip();
    let values = |way: &mut CallFn<'_>| -> Result<Vec<f32>, String> {
        way(true)?
            .values
            .ok_or_else(|| format!("{kernel}: a call gave no values"))
    };
    let want = values(&mut ways[0])?;
    for (name, way) in names.iter().zip(ways.iter_mut()) {
        let got = values(way)?;
        if !close(&got, &want) {
            return Err(format!("{kernel}: {name} computed a different result"));
        }
    }
    time_ways(kernel, names, ways, config)
}

/// Interleaved rounds of batches of each way (calibrated to about
/// `call_batch_ms` each), after warm-up: per-call time of every way.
pub(crate) fn time_ways(
    kernel: &str,
    names: Vec<&str>,
    mut ways: Vec<CallFn<'_>>,
    config: &Config,
) -> Result<KernelCalls, String> {
    let counts: Vec<usize> = ways
        .iter_mut()
        .map(|w| batch_size(w, config.call_batch_ms))
        .collect::<Result<_, _>>()?;
    let mut runners: Vec<Box<dyn FnMut() -> Result<f64, String> + '_>> = ways
        .iter_mut()
        .zip(&counts)
        .map(|(way, &count)| {
            Box::new(move || {
                let t0 = Instant::now();
                let mut inner = Some(Duration::ZERO);
                for _ in 0..count {
                    let ran = way(false)?;
                    inner = inner.zip(ran.took).map(|(a, b)| a + b);
                }
                let total = inner.unwrap_or_else(|| t0.elapsed());
                Ok(total.as_nanos() as f64 / count as f64)
            }) as Box<dyn FnMut() -> Result<f64, String>>
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> Result<f64, String>> = runners
        .iter_mut()
        .map(|r| r.as_mut() as &mut dyn FnMut() -> Result<f64, String>)
        .collect();
    let samples = interleaved(config.warmup, config.call_rounds, &mut refs)?;
    let paired = names
        .iter()
        .zip(&samples)
        .filter_map(|(way, s)| {
            let ratios = per_round_ratios(s, &samples[0]);
            Summary::of(&ratios).map(|r| (way.to_string(), r))
        })
        .collect();
    let ns = names
        .iter()
        .zip(samples)
        .map(|(way, s)| {
            Summary::of(&s)
                .map(|s| (way.to_string(), s))
                .ok_or_else(|| format!("{kernel} {way}: no finite samples"))
        })
        .collect::<Result<_, _>>()?;
    Ok(KernelCalls {
        kernel: kernel.to_string(),
        ns,
        paired,
    })
}

/// `way[r] / base[r]` for every round `r` both have.
fn per_round_ratios(way: &[f64], base: &[f64]) -> Vec<f64> {
    way.iter().zip(base).map(|(w, b)| w / b).collect()
}

/// The kiln ways of calling `call` (the four of [`WAYS`] after
/// hot-lib-reloader); `resident` is the same call on resident arguments.
fn kiln_ways<'a>(
    call: Call,
    resident: Call,
    served: &'a kiln::ServedModule,
    handle: &'a kiln::EngineHandle,
) -> Vec<Way<'a>> {
    let by_value = call.clone();
    let timed = resident.clone();
    vec![
        (
            WAYS[2],
            kiln_call(move || Ok((handle.run(call.clone()).map_err(|e| e.to_string())?, None))),
        ),
        (
            WAYS[3],
            kiln_call(move || {
                Ok((
                    served.call(by_value.clone()).map_err(|e| e.to_string())?,
                    None,
                ))
            }),
        ),
        (
            WAYS[4],
            kiln_call(move || {
                Ok((
                    served.call(resident.clone()).map_err(|e| e.to_string())?,
                    None,
                ))
            }),
        ),
        (
            REPLAY_WAY,
            kiln_call(move || {
                let (out, took) = handle.run_timed(timed.clone()).map_err(|e| e.to_string())?;
                Ok((out, Some(took)))
            }),
        ),
    ]
}

/// The kernels hot-lib-reloader's library does not export, at the bundled
/// workload's sizes: static and through kiln. Their arguments are put on
/// the engine as residents `oa`, `ob` for the resident way.
fn other_kernels(
    config: &Config,
    pool: &rayon::ThreadPool,
    served: &kiln::ServedModule,
    handle: &kiln::EngineHandle,
) -> Result<(Vec<KernelCalls>, Option<Layout>), String> {
    let put = |name: &str, t: Tensor| handle.put_resident(name, t).map_err(|e| e.to_string());
    let mut kernels = Vec::new();

    let n = 1 << 20;
    let x = kernel_reference::test_values(n, 1);
    let y = kernel_reference::test_values(n, 2);
    put("oa", Tensor::from_f32(&[n], x.clone()))?;
    put("ob", Tensor::from_f32(&[n], y.clone()))?;
    let call = Call::new("dot")
        .arg(Tensor::from_f32(&[n], x.clone()))
        .arg(Tensor::from_f32(&[n], y.clone()));
    let resident = Call::new("dot").resident("oa").resident("ob");
    let mut ways: Vec<Way<'_>> = vec![(
        WAYS[0],
        plain(|| Ok(vec![static_kernels::dot(pool, &x, &y)])),
    )];
    ways.extend(kiln_ways(call, resident, served, handle));
    kernels.push(measure_ways(&format!("dot, {n} elements"), ways, config)?);

    let (h, w) = (512, 512);
    let grid = kernel_reference::test_values(h * w, 5);
    put("oa", Tensor::from_f32(&[h, w], grid.clone()))?;
    let alpha = 0.1;
    let call = Call::new("stencil2d")
        .arg(Tensor::from_f32(&[h, w], grid.clone()))
        .param("alpha", Scalar::F64(alpha));
    let resident = Call::new("stencil2d")
        .resident("oa")
        .param("alpha", Scalar::F64(alpha));
    let mut ways: Vec<Way<'_>> = vec![(
        WAYS[0],
        plain(|| Ok(static_kernels::stencil2d(pool, &grid, (h, w), alpha as f32))),
    )];
    ways.extend(kiln_ways(call, resident, served, handle));
    kernels.push(measure_ways(&format!("stencil2d {h}x{w}"), ways, config)?);
    let grid_ptr = handle
        .read_resident("oa")
        .map_err(|e| e.to_string())?
        .as_f32()
        .map(<[f32]>::as_ptr);
    let stencil = Call::new("stencil2d")
        .resident("oa")
        .param("alpha", Scalar::F64(alpha));
    let out = handle.run_timed(stencil).map_err(|e| e.to_string())?.0;
    let out_ptr = out
        .into_tensor()
        .and_then(|t| t.as_f32().map(<[f32]>::as_ptr));
    let static_calls: Vec<usize> = (0..4)
        .map(|_| {
            let out = static_kernels::stencil2d(pool, &grid, (h, w), alpha as f32);
            page_distance(grid.as_ptr(), out.as_ptr())
        })
        .collect();
    let layout = grid_ptr
        .zip(out_ptr)
        .map(|(g, o)| (page_distance(g, o), static_calls));

    let (rows, cols) = (512, 1024);
    let m = kernel_reference::test_values(rows * cols, 6);
    put("oa", Tensor::from_f32(&[rows, cols], m.clone()))?;
    let call = Call::new("softmax").arg(Tensor::from_f32(&[rows, cols], m.clone()));
    let resident = Call::new("softmax").resident("oa");
    let mut ways: Vec<Way<'_>> = vec![(
        WAYS[0],
        plain(|| Ok(static_kernels::softmax(pool, &m, (rows, cols)))),
    )];
    ways.extend(kiln_ways(call, resident, served, handle));
    kernels.push(measure_ways(
        &format!("softmax {rows}x{cols}"),
        ways,
        config,
    )?);
    Ok((kernels, layout))
}

/// The smallest square matmul that takes at least 1 ms statically here.
fn calibrate_matmul(pool: &rayon::ThreadPool) -> usize {
    let mut n = 32;
    loop {
        let a = kernel_reference::test_values(n * n, 3);
        let b = kernel_reference::test_values(n * n, 4);
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let t0 = Instant::now();
                black_box(static_kernels::matmul(pool, &a, &b, (n, n, n), TILE));
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        if times[3] >= 1.0 || n >= 1024 {
            return n;
        }
        n += 8;
    }
}

fn saxpy_ways<'a>(
    x: &'a [f32],
    y: &'a [f32],
    pool: &'a rayon::ThreadPool,
    hot: &'a dyn HotLibReloader,
    served: &'a kiln::ServedModule,
    handle: &'a kiln::EngineHandle,
) -> Vec<Way<'a>> {
    let resident = Call::new("saxpy")
        .resident("sx")
        .resident("sy")
        .param("a", Scalar::F64(1.5));
    let mut ways: Vec<Way<'a>> = vec![
        (
            WAYS[0],
            plain(move || Ok(static_kernels::saxpy(pool, 1.5, x, y))),
        ),
        (WAYS[1], plain(move || hot.saxpy(1.5, x, y))),
    ];
    ways.extend(kiln_ways(saxpy_call(x, y), resident, served, handle));
    ways
}

fn matmul_call(a: &[f32], b: &[f32], n: usize) -> Call {
    Call::new("matmul")
        .arg(Tensor::from_f32(&[n, n], a.to_vec()))
        .arg(Tensor::from_f32(&[n, n], b.to_vec()))
        .param("tile", Scalar::I64(TILE as i64))
}

fn matmul_ways<'a>(
    a: &'a [f32],
    b: &'a [f32],
    n: usize,
    pool: &'a rayon::ThreadPool,
    hot: &'a dyn HotLibReloader,
    served: &'a kiln::ServedModule,
    handle: &'a kiln::EngineHandle,
) -> Vec<Way<'a>> {
    let resident = Call::new("matmul")
        .resident("ma")
        .resident("mb")
        .param("tile", Scalar::I64(TILE as i64));
    let mut ways: Vec<Way<'a>> = vec![
        (
            WAYS[0],
            plain(move || Ok(static_kernels::matmul(pool, a, b, (n, n, n), TILE))),
        ),
        (WAYS[1], plain(move || hot.matmul(a, b, (n, n, n), TILE))),
    ];
    ways.extend(kiln_ways(matmul_call(a, b, n), resident, served, handle));
    ways
}

pub fn measure(
    config: &Config,
    artifact: &std::path::Path,
    hot: &dyn HotLibReloader,
) -> Result<Calls, String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .start_handler(pin_as_kiln_does)
        .build()
        .map_err(|e| format!("cannot start the static rayon pool: {e}"))?;
    let side = KilnSide::new(&config.workspace, artifact, "calls")?;
    let served = side.serve(0)?;
    let handle = served.handle();
    let put = |name: &str, t: Tensor| handle.put_resident(name, t).map_err(|e| e.to_string());

    let mut kernels = Vec::new();
    if workload_only() {
        let (workload, other_work) = measure_workload(config, &pool, &handle)?;
        return Ok(Calls {
            kernels,
            matmul_n: 0,
            stencil_layout: None,
            workload,
            other_work,
        });
    }
    for len in [1usize, 1024] {
        let x = kernel_reference::test_values(len, 1);
        let y = kernel_reference::test_values(len, 2);
        put("sx", Tensor::from_f32(&[len], x.clone()))?;
        put("sy", Tensor::from_f32(&[len], y.clone()))?;
        let ways = saxpy_ways(&x, &y, &pool, hot, &served, &handle);
        let kernel = match len {
            1 => "saxpy, 1 element".to_string(),
            _ => format!("saxpy, {len} elements"),
        };
        kernels.push(measure_ways(&kernel, ways, config)?);
    }
    let (others, stencil_layout) = other_kernels(config, &pool, &served, &handle)?;
    kernels.extend(others);
    let (workload, other_work) = measure_workload(config, &pool, &handle)?;
    // Last: the report's "about 1 ms" target reads the last kernel.
    let n = calibrate_matmul(&pool);
    let a = kernel_reference::test_values(n * n, 3);
    let b = kernel_reference::test_values(n * n, 4);
    put("ma", Tensor::from_f32(&[n, n], a.clone()))?;
    put("mb", Tensor::from_f32(&[n, n], b.clone()))?;
    let ways = matmul_ways(&a, &b, n, &pool, hot, &served, &handle);
    kernels.push(measure_ways(
        &format!("matmul {n}x{n} (~1 ms)"),
        ways,
        config,
    )?);
    Ok(Calls {
        kernels,
        matmul_n: n,
        stencil_layout,
        workload,
        other_work,
    })
}

/// `KILN_BENCH_CALLS=workload`: section 3b alone (every call of the bundled
/// workload against static), for repeated runs.
fn workload_only() -> bool {
    std::env::var("KILN_BENCH_CALLS").is_ok_and(|v| v == "workload")
}

/// Section 3b and the share of the machine other processes used meanwhile.
fn measure_workload(
    config: &Config,
    pool: &rayon::ThreadPool,
    handle: &kiln::EngineHandle,
) -> Result<(Vec<KernelCalls>, Option<f64>), String> {
    let before = kiln::process::cpu_ticks();
    let started = Instant::now();
    let workload = crate::workload_calls::measure(config, pool, handle)?;
    let other_work = before
        .zip(kiln::process::cpu_ticks())
        .map(|(b, a)| kiln::process::other_work_share(b, a, started.elapsed()));
    Ok((workload, other_work))
}

/// Pins the static pool's `k`-th thread to the `k`-th CPU this process may
/// run on, as kiln pins a version's module threads (`KILN_NO_PIN=1` leaves
/// both to the scheduler): the static side runs the same kernel source on
/// the same number of threads, placed the same way.
fn pin_as_kiln_does(k: usize) {
    if std::env::var_os("KILN_NO_PIN").is_some_and(|v| v == "1") {
        return;
    }
    let Ok(allowed) = rustix::thread::sched_getaffinity(None) else {
        return;
    };
    let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .collect();
    if let Some(&cpu) = cpus.get(k % cpus.len().max(1)) {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        // Best effort, as kiln's: a refusal leaves the thread unpinned.
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
}

#[cfg(test)]
mod tests {
    use super::{page_distance, per_round_ratios};

    #[test]
    fn paired_ratios_divide_each_round_by_the_same_round() {
        // A slow spell in round 1 hits both ways: each round's ratio is 2.
        assert_eq!(
            per_round_ratios(&[2.0, 8.0, 4.0], &[1.0, 4.0, 2.0]),
            vec![2.0; 3]
        );
    }

    #[test]
    fn page_distance_is_how_far_past_within_a_page_wrapping_around() {
        let v = vec![0f32; 2048];
        let p = v.as_ptr();
        assert_eq!(page_distance(p, p.wrapping_add(4)), 16);
        // An output 16 bytes before its input lies 4080 bytes past it.
        assert_eq!(page_distance(p.wrapping_add(4), p), 4080);
        assert_eq!(page_distance(p, p.wrapping_add(1024)), 0);
    }
}

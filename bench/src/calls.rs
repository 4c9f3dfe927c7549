//! Section 3 of the report: call overhead. The same kernel code called statically (linked into
//! the benchmark, its own 2-thread pool), through a hot-lib-reloader
//! generated function (library with its own 2-thread pool), and through
//! kiln (engine thread + engine-owned 2-thread pool), for a tiny kernel
//! (saxpy on 1 and on 1,024 elements), every other kernel of the module at
//! the bundled workload's sizes (dot, stencil2d, softmax: hot-lib-reloader's
//! library exports saxpy and matmul only), and one that takes about 1 ms
//! (matmul, size calibrated on this machine), last.

use std::hint::black_box;
use std::time::Instant;

use serde_json::{Value, json};
use shared_state::{Call, Scalar, Tensor};

use crate::config::Config;
use crate::hot_reloader::HotLibReloader;
use crate::kiln_side::{KilnSide, THREADS, output_f32, saxpy_call};
use crate::static_kernels;
use crate::stats::{Summary, interleaved};

/// Tile of every matmul (kiln's default).
const TILE: usize = 64;

/// The ways a kernel is called, in table order.
pub const WAYS: [&str; 5] = [
    "static",
    "hot-lib-reloader",
    "kiln EngineHandle::run",
    "kiln ServedModule::call",
    "kiln ServedModule::call, resident args",
];

/// Per-call times of one kernel, one summary per way (ns per call).
#[derive(Clone, Debug)]
pub struct KernelCalls {
    pub kernel: String,
    pub ns: Vec<(String, Summary)>,
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
}

#[derive(Clone, Debug)]
pub struct Calls {
    pub kernels: Vec<KernelCalls>,
    /// The matmul is `n x n @ n x n`.
    pub matmul_n: usize,
}

impl Calls {
    pub fn to_json(&self) -> Value {
        json!({
            "matmul_n": self.matmul_n,
            "threads": THREADS,
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

type CallFn<'a> = Box<dyn FnMut() -> Result<Vec<f32>, String> + 'a>;
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
        black_box(f()?);
        n += 1;
    }
    let per_call_ms = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
    Ok(((batch_ms / per_call_ms) as usize).max(3))
}

/// Interleaved rounds of batches; checks every way's output against the
/// first way's (static).
fn measure_ways(kernel: &str, ways: Vec<Way<'_>>, config: &Config) -> Result<KernelCalls, String> {
    let (names, mut ways): (Vec<&str>, Vec<CallFn<'_>>) = ways.into_iter().unzip();
    let want = ways[0]()?;
    for (name, way) in names.iter().zip(ways.iter_mut()) {
        let got = way()?;
        if !close(&got, &want) {
            return Err(format!("{kernel}: {name} computed a different result"));
        }
    }
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
                for _ in 0..count {
                    black_box(way()?);
                }
                Ok(t0.elapsed().as_nanos() as f64 / count as f64)
            }) as Box<dyn FnMut() -> Result<f64, String>>
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> Result<f64, String>> = runners
        .iter_mut()
        .map(|r| r.as_mut() as &mut dyn FnMut() -> Result<f64, String>)
        .collect();
    let samples = interleaved(config.warmup, config.call_rounds, &mut refs)?;
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
    })
}

/// The kiln ways of calling `call` (the three of [`WAYS`] after
/// hot-lib-reloader); `resident` is the same call on resident arguments.
fn kiln_ways<'a>(
    call: Call,
    resident: Call,
    served: &'a kiln::ServedModule,
    handle: &'a kiln::EngineHandle,
) -> Vec<Way<'a>> {
    let by_value = call.clone();
    vec![
        (
            WAYS[2],
            Box::new(move || output_f32(handle.run(call.clone()).map_err(|e| e.to_string())?)),
        ),
        (
            WAYS[3],
            Box::new(move || output_f32(served.call(by_value.clone()).map_err(|e| e.to_string())?)),
        ),
        (
            WAYS[4],
            Box::new(move || output_f32(served.call(resident.clone()).map_err(|e| e.to_string())?)),
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
) -> Result<Vec<KernelCalls>, String> {
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
        Box::new(|| Ok(vec![static_kernels::dot(pool, &x, &y)])),
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
        Box::new(|| Ok(static_kernels::stencil2d(pool, &grid, (h, w), alpha as f32))),
    )];
    ways.extend(kiln_ways(call, resident, served, handle));
    kernels.push(measure_ways(&format!("stencil2d {h}x{w}"), ways, config)?);

    let (rows, cols) = (512, 1024);
    let m = kernel_reference::test_values(rows * cols, 6);
    put("oa", Tensor::from_f32(&[rows, cols], m.clone()))?;
    let call = Call::new("softmax").arg(Tensor::from_f32(&[rows, cols], m.clone()));
    let resident = Call::new("softmax").resident("oa");
    let mut ways: Vec<Way<'_>> = vec![(
        WAYS[0],
        Box::new(|| Ok(static_kernels::softmax(pool, &m, (rows, cols)))),
    )];
    ways.extend(kiln_ways(call, resident, served, handle));
    kernels.push(measure_ways(
        &format!("softmax {rows}x{cols}"),
        ways,
        config,
    )?);
    Ok(kernels)
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
            Box::new(move || Ok(static_kernels::saxpy(pool, 1.5, x, y))),
        ),
        (WAYS[1], Box::new(move || hot.saxpy(1.5, x, y))),
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
            Box::new(move || Ok(static_kernels::matmul(pool, a, b, (n, n, n), TILE))),
        ),
        (WAYS[1], Box::new(move || hot.matmul(a, b, (n, n, n), TILE))),
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
        .build()
        .map_err(|e| format!("cannot start the static rayon pool: {e}"))?;
    let side = KilnSide::new(&config.workspace, artifact, "calls")?;
    let served = side.serve(0)?;
    let handle = served.handle();
    let put = |name: &str, t: Tensor| handle.put_resident(name, t).map_err(|e| e.to_string());

    let mut kernels = Vec::new();
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
    kernels.extend(other_kernels(config, &pool, &served, &handle)?);
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
    })
}

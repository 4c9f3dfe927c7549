//! A GPU device's peaks (Vulkan, CUDA), measured by running the module's
//! peak kernels (see [`super::peak_kernels`]) through the engine call path
//! and timing the calls on the host.
//!
//! A call's time includes more than its kernel (a fresh output buffer, the
//! uniform block, submission, the wait for the fence), so each rate comes
//! from a difference of two calls that differ only in work:
//!
//! - bandwidth: the triad with 33 passes in one submission (3 on a
//!   software device) minus the triad with 1, so 32 (2) sweeps of `a = b + s*c` over resident f32 arrays far
//!   beyond the device's caches (12 bytes per element, STREAM's count);
//! - compute: the FMA loop with `2k` rounds minus `k` rounds.
//!
//! Pairs are interleaved, so drift hits both; the peak is the difference
//! of the fastest calls (noise only adds time), the median that of the
//! medians. On a software device (lavapipe) the arrays
//! are sized from the CPU's LLC and the key includes what the CPU's does.

use std::time::{Duration, Instant};

use kiln_stats::{bytes, median};
use shared_state::{Call, ErrorKind, ModuleInfo, Scalar, Tensor};

use super::key::{self, METHOD_VERSION, MachineKey};
use super::llc;
use super::peak_kernels::{
    FMA, FMA_CHAINS, PeakEngine, TRIAD, TRIAD_LONG, TRIAD_LONG_PASSES, TRIAD_PASSES, TRIAD_X,
};
use super::peaks::{DevicePeaks, PeakProbe, Rate, load_average, unix_now};
use crate::swap::engine_handle::{EngineHandle, EngineOptions};
use crate::swap::load::LoadedModule;

/// Each triad array on a GPU: 3 x 256 MiB is beyond any GPU cache today
/// (the largest, AMD's Infinity Cache, is 256 MiB in all).
const GPU_ARRAY_BYTES: usize = 256 << 20;
/// A device may bind less per storage buffer: halved down to this.
const MIN_ARRAY_BYTES: usize = 4 << 20;
/// FMA invocations: enough waves for any GPU; fewer on a CPU device.
const GPU_FMA_INVOCATIONS: usize = 1 << 21;
const SOFTWARE_FMA_INVOCATIONS: usize = 1 << 16;
/// Rounds: at least 3 pairs, then until the budget is spent or 12 pairs.
pub const ROUNDS: (usize, usize) = (3, 12);
const BUDGET: Duration = Duration::from_millis(1200);
/// The FMA call with `k` rounds is calibrated to about this long.
const FMA_CALL_SECS: f64 = 0.02;

/// What a GPU device's peaks are keyed by, from an engine's `info()`:
/// the device's description (name, kind, driver, API version) and the
/// identity its module reports (`device/identity`: vendor, device, driver
/// version, cache UUID). A software device (lavapipe) runs on the CPU, so
/// its key also has what the CPU's has.
pub fn key_of(info: &ModuleInfo) -> MachineKey {
    let note = |name: &str| match info.notes.get(name) {
        Some(Scalar::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let software = is_software(info);
    MachineKey {
        backend: info.backend.clone(),
        device: if software {
            format!("{} on {}", info.device, key::cpu_model())
        } else {
            info.device.clone()
        },
        driver: Some(note("device/identity").unwrap_or_else(|| info.device.clone())),
        threads: if software {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        },
        cpu_quota: if software {
            key::cpu_quota()
        } else {
            "n/a".to_string()
        },
        llc_used_bytes: if software {
            llc::detect().used_bytes
        } else {
            0
        },
        instructions: if software {
            key::cpu_instructions()
        } else {
            "n/a".to_string()
        },
        method: METHOD_VERSION,
    }
}

/// A device the module says runs on the CPU (`device/kind` = `software`).
fn is_software(info: &ModuleInfo) -> bool {
    matches!(info.notes.get("device/kind"), Some(Scalar::Text(k)) if k == "software")
}

/// Measures one GPU device through its module's peak kernels.
pub struct EngineProbe<'m> {
    module: &'m LoadedModule,
    options: EngineOptions,
    key: MachineKey,
    software: bool,
    /// Started already (to read the key), or started by `measure`.
    engine: Option<PeakEngine>,
}

impl<'m> EngineProbe<'m> {
    /// The device `served` runs on, keyed from its `info()`; a peak engine
    /// of the same module with the same `options` is started only to
    /// measure.
    pub fn for_served(
        served: &'m EngineHandle,
        options: &EngineOptions,
    ) -> Result<EngineProbe<'m>, String> {
        let info = served.info().map_err(|e| e.to_string())?;
        Ok(EngineProbe {
            module: served.module(),
            options: options.clone(),
            key: key_of(&info),
            software: is_software(&info),
            engine: None,
        })
    }

    /// Starts a peak engine of `module` with `options` now (`kiln
    /// machine`), its `info()` giving the key.
    pub fn started(
        module: &'m LoadedModule,
        options: &EngineOptions,
    ) -> Result<EngineProbe<'m>, String> {
        let engine = PeakEngine::start(module, options)?;
        let info = engine.handle().info().map_err(|e| e.to_string())?;
        Ok(EngineProbe {
            module,
            options: options.clone(),
            key: key_of(&info),
            software: is_software(&info),
            engine: Some(engine),
        })
    }
}

impl PeakProbe for EngineProbe<'_> {
    fn key(&self) -> MachineKey {
        self.key.clone()
    }

    fn measure(&self) -> Result<DevicePeaks, String> {
        let load_before = load_average();
        let started = Instant::now();
        let own;
        let engine = match &self.engine {
            Some(e) => e,
            None => {
                own = PeakEngine::start(self.module, &self.options)?;
                &own
            }
        };
        let handle = engine.handle();
        let array_bytes = if self.software {
            // The CPU's caches: its LLC per array, 3 x in all (lavapipe is
            // slow per element: bigger arrays only make it longer).
            (llc::detect().used_bytes as usize).max(16 << 20)
        } else {
            GPU_ARRAY_BYTES
        };
        let long = match self.software {
            true => (TRIAD_X, TRIAD_PASSES),
            false => (TRIAD_LONG, TRIAD_LONG_PASSES),
        };
        let bandwidth = measure_triad(handle, array_bytes, long)?;
        let invocations = if self.software {
            SOFTWARE_FMA_INVOCATIONS
        } else {
            GPU_FMA_INVOCATIONS
        };
        let compute = measure_fma(handle, invocations)?;
        Ok(DevicePeaks {
            key: self.key.clone(),
            bandwidth,
            compute,
            compute_i8: None,
            llc: None,
            flush: None,
            measured_unix: unix_now(),
            took_seconds: started.elapsed().as_secs_f64(),
            load_before,
        })
    }
}

/// Seconds `call` takes on `handle`.
fn timed(handle: &EngineHandle, call: Call) -> Result<(f64, shared_state::Output), String> {
    let start = Instant::now();
    let out = handle.run(call).map_err(|e| e.to_string())?;
    Ok((start.elapsed().as_secs_f64(), out))
}

/// Interleaved pairs of calls (`small`, `large`) until [`ROUNDS`] /
/// [`BUDGET`], and the rate of `work` (the large call's extra work) from
/// their times: the peak from the fastest of each (noise only ever adds
/// time), the median from their medians.
fn pairs(
    handle: &EngineHandle,
    small: &dyn Fn() -> Call,
    large: &dyn Fn() -> Call,
    work: f64,
    method: impl FnOnce(usize) -> String,
) -> Result<Rate, String> {
    let started = Instant::now();
    let (mut smalls, mut larges) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS.1 {
        if round >= ROUNDS.0 && started.elapsed() > BUDGET {
            break;
        }
        smalls.push(timed(handle, small())?.0);
        larges.push(timed(handle, large())?.0);
    }
    rate_of_pairs(&smalls, &larges, work, method(smalls.len()))
}

/// The rate of `work` done by the larger calls beyond the smaller ones.
pub fn rate_of_pairs(
    smalls: &[f64],
    larges: &[f64],
    work: f64,
    method: String,
) -> Result<Rate, String> {
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let best = min(larges) - min(smalls);
    let typical = median(larges) - median(smalls);
    if best.is_nan() || best <= 0.0 {
        return Err(format!(
            "the larger calls were not slower (fastest {:.3} ms vs {:.3} ms): too noisy to \
             measure",
            min(larges) * 1e3,
            min(smalls) * 1e3
        ));
    }
    Ok(Rate {
        best: work / best / 1e9,
        // A median difference lost in noise says nothing: the best then.
        median: if typical > 0.0 {
            work / typical / 1e9
        } else {
            work / best / 1e9
        },
        samples: smalls.len(),
        method,
    })
}

fn triad_call(kernel: &str) -> Call {
    Call::new(kernel)
        .resident("kiln_peak_b")
        .resident("kiln_peak_c")
        .param("s", Scalar::F64(3.0))
        .store_as("kiln_peak_a")
}

/// The triad on resident arrays of `array_bytes` each (halved while the
/// device binds less per buffer).
fn measure_triad(
    handle: &EngineHandle,
    mut array_bytes: usize,
    (long, passes): (&str, usize),
) -> Result<Rate, String> {
    let n = loop {
        let n = array_bytes / 4;
        let put = |name: &str, value: f32| {
            handle
                .put_resident(name, Tensor::from_f32(&[n], vec![value; n]))
                .map_err(|e| e.to_string())
        };
        put("kiln_peak_b", 1.0)?;
        put("kiln_peak_c", 2.0)?;
        match handle.run(triad_call(TRIAD)) {
            Ok(_) => break n,
            Err(e)
                if e.engine_error()
                    .is_some_and(|e| e.kind == ErrorKind::BadCall)
                    && array_bytes / 2 >= MIN_ARRAY_BYTES =>
            {
                array_bytes /= 2;
            }
            Err(e) => return Err(format!("the triad failed: {e}")),
        }
    };
    let a = handle
        .read_resident("kiln_peak_a")
        .map_err(|e| e.to_string())?;
    let values = a.as_f32().unwrap_or_default();
    if values.len() != n || [0, n / 2, n - 1].iter().any(|&i| values[i] != 7.0) {
        return Err("the triad computed wrong values (expected 1 + 3*2 = 7)".into());
    }
    let sweeps = (passes - 1) as f64;
    let array_bytes = n * 4;
    pairs(
        handle,
        &|| triad_call(TRIAD),
        &|| triad_call(long),
        sweeps * 12.0 * n as f64,
        |pairs| {
            format!(
                "triad a = b + s*c, 3 f32 arrays of {} each on the device, {passes} \
                 passes minus 1 per pair of calls, fastest of {pairs} pairs; \
                 12 bytes/element (STREAM's count)",
                bytes::human(array_bytes as u64),
            )
        },
    )
}

/// The FMA loop on `invocations` invocations, its round count `k` doubled
/// until `k` rounds take [`FMA_CALL_SECS`] beyond a call of one round.
fn measure_fma(handle: &EngineHandle, invocations: usize) -> Result<Rate, String> {
    let x = Tensor::from_f32(&[invocations], vec![0.5; invocations]);
    let call = |iters: i64| {
        Call::new(FMA)
            .arg(x.clone())
            .param("iters", Scalar::I64(iters))
    };
    let run = |iters: i64| -> Result<f64, String> {
        let (secs, out) = timed(handle, call(iters))?;
        let finite = out
            .into_tensor()
            .and_then(|t| t.as_f32().map(|v| v.iter().all(|x| x.is_finite())));
        if finite != Some(true) {
            return Err("the FMA loop computed no finite sums".into());
        }
        Ok(secs)
    };
    let one = run(1)?.min(run(1)?);
    let mut iters: i64 = 64;
    while run(iters)? - one < FMA_CALL_SECS && iters < 1 << 24 {
        iters *= 2;
    }
    let flops = iters as f64 * invocations as f64 * FMA_CHAINS as f64 * 2.0;
    pairs(
        handle,
        &|| call(iters),
        &|| call(2 * iters),
        flops,
        |pairs| {
            format!(
                "f32 FMA loop, {FMA_CHAINS} chains x {invocations} invocations, {} rounds \
                 minus {iters} per pair of calls, fastest of {pairs} pairs; FMA = 2 flops",
                2 * iters
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info(kind: &str, identity: Option<&str>) -> ModuleInfo {
        let mut notes = BTreeMap::new();
        notes.insert("device/kind".to_string(), Scalar::Text(kind.into()));
        if let Some(id) = identity {
            notes.insert("device/identity".to_string(), Scalar::Text(id.into()));
        }
        ModuleInfo {
            name: "kernel-vulkan".into(),
            backend: "vulkan".into(),
            device: "GPU X [discrete-gpu] (driver D 1.2, Vulkan 1.3)".into(),
            kernels: Vec::new(),
            notes,
        }
    }

    #[test]
    fn rates_come_from_the_fastest_calls_of_each_kind() {
        // 4e9 bytes of extra work: 1 s more at best (3 - 2), 2 s typically.
        let r = rate_of_pairs(&[2.0, 2.5, 9.0], &[3.0, 4.5, 9.5], 4e9, "m".into()).unwrap();
        assert_eq!((r.best, r.median, r.samples), (4.0, 2.0, 3));
        // Noise that makes the larger call no slower is refused.
        assert!(rate_of_pairs(&[1.0], &[1.0], 1.0, "m".into()).is_err());
    }

    #[test]
    fn gpu_keys_carry_the_driver_and_software_ones_the_cpu() {
        let gpu = key_of(&info("discrete-gpu", Some("vendor=10de driver=1 uuid=ab")));
        assert_eq!(gpu.backend, "vulkan");
        assert_eq!(gpu.driver.as_deref(), Some("vendor=10de driver=1 uuid=ab"));
        assert_eq!((gpu.threads, gpu.llc_used_bytes), (1, 0));
        let newer = key_of(&info("discrete-gpu", Some("vendor=10de driver=2 uuid=ab")));
        assert_ne!(
            gpu.file_stem(),
            newer.file_stem(),
            "a new driver re-measures"
        );
        // No identity note (an older module, CUDA): the description.
        let bare = key_of(&info("discrete-gpu", None));
        assert_eq!(bare.driver.as_deref(), Some(bare.device.as_str()));
        let soft = key_of(&info("software", Some("id")));
        assert!(soft.device.ends_with(&key::cpu_model()), "{}", soft.device);
        assert!(soft.threads >= 1 && soft.llc_used_bytes > 0);
    }
}

//! A device's measured peaks, and the probes that measure them: one
//! [`PeakProbe`] per backend device. The CPU's is [`CpuProbe`]; a GPU
//! backend adds its own (its triad and FMA loops are compute shaders its
//! module runs) and the rest (cache, roofline, columns) is shared.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kiln_stats::{bytes, median};
use serde::{Deserialize, Serialize};

use super::flush::CacheFlush;
use super::key::{self, METHOD_VERSION, MachineKey};
use super::llc::{self, LlcChoice};
use super::{fma, i8dot, threads, triad};

/// One measured peak rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// The peak: the best of the samples (GB/s or GFLOP/s, 10^9 units).
    pub best: f64,
    /// The median of the samples, to show the spread.
    pub median: f64,
    pub samples: usize,
    /// How it was measured, in words.
    pub method: String,
}

impl Rate {
    /// The best and the median of `samples`.
    pub fn of(samples: &[f64], method: String) -> Rate {
        Rate {
            best: samples.iter().copied().fold(f64::NAN, f64::max),
            median: median(samples),
            samples: samples.len(),
            method,
        }
    }
}

/// What one cold-cache flush costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlushCost {
    pub buffer_bytes: u64,
    /// Median of a few flushes.
    pub seconds: f64,
}

/// A device's peaks and how they were measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DevicePeaks {
    pub key: MachineKey,
    /// Memory bandwidth, GB/s (STREAM's byte count).
    pub bandwidth: Rate,
    /// f32 compute, GFLOP/s (an FMA is 2 flops).
    pub compute: Rate,
    /// i8 compute: i8 products summed in i32, GOP/s (a product and its add
    /// are 2 operations). `None` where it is not measured (GPU devices, a
    /// CPU without AVX2): i8 calls are then judged against `compute`.
    #[serde(default)]
    pub compute_i8: Option<Rate>,
    /// The LLC used and why (CPU devices).
    pub llc: Option<LlcChoice>,
    pub flush: Option<FlushCost>,
    /// When (seconds since the Unix epoch), how long it took, and the
    /// 1-minute load average just before (other processes slow the
    /// measurement; a high load means the peaks read low).
    pub measured_unix: u64,
    pub took_seconds: f64,
    pub load_before: Option<f64>,
}

impl DevicePeaks {
    /// Measured while more runnable processes than measuring threads were
    /// about: the peaks may read low.
    pub fn measured_busy(&self) -> bool {
        busy(self.load_before, self.key.threads)
    }

    /// The device in a few words, for the replay table's header and the
    /// history: `AMD EPYC, 2 threads` (the CPU), `vulkan: NAME ...` (a GPU
    /// device; with its CPU's thread count when it runs on the CPU).
    pub fn device_words(&self) -> String {
        let k = &self.key;
        match (k.backend.as_str(), k.llc_used_bytes > 0) {
            ("cpu", _) => format!("{}, {} threads", k.device, k.threads),
            (backend, true) => format!("{backend}: {}, {} threads", k.device, k.threads),
            (backend, false) => format!("{backend}: {}", k.device),
        }
    }
}

/// A 1-minute load average above the thread count.
pub fn busy(load: Option<f64>, threads: usize) -> bool {
    load.is_some_and(|l| l > threads as f64)
}

/// Measures one device's peaks.
pub trait PeakProbe {
    /// What the peaks depend on, read without measuring anything.
    fn key(&self) -> MachineKey;
    /// Measures them (a second or two; nothing else should run meanwhile).
    fn measure(&self) -> Result<DevicePeaks, String>;
}

/// The 1-minute load average from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The CPU, measured with the engine's thread count.
pub struct CpuProbe {
    pub threads: usize,
    pub llc: LlcChoice,
}

impl CpuProbe {
    /// This machine's CPU with `threads` threads (0: one per core).
    pub fn new(threads: usize) -> CpuProbe {
        CpuProbe {
            threads: threads::resolve_threads(threads),
            llc: llc::detect(),
        }
    }
}

/// FMA rounds of 3 ms: 10 to 100 of them within 0.3 s.
const FMA_ROUND_SECS: f64 = 0.003;
const FMA_ROUNDS: (usize, usize) = (10, 100);
const FMA_BUDGET_SECS: f64 = 0.3;
/// i8 rounds of 3 ms: 10 to 60 of them within 0.2 s.
const I8_ROUNDS: (f64, usize, usize, f64) = (0.003, 10, 60, 0.2);
const FLUSH_RUNS: usize = 5;

impl PeakProbe for CpuProbe {
    fn key(&self) -> MachineKey {
        MachineKey {
            backend: "cpu".into(),
            device: key::cpu_model(),
            driver: None,
            threads: self.threads,
            cpu_quota: key::cpu_quota(),
            llc_used_bytes: self.llc.used_bytes,
            instructions: key::cpu_instructions(),
            method: METHOD_VERSION,
        }
    }

    fn measure(&self) -> Result<DevicePeaks, String> {
        let load_before = load_average();
        let started = Instant::now();
        let pool = threads::pool(self.threads)?;
        let config = triad::TriadConfig::for_llc(self.llc.used_bytes);
        let t = triad::measure(&pool, &config);
        let bandwidth = Rate::of(
            &t.rates_gbs,
            format!(
                "triad a = b + s*c, 3 f64 arrays of {} each, {}, best of {} passes; \
                 24 bytes/element (STREAM's count: no write-allocate read)",
                bytes::human(t.array_bytes as u64),
                threads::count_words(self.threads),
                t.rates_gbs.len()
            ),
        );
        let samples = fma::measure(
            &pool,
            FMA_ROUND_SECS,
            FMA_ROUNDS.0,
            FMA_ROUNDS.1,
            FMA_BUDGET_SECS,
        );
        let isa = fma::Isa::detected();
        let compute = Rate::of(
            &samples,
            format!(
                "f32 FMA loop, {} chains per thread ({}), {}, best of {} rounds; \
                 FMA = 2 flops",
                isa.chains(),
                isa.words(),
                threads::count_words(self.threads),
                samples.len()
            ),
        );
        let compute_i8 = i8dot::measure(&pool, I8_ROUNDS).map(|(isa, samples)| {
            Rate::of(
                &samples,
                format!(
                    "i8 dot-product loop into i32 ({}), {}, best of {} rounds; \
                     a product and its add = 2 ops",
                    isa.words(),
                    threads::count_words(self.threads),
                    samples.len()
                ),
            )
        });
        drop(pool);
        let mut flush = CacheFlush::new(self.llc.used_bytes, self.threads)?;
        let flush = FlushCost {
            buffer_bytes: flush.bytes(),
            seconds: flush.cost(FLUSH_RUNS),
        };
        Ok(DevicePeaks {
            key: self.key(),
            bandwidth,
            compute,
            compute_i8,
            llc: Some(self.llc.clone()),
            flush: Some(flush),
            measured_unix: unix_now(),
            took_seconds: started.elapsed().as_secs_f64(),
            load_before,
        })
    }
}

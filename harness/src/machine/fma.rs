//! Compute: a loop of f32 fused multiply-adds with independent accumulator
//! chains (enough to cover the FMA latency on every pipe, so it is
//! throughput-bound), on every thread of the pool. An FMA counts as 2 flops.
//!
//! The loop runs on the widest FMA the CPU has, chosen at run time
//! ([`Isa::detected`]): AVX-512F (16 lanes), AVX2 + FMA (8 lanes), NEON,
//! else baseline SIMD multiply + add. [`max_flops_per_cycle`] is what one
//! core can do at most with each (tests/machine_fma.rs holds the measured
//! peak to it, per cycle of a clock measured by [`clock_round`]).

use std::time::Instant;

use rayon::ThreadPool;

/// Independent f32 accumulators of the generic loop: 10 AVX vectors of 8
/// lanes (FMA latency 4-5 cycles x 2 pipes needs at least 8-10 in flight;
/// 12 of 16 registers used).
const CHAINS: usize = 80;
/// AVX-512 accumulators: 16 zmm registers of 16 lanes (2 FMA pipes x 4
/// cycles of latency need 8 in flight; 18 of the 32 registers used).
const ZMM_CHAINS: usize = 16;

/// Whether this build has the AVX-512 loops: AVX-512 target features are
/// stable since Rust 1.89, above the workspace's 1.87 (harness/build.rs
/// sets `kiln_avx512` for a compiler that has them).
pub const AVX512_BUILT: bool = cfg!(all(target_arch = "x86_64", kiln_avx512));
const MULTIPLIER: f32 = 0.999_999;
const ADDEND: f32 = 1e-6;

/// The shape of every peak loop: `N` independent accumulators started by
/// `init`, `iters` rounds of `step` on each, then folded with `add` from
/// `zero`. Inlined into its caller, so that the closures' intrinsics run
/// on the caller's target features.
#[inline(always)]
pub(super) fn chained<V: Copy, const N: usize>(
    iters: u64,
    init: impl Fn(usize) -> V,
    step: impl Fn(V) -> V,
    (zero, add): (V, impl Fn(V, V) -> V),
) -> V {
    let mut acc = [init(0); N];
    for (i, a) in acc.iter_mut().enumerate().skip(1) {
        *a = init(i);
    }
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = step(*a);
        }
    }
    acc.into_iter().fold(zero, add)
}

/// `iters` rounds of `acc = acc * m + a` on every chain; returns the sum
/// (so nothing is dead). Converges to 1: no overflow, no subnormals.
#[inline(always)]
fn chains(iters: u64, fused: bool) -> f32 {
    let (m, add) = (
        std::hint::black_box(MULTIPLIER),
        std::hint::black_box(ADDEND),
    );
    chained::<f32, CHAINS>(
        iters,
        |i| i as f32 * 1e-3,
        |a| {
            if fused {
                a.mul_add(m, add)
            } else {
                a * m + add
            }
        },
        (0.0, |s, a| s + a),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn chains_avx2_fma(iters: u64) -> f32 {
    chains(iters, true)
}

/// The same loop on [`ZMM_CHAINS`] zmm registers, written with intrinsics
/// so that it is `vfmadd` on zmm whatever the compiler would choose for a
/// plain loop (tests/machine_fma.rs checks the rate it reaches).
#[cfg(all(target_arch = "x86_64", kiln_avx512))]
#[allow(clippy::incompatible_msrv)] // compiled by Rust 1.89 or later only (`kiln_avx512`)
#[target_feature(enable = "avx512f")]
fn chains_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_fmadd_ps, _mm512_reduce_add_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };
    let m = _mm512_set1_ps(std::hint::black_box(MULTIPLIER));
    let add = _mm512_set1_ps(std::hint::black_box(ADDEND));
    let sum = chained::<_, ZMM_CHAINS>(
        iters,
        |i| _mm512_set1_ps(i as f32 * 1e-3),
        |a| _mm512_fmadd_ps(a, m, add),
        (_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, a)),
    );
    _mm512_reduce_add_ps(sum)
}

/// The instructions an FMA loop runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F `vfmadd` on zmm: 16 f32 lanes.
    Avx512,
    /// AVX2 + FMA `vfmadd` on ymm: 8 f32 lanes.
    Avx2,
    /// NEON `fmla`: 4 f32 lanes.
    Neon,
    /// Whatever SIMD the target has by default, multiply then add (x86_64:
    /// SSE2, 4 lanes).
    Baseline,
}

impl Isa {
    /// The widest this CPU supports (detected at run time) that this build
    /// has ([`AVX512_BUILT`]).
    pub fn detected() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Baseline)
    }

    /// Whether this CPU can run the loop on these instructions.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => AVX512_BUILT && std::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            Isa::Neon => cfg!(target_arch = "aarch64"),
            Isa::Baseline => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// In words, for the peak's method.
    pub fn words(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512F FMA, 16 f32 lanes",
            Isa::Avx2 => "AVX2 FMA, 8 f32 lanes",
            Isa::Neon => "NEON FMA, 4 f32 lanes",
            Isa::Baseline => "baseline SIMD multiply + add (no FMA detected)",
        }
    }

    /// f32 lanes of one instruction.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Neon | Isa::Baseline => 4,
        }
    }

    /// Independent f32 accumulators per thread.
    pub fn chains(self) -> usize {
        match self {
            Isa::Avx512 => ZMM_CHAINS * 16,
            _ => CHAINS,
        }
    }

    /// Flops of one thread's `iters` rounds.
    pub fn flops(self, iters: u64) -> f64 {
        iters as f64 * self.chains() as f64 * 2.0
    }

    /// One thread's loop; returns its sum. Panics when the CPU lacks the
    /// instructions (see [`Isa::available`]).
    pub fn run(self, iters: u64) -> f32 {
        assert!(self.available(), "this CPU has no {}", self.words());
        match self {
            #[cfg(all(target_arch = "x86_64", kiln_avx512))]
            // SAFETY: the CPU supports AVX-512F (`available` checked just
            // above), all that `chains_avx512`'s target feature requires.
            Isa::Avx512 => unsafe { chains_avx512(iters) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU supports AVX2 and FMA (`available` checked just
            // above), all that `chains_avx2_fma`'s target features require.
            Isa::Avx2 => unsafe { chains_avx2_fma(iters) },
            Isa::Neon => chains(iters, true),
            _ => chains(iters, false),
        }
    }
}

/// Which instructions the loop uses on this machine.
pub fn instructions() -> &'static str {
    Isa::detected().words()
}

/// Flops of one thread's `iters` rounds on this machine's instructions.
pub fn flops(iters: u64) -> f64 {
    Isa::detected().flops(iters)
}

/// Runs `iters` rounds on `isa` on every thread of `pool` at once; returns
/// the seconds from the first thread's start to the last one's end.
pub fn timed_round_on(isa: Isa, pool: &ThreadPool, iters: u64) -> f64 {
    let (secs, sums) = super::threads::timed_broadcast(pool, |_| isa.run(iters));
    assert!(sums.iter().all(|s| s.is_finite()), "FMA loop diverged");
    secs
}

/// [`timed_round_on`] this machine's instructions.
pub fn timed_round(pool: &ThreadPool, iters: u64) -> f64 {
    timed_round_on(Isa::detected(), pool, iters)
}

/// The iteration count of a round of about `round_secs` of `timed(iters)`
/// (seconds): grown from a short run, then scaled.
pub fn calibrate(round_secs: f64, mut timed: impl FnMut(u64) -> f64) -> u64 {
    let mut iters = 2_000u64;
    loop {
        let secs = timed(iters);
        if secs >= round_secs / 4.0 || iters > 1 << 40 {
            return ((iters as f64 * round_secs / secs) as u64).max(1);
        }
        iters *= 4;
    }
}

/// Rates (10^9 per second) of timed rounds of `work` per iteration, each
/// about `round_secs` long (calibrated first): at least `min_rounds`, then
/// until `budget_secs` is spent or `max_rounds` are done. Short rounds,
/// many of them: on a busy machine some run without being preempted.
/// `timed(iters)` runs a round on every thread and returns its seconds;
/// `work(iters)` is the work of one thread's round.
pub fn rates_of_rounds(
    threads: usize,
    (round_secs, min_rounds, max_rounds, budget_secs): (f64, usize, usize, f64),
    mut timed: impl FnMut(u64) -> f64,
    work: impl Fn(u64) -> f64,
) -> Vec<f64> {
    let iters = calibrate(round_secs, &mut timed);
    let started = Instant::now();
    let mut rates = Vec::new();
    while rates.len() < min_rounds
        || (rates.len() < max_rounds && started.elapsed().as_secs_f64() < budget_secs)
    {
        rates.push(work(iters) * threads as f64 / timed(iters) / 1e9);
    }
    rates
}

/// GFLOP/s of timed rounds on all threads of `pool`, each about
/// `round_secs` long (calibrated first): at least `min_rounds`, then until
/// `budget_secs` is spent or `max_rounds` are done.
pub fn measure(
    pool: &ThreadPool,
    round_secs: f64,
    min_rounds: usize,
    max_rounds: usize,
    budget_secs: f64,
) -> Vec<f64> {
    let isa = Isa::detected();
    rates_of_rounds(
        pool.current_num_threads(),
        (round_secs, min_rounds, max_rounds, budget_secs),
        |iters| timed_round_on(isa, pool, iters),
        |iters| isa.flops(iters),
    )
}

/// Dependent adds per iteration of [`clock_round`].
#[cfg(target_arch = "x86_64")]
pub const CLOCK_ADDS: u64 = 16;

/// Seconds of `iters` x [`CLOCK_ADDS`] integer adds on this thread, each
/// depending on the one before. A register add takes one cycle on every
/// x86_64 core (a dependent one can never take less), so adds per second
/// is the core's clock in Hz, or less when the thread lost the CPU.
#[cfg(target_arch = "x86_64")]
pub fn clock_round(iters: u64) -> f64 {
    let step = std::hint::black_box(1u64);
    let mut x = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        // SAFETY: only register operands (`nomem`, `nostack`): it reads
        // `x` and `step`, writes `x` and the flags (not preserved: the
        // compiler assumes them clobbered), and touches nothing else.
        unsafe {
            std::arch::asm!(
                "add {x}, {s}", "add {x}, {s}", "add {x}, {s}", "add {x}, {s}",
                "add {x}, {s}", "add {x}, {s}", "add {x}, {s}", "add {x}, {s}",
                "add {x}, {s}", "add {x}, {s}", "add {x}, {s}", "add {x}, {s}",
                "add {x}, {s}", "add {x}, {s}", "add {x}, {s}", "add {x}, {s}",
                x = inout(reg) x,
                s = in(reg) step,
                options(pure, nomem, nostack),
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(x, iters * CLOCK_ADDS, "the clock loop skipped adds");
    secs
}

/// Vector bits one FMA pipe of this CPU executes per cycle, at most: AMD's
/// family 19h (Zen 3, Zen 4) splits a 512-bit operation over its 256-bit
/// pipes; every other x86_64 core is taken to have full-width pipes.
#[cfg(target_arch = "x86_64")]
pub fn pipe_bits() -> u32 {
    use std::arch::x86_64::__cpuid;
    // Leaves 0 (vendor) and 1 (family) exist on every x86_64 CPU.
    let (vendor, signature) = (__cpuid(0), __cpuid(1).eax);
    let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
    let base = (signature >> 8) & 0xf;
    let family = if base == 0xf {
        base + ((signature >> 20) & 0xff)
    } else {
        base
    };
    if amd && family == 0x19 { 256 } else { 512 }
}

/// FMA pipes of the widest kind per x86_64 core, at most: two on every
/// core made so far (Intel since Haswell, AMD since Zen).
#[cfg(target_arch = "x86_64")]
pub const MAX_FMA_PIPES: u32 = 2;

/// The most f32 flops one x86_64 core can do per cycle with `isa`'s loop:
/// [`MAX_FMA_PIPES`] pipes, each doing an FMA (2 flops) on as many lanes
/// as the instruction has or the pipe is wide ([`pipe_bits`]). For the
/// baseline loop (multiply then add), 2 pipes of each, 4 lanes.
#[cfg(target_arch = "x86_64")]
pub fn max_flops_per_cycle(isa: Isa) -> f64 {
    let lanes = (isa.lanes() as u32).min(pipe_bits() / 32);
    f64::from(MAX_FMA_PIPES * lanes * 2)
}

/// The least f32 flops per cycle a throughput-bound loop on `isa` reaches
/// on any x86_64 core that has it: half a full-width FMA per cycle (every
/// such core issues at least one per cycle: AMD splits a 512-bit FMA over
/// its two 256-bit pipes, Intel's one-FMA-unit Xeons issue one per cycle),
/// so `lanes` flops. A latency-bound loop (too few chains: one FMA per 4
/// cycles) or scalar code falls below it.
#[cfg(target_arch = "x86_64")]
pub fn min_flops_per_cycle(isa: Isa) -> f64 {
    isa.lanes() as f64
}

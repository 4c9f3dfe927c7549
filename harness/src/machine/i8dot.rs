//! The i8 compute peak: a loop of i8 dot products summed in i32 (what the
//! i8 kernels compute: `dot_i8`, `matmul_i8`), on the fastest instruction
//! that does it exactly, with independent accumulator chains, on every
//! thread of the pool. A product and its add count as 2 operations, as the
//! kernels' declared `flops` count them.
//!
//! - AVX-512 VNNI `vpdpbusd` on zmm (built by Rust 1.89 or later, see
//!   [`super::fma::AVX512_BUILT`]): 64 products (u8 x i8, four per i32
//!   lane, summed without saturation) per instruction. Signed i8 x i8 is
//!   the same with an offset of 128 on one side and a correction per
//!   column (what int8 matrix libraries do), so this is the peak of exact
//!   i8 arithmetic.
//! - AVX2 `vpmaddwd` + `vpaddd` on ymm: 16 products of i8 sign-extended to
//!   i16, summed in pairs into i32 and added (exact; `vpmaddubsw` is
//!   faster but saturates).
//!
//! Elsewhere there is no i8 peak: i8 calls are judged against the f32
//! peak, and the replay table says so (see [`super::roofline::Arithmetic`]).

use rayon::ThreadPool;

#[cfg(target_arch = "x86_64")]
use super::fma::chained;

/// Accumulators: 16 zmm registers (VNNI), 14 ymm (AVX2: `vpmaddwd` then
/// `vpaddd` is a chain of about 6 cycles, x 2 pipes needs 12).
#[cfg(target_arch = "x86_64")]
const ZMM_CHAINS: usize = 16;
#[cfg(target_arch = "x86_64")]
const YMM_CHAINS: usize = 14;

/// Each step multiplies an accumulator's own bytes by a constant and adds
/// the products into it (a chain the compiler cannot hoist or fold).
#[cfg(all(target_arch = "x86_64", kiln_avx512))]
#[allow(clippy::incompatible_msrv)] // compiled by Rust 1.89 or later only (`kiln_avx512`)
#[target_feature(enable = "avx512f,avx512vnni")]
fn dots_vnni(iters: u64) -> i32 {
    use std::arch::x86_64::{
        _mm512_add_epi32, _mm512_dpbusd_epi32, _mm512_reduce_add_epi32, _mm512_set1_epi8,
        _mm512_set1_epi32, _mm512_setzero_si512,
    };
    let b = _mm512_set1_epi8(std::hint::black_box(-3));
    let sum = chained::<_, ZMM_CHAINS>(
        iters,
        |i| _mm512_set1_epi32(i as i32 + 1),
        |a| _mm512_dpbusd_epi32(a, a, b),
        (_mm512_setzero_si512(), |s, a| _mm512_add_epi32(s, a)),
    );
    _mm512_reduce_add_epi32(sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2(iters: u64) -> i32 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_madd_epi16, _mm256_set1_epi16, _mm256_set1_epi32,
        _mm256_setzero_si256, _mm256_storeu_si256,
    };
    let b = _mm256_set1_epi16(std::hint::black_box(-3));
    let sum = chained::<_, YMM_CHAINS>(
        iters,
        |i| _mm256_set1_epi32(i as i32 + 1),
        |a| _mm256_add_epi32(a, _mm256_madd_epi16(a, b)),
        (_mm256_setzero_si256(), |s, a| _mm256_add_epi32(s, a)),
    );
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` is 32 writable bytes, what an unaligned 256-bit
    // store writes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast::<__m256i>(), sum) };
    lanes.iter().fold(0, |s, &l| s.wrapping_add(l))
}

/// The instructions an i8 loop runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I8Isa {
    /// AVX-512 VNNI `vpdpbusd` on zmm.
    Vnni512,
    /// AVX2 `vpmaddwd` + `vpaddd` on ymm.
    Avx2,
}

impl I8Isa {
    /// The fastest this CPU supports (detected at run time); `None`: no i8
    /// peak is measured here.
    pub fn detected() -> Option<I8Isa> {
        [I8Isa::Vnni512, I8Isa::Avx2]
            .into_iter()
            .find(|isa| isa.available())
    }

    /// Whether this CPU can run the loop on these instructions.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return match self {
            I8Isa::Vnni512 => {
                super::fma::AVX512_BUILT
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            I8Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
        };
        #[allow(unreachable_code)]
        false
    }

    pub fn words(self) -> &'static str {
        match self {
            I8Isa::Vnni512 => "AVX-512 VNNI vpdpbusd, 64 products per instruction",
            I8Isa::Avx2 => "AVX2 vpmaddwd + vpaddd, 16 products per pair",
        }
    }

    /// i8 products of one instruction (one `vpmaddwd` + `vpaddd` pair).
    pub fn products(self) -> usize {
        match self {
            I8Isa::Vnni512 => 64,
            I8Isa::Avx2 => 16,
        }
    }

    /// Vector bits of one instruction.
    pub fn bits(self) -> u32 {
        match self {
            I8Isa::Vnni512 => 512,
            I8Isa::Avx2 => 256,
        }
    }

    fn chains(self) -> usize {
        #[cfg(target_arch = "x86_64")]
        return match self {
            I8Isa::Vnni512 => ZMM_CHAINS,
            I8Isa::Avx2 => YMM_CHAINS,
        };
        #[allow(unreachable_code)]
        0
    }

    /// Operations (a product and its add: 2) of one thread's `iters`
    /// rounds.
    pub fn ops(self, iters: u64) -> f64 {
        iters as f64 * (self.chains() * self.products() * 2) as f64
    }

    /// One thread's loop; returns its (wrapping) sum. Panics when the CPU
    /// lacks the instructions.
    pub fn run(self, iters: u64) -> i32 {
        assert!(self.available(), "this CPU has no {}", self.words());
        #[cfg(target_arch = "x86_64")]
        return match self {
            // SAFETY: the CPU supports AVX-512F and AVX-512 VNNI
            // (`available` checked just above), all that `dots_vnni`'s
            // target features require.
            #[cfg(kiln_avx512)]
            I8Isa::Vnni512 => unsafe { dots_vnni(iters) },
            // SAFETY: the CPU supports AVX2 (`available` checked just
            // above), all that `dots_avx2`'s target feature requires.
            I8Isa::Avx2 => unsafe { dots_avx2(iters) },
            #[allow(unreachable_patterns)]
            _ => unreachable!("checked by `available`"),
        };
        #[allow(unreachable_code)]
        {
            let _ = iters;
            unreachable!("checked by `available`")
        }
    }

    /// The most operations one x86_64 core can do per cycle with this
    /// loop: [`super::fma::MAX_FMA_PIPES`] vector pipes (the integer
    /// multiply-adds run on the same two), each as wide as the
    /// instruction or the pipe ([`super::fma::pipe_bits`]).
    #[cfg(target_arch = "x86_64")]
    pub fn max_ops_per_cycle(self) -> f64 {
        let per_bit = self.products() as f64 * 2.0 / f64::from(self.bits());
        let bits = self.bits().min(super::fma::pipe_bits());
        per_bit * f64::from(bits * super::fma::MAX_FMA_PIPES)
    }

    /// The least operations per cycle a throughput-bound loop reaches on
    /// any core that has the instructions: half an instruction per cycle
    /// (as [`super::fma::min_flops_per_cycle`]).
    pub fn min_ops_per_cycle(self) -> f64 {
        self.products() as f64
    }
}

/// Runs `iters` rounds on `isa` on every thread of `pool` at once; returns
/// the seconds from the first thread's start to the last one's end.
pub fn timed_round_on(isa: I8Isa, pool: &ThreadPool, iters: u64) -> f64 {
    let (secs, sums) = super::threads::timed_broadcast(pool, |_| isa.run(iters));
    std::hint::black_box(sums);
    secs
}

/// GOP/s of timed rounds of this machine's i8 loop on all threads of
/// `pool` (as [`super::fma::measure`]), and the instructions; `None`
/// where there is no i8 loop.
pub fn measure(pool: &ThreadPool, rounds: (f64, usize, usize, f64)) -> Option<(I8Isa, Vec<f64>)> {
    let isa = I8Isa::detected()?;
    let rates = super::fma::rates_of_rounds(
        pool.current_num_threads(),
        rounds,
        |iters| timed_round_on(isa, pool, iters),
        |iters| isa.ops(iters),
    );
    Some((isa, rates))
}

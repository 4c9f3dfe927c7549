//! The compute peaks held to what the CPU can do: per cycle of its clock,
//! the FMA loop (and the i8 loop) on one thread must not do more than its
//! instructions allow on the CPU's pipes (`fma::max_flops_per_cycle`: a
//! miscounted peak fails) nor less than any core with those instructions
//! does (`fma::min_flops_per_cycle`: a loop that is latency-bound or not
//! vectorised fails), and the AVX-512 loop, where chosen, must not be
//! slower than the AVX2 one it replaces.
//!
//! Why load cannot make it fail (short of starving it for `MAX_SECS`):
//! nothing is compared with a fixed rate. The clock is measured on the same thread, interleaved
//! with the loops (clock, loops, clock, round after round), by a chain of
//! dependent adds (one per cycle, never faster). Load only ever slows a
//! round, so each rate kept is the best round of its kind, and each bound
//! is checked on those bests. A disturbed clock round reads low (it could
//! make the upper bound fail), a disturbed loop round reads low (the lower
//! bound): so while any bound does not hold, rounds go on (up to
//! `MAX_SECS`), and the bests only rise towards the undisturbed values. A
//! miscount or a slow loop does not go away with more rounds; load does,
//! as soon as one round of each kind runs undisturbed (rounds are 1-2 ms,
//! shorter than a scheduler slice: at a load of 5 on 2 cores the first 20
//! rounds sufficed). It fails under load only if, for 8 s, no round of
//! some kind ran undisturbed. The multi-thread total is checked against
//! the upper bound only (load only lowers it; its clock is the bests'
//! one-core clock, which no all-core clock exceeds).

#![cfg(target_arch = "x86_64")]

use std::time::Instant;

use kiln::machine::fma::{self, Isa};
use kiln::machine::i8dot::{self, I8Isa};
use kiln::machine::threads;

/// Rounds at least; then on while a bound does not hold, up to MAX_SECS.
const MIN_ROUNDS: usize = 20;
const MAX_SECS: f64 = 8.0;
/// Each loop's round, and each clock round.
const ROUND_SECS: f64 = 0.002;
const CLOCK_SECS: f64 = 0.001;
/// Room above the upper bound for the clock moving between a clock round
/// and the loop round next to it (turbo steps are a few percent).
const SLACK: f64 = 1.10;
/// The AVX-512 loop against the AVX2 loop, at least (on AMD Zen 4 they are
/// equal: its 512-bit FMA runs on two 256-bit pipes; on Intel's two-unit
/// Xeons AVX-512 is twice AVX2).
const AVX512_OVER_AVX2: f64 = 0.85;

/// One loop of the test: its rounds on one thread, its work per round,
/// the bounds per cycle, and the best rate so far (work per second).
struct Loop {
    name: String,
    timed: Box<dyn Fn(u64) -> f64>,
    work: Box<dyn Fn(u64) -> f64>,
    iters: u64,
    max_per_cycle: f64,
    min_per_cycle: f64,
    best: f64,
}

impl Loop {
    /// A loop of rounds `timed(iters)` (seconds on the pool) doing
    /// `work(iters)`, between `min_per_cycle` and `max_per_cycle`.
    fn new(
        name: String,
        timed: impl Fn(u64) -> f64 + Copy + 'static,
        work: impl Fn(u64) -> f64 + 'static,
        (min_per_cycle, max_per_cycle): (f64, f64),
    ) -> Loop {
        Loop {
            name,
            iters: fma::calibrate(ROUND_SECS, timed),
            timed: Box::new(timed),
            work: Box::new(work),
            max_per_cycle,
            min_per_cycle,
            best: 0.0,
        }
    }

    fn fma(isa: Isa, pool: &'static rayon::ThreadPool) -> Loop {
        Loop::new(
            format!("f32 FMA ({})", isa.words()),
            move |iters| fma::timed_round_on(isa, pool, iters),
            move |iters| isa.flops(iters),
            (fma::min_flops_per_cycle(isa), fma::max_flops_per_cycle(isa)),
        )
    }

    fn i8(isa: I8Isa, pool: &'static rayon::ThreadPool) -> Loop {
        Loop::new(
            format!("i8 dot ({})", isa.words()),
            move |iters| i8dot::timed_round_on(isa, pool, iters),
            move |iters| isa.ops(iters),
            (isa.min_ops_per_cycle(), isa.max_ops_per_cycle()),
        )
    }

    fn round(&mut self) {
        let secs = (self.timed)(self.iters);
        self.best = self.best.max((self.work)(self.iters) / secs);
    }

    /// Work per cycle of a clock of `hz`.
    fn per_cycle(&self, hz: f64) -> f64 {
        self.best / hz
    }

    fn holds(&self, hz: f64) -> bool {
        let c = self.per_cycle(hz);
        c <= self.max_per_cycle * SLACK && c >= self.min_per_cycle
    }
}

#[test]
fn the_compute_peaks_are_what_the_cpu_allows_per_cycle() {
    // One measuring thread, the probe's code path (`timed_round_on` on a
    // pool); the clock runs on that same thread.
    let pool: &'static rayon::ThreadPool = Box::leak(Box::new(threads::pool(1).unwrap()));
    let chosen = Isa::detected();
    let mut loops = vec![Loop::fma(chosen, pool)];
    if chosen == Isa::Avx512 && Isa::Avx2.available() {
        loops.push(Loop::fma(Isa::Avx2, pool));
    }
    if let Some(isa) = I8Isa::detected() {
        loops.push(Loop::i8(isa, pool));
    }
    let clock = |iters| pool.install(|| fma::clock_round(iters));
    let clock_iters = fma::calibrate(CLOCK_SECS, clock);
    let mut hz = 0f64;
    let mut clock_round = || {
        let rate = (clock_iters * fma::CLOCK_ADDS) as f64 / clock(clock_iters);
        hz = hz.max(rate);
        hz
    };
    // With AVX-512 chosen, the AVX2 loop is loops[1].
    let against_avx2 = chosen == Isa::Avx512 && Isa::Avx2.available();
    let avx512_holds =
        |loops: &[Loop]| !against_avx2 || loops[0].best >= AVX512_OVER_AVX2 * loops[1].best;
    let started = Instant::now();
    let mut rounds = 0;
    let hz = loop {
        clock_round();
        for l in &mut loops {
            l.round();
        }
        let hz = clock_round();
        rounds += 1;
        let all_hold = loops.iter().all(|l| l.holds(hz)) && avx512_holds(&loops);
        if rounds >= MIN_ROUNDS && (all_hold || started.elapsed().as_secs_f64() > MAX_SECS) {
            break hz;
        }
    };
    eprintln!(
        "clock {:.2} GHz (dependent adds; /proc/cpuinfo says {} MHz), {rounds} rounds, \
         {:.1} s, load average {:?}",
        hz / 1e9,
        cpuinfo_mhz().unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        kiln::machine::peaks::load_average()
    );
    for l in &loops {
        eprintln!(
            "  {}: {:.1} G/s per thread, {:.1} per cycle (bounds {:.0} to {:.0}, x{SLACK} allowed)",
            l.name,
            l.best / 1e9,
            l.per_cycle(hz),
            l.min_per_cycle,
            l.max_per_cycle
        );
    }
    for l in &loops {
        let c = l.per_cycle(hz);
        assert!(
            c <= l.max_per_cycle * SLACK,
            "{}: {c:.1} per cycle is more than the CPU can do ({:.0} per cycle x {SLACK}): \
             the loop's work is miscounted",
            l.name,
            l.max_per_cycle
        );
        assert!(
            c >= l.min_per_cycle,
            "{}: {c:.1} per cycle, under the {:.0} any core with these instructions does \
             (still so after {rounds} rounds in {:.1} s): the loop is latency-bound or not \
             vectorised",
            l.name,
            l.min_per_cycle,
            started.elapsed().as_secs_f64()
        );
    }
    assert!(
        avx512_holds(&loops),
        "the AVX-512 loop ({:.1} GFLOP/s) is slower than the AVX2 one ({:.1}): it should not \
         be chosen",
        loops[0].best / 1e9,
        loops[1].best / 1e9
    );

    // The peak `kiln machine` stores (every thread at once) is not above
    // what that many cores can do at this clock (all-core clocks are no
    // higher than one core's).
    let n = threads::default_threads();
    let all = threads::pool(n).unwrap();
    let total = fma::measure(&all, 0.003, 5, 30, 0.1)
        .into_iter()
        .fold(0f64, f64::max);
    let most = n as f64 * fma::max_flops_per_cycle(chosen) * hz / 1e9 * SLACK;
    eprintln!(
        "  {}: {total:.1} GFLOP/s on {n} threads (at most {most:.1})",
        chosen.words()
    );
    assert!(
        total <= most,
        "{total:.1} GFLOP/s on {n} threads: more than {n} cores can do at {:.2} GHz",
        hz / 1e9
    );
}

#[test]
fn the_chosen_instructions_are_the_widest_the_cpu_has() {
    let isa = Isa::detected();
    assert!(isa.available());
    assert_eq!(fma::instructions(), isa.words());
    if fma::AVX512_BUILT && std::is_x86_feature_detected!("avx512f") {
        assert_eq!(isa, Isa::Avx512);
        assert_eq!((isa.lanes(), isa.chains()), (16, 256));
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert_eq!(isa, Isa::Avx2);
    }
    // The flops of a round: chains x 2 (an FMA is 2 flops).
    assert_eq!(isa.flops(1000), 1000.0 * isa.chains() as f64 * 2.0);
    assert_eq!(fma::flops(1000), isa.flops(1000));
    if let Some(i8) = I8Isa::detected() {
        assert_eq!(
            i8 == I8Isa::Vnni512,
            fma::AVX512_BUILT && std::is_x86_feature_detected!("avx512vnni")
        );
    }
}

fn cpuinfo_mhz() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu MHz"))?;
    Some(line.split(':').nth(1)?.trim().to_string())
}

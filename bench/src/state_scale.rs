//! State scale (`cargo bench -p kiln-bench -- state`): what each size of
//! resident state costs a real `kiln dev` session on the CPU backend.
//!
//! For each size (1 MiB, 64 MiB, 1 GiB, 4 GiB; `KILN_BENCH_STATE_MIB=1,64`
//! picks others) a workload with two f32 resident buffers of half the size
//! each and one `dot` call over them (its expected output stored, so no
//! reference module runs) is served by `kiln dev --workload FILE --state
//! STATE_FILE --no-tune` in a copy of the workspace, and this side measures,
//! from the JSON events and from outside:
//!
//! - start-up to `watching` (and the start-up build's `build_finished` ms);
//! - a save (a kept static appended to `kernels/cpu/src/kernels.rs`): the
//!   `swapped` event's save-to-serving ms, its `handoff_ms` and bytes, and
//!   the `checkpoint` taken after the replay;
//! - a crash: the idle worker killed with SIGABRT (a SIGSEGV sent with
//!   kill(2) is swallowed once by Rust's stack-overflow handler), until
//!   `restarted` (its `ms`, from the crash being noticed);
//! - Ctrl-C: SIGINT to `kiln dev`, until the state file exists and until
//!   the process has exited;
//! - peak memory: the summed Pss of the supervisor and its worker less
//!   their shared-memory part (`Pss - Pss_Shmem` of `/proc/PID/smaps_rollup`,
//!   every ~50 ms on a thread) plus every memfd once, in full, mapped or
//!   not (the checkpoints: a worker serving one maps it, and a mapping's
//!   Pss counts only the pages it touched; one the supervisor holds is
//!   measured by its allocated blocks, one only mapped by the length of its
//!   mapping, which is the whole file);
//!
//! and next to them a memcpy of the size and the restart loop's way of
//! getting the state back: reading the state file into memory (from the
//! page cache). A size is skipped, with the reason, when `MemAvailable` or
//! the free disk space is below three times it, or when the peak a smaller
//! size reached, scaled, would pass three quarters of `MemAvailable`. Writes
//! `target/kiln-bench/state-scale.json` and the chart
//! `target/kiln-bench/state-scale.svg` ([`crate::state_scale_chart`]).
//! `KILN_BENCH_STATE_DEBUG=FILE` writes the memory samples of the last
//! session to FILE (seconds, phase, MiB).

use std::collections::BTreeSet;
use std::hint::black_box;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln::workload::Workload;
use kiln_dev_driver::{DevCommand, Event, EventKind, OnDrop, Session, WaitError};
use kiln_stats::bytes;
use rayon::prelude::*;
use serde_json::{Value, json};
use shared_state::{Call, Tensor};

use crate::config::Config;
use crate::save_serving::kiln_dev::scratch_copy;
use crate::stats::Summary;
use crate::table::{Table, num};

const KERNELS_SOURCE: &str = "kernels/cpu/src/kernels.rs";
const MIB: u64 = 1 << 20;
/// Start-up: the module build, the workload read and loaded, a replay.
const START: Duration = Duration::from_secs(900);
/// A save, a crash: build or restart, replay, checkpoint.
const STEP: Duration = Duration::from_secs(600);
/// The longest wait for the first copy to disk (4 GiB at a few hundred MB/s).
const FIRST_COPY: Duration = Duration::from_secs(300);
/// No event for this long: the session is idle.
const QUIET: Duration = Duration::from_millis(1500);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Events that end a size's measurement: those that end a save's.
use crate::save_serving::kiln_dev::FAILURE_EVENTS;

/// The sizes measured: `KILN_BENCH_STATE_MIB` (MiB, comma separated), else
/// 1 MiB and 8 MiB for a quick run, else 1 MiB, 64 MiB, 1 GiB and 4 GiB.
pub fn sizes(config: &Config) -> Result<Vec<u64>, String> {
    if let Ok(list) = std::env::var("KILN_BENCH_STATE_MIB") {
        return list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&m| m > 0)
                    .map(|m| m * MIB)
                    .ok_or_else(|| format!("KILN_BENCH_STATE_MIB: bad size {s:?} (MiB)"))
            })
            .collect();
    }
    Ok(if config.quick {
        vec![MIB, 8 * MIB]
    } else {
        vec![MIB, 64 * MIB, 1024 * MIB, 4096 * MIB]
    })
}

// ----- what the machine has -----

/// The `NAME:   N kB` line of a /proc file, in bytes.
fn kib_field(path: &str, name: &str) -> Option<u64> {
    kib_in(&std::fs::read_to_string(path).ok()?, name)
}

/// The `NAME:   N kB` line of `text` (a /proc file read), in bytes.
fn kib_in(text: &str, name: &str) -> Option<u64> {
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    kib_field("/proc/meminfo", "MemAvailable")
}

/// Free space (for an unprivileged user) of the file system holding `dir`,
/// from `df -Pk` (the bench has no statvfs binding).
fn disk_available(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Why `size` cannot be measured here, if it cannot: `MemAvailable` or the
/// free disk space below 3 x `size`, or (`seen`: the peak over the state
/// of a measured size of 64 MiB or more, and that size) a peak predicted
/// at that ratio above three quarters of `MemAvailable` (the rest is left
/// to whatever else runs on the machine).
fn skip_reason(size: u64, scratch: &Path, seen: Option<(f64, u64)>) -> Option<String> {
    let need = 3 * size;
    match mem_available() {
        Some(m) if m < need => {
            return Some(format!(
                "MemAvailable {} is below 3 x {}",
                bytes::human(m),
                bytes::human(size)
            ));
        }
        Some(m) => {
            if let Some((ratio, at)) = seen {
                let predicted = (ratio * size as f64) as u64;
                if predicted > m / 4 * 3 {
                    return Some(format!(
                        "its peak would be about {} ({ratio:.1} x, as the {} session's), over 3/4 of MemAvailable {}",
                        bytes::human(predicted),
                        bytes::human(at),
                        bytes::human(m)
                    ));
                }
            }
        }
        None => return Some("cannot read MemAvailable from /proc/meminfo".into()),
    }
    match disk_available(scratch) {
        Some(d) if d < need => Some(format!(
            "free disk space {} (under {}) is below 3 x {}",
            bytes::human(d),
            scratch.display(),
            bytes::human(size)
        )),
        None => Some(format!(
            "cannot read the free space under {}",
            scratch.display()
        )),
        _ => None,
    }
}

// ----- the workload -----

/// Two f32 residents of `size / 2` bytes each (`x` in [0.5, 1.5), `y` in
/// [0.25, 1.25): a sum with no cancellation) and one `dot` over them, its
/// output stored (summed in f64 here, as the CPU kernel sums).
fn state_workload(size: u64) -> Workload {
    let n = (size / 2 / 4) as usize;
    let fill = |mul: u64, offset: f32| -> Vec<f32> {
        let mut v = vec![0f32; n];
        v.par_chunks_mut(1 << 16)
            .enumerate()
            .for_each(|(c, chunk)| {
                let base = (c as u64) << 16;
                for (i, e) in chunk.iter_mut().enumerate() {
                    let h = (base + i as u64).wrapping_mul(mul) >> 54;
                    *e = offset + h as f32 / 1024.0;
                }
            });
        v
    };
    let x = fill(0x9E37_79B9_7F4A_7C15, 0.5);
    let y = fill(0xC2B2_AE3D_27D4_EB4F, 0.25);
    let dot: f64 = x
        .par_chunks(1 << 16)
        .zip(y.par_chunks(1 << 16))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum::<f64>()
        })
        .sum();
    let mut w = Workload::new(format!("state-scale-{}", bytes::human(size)));
    w.load("x", Tensor::from_f32(&[n], x));
    w.load("y", Tensor::from_f32(&[n], y));
    w.call(
        Call::new("dot").resident("x").resident("y"),
        Some(Tensor::from_f32(&[1], vec![dot as f32])),
    );
    w
}

// ----- memory of the session, sampled -----

/// One reading: Pss of the supervisor and its worker(s) less their shared
/// memory, and every memfd they hold or map, once, in full.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    /// Supervisor and workers.
    pss: u64,
    /// The supervisor's part of `pss`.
    supervisor: u64,
    workers: usize,
    memfd: u64,
}

impl Sample {
    fn total(&self) -> u64 {
        self.pss + self.memfd
    }
}

/// `Pss:` less `Pss_Shmem:` of `/proc/PID/smaps_rollup`, in bytes: what
/// the process holds but shared memory (counted in full by the memfds).
///
/// Both from one read: read twice, a worker exiting between the reads (the
/// one a crash killed) gave its whole Pss, shared memory included, and no
/// `Pss_Shmem` to take off: a checkpoint's size more in the crash's peak.
fn pss(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let all = kib_in(&rollup, "Pss")?;
    Some(all.saturating_sub(kib_in(&rollup, "Pss_Shmem")?))
}

/// The `kiln worker` children of `parent`.
fn workers_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut workers = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        // `kiln --log-format FORMAT worker`
        if cmdline.split(|&b| b == 0).skip(1).any(|a| a == b"worker") {
            workers.push(pid);
        }
    }
    workers
}

/// The memfds `pid` maps: inode and the mapping's length (the whole file:
/// kiln maps checkpoints whole).
fn mapped_memfds(pid: u32, into: &mut std::collections::BTreeMap<u64, u64>) {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return;
    };
    for line in maps.lines().filter(|l| l.contains("/memfd:")) {
        let mut fields = line.split_whitespace();
        let length = fields.next().and_then(|range| {
            let (start, end) = range.split_once('-')?;
            Some(u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?)
        });
        if let (Some(length), Some(inode)) = (length, fields.nth(3).and_then(|i| i.parse().ok())) {
            let known = into.entry(inode).or_insert(0);
            *known = (*known).max(length);
        }
    }
}

/// Bytes of every memfd `supervisor` holds (allocated blocks: tmpfs pages
/// in memory) or one of `mappers` maps (its mapping's length), each once.
fn memfd_bytes(supervisor: u32, mappers: &[u32]) -> u64 {
    let mut mapped = std::collections::BTreeMap::new();
    for &pid in mappers {
        mapped_memfds(pid, &mut mapped);
    }
    let mut seen = BTreeSet::new();
    let mut total = 0;
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{supervisor}/fd")) {
        for fd in fds.flatten() {
            let is_memfd = std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:"));
            if !is_memfd {
                continue;
            }
            if let Ok(meta) = std::fs::metadata(fd.path())
                && seen.insert(meta.ino())
            {
                total += meta.blocks() * 512;
            }
        }
    }
    total
        + mapped
            .iter()
            .filter(|(inode, _)| !seen.contains(inode))
            .map(|(_, length)| length)
            .sum::<u64>()
}

fn sample(supervisor: u32) -> Option<Sample> {
    let own = pss(supervisor)?;
    let mut total = own;
    let workers = workers_of(supervisor);
    for &w in &workers {
        total += pss(w).unwrap_or(0);
    }
    let mut mappers = workers;
    Some(Sample {
        at: Instant::now(),
        pss: total,
        supervisor: own,
        workers: mappers.len(),
        memfd: {
            mappers.push(supervisor);
            memfd_bytes(supervisor, &mappers)
        },
    })
}

/// Samples the session's memory every [`SAMPLE_EVERY`] until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(supervisor: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let next = Instant::now() + SAMPLE_EVERY;
                if let Some(s) = sample(supervisor) {
                    samples.push(s);
                }
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

// ----- one size -----

/// The figures of one size. Times in ms.
#[derive(Clone, Debug, Default)]
pub struct SizeFigures {
    pub bytes: u64,
    /// From the spawn to the `watching` line.
    pub startup_ms: f64,
    /// The start-up build's `build_finished` ms.
    pub build_ms: f64,
    /// The first start-up checkpoint's ms (the one that holds the whole
    /// state; those after the start-up replay copy what changed only).
    pub startup_checkpoint_ms: f64,
    /// From the spawn to the first start-up checkpoint (the worker serves
    /// the state; its first replay begins).
    pub startup_serving_ms: f64,
    /// From that checkpoint to the start-up replay's last `replay` event:
    /// the first replay (its timing runs and the reference's included).
    pub startup_replay_ms: f64,
    /// `swapped`: kiln's save to serving (from the first file event).
    pub save_ms: f64,
    /// From the write of the source to the arrival of `swapped`.
    pub save_outside_ms: f64,
    pub save_build_ms: f64,
    pub handoff_ms: f64,
    pub handoff_bytes: u64,
    /// The `handoff` event, if the log carried one.
    pub handoff_event_ms: Option<f64>,
    /// The checkpoint after the replay of the saved version.
    pub checkpoint_ms: f64,
    pub checkpoint_bytes: u64,
    /// `restarted`'s ms (from the crash being noticed).
    pub restart_ms: f64,
    /// From the kill to the arrival of `restarted` (the kill is a `kill`
    /// process: its start-up is included).
    pub restart_outside_ms: f64,
    pub restart_state_matches: Option<bool>,
    /// From the kill to the arrival of `crashed` (the crash named).
    pub crash_noticed_ms: f64,
    /// From SIGINT to the state file existing (renamed into place).
    pub ctrl_c_file_ms: f64,
    /// From SIGINT to the process's exit.
    pub ctrl_c_exit_ms: f64,
    pub state_file_bytes: u64,
    /// The highest sample: Pss of both processes (less shared memory) and
    /// every memfd.
    pub peak_pss: u64,
    pub peak_memfd: u64,
    /// The supervisor's part of `peak_pss`.
    pub peak_supervisor_pss: u64,
    /// The phase the peak fell in.
    pub peak_phase: String,
    /// Each phase's highest sample: (phase, Pss less shared memory, memfds).
    pub phase_peaks: Vec<(String, u64, u64)>,
    pub samples: usize,
    pub memcpy_gbps: Option<Summary>,
    pub read_gbps: Option<Summary>,
    /// The session's first copy to disk: when it was there (from the
    /// spawn) and what it wrote.
    pub first_copy_ms: f64,
    pub first_copy_written: u64,
    /// `kiln replay --no-timing` of the same workload: its peak (Pss of it
    /// and its worker less shared memory, plus memfds) and its time.
    pub replay_peak: u64,
    pub replay_ms: f64,
}

impl SizeFigures {
    fn peak(&self) -> u64 {
        self.peak_pss + self.peak_memfd
    }

    fn ms_of(&self, gbps: Option<Summary>) -> f64 {
        gbps.map_or(f64::NAN, |g| self.bytes as f64 / (g.median * 1e9) * 1e3)
    }

    /// The memcpy of the size, in ms (median).
    pub(crate) fn memcpy_ms(&self) -> f64 {
        self.ms_of(self.memcpy_gbps)
    }

    /// The restart loop's read of the state file, in ms (median).
    pub(crate) fn read_ms(&self) -> f64 {
        self.ms_of(self.read_gbps)
    }

    fn gbps(rate: Option<Summary>) -> f64 {
        rate.map_or(f64::NAN, |g| g.median)
    }

    fn to_json(&self) -> Value {
        json!({
            "bytes": self.bytes,
            "startup_ms": self.startup_ms,
            "startup_build_ms": self.build_ms,
            "startup_checkpoint_ms": self.startup_checkpoint_ms,
            "startup_serving_ms": self.startup_serving_ms,
            "startup_replay_ms": self.startup_replay_ms,
            "save_to_serving_ms": self.save_ms,
            "save_to_serving_outside_ms": self.save_outside_ms,
            "save_build_ms": self.save_build_ms,
            "handoff_ms": self.handoff_ms,
            "handoff_bytes": self.handoff_bytes,
            "handoff_event_ms": self.handoff_event_ms,
            "checkpoint_ms": self.checkpoint_ms,
            "checkpoint_bytes": self.checkpoint_bytes,
            "crash_to_serving_ms": self.restart_ms,
            "crash_to_serving_outside_ms": self.restart_outside_ms,
            "restart_state_matches": self.restart_state_matches,
            "crash_noticed_outside_ms": self.crash_noticed_ms,
            "ctrl_c_to_state_file_ms": self.ctrl_c_file_ms,
            "ctrl_c_to_exit_ms": self.ctrl_c_exit_ms,
            "state_file_bytes": self.state_file_bytes,
            "peak_pss_bytes": self.peak_pss,
            "peak_memfd_bytes": self.peak_memfd,
            "peak_supervisor_pss_bytes": self.peak_supervisor_pss,
            "peak_bytes": self.peak(),
            "peak_over_state": self.peak() as f64 / self.bytes as f64,
            "peak_phase": self.peak_phase,
            "phase_peaks": self.phase_peaks.iter().map(|(phase, pss, memfd)| json!({
                "phase": phase,
                "pss_bytes": pss,
                "memfd_bytes": memfd,
            })).collect::<Vec<_>>(),
            "memory_samples": self.samples,
            "memcpy_gbps": self.memcpy_gbps.map(|s| s.to_json()),
            "memcpy_ms": self.ms_of(self.memcpy_gbps),
            "read_state_file_gbps": self.read_gbps.map(|s| s.to_json()),
            "read_state_file_ms": self.ms_of(self.read_gbps),
            "first_copy_on_disk_ms": self.first_copy_ms,
            "first_copy_written_bytes": self.first_copy_written,
            "kiln_replay_peak_bytes": self.replay_peak,
            "kiln_replay_peak_over_state": self.replay_peak as f64 / self.bytes as f64,
            "kiln_replay_ms": self.replay_ms,
        })
    }
}

/// One size's outcome.
#[derive(Clone, Debug)]
pub enum SizeOutcome {
    Measured(Box<SizeFigures>),
    Skipped(String),
    Failed(String),
}

fn next(session: &mut Session, deadline: Instant, what: &str) -> Result<Event, String> {
    let e = session.try_next(deadline).map_err(|e| match e {
        WaitError::TimedOut => format!("kiln dev: no {what} in time"),
        other => format!("{other} while waiting for {what}"),
    })?;
    if e.is_any(&FAILURE_EVENTS) {
        return Err(format!("kiln dev, waiting for {what}: {}", e.line));
    }
    Ok(e)
}

/// Receives events until none comes for [`QUIET`].
fn settle(session: &mut Session, what: &str) -> Result<(), String> {
    let end = Instant::now() + STEP;
    loop {
        match session.try_next(Instant::now() + QUIET) {
            Ok(e) if e.is_any(&FAILURE_EVENTS) => {
                return Err(format!("kiln dev, after {what}: {}", e.line));
            }
            Ok(_) if Instant::now() < end => {}
            Ok(_) => return Err(format!("kiln dev never went quiet after {what}")),
            Err(WaitError::TimedOut) => return Ok(()),
            Err(e) => return Err(format!("{e} after {what}")),
        }
    }
}

fn number(e: &Event, name: &str) -> Result<f64, String> {
    e.f64(name)
        .ok_or_else(|| format!("no number `{name}` in {}", e.line))
}

fn ms_since(t: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(t).as_secs_f64() * 1e3
}

/// Sends `signal` (a `kill` name: `ABRT`) to `pid` with kill(1).
fn kill(pid: u32, signal: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} {pid}: {status}"))
    }
}

/// A session on the bundled workload, started and stopped, not measured:
/// the module is built in the copy, and the CPU's peaks (the roofline the
/// replay table uses: a triad on arrays of hundreds of MiB, measured at the
/// first timed replay and cached in the copy's target dir) are measured,
/// so that neither lands in the first size's figures.
fn warm_up(kiln_exe: &Path, copy: &Path, config: &Config) -> Result<(), String> {
    let mut session = DevCommand::new(kiln_exe, copy)
        .args(["--no-tune"])
        .module_target_dir(&kiln::workspace::module_target_dir(&config.workspace))
        .on_drop(OnDrop::Kill)
        .spawn()?;
    let deadline = Instant::now() + START;
    loop {
        let e = next(&mut session, deadline, "the warm-up session's watcher")?;
        if kiln_dev_driver::is_watching(&e) {
            break;
        }
    }
    let stopped = session.stop();
    if !stopped.status.success() {
        return Err(format!(
            "the warm-up session exited with {}",
            stopped.status
        ));
    }
    Ok(())
}

/// The session part: start, save, crash, Ctrl-C; the memory sampled
/// throughout. Fills `f` as it goes.
fn run_session(
    kiln_exe: &Path,
    copy: &Path,
    config: &Config,
    workload: &Path,
    state_file: &Path,
    f: &mut SizeFigures,
) -> Result<(), String> {
    let source = copy.join(KERNELS_SOURCE);
    let pristine =
        std::fs::read_to_string(&source).map_err(|e| format!("{KERNELS_SOURCE}: {e}"))?;
    let spawned = Instant::now();
    let mut session = DevCommand::new(kiln_exe, copy)
        .args(["--workload"])
        .args([workload])
        .args(["--state"])
        .args([state_file])
        .args(["--no-tune"])
        .module_target_dir(&kiln::workspace::module_target_dir(&config.workspace))
        // The copies to disk logged (`state_kept` is a debug event).
        .env("RUST_LOG", "info,kiln::isolation::disk_copy=debug")
        .on_drop(OnDrop::Kill)
        .spawn()?;
    let sampler = Sampler::start(session.pid());
    let mut phases: Vec<(&str, Instant)> = vec![("start-up", spawned)];
    let result = (|| -> Result<(), String> {
        // Start-up.
        let deadline = Instant::now() + START;
        let watching = loop {
            let e = next(&mut session, deadline, "the watcher")?;
            if e.is(EventKind::BuildFinished) && f.build_ms == 0.0 {
                f.build_ms = number(&e, "ms")?;
            }
            // The first one: it holds the whole state (the later ones
            // of the start-up, after its replay, copy what changed only).
            if e.is(EventKind::Checkpoint) && f.startup_checkpoint_ms == 0.0 {
                f.startup_checkpoint_ms = number(&e, "ms")?;
                f.startup_serving_ms = ms_since(spawned, e.at);
            }
            if e.is(EventKind::Replay) && f.startup_serving_ms > 0.0 {
                f.startup_replay_ms = ms_since(spawned, e.at) - f.startup_serving_ms;
            }
            if kiln_dev_driver::is_watching(&e) {
                break e;
            }
        };
        f.startup_ms = ms_since(spawned, watching.at);
        settle(&mut session, "start-up")?;
        // The session's first copy of its state to disk (the whole file;
        // every later one appends what changed), waited for: the save,
        // crash and Ctrl-C below are those of a session whose last good
        // point is on disk, as every session's is once that copy is done.
        // A Ctrl-C before it waits for it (the report says how long it
        // took).
        let first_copy = match session.named_since(0, EventKind::StateKept).first() {
            Some(e) => (*e).clone(),
            None => loop {
                let e = next(
                    &mut session,
                    Instant::now() + FIRST_COPY,
                    "the first copy to disk",
                )?;
                if e.is(EventKind::StateKept) {
                    break e;
                }
            },
        };
        f.first_copy_ms = ms_since(spawned, first_copy.at);
        f.first_copy_written = first_copy.u64("written").unwrap_or(0);

        // A save: the same code with a kept static.
        let edited = format!(
            "{pristine}\n/// A save of the state-scale bench.\n#[used]\nstatic STATE_SCALE_SAVE: [u8; 8] = *b\"scale-{:02}\";\n",
            f.bytes.trailing_zeros() % 100
        );
        let saved = Instant::now();
        phases.push(("save", saved));
        std::fs::write(&source, edited).map_err(|e| format!("{}: {e}", source.display()))?;
        let deadline = saved + STEP;
        let swapped = loop {
            let e = next(&mut session, deadline, "the swap")?;
            if e.is(EventKind::Handoff) {
                f.handoff_event_ms = e.ms();
            }
            if e.is(EventKind::Swapped) {
                break e;
            }
        };
        f.save_outside_ms = ms_since(saved, swapped.at);
        f.save_ms = number(&swapped, "ms")?;
        f.save_build_ms = swapped.f64("build_ms").unwrap_or(f64::NAN);
        f.handoff_ms = number(&swapped, "handoff_ms")?;
        f.handoff_bytes = swapped.u64("handoff_bytes").unwrap_or(0);
        let version = swapped.version();
        let checkpoint = loop {
            let e = next(&mut session, deadline, "the checkpoint after the replay")?;
            if e.is(EventKind::Checkpoint) && e.version() == version {
                break e;
            }
        };
        f.checkpoint_ms = number(&checkpoint, "ms")?;
        f.checkpoint_bytes = checkpoint.u64("bytes").unwrap_or(0);
        settle(&mut session, "the save")?;

        // A crash of the idle worker.
        let worker = session.worker_pid();
        let killed = Instant::now();
        phases.push(("crash", killed));
        kill(worker, "ABRT")?;
        let deadline = killed + STEP;
        let restarted = loop {
            let e = session
                .try_next(deadline)
                .map_err(|e| format!("{e} while waiting for the restart"))?;
            if e.is(EventKind::Crashed) {
                f.crash_noticed_ms = ms_since(killed, e.at);
            }
            if e.is(EventKind::Restarted) {
                break e;
            }
        };
        f.restart_outside_ms = ms_since(killed, restarted.at);
        f.restart_ms = number(&restarted, "ms")?;
        f.restart_state_matches = restarted.bool("state_matches");
        settle(&mut session, "the restart")?;
        Ok(())
    })();
    if let Err(e) = result {
        finish_samples(sampler.finish(), &phases, f);
        return Err(e);
    }

    // Ctrl-C: until the state file is in place, and until the exit.
    let watch_file = state_file.to_path_buf();
    let interrupted = Instant::now();
    phases.push(("Ctrl-C", interrupted));
    let appeared = std::thread::spawn(move || {
        let end = interrupted + STEP;
        while Instant::now() < end {
            if watch_file.exists() {
                return Some(interrupted.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    });
    let stopped = session.stop();
    f.ctrl_c_exit_ms = stopped.exited_after.as_secs_f64() * 1e3;
    let appeared = appeared.join().ok().flatten();
    finish_samples(sampler.finish(), &phases, f);
    let saved = stopped.events.iter().find(|e| e.is(EventKind::StateSaved));
    f.state_file_bytes = saved.and_then(|e| e.u64("bytes")).unwrap_or(0);
    match appeared {
        Some(d) => f.ctrl_c_file_ms = d.as_secs_f64() * 1e3,
        None => {
            return Err(format!(
                "no state file {} after Ctrl-C (exit {}; state_saved: {})",
                state_file.display(),
                stopped.status,
                saved.map_or("none".to_string(), |e| e.line.to_string())
            ));
        }
    }
    if !stopped.status.success() {
        return Err(format!(
            "kiln dev exited with {} after Ctrl-C",
            stopped.status
        ));
    }
    Ok(())
}

/// The phase (of `phases`, in order) a sample taken at `at` fell in.
fn phase_at<'a>(phases: &[(&'a str, Instant)], at: Instant) -> &'a str {
    phases
        .iter()
        .rev()
        .find(|(_, start)| *start <= at)
        .map_or("start-up", |(name, _)| name)
}

/// The peak of the samples, the phase it fell in, and each phase's peak.
fn finish_samples(samples: Vec<Sample>, phases: &[(&str, Instant)], f: &mut SizeFigures) {
    f.samples = samples.len();
    if let Some(peak) = samples.iter().max_by_key(|s| s.total()) {
        f.peak_pss = peak.pss;
        f.peak_supervisor_pss = peak.supervisor;
        f.peak_memfd = peak.memfd;
        f.peak_phase = phase_at(phases, peak.at).to_string();
    }
    for (name, _) in phases {
        let peak = samples
            .iter()
            .filter(|s| phase_at(phases, s.at) == *name)
            .max_by_key(|s| s.total());
        if let Some(peak) = peak {
            f.phase_peaks.push((name.to_string(), peak.pss, peak.memfd));
        }
    }
    if let Ok(path) = std::env::var("KILN_BENCH_STATE_DEBUG") {
        let start = phases[0].1;
        let text: String = samples
            .iter()
            .map(|s| {
                format!(
                    "{:.3} {} sup {} all {} workers {} memfd {}\n",
                    s.at.duration_since(start).as_secs_f64(),
                    phase_at(phases, s.at),
                    s.supervisor >> 20,
                    s.pss >> 20,
                    s.workers,
                    s.memfd >> 20
                )
            })
            .collect();
        let _ = std::fs::write(path, text);
    }
}

/// `kiln replay --no-timing WORKLOAD` on the CPU module in `copy`, its
/// memory sampled as a session's is (the replay and its worker): its peak
/// and its time into `f`. Untimed: what it holds does not depend on how
/// many times a call is timed, and at 4 GiB the timing runs take a minute.
fn replay_peak(
    kiln_exe: &Path,
    copy: &Path,
    config: &Config,
    workload: &Path,
    f: &mut SizeFigures,
) -> Result<(), String> {
    let started = Instant::now();
    let child = std::process::Command::new(kiln_exe)
        .arg("replay")
        .arg(workload)
        .args(["--backend", "cpu", "--no-timing"])
        .current_dir(copy)
        .env(
            "KILN_MODULE_TARGET_DIR",
            kiln::workspace::module_target_dir(&config.workspace),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run kiln replay: {e}"))?;
    let sampler = Sampler::start(child.id());
    let output = child.wait_with_output();
    let samples = sampler.finish();
    let output = output.map_err(|e| format!("kiln replay: {e}"))?;
    f.replay_ms = started.elapsed().as_secs_f64() * 1e3;
    if !output.status.success() {
        return Err(format!(
            "kiln replay failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    f.replay_peak = samples.iter().map(Sample::total).max().unwrap_or(0);
    Ok(())
}

/// A memcpy of `size` bytes into a pre-touched buffer, `rounds` times after
/// one warm-up (GB/s).
fn memcpy_rate(size: u64, rounds: usize) -> Result<Summary, String> {
    let src = vec![1u8; size as usize];
    let mut dst = vec![0u8; size as usize];
    let mut rates = Vec::new();
    for round in 0..=rounds {
        let t0 = Instant::now();
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        let secs = t0.elapsed().as_secs_f64();
        if round > 0 {
            rates.push(size as f64 / secs / 1e9);
        }
    }
    Summary::of(&rates).ok_or_else(|| "memcpy: no samples".to_string())
}

/// Reading the state file back into a fresh buffer, as the restart loop's
/// program does (`std::fs::read`), from the page cache: one warm-up read,
/// then `rounds` timed ones (GB/s).
fn read_rate(path: &Path, rounds: usize) -> Result<Summary, String> {
    let read = || std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let len = read()?.len();
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let data = read()?;
        let secs = t0.elapsed().as_secs_f64();
        drop(black_box(data));
        rates.push(len as f64 / secs / 1e9);
    }
    Summary::of(&rates).ok_or_else(|| "file read: no samples".to_string())
}

fn measure_size(
    kiln_exe: &Path,
    copy: &Path,
    scratch: &Path,
    config: &Config,
    size: u64,
) -> Result<SizeFigures, String> {
    let name = bytes::human(size).replace(' ', "");
    let workload_path = scratch.join(format!("state-{name}.kwl"));
    let state_file = scratch.join(format!("state-{name}.state"));
    let _ = std::fs::remove_file(&state_file);
    eprintln!("kiln-bench: state scale {name}: writing the workload");
    kiln::workload::write(&state_workload(size), &workload_path)
        .map_err(|e| format!("cannot write the workload: {e}"))?;
    let mut f = SizeFigures {
        bytes: size,
        ..SizeFigures::default()
    };
    eprintln!("kiln-bench: state scale {name}: kiln dev session");
    let session = run_session(kiln_exe, copy, config, &workload_path, &state_file, &mut f)
        .and_then(|()| {
            eprintln!("kiln-bench: state scale {name}: kiln replay");
            replay_peak(kiln_exe, copy, config, &workload_path, &mut f)
        });
    let _ = std::fs::remove_file(&workload_path);
    let outcome = session.and_then(|()| {
        eprintln!("kiln-bench: state scale {name}: memcpy and file read");
        let rounds = if size >= 1024 * MIB { 3 } else { 9 };
        f.memcpy_gbps = Some(memcpy_rate(size, rounds)?);
        f.read_gbps = Some(read_rate(&state_file, rounds)?);
        Ok(())
    });
    let _ = std::fs::remove_file(&state_file);
    outcome.map(|()| f)
}

// ----- the report -----

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{} ms", num(v))
    } else {
        "-".to_string()
    }
}

fn render(outcomes: &[(u64, SizeOutcome)]) -> String {
    let mut times = Table::new(&[
        "state",
        "start-up (build)",
        "save->serving",
        "handoff",
        "checkpoint",
        "crash->serving",
        "Ctrl-C->file",
        "Ctrl-C->exit",
    ]);
    let mut memory = Table::new(&[
        "state",
        "peak Pss+memfd",
        "x state",
        "peak in",
        "memcpy",
        "read state file",
    ]);
    let mut notes = String::new();
    for (size, outcome) in outcomes {
        let label = bytes::human(*size);
        match outcome {
            SizeOutcome::Measured(f) => {
                times.row(vec![
                    label.clone(),
                    format!("{} ({})", ms(f.startup_ms), ms(f.build_ms)),
                    ms(f.save_ms),
                    format!("{} / {}", ms(f.handoff_ms), bytes::human(f.handoff_bytes)),
                    ms(f.checkpoint_ms),
                    format!(
                        "{}{}",
                        ms(f.restart_ms),
                        if f.restart_state_matches == Some(true) {
                            ""
                        } else {
                            " (state differs!)"
                        }
                    ),
                    ms(f.ctrl_c_file_ms),
                    ms(f.ctrl_c_exit_ms),
                ]);
                memory.row(vec![
                    label.clone(),
                    format!(
                        "{} (supervisor {}, worker {}, memfd {})",
                        bytes::human(f.peak()),
                        bytes::human(f.peak_supervisor_pss),
                        bytes::human(f.peak_pss - f.peak_supervisor_pss),
                        bytes::human(f.peak_memfd)
                    ),
                    format!("{:.2}", f.peak() as f64 / *size as f64),
                    f.peak_phase.clone(),
                    format!(
                        "{} ({} GB/s)",
                        ms(f.ms_of(f.memcpy_gbps)),
                        num(SizeFigures::gbps(f.memcpy_gbps))
                    ),
                    format!(
                        "{} ({} GB/s)",
                        ms(f.ms_of(f.read_gbps)),
                        num(SizeFigures::gbps(f.read_gbps))
                    ),
                ]);
                notes.push_str(&format!(
                    "  {label}: start-up: serving after {} (build {}), first replay {} (timing and reference included), watching {} after it: start-up less build and first replay {}\n",
                    ms(f.startup_serving_ms),
                    ms(f.build_ms),
                    ms(f.startup_replay_ms),
                    ms(f.startup_ms - f.startup_serving_ms - f.startup_replay_ms),
                    ms(f.startup_ms - f.build_ms - f.startup_replay_ms),
                ));
                notes.push_str(&format!(
                    "  {label}: the first copy to disk ({} written) was there {} after the spawn, {} after `watching` (waited for before the save; later copies append what changed)\n",
                    bytes::human(f.first_copy_written),
                    ms(f.first_copy_ms),
                    ms(f.first_copy_ms - f.startup_ms),
                ));
                notes.push_str(&format!(
                    "  {label}: save seen from outside {}, its build {}; crash: `crashed` arrived {} and `restarted` {} after kill(1) was started; start-up checkpoint {}; {} memory samples\n",
                    ms(f.save_outside_ms),
                    ms(f.save_build_ms),
                    ms(f.crash_noticed_ms),
                    ms(f.restart_outside_ms),
                    ms(f.startup_checkpoint_ms),
                    f.samples
                ));
                let phases: Vec<String> = f
                    .phase_peaks
                    .iter()
                    .map(|(phase, pss, memfd)| format!("{phase} {}", bytes::human(pss + memfd)))
                    .collect();
                notes.push_str(&format!(
                    "  {label}: peak by phase: {}; `kiln replay --no-timing` of the workload: peak {} ({:.2} x the state) in {}\n",
                    phases.join(", "),
                    bytes::human(f.replay_peak),
                    f.replay_peak as f64 / *size as f64,
                    ms(f.replay_ms)
                ));
            }
            SizeOutcome::Skipped(why) => notes.push_str(&format!("  {label}: skipped: {why}\n")),
            SizeOutcome::Failed(why) => notes.push_str(&format!("  {label}: FAILED: {why}\n")),
        }
    }
    format!(
        "times (kiln's own figures from its JSON events; start-up and Ctrl-C from outside):\n{}\nmemory (peak summed Pss of supervisor + worker less shared memory, plus every memfd once in full, mapped or not; sampled every {} ms) and baselines (medians):\n{}{}",
        times.render(),
        SAMPLE_EVERY.as_millis(),
        memory.render(),
        notes
    )
}

/// Runs the section; returns the report text and writes `state-scale.json`
/// into `config.out_dir`.
pub fn measure(config: &Config) -> Result<String, String> {
    let load_start = crate::report::load_average();
    let started = Instant::now();
    std::fs::create_dir_all(&config.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.out_dir.display()))?;
    let sizes = sizes(config)?;
    let kiln_exe = crate::artifacts::build_kiln(&config.workspace)?;
    let (scratch, copy) = scratch_copy(&config.workspace, "kiln-bench-state-")?;
    let pristine = std::fs::read_to_string(copy.join(KERNELS_SOURCE))
        .map_err(|e| format!("{KERNELS_SOURCE}: {e}"))?;
    eprintln!("kiln-bench: state scale: warm-up session (module build, CPU peaks)");
    warm_up(&kiln_exe, &copy, config)?;
    let mut outcomes = Vec::new();
    let mut seen: Option<(f64, u64)> = None;
    for &size in &sizes {
        std::fs::write(copy.join(KERNELS_SOURCE), &pristine)
            .map_err(|e| format!("{KERNELS_SOURCE}: {e}"))?;
        let outcome = match skip_reason(size, scratch.path(), seen) {
            Some(why) => {
                eprintln!(
                    "kiln-bench: state scale {}: skipped: {why}",
                    bytes::human(size)
                );
                SizeOutcome::Skipped(why)
            }
            None => match measure_size(&kiln_exe, &copy, scratch.path(), config, size) {
                Ok(f) => {
                    if size >= 64 * MIB {
                        seen = Some((f.peak() as f64 / size as f64, size));
                    }
                    SizeOutcome::Measured(Box::new(f))
                }
                Err(e) => {
                    eprintln!("kiln-bench: state scale {}: {e}", bytes::human(size));
                    SizeOutcome::Failed(e)
                }
            },
        };
        outcomes.push((size, outcome));
    }
    let load_end = crate::report::load_average();
    let seconds = started.elapsed().as_secs_f64();
    let json = json!({
        "quick": config.quick,
        "seconds": seconds,
        "load_start": load_start,
        "load_end": load_end,
        "sizes": outcomes.iter().map(|(size, o)| match o {
            SizeOutcome::Measured(f) => f.to_json(),
            SizeOutcome::Skipped(why) => json!({"bytes": size, "skipped": why}),
            SizeOutcome::Failed(why) => json!({"bytes": size, "error": why}),
        }).collect::<Vec<_>>(),
    });
    let path = config.out_dir.join("state-scale.json");
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let measured: Vec<&SizeFigures> = outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            SizeOutcome::Measured(f) => Some(f.as_ref()),
            _ => None,
        })
        .collect();
    let chart_path = config.out_dir.join("state-scale.svg");
    let note = format!(
        "{} cores; load average {load_start:.1} at the start, {load_end:.1} at the end{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if config.quick {
            "; QUICK: not meaningful"
        } else {
            ""
        }
    );
    std::fs::write(&chart_path, crate::state_scale_chart::svg(&measured, &note))
        .map_err(|e| format!("cannot write {}: {e}", chart_path.display()))?;
    Ok(format!(
        "state scale: kiln dev --workload FILE --state FILE --no-tune on the CPU module, a workload of two f32 residents and one dot over them{}\n{}  (run took {seconds:.0} s; load average {load_start:.1} at the start, {load_end:.1} at the end)\nraw figures: {}\nchart: {}\n",
        if config.quick {
            " (QUICK: figures not meaningful)"
        } else {
            ""
        },
        render(&outcomes),
        path.display(),
        chart_path.display()
    ))
}

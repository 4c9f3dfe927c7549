//! Facts about this process read from /proc: which module files are mapped
//! (and whether executable), how many threads run, how many pthread keys
//! are left. Used by the tests that prove unloading, and by `kiln dev`'s
//! soak diagnostics. And one about the machine: how much of its CPU time
//! other processes used ([`other_work_share`], for the replay's "machine
//! too busy").

use std::path::{Path, PathBuf};

/// One mapped file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    pub path: PathBuf,
    /// At least one of its mappings is executable (code is live).
    pub executable: bool,
}

/// Files under `dir` mapped into process `pid` (`None`: this process),
/// deduplicated. A read-only mapping left by the backtrace symbolizer after
/// dlclose is reported with `executable: false`.
pub fn mapped_files_under(dir: &Path, pid: Option<u32>) -> Vec<MappedFile> {
    let maps_path = match pid {
        Some(pid) => format!("/proc/{pid}/maps"),
        None => "/proc/self/maps".to_string(),
    };
    let maps = std::fs::read_to_string(maps_path).unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut out: Vec<MappedFile> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname
        let mut fields = line.split_whitespace();
        let perms = fields.nth(1).unwrap_or("");
        let Some(path) = fields.nth(3) else { continue };
        let path = Path::new(path.trim_end_matches(" (deleted)"));
        if !path.starts_with(&dir) {
            continue;
        }
        let executable = perms.contains('x');
        match out.iter_mut().find(|m| m.path == path) {
            Some(m) => m.executable |= executable,
            None => out.push(MappedFile {
                path: path.to_path_buf(),
                executable,
            }),
        }
    }
    out
}

/// Number of threads of process `pid` (`None`: this process).
pub fn thread_count(pid: Option<u32>) -> usize {
    let status_path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    std::fs::read_to_string(status_path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// How many more pthread keys this process can create (glibc allows 1024
/// in all). A module copy that leaked one key per load would run this to 0
/// after about a thousand reloads.
pub fn free_pthread_keys() -> usize {
    let mut keys = Vec::new();
    loop {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; no destructor is registered.
        let rc = unsafe { libc::pthread_key_create(&mut key, None) };
        if rc != 0 {
            break;
        }
        keys.push(key);
        if keys.len() > 100_000 {
            break;
        }
    }
    let free = keys.len();
    for key in keys {
        // SAFETY: each key was created above and is deleted exactly once;
        // nothing stored values under it.
        unsafe { libc::pthread_key_delete(key) };
    }
    free
}

/// The largest `M_MMAP_THRESHOLD` glibc takes on 64-bit targets.
pub const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of a malloc heap kept mapped before glibc gives
/// it back.
pub const TRIM_THRESHOLD: i32 = 256 << 20;

/// glibc malloc settings for a process that runs and times kernels.
///
/// - **One arena.** Every engine version runs on new threads, and each new
///   thread may get a fresh arena that keeps tens of MiB resident after the
///   thread is gone: over hundreds of swaps the RSS climbs in steps until
///   the default cap (8 per core) is reached. And with two arenas, two
///   engines' threads took different ones, so the same kernel's outputs
///   of the old and the new engine lay in different heaps, at different
///   distances from their inputs modulo 4 KiB, and the interleaved
///   comparison timed two layouts (4K aliasing; see `workload::replay`'s
///   `sample`). One heap for every thread keeps RSS flat and lets the
///   replay give both engines the same block; kernels allocate little on
///   their hot paths, so contention does not matter here.
/// - **Fixed mmap and trim thresholds.** By default glibc serves a large
///   block (a kernel's output: 2-4 MiB in the bundled workload) with a
///   fresh mmap or from a heap it then trims, depending on a threshold that
///   moves with the process's history and on the arena's layout. A fresh
///   or trimmed block is paid for in page faults inside the timed call:
///   measured in `kiln dev --cold`, the same prefix_sum took 384 faults a
///   run on the old engine and 480 on the new one, softmax 124 and 96, so
///   two engines of the same code timed interleaved read apart (up to 1.8x
///   on one call, `tests/verdicts.rs`). Blocks up to 32 MiB now always come
///   from a heap that keeps up to 256 MiB free at its top, so after the
///   first run a call's output reuses mapped memory on every engine.
pub fn configure_malloc() {
    // SAFETY: mallopt only changes allocator parameters; it is called at
    // start-up, before any thread that allocates runs, and each value is
    // in its parameter's range (M_ARENA_MAX > 0, M_MMAP_THRESHOLD at most
    // HEAP_MAX_SIZE / 2 = 32 MiB, M_TRIM_THRESHOLD any size).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// CPU time used since boot, in clock ticks: by the whole machine (every
/// CPU's user, system, interrupt and steal time: `/proc/stat`) and by this
/// process (all its threads: `/proc/self/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    pub machine_busy: u64,
    pub own: u64,
}

/// The CPU time used so far (`None` where /proc does not say).
pub fn cpu_ticks() -> Option<CpuTicks> {
    let machine = std::fs::read_to_string("/proc/stat").ok()?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    Some(CpuTicks {
        machine_busy: parse_machine_busy(&machine)?,
        own: parse_own_ticks(&own)?,
    })
}

/// The share of the machine's CPU capacity that *other* processes used
/// (and the hypervisor took: steal) between two readings `wall` apart: 0
/// on an otherwise idle machine, 1 when other work kept every CPU busy.
/// What a timing needs to know: this process's own threads (an engine's
/// pool, the replay's thread) are not counted.
pub fn other_work_share(before: CpuTicks, after: CpuTicks, wall: std::time::Duration) -> f64 {
    let ticks_per_sec = rustix::param::clock_ticks_per_second() as f64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let capacity = wall.as_secs_f64() * ticks_per_sec * cpus;
    let busy = after.machine_busy.saturating_sub(before.machine_busy);
    let own = after.own.saturating_sub(before.own);
    if capacity <= 0.0 {
        return 0.0;
    }
    (busy.saturating_sub(own) as f64 / capacity).clamp(0.0, 1.0)
}

/// user + nice + system + irq + softirq + steal of the `cpu` line (guest
/// time is already in user).
fn parse_machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    (v.len() >= 4).then(|| at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// utime + stime of `/proc/self/stat` (fields 14 and 15; the command name
/// in parentheses may hold spaces, so fields are counted after its `)`).
fn parse_own_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod cpu_time_tests {
    use super::*;

    #[test]
    fn machine_busy_time_is_every_kind_but_idle_and_iowait() {
        let text = "cpu  100 2 30 5000 40 6 7 8 0 0\ncpu0 50 1 15 2500 20 3 3 4 0 0\n";
        assert_eq!(parse_machine_busy(text), Some(100 + 2 + 30 + 6 + 7 + 8));
        assert_eq!(parse_machine_busy("intr 5\n"), None);
    }

    #[test]
    fn own_time_is_utime_plus_stime_whatever_the_command_name() {
        let text = "4242 (kiln (worker) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 7 0 100 0 0";
        assert_eq!(parse_own_ticks(text), Some(1234 + 56));
        assert_eq!(parse_own_ticks("garbage"), None);
    }

    #[test]
    fn only_other_processes_count_as_other_work() {
        let ticks = rustix::param::clock_ticks_per_second();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let before = CpuTicks {
            machine_busy: 1000,
            own: 100,
        };
        // One second: this process used every CPU, nothing else ran.
        let mine = CpuTicks {
            machine_busy: 1000 + ticks * cpus,
            own: 100 + ticks * cpus,
        };
        let second = std::time::Duration::from_secs(1);
        assert_eq!(other_work_share(before, mine, second), 0.0);
        // Other processes used half the machine beside this one's half.
        let half = CpuTicks {
            machine_busy: 1000 + ticks * cpus,
            own: 100 + ticks * cpus / 2,
        };
        assert!((other_work_share(before, half, second) - 0.5).abs() < 0.01);
        // The real counters move, and this process is part of the machine.
        let now = cpu_ticks().expect("/proc/stat and /proc/self/stat");
        assert!(now.machine_busy >= now.own);
    }
}

//! Facts about this process read from /proc: which module files are mapped
//! (and whether executable), how many threads run, how many pthread keys
//! are left. Used by the tests that prove unloading, and by `kiln dev`'s
//! soak diagnostics. And one about the machine: how long runnable tasks
//! waited for a CPU ([`cpu_stall`], for the replay's "machine too busy").

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
/// - **Two arenas.** Every engine version runs on new threads, and each new
///   thread may get a fresh arena that keeps tens of MiB resident after the
///   thread is gone: over hundreds of swaps the RSS climbs in steps until
///   the default cap (8 per core) is reached. A small cap keeps it flat;
///   kernels allocate little on their hot paths, so contention does not
///   matter here.
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
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// How long, in total since boot, at least one runnable task of this
/// machine waited for a CPU: the `some total=` of `/proc/pressure/cpu`
/// (Linux pressure stall information). `None` where the kernel does not
/// provide it. Two readings around a measurement give the share of its
/// time during which something else wanted the CPUs it used.
pub fn cpu_stall() -> Option<std::time::Duration> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    parse_cpu_stall(&text)
}

fn parse_cpu_stall(text: &str) -> Option<std::time::Duration> {
    let some = text.lines().find(|l| l.starts_with("some "))?;
    let total = some
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    total.parse().ok().map(std::time::Duration::from_micros)
}

#[cfg(test)]
mod pressure_tests {
    use super::*;

    #[test]
    fn the_cpu_stall_is_the_some_line_total_in_microseconds() {
        let text = "some avg10=3.44 avg60=30.22 avg300=49.43 total=4232367530\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(
            parse_cpu_stall(text),
            Some(std::time::Duration::from_micros(4_232_367_530))
        );
        assert_eq!(parse_cpu_stall("full avg10=0.00 total=5\n"), None);
        assert_eq!(parse_cpu_stall(""), None);
    }
}

//! Facts about this process read from /proc: which module files are mapped
//! (and whether executable), how many threads run, how many pthread keys
//! are left. Used by the tests that prove unloading, and by `kiln dev`'s
//! soak diagnostics.

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

/// Caps glibc's malloc arenas. Every engine version runs on new threads, and
/// each new thread may get a fresh arena that keeps tens of MiB resident
/// after the thread is gone: over hundreds of swaps the RSS climbs in steps
/// until the default cap (8 per core) is reached. A small cap keeps it flat;
/// kernels allocate little on their hot paths, so contention does not
/// matter here.
pub fn limit_malloc_arenas(max: i32) {
    // SAFETY: mallopt only changes allocator parameters; it is called at
    // start-up, and M_ARENA_MAX takes any positive value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, max);
    }
}

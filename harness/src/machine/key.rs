//! What measured peaks depend on: when any of it changes they are measured
//! again. For the CPU: its model, the thread count, the process's CPU quota
//! (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`), the
//! LLC size used (it sizes the arrays) and the instructions the compute
//! loops run on (a VM of the same model name may hide AVX-512); for a GPU
//! device: its name and driver. [`METHOD_VERSION`] is in every key, so that
//! a change to how kiln measures invalidates old results.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bump when a measurement changes in a way that changes its numbers.
/// 2: the FMA loop runs on AVX-512 where the CPU has it (it was AVX2 at
/// most), and the i8 peak is measured.
pub const METHOD_VERSION: u32 = 2;

/// Everything a device's peaks depend on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineKey {
    /// `cpu`, `vulkan`, `cuda`.
    pub backend: String,
    /// CPU model name, or the GPU device's name.
    pub device: String,
    /// The GPU driver's version (`None` for the CPU).
    pub driver: Option<String>,
    /// Threads measured with (the engine's count; 1 for a GPU).
    pub threads: usize,
    /// The CPU quota in words (`none`, `1.50 CPUs (150000/100000)`).
    pub cpu_quota: String,
    /// The LLC size used for the array sizes, bytes.
    pub llc_used_bytes: u64,
    /// The instructions the CPU's compute loops run on
    /// ([`cpu_instructions`]; `n/a` for a GPU device).
    pub instructions: String,
    pub method: u32,
}

impl MachineKey {
    /// A short stable name for file names: backend and a hash of the key.
    pub fn file_stem(&self) -> String {
        let json = serde_json::to_string(self).expect("a key serialises");
        format!(
            "{}-{:016x}",
            self.backend,
            xxhash_rust::xxh3::xxh3_64(json.as_bytes())
        )
    }
}

/// The CPU's model name from `/proc/cpuinfo` (`model name`, or on ARM
/// `Hardware`/`CPU part`), else the architecture.
pub fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    field("model name")
        .or_else(|| field("Hardware"))
        .or_else(|| field("CPU part").map(|p| format!("CPU part {p}")))
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// The instructions the CPU's compute loops run on here: the FMA loop's,
/// and the i8 loop's when there is one.
pub fn cpu_instructions() -> String {
    let fma = super::fma::Isa::detected().words();
    match super::i8dot::I8Isa::detected() {
        Some(i8) => format!("{fma}; {}", i8.words()),
        None => fma.to_string(),
    }
}

/// The CPU quota of this process in words, from the cgroup files under
/// `cgroup_root` (normally `/sys/fs/cgroup`) and `/proc/self/cgroup`'s text.
pub fn cpu_quota_in(cgroup_root: &Path, proc_self_cgroup: &str) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    // v2: the line `0::/path`.
    if let Some(path) = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/'))
    {
        let own = cgroup_root.join(path).join("cpu.max");
        if let Some(text) = read(own).or_else(|| read(cgroup_root.join("cpu.max"))) {
            let mut parts = text.split_whitespace();
            return match (
                parts.next(),
                parts.next().and_then(|p| p.parse::<u64>().ok()),
            ) {
                (Some("max"), _) | (None, _) => "none".to_string(),
                (Some(q), Some(period)) => quota_words(q.parse().ok(), period),
                (Some(_), None) => format!("unreadable cpu.max: {}", text.trim()),
            };
        }
    }
    // v1: the line `N:cpu,cpuacct:/path` (or `N:cpu:/path`).
    let v1 = proc_self_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpu")
            .then(|| path.trim_start_matches('/').to_string())
    });
    if let Some(path) = v1 {
        for dir in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
            for base in [cgroup_root.join(dir).join(&path), cgroup_root.join(dir)] {
                let quota = read(base.join("cpu.cfs_quota_us"));
                let period = read(base.join("cpu.cfs_period_us"));
                if let (Some(q), Some(p)) = (quota, period) {
                    let Ok(period) = p.trim().parse::<u64>() else {
                        continue;
                    };
                    return quota_words(
                        q.trim()
                            .parse::<i64>()
                            .ok()
                            .filter(|&q| q > 0)
                            .map(|q| q as u64),
                        period,
                    );
                }
            }
        }
    }
    "none".to_string()
}

fn quota_words(quota: Option<u64>, period: u64) -> String {
    match quota {
        Some(q) if period > 0 => format!("{:.2} CPUs ({q}/{period})", q as f64 / period as f64),
        _ => "none".to_string(),
    }
}

/// This process's CPU quota in words.
pub fn cpu_quota() -> String {
    let proc_self = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    cpu_quota_in(Path::new("/sys/fs/cgroup"), &proc_self)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_from_cgroup_v2_and_v1() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("user.slice/kiln")).unwrap();
        std::fs::write(r.join("user.slice/kiln/cpu.max"), "150000 100000\n").unwrap();
        assert_eq!(
            cpu_quota_in(r, "0::/user.slice/kiln\n"),
            "1.50 CPUs (150000/100000)"
        );
        std::fs::write(r.join("user.slice/kiln/cpu.max"), "max 100000\n").unwrap();
        assert_eq!(cpu_quota_in(r, "0::/user.slice/kiln\n"), "none");
        // v1, with the controllers named together.
        std::fs::create_dir_all(r.join("cpu,cpuacct/job")).unwrap();
        std::fs::write(r.join("cpu,cpuacct/job/cpu.cfs_quota_us"), "200000\n").unwrap();
        std::fs::write(r.join("cpu,cpuacct/job/cpu.cfs_period_us"), "100000\n").unwrap();
        let v1 = "4:memory:/x\n2:cpu,cpuacct:/job\n";
        assert_eq!(cpu_quota_in(r, v1), "2.00 CPUs (200000/100000)");
        std::fs::write(r.join("cpu,cpuacct/job/cpu.cfs_quota_us"), "-1\n").unwrap();
        assert_eq!(cpu_quota_in(r, v1), "none");
        assert_eq!(cpu_quota_in(r, ""), "none");
    }

    #[test]
    fn file_stems_differ_when_the_key_does() {
        let key = MachineKey {
            backend: "cpu".into(),
            device: "AMD EPYC".into(),
            driver: None,
            threads: 2,
            cpu_quota: "none".into(),
            llc_used_bytes: 32 << 20,
            instructions: "AVX2 FMA, 8 f32 lanes".into(),
            method: METHOD_VERSION,
        };
        let other = MachineKey {
            threads: 1,
            ..key.clone()
        };
        assert!(key.file_stem().starts_with("cpu-"));
        assert_eq!(key.file_stem(), key.clone().file_stem());
        assert_ne!(key.file_stem(), other.file_stem());
        // Peaks measured on other instructions (or by an older method) are
        // not this machine's now.
        let wider = MachineKey {
            instructions: "AVX-512F FMA, 16 f32 lanes".into(),
            ..key.clone()
        };
        assert_ne!(key.file_stem(), wider.file_stem());
        let older = MachineKey {
            method: 1,
            ..key.clone()
        };
        assert_ne!(key.file_stem(), older.file_stem());
        assert!(cpu_instructions().starts_with(crate::machine::fma::instructions()));
        assert!(!cpu_model().is_empty());
    }
}

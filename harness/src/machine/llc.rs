//! The last-level cache: what sysfs reports, whether that is plausible, and
//! the size kiln uses to size the triad's arrays and the cold-cache flush.
//!
//! The rule (documented in the README, "How close to the machine"):
//!
//! - The LLC is the highest-level data or unified cache of cpu0 in
//!   `/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}`.
//! - A reported size is **plausible** when it is at most [`MAX_PLAUSIBLE_LLC`]
//!   (128 MiB: the largest cache a core reaches at L3 speed in parts kiln
//!   targets is 96 MiB, AMD's 3D V-Cache core complexes; hypervisors often
//!   report the sum of a socket's L3s, or invent one, as one instance) and
//!   at most 1/[`RAM_FRACTION`] of the RAM (the triad needs 12 times the
//!   LLC used in arrays).
//! - The size **used** is the reported one when plausible, otherwise
//!   the smallest of the reported size, 128 MiB and RAM/64; when nothing is
//!   reported, [`ASSUMED_LLC`] (32 MiB).

use std::fmt;
use std::path::Path;

use kiln_stats::bytes;
use serde::{Deserialize, Serialize};

pub const MIB: u64 = 1024 * 1024;
/// The largest LLC instance believed (see the module docs).
pub const MAX_PLAUSIBLE_LLC: u64 = 128 * MIB;
/// The LLC used is at most RAM / this.
pub const RAM_FRACTION: u64 = 64;
/// Used when sysfs reports no cache.
pub const ASSUMED_LLC: u64 = 32 * MIB;
/// Where Linux describes cpu0's caches.
pub const SYSFS_CACHE_DIR: &str = "/sys/devices/system/cpu/cpu0/cache";

/// One cache as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheLevel {
    pub level: u32,
    /// `Data`, `Instruction` or `Unified`.
    pub kind: String,
    pub bytes: u64,
}

/// The LLC kiln uses, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlcChoice {
    /// Level and size sysfs reports (`None`: nothing readable).
    pub reported_level: Option<u32>,
    pub reported_bytes: Option<u64>,
    /// The size used for the triad's arrays and the cache flush.
    pub used_bytes: u64,
    /// Why `used_bytes` is what it is, in words.
    pub reason: String,
}

impl fmt::Display for LlcChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", bytes::human(self.used_bytes), self.reason)
    }
}

/// Parses a sysfs cache size: `32768K`, `1M`, `512`, `2G`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let factor = match unit.trim() {
        "" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Reads the caches under `dir` (a `.../cpu0/cache` directory). Entries
/// that cannot be read or parsed are skipped.
pub fn read_caches(dir: &Path) -> Vec<CacheLevel> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut caches: Vec<CacheLevel> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
        .filter_map(|e| {
            let read = |name: &str| std::fs::read_to_string(e.path().join(name)).ok();
            Some(CacheLevel {
                level: read("level")?.trim().parse().ok()?,
                kind: read("type")?.trim().to_string(),
                bytes: parse_size(&read("size")?)?,
            })
        })
        .collect();
    caches.sort_by_key(|c| c.level);
    caches
}

/// The highest-level data or unified cache.
pub fn last_level(caches: &[CacheLevel]) -> Option<&CacheLevel> {
    caches
        .iter()
        .filter(|c| c.kind != "Instruction")
        .max_by_key(|c| c.level)
}

/// Applies the rule of the module docs. `ram_bytes`: the machine's RAM, if
/// known.
pub fn choose(caches: &[CacheLevel], ram_bytes: Option<u64>) -> LlcChoice {
    let Some(llc) = last_level(caches) else {
        return LlcChoice {
            reported_level: None,
            reported_bytes: None,
            used_bytes: ASSUMED_LLC,
            reason: format!(
                "no cache size reported: assuming {}",
                bytes::human(ASSUMED_LLC)
            ),
        };
    };
    let ram_cap = ram_bytes.map(|r| r / RAM_FRACTION);
    let (reported_level, reported_bytes) = (Some(llc.level), Some(llc.bytes));
    let name = format!("L{} {}", llc.level, bytes::human(llc.bytes));
    if llc.bytes > MAX_PLAUSIBLE_LLC {
        let used = llc
            .bytes
            .min(MAX_PLAUSIBLE_LLC)
            .min(ram_cap.unwrap_or(u64::MAX));
        return LlcChoice {
            reported_level,
            reported_bytes,
            used_bytes: used,
            reason: format!(
                "reported {name}, implausible (above {} per cache; no core reaches more at \
                 L3 speed): using {}",
                bytes::human(MAX_PLAUSIBLE_LLC),
                bytes::human(used)
            ),
        };
    }
    if let Some(cap) = ram_cap.filter(|&cap| llc.bytes > cap) {
        return LlcChoice {
            reported_level,
            reported_bytes,
            used_bytes: cap,
            reason: format!(
                "reported {name}, implausible (above 1/{RAM_FRACTION} of the RAM): using {}",
                bytes::human(cap)
            ),
        };
    }
    LlcChoice {
        reported_level,
        reported_bytes,
        used_bytes: llc.bytes,
        reason: format!("reported {name}, plausible: used as is"),
    }
}

/// The machine's RAM from `/proc/meminfo` (`MemTotal`).
pub fn ram_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This machine's LLC choice.
pub fn detect() -> LlcChoice {
    choose(&read_caches(Path::new(SYSFS_CACHE_DIR)), ram_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(level: u32, kind: &str, bytes: u64) -> CacheLevel {
        CacheLevel {
            level,
            kind: kind.into(),
            bytes,
        }
    }

    #[test]
    fn sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_size("32768K\n"), Some(32 * MIB));
        assert_eq!(parse_size("1M"), Some(MIB));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("12Q"), None);
    }

    #[test]
    fn reads_a_sysfs_tree_and_skips_instruction_caches() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (lvl, kind, size)) in [
            (1, "Data", "32K"),
            (1, "Instruction", "32K"),
            (2, "Unified", "512K"),
            (3, "Unified", "32768K"),
            (4, "Instruction", "64M"),
        ]
        .iter()
        .enumerate()
        {
            let d = dir.path().join(format!("index{i}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("level"), format!("{lvl}\n")).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        std::fs::create_dir(dir.path().join("index9")).unwrap(); // unreadable: skipped
        let caches = read_caches(dir.path());
        assert_eq!(caches.len(), 5);
        assert_eq!(last_level(&caches), Some(&level(3, "Unified", 32 * MIB)));
        assert!(read_caches(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn the_plausibility_rule() {
        let ram = Some(24 << 30);
        // 32 MiB L3 on 24 GiB: used as is.
        let c = choose(
            &[level(2, "Unified", MIB), level(3, "Unified", 32 * MIB)],
            ram,
        );
        assert_eq!(c.used_bytes, 32 * MIB);
        assert!(c.reason.contains("plausible"), "{}", c.reason);
        // The 260 MiB L3 a VM reported: capped at 128 MiB, and said so.
        let c = choose(&[level(3, "Unified", 260 * MIB)], ram);
        assert_eq!(c.used_bytes, 128 * MIB);
        assert_eq!(c.reported_bytes, Some(260 * MIB));
        assert!(c.reason.contains("implausible"), "{}", c.reason);
        assert!(
            c.to_string().starts_with("128 MiB (reported L3 260 MiB"),
            "{c}"
        );
        // 96 MiB on a 2 GiB machine: more than RAM/64 (32 MiB).
        let c = choose(&[level(3, "Unified", 96 * MIB)], Some(2 << 30));
        assert_eq!(c.used_bytes, 32 * MIB);
        assert!(c.reason.contains("RAM"), "{}", c.reason);
        // Nothing reported.
        let c = choose(&[level(1, "Instruction", 32 << 10)], ram);
        assert_eq!((c.used_bytes, c.reported_bytes), (ASSUMED_LLC, None));
    }
}

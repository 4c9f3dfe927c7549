//! The worker's memory limit (`--worker-memory`): a size like `8G` or
//! `512M`, `0` for none; by default three quarters of the machine's memory,
//! so a runaway allocation fails in the worker (Rust aborts: "memory
//! allocation of N bytes failed") long before the kernel's OOM killer picks
//! a process.
//!
//! It is `RLIMIT_DATA` (heap, private writable mappings, thread stacks), not
//! `RLIMIT_AS`: GPU drivers reserve address space far beyond the memory
//! they use (CUDA maps the device's whole address range), and an
//! address-space limit makes them fail to start.

/// Parses `8G`, `512M`, `64K`, `1048576`; `0` or `none` is no limit.
pub fn parse(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") || t == "0" {
        return Ok(None);
    }
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad size {text:?} (like 8G, 512M, or 0 for no limit)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("bad size unit in {text:?} (K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .map(Some)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Three quarters of the machine's memory (`MemTotal`), if known.
pub fn default_limit() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024 / 4 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse("512M"), Ok(Some(512 << 20)));
        assert_eq!(parse("8G"), Ok(Some(8 << 30)));
        assert_eq!(parse("8GiB"), Ok(Some(8 << 30)));
        assert_eq!(parse("4096"), Ok(Some(4096)));
        assert_eq!(parse("0"), Ok(None));
        assert_eq!(parse("none"), Ok(None));
        assert!(parse("12X").unwrap_err().contains("unit"));
        assert!(parse("lots").is_err());
        assert!(default_limit().is_some_and(|b| b > 1 << 20));
    }
}

//! Byte sizes for people.

const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// `12 B`, `1.5 KiB`, `32 MiB`, `2.3 MiB`, `1 GiB`: the largest binary unit
/// the size reaches (up to TiB), a whole number when the size is a whole
/// number of that unit, else one decimal.
pub fn human(bytes: u64) -> String {
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >> (10 * (unit + 1)) > 0 {
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    if bytes.is_multiple_of(scale) {
        format!("{} {}", bytes / scale, UNITS[unit])
    } else {
        format!("{:.1} {}", bytes as f64 / scale as f64, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn whole_units_without_decimals_others_with_one() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(12), "12 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(512 << 10), "512 KiB");
        assert_eq!(human(32 << 20), "32 MiB");
        assert_eq!(human(256 << 20), "256 MiB");
        assert_eq!(human(2_411_724), "2.3 MiB");
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(5 << 40), "5 TiB");
        assert_eq!(human(4096 << 40), "4096 TiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }
}

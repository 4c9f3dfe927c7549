//! Quantities written for people, shared by every layer (the replay table,
//! `kiln machine`, the history, log lines).

/// `1.23 ms`, `456 µs`, `2.50 s`.
pub fn human_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::human_secs;

    #[test]
    fn seconds_in_their_unit() {
        assert_eq!(human_secs(2.5), "2.50 s");
        assert_eq!(human_secs(0.0123), "12.30 ms");
        assert_eq!(human_secs(0.000456), "456.0 µs");
    }
}

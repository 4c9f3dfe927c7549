//! The replay table as data: one [`CallLine`] per call with every figure
//! the table shows, made once from a replay's report where the replay ran
//! (the worker: `ReplayReport::table_data`), sent to the supervisor as it
//! is, and rendered there (the
//! one-backend table, [`ReplayTable::render`]) or beside other backends'
//! lines (`backend_columns::table`). Nothing is rendered twice or parsed
//! back.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::workload::timing::human_secs;

/// One call of one replay, as the tables show it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CallLine {
    pub index: usize,
    pub kernel: String,
    /// `f32[256x256] @grid -> @grid`-style description.
    pub description: String,
    /// `ok`, `FAIL`, `ERROR`, `SKIP` or `-` (not checked).
    pub result: String,
    /// Largest absolute error against the expected outputs (checked calls).
    pub max_abs: Option<f64>,
    /// Median time and its median absolute deviation, in seconds (timed
    /// replays).
    pub median: Option<f64>,
    pub mad: Option<f64>,
    /// Against this backend's previous version (`faster`, ...).
    pub verdict: Option<String>,
    /// The median's change from the previous version's, in percent.
    pub change_percent: Option<f64>,
    /// The median over the previous version's with its 95% interval, and
    /// how the previous one was timed (absent in lines sent before it was).
    #[serde(default)]
    pub ratio: Option<crate::workload::timing::Ratio>,
    /// GB/s, GFLOP/s, flop/byte and % of the roofline, as printed.
    pub rates: [String; 4],
    /// The roofline's words for a call above the DRAM roof.
    pub above_roof: Option<String>,
    /// Why the call was not run.
    pub skipped: Option<String>,
    /// Trials that passed, of trials run.
    pub trials: (usize, usize),
    /// Where the expected outputs came from.
    pub expected_from: String,
    /// The error, or what a failing comparison found.
    pub detail: Option<String>,
}

/// One backend's replay table, as data.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplayTable {
    pub label: String,
    pub ms: f64,
    pub passed: bool,
    /// Warm or cold, the flush, the roof (timed replays only).
    pub timing_header: Option<String>,
    pub lines: Vec<CallLine>,
}

impl ReplayTable {
    /// The readable table, one row per call.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replay of {} ({} calls, {:.0} ms): {}",
            self.label,
            self.lines.len(),
            self.ms,
            if self.passed { "PASS" } else { "FAIL" }
        );
        if let Some(header) = &self.timing_header {
            let _ = writeln!(out, "  {header}");
        }
        let [gbs, gflops, intensity, roof] = crate::machine::columns::HEADERS;
        let _ = writeln!(
            out,
            "  {:<4} {:<10} {:<34} {:<6} {:>10} {:>10} {:>10} {:>8} {:>8} {:>7} {:>9}  vs previous",
            "#",
            "kernel",
            "call",
            "result",
            "max abs",
            "median",
            "spread",
            gbs,
            gflops,
            intensity,
            roof
        );
        for c in &self.lines {
            let abs = c.max_abs.map_or(String::new(), |a| format!("{a:.2e}"));
            let median = c.median.map_or(String::new(), human_secs);
            let spread = c
                .mad
                .map_or(String::new(), |m| format!("±{}", human_secs(m)));
            let versus = match (&c.verdict, c.change_percent) {
                (Some(v), Some(change)) => format!("{v} ({change:+.1}%)"),
                _ => String::new(),
            };
            let mut description = c.description.clone();
            if description.len() > 34 {
                description.truncate(33);
                description.push('…');
            }
            let [gbs, gflops, intensity, roof] = &c.rates;
            let _ = writeln!(
                out,
                "  {:<4} {:<10} {:<34} {:<6} {:>10} {:>10} {:>10} {:>8} {:>8} {:>7} {:>9}  {}",
                c.index,
                c.kernel,
                description,
                c.result,
                abs,
                median,
                spread,
                gbs,
                gflops,
                intensity,
                roof,
                versus
            );
            if let Some(text) = &c.above_roof {
                let _ = writeln!(out, "       roofline: {text}");
            }
            if let Some(why) = &c.skipped {
                let _ = writeln!(out, "       skipped: {why}");
                continue;
            }
            let _ = writeln!(
                out,
                "       {} trial(s) passed of {}, {}",
                c.trials.0, c.trials.1, c.expected_from
            );
            if let Some(detail) = &c.detail {
                let _ = writeln!(out, "       {detail}");
            }
        }
        out
    }
}

impl std::fmt::Display for ReplayTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: Vec<CallLine>) -> ReplayTable {
        ReplayTable {
            label: "kernel-cpu-v3".into(),
            ms: 12.0,
            passed: false,
            timing_header: Some("warm, caches as the calls leave them".into()),
            lines,
        }
    }

    #[test]
    fn the_table_shows_every_figure_of_its_lines_after_the_pipe() {
        let timed = CallLine {
            index: 0,
            kernel: "saxpy".into(),
            description: "f32[1024] f32[1024] -> f32[1024]".into(),
            result: "ok".into(),
            max_abs: Some(0.0),
            median: Some(2e-6),
            mad: Some(1e-7),
            verdict: Some("faster".into()),
            change_percent: Some(-12.04),
            rates: ["12.3".into(), "1.02".into(), "0.08".into(), "41%".into()],
            trials: (2, 2),
            expected_from: "vs stored outputs".into(),
            ..CallLine::default()
        };
        let failed = CallLine {
            index: 1,
            kernel: "dot".into(),
            result: "FAIL".into(),
            max_abs: Some(0.5),
            trials: (0, 2),
            detail: Some("FAIL: 3 of 8 elements differ".into()),
            ..CallLine::default()
        };
        let skipped = CallLine {
            index: 2,
            kernel: "old".into(),
            result: "SKIP".into(),
            skipped: Some("recorded for an old signature".into()),
            ..CallLine::default()
        };
        let sent = table(vec![timed, failed, skipped]);
        // What crosses the pipe is the data; the text is made on arrival.
        let json = serde_json::to_string(&sent).unwrap();
        let received: ReplayTable = serde_json::from_str(&json).unwrap();
        assert_eq!(received, sent);
        let text = received.render();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(
            rows[0], "replay of kernel-cpu-v3 (3 calls, 12 ms): FAIL",
            "{text}"
        );
        assert_eq!(rows[1], "  warm, caches as the calls leave them");
        assert!(
            rows[3].contains(" saxpy ") && rows[3].ends_with("faster (-12.0%)"),
            "{text}"
        );
        assert!(
            rows[3].contains("41%") && rows[3].contains("0.00e0"),
            "{text}"
        );
        assert!(rows[4].contains("2 trial(s) passed of 2, vs stored outputs"));
        assert!(
            rows[5].contains(" dot ") && rows[5].contains("5.00e-1"),
            "{text}"
        );
        assert_eq!(rows[7].trim(), "FAIL: 3 of 8 elements differ");
        assert_eq!(rows[9].trim(), "skipped: recorded for an old signature");
        assert_eq!(rows.len(), 10, "a skipped call has no trials line: {text}");
    }
}

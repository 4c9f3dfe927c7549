//! The replay table of several backends served at once (`kiln dev
//! --backends cpu,vulkan`): one row per call, a column per backend (its
//! result against the reference, its median and its verdict against its
//! own previous version: never against another backend), and a column
//! saying whether the backends' outputs agree with each other.

use std::fmt::Write as _;

use crate::workload::cross_compare::CrossCheck;
pub use crate::workload::replay_table::CallLine;
use crate::workload::timing::human_secs;

/// One served backend's column: its label and its replay's lines.
pub struct BackendColumn<'a> {
    pub label: &'a str,
    /// Whether its replay passed; none when it did not replay (its worker
    /// went down or refused: the label is then the version serving now,
    /// restarted on the last good version's code).
    pub passed: Option<bool>,
    pub lines: &'a [CallLine],
}

/// The table: a column per backend, then the agreement of the backends'
/// outputs (`checks`: each other backend against the first).
pub fn table(columns: &[BackendColumn<'_>], checks: &[CrossCheck]) -> String {
    let mut out = String::new();
    let names: Vec<&str> = columns.iter().map(|c| c.label).collect();
    let _ = writeln!(
        out,
        "replay on {} backends: {}",
        columns.len(),
        columns
            .iter()
            .map(|c| {
                let result = match c.passed {
                    Some(true) => "PASS",
                    Some(false) => "FAIL",
                    None => "not replayed",
                };
                format!("{} {result}", c.label)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cell = |l: &CallLine| {
        let mut cell = l.result.clone();
        if let Some(m) = l.median {
            let _ = write!(cell, " {}", human_secs(m));
        }
        if let Some(v) = &l.verdict {
            let _ = write!(cell, " ({v})");
        }
        cell
    };
    let width = columns
        .iter()
        .flat_map(|c| c.lines.iter().map(|l| cell(l).len()))
        .chain(names.iter().map(|n| n.len()))
        .max()
        .unwrap_or(0);
    let kernel_width = columns
        .iter()
        .flat_map(|c| c.lines.iter().map(|l| l.kernel.len()))
        .max()
        .unwrap_or(0)
        .max(6);
    let mut header = format!("  {:<4} {:<kernel_width$}", "#", "kernel");
    for name in &names {
        let _ = write!(header, " | {name:<width$}");
    }
    header.push_str(" | backends agree");
    let _ = writeln!(out, "{header}");
    let rows = columns.iter().map(|c| c.lines.len()).max().unwrap_or(0);
    for i in 0..rows {
        let kernel = columns
            .iter()
            .find_map(|c| c.lines.get(i))
            .map_or("-", |l| l.kernel.as_str());
        let mut row = format!("  {i:<4} {kernel:<kernel_width$}");
        for column in columns {
            let text = column.lines.get(i).map_or(String::new(), cell);
            let _ = write!(row, " | {text:<width$}");
        }
        let agreement: Vec<&str> = checks
            .iter()
            .map(|c| match c.agreement_of(i).and_then(|a| a.agree) {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            })
            .collect();
        let _ = write!(row, " | {}", agreement.join(" "));
        let _ = writeln!(out, "{}", row.trim_end());
    }
    for check in checks {
        let _ = writeln!(out, "  {}", check.describe());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::cross_compare::CallAgreement;

    fn line(index: usize, kernel: &str, result: &str, median: f64) -> CallLine {
        CallLine {
            index,
            kernel: kernel.into(),
            result: result.into(),
            median: Some(median),
            ..CallLine::default()
        }
    }

    #[test]
    fn a_column_per_backend_and_the_agreement_of_their_outputs() {
        let cpu = [line(0, "saxpy", "ok", 1e-4), line(1, "matmul", "ok", 2e-3)];
        let vulkan = [
            line(0, "saxpy", "ok", 3e-3),
            line(1, "matmul", "FAIL", 9e-2),
        ];
        let check = CrossCheck {
            label: "kernel-vulkan-v1".into(),
            against: "kernel-cpu-v2".into(),
            calls: vec![
                CallAgreement {
                    index: 0,
                    kernel: "saxpy".into(),
                    agree: Some(true),
                    max_abs: Some(0.0),
                    summary: "ok".into(),
                },
                CallAgreement {
                    index: 1,
                    kernel: "matmul".into(),
                    agree: Some(false),
                    max_abs: Some(1.0),
                    summary: "FAIL: 3 elements".into(),
                },
            ],
        };
        let text = table(
            &[
                BackendColumn {
                    label: "kernel-cpu-v2",
                    passed: Some(true),
                    lines: &cpu,
                },
                BackendColumn {
                    label: "kernel-vulkan-v1",
                    passed: Some(false),
                    lines: &vulkan,
                },
                BackendColumn {
                    label: "kernel-cuda-v3",
                    passed: None,
                    lines: &[],
                },
            ],
            std::slice::from_ref(&check),
        );
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(
            rows[0],
            "replay on 3 backends: kernel-cpu-v2 PASS, kernel-vulkan-v1 FAIL, kernel-cuda-v3 not \
             replayed",
            "{text}"
        );
        assert!(rows[1].contains("| kernel-cpu-v2") && rows[1].contains("| kernel-vulkan-v1"));
        assert!(
            rows[2].contains("saxpy") && rows[2].ends_with("| yes"),
            "{text}"
        );
        assert!(
            rows[3].contains("FAIL") && rows[3].ends_with("| NO"),
            "{text}"
        );
        assert!(
            text.contains("kernel-vulkan-v1 DISAGREES with kernel-cpu-v2 on 1 of 2"),
            "{text}"
        );
    }
}

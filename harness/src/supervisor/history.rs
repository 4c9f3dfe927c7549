//! The per-session record of versions: what was built, how long it took,
//! whether it passed, and its per-call timings. `kiln dev` writes it after
//! every version; `kiln report` renders it as a table and an SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One version of a module in a session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionRecord {
    pub version: u64,
    pub label: String,
    /// Hash of the module artifact (xxh3-128).
    pub source_hash: String,
    pub build_ms: Option<f64>,
    pub swap_ms: Option<f64>,
    /// Per-call median seconds, by call key (`3:matmul`).
    pub medians: BTreeMap<String, f64>,
    pub passed: bool,
    /// Its worker crashed or hung while running it.
    #[serde(default)]
    pub crashed: bool,
    /// Why it is not serving any more, if it was rolled back or crashed.
    pub note: Option<String>,
    /// Tunables kept by autotuning (`KERNEL/PARAM` -> value).
    #[serde(default)]
    pub tuning: BTreeMap<String, String>,
}

/// A session's history.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    pub module: String,
    pub backend: String,
    pub workload: String,
    pub versions: Vec<VersionRecord>,
}

impl History {
    /// The passing version with the lowest total of per-call medians.
    pub fn best(&self) -> Option<&VersionRecord> {
        self.versions
            .iter()
            .filter(|v| v.passed && !v.medians.is_empty())
            .min_by(|a, b| total(a).total_cmp(&total(b)))
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("partial");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    pub fn load(path: &Path) -> Result<History, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a kiln history: {e}", path.display()))
    }

    /// A table: one row per version, one column per call.
    pub fn table(&self) -> String {
        let keys = self.call_keys();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ({} backend), workload {:?}",
            self.module, self.backend, self.workload
        );
        let _ = write!(
            out,
            "{:<8} {:<6} {:>9} {:>9}",
            "version", "result", "build", "swap"
        );
        for k in &keys {
            let _ = write!(out, " {k:>12}");
        }
        let _ = writeln!(out);
        let best = self.best().map(|b| b.version);
        for v in &self.versions {
            let ms = |x: Option<f64>| x.map_or("-".to_string(), |m| format!("{m:.0} ms"));
            let _ = write!(
                out,
                "{:<8} {:<6} {:>9} {:>9}",
                format!(
                    "v{}{}",
                    v.version,
                    if Some(v.version) == best { "*" } else { "" }
                ),
                if v.crashed {
                    "CRASH"
                } else if v.passed {
                    "pass"
                } else {
                    "FAIL"
                },
                ms(v.build_ms),
                ms(v.swap_ms)
            );
            for k in &keys {
                let cell = v
                    .medians
                    .get(k)
                    .map_or("-".to_string(), |s| crate::workload::timing::human_secs(*s));
                let _ = write!(out, " {cell:>12}");
            }
            let _ = writeln!(out);
        }
        if best.is_some() {
            let _ = writeln!(out, "* best passing version so far");
        }
        out
    }

    fn call_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .versions
            .iter()
            .flat_map(|v| v.medians.keys().cloned())
            .collect();
        keys.sort_by_key(|k| k.split(':').next().and_then(|i| i.parse::<usize>().ok()));
        keys.dedup();
        keys
    }

    /// An SVG line chart of per-call median time by version (log scale).
    pub fn svg(&self) -> String {
        let keys = self.call_keys();
        let (w, h, left, right, top, bottom) = (760.0, 420.0, 70.0, 170.0, 40.0, 50.0);
        let plot_w = w - left - right;
        let plot_h = h - top - bottom;
        let values: Vec<f64> = self
            .versions
            .iter()
            .flat_map(|v| v.medians.values().copied())
            .filter(|s| *s > 0.0)
            .collect();
        let (lo, hi) = values.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
        let (lo, hi) = if values.is_empty() {
            (1e-6, 1.0)
        } else {
            (lo / 1.5, hi * 1.5)
        };
        let n = self.versions.len().max(2) as f64 - 1.0;
        let x = |i: usize| left + plot_w * i as f64 / n;
        let y = |s: f64| top + plot_h * (1.0 - (s.ln() - lo.ln()) / (hi.ln() - lo.ln()));
        let colours = [
            "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        ];
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="22" font-size="15">{} per-call median time by version (log scale)</text>"#,
            xml(&self.module)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
        );
        let mut tick = 10f64.powf(lo.log10().floor());
        while tick <= hi {
            if tick >= lo {
                let _ = writeln!(
                    svg,
                    r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                    left + plot_w,
                    left - 6.0,
                    y(tick) + 4.0,
                    xml(&crate::workload::timing::human_secs(tick)),
                    y = y(tick)
                );
            }
            tick *= 10.0;
        }
        for (i, v) in self.versions.iter().enumerate() {
            let colour = if v.passed { "#333" } else { "#d62728" };
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle" fill="{colour}">v{}</text>"#,
                x(i),
                top + plot_h + 18.0,
                v.version
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">version (red: failed replay)</text>"#,
            left + plot_w / 2.0,
            h - 10.0
        );
        for (k, key) in keys.iter().enumerate() {
            let colour = colours[k % colours.len()];
            let points: Vec<String> = self
                .versions
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    v.medians
                        .get(key)
                        .map(|s| format!("{:.1},{:.1}", x(i), y(*s)))
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            for p in &points {
                let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{px}" cy="{py}" r="3" fill="{colour}"/>"#
                );
            }
            let ly = top + 14.0 + 18.0 * k as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
                left + plot_w + 12.0,
                ly - 10.0,
                left + plot_w + 30.0,
                ly,
                xml(key)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn total(v: &VersionRecord) -> f64 {
    v.medians.values().sum()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Where a session's history is kept: `<target>/kiln/history/<module>.json`
/// (the latest session of each module).
pub fn default_path(target_dir: &Path, module: &str) -> PathBuf {
    target_dir
        .join("kiln")
        .join("history")
        .join(format!("{module}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, passed: bool, ms: f64) -> VersionRecord {
        VersionRecord {
            version,
            label: format!("m-v{version}"),
            source_hash: "h".into(),
            build_ms: Some(500.0),
            swap_ms: Some(3.0),
            medians: [
                ("0:saxpy".to_string(), ms / 1e3),
                ("1:matmul".to_string(), ms / 1e2),
            ]
            .into(),
            passed,
            crashed: false,
            note: None,
            tuning: Default::default(),
        }
    }

    #[test]
    fn best_is_the_fastest_passing_version() {
        let h = History {
            module: "kernel-cpu".into(),
            backend: "cpu".into(),
            workload: "default".into(),
            versions: vec![
                record(1, true, 5.0),
                record(2, false, 1.0),
                record(3, true, 4.0),
                record(4, true, 6.0),
            ],
        };
        assert_eq!(h.best().unwrap().version, 3);
        let table = h.table();
        assert!(table.contains("v3*"), "{table}");
        assert!(table.contains("FAIL"), "{table}");
        let svg = h.svg();
        assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("1:matmul"));
        let dir = std::env::temp_dir().join(format!("kiln-history-{}", std::process::id()));
        let path = dir.join("h.json");
        h.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), h);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! The per-session record of versions: what was built, how long it took,
//! whether it passed, and its per-call timings. `kiln dev` writes it after
//! every version; `kiln report` renders it as a table and an SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::machine::recorded::{CallRate, RateBasis};
use crate::workload::timing::Ratio;

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
    /// Per-call achieved GB/s, GFLOP/s and % of the roofline bound, by
    /// call key (absent in histories written before rates were kept).
    #[serde(default)]
    pub rates: BTreeMap<String, CallRate>,
    /// Warm or cold caches, and the peaks the rates were judged against.
    #[serde(default)]
    pub basis: Option<RateBasis>,
    /// Per-call median over the previous version's with its 95% interval
    /// and how the previous one was timed (interleaved, or its recorded
    /// timings), by call key: what the verdict looked at (absent in
    /// histories written before ratios were kept, and for a version with
    /// nothing to compare with).
    #[serde(default)]
    pub ratios: BTreeMap<String, Ratio>,
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
        self.rates_table(&mut out, &keys);
        out
    }

    /// The achieved rate and % of the roofline bound of each call by
    /// version, and what they were judged against (nothing when no version
    /// kept rates).
    fn rates_table(&self, out: &mut String, keys: &[String]) {
        if self.versions.iter().all(|v| v.rates.is_empty()) {
            return;
        }
        let _ = writeln!(
            out,
            "\nachieved rate per call (% of the roofline bound, then GB/s or GFLOP/s by the bound)"
        );
        let _ = write!(out, "{:<8} {:<6}", "version", "caches");
        for k in keys {
            let _ = write!(out, " {k:>20}");
        }
        let _ = writeln!(out);
        let mut bases: Vec<(String, Vec<u64>)> = Vec::new();
        for v in self.versions.iter().filter(|v| !v.rates.is_empty()) {
            let caches = match &v.basis {
                Some(b) if b.cold => "cold",
                Some(_) => "warm",
                None => "-",
            };
            let _ = write!(out, "{:<8} {caches:<6}", format!("v{}", v.version));
            for k in keys {
                let cell = v.rates.get(k).map_or("-".to_string(), CallRate::cell);
                let _ = write!(out, " {cell:>20}");
            }
            let _ = writeln!(out);
            if let Some(b) = &v.basis {
                let text = b.describe();
                match bases.iter_mut().find(|(t, _)| *t == text) {
                    Some((_, versions)) => versions.push(v.version),
                    None => bases.push((text, vec![v.version])),
                }
            }
        }
        for (text, versions) in bases {
            let list: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
            let _ = writeln!(out, "{}: {text}", list.join(" "));
        }
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

    /// An SVG chart by version, one line per call: the median time (log
    /// scale) and, below it when rates were kept, the percentage of the
    /// roofline bound (or, without peaks, the achieved rate, log scale).
    pub fn svg(&self) -> String {
        let keys = self.call_keys();
        let with_rates = self.versions.iter().any(|v| !v.rates.is_empty());
        let panel_h = 380.0;
        let h = if with_rates {
            2.0 * panel_h + 40.0
        } else {
            panel_h + 40.0
        };
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let time = Panel {
            top: 40.0,
            height: panel_h - 70.0,
            title: format!(
                "{} per-call median time by version (log scale)",
                self.module
            ),
            log: true,
            label: crate::workload::timing::human_secs,
        };
        self.panel(&mut svg, &keys, &time, |v, k| v.medians.get(k).copied());
        if with_rates {
            let percent = self
                .versions
                .iter()
                .any(|v| v.rates.values().any(|r| r.percent.is_some()));
            let basis = self
                .versions
                .iter()
                .rev()
                .find_map(|v| v.basis.as_ref())
                .map_or(String::new(), |b| format!(" ({})", b.describe()));
            let top = panel_h + 40.0;
            if percent {
                let rates = Panel {
                    top,
                    height: panel_h - 70.0,
                    title: format!("% of the roofline bound by version{basis}"),
                    log: false,
                    label: |p| format!("{p:.0}%"),
                };
                self.panel(&mut svg, &keys, &rates, |v, k| {
                    v.rates.get(k).and_then(|r| r.percent)
                });
            } else {
                let rates = Panel {
                    top,
                    height: panel_h - 70.0,
                    title: format!("achieved GB/s or GFLOP/s by version (log scale){basis}"),
                    log: true,
                    label: crate::machine::columns::rate,
                };
                self.panel(&mut svg, &keys, &rates, |v, k| {
                    v.rates.get(k).and_then(|r| r.headline()).map(|(x, _)| x)
                });
            }
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// One panel of the chart: a line per call key of `value` by version.
    fn panel(
        &self,
        svg: &mut String,
        keys: &[String],
        panel: &Panel,
        value: impl Fn(&VersionRecord, &str) -> Option<f64>,
    ) {
        let (left, right) = (70.0, 170.0);
        let (top, plot_h) = (panel.top, panel.height);
        let plot_w = CHART_W - left - right;
        let values: Vec<f64> = self
            .versions
            .iter()
            .flat_map(|v| keys.iter().filter_map(|k| value(v, k)))
            .filter(|s| s.is_finite() && (*s > 0.0 || !panel.log))
            .collect();
        let (lo, hi) = values.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
        let (lo, hi) = match (values.is_empty(), panel.log) {
            (true, true) => (1e-6, 1.0),
            (true, false) => (0.0, 100.0),
            (false, true) => (lo / 1.5, hi * 1.5),
            // Percentages from 0, and 100% always in view.
            (false, false) => (0.0, hi.max(100.0) * 1.1),
        };
        let n = self.versions.len().max(2) as f64 - 1.0;
        let x = |i: usize| left + plot_w * i as f64 / n;
        let y = |s: f64| {
            let f = if panel.log {
                (s.ln() - lo.ln()) / (hi.ln() - lo.ln())
            } else {
                (s - lo) / (hi - lo)
            };
            top + plot_h * (1.0 - f)
        };
        let colours = [
            "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        ];
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="{}" font-size="15">{}</text>"#,
            top - 18.0,
            xml(&panel.title)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
        );
        let ticks: Vec<f64> = if panel.log {
            let mut t = 10f64.powf(lo.log10().floor());
            let mut out = Vec::new();
            while t <= hi {
                if t >= lo {
                    out.push(t);
                }
                t *= 10.0;
            }
            out
        } else {
            let step = if hi > 250.0 { 50.0 } else { 25.0 };
            (0..)
                .map(|i| i as f64 * step)
                .take_while(|t| *t <= hi)
                .collect()
        };
        for tick in ticks {
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + plot_w,
                left - 6.0,
                y(tick) + 4.0,
                xml(&(panel.label)(tick)),
                y = y(tick)
            );
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
            top + plot_h + 36.0
        );
        for (k, key) in keys.iter().enumerate() {
            let colour = colours[k % colours.len()];
            let points: Vec<String> = self
                .versions
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    value(v, key)
                        .filter(|s| s.is_finite() && (*s > 0.0 || !panel.log))
                        .map(|s| format!("{:.1},{:.1}", x(i), y(s)))
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
    }
}

const CHART_W: f64 = 760.0;

/// One panel of the chart.
struct Panel {
    top: f64,
    height: f64,
    title: String,
    log: bool,
    label: fn(f64) -> String,
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

/// How many earlier sessions' histories are kept per module.
pub const EARLIER_KEPT: usize = 10;

/// The earlier sessions' histories kept next to `path`
/// (`MODULE.session-NNNN.json`), oldest first.
pub fn earlier(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem().and_then(|s| s.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{stem}.session-");
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n = name
                .strip_prefix(&prefix)?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((n, dir.join(name)))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Moves the history at `path` (an earlier session's) aside as the next
/// `MODULE.session-NNNN.json`, so a new session does not overwrite it, and
/// removes the oldest beyond [`EARLIER_KEPT`]; returns where it went
/// (`None`: there was none).
pub fn keep_earlier(path: &Path) -> std::io::Result<Option<PathBuf>> {
    if !path.exists() {
        return Ok(None);
    }
    let kept = earlier(path);
    let next = kept
        .last()
        .and_then(|p| {
            p.file_stem()?
                .to_str()?
                .rsplit_once(".session-")?
                .1
                .parse::<u64>()
                .ok()
        })
        .map_or(1, |n| n + 1);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("history");
    let to = path.with_file_name(format!("{stem}.session-{next:04}.json"));
    std::fs::rename(path, &to)?;
    let all = earlier(path);
    for old in &all[..all.len().saturating_sub(EARLIER_KEPT)] {
        let _ = std::fs::remove_file(old);
    }
    Ok(Some(to))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_earlier_session_is_kept_aside_and_only_the_newest_ten() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path(dir.path(), "kernel-cpu");
        assert_eq!(keep_earlier(&path).unwrap(), None, "nothing to keep");
        let session = |n: u64| History {
            module: "kernel-cpu".into(),
            backend: "cpu".into(),
            workload: format!("session {n}"),
            versions: Vec::new(),
        };
        for n in 1..=12 {
            session(n).save(&path).unwrap();
            let kept = keep_earlier(&path).unwrap().expect("kept");
            assert!(!path.exists());
            assert_eq!(
                History::load(&kept).unwrap().workload,
                format!("session {n}")
            );
        }
        let kept = earlier(&path);
        assert_eq!(kept.len(), EARLIER_KEPT);
        let oldest = History::load(&kept[0]).unwrap();
        let newest = History::load(kept.last().unwrap()).unwrap();
        assert_eq!(
            (oldest.workload.as_str(), newest.workload.as_str()),
            ("session 3", "session 12")
        );
    }

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
            rates: Default::default(),
            basis: None,
            ratios: Default::default(),
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

    /// A version record with rates: saxpy at `percent`% of a 10 GB/s roof
    /// (memory-bound), matmul at `percent`/2 % of a 100 GFLOP/s one.
    fn with_rates(version: u64, ms: f64, percent: f64, cold: bool) -> VersionRecord {
        let mut r = record(version, true, ms);
        r.rates = [
            (
                "0:saxpy".to_string(),
                CallRate {
                    gbs: Some(percent / 10.0),
                    gflops: Some(percent / 80.0),
                    intensity: Some(0.125),
                    percent: Some(percent),
                    bound: Some("memory".into()),
                },
            ),
            (
                "1:matmul".to_string(),
                CallRate {
                    gbs: Some(1.0),
                    gflops: Some(percent / 2.0),
                    intensity: Some(40.0),
                    percent: Some(percent / 2.0),
                    bound: Some("compute".into()),
                },
            ),
        ]
        .into();
        r.basis = Some(RateBasis {
            cold,
            bandwidth_gbs: Some(10.0),
            compute_gflops: Some(100.0),
            device: Some("Test CPU, 2 threads".into()),
        });
        r
    }

    #[test]
    fn rates_are_kept_shown_and_charted_per_version() {
        let h = History {
            module: "kernel-cpu".into(),
            backend: "cpu".into(),
            workload: "default".into(),
            versions: vec![
                with_rates(1, 5.0, 60.0, true),
                record(2, false, 9.0),
                with_rates(3, 4.0, 130.0, true),
            ],
        };
        let table = h.table();
        println!("{table}");
        // Both versions' cells: % of the roof, then the bound's rate.
        assert!(table.contains("60% 6.00 GB/s"), "{table}");
        assert!(table.contains("30% 30.0 GFLOP/s"), "{table}");
        assert!(table.contains("130% 13.0 GB/s"), "{table}");
        assert!(table.contains("65% 65.0 GFLOP/s"), "{table}");
        assert!(table.contains("cold"), "{table}");
        assert!(
            table.contains(
                "v1 v3: cold caches; roofline 10.0 GB/s, 100 GFLOP/s (Test CPU, 2 threads)"
            ),
            "{table}"
        );
        // The chart: a time panel and a % of roofline panel, each with a
        // line per call; the % axis goes past 130 (never capped at 100).
        let svg = h.svg();
        assert!(svg.contains("% of the roofline bound"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        assert!(svg.contains(">125%<"), "{svg}");
        // Saved and read back with the rates.
        let dir = std::env::temp_dir().join(format!("kiln-history-rates-{}", std::process::id()));
        let path = dir.join("h.json");
        h.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), h);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_history_written_before_rates_were_kept_still_reads() {
        let old = r#"{"module":"kernel-cpu","backend":"cpu","workload":"default","versions":[
            {"version":1,"label":"kernel-cpu-v1","source_hash":"h","build_ms":900.0,"swap_ms":2.0,
             "medians":{"0:saxpy":0.001},"passed":true,"note":null}]}"#;
        let h: History = serde_json::from_str(old).unwrap();
        assert!(h.versions[0].rates.is_empty() && h.versions[0].basis.is_none());
        assert!(h.versions[0].ratios.is_empty());
        let table = h.table();
        assert!(!table.contains("achieved rate"), "{table}");
        assert_eq!(h.svg().matches("<polyline").count(), 1);
    }
}

//! The per-session record of versions: what was built, how long it took,
//! whether it passed, and its per-call timings. `kiln dev` writes it after
//! every version; `kiln report` renders it as a table and an SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chart::document::{Anchor, Svg, wrap};
use crate::chart::frame::{BELOW, Frame, Outcome, VersionMark};
use crate::chart::legend::{Entry, Swatch, legend};
use crate::chart::ratios::{LEGEND_W, PALETTE, RatioChart, RatioPoint, RatioSeries};
use crate::chart::roofline::{RoofDot, RooflineChart, Roofs};
use crate::chart::ticks::{Axis, Scale};
use crate::events::{Roofline, RooflinePoint};
use crate::machine::recorded::{CallRate, RateBasis};
use crate::workload::timing::{Against, Ratio};

/// One version of a module in a session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionRecord {
    pub version: u64,
    pub label: String,
    /// Hash of what the version serves: its library, declarations and
    /// sources together (`Staged::version_hash`; a shader edit changes it,
    /// the library alone would not).
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

impl VersionRecord {
    /// How the version ended: a hang (its worker killed at the deadline)
    /// is recorded as a crash whose note says "hung: ...".
    pub fn outcome(&self) -> Outcome {
        match (self.crashed, self.passed) {
            (true, _) if self.note.as_deref().is_some_and(|n| n.starts_with("hung")) => {
                Outcome::Hung
            }
            (true, _) => Outcome::Crashed,
            (false, true) => Outcome::Passed,
            (false, false) => Outcome::Failed,
        }
    }
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
    /// How many versions it records, as the log says it: "1 version",
    /// "3 versions".
    pub fn versions_recorded(&self) -> String {
        match self.versions.len() {
            1 => "1 version".to_string(),
            n => format!("{n} versions"),
        }
    }

    /// The passing version with the lowest total of per-call medians over
    /// the calls the newest passing version timed, among those that timed
    /// every one of them: a version that skipped a call (its kernel not
    /// written yet) or ran an older, shorter workload is not faster for
    /// it.
    pub fn best(&self) -> Option<&VersionRecord> {
        let passing = || {
            self.versions
                .iter()
                .filter(|v| v.passed && !v.medians.is_empty())
        };
        let calls = &passing().next_back()?.medians;
        let over = |v: &VersionRecord| -> Option<f64> {
            calls.keys().map(|k| v.medians.get(k).copied()).sum()
        };
        passing()
            .filter_map(|v| over(v).map(|t| (v, t)))
            .min_by(|(_, a), (_, b)| a.total_cmp(b))
            .map(|(v, _)| v)
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
                match v.outcome() {
                    Outcome::Crashed => "CRASH",
                    Outcome::Hung => "HUNG",
                    Outcome::Passed => "pass",
                    Outcome::Failed => "FAIL",
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

    /// How each version ended, for the charts.
    fn marks(&self) -> Vec<VersionMark> {
        self.versions
            .iter()
            .map(|v| VersionMark {
                version: v.version,
                outcome: v.outcome(),
            })
            .collect()
    }

    /// The ratio chart's data: per call, each version's ratio to the
    /// previous version with its interval.
    pub fn ratio_chart(&self) -> RatioChart {
        RatioChart {
            title: format!(
                "{}: each call's time over the previous version's (log scale; below 1x: faster)",
                self.module
            ),
            versions: self.marks(),
            series: self
                .call_keys()
                .into_iter()
                .map(|key| RatioSeries {
                    points: self
                        .versions
                        .iter()
                        .filter_map(|v| {
                            let r = v.ratios.get(&key)?;
                            Some(RatioPoint {
                                version: v.version,
                                ratio: r.ratio,
                                low: r.low,
                                high: r.high,
                                interleaved: r.against == Against::Interleaved,
                            })
                        })
                        .collect(),
                    name: key,
                })
                .collect(),
        }
    }

    /// The roofline of the last version that kept rates, with arrows from
    /// the one before it that kept rates; the roofs from its basis's
    /// peaks. `None` when no version kept rates.
    pub fn roofline_chart(&self) -> Option<RooflineChart> {
        let mut timed = self.versions.iter().rev().filter(|v| !v.rates.is_empty());
        let last = timed.next()?;
        let order = self.call_keys();
        let dots = |v: &VersionRecord| -> Vec<RoofDot> {
            // In call order (`2:matmul` before `10:dot_i8`).
            order
                .iter()
                .filter_map(|key| Some((key, v.rates.get(key)?)))
                .filter_map(|(key, r)| {
                    Some(RoofDot {
                        call: key.clone(),
                        dims: None,
                        intensity: r.intensity?,
                        gflops: r.gflops?,
                        gbs: r.gbs,
                        ms: v.medians.get(key).map(|s| s * 1e3),
                        percent: r.percent,
                        bound: r.bound.clone(),
                        compute: r.compute.clone(),
                    })
                })
                .collect()
        };
        let basis = last.basis.clone().unwrap_or_default();
        Some(RooflineChart {
            title: format!(
                "{} v{} on the roofline ({})",
                self.module,
                last.version,
                basis.describe()
            ),
            roofs: Roofs {
                gbs: basis.bandwidth_gbs,
                gflops: basis.compute_gflops,
                i8_gops: basis.compute_i8_gops,
            },
            version: last.version,
            dots: dots(last),
            previous: timed.next().map(|v| (v.version, dots(v))),
        })
    }

    /// Every version as the events a live session logged for it (JSON
    /// lines, oldest first): a `replay` per call with its ratio, a
    /// `roofline` from its kept rates and peaks, `replay_failed`, `crashed`
    /// or `hung` where it ended so; what `kiln report --ui` serves the
    /// page from, so its charts are the live page's.
    pub fn events(&self) -> Vec<String> {
        self.versions
            .iter()
            .flat_map(|v| version_events(&self.module, v))
            .collect()
    }

    /// An SVG chart by version: each call's time over the previous
    /// version's with its interval (never absolute times: a slow spell of
    /// the machine is not every call regressing), failed, crashed and hung
    /// versions shaded; below it when rates were kept, each call's % of the
    /// roofline bound (or, without peaks, its achieved rate, log scale).
    pub fn svg(&self) -> String {
        let ratios = self.ratio_chart();
        let with_rates = self.versions.iter().any(|v| !v.rates.is_empty());
        let ratio_h = ratios.height(CHART_W);
        let rates_h = if with_rates {
            self.rates_title_lines().len() as f64 * 18.0 + 14.0 + RATES_H + BELOW + 8.0
        } else {
            0.0
        };
        let mut svg = Svg::new(CHART_W, ratio_h + rates_h);
        let bottom = ratios.draw(&mut svg, 0.0);
        if with_rates {
            self.rates_panel(&mut svg, bottom);
        }
        svg.finish()
    }

    /// The rates panel's title, wrapped.
    fn rates_title_lines(&self) -> Vec<String> {
        let basis = self
            .versions
            .iter()
            .rev()
            .find_map(|v| v.basis.as_ref())
            .map_or(String::new(), |b| format!(" ({})", b.describe()));
        let title = if self.any_percent() {
            format!("% of the roofline bound by version{basis}")
        } else {
            format!("achieved GB/s or GFLOP/s by version (log scale){basis}")
        };
        wrap(&title, 14.0, CHART_W - 16.0)
    }

    fn any_percent(&self) -> bool {
        self.versions
            .iter()
            .any(|v| v.rates.values().any(|r| r.percent.is_some()))
    }

    /// The rates panel from `top`: a line per call across versions.
    fn rates_panel(&self, svg: &mut Svg, top: f64) {
        let lines = self.rates_title_lines();
        for (i, line) in lines.iter().enumerate() {
            let y = top + 18.0 + 18.0 * i as f64;
            svg.text(8.0, y, 14.0, Anchor::Start, line, r#" font-weight="bold""#);
        }
        let frame = Frame {
            left: 64.0,
            top: top + lines.len() as f64 * 18.0 + 14.0,
            width: CHART_W - 64.0 - LEGEND_W - 16.0,
            height: RATES_H,
        };
        let percent = self.any_percent();
        let value = |v: &VersionRecord, k: &str| -> Option<f64> {
            let r = v.rates.get(k)?;
            let x = if percent {
                r.percent
            } else {
                r.headline().map(|(x, _)| x)
            };
            x.filter(|x| x.is_finite() && (percent || *x > 0.0))
        };
        let keys = self.call_keys();
        let values = self
            .versions
            .iter()
            .flat_map(|v| keys.iter().filter_map(|k| value(v, k)));
        let axis = if percent {
            // From 0, with 100% always in view (never capped at it).
            let hi = values.fold(100.0f64, f64::max) * 1.1;
            Axis::new(0.0, hi, Scale::Linear)
        } else {
            Axis::fit(values, Scale::Log)
                .unwrap_or_else(|| Axis::new(1.0, 10.0, Scale::Log))
                .padded(0.08)
        };
        let marks = self.marks();
        frame.shade_failures(svg, &marks);
        let label: fn(f64) -> String = if percent {
            |p| format!("{}%", crate::chart::ticks::label(p))
        } else {
            crate::machine::columns::rate
        };
        frame.y_axis(svg, &axis, &label);
        let n = marks.len();
        let mut entries = Vec::new();
        for (k, key) in keys.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            let points: Vec<(f64, f64)> = self
                .versions
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((frame.slot_x(i, n), frame.y(&axis, value(v, key)?))))
                .collect();
            svg.polyline(&points, colour, r#" stroke-width="2""#);
            for p in &points {
                svg.circle(*p, 3.0, &format!(r#" fill="{colour}""#), None);
            }
            entries.push(Entry {
                swatch: Swatch::Line(colour.into()),
                text: key.clone(),
            });
        }
        frame.versions(svg, &marks);
        legend(
            svg,
            (frame.right() + 16.0, frame.top),
            (LEGEND_W - 8.0, frame.height + BELOW - 8.0),
            &entries,
        );
    }
}

/// A kiln event's JSON line: `fields` with its `event` name, a message for
/// the log.
fn line(event: &str, message: String, mut fields: serde_json::Value) -> String {
    fields["event"] = event.into();
    fields["message"] = message.into();
    fields["timestamp"] = "history".into();
    fields.to_string()
}

/// `3:matmul` -> (3, `matmul`).
fn split_key(key: &str) -> Option<(u64, &str)> {
    let (call, kernel) = key.split_once(':')?;
    Some((call.parse().ok()?, kernel))
}

/// The events of one version.
fn version_events(module: &str, v: &VersionRecord) -> Vec<String> {
    let mut lines = Vec::new();
    let version = v.version;
    for (key, median) in &v.medians {
        let Some((call, kernel)) = split_key(key) else {
            continue;
        };
        let mut fields = serde_json::json!({
            "module": module, "version": version, "call": call, "kernel": kernel,
            "pass": v.passed, "ms": median * 1e3,
        });
        let mut message = format!("v{version} {key}: {:.3} ms", median * 1e3);
        if let Some(r) = v.ratios.get(key) {
            fields["ratio"] = r.ratio.into();
            fields["ratio_low"] = r.low.into();
            fields["ratio_high"] = r.high.into();
            fields["ratio_against"] = r.against.as_str().into();
            message.push_str(&format!(
                ", x{:.3} [{:.3}, {:.3}] the previous version",
                r.ratio, r.low, r.high
            ));
        }
        lines.push(line("replay", message, fields));
    }
    let note = v.note.clone().unwrap_or_default();
    if v.crashed {
        let kind = if note.starts_with("hung") {
            "hung"
        } else {
            "crashed"
        };
        let fields = serde_json::json!({"module": module, "version": version, "last_words": ""});
        lines.push(line(kind, format!("v{version}: {note}"), fields));
    } else if !v.passed {
        let fields = serde_json::json!({"module": module, "version": version});
        lines.push(line(
            "replay_failed",
            format!("v{version} failed its replay {note}"),
            fields,
        ));
    }
    if let Some(roofline) = roofline(module, v)
        && let Ok(fields) = serde_json::to_value(&roofline)
    {
        let message = format!("roofline of v{version}: {} call(s)", roofline.calls.len());
        lines.push(line("roofline", message, fields));
    }
    lines
}

/// A version's `roofline` event from its kept rates and peaks.
fn roofline(module: &str, v: &VersionRecord) -> Option<Roofline> {
    let mut calls: Vec<RooflinePoint> = v
        .rates
        .iter()
        .filter_map(|(key, r)| {
            let (call, kernel) = split_key(key)?;
            Some(RooflinePoint {
                call,
                kernel: kernel.to_string(),
                dims: String::new(),
                ms: v.medians.get(key)? * 1e3,
                gflops: r.gflops,
                gbs: r.gbs,
                intensity: r.intensity,
                percent: r.percent,
                compute: r.compute.clone().unwrap_or_else(|| "f32".into()),
                bound: r.bound.clone().unwrap_or_else(|| "memory".into()),
            })
        })
        .collect();
    if calls.is_empty() {
        return None;
    }
    calls.sort_by_key(|c| c.call);
    let basis = v.basis.clone().unwrap_or_default();
    Some(Roofline {
        module: module.to_string(),
        version: v.version,
        roof_gbs: basis.bandwidth_gbs,
        roof_gflops: basis.compute_gflops,
        roof_i8_gops: basis.compute_i8_gops,
        calls,
    })
}

const CHART_W: f64 = 760.0;
/// The rates panel's data area's height.
const RATES_H: f64 = 240.0;

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
    use crate::chart::bounds::text_outside;

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
        // A version that timed fewer calls (a kernel it did not implement
        // yet, skipped) is not the best for it: only versions that timed
        // every call the newest passing one did are compared.
        let mut fewer = h.clone();
        fewer.versions[0].medians.remove("1:matmul");
        fewer.versions[0].medians.insert("0:saxpy".into(), 0.0001);
        assert_eq!(fewer.best().unwrap().version, 3);
        // Once the newest passing version times fewer calls, the others
        // are compared over those.
        let mut newest_fewer = h.clone();
        newest_fewer.versions[3].medians.remove("1:matmul");
        newest_fewer.versions[0]
            .medians
            .insert("0:saxpy".into(), 0.0001);
        assert_eq!(newest_fewer.best().unwrap().version, 1);
        let table = h.table();
        assert!(table.contains("v3*"), "{table}");
        assert!(table.contains("FAIL"), "{table}");
        let svg = h.svg();
        assert!(svg.starts_with("<svg") && svg.contains("1:matmul"), "{svg}");
        assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
        let dir = std::env::temp_dir().join(format!("kiln-history-{}", std::process::id()));
        let path = dir.join("h.json");
        h.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), h);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The table names each way a version ended as the charts do: a hang
    /// (recorded as a crash whose note says "hung") is HUNG, not CRASH.
    #[test]
    fn the_table_tells_a_hang_from_a_crash() {
        let mut crashed = record(2, false, 1.0);
        crashed.crashed = true;
        crashed.note = Some("crashed: killed by SIGSEGV during call 1 (saxpy)".into());
        let mut hung = record(3, false, 1.0);
        hung.crashed = true;
        hung.note = Some("hung: past its 10.0 s deadline during call 1 (saxpy)".into());
        let h = History {
            module: "kernel-cpu".into(),
            backend: "cpu".into(),
            workload: "default".into(),
            versions: vec![record(1, true, 5.0), crashed, hung],
        };
        let table = h.table();
        let row = |v: &str| {
            table
                .lines()
                .find(|l| l.starts_with(v))
                .unwrap_or_else(|| panic!("no row {v}: {table}"))
                .to_string()
        };
        assert!(row("v2 ").contains("CRASH"), "{table}");
        assert!(row("v3 ").contains("HUNG"), "{table}");
        assert!(!row("v3 ").contains("CRASH"), "{table}");
        assert_eq!(h.versions[2].outcome(), Outcome::Hung);
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
                    compute: Some("f32".into()),
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
                    compute: Some("f32".into()),
                },
            ),
        ]
        .into();
        r.basis = Some(RateBasis {
            cold,
            bandwidth_gbs: Some(10.0),
            compute_gflops: Some(100.0),
            compute_i8_gops: None,
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
        // The chart: the ratio panel (no ratios kept here) and a % of
        // roofline panel with a line per call; the % axis goes past 130
        // (never capped at 100); the long title wraps inside the image.
        let svg = h.svg();
        assert!(svg.contains("% of the roofline bound"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains(">125%<"), "{svg}");
        assert!(svg.contains(">failed<"), "v2 failed: {svg}");
        assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
        // The roofline: v3's two calls, arrows from v1's (v2 kept none).
        let roofline = h.roofline_chart().expect("rates kept");
        assert_eq!(roofline.version, 3);
        assert_eq!(roofline.previous.as_ref().map(|p| p.0), Some(1));
        let plot = roofline.svg(760.0);
        assert_eq!(plot.matches(r#"class="arrow""#).count(), 2, "{plot}");
        assert!(plot.contains(r#"data-gbs="10" data-peak="100""#), "{plot}");
        assert!(plot.contains("dot above"), "v3's saxpy at 130%: {plot}");
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
        assert!(h.roofline_chart().is_none());
        let table = h.table();
        assert!(!table.contains("achieved rate"), "{table}");
        let svg = h.svg();
        assert!(
            svg.contains("no ratio yet") && !svg.contains("<polyline"),
            "{svg}"
        );
    }

    /// Ratios are kept, read back and charted: a dot per call and version
    /// with a previous one, crashed and hung versions named, every text
    /// inside the image with many versions, long call names and a long
    /// basis, and the rates panel's log axis has three labelled ticks
    /// within one decade.
    #[test]
    fn ratios_are_kept_and_charted_with_every_text_inside() {
        let ratio = |r: f64, against| Ratio {
            ratio: r,
            low: r * 0.97,
            high: r / 0.97,
            against,
        };
        let mut versions = Vec::new();
        for v in 1..=30u64 {
            let mut r = with_rates(v, 5.0, 60.0 + v as f64, v % 2 == 0);
            if v > 1 {
                r.ratios = [
                    ("0:saxpy".to_string(), ratio(1.0, Against::Interleaved)),
                    ("1:matmul".to_string(), ratio(0.8, Against::Recorded)),
                ]
                .into();
            }
            if v == 7 {
                r.crashed = true;
                r.passed = false;
                r.note = Some("hung: past its 10.0 s deadline, killed".into());
            }
            if v == 9 {
                r.crashed = true;
                r.passed = false;
                r.note = Some("crashed: SIGSEGV".into());
            }
            versions.push(r);
        }
        let h = History {
            module: "kernel-cpu-with-a-long-module-name".into(),
            backend: "cpu".into(),
            workload: "default".into(),
            versions,
        };
        let svg = h.svg();
        assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
        assert_eq!(svg.matches(r#"class="ratio""#).count(), 2 * 29, "{svg}");
        assert!(
            svg.contains("x0.800 [0.776, 0.825] (against recorded timings)"),
            "{svg}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        h.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), h);
        // Rates without peaks: a log axis over less than a decade.
        let mut no_peaks = h.clone();
        for v in &mut no_peaks.versions {
            for r in v.rates.values_mut() {
                r.percent = None;
            }
        }
        let svg = no_peaks.svg();
        assert!(svg.contains("achieved GB/s or GFLOP/s"), "{svg}");
        assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
    }

    #[test]
    fn a_history_reads_as_the_events_the_page_draws_from() {
        let version_of = |v: u64, passed: bool, crashed: bool| VersionRecord {
            version: v,
            label: format!("kernel-cpu-v{v}"),
            source_hash: "h".into(),
            build_ms: None,
            swap_ms: None,
            medians: [("0:saxpy".to_string(), 1e-3)].into(),
            passed,
            crashed,
            note: crashed.then(|| "hung: past its deadline".to_string()),
            tuning: Default::default(),
            rates: [(
                "0:saxpy".to_string(),
                CallRate {
                    gbs: Some(10.0),
                    gflops: Some(1.0),
                    intensity: Some(0.1),
                    percent: Some(50.0),
                    bound: Some("memory".into()),
                    compute: Some("f32".into()),
                },
            )]
            .into(),
            basis: Some(RateBasis {
                cold: false,
                bandwidth_gbs: Some(20.0),
                compute_gflops: Some(200.0),
                compute_i8_gops: None,
                device: None,
            }),
            ratios: if v > 1 {
                let r = Ratio {
                    ratio: 0.9,
                    low: 0.8,
                    high: 1.0,
                    against: Against::Interleaved,
                };
                [("0:saxpy".to_string(), r)].into()
            } else {
                Default::default()
            },
        };
        let history = History {
            module: "kernel-cpu".into(),
            backend: "cpu".into(),
            workload: "default".into(),
            versions: vec![
                version_of(1, true, false),
                version_of(2, true, false),
                version_of(3, false, true),
            ],
        };
        let lines = history.events();
        let ratios = crate::ui::ratios::charts(&lines, 760.0);
        assert_eq!(ratios.matches(r#"class="ratio""#).count(), 2, "{ratios}");
        assert!(ratios.contains(">hung<"), "{ratios}");
        let plot = crate::ui::roofline::charts(&lines, 760.0);
        assert!(plot.contains("<title>v3 call 0:saxpy"), "{plot}");
        assert_eq!(plot.matches(r#"class="arrow""#).count(), 1, "{plot}");
        assert!(plot.contains(r#"data-gbs="20" data-peak="200""#), "{plot}");
    }
}

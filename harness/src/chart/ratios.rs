//! The chart of each call's time relative to the previous version, by
//! version: a dot at the ratio (below 1: faster) with its 95% interval as a
//! bar, on a log scale around 1, a colour per call; hollow where the
//! previous version was not alive to be timed interleaved (its recorded
//! timings: the machine's drift is in the ratio). Versions that failed,
//! crashed or hung are shaded and named. Not absolute times: a slow spell
//! of the machine slows both versions of an interleaved comparison alike
//! and draws as ratios near 1, not as every call regressing. `kiln report`
//! and the live page draw it from the same code.

use super::document::{Svg, title_height};
use super::frame::{BELOW, Frame, Outcome, VersionMark};
use super::legend::{Entry, Swatch, legend};
use super::ticks::{Axis, Scale, label};

/// A colour per series, in order.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One call of one version against the previous version.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatioPoint {
    pub version: u64,
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
    /// Timed interleaved with the previous version (else against its
    /// recorded timings).
    pub interleaved: bool,
}

/// One call across versions.
#[derive(Clone, Debug, PartialEq)]
pub struct RatioSeries {
    pub name: String,
    pub points: Vec<RatioPoint>,
}

/// The chart's data.
#[derive(Clone, Debug, PartialEq)]
pub struct RatioChart {
    pub title: String,
    /// Every version with how it ended (versions only named by a point
    /// count as passed).
    pub versions: Vec<VersionMark>,
    pub series: Vec<RatioSeries>,
}

/// The legend column's width and the margins.
pub const LEGEND_W: f64 = 190.0;
const LEFT: f64 = 64.0;
const PLOT_H: f64 = 240.0;

impl RatioChart {
    /// The chart alone, `width` wide.
    pub fn svg(&self, width: f64) -> String {
        let mut svg = Svg::new(width, self.height(width));
        self.draw(&mut svg, 0.0);
        svg.finish()
    }

    /// Its height at `width`.
    pub fn height(&self, width: f64) -> f64 {
        title_height(&self.title, width) + 14.0 + PLOT_H + BELOW + 8.0
    }

    /// Draws it into `svg` (its full width) from `top`; returns its bottom.
    pub fn draw(&self, svg: &mut Svg, top: f64) -> f64 {
        let width = svg.width;
        let frame = Frame {
            left: LEFT,
            top: top + svg.title(top, &self.title) + 14.0,
            width: width - LEFT - LEGEND_W - 16.0,
            height: PLOT_H,
        };
        let versions = self.versions();
        let n = versions.len();
        frame.shade_failures(svg, &versions);
        let points = self.series.iter().flat_map(|s| &s.points);
        let axis = Axis::fit(
            points
                .flat_map(|p| [p.ratio, p.low, p.high])
                .chain([1.0 / 1.1, 1.1]),
            Scale::Log,
        )
        .unwrap_or_else(|| Axis::new(1.0 / 1.1, 1.1, Scale::Log))
        .padded(0.04);
        frame.y_axis(svg, &axis, &|v| format!("{}x", label(v)));
        let one = frame.y(&axis, 1.0);
        svg.line(
            (frame.left, one),
            (frame.right(), one),
            "#333",
            r#" stroke-dasharray="5 3""#,
        );
        let slot = frame.slot(n);
        let k = self.series.len().max(1) as f64;
        let step = (slot * 0.7 / k).min(12.0);
        let mut drawn = 0;
        for (s, series) in self.series.iter().enumerate() {
            let colour = PALETTE[s % PALETTE.len()];
            let dx = (s as f64 - (k - 1.0) / 2.0) * step;
            for p in &series.points {
                let Some(i) = versions.iter().position(|v| v.version == p.version) else {
                    continue;
                };
                if !(p.ratio > 0.0 && p.low > 0.0 && p.high > 0.0) {
                    continue;
                }
                let x = frame.slot_x(i, n) + dx;
                let (y, y_low, y_high) = (
                    frame.y(&axis, p.ratio),
                    frame.y(&axis, p.low),
                    frame.y(&axis, p.high),
                );
                svg.line((x, y_low), (x, y_high), colour, r#" stroke-width="1.5""#);
                for cap in [y_low, y_high] {
                    svg.line((x - 3.0, cap), (x + 3.0, cap), colour, "");
                }
                let (fill, against) = if p.interleaved {
                    (colour.to_string(), "timed interleaved")
                } else {
                    ("white".to_string(), "against recorded timings")
                };
                let title = format!(
                    "v{} {}: x{:.3} [{:.3}, {:.3}] ({against})",
                    p.version, series.name, p.ratio, p.low, p.high
                );
                svg.circle(
                    (x, y),
                    3.5,
                    &format!(
                        r#" fill="{fill}" stroke="{colour}" stroke-width="1.5" class="ratio""#
                    ),
                    Some(&title),
                );
                drawn += 1;
            }
        }
        if drawn == 0 {
            svg.note(
                (frame.left, frame.top, frame.width),
                "no ratio yet: a call needs a previous version to compare with",
            );
        }
        frame.versions(svg, &versions);
        let mut entries: Vec<Entry> = vec![
            Entry {
                swatch: Swatch::Interval,
                text: "ratio, 95% interval".into(),
            },
            Entry {
                swatch: Swatch::Hollow("#444".into()),
                text: "vs recorded timings".into(),
            },
            Entry {
                swatch: Swatch::Line("#333".into()),
                text: "1x (dashed): unchanged".into(),
            },
        ];
        if versions.iter().any(|v| v.outcome != Outcome::Passed) {
            entries.push(Entry {
                swatch: Swatch::Failed,
                text: "failed, crashed, hung".into(),
            });
        }
        entries.extend(self.series.iter().enumerate().map(|(s, series)| Entry {
            swatch: Swatch::Dot(PALETTE[s % PALETTE.len()].into()),
            text: series.name.clone(),
        }));
        legend(
            svg,
            (frame.right() + 16.0, frame.top),
            (LEGEND_W - 8.0, frame.height + BELOW - 8.0),
            &entries,
        );
        frame.bottom() + BELOW + 8.0
    }

    /// Every version, in order, with its outcome.
    fn versions(&self) -> Vec<VersionMark> {
        let mut versions = self.versions.clone();
        for p in self.series.iter().flat_map(|s| &s.points) {
            if !versions.iter().any(|v| v.version == p.version) {
                versions.push(VersionMark {
                    version: p.version,
                    outcome: Outcome::Passed,
                });
            }
        }
        versions.sort_by_key(|v| v.version);
        versions.dedup_by_key(|v| v.version);
        versions
    }
}

#[cfg(test)]
mod tests {
    use super::super::bounds::text_outside;
    use super::*;

    fn chart(versions: u64, calls: usize) -> RatioChart {
        RatioChart {
            title:
                "kernel-cpu: each call's time over the previous version's, a long title that wraps"
                    .into(),
            versions: (1..=versions)
                .map(|v| VersionMark {
                    version: v,
                    outcome: match v % 5 {
                        2 => Outcome::Failed,
                        3 => Outcome::Crashed,
                        4 => Outcome::Hung,
                        _ => Outcome::Passed,
                    },
                })
                .collect(),
            series: (0..calls)
                .map(|c| RatioSeries {
                    name: format!("{c}:a_kernel_with_a_rather_long_name_{c}"),
                    points: (2..=versions)
                        .map(|v| RatioPoint {
                            version: v,
                            ratio: 1.0 + 0.01 * c as f64,
                            low: 0.95,
                            high: 1.08 + 0.01 * c as f64,
                            interleaved: v % 2 == 0,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn every_text_is_inside_and_failures_are_marked() {
        for (versions, calls) in [(1, 0), (2, 1), (5, 3), (40, 12), (200, 2)] {
            let c = chart(versions, calls);
            let svg = c.svg(760.0);
            assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
            assert_eq!(
                svg.matches(r#"class="ratio""#).count(),
                calls * (versions as usize - 1),
                "a dot per call and version after the first"
            );
            if versions == 5 {
                for word in [">failed<", ">crashed<", ">hung<"] {
                    assert!(svg.contains(word), "{word}: {svg}");
                }
            }
        }
        // The axis has at least three labelled ticks around 1.
        let svg = chart(3, 1).svg(760.0);
        let labels = svg.matches("x</text>").count();
        assert!(labels >= 3, "{svg}");
        assert!(chart(1, 0).svg(500.0).contains("no ratio yet"));
    }
}

//! The roofline plot of one version: log-log, arithmetic intensity
//! (flop/byte) across, achieved GFLOP/s up; the memory roof (measured
//! GB/s x intensity) meeting the f32 compute roof (measured GFLOP/s), the
//! i8 roof dashed where an i8 call is plotted; one dot per call at its
//! achieved rate, numbered, with the previous version's dot grey and an
//! arrow from it; a dot above its roof hollow (above the memory roof: the
//! data stayed in a cache); a hover title naming the call, its dims and
//! figures. `kiln report` and the live page draw it from this code.
//!
//! What a reader reads back: each roof is a `<polyline class="roof">` with
//! `data-gbs` and `data-peak` (the peaks it was drawn from), each dot a
//! `<circle class="dot">` (`"dot above"` when hollow) with `data-call`,
//! each arrow a `<line class="arrow">`.

use super::document::{Anchor, Svg, title_height};
use super::legend::{Entry, Swatch, legend};
use super::ratios::LEGEND_W;
use super::ticks::{Axis, Scale, label};

/// The measured peaks the roofs are drawn from (`None`: not measured).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Roofs {
    /// The memory roof, GB/s.
    pub gbs: Option<f64>,
    /// The f32 compute roof, GFLOP/s.
    pub gflops: Option<f64>,
    /// The i8 compute roof, GOP/s.
    pub i8_gops: Option<f64>,
}

/// One call of one version on the plot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoofDot {
    /// The call's key (`3:matmul`): a dot of the previous version with the
    /// same key is joined to it.
    pub call: String,
    /// Its arguments (`f32[1048576] f32[1048576]`), where known.
    pub dims: Option<String>,
    /// flop/byte.
    pub intensity: f64,
    pub gflops: f64,
    pub gbs: Option<f64>,
    pub ms: Option<f64>,
    /// Achieved / its roof x 100 (above 100: above the roof).
    pub percent: Option<f64>,
    /// `memory` or `compute`: the roof that bounds it.
    pub bound: Option<String>,
    /// `f32` or `i8`: the compute roof that judges it.
    pub compute: Option<String>,
}

impl RoofDot {
    fn plottable(&self) -> bool {
        self.intensity.is_finite()
            && self.intensity > 0.0
            && self.gflops.is_finite()
            && self.gflops > 0.0
    }

    fn above(&self) -> bool {
        self.percent.is_some_and(|p| p > 100.0)
    }

    fn is_i8(&self) -> bool {
        self.compute.as_deref() == Some("i8")
    }

    /// The hover text: `v3 call 1:matmul f32[..]`, then its figures.
    fn title(&self, version: u64) -> String {
        let mut head = format!("v{version} call {}", self.call);
        if let Some(d) = &self.dims {
            head.push(' ');
            head.push_str(d);
        }
        let mut figures = vec![format!("{} GFLOP/s", short(self.gflops))];
        if let Some(b) = self.gbs {
            figures.push(format!("{} GB/s", short(b)));
        }
        figures.push(format!("{} flop/byte", short(self.intensity)));
        if let Some(p) = self.percent {
            let compute = self.compute.as_deref().unwrap_or("f32");
            figures.push(format!("{p:.0}% of roofline ({compute} compute)"));
        }
        if let Some(ms) = self.ms {
            figures.push(format!("{ms:.3} ms"));
        }
        let mut text = format!("{head}\n{}", figures.join(", "));
        if self.above() {
            text.push_str(if self.bound.as_deref() == Some("memory") {
                "\nabove the memory roof: cache-resident"
            } else {
                "\nabove the measured compute peak"
            });
        }
        text
    }
}

/// A rate in three significant figures (`1.23`, `45.6`, `789`, `1.2e-4`).
fn short(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) {
        return format!("{v:.2e}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 5) as usize;
    format!("{v:.digits$}")
}

/// The plot's data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RooflineChart {
    pub title: String,
    pub roofs: Roofs,
    pub version: u64,
    pub dots: Vec<RoofDot>,
    /// The version before, with its dots (arrows go from them).
    pub previous: Option<(u64, Vec<RoofDot>)>,
}

const LEFT: f64 = 64.0;
const PLOT_H: f64 = 300.0;
/// Below the data area: the tick labels and the axis title.
const BELOW: f64 = 44.0;
const DOT: &str = "#c62828";
const OLD: &str = "#9e9e9e";
const ROOF: &str = "#444";

/// Where values fall in the data area.
struct Place {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    x: Axis,
    y: Axis,
}

impl Place {
    fn at(&self, (i, g): (f64, f64)) -> (f64, f64) {
        (
            self.left + self.width * self.x.fraction(i),
            self.top + self.height * (1.0 - self.y.fraction(g)),
        )
    }

    fn right(&self) -> f64 {
        self.left + self.width
    }

    fn bottom(&self) -> f64 {
        self.top + self.height
    }
}

impl RooflineChart {
    /// The plot alone, `width` wide.
    pub fn svg(&self, width: f64) -> String {
        let mut svg = Svg::new(width, self.height(width));
        self.draw(&mut svg, 0.0);
        svg.finish()
    }

    /// Its height at `width`.
    pub fn height(&self, width: f64) -> f64 {
        title_height(&self.title, width) + 22.0 + PLOT_H + BELOW + 8.0
    }

    fn dots(&self) -> impl Iterator<Item = &RoofDot> {
        self.dots.iter().filter(|d| d.plottable())
    }

    /// The previous version's dot of `call`, where plotted.
    fn before(&self, call: &str) -> Option<&RoofDot> {
        let (_, dots) = self.previous.as_ref()?;
        dots.iter().find(|d| d.call == call && d.plottable())
    }

    /// The roofs drawn: (peak, its name, dashed), the f32 one first.
    fn roof_lines(&self) -> Vec<(f64, String, bool)> {
        if !self.roofs.gbs.is_some_and(|g| g > 0.0) {
            return Vec::new();
        }
        let mut roofs = Vec::new();
        if let Some(p) = self.roofs.gflops.filter(|p| *p > 0.0) {
            roofs.push((p, format!("f32: {} GFLOP/s", short(p)), false));
        }
        if let Some(p) = self.roofs.i8_gops.filter(|p| *p > 0.0)
            && self.dots().any(RoofDot::is_i8)
        {
            roofs.push((p, format!("i8 (dashed): {} GOP/s", short(p)), true));
        }
        roofs
    }

    /// Draws it into `svg` (its full width) from `top`; returns its bottom.
    pub fn draw(&self, svg: &mut Svg, top: f64) -> f64 {
        let width = svg.width;
        let frame_top = top + svg.title(top, &self.title) + 22.0;
        let roofs = self.roof_lines();
        let gbs = self.roofs.gbs.unwrap_or(0.0);
        let olds = self.dots().filter_map(|d| self.before(&d.call));
        let points: Vec<&RoofDot> = self.dots().chain(olds).collect();
        let x = Axis::fit(
            points
                .iter()
                .map(|d| d.intensity)
                .chain(roofs.iter().map(|(p, _, _)| p / gbs)),
            Scale::Log,
        )
        .unwrap_or_else(|| Axis::new(0.1, 100.0, Scale::Log))
        .padded(0.12);
        let y = Axis::fit(
            points
                .iter()
                .map(|d| d.gflops)
                .chain(roofs.iter().map(|(p, _, _)| *p)),
            Scale::Log,
        )
        .unwrap_or_else(|| Axis::new(1.0, 100.0, Scale::Log))
        .padded(0.12);
        let place = Place {
            left: LEFT,
            top: frame_top,
            width: width - LEFT - LEGEND_W - 16.0,
            height: PLOT_H,
            x,
            y,
        };
        self.axes(svg, &place);
        for (peak, _, dashed) in &roofs {
            roof(svg, &place, gbs, *peak, *dashed);
        }
        self.draw_dots(svg, &place);
        if self.dots().next().is_none() {
            svg.note(
                (place.left, place.top, place.width),
                "no call with declared flops and bytes timed yet",
            );
        }
        let entries = self.legend_entries(&roofs);
        legend(
            svg,
            (place.right() + 16.0, place.top),
            (LEGEND_W - 8.0, place.height + BELOW - 8.0),
            &entries,
        );
        place.bottom() + BELOW + 8.0
    }

    /// The frame, grid lines and labelled ticks of both axes, their titles.
    fn axes(&self, svg: &mut Svg, place: &Place) {
        for t in place.y.ticks() {
            let (_, y) = place.at((place.x.lo, t));
            svg.line((place.left, y), (place.right(), y), "#e2e2e2", "");
            svg.line((place.left - 4.0, y), (place.left, y), "#555", "");
            svg.text(
                place.left - 6.0,
                y + 4.0,
                11.0,
                Anchor::End,
                &label(t),
                r#" class="ytick""#,
            );
        }
        for t in place.x.ticks() {
            let (x, _) = place.at((t, place.y.lo));
            svg.line((x, place.top), (x, place.bottom()), "#e2e2e2", "");
            svg.line((x, place.bottom()), (x, place.bottom() + 4.0), "#555", "");
            svg.text(
                x,
                place.bottom() + 16.0,
                11.0,
                Anchor::Middle,
                &label(t),
                r#" class="xtick""#,
            );
        }
        svg.rect(
            (place.left, place.top),
            (place.width, place.height),
            "none",
            r##" stroke="#888" class="frame""##,
        );
        svg.text(
            8.0,
            place.top - 6.0,
            11.0,
            Anchor::Start,
            "GFLOP/s",
            r#" font-weight="bold""#,
        );
        svg.text(
            place.left + place.width / 2.0,
            place.bottom() + 36.0,
            12.0,
            Anchor::Middle,
            "arithmetic intensity (flop/byte, log scale)",
            "",
        );
    }

    /// The previous version's dots and the arrows from them, then this
    /// version's dots, numbered by call.
    fn draw_dots(&self, svg: &mut Svg, place: &Place) {
        let previous = self.previous.as_ref().map_or(0, |(v, _)| *v);
        for dot in self.dots() {
            let Some(old) = self.before(&dot.call) else {
                continue;
            };
            let from = place.at((old.intensity, old.gflops));
            let to = place.at((dot.intensity, dot.gflops));
            svg.circle(
                from,
                3.5,
                &format!(
                    r#" fill="{OLD}" class="old" data-call="{}""#,
                    attr(&dot.call)
                ),
                Some(&old.title(previous)),
            );
            arrow(svg, from, to);
        }
        for dot in self.dots() {
            let at = place.at((dot.intensity, dot.gflops));
            let (class, paint) = if dot.above() {
                ("dot above", format!(r#" fill="white" stroke="{DOT}""#))
            } else {
                ("dot", format!(r#" fill="{DOT}" stroke="{DOT}""#))
            };
            svg.circle(
                at,
                5.0,
                &format!(
                    r#"{paint} stroke-width="2" class="{class}" data-call="{}""#,
                    attr(&dot.call)
                ),
                Some(&dot.title(self.version)),
            );
            let number = dot.call.split(':').next().unwrap_or("");
            let (tx, anchor) = if at.0 + 30.0 > place.right() {
                (at.0 - 8.0, Anchor::End)
            } else {
                (at.0 + 8.0, Anchor::Start)
            };
            let ty = (at.1 - 6.0).max(place.top + 11.0);
            svg.text(tx, ty, 10.0, anchor, number, r##" fill="#333""##);
        }
    }

    fn legend_entries(&self, roofs: &[(f64, String, bool)]) -> Vec<Entry> {
        let memory = self.roofs.gbs.filter(|_| !roofs.is_empty()).map(|g| Entry {
            swatch: Swatch::Line(ROOF.into()),
            text: format!("memory: {} GB/s", short(g)),
        });
        let mut entries: Vec<Entry> = memory.into_iter().collect();
        entries.extend(roofs.iter().map(|(_, name, _)| Entry {
            swatch: Swatch::Line(ROOF.into()),
            text: name.clone(),
        }));
        if roofs.is_empty() {
            entries.push(Entry {
                swatch: Swatch::Line("#bbb".into()),
                text: "no roof: peaks not measured".into(),
            });
        }
        entries.push(Entry {
            swatch: Swatch::Dot(DOT.into()),
            text: format!("v{}: a call (its number)", self.version),
        });
        if let Some((v, _)) = &self.previous
            && self.dots().any(|d| self.before(&d.call).is_some())
        {
            entries.push(Entry {
                swatch: Swatch::Dot(OLD.into()),
                text: format!("v{v}, arrow to v{}", self.version),
            });
        }
        if self.dots().any(RoofDot::above) {
            entries.push(Entry {
                swatch: Swatch::Hollow(DOT.into()),
                text: "above roof: cache-resident".into(),
            });
        }
        // The calls by number (their dims in the dots' hover titles).
        entries.extend(self.dots().map(|d| Entry {
            swatch: Swatch::Dot(DOT.into()),
            text: d.call.clone(),
        }));
        entries
    }
}

/// The roof of `peak`: min(peak, `gbs` x intensity) across the plot,
/// clipped to it.
fn roof(svg: &mut Svg, place: &Place, gbs: f64, peak: f64, dashed: bool) {
    let (x, y) = (place.x, place.y);
    let height = |i: f64| (gbs * i).min(peak);
    // From where the memory roof enters the plot (its bottom or left).
    let start = x.lo.max(y.lo / gbs);
    let knee = peak / gbs;
    let mut xs = vec![start];
    if knee > start && knee < x.hi {
        xs.push(knee);
    }
    xs.push(x.hi);
    let points: Vec<(f64, f64)> = xs
        .into_iter()
        .filter(|i| *i <= x.hi && height(*i) <= y.hi)
        .map(|i| place.at((i, height(i))))
        .collect();
    let dash = if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    svg.polyline(
        &points,
        ROOF,
        &format!(r#" stroke-width="2" class="roof" data-gbs="{gbs}" data-peak="{peak}"{dash}"#),
    );
}

/// A line from `from` to `to` with a head at `to` (stopping short of the
/// dot there).
fn arrow(svg: &mut Svg, from: (f64, f64), to: (f64, f64)) {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let length = (dx * dx + dy * dy).sqrt();
    if length < 8.0 {
        svg.line(from, to, OLD, r#" stroke-width="1.5" class="arrow""#);
        return;
    }
    let (ux, uy) = (dx / length, dy / length);
    let tip = (to.0 - ux * 6.0, to.1 - uy * 6.0);
    svg.line(from, tip, OLD, r#" stroke-width="1.5" class="arrow""#);
    let back = (tip.0 - ux * 7.0, tip.1 - uy * 7.0);
    let side = (-uy * 3.5, ux * 3.5);
    svg.polygon(
        &[
            tip,
            (back.0 + side.0, back.1 + side.1),
            (back.0 - side.0, back.1 - side.1),
        ],
        OLD,
    );
}

/// An attribute value: `"` and `&` escaped.
fn attr(s: &str) -> String {
    super::document::escape(s)
}

#[cfg(test)]
mod tests {
    use super::super::bounds::text_outside;
    use super::*;

    fn dot(call: &str, intensity: f64, gflops: f64, percent: f64) -> RoofDot {
        RoofDot {
            call: call.into(),
            dims: Some("f32[1048576] f32[1048576]".into()),
            intensity,
            gflops,
            gbs: Some(gflops / intensity),
            ms: Some(0.5),
            percent: Some(percent),
            bound: Some(
                if intensity < 10.0 {
                    "memory"
                } else {
                    "compute"
                }
                .into(),
            ),
            compute: Some(if call.contains("i8") { "i8" } else { "f32" }.into()),
        }
    }

    fn chart() -> RooflineChart {
        RooflineChart {
            title: "kernel-cpu v3 on the roofline (Test CPU, 2 threads, warm caches)".into(),
            roofs: Roofs {
                gbs: Some(20.0),
                gflops: Some(200.0),
                i8_gops: Some(800.0),
            },
            version: 3,
            dots: vec![
                dot("0:saxpy", 0.167, 2.0, 60.0),
                dot("1:matmul", 40.0, 90.0, 45.0),
                dot("2:small", 0.25, 8.0, 160.0),
                dot("3:dot_i8", 60.0, 300.0, 37.0),
                RoofDot {
                    call: "4:copy".into(),
                    ..Default::default()
                },
            ],
            previous: Some((
                2,
                vec![
                    dot("0:saxpy", 0.167, 1.0, 30.0),
                    dot("1:matmul", 40.0, 30.0, 15.0),
                ],
            )),
        }
    }

    #[test]
    fn dots_roofs_and_arrows_where_the_numbers_say() {
        let svg = chart().svg(760.0);
        assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
        assert_eq!(svg.matches(r#"class="dot""#).count(), 3, "{svg}");
        assert_eq!(svg.matches(r#"class="dot above""#).count(), 1, "{svg}");
        assert_eq!(svg.matches(r#"class="arrow""#).count(), 2, "{svg}");
        assert!(svg.contains(r#"data-gbs="20" data-peak="200""#), "{svg}");
        assert!(svg.contains(r#"data-peak="800" stroke-dasharray"#), "{svg}");
        assert!(svg.contains("cache-resident"), "{svg}");
        assert!(svg.matches(r#"class="xtick""#).count() >= 3, "{svg}");
        assert!(svg.matches(r#"class="ytick""#).count() >= 3, "{svg}");
        assert!(
            svg.contains("<title>v3 call 1:matmul f32[1048576]"),
            "{svg}"
        );
        // No i8 call: no i8 roof; no peaks: no roof, the dots still.
        let mut f32_only = chart();
        f32_only.dots.retain(|d| !d.call.contains("i8"));
        assert!(!f32_only.svg(760.0).contains("stroke-dasharray"));
        let mut no_peaks = chart();
        no_peaks.roofs = Roofs::default();
        let svg = no_peaks.svg(500.0);
        assert!(!svg.contains(r#"class="roof""#) && svg.contains("peaks not meas"));
        assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
        let empty = RooflineChart::default().svg(500.0);
        assert!(empty.contains("no call with declared flops"), "{empty}");
        assert_eq!(text_outside(&empty), Vec::<String>::new(), "{empty}");
    }

    #[test]
    fn figures_are_short() {
        assert_eq!(short(123.456), "123");
        assert_eq!(short(1.23456), "1.23");
        assert_eq!(short(0.0123456), "0.0123");
        assert_eq!(short(2.0e-5), "2.00e-5");
    }
}

//! An SVG chart of the report's main time ratios: one horizontal bar per
//! ratio on a log scale, with a line at parity, written with kiln's chart
//! writer (`kiln::chart`: the document, the log axis and its ticks).

use kiln::chart::document::{Anchor, Svg, fit};
use kiln::chart::ticks::{Axis, Scale, label};
use kiln_stats::bytes;

use crate::report::Report;

/// One bar: a label and a time ratio (`X ÷ Y`; below 1: X takes less time).
pub struct Bar {
    pub group: &'static str,
    pub label: String,
    pub ratio: f64,
}

/// The ratios the chart shows.
pub fn bars(report: &Report) -> Vec<Bar> {
    let mut bars = Vec::new();
    let s = &report.serving;
    if let Some(k) = s.kiln.first() {
        bars.push(Bar {
            group: "artifact to serving",
            label: format!(
                "kiln ({}) ÷ hot-lib-reloader update()",
                bytes::human(k.state_bytes as u64)
            ),
            ratio: k.ready_ms.median / s.hot_update_ms.median,
        });
    }
    for (k, r) in s.kiln.iter().zip(&s.restart) {
        bars.push(Bar {
            group: "artifact to serving",
            label: format!(
                "kiln ÷ process restart, {} state",
                bytes::human(k.state_bytes as u64)
            ),
            ratio: k.ready_ms.median / r.ready_ms.median,
        });
    }
    let save = &report.save;
    bars.push(Bar {
        group: "save to serving",
        label: "kiln dev ÷ restart loop (cargo build + start)".to_string(),
        ratio: save.kiln.total_ms.median / save.restart.total_ms.median,
    });
    for k in &report.calls.kernels {
        for way in ["hot-lib-reloader", "kiln ServedModule::call"] {
            if k.get(way).is_none() {
                continue;
            }
            bars.push(Bar {
                group: "call time",
                label: format!("{way} ÷ static, {}", k.kernel),
                ratio: k.ratio(way),
            });
        }
    }
    for h in &report.handoff.sizes {
        bars.push(Bar {
            group: "state handoff",
            label: format!("kiln handoff ÷ memcpy, {}", bytes::human(h.bytes as u64)),
            ratio: h.memcpy_gbps.median / h.handoff_gbps.median,
        });
    }
    bars
}

/// The chart as an SVG document (kiln's chart writer: `kiln::chart`).
pub fn svg(report: &Report) -> String {
    svg_of(&bars(report), report.quick)
}

/// The chart of `bars` (`quick`: a smoke run's, said in the subtitle).
fn svg_of(bars: &[Bar], quick: bool) -> String {
    const WIDTH: f64 = 960.0;
    const LABEL_W: f64 = 420.0;
    const ROW_H: f64 = 22.0;
    const TOP: f64 = 56.0;
    // The axis's range of ratios (bars beyond it stop at its ends).
    let axis = Axis::new(0.1, 100.0, Scale::Log);
    let plot_w = WIDTH - LABEL_W - 80.0;
    let x_of = |ratio: f64| {
        let f = axis.fraction(ratio.clamp(axis.lo, axis.hi));
        LABEL_W + f * plot_w
    };
    let mut groups_seen = Vec::new();
    let mut rows = 0.0;
    for b in bars {
        if !groups_seen.contains(&b.group) {
            groups_seen.push(b.group);
            rows += 1.0;
        }
        rows += 1.0;
    }
    let height = TOP + rows * ROW_H + 40.0;
    let mut out = Svg::new(WIDTH, height);
    let title =
        "kiln vs the alternatives: time ratios (log scale; left of 1 = the first takes less time)";
    out.text(
        10.0,
        20.0,
        15.0,
        Anchor::Start,
        &fit(title, 15.0, WIDTH - 20.0),
        r#" font-weight="bold""#,
    );
    let note = format!(
        "medians{}",
        if quick {
            " (QUICK smoke run: not meaningful)"
        } else {
            ""
        }
    );
    out.text(10.0, 38.0, 12.0, Anchor::Start, &note, r##" fill="#555""##);
    let axis_bottom = TOP + rows * ROW_H;
    for tick in axis.ticks() {
        let x = x_of(tick);
        let stroke = if tick == 1.0 { "#000" } else { "#ddd" };
        out.line((x, TOP - 4.0), (x, axis_bottom), stroke, "");
        out.text(
            x,
            axis_bottom + 14.0,
            12.0,
            Anchor::Middle,
            &label(tick),
            r##" fill="#555""##,
        );
    }
    let mut y = TOP;
    let mut current_group = "";
    for b in bars {
        if b.group != current_group {
            current_group = b.group;
            out.text(
                10.0,
                y + 15.0,
                12.0,
                Anchor::Start,
                b.group,
                r#" font-weight="bold""#,
            );
            y += ROW_H;
        }
        let x1 = x_of(1.0);
        let x2 = if b.ratio.is_finite() && b.ratio > 0.0 {
            x_of(b.ratio)
        } else {
            x1
        };
        let (left, w) = if x2 >= x1 {
            (x1, x2 - x1)
        } else {
            (x2, x1 - x2)
        };
        let color = if b.ratio <= 1.0 { "#3a7d44" } else { "#c0503a" };
        let text = fit(&b.label, 12.0, LABEL_W - 30.0);
        out.text(20.0, y + 15.0, 12.0, Anchor::Start, &text, "");
        out.rect((left, y + 4.0), (w.max(1.0), ROW_H - 8.0), color, "");
        out.text(
            x1.max(x2) + 4.0,
            y + 15.0,
            12.0,
            Anchor::Start,
            &format_ratio(b.ratio),
            "",
        );
        y += ROW_H;
    }
    out.finish()
}

fn format_ratio(r: f64) -> String {
    if !r.is_finite() {
        "n/a".to_string()
    } else if r >= 10.0 {
        format!("{r:.0}x")
    } else if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("{r:.3}x")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_is_inside_and_a_bar_per_ratio() {
        let bar = |group, label: &str, ratio| Bar {
            group,
            label: label.to_string(),
            ratio,
        };
        let bars = vec![
            bar(
                "artifact to serving",
                "kiln (256 MiB) ÷ hot-lib-reloader update()",
                0.02,
            ),
            bar(
                "artifact to serving",
                "kiln ÷ process restart, 256 MiB state",
                0.5,
            ),
            bar(
                "call time",
                &format!("a very long label {}", "x".repeat(80)),
                3.0,
            ),
            bar("state handoff", "kiln handoff ÷ memcpy, 1 GiB", 1000.0),
            bar("state handoff", "kiln handoff ÷ memcpy, 0 B", f64::NAN),
        ];
        let svg = svg_of(&bars, true);
        assert_eq!(
            kiln::chart::bounds::text_outside(&svg),
            Vec::<String>::new(),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect x=").count(), bars.len());
        for tick in [">0.1<", ">1<", ">10<", ">100<"] {
            assert!(svg.contains(tick), "{tick}: {svg}");
        }
    }
}

//! An SVG chart of the report's main time ratios, written by hand: one
//! horizontal bar per ratio on a log scale, with a line at parity.

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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart as an SVG document.
pub fn svg(report: &Report) -> String {
    const WIDTH: f64 = 960.0;
    const LABEL_W: f64 = 420.0;
    const ROW_H: f64 = 22.0;
    const TOP: f64 = 56.0;
    // log10 range of the axis
    const LO: f64 = -1.0;
    const HI: f64 = 2.0;
    let plot_w = WIDTH - LABEL_W - 80.0;
    let x_of = |ratio: f64| {
        let l = ratio.log10().clamp(LO, HI);
        LABEL_W + (l - LO) / (HI - LO) * plot_w
    };
    let bars = bars(report);
    let mut groups_seen = Vec::new();
    let mut rows = 0.0;
    for b in &bars {
        if !groups_seen.contains(&b.group) {
            groups_seen.push(b.group);
            rows += 1.0;
        }
        rows += 1.0;
    }
    let height = TOP + rows * ROW_H + 40.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">kiln vs the alternatives: time ratios (log scale; left of 1 = the first takes less time)</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">medians{}</text>\n",
        if report.quick {
            " (QUICK smoke run: not meaningful)"
        } else {
            ""
        }
    );
    // axis ticks
    let axis_bottom = TOP + rows * ROW_H;
    for e in (LO as i32)..=(HI as i32) {
        let r = 10f64.powi(e);
        let x = x_of(r);
        let stroke = if e == 0 { "#000" } else { "#ddd" };
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{axis_bottom:.1}\" stroke=\"{stroke}\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n",
            TOP - 4.0,
            axis_bottom + 14.0,
            if e >= 0 { format!("{}", r as u64) } else { format!("{r}") }
        ));
    }
    let mut y = TOP;
    let mut current_group = "";
    for b in &bars {
        if b.group != current_group {
            current_group = b.group;
            out.push_str(&format!(
                "<text x=\"10\" y=\"{:.1}\" font-weight=\"bold\">{}</text>\n",
                y + 15.0,
                escape(b.group)
            ));
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
        out.push_str(&format!(
            "<text x=\"20\" y=\"{:.1}\">{}</text>\n\
             <rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            y + 15.0,
            escape(&b.label),
            y + 4.0,
            w.max(1.0),
            ROW_H - 8.0,
            x1.max(x2) + 4.0,
            y + 15.0,
            format_ratio(b.ratio)
        ));
        y += ROW_H;
    }
    out.push_str("</svg>\n");
    out
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

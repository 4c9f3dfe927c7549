//! The state-scale section's chart: for each measured size, kiln's times
//! (start-up less its build, checkpoint after a save, crash to serving,
//! Ctrl-C to the state file) as horizontal bars on a log scale of
//! milliseconds, next to the two baselines of that size (a memcpy, the
//! restart loop reading the state file back), drawn with kiln's chart
//! writer (`kiln::chart`).

use kiln::chart::document::{Anchor, Svg, fit};
use kiln::chart::ticks::{Axis, Scale, label};
use kiln_stats::bytes;

use crate::state_scale::SizeFigures;

/// One bar: what it measures, its ms, whether it is a baseline.
struct Bar {
    label: &'static str,
    ms: f64,
    baseline: bool,
}

fn bars_of(f: &SizeFigures) -> Vec<Bar> {
    let bar = |label, ms, baseline| Bar {
        label,
        ms,
        baseline,
    };
    vec![
        bar("start-up less its build", f.startup_ms - f.build_ms, false),
        bar("checkpoint after a save", f.checkpoint_ms, false),
        bar("crash to serving", f.restart_ms, false),
        bar("Ctrl-C to the state file", f.ctrl_c_file_ms, false),
        bar("memcpy of the state", f.memcpy_ms(), true),
        bar("restart loop: read the state file", f.read_ms(), true),
    ]
}

/// The chart of the measured `sizes` as an SVG document; `note` says how
/// the run went (load, machine).
pub fn svg(sizes: &[&SizeFigures], note: &str) -> String {
    const WIDTH: f64 = 960.0;
    const LABEL_W: f64 = 300.0;
    const ROW_H: f64 = 20.0;
    const TOP: f64 = 60.0;
    let groups: Vec<(String, Vec<Bar>)> = sizes
        .iter()
        .map(|f| (bytes::human(f.bytes), bars_of(f)))
        .collect();
    let values = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|b| b.ms))
        .filter(|v| v.is_finite() && *v > 0.0);
    let axis = Axis::fit(values, Scale::Log)
        .unwrap_or(Axis::new(0.1, 10_000.0, Scale::Log))
        .padded(0.05);
    let rows: f64 = groups.iter().map(|(_, b)| b.len() as f64 + 1.0).sum();
    let plot_w = WIDTH - LABEL_W - 60.0;
    let x_of = |ms: f64| LABEL_W + axis.fraction(ms.clamp(axis.lo, axis.hi)) * plot_w;
    let axis_bottom = TOP + rows * ROW_H;
    let mut out = Svg::new(WIDTH, axis_bottom + 40.0);
    out.text(
        10.0,
        20.0,
        15.0,
        Anchor::Start,
        "kiln dev state scale: ms per step on the CPU backend (log scale; grey: baselines)",
        r#" font-weight="bold""#,
    );
    out.text(
        10.0,
        40.0,
        12.0,
        Anchor::Start,
        &fit(note, 12.0, WIDTH - 20.0),
        r##" fill="#555""##,
    );
    for tick in axis.ticks() {
        let x = x_of(tick);
        out.line((x, TOP - 4.0), (x, axis_bottom), "#ddd", "");
        out.text(
            x,
            axis_bottom + 14.0,
            12.0,
            Anchor::Middle,
            &format!("{} ms", label(tick)),
            r##" fill="#555""##,
        );
    }
    let mut y = TOP;
    for (size, bars) in &groups {
        out.text(
            10.0,
            y + 14.0,
            12.0,
            Anchor::Start,
            &format!("{size} of state"),
            r#" font-weight="bold""#,
        );
        y += ROW_H;
        for b in bars {
            out.text(LABEL_W - 8.0, y + 14.0, 12.0, Anchor::End, b.label, "");
            if b.ms.is_finite() && b.ms > 0.0 {
                let fill = if b.baseline { "#aaa" } else { "#3b6ea8" };
                let w = (x_of(b.ms) - LABEL_W).max(1.0);
                out.rect((LABEL_W, y + 3.0), (w, ROW_H - 6.0), fill, "");
                out.text(
                    LABEL_W + w + 4.0,
                    y + 14.0,
                    11.0,
                    Anchor::Start,
                    &match b.ms {
                        ms if ms < 10.0 => format!("{ms:.2}"),
                        ms => format!("{ms:.0}"),
                    },
                    "",
                );
            }
            y += ROW_H;
        }
    }
    out.finish()
}

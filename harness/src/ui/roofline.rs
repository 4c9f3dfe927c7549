//! The page's roofline plots, from the feed's `roofline` events: per
//! module (one per served backend), its last replayed version's calls and
//! the roofs of the device that ran them, with arrows from the version
//! replayed before it; drawn by the code that draws `kiln report`'s
//! ([`crate::chart::roofline`]).

use std::collections::BTreeMap;

use crate::chart::roofline::{RoofDot, RooflineChart, Roofs};
use crate::events::{EventKind, Roofline};

/// Per module: its last `roofline` event, and the last one before it of
/// another version.
type Last = BTreeMap<String, (Roofline, Option<Roofline>)>;

fn dots(event: &Roofline) -> Vec<RoofDot> {
    event
        .calls
        .iter()
        .filter_map(|c| {
            Some(RoofDot {
                call: format!("{}:{}", c.call, c.kernel),
                dims: Some(c.dims.clone()).filter(|d| !d.is_empty()),
                intensity: c.intensity?,
                gflops: c.gflops?,
                gbs: c.gbs,
                ms: Some(c.ms),
                percent: c.percent,
                bound: Some(c.bound.clone()),
                compute: Some(c.compute.clone()),
            })
        })
        .collect()
}

/// The plots of `events` (JSON lines of kiln events, oldest first),
/// `width` wide, as HTML: one `<svg>` per module, or a paragraph saying
/// there is nothing yet.
pub fn charts(events: &[String], width: f64) -> String {
    let mut last: Last = BTreeMap::new();
    for line in events {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if value["event"] != EventKind::Roofline.as_str() {
            continue;
        }
        let Ok(event) = serde_json::from_value::<Roofline>(value) else {
            continue;
        };
        match last.remove(&event.module) {
            Some((current, before)) => {
                let before = if current.version == event.version {
                    before
                } else {
                    Some(current)
                };
                last.insert(event.module.clone(), (event, before));
            }
            None => {
                last.insert(event.module.clone(), (event, None));
            }
        }
    }
    if last.is_empty() {
        return "<p>no roofline yet: no call with declared flops and bytes timed</p>".into();
    }
    last.into_values()
        .map(|(event, before)| {
            RooflineChart {
                title: format!("{} v{} on the roofline", event.module, event.version),
                roofs: Roofs {
                    gbs: event.roof_gbs,
                    gflops: event.roof_gflops,
                    i8_gops: event.roof_i8_gops,
                },
                version: event.version,
                dots: dots(&event),
                previous: before.map(|b| (b.version, dots(&b))),
            }
            .svg(width)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::bounds::text_outside;
    use crate::events::RooflinePoint;

    fn event(module: &str, version: u64, gflops: f64) -> String {
        let point = |call: u64, kernel: &str, intensity: f64, gflops: f64| RooflinePoint {
            call,
            kernel: kernel.into(),
            dims: "f32[4096]".into(),
            ms: 0.1,
            gflops: Some(gflops),
            gbs: Some(gflops / intensity),
            intensity: Some(intensity),
            percent: Some(50.0),
            compute: "f32".into(),
            bound: "memory".into(),
        };
        let mut value = serde_json::to_value(Roofline {
            module: module.into(),
            version,
            roof_gbs: Some(10.0),
            roof_gflops: Some(100.0),
            roof_i8_gops: None,
            calls: vec![
                point(0, "saxpy", 0.167, gflops),
                point(1, "matmul", 40.0, 50.0),
            ],
        })
        .unwrap();
        value["event"] = "roofline".into();
        value.to_string()
    }

    #[test]
    fn a_plot_per_module_with_arrows_from_the_version_before() {
        let events = vec![
            event("kernel-cpu", 1, 1.0),
            "not json".into(),
            event("kernel-cpu", 2, 1.5),
            // The same version replayed again: still arrows from v1.
            event("kernel-cpu", 2, 1.6),
            event("kernel-vulkan", 1, 0.5),
        ];
        let html = charts(&events, 760.0);
        assert_eq!(html.matches("<svg").count(), 2, "{html}");
        assert_eq!(html.matches(r#"class="dot""#).count(), 4, "{html}");
        assert_eq!(html.matches(r#"class="arrow""#).count(), 2, "{html}");
        assert!(html.contains("<title>v2 call 0:saxpy f32[4096]"), "{html}");
        assert!(html.contains(r#"data-gbs="10" data-peak="100""#), "{html}");
        assert_eq!(text_outside(&html), Vec::<String>::new());
        assert!(charts(&[], 760.0).contains("no roofline yet"));
    }
}

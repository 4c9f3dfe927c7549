//! The page's per-call chart across versions, from the feed's events: each
//! call's time over the previous version's with its 95% interval (the
//! `ratio`, `ratio_low`, `ratio_high` and `ratio_against` of `replay`
//! events), versions that failed (`replay_failed`, a failing call),
//! crashed or hung (`crashed`, `hung`) marked; one chart per module, drawn
//! by the code that draws `kiln report`'s ([`crate::chart::ratios`]).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::chart::frame::{Outcome, VersionMark};
use crate::chart::ratios::{RatioChart, RatioPoint, RatioSeries};

/// What the events said of one module.
#[derive(Default)]
struct Seen {
    outcomes: BTreeMap<u64, Outcome>,
    /// By call index: the kernel and each version's point (a replay of the
    /// same version again replaces it).
    calls: BTreeMap<u64, (String, BTreeMap<u64, RatioPoint>)>,
}

impl Seen {
    /// Records `outcome` for `version`; a crash or hang is never undone
    /// by a later word, a failure only by those.
    fn mark(&mut self, version: u64, outcome: Outcome) {
        let slot = self.outcomes.entry(version).or_insert(Outcome::Passed);
        let rank = |o: Outcome| match o {
            Outcome::Passed => 0,
            Outcome::Failed => 1,
            Outcome::Crashed | Outcome::Hung => 2,
        };
        if rank(outcome) >= rank(*slot) {
            *slot = outcome;
        }
    }
}

/// The charts of `events` (JSON lines of kiln events, oldest first),
/// `width` wide, as HTML: one `<svg>` per module, or a paragraph saying
/// there is nothing yet.
pub fn charts(events: &[String], width: f64) -> String {
    let mut modules: BTreeMap<String, Seen> = BTreeMap::new();
    for line in events {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(kind), Some(module), Some(version)) = (
            e["event"].as_str(),
            e["module"].as_str(),
            e["version"].as_u64(),
        ) else {
            continue;
        };
        let outcome = match kind {
            "replay" if e["pass"] == false => Outcome::Failed,
            "replay" => Outcome::Passed,
            "replay_failed" => Outcome::Failed,
            "crashed" => Outcome::Crashed,
            "hung" => Outcome::Hung,
            _ => continue,
        };
        let seen = modules.entry(module.to_string()).or_default();
        seen.mark(version, outcome);
        let f = |key: &str| e[key].as_f64();
        if let (Some(call), Some(ratio), Some(low), Some(high)) = (
            e["call"].as_u64(),
            f("ratio"),
            f("ratio_low"),
            f("ratio_high"),
        ) {
            let kernel = e["kernel"].as_str().unwrap_or("-").to_string();
            let point = RatioPoint {
                version,
                ratio,
                low,
                high,
                interleaved: e["ratio_against"] == "interleaved",
            };
            let entry = seen.calls.entry(call).or_default();
            entry.0 = kernel;
            entry.1.insert(version, point);
        }
    }
    if modules.is_empty() {
        return "<p>no replay yet</p>".into();
    }
    modules
        .into_iter()
        .map(|(module, seen)| {
            RatioChart {
                title: format!(
                    "{module}: each call's time over the previous version's \
                     (log scale; below 1x: faster)"
                ),
                versions: seen
                    .outcomes
                    .iter()
                    .map(|(&version, &outcome)| VersionMark { version, outcome })
                    .collect(),
                series: seen
                    .calls
                    .into_iter()
                    .map(|(call, (kernel, points))| RatioSeries {
                        name: format!("{call}:{kernel}"),
                        points: points.into_values().collect(),
                    })
                    .collect(),
            }
            .svg(width)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::bounds::text_outside;

    #[test]
    fn ratios_and_failures_from_the_events() {
        let replay = |version: u64, call: u64, pass: bool, ratio: Option<f64>| {
            let mut e = serde_json::json!({
                "timestamp": "t", "level": "INFO", "message": "m", "event": "replay",
                "module": "kernel-cpu", "version": version, "call": call,
                "kernel": if call == 0 { "saxpy" } else { "matmul" }, "pass": pass,
                "reference": "r", "trials_passed": 1, "trials": 1,
            });
            if let Some(r) = ratio {
                e["ratio"] = r.into();
                e["ratio_low"] = (r * 0.95).into();
                e["ratio_high"] = (r * 1.05).into();
                e["ratio_against"] = "interleaved".into();
            }
            e.to_string()
        };
        let events = vec![
            replay(1, 0, true, None),
            replay(1, 1, true, None),
            replay(2, 0, true, Some(1.01)),
            replay(2, 1, true, Some(0.5)),
            "not json".to_string(),
            replay(3, 0, false, Some(1.0)),
            serde_json::json!({"event": "replay_failed", "module": "kernel-cpu", "version": 3})
                .to_string(),
            serde_json::json!({"event": "hung", "module": "kernel-cpu", "version": 4,
                "last_words": ""})
            .to_string(),
            serde_json::json!({"event": "swapped", "module": "kernel-cpu", "version": 5})
                .to_string(),
        ];
        let html = charts(&events, 760.0);
        assert_eq!(html.matches("<svg").count(), 1, "{html}");
        assert_eq!(html.matches(r#"class="ratio""#).count(), 3, "{html}");
        assert!(html.contains("v2 1:matmul: x0.500"), "{html}");
        assert!(
            html.contains(">failed<") && html.contains(">hung<"),
            "{html}"
        );
        assert!(
            !html.contains(">v5<"),
            "a swap alone is no replayed version"
        );
        assert_eq!(text_outside(&html), Vec::<String>::new());
        assert!(charts(&[], 760.0).contains("no replay yet"));
    }
}

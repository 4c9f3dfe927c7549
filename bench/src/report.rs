//! The whole run's figures: the printed table, `report.json` and the
//! targets the product card sets.

use kiln_stats::bytes;
use serde_json::{Value, json};

use crate::calls::{Calls, WAYS};
use crate::handoff::Handoff;
use crate::save_serving::SaveToServing;
use crate::serving::Serving;
use crate::soak::Soak;
use crate::table::{Table, num};

/// "A few ms": kiln's artifact-to-serving budget on top of the state copy.
pub const SERVING_BUDGET_MS: f64 = 5.0;
/// Handoff must run at least this fraction of memcpy's speed.
pub const HANDOFF_MIN_FRACTION: f64 = 0.5;
/// A tiny kernel through kiln: at most this much slower than static (ns).
pub const TINY_CALL_BUDGET_NS: f64 = 10_000.0;
/// A ~1 ms kernel through kiln: at most this ratio to static.
pub const LONG_CALL_MAX_RATIO: f64 = 1.02;
/// RSS may grow at most this much between the second soak checkpoint and
/// the last.
pub const SOAK_MAX_LATE_GROWTH: i64 = 4 << 20;

/// One target of the product card, met or not, with the figures behind it.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub met: bool,
    pub detail: String,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub quick: bool,
    pub serving: Serving,
    pub save: SaveToServing,
    pub calls: Calls,
    pub handoff: Handoff,
    pub isolation: crate::isolation::Isolation,
    pub soak: Soak,
    pub seconds: f64,
    /// `/proc/loadavg`'s 1-minute load at the start and at the end: other
    /// work on the machine inflates thread-handoff costs most.
    pub load_start: f64,
    pub load_end: f64,
}

/// The 1-minute load average (NaN if unreadable).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Report {
    /// The memcpy time of `bytes` at the measured rate of the nearest
    /// handoff size (ms).
    fn memcpy_ms(&self, bytes: usize) -> f64 {
        let nearest = self
            .handoff
            .sizes
            .iter()
            .min_by_key(|s| s.bytes.abs_diff(bytes));
        nearest.map_or(f64::NAN, |s| {
            bytes as f64 / (s.memcpy_gbps.median * 1e9) * 1e3
        })
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for k in &self.serving.kiln {
            let copy = self.memcpy_ms(k.state_bytes);
            let over = k.ready_ms.median - copy;
            targets.push(Target {
                name: format!("artifact to serving, {} of state", bytes::human(k.state_bytes as u64)),
                met: over <= SERVING_BUDGET_MS,
                detail: format!(
                    "{} ms = one state memcpy ({} ms) + {} ms; budget {SERVING_BUDGET_MS} ms + copy",
                    num(k.ready_ms.median),
                    num(copy),
                    num(over)
                ),
            });
        }
        targets.extend(self.isolation.targets());
        for s in &self.handoff.sizes {
            let ratio = s.ratio_to_memcpy();
            targets.push(Target {
                name: format!(
                    "handoff >= {HANDOFF_MIN_FRACTION} x memcpy, {}",
                    bytes::human(s.bytes as u64)
                ),
                met: ratio >= HANDOFF_MIN_FRACTION,
                detail: format!(
                    "{} GB/s vs memcpy {} GB/s: {}x",
                    num(s.handoff_gbps.median),
                    num(s.memcpy_gbps.median),
                    num(ratio)
                ),
            });
        }
        if let Some(tiny) = self.calls.kernels.first() {
            for way in &WAYS[2..4] {
                let over = tiny.overhead_ns(way);
                targets.push(Target {
                    name: format!("call overhead, {}, {way}", tiny.kernel),
                    met: over <= TINY_CALL_BUDGET_NS,
                    detail: format!(
                        "+{} us over static (budget {} us)",
                        num(over / 1e3),
                        TINY_CALL_BUDGET_NS / 1e3
                    ),
                });
            }
        }
        if let Some(long) = self.calls.kernels.last() {
            for way in &WAYS[2..4] {
                let ratio = long.ratio(way);
                targets.push(Target {
                    name: format!("call overhead, {}, {way}", long.kernel),
                    met: ratio <= LONG_CALL_MAX_RATIO,
                    detail: format!(
                        "{:+.2}% vs static (budget +{:.0}%)",
                        (ratio - 1.0) * 100.0,
                        (LONG_CALL_MAX_RATIO - 1.0) * 100.0
                    ),
                });
            }
        }
        targets.extend(self.calls.replay_targets());
        let k = &self.soak.kiln;
        let last = k.checkpoints.last();
        let from = k.checkpoints.get(1).map_or(0, |c| c.reloads);
        let to = last.map_or(0, |c| c.reloads);
        let mapped = last.map_or(usize::MAX, |c| c.mapped_executable);
        let per_swap_kib =
            k.late_growth() as f64 / 1024.0 / (to.saturating_sub(from).max(1)) as f64;
        targets.push(Target {
            name: "RSS flat after the first few swaps (kiln)".to_string(),
            met: k.late_growth() <= SOAK_MAX_LATE_GROWTH && mapped <= 1,
            detail: format!(
                "{} MiB from swap {from} to {to} ({} KiB per swap; budget {} MiB); {} module file(s) mapped executable at the end",
                num(k.late_growth() as f64 / (1 << 20) as f64),
                num(per_swap_kib),
                SOAK_MAX_LATE_GROWTH >> 20,
                mapped
            ),
        });
        targets
    }

    pub fn to_json(&self) -> Value {
        json!({
            "format": "kiln-bench/1",
            "quick": self.quick,
            "seconds": self.seconds,
            "load_average": { "start": self.load_start, "end": self.load_end },
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "threads": crate::kiln_side::THREADS,
            "artifact_to_serving": self.serving.to_json(),
            "save_to_serving": self.save.to_json(),
            "call_overhead": self.calls.to_json(),
            "handoff": self.handoff.to_json(),
            "isolation": self.isolation.to_json(),
            "soak": self.soak.to_json(),
            "targets": self.targets().iter().map(|t| json!({
                "name": t.name, "met": t.met, "detail": t.detail,
            })).collect::<Vec<_>>(),
        })
    }

    /// The printed report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let pm = |s: &crate::stats::Summary| format!("{} ± {}", num(s.median), num(s.mad));
        out.push_str(&format!(
            "kiln vs the alternatives{}: medians over repeated runs ± MAD, after warm-up, interleaved; {} threads per pool\n\n",
            if self.quick { " (QUICK smoke run: figures not meaningful)" } else { "" },
            crate::kiln_side::THREADS
        ));

        let s = &self.serving;
        out.push_str(&format!(
            "1. Artifact to serving (kernel-cpu, {} KiB artifact; ms until a call is answered by the new version)\n",
            s.artifact_bytes / 1024
        ));
        let mut t = Table::new(&["alternative", "state", "ms", "x kiln", "breakdown"]);
        let kiln_ms = |bytes: usize| {
            s.kiln
                .iter()
                .find(|k| k.state_bytes == bytes)
                .or(s.kiln.first())
                .map_or(f64::NAN, |k| k.ready_ms.median)
        };
        for k in &s.kiln {
            t.row(vec![
                "kiln stage+load+handoff+promote+call".into(),
                bytes::human(k.state_bytes as u64),
                pm(&k.ready_ms),
                "1".into(),
                format!(
                    "stage {} load {} handoff {} call {} (retire {}, after promotion)",
                    num(k.stage_ms.median),
                    num(k.load_ms.median),
                    num(k.handoff_ms.median),
                    num(k.first_call_ms.median),
                    num(k.retire_ms.median)
                ),
            ]);
        }
        let small = s.kiln.first().map_or(0, |k| k.state_bytes);
        t.row(vec![
            "hot-lib-reloader update()+call".into(),
            "none".into(),
            pm(&s.hot_update_ms),
            num(s.hot_update_ms.median / kiln_ms(small)),
            "close old, copy, crc32, dlopen; moves no state".into(),
        ]);
        t.row(vec![
            format!(
                "hot-lib-reloader incl. file watch ({} ms debounce)",
                s.debounce_ms
            ),
            "none".into(),
            pm(&s.hot_watch_ms),
            num(s.hot_watch_ms.median / kiln_ms(small)),
            "rename of the new file to answer".into(),
        ]);
        for r in &s.restart {
            t.row(vec![
                "process restart, state read from file".into(),
                bytes::human(r.state_bytes as u64),
                pm(&r.ready_ms),
                num(r.ready_ms.median / kiln_ms(r.state_bytes)),
                "spawn to first answer; file in page cache".into(),
            ]);
        }
        out.push_str(&t.render());

        out.push_str(&self.save.render());

        out.push_str(&self.calls.render());

        out.push_str("\n4. Handoff throughput (export + import of resident state in a swap; GB/s = 10^9 B/s)\n");
        let mut t = Table::new(&[
            "state",
            "handoff GB/s",
            "export ms",
            "export GB/s",
            "import ms",
            "memcpy GB/s",
            "fresh-alloc copy GB/s",
            "handoff/memcpy",
        ]);
        for h in &self.handoff.sizes {
            t.row(vec![
                bytes::human(h.bytes as u64),
                pm(&h.handoff_gbps),
                num(h.export_ms.median),
                num(h.export_gbps.median),
                num(h.import_ms.median),
                pm(&h.memcpy_gbps),
                pm(&h.fresh_copy_gbps),
                format!("{:.2}", h.ratio_to_memcpy()),
            ]);
        }
        out.push_str(&t.render());

        out.push_str("\n5. Reload soak (RSS of the whole process; module copies mapped, executable; threads)\n");
        let mut t = Table::new(&["series", "reloads", "RSS MiB", "mapped (exec)", "threads"]);
        for series in [&self.soak.kiln, &self.soak.hot] {
            t.row(vec![
                series.name.clone(),
                "0".into(),
                num(series.rss_start as f64 / (1 << 20) as f64),
                String::new(),
                String::new(),
            ]);
            for c in &series.checkpoints {
                t.row(vec![
                    series.name.clone(),
                    c.reloads.to_string(),
                    num(c.rss_bytes as f64 / (1 << 20) as f64),
                    format!("{} ({})", c.mapped_files, c.mapped_executable),
                    c.threads.to_string(),
                ]);
            }
        }
        out.push_str(&t.render());

        out.push_str("\n6. Isolation (kernels run in a worker process; medians ± MAD)\n");
        let mut t = Table::new(&["figure", "in-process", "worker", "worker/in-process"]);
        for row in self.isolation.rows() {
            t.row(row.to_vec());
        }
        out.push_str(&t.render());

        out.push_str("\nTargets\n");
        for target in self.targets() {
            out.push_str(&format!(
                "  [{}] {}: {}\n",
                if target.met { "met" } else { "MISSED" },
                target.name,
                target.detail
            ));
        }
        out.push_str(&format!(
            "\n(run took {:.0} s on {} cores; load average {:.1} at the start, {:.1} at the end)\n",
            self.seconds,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            self.load_start,
            self.load_end
        ));
        out
    }
}

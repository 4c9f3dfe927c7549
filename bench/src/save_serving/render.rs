//! Section 2 as printed and as JSON.

use kiln_stats::bytes;
use serde_json::{Value, json};

use super::cu_compile::{self, CuCompile};
use super::{DEBOUNCE_MS, Row, SaveToServing, ShaderSave};
use crate::stats::Summary;
use crate::table::{Table, num};

fn pm(s: &Summary) -> String {
    format!("{} ± {}", num(s.median), num(s.mad))
}

/// The WGSL row as JSON.
pub fn wgsl_json(row: &Row<ShaderSave>) -> Value {
    match row {
        Row::NotMeasured(why) => json!({ "not_measured": why }),
        Row::Measured(w) => json!({
            "edit": w.edit,
            "debounce_ms": w.debounce_ms.to_json(),
            "stage_ms": w.stage_ms.to_json(),
            "swap_ms": w.swap_ms.to_json(),
            "total_ms": w.total_ms.to_json(),
            "reported_total_ms": w.reported_total_ms.to_json(),
            "replay_ms": w.replay_ms.to_json(),
            "builds": w.builds,
            "all_restaged": w.all_restaged,
            "replay_calls": w.replay_calls,
            "versions": w.versions,
        }),
    }
}

/// The `.cu` row as JSON.
pub fn cu_json(row: &CuCompile) -> Value {
    match row {
        CuCompile::NotMeasured(why) => json!({ "not_measured": why }),
        CuCompile::Measured {
            stage_ms,
            nvrtc_ms,
            total_ms,
            first_ms,
            ptx_bytes,
            nvrtc_version,
        } => json!({
            "edit": format!("`{}` <-> `{}` in kernels/cuda/{}", cu_compile::FROM, cu_compile::TO, cu_compile::SOURCE),
            "arch": cu_compile::ARCH,
            "stage_ms": stage_ms.to_json(),
            "nvrtc_ms": nvrtc_ms.to_json(),
            "total_ms": total_ms.to_json(),
            "first_compile_ms": first_ms,
            "ptx_bytes": ptx_bytes,
            "nvrtc_version": format!("{}.{}", nvrtc_version.0, nvrtc_version.1),
            "swap_on_gpu": "measured by scripts/gpu-check.sh only",
        }),
    }
}

impl SaveToServing {
    /// Section 2 of the printed report.
    pub fn render(&self) -> String {
        let (k, r) = (&self.kiln, &self.restart);
        let mut out = format!(
            "\n2. Save to serving (one-line edit: {}; ms from the write until the new version serves; \
             {} edits each after {} warm-up, alternating)\n",
            self.edit, self.rounds, self.warmup
        );
        let mut t = Table::new(&[
            "alternative",
            "state",
            "debounce",
            "build",
            "stage+load",
            "handoff",
            "start+load state",
            "total",
            "x kiln",
            "replay after",
        ]);
        let none = String::new;
        t.row(vec![
            format!("kiln dev ({DEBOUNCE_MS} ms debounce)"),
            bytes::human(k.handoff_bytes),
            num(k.debounce_ms.median),
            pm(&k.build_ms),
            num(k.stage_load_ms.median),
            num(k.handoff_ms.median),
            none(),
            pm(&k.total_ms),
            "1".into(),
            format!("{} ({} calls)", num(k.replay_ms.median), k.replay_calls),
        ]);
        t.row(vec![
            "restart loop: cargo build, start, read state".into(),
            bytes::human(r.state_bytes as u64),
            none(),
            pm(&r.build_ms),
            none(),
            none(),
            num(r.start_load_ms.median),
            pm(&r.total_ms),
            num(self.restart_over_kiln()),
            none(),
        ]);
        out.push_str(&t.render());
        out.push_str(&format!(
            "  (kiln's own figure from the first file event: {} ms; kiln's builds: {})\n  \
             kiln compiles:         {}\n  \
             restart loop compiles: {}\n  \
             both with [profile.release]: {}\n",
            num(k.reported_total_ms.median),
            build_paths(&k.build_paths),
            self.compiles.kiln,
            self.compiles.restart,
            self.compiles.profile,
        ));

        // The edits that skip cargo.
        out.push_str(&format!(
            "\n  Shader and CUDA edits (no cargo build; {} edits each after {} warm-up; ms)\n",
            self.rounds, self.warmup
        ));
        let mut t = Table::new(&[
            "edit",
            "change seen",
            "stage",
            "swap (compile, pipelines, handoff)",
            "total",
            "replay after",
            "builds",
        ]);
        match &self.wgsl {
            Row::Measured(w) => t.row(vec![
                "kiln dev --backend vulkan (lavapipe), WGSL edit".into(),
                num(w.debounce_ms.median),
                num(w.stage_ms.median),
                pm(&w.swap_ms),
                pm(&w.total_ms),
                format!("{} ({} calls)", num(w.replay_ms.median), w.replay_calls),
                format!(
                    "{}{}",
                    w.builds,
                    if w.all_restaged {
                        ""
                    } else {
                        " (not all restaged!)"
                    }
                ),
            ]),
            Row::NotMeasured(why) => t.row(vec![
                "kiln dev --backend vulkan, WGSL edit".into(),
                format!("not measured: {why}"),
            ]),
        }
        match &self.cu {
            CuCompile::Measured {
                stage_ms,
                nvrtc_ms,
                total_ms,
                ..
            } => t.row(vec![
                ".cu edit, compile path (no GPU): stage + NVRTC".into(),
                "-".into(),
                num(stage_ms.median),
                format!("NVRTC {}", pm(nvrtc_ms)),
                pm(total_ms),
                "-".into(),
                "0".into(),
            ]),
            CuCompile::NotMeasured(why) => t.row(vec![
                ".cu edit, compile path".into(),
                format!("not measured: {why}"),
            ]),
        }
        out.push_str(&t.render());
        if let Row::Measured(w) = &self.wgsl {
            out.push_str(&format!(
                "  WGSL edit: {} (kiln's own figure from the first file event: {} ms)\n",
                w.edit,
                num(w.reported_total_ms.median)
            ));
        }
        if let CuCompile::Measured {
            first_ms,
            ptx_bytes,
            nvrtc_version,
            ..
        } = &self.cu
        {
            out.push_str(&format!(
                "  .cu edit: `{}` <-> `{}` in kernels/cuda/{}; the version's files staged and read \
                 back as the worker does, then NVRTC {}.{} for {} ({} bytes of PTX; the first compile \
                 of the process, NVRTC loading, took {} ms, unmeasured). The engine compiles only \
                 the changed file (PTX cache). What the swap adds on a GPU (module load, PTX JIT, \
                 handoff): scripts/gpu-check.sh (\"engine with an edited saxpy.cu\").\n",
                cu_compile::FROM,
                cu_compile::TO,
                cu_compile::SOURCE,
                nvrtc_version.0,
                nvrtc_version.1,
                cu_compile::ARCH,
                ptx_bytes,
                num(*first_ms),
            ));
        }

        out.push_str("\n  Every call of the bundled workload, before and after the build change (kiln's interleaved replay on the same state; verdict: kiln's rule)\n");
        match &self.calls {
            Row::Measured(table) => out.push_str(&table.render()),
            Row::NotMeasured(why) => out.push_str(&format!("  not measured: {why}\n")),
        }
        out
    }
}

/// `5 rustc direct` or `4 rustc direct, 1 cargo`: how the measured edits
/// were built, counted.
fn build_paths(paths: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for path in paths {
        let path = if path.is_empty() { "?" } else { path.as_str() };
        match counts.iter_mut().find(|(p, _)| *p == path) {
            Some((_, n)) => *n += 1,
            None => counts.push((path, 1)),
        }
    }
    counts
        .iter()
        .map(|(p, n)| format!("{n} {p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

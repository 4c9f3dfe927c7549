//! Section 5 of the report: reload soak. Resident memory, mapped module files and threads after
//! 1, 10, 100 and 500 reloads. kiln swaps fresh staged copies (1 MiB of
//! state moves each time); hot-lib-reloader reloads a new build of the
//! same artifact each time and calls it.

use std::path::Path;
use std::time::Duration;

use kiln::process::{mapped_files_under, rss_bytes, thread_count};
use serde_json::{Value, json};

use crate::config::Config;
use crate::hot_reloader::{HotLibReloader, prime, write_new_build};
use crate::kiln_side::{KilnSide, output_f32, saxpy_call};

/// The process after `reloads` reloads.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub reloads: usize,
    pub rss_bytes: u64,
    /// Module files (staged or loaded copies) still mapped.
    pub mapped_files: usize,
    /// Of those, mapped executable (code still live).
    pub mapped_executable: usize,
    pub threads: usize,
}

#[derive(Clone, Debug)]
pub struct SoakSeries {
    pub name: String,
    /// RSS before the first reload (after the first load).
    pub rss_start: u64,
    pub checkpoints: Vec<Checkpoint>,
}

impl SoakSeries {
    /// RSS growth from the second checkpoint to the last (bytes; negative:
    /// it shrank). "After the first few swaps".
    pub fn late_growth(&self) -> i64 {
        let from = self.checkpoints.get(1).or(self.checkpoints.first());
        match (from, self.checkpoints.last()) {
            (Some(a), Some(b)) => b.rss_bytes as i64 - a.rss_bytes as i64,
            _ => 0,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "rss_start_bytes": self.rss_start,
            "late_rss_growth_bytes": self.late_growth(),
            "checkpoints": self.checkpoints.iter().map(|c| json!({
                "reloads": c.reloads,
                "rss_bytes": c.rss_bytes,
                "mapped_files": c.mapped_files,
                "mapped_executable": c.mapped_executable,
                "threads": c.threads,
            })).collect::<Vec<_>>(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct Soak {
    pub kiln: SoakSeries,
    pub hot: SoakSeries,
}

impl Soak {
    pub fn to_json(&self) -> Value {
        json!({ "kiln": self.kiln.to_json(), "hot_lib_reloader": self.hot.to_json() })
    }
}

fn checkpoint(reloads: usize, dir: &Path) -> Checkpoint {
    let mapped = mapped_files_under(dir, None);
    Checkpoint {
        reloads,
        rss_bytes: rss_bytes(),
        mapped_files: mapped.len(),
        mapped_executable: mapped.iter().filter(|m| m.executable).count(),
        threads: thread_count(None),
    }
}

fn kiln_soak(config: &Config, artifact: &Path) -> Result<SoakSeries, String> {
    let side = KilnSide::new(&config.workspace, artifact, "soak")?;
    let served = side.serve(1 << 20)?;
    let last = config.soak_checkpoints.iter().copied().max().unwrap_or(0);
    let rss_start = rss_bytes();
    let mut checkpoints = Vec::new();
    for i in 1..=last {
        served
            .swap(side.fresh_module()?)
            .map_err(|e| e.to_string())?;
        let out = served
            .call(saxpy_call(&[1.0], &[2.0]))
            .map_err(|e| e.to_string())?;
        if output_f32(out)? != [3.5] {
            return Err(format!("kiln soak: wrong answer after swap {i}"));
        }
        if config.soak_checkpoints.contains(&i) {
            checkpoints.push(checkpoint(i, side.stage.path()));
        }
    }
    Ok(SoakSeries {
        name: "kiln".to_string(),
        rss_start,
        checkpoints,
    })
}

fn hot_soak(
    config: &Config,
    artifact: &Path,
    hot: &dyn HotLibReloader,
) -> Result<SoakSeries, String> {
    let bytes =
        std::fs::read(artifact).map_err(|e| format!("cannot read {}: {e}", artifact.display()))?;
    let dir = config.out_dir.join("hot-lib-reloader-soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let watched = dir.join("libkernel_cpu.so");
    let mut counter = 0;
    write_new_build(&bytes, &watched, counter)?;
    let mut reloader = hot.reloader(&dir, "kernel_cpu", config.watch_debounce_ms)?;
    reloader.call()?;
    // The first reload (after the watcher is surely watching) is the
    // baseline, like kiln's first load.
    prime(reloader.as_mut(), &bytes, &watched, &mut counter)?;
    let last = config.soak_checkpoints.iter().copied().max().unwrap_or(0);
    let rss_start = rss_bytes();
    let mut checkpoints = Vec::new();
    for i in 1..=last {
        counter += 1;
        write_new_build(&bytes, &watched, counter)?;
        reloader.wait_for_change(Duration::from_secs(10))?;
        if !reloader.update()? {
            return Err(format!("hot-lib-reloader soak: reload {i} did not happen"));
        }
        reloader.call()?;
        if config.soak_checkpoints.contains(&i) {
            checkpoints.push(checkpoint(i, &dir));
        }
    }
    Ok(SoakSeries {
        name: hot.describe(),
        rss_start,
        checkpoints,
    })
}

pub fn measure(config: &Config, artifact: &Path, hot: &dyn HotLibReloader) -> Result<Soak, String> {
    Ok(Soak {
        kiln: kiln_soak(config, artifact)?,
        hot: hot_soak(config, artifact, hot)?,
    })
}

//! Tuning results on disk: `target/kiln/tuning/KEY.json`, one file per
//! (declaration hash, the code's hash, candidate list, device, machine, call
//! dims and dtypes). The code's hash is the staged version's (library bytes,
//! declarations, run-time sources: `tuner::code_hash`), so any edit that
//! changes the module's code re-tunes; the machine is the CPU model and its
//! hardware threads.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// What a tuning result depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TuneKey {
    pub kernel: String,
    pub param: String,
    pub declaration_hash: String,
    /// The staged version's hash: library bytes, declarations, sources.
    pub code_hash: String,
    /// The CPU model and hardware threads it was timed on.
    pub machine: String,
    pub candidates: Vec<String>,
    pub device: String,
    /// One `dtype[dims]` per call tuned on.
    pub calls: Vec<String>,
}

impl TuneKey {
    pub fn file_stem(&self) -> String {
        let json = serde_json::to_string(self).expect("key serialises");
        format!(
            "{}-{}-{:016x}",
            self.kernel,
            self.param,
            xxh3_64(json.as_bytes())
        )
    }
}

/// A finished tuning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneResult {
    pub key: TuneKey,
    /// The value kept (as the declaration writes it).
    pub best: String,
    /// The table of candidates, as printed.
    pub table: String,
}

pub struct TuneCache {
    dir: PathBuf,
}

impl TuneCache {
    pub fn in_target(target_dir: &Path) -> TuneCache {
        TuneCache {
            dir: target_dir.join("kiln").join("tuning"),
        }
    }

    pub fn at(dir: impl Into<PathBuf>) -> TuneCache {
        TuneCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &TuneKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.file_stem()))
    }

    /// The cached result for exactly `key` (an unreadable file is a miss).
    pub fn load(&self, key: &TuneKey) -> Option<TuneResult> {
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        let result: TuneResult = serde_json::from_str(&text).ok()?;
        (result.key == *key).then_some(result)
    }

    /// Writes `result` (temporary file renamed into place).
    pub fn save(&self, result: &TuneResult) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.path(&result.key);
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        let json = serde_json::to_string_pretty(result).expect("result serialises");
        std::fs::write(&tmp, json).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

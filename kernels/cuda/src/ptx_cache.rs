//! PTX carried from one engine to the next through the state handoff, so
//! that a version whose `.cu` file did not change does not run NVRTC for it
//! again (70-170 ms a file here).
//!
//! Each compiled kernel is exported as one text section
//! `cache/cuda/ptx/PATH`: a key line, then the PTX. The key names what the
//! PTX was made from and for: the source's hash and length, the
//! architecture and NVRTC's version, and the PTX's own hash. An entry is
//! used only when all of them match the new engine's source and setting and
//! the PTX still hashes to its recorded value; anything else (another
//! source, another device or NVRTC, a damaged or foreign section) is
//! ignored and the source is compiled. A cached PTX goes through the same
//! checks against the declaration as a fresh one, so a declaration edit is
//! still checked.

use std::collections::BTreeMap;

use shared_state::{Scalar, Snapshot, SourceFile};

/// Snapshot section prefix of the cached PTX (followed by the source path).
pub const PREFIX: &str = "cache/cuda/ptx/";

/// What one PTX was compiled from and for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub source_hash: u64,
    pub source_len: usize,
    pub arch: String,
    pub nvrtc: (i32, i32),
}

impl Key {
    pub fn of(source: &SourceFile, arch: &str, nvrtc: (i32, i32)) -> Key {
        Key {
            source_hash: fnv1a(source.text.as_bytes()),
            source_len: source.text.len(),
            arch: arch.to_string(),
            nvrtc,
        }
    }

    fn line(&self, ptx: &str) -> String {
        format!(
            "kiln-ptx-cache v1 source={:016x} len={} arch={} nvrtc={}.{} ptx={:016x}",
            self.source_hash,
            self.source_len,
            self.arch,
            self.nvrtc.0,
            self.nvrtc.1,
            fnv1a(ptx.as_bytes())
        )
    }
}

/// The cached PTX of the previous engine, by source path.
#[derive(Default)]
pub struct PtxCache {
    entries: BTreeMap<String, String>,
}

impl PtxCache {
    /// Takes every `cache/cuda/ptx/` section out of `snapshot` (valid or
    /// not: they are never reported as dropped state). Validity is checked
    /// per use, in [`PtxCache::get`].
    pub fn take_from(snapshot: &mut Snapshot) -> PtxCache {
        let mut entries = BTreeMap::new();
        for name in snapshot.section_names() {
            if let Some(path) = name.strip_prefix(PREFIX) {
                if let Some(Scalar::Text(text)) = snapshot.take_scalar(&name) {
                    entries.insert(path.to_string(), text);
                }
            }
        }
        PtxCache { entries }
    }

    /// The cached PTX of `path` if it was compiled from exactly this source
    /// for this architecture by this NVRTC, and is intact.
    pub fn get(&self, path: &str, key: &Key) -> Option<String> {
        let entry = self.entries.get(path)?;
        let (line, ptx) = entry.split_once('\n')?;
        (line == key.line(ptx)).then(|| ptx.to_string())
    }
}

/// Writes one entry into `snapshot`.
pub fn insert(snapshot: &mut Snapshot, path: &str, key: &Key, ptx: &str) {
    snapshot.insert_scalar(
        format!("{PREFIX}{path}"),
        Scalar::Text(format!("{}\n{ptx}", key.line(ptx))),
    );
}

/// 64-bit FNV-1a: stable across builds and versions (unlike std's hasher).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

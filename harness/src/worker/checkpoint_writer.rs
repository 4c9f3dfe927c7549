//! Writes the engine's state into a checkpoint slot: a memfd the supervisor
//! created and owns, so the state of the last good point outlives this
//! process. The supervisor alternates between two slots and only switches
//! to the new one once this write has been acknowledged: a worker that dies
//! mid-write leaves the previous checkpoint whole.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use shared_state::{Scalar, Section, Snapshot};
use xxhash_rust::xxh3::Xxh3;

use super::protocol::{Checkpointed, SLOT_FDS};
use crate::swap::snapshot_file;

/// The path that opens slot `slot` afresh (its own file offset).
pub fn slot_path(slot: usize) -> Result<PathBuf, String> {
    SLOT_FDS
        .get(slot)
        .map(|fd| PathBuf::from(format!("/proc/self/fd/{fd}")))
        .ok_or_else(|| format!("no checkpoint slot {slot}"))
}

/// A writer that counts what passes through.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The hash of the *state* in `snapshot`: every section but the caches an
/// engine rebuilds ([`shared_state::CACHE_SECTION_PREFIX`]: compiled
/// pipelines, PTX), each by name, kind, dtype, shape and bytes. Two engines
/// hold the same state when these agree, whatever they have compiled yet.
pub fn state_hash(snapshot: &Snapshot) -> String {
    let mut hasher = Xxh3::new();
    hasher.update(snapshot.module.as_bytes());
    hasher.update(&[0]);
    for (name, section) in snapshot.sections() {
        if Snapshot::is_cache_section(name) {
            continue;
        }
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        match section {
            Section::Tensor(t) => {
                hasher.update(b"tensor");
                hasher.update(t.dtype().name().as_bytes());
                for d in t.shape() {
                    hasher.update(&(*d as u64).to_le_bytes());
                }
                let bytes = t.data().as_bytes();
                hasher.update(&(bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
            Section::Scalar(Scalar::I64(v)) => {
                hasher.update(b"i64");
                hasher.update(&v.to_le_bytes());
            }
            Section::Scalar(Scalar::F64(v)) => {
                hasher.update(b"f64");
                hasher.update(&v.to_bits().to_le_bytes());
            }
            Section::Scalar(Scalar::Bool(v)) => {
                hasher.update(b"bool");
                hasher.update(&[*v as u8]);
            }
            Section::Scalar(Scalar::Text(v)) => {
                hasher.update(b"text");
                hasher.update(&(v.len() as u64).to_le_bytes());
                hasher.update(v.as_bytes());
            }
        }
    }
    format!("{:032x}", hasher.digest128())
}

/// Encodes `snapshot` into `out`; returns the state's hash
/// ([`state_hash`]) and the bytes written.
fn encode<W: Write>(snapshot: &Snapshot, out: W) -> std::io::Result<(W, String, u64)> {
    let mut counting = Counting {
        inner: out,
        bytes: 0,
    };
    snapshot_file::write_to(snapshot, &mut counting)?;
    counting.flush()?;
    Ok((counting.inner, state_hash(snapshot), counting.bytes))
}

/// Writes `snapshot` into checkpoint slot `slot`.
pub fn write_slot(snapshot: &Snapshot, slot: usize) -> Result<Checkpointed, String> {
    let start = Instant::now();
    let path = slot_path(slot)?;
    let file: File = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("cannot open checkpoint slot {slot}: {e}"))?;
    let (out, hash, bytes) = encode(snapshot, BufWriter::with_capacity(1 << 20, file))
        .map_err(|e| format!("cannot write checkpoint slot {slot}: {e}"))?;
    drop(out);
    Ok(Checkpointed {
        bytes,
        hash,
        ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// The hash `snapshot` would have as a checkpoint (nothing stored).
pub fn hash_only(snapshot: &Snapshot) -> Result<Checkpointed, String> {
    let start = Instant::now();
    let (_, hash, bytes) = encode(snapshot, std::io::sink()).map_err(|e| e.to_string())?;
    Ok(Checkpointed {
        bytes,
        hash,
        ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

//! Writes the engine's state into a checkpoint slot: a memfd the supervisor
//! created and owns, so the state of the last good point outlives this
//! process. The supervisor alternates between two slots and only switches
//! to the new one once this write has been acknowledged: a worker that dies
//! mid-write leaves the previous checkpoint whole.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use shared_state::Snapshot;

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

/// The hash of the *state* in `snapshot` (caches left out): see
/// [`crate::swap::state_hash`].
pub use crate::swap::state_hash::state_hash;

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
        unchanged: false,
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
        unchanged: false,
    })
}

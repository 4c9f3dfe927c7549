//! Writes the engine's state into a checkpoint: a fresh memfd the
//! supervisor created and owns (opened here by its `/proc` path), so the
//! state of the last good point outlives this process. The supervisor
//! seals it and makes it current only once this write has been
//! acknowledged: a worker that dies mid-write leaves the previous
//! checkpoint whole.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Instant;

use shared_state::{Section, Snapshot};

use super::protocol::Checkpointed;
use crate::swap::part_from_file::{self, CopyTimes, FileRange, RangeMismatch};
use crate::swap::snapshot_file::{self, PartWritten, Placed};

/// The hash of the *state* in `snapshot` (caches left out): see
/// [`crate::swap::state_hash`].
pub use crate::swap::state_hash::state_hash;

/// Writes `snapshot` whole into the checkpoint memfd at `path` (part 0, no
/// earlier part) and seals it like [`write_part`]. Returns what was written
/// and the sealed file.
pub fn write_checkpoint(snapshot: &Snapshot, path: &Path) -> Result<(Checkpointed, File), String> {
    write_part(snapshot, path, 0, &|_, _| None).map(|(written, file, _)| (written, file))
}

/// Writes `snapshot` into the checkpoint memfd at `path`, checkpoint part
/// `part`, and seals it against writing, shrinking and growing (the
/// supervisor adds its own seals next, and only then makes it current).
/// A tensor section `earlier` places in an earlier part is not copied:
/// the part points there ([`snapshot_file::write_part`]). Returns what was
/// written, the sealed file (read-only from now on: the worker may serve
/// from a mapping of it, [`super::host`]) and where every tensor section is.
pub fn write_part(
    snapshot: &Snapshot,
    path: &Path,
    part: u64,
    earlier: &dyn Fn(&str, &shared_state::Section) -> Option<Placed>,
) -> Result<(Checkpointed, File, BTreeMap<String, Placed>), String> {
    let start = Instant::now();
    let (part_written, file) = write_sealed(path, &mut |file| {
        snapshot_file::write_part(snapshot, file, part, earlier)
    })?;
    let mut parts: Vec<u64> = part_written.placed.values().map(|p| p.part).collect();
    parts.push(part);
    parts.sort_unstable();
    parts.dedup();
    let written = Checkpointed {
        bytes: part_written.bytes,
        state_bytes: tensor_bytes(snapshot),
        hash: part_written.hash,
        ms: start.elapsed().as_secs_f64() * 1e3,
        unchanged: false,
        copied_bytes: part_written.copied,
        parts,
    };
    Ok((written, file, part_written.placed))
}

/// Writes the tensors `snapshot` alone holds into the fresh memfd at
/// `path` as checkpoint part `part`, letting each go once written
/// ([`snapshot_file::write_part_taking`]), and seals it like
/// [`write_part`]. Returns what was written and the sealed file.
pub fn write_taking(
    snapshot: Snapshot,
    path: &Path,
    part: u64,
) -> Result<(PartWritten, File), String> {
    let mut snapshot = Some(snapshot);
    write_sealed(path, &mut |file| {
        let snapshot = snapshot.take().expect("written once");
        snapshot_file::write_part_taking(snapshot, file, part)
    })
}

/// Writes checkpoint part `part` into the fresh memfd at `path`, its
/// tensor sections the `ranges` of the file `from`, copied in the kernel
/// and checked there ([`part_from_file::write_part_from_file`]), and seals
/// it like [`write_part`]. Returns what was written, the sealed file and
/// the time the copy and the checks took;
/// `Ok(Err(mismatch))` when a range's bytes are not what its crc32 says
/// (nothing sealed), `Err` when it cannot be written or `stop` was set.
pub fn write_from_file(
    ranges: &[FileRange],
    from: &File,
    path: &Path,
    part: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Result<(PartWritten, File, CopyTimes), RangeMismatch>, String> {
    let mut mismatch = None;
    let mut times = CopyTimes::default();
    let written = write_sealed(path, &mut |file| {
        let written = part_from_file::write_part_from_file(
            "kiln-workload-loads",
            "host",
            ranges,
            from,
            file,
            part,
            stop,
        );
        match written {
            Ok((written, took)) => {
                times = took;
                Ok(written)
            }
            Err(e) => {
                mismatch = RangeMismatch::of(&e);
                Err(e)
            }
        }
    });
    match (written, mismatch) {
        (_, Some(mismatch)) => Ok(Err(mismatch)),
        (written, None) => written.map(|(written, file)| Ok((written, file, times))),
    }
}

/// Opens the memfd at `path` (read too: a mapping needs it), `write`s a
/// part into it and seals it against writing, shrinking and growing.
fn write_sealed(
    path: &Path,
    write: &mut dyn FnMut(&mut File) -> std::io::Result<PartWritten>,
) -> Result<(PartWritten, File), String> {
    let mut file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open the checkpoint {}: {e}", path.display()))?;
    let written = write(&mut file)
        .map_err(|e| format!("cannot write the checkpoint {}: {e}", path.display()))?;
    rustix::fs::fcntl_add_seals(
        &file,
        rustix::fs::SealFlags::WRITE | rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
    )
    .map_err(|e| format!("cannot seal the checkpoint {}: {e}", path.display()))?;
    Ok((written, file))
}

/// The bytes of `snapshot`'s tensor sections.
pub fn tensor_bytes(snapshot: &Snapshot) -> u64 {
    snapshot
        .sections()
        .map(|(_, s)| match s {
            Section::Tensor(t) => t.byte_len() as u64,
            Section::Scalar(_) => 0,
        })
        .sum()
}

/// The hash `snapshot` would have as a checkpoint, in one pass over its
/// bytes (nothing encoded or stored: a restarted engine serving a mapped
/// checkpoint is checked at memory speed); `bytes` is the state's tensor
/// bytes, not a file's length. With it, each state tensor section's digest
/// ([`crate::swap::state_hash::StateHasher::end_tensor`]), by name: a
/// worker serving a mapped checkpoint learns from them what its next
/// checkpoint need not read again.
pub fn hash_only(snapshot: &Snapshot) -> (Checkpointed, BTreeMap<String, u128>) {
    let start = Instant::now();
    let (hash, digests) = crate::swap::state_hash::state_hash_and_digests(snapshot);
    let bytes = tensor_bytes(snapshot);
    let written = Checkpointed {
        bytes,
        state_bytes: bytes,
        hash,
        ms: start.elapsed().as_secs_f64() * 1e3,
        unchanged: false,
        copied_bytes: 0,
        parts: Vec::new(),
    };
    (written, digests)
}

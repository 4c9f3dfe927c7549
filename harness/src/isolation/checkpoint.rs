//! The state of the last good point, outside the worker: a memfd per
//! checkpoint, which the supervisor creates, a worker writes (opening it by
//! a `/proc/<supervisor>/fd/N` path sent with the request), and the
//! supervisor seals once the worker says it is done (`F_SEAL_WRITE`,
//! `F_SEAL_SHRINK`, `F_SEAL_GROW`, `F_SEAL_SEAL`): from then on no one can
//! change, empty or grow it. Only then does it become current. A worker
//! that dies mid-write leaves the current checkpoint whole. The bytes are
//! a snapshot file, so `--state FILE` is a copy of them.
//!
//! A checkpoint is never emptied or rewritten: a restarted worker maps the
//! current one and serves it in place (`swap::snapshot_file::map`), so
//! rewriting it would change pages under the engine or fault (SIGBUS).
//! The supervisor only drops its descriptor when a newer one is current;
//! the memory goes when the last holder (a worker's mapping, the disk
//! copy) lets go.
//!
//! A checkpoint is a list of such memfds, its *parts*: each new one holds
//! only the sections that changed since the checkpoint before it, and its
//! header points to the earlier parts for the others
//! (`swap::snapshot_file::write_part`). The supervisor holds every part
//! the current checkpoint points to ([`Parts`]) and lets go of the others.
//! The disk copy and `--state FILE` assemble one whole snapshot file from
//! the parts.
//!
//! With [`Checkpoint::keep_on_disk`], every checkpoint is also copied to a
//! file behind the session ([`super::disk_copy`]): the copy holds the
//! sealed memfd it was given while the session goes on.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{MemfdFlags, SealFlags};

use super::checkpoint_parts::{Parts, path_of};
use super::disk_copy::{DiskCopy, Kept, Shared};
use crate::worker::protocol::{Checkpointed, StateSource};

/// The checkpoints.
pub struct Checkpoint {
    /// The memfd the checkpoint under way is written to (not sealed yet),
    /// and its part number.
    next: Option<(u64, File)>,
    /// The number of the last part made.
    last_part: u64,
    /// The current checkpoint (sealed parts) and what is in it.
    current: Option<(Arc<Parts>, Checkpointed)>,
    /// The part a starting worker reads the workload's large residents
    /// into (its number and memfd), under way until the start is done;
    /// then, sealed, held until a checkpoint points into it.
    loads: Option<(u64, Arc<File>)>,
    /// What the disk copy is to copy next, shared with it.
    shared: Arc<Shared>,
    /// The copy of every checkpoint to a file, when kept on disk.
    disk: Option<DiskCopy>,
}

impl Checkpoint {
    pub fn create() -> std::io::Result<Checkpoint> {
        Ok(Checkpoint {
            next: None,
            last_part: 0,
            current: None,
            loads: None,
            shared: Arc::default(),
            disk: None,
        })
    }

    /// A fresh memfd for the next checkpoint: the path a worker opens it
    /// by to write it. Any earlier one that was not committed is dropped.
    pub fn begin(&mut self) -> std::io::Result<PathBuf> {
        let (part, file, path) = self.new_part()?;
        self.next = Some((part, file));
        Ok(path)
    }

    /// A fresh, empty memfd for a part, its number and its path.
    fn new_part(&mut self) -> std::io::Result<(u64, File, PathBuf)> {
        let fd = rustix::fs::memfd_create(
            "kiln-checkpoint",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        let file = File::from(fd);
        let path = path_of(&file);
        self.last_part += 1;
        Ok((self.last_part, file, path))
    }

    /// A fresh memfd for a starting worker to read the workload's large
    /// residents into (a checkpoint part of their own, written once, so
    /// they are in memory once: the engine serves them mapped and the
    /// first checkpoint points there): its part number and the path the
    /// worker opens it by. Any earlier one not pointed into is dropped.
    pub fn begin_loads(&mut self) -> std::io::Result<(u64, PathBuf)> {
        let (part, file, path) = self.new_part()?;
        self.loads = Some((part, Arc::new(file)));
        Ok((part, path))
    }

    /// The worker wrote `bytes` into the part [`Checkpoint::begin_loads`]
    /// made (`None`: nothing, it is dropped): sealed like a checkpoint's,
    /// it is held for the next checkpoint to point into.
    pub fn commit_loads(&mut self, bytes: Option<u64>) -> Result<(), String> {
        let Some(bytes) = bytes else {
            self.loads = None;
            return Ok(());
        };
        let (_, file) = self.loads.as_ref().ok_or("no loads part under way")?;
        let sealed = seal(file, bytes);
        if sealed.is_err() {
            self.loads = None;
        }
        sealed
    }

    /// The part number of the memfd [`Checkpoint::begin`] made last.
    pub fn part_under_way(&self) -> u64 {
        self.next.as_ref().map_or(0, |(part, _)| *part)
    }

    /// The parts the current checkpoint holds: a new one may point into
    /// them.
    pub fn held(&self) -> Vec<u64> {
        let mut held: Vec<u64> = self
            .current
            .as_ref()
            .map(|(parts, _)| parts.files.keys().copied().collect())
            .unwrap_or_default();
        held.extend(self.loads.as_ref().map(|(part, _)| *part));
        held
    }

    /// The checkpoint written into the memfd [`Checkpoint::begin`] made
    /// holds the last good point: sealed, it becomes current (and, when
    /// kept on disk, the next one copied there). The previous one is let
    /// go (whoever still maps or copies it keeps it until done).
    /// The earlier parts it points to (`written.parts`) stay held, the
    /// others are let go.
    pub fn commit(&mut self, written: Checkpointed) -> Result<(), String> {
        let (part, file) = self
            .next
            .take()
            .ok_or("no checkpoint under way to commit")?;
        seal(&file, written.bytes)?;
        let mut files = BTreeMap::from([(part, Arc::new(file))]);
        for earlier in written.parts.iter().filter(|p| **p != part) {
            let loads = self
                .loads
                .as_ref()
                .filter(|(p, _)| p == earlier)
                .map(|(_, f)| f);
            let held = self
                .current
                .as_ref()
                .and_then(|(parts, _)| parts.files.get(earlier))
                .or(loads)
                .ok_or_else(|| {
                    format!(
                        "the checkpoint points to part {earlier}, which the current one does not hold"
                    )
                })?;
            files.insert(*earlier, held.clone());
        }
        // The loads part is the current checkpoint's to hold from now
        // on, or no one's.
        self.loads = None;
        let parts = Arc::new(Parts {
            newest: part,
            files,
        });
        if self.disk.is_some() {
            self.shared.lock().submit(parts.clone(), written.clone());
            self.shared.wake();
        }
        self.current = Some((parts, written));
        Ok(())
    }

    pub fn current(&self) -> Option<&Checkpointed> {
        self.current.as_ref().map(|(_, c)| c)
    }

    /// Where a restarted engine's state comes from.
    pub fn source(&self) -> StateSource {
        match &self.current {
            Some((parts, c)) => StateSource::Checkpoint {
                file: path_of(&parts.files[&parts.newest]),
                bytes: c.bytes,
                parts: parts
                    .files
                    .iter()
                    .filter(|(p, _)| **p != parts.newest)
                    .map(|(p, f)| (*p, path_of(f)))
                    .collect(),
                newest: parts.newest,
            },
            None => StateSource::Empty,
        }
    }

    /// From now on, copies every checkpoint to `path` on a thread of its
    /// own (the current one first, if any); `module` names it in the log.
    pub fn keep_on_disk(&mut self, path: &Path, module: &str) -> std::io::Result<()> {
        self.stop_keeping();
        let copy = DiskCopy::start(path, module, self.shared.clone())?;
        self.attach(copy);
        Ok(())
    }

    /// Copies every checkpoint with `copy` from now on, the current one
    /// first.
    pub(super) fn attach(&mut self, copy: DiskCopy) {
        self.stop_keeping();
        self.disk = Some(copy);
        let mut used = self.shared.lock();
        used.forget_last();
        if let Some((parts, written)) = &self.current {
            used.submit(parts.clone(), written.clone());
        }
        drop(used);
        self.shared.wake();
    }

    /// Holds the copy to disk between its pieces until the returned hold
    /// goes (kernels are being timed: [`super::disk_copy::Hold`]).
    pub fn hold_disk_copy(&self) -> super::disk_copy::Hold {
        super::disk_copy::Hold::new(&self.shared)
    }

    /// What the disk copy sees.
    #[cfg(test)]
    pub(super) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Waits until the newest checkpoint is on disk, then stops copying;
    /// returns the last copy's outcome (`None`: not kept on disk, or
    /// nothing was copied).
    pub fn stop_keeping(&mut self) -> Option<Result<Kept, String>> {
        self.disk.take().and_then(DiskCopy::finish)
    }

    /// Writes the current checkpoint to `path` as a snapshot file (whole
    /// under its name only, not synced), by a link to the disk copy's file
    /// where that holds it (`disk_copy/state_file.rs`). Returns its length.
    pub fn write_file(&self, path: &Path) -> Result<u64, String> {
        let Some((parts, written)) = &self.current else {
            return Err("no checkpoint taken yet".into());
        };
        super::disk_copy::state_file::put_in_place(parts, written, self.disk.as_ref(), path)
    }
}

/// Seals a part the worker wrote `bytes` into: from now on no one can
/// change, empty or grow it.
fn seal(file: &File, bytes: u64) -> Result<(), String> {
    let all = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(file, all)
        .map_err(|e| format!("cannot seal the checkpoint: {e}"))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != bytes {
        return Err(format!(
            "the checkpoint holds {len} bytes, the worker wrote {bytes}"
        ));
    }
    Ok(())
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        self.stop_keeping();
    }
}

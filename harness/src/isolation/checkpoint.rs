//! The state of the last good point, outside the worker: three
//! shared-memory slots (memfds the supervisor creates and keeps for the
//! whole session; every worker gets them as descriptors 4, 5 and 6). The
//! worker writes a new checkpoint into a slot that neither holds the
//! current one nor is being copied to disk; only when it says it is done
//! does that slot become current. A worker that dies mid-write leaves the
//! current checkpoint whole. The bytes are a snapshot file, so `--state
//! FILE` is a copy of them.
//!
//! With [`Checkpoint::keep_on_disk`], every checkpoint is also copied to a
//! file behind the session ([`super::disk_copy`]): the copy reads the slot
//! it was given while the session goes on into the two others, so the
//! session never waits for the disk. A slot that holds neither the current
//! checkpoint nor the one being copied is emptied (its memory given back).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use super::disk_copy::{DiskCopy, Kept, Shared};
use crate::worker::protocol::{Checkpointed, SLOT_FDS, StateSource};

/// How many checkpoint slots there are: the current one, the one the disk
/// copy reads, the one the next checkpoint goes to.
pub const SLOTS: usize = SLOT_FDS.len();

/// The checkpoint slots.
pub struct Checkpoint {
    slots: [File; SLOTS],
    /// The current slot and what is in it.
    current: Option<(usize, Checkpointed)>,
    /// Which slots are current and being copied, shared with the copy.
    shared: Arc<Shared>,
    /// The copy of every checkpoint to a file, when kept on disk.
    disk: Option<DiskCopy>,
}

impl Checkpoint {
    pub fn create() -> std::io::Result<Checkpoint> {
        let slot = |name: &str| -> std::io::Result<File> {
            let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
            Ok(File::from(fd))
        };
        Ok(Checkpoint {
            slots: [
                slot("kiln-checkpoint-a")?,
                slot("kiln-checkpoint-b")?,
                slot("kiln-checkpoint-c")?,
            ],
            current: None,
            shared: Arc::default(),
            disk: None,
        })
    }

    pub fn slots(&self) -> &[File; SLOTS] {
        &self.slots
    }

    /// The slot the next checkpoint goes to: neither the current one nor
    /// the one being copied to disk.
    pub fn next_slot(&self) -> usize {
        let used = self.shared.lock();
        (0..SLOTS)
            .find(|s| used.current != Some(*s) && used.pinned != Some(*s))
            .expect("three slots, at most two in use")
    }

    /// `slot` now holds the last good point (and, when kept on disk, is
    /// the next one copied there).
    pub fn commit(&mut self, slot: usize, written: Checkpointed) {
        let mut used = self.shared.lock();
        let before = used.current.replace(slot);
        if self.disk.is_some() {
            used.submit(slot, written.clone());
            self.shared.wake();
        }
        if let Some(old) = before
            && old != slot
            && used.pinned != Some(old)
        {
            // Nothing reads it any more: give its memory back.
            let _ = self.slots[old].set_len(0);
        }
        drop(used);
        self.current = Some((slot, written));
    }

    pub fn current(&self) -> Option<&Checkpointed> {
        self.current.as_ref().map(|(_, c)| c)
    }

    /// Where a restarted engine's state comes from.
    pub fn source(&self) -> StateSource {
        match &self.current {
            Some((slot, c)) => StateSource::Checkpoint {
                slot: *slot,
                bytes: c.bytes,
            },
            None => StateSource::Empty,
        }
    }

    /// From now on, copies every checkpoint to `path` on a thread of its
    /// own (the current one first, if any); `module` names it in the log.
    pub fn keep_on_disk(&mut self, path: &Path, module: &str) -> std::io::Result<()> {
        self.stop_keeping();
        let slots = [
            self.slots[0].try_clone()?,
            self.slots[1].try_clone()?,
            self.slots[2].try_clone()?,
        ];
        let copy = DiskCopy::start(path, module, slots, self.shared.clone())?;
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
        if let Some((slot, written)) = &self.current {
            used.submit(*slot, written.clone());
        }
        drop(used);
        self.shared.wake();
    }

    /// The slots' use, as the disk copy sees it.
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

    /// Writes the current checkpoint to `path` as a snapshot file (via a
    /// temporary file and a rename). Returns the bytes written.
    pub fn write_file(&self, path: &Path) -> Result<u64, String> {
        let Some((slot, written)) = &self.current else {
            return Err("no checkpoint taken yet".into());
        };
        let source = format!("/proc/self/fd/{}", self.slots[*slot].as_raw_fd());
        let tmp = path.with_extension("partial");
        let copy = || -> std::io::Result<u64> {
            let mut from = File::open(&source)?;
            let mut to = File::create(&tmp)?;
            let n = std::io::copy(&mut from, &mut to)?;
            to.flush()?;
            Ok(n)
        };
        let n = copy().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if n != written.bytes {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "checkpoint holds {n} bytes, {} were written",
                written.bytes
            ));
        }
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(n)
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        self.stop_keeping();
    }
}

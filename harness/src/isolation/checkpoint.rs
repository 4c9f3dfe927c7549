//! The state of the last good point, outside the worker: two shared-memory
//! slots (memfds the supervisor creates and keeps for the whole session;
//! every worker gets them as descriptors 4 and 5). The worker writes a new
//! checkpoint into the slot not holding the current one; only when it says
//! it is done does that slot become current. A worker that dies mid-write
//! leaves the current checkpoint whole. The bytes are a snapshot file, so
//! `--state FILE` is a copy of them.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::worker::protocol::{Checkpointed, StateSource};

/// The checkpoint slots.
pub struct Checkpoint {
    slots: [File; 2],
    /// The current slot and what is in it.
    current: Option<(usize, Checkpointed)>,
}

impl Checkpoint {
    pub fn create() -> std::io::Result<Checkpoint> {
        let slot = |name: &str| -> std::io::Result<File> {
            let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
            Ok(File::from(fd))
        };
        Ok(Checkpoint {
            slots: [slot("kiln-checkpoint-a")?, slot("kiln-checkpoint-b")?],
            current: None,
        })
    }

    pub fn slots(&self) -> &[File; 2] {
        &self.slots
    }

    /// The slot the next checkpoint goes to.
    pub fn next_slot(&self) -> usize {
        match self.current {
            Some((slot, _)) => 1 - slot,
            None => 0,
        }
    }

    /// `slot` now holds the last good point.
    pub fn commit(&mut self, slot: usize, written: Checkpointed) {
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

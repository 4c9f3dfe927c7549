//! The sealed parts of one checkpoint (`checkpoint.rs` makes them,
//! `disk_copy.rs` writes them to disk as one whole file): mapped together
//! they are its state.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::swap::snapshot_file;

/// The sealed parts of one checkpoint, by number: its newest part (whose
/// header lists every section) and every earlier part it points to.
#[derive(Debug)]
pub struct Parts {
    pub newest: u64,
    pub files: BTreeMap<u64, Arc<File>>,
}

impl Parts {
    /// The checkpoint's state, served from mappings of its parts.
    pub fn map(&self) -> Result<shared_state::Snapshot, String> {
        let newest = &self.files[&self.newest];
        let earlier = |part: u64| self.files.get(&part).and_then(|f| f.try_clone().ok());
        snapshot_file::map_parts(newest, &path_of(newest), &earlier, false)
            .map_err(|e| e.to_string())
    }

    /// Writes the checkpoint as one whole snapshot file to `out`; returns
    /// its length.
    pub fn write_whole(&self, out: &mut impl Write) -> Result<u64, String> {
        let snapshot = self.map()?;
        snapshot_file::write_to(&snapshot, out).map_err(|e| e.to_string())
    }
}

/// The path another process (or this one) opens `file` by
/// (`/proc/PID/fd/N`): its own open description, so its own offset.
pub(super) fn path_of(file: &File) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ))
}

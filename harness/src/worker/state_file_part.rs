//! A `--state` file's large tensor sections, put in memory once: copied
//! from the file straight into the start's loads part (a memfd the
//! supervisor made, `Request::Start::loads`) in the kernel, checked there
//! against the crc32s the file records, sealed, and served from the part's
//! mapping, as the workload's large loads are (`workload_loads.rs`). The
//! part is this worker's first "last checkpoint": the first real one
//! points into it instead of copying the state again.
//!
//! Before, the file was read into the heap (`snapshot_file::load`) and the
//! first checkpoint copied all of it again into a memfd: a 1 GiB state
//! restored in 0.67 s and then took 4.2 s to checkpoint before the first
//! replay, on this 2-core VM. The other sections (scalars, small tensors)
//! are read as before.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use shared_state::Snapshot;

use super::checkpoint_writer::write_from_file;
use super::last_checkpoint::LastCheckpoint;
use super::state_marks::SMALL;
use crate::swap::snapshot_file;

/// The snapshot in the state file at `path`, its tensors over [`SMALL`]
/// bytes copied into the fresh memfd `part` at `part_path` and served from
/// its mapping; with the part's length and what it holds as this worker's
/// last checkpoint (`None`: no large tensor, nothing written). A damaged
/// file is refused with the same reasons as `snapshot_file::load`.
pub fn load_into_part(
    path: &Path,
    part: u64,
    part_path: &Path,
) -> Result<(Snapshot, Option<(u64, LastCheckpoint)>), String> {
    let (mut snapshot, left) = snapshot_file::load_leaving(path, &|_, bytes| bytes > SMALL as u64)
        .map_err(|e| e.to_string())?;
    if left.is_empty() {
        return Ok((snapshot, None));
    }
    let from = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let never = AtomicBool::new(false);
    let (written, sealed, times) = match write_from_file(&left, &from, part_path, part, &never)? {
        Ok(done) => done,
        Err(mismatch) => {
            let range = &left[mismatch.index];
            return Err(format!(
                "{}: section {}: checksum mismatch (data at byte {})",
                path.display(),
                range.name,
                range.start
            ));
        }
    };
    tracing::debug!(
        "state file: {} bytes of {} tensor(s) copied into a part in {:.0} ms (sendfile), \
         checked in {:.0} ms",
        written.copied,
        left.len(),
        times.copy.as_secs_f64() * 1e3,
        times.check.as_secs_f64() * 1e3
    );
    let mapped =
        snapshot_file::map_parts(&sealed, part_path, &|_| None, true).map_err(|e| e.to_string())?;
    for range in &left {
        let tensor = mapped
            .get(&range.name)
            .and_then(|s| match s {
                shared_state::Section::Tensor(t) => Some(t.clone()),
                shared_state::Section::Scalar(_) => None,
            })
            .ok_or_else(|| format!("section {} is not in the part written", range.name))?;
        snapshot.insert_tensor(range.name.clone(), tensor);
    }
    let bytes = written.bytes;
    let last = LastCheckpoint::of_part(written, &mapped, part);
    Ok((snapshot, Some((bytes, last))))
}

//! The workload's large resident loads, put in memory once: copied from
//! the workload file straight into a checkpoint part of their own (a memfd
//! the supervisor made for it, `Request::Start::loads`), in the kernel,
//! checked there against the crc32s the file records, then served from the
//! sealed part's mapping by the workload's `Load` steps, so by the engine
//! and the reference engines they are loaded into. The part is this
//! worker's first "last checkpoint": the first real one points into it
//! instead of copying the residents again.
//!
//! Which loads go there is decided before the workload is read
//! ([`goes_into_part`]); the reader leaves their bytes in the file
//! (`workload::format::LoadAnswer::Leave`) and reads only the rest. So a
//! start neither reads those bytes into memory of its own first nor holds
//! them twice: the peak is the state. Nothing is served from a mapping of
//! the workload file itself (it may be rewritten in place): only from the
//! part, whose bytes are checked after they were copied.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use shared_state::{Snapshot, Tensor};

use super::checkpoint_writer::{write_from_file, write_taking};
use super::last_checkpoint::LastCheckpoint;
use super::state_marks::SMALL;
use crate::swap::part_from_file::{CopyTimes, FileRange};
use crate::swap::snapshot_file::{self, PartWritten};
use crate::workload::format::{LeftLoad, LoadSection, WorkloadError};
use crate::workload::{Step, Workload};

/// Whether the resident load `load` goes into the loads part (if the state
/// the worker starts from does not give it): a name loaded once (a name
/// loaded again replaces what it held), over [`SMALL`] bytes.
pub fn goes_into_part(load: &LoadSection) -> bool {
    in_part(load.loads_of_name, load.place.length)
}

/// The rule of [`goes_into_part`]: a load of a name loaded `loads_of_name`
/// times, of `bytes` bytes.
fn in_part(loads_of_name: usize, bytes: u64) -> bool {
    loads_of_name == 1 && bytes > SMALL as u64
}

/// Why the loads part was not written.
#[derive(Debug, PartialEq)]
pub enum NotInPart {
    /// A load's bytes in the workload file are not those its crc32 says
    /// (the file changed since it was checked): the workload is bad, as a
    /// read of it would say.
    Refused(WorkloadError),
    /// The part could not be written: the loads stay in the file, to be
    /// read into the worker's own memory.
    Failed(String),
}

/// Copies the loads `left` in the workload file at `workload_path` (the
/// ones [`goes_into_part`], left unread in `workload`) into the part `part`
/// at `path`, and puts the part's mapped tensors in their `Load` steps.
/// Returns the part's length and what it holds as this worker's last
/// checkpoint; `None` when nothing is left (nothing written).
pub fn from_file(
    workload: &mut Workload,
    left: &[LeftLoad],
    workload_path: &Path,
    part: u64,
    path: &Path,
) -> Result<Option<(u64, LastCheckpoint)>, NotInPart> {
    if left.is_empty() {
        return Ok(None);
    }
    let never = AtomicBool::new(false);
    let (written, sealed, times) = copy_into_part(left, workload_path, part, path, &never)?;
    tracing::debug!(
        "loads part: {} bytes of {} resident(s) copied from the workload file in {:.0} ms \
         (sendfile), checked in {:.0} ms (crc32 and state hash, from the part)",
        written.copied,
        left.len(),
        times.copy.as_secs_f64() * 1e3,
        times.check.as_secs_f64() * 1e3
    );
    let loads: Vec<(usize, &str)> = left.iter().map(|l| (l.step, l.name.as_str())).collect();
    serve_from_part(workload, &loads, written, &sealed, part, path)
        .map(Some)
        .map_err(NotInPart::Failed)
}

/// Copies the loads `left` of the workload file at `workload_path` into
/// the fresh memfd `part` at `path`, checks them there against the crc32s
/// the file records and seals it: what it holds, the sealed file and the
/// time the copy and the checks took. Stops with a failure at the next
/// piece once `stop` is set.
pub fn copy_into_part(
    left: &[LeftLoad],
    workload_path: &Path,
    part: u64,
    path: &Path,
    stop: &AtomicBool,
) -> Result<(PartWritten, File, CopyTimes), NotInPart> {
    let from = File::open(workload_path).map_err(|e| {
        NotInPart::Failed(format!(
            "cannot open the workload {}: {e}",
            workload_path.display()
        ))
    })?;
    match write_from_file(&ranges_of(left), &from, path, part, stop) {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(mismatch)) => Err(NotInPart::Refused(
            left[mismatch.index].checksum_mismatch(workload_path, mismatch.computed),
        )),
        Err(e) => Err(NotInPart::Failed(e)),
    }
}

/// The ranges of the workload file that hold the loads `left`, as their
/// sections in the loads part are named (`resident/NAME`).
pub fn ranges_of(left: &[LeftLoad]) -> Vec<FileRange> {
    left.iter()
        .map(|load| FileRange {
            name: format!("resident/{}", load.name),
            dtype: load.dtype,
            shape: load.shape.clone(),
            start: load.place.start,
            length: load.place.length,
            crc32: load.crc32,
        })
        .collect()
}

/// Serves the loads `left` in `workload` from the part `part` at `path`,
/// which the supervisor already wrote from the workload file, checked and
/// sealed (`isolation/preload.rs`), and which holds what `written` says:
/// refused, nothing changed, unless it holds exactly these loads (each
/// section's length and the crc32 the file records for it), so a workload
/// file rewritten between the two reads is never served from a part
/// written from its old bytes. Returns what [`from_file`] returns.
pub fn from_part(
    workload: &mut Workload,
    left: &[LeftLoad],
    written: PartWritten,
    part: u64,
    path: &Path,
) -> Result<Option<(u64, LastCheckpoint)>, String> {
    let matches = written.placed.len() == left.len()
        && ranges_of(left).iter().all(|range| {
            written.placed.get(&range.name).is_some_and(|placed| {
                placed.part == part && placed.bytes == range.length && placed.crc32 == range.crc32
            })
        });
    if !matches {
        return Err(format!(
            "the part written before the start ({} section(s)) does not hold the {} large \
             resident load(s) the workload leaves in its file now",
            written.placed.len(),
            left.len()
        ));
    }
    if left.is_empty() {
        return Ok(None);
    }
    let sealed = File::open(path).map_err(|e| {
        format!(
            "cannot open the part written before the start {}: {e}",
            path.display()
        )
    })?;
    let loads: Vec<(usize, &str)> = left.iter().map(|l| (l.step, l.name.as_str())).collect();
    serve_from_part(workload, &loads, written, &sealed, part, path).map(Some)
}

/// Moves the large resident loads of `workload`, held in memory (the
/// bundled workload, generated rather than read), into the part `part` at
/// `path` (each let go once written) and serves them from its mapping.
/// Returns what [`from_file`] returns. On an error the moved loads are
/// gone from `workload`: make it again.
pub fn from_memory(
    workload: &mut Workload,
    part: u64,
    path: &Path,
) -> Result<Option<(u64, LastCheckpoint)>, String> {
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for step in &workload.steps {
        if let Step::Load { name, .. } = step {
            *times.entry(name).or_default() += 1;
        }
    }
    let moved: Vec<(usize, String)> = workload
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| match step {
            Step::Load { name, tensor }
                if in_part(times[name.as_str()], tensor.byte_len() as u64) =>
            {
                Some((i, name.clone()))
            }
            _ => None,
        })
        .collect();
    if moved.is_empty() {
        return Ok(None);
    }
    let mut loads = Snapshot::new("kiln-workload-loads", "host");
    for (i, name) in &moved {
        if let Some(Step::Load { tensor, .. }) = workload.steps.get_mut(*i) {
            let taken = std::mem::replace(tensor, Tensor::from_f32(&[0], Vec::new()));
            loads.insert_tensor(format!("resident/{name}"), taken);
        }
    }
    let (written, sealed) = write_taking(loads, path, part)?;
    let loads: Vec<(usize, &str)> = moved.iter().map(|(i, n)| (*i, n.as_str())).collect();
    serve_from_part(workload, &loads, written, &sealed, part, path).map(Some)
}

/// Maps the part `part` just `written` and `sealed` at `path`, and puts
/// its tensors in the `Load` steps of `workload` that `loads` lists (step,
/// name). Returns the part's length and what it holds as this worker's
/// last checkpoint.
fn serve_from_part(
    workload: &mut Workload,
    loads: &[(usize, &str)],
    written: PartWritten,
    sealed: &File,
    part: u64,
    path: &Path,
) -> Result<(u64, LastCheckpoint), String> {
    let mapped =
        snapshot_file::map_parts(sealed, path, &|_| None, true).map_err(|e| e.to_string())?;
    for &(step, name) in loads {
        let step = workload.steps.get_mut(step);
        match (step, mapped.get(&format!("resident/{name}"))) {
            (Some(Step::Load { tensor, .. }), Some(shared_state::Section::Tensor(t))) => {
                *tensor = t.clone();
            }
            _ => return Err(format!("resident {name} is not in the part written")),
        }
    }
    let bytes = written.bytes;
    let last = LastCheckpoint::of_part(written, &mapped, part);
    Ok((bytes, last))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use shared_state::Call;

    use super::*;
    use crate::workload::format::{self, LoadAnswer};

    /// A fresh memfd that can be sealed, as the supervisor makes a part,
    /// and the path it is opened by.
    fn part_memfd() -> (File, std::path::PathBuf) {
        let fd = rustix::fs::memfd_create("kiln-test-loads", rustix::fs::MemfdFlags::ALLOW_SEALING)
            .unwrap();
        let file = File::from(fd);
        let path = format!("/proc/self/fd/{}", file.as_raw_fd()).into();
        (file, path)
    }

    /// A workload with two large loads (one of them loaded twice), a small
    /// one and a large call argument, in a file; read with the loads that
    /// [`goes_into_part`] left in it.
    fn left_in_a_file(dir: &Path) -> (Workload, std::path::PathBuf, format::Answered) {
        let large =
            |seed: f32| Tensor::from_f32(&[40_000], (0..40_000).map(|i| i as f32 * seed).collect());
        let mut w = Workload::new("loads");
        w.load("x", large(0.25));
        w.load("twice", large(0.5));
        w.load("small", Tensor::from_f32(&[4], vec![1.0, 2.0, 3.0, 4.0]));
        w.load("twice", large(0.75));
        w.load("y", large(1.5));
        w.call(Call::new("dot").arg(large(2.0)), None);
        let path = dir.join("loads.kwl");
        crate::workload::write(&w, &path).unwrap();
        let read = format::read_answering(&path, &mut |load| {
            if goes_into_part(load) {
                LoadAnswer::Leave
            } else {
                LoadAnswer::Read
            }
        })
        .unwrap();
        (w, path, read)
    }

    /// The large loads named once go from the file into the part, and the
    /// workload then serves them from the part's mapping, bit for bit what
    /// the file holds; the rest were read as usual.
    #[test]
    fn the_large_loads_are_served_from_the_part_they_were_copied_into() {
        let dir = tempfile::tempdir().unwrap();
        let (written, workload_path, read) = left_in_a_file(dir.path());
        let names: Vec<&str> = read.left.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["x", "y"]);
        let mut workload = read.workload;
        let (_part, part_path) = part_memfd();
        let (bytes, last) = from_file(&mut workload, &read.left, &workload_path, 7, &part_path)
            .unwrap()
            .expect("a part written");
        assert!(bytes > 2 * 160_000, "{bytes}");
        assert_eq!(last.written.parts, [7]);
        assert_eq!(workload, written, "the workload as the file holds it");
        for step in &workload.steps {
            if let Step::Load { name, tensor } = step {
                let in_part = name == "x" || name == "y";
                assert_eq!(tensor.data().is_mapped(), in_part, "{name}");
            }
        }
    }

    /// A load whose bytes changed in the file after it was read (the
    /// header's crc32 unchanged) is refused with the error a read of the
    /// file gives: the file, the section, the checksums.
    #[test]
    fn a_load_whose_bytes_changed_is_refused_as_a_read_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, workload_path, read) = left_in_a_file(dir.path());
        let y = read.left.iter().find(|l| l.name == "y").unwrap();
        let mut bytes = std::fs::read(&workload_path).unwrap();
        bytes[y.place.start as usize + 1000] ^= 0x40;
        std::fs::write(&workload_path, &bytes).unwrap();
        let mut workload = read.workload.clone();
        let (_part, part_path) = part_memfd();
        let refused = match from_file(&mut workload, &read.left, &workload_path, 7, &part_path) {
            Err(NotInPart::Refused(e)) => e,
            Err(NotInPart::Failed(e)) => panic!("not refused: {e}"),
            Ok(_) => panic!("written"),
        };
        let expected = crate::workload::read(&workload_path).unwrap_err();
        assert_eq!(refused, expected);
        let text = refused.to_string();
        assert!(
            text.contains(&workload_path.display().to_string())
                && text.contains(&format!("section {}", y.place.section))
                && text.contains("checksum mismatch"),
            "{text}"
        );
    }
}

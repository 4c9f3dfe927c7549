//! The workload's large resident loads, copied into their part by the
//! supervisor from the first moment of `kiln dev` (before `cargo
//! metadata`) and while it builds the modules, instead of by the worker
//! once they are built: at 4 GiB the copy (2 to 3 s here) is most of the
//! start beyond the build and the first replay, and a build that compiles
//! runs for as long or longer, so the start then costs the longer of the
//! two, not their sum. Which state the start restores is known only once
//! the module is (its kept files are named after it): a start that
//! restores one calls the copy off ([`Preloading::cancel`]) and lets go of
//! what it copied, before the restore maps its own.
//!
//! The copy is the worker's ([`crate::worker::workload_loads`]): the same
//! loads (by [`goes_into_part`], from the file's structure alone), copied
//! from the file into the part by the kernel and checked there against the
//! crc32s the file records, then sealed against writing. The worker is
//! told what the part holds (`Request::Start::prewritten`) and serves it
//! only if it holds exactly the loads its own read of the file leaves
//! there (`workload_loads::from_part`); else it reads them itself. A load
//! whose bytes are not what the file records stops the start, with the
//! error a read of the file gives.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::swap::snapshot_file::PartWritten;
use crate::worker::workload_loads::{NotInPart, copy_into_part, goes_into_part};
use crate::workload::format::left_loads;
use kiln_stats::bytes;

/// The copy under way, on a thread of its own; called off when dropped
/// before [`Preloading::finish`] (at the next piece of 2 MiB).
pub struct Preloading {
    /// The part's number and the path it is opened by.
    pub part: u64,
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Option<PartWritten>, NotInPart>>>,
}

impl Preloading {
    /// Starts copying the large resident loads of the workload file
    /// `workload` into the fresh memfd `part` at `path`.
    pub fn start(workload: &Path, part: u64, path: PathBuf) -> std::io::Result<Preloading> {
        let (from, into) = (workload.to_path_buf(), path.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kiln-preload".into())
            .spawn(move || preload(&from, part, &into, &stopped))?;
        Ok(Preloading {
            part,
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits for the copy: what the sealed part holds, `None` if no load
    /// goes there (nothing written: the part is empty).
    pub fn finish(mut self) -> Result<Option<PartWritten>, NotInPart> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(NotInPart::Failed("the copy's thread panicked".into())),
        }
    }

    /// Calls the copy off and waits for its thread to end (at most a
    /// piece later).
    pub fn cancel(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Preloading {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies the large resident loads of `workload` into the memfd `part` at
/// `path` and seals it (see the module's description).
/// An `Interrupted` failure once `stop` is set.
pub fn preload(
    workload: &Path,
    part: u64,
    path: &Path,
    stop: &AtomicBool,
) -> Result<Option<PartWritten>, NotInPart> {
    let clock = Instant::now();
    let left =
        left_loads(workload, &mut |load| goes_into_part(load)).map_err(NotInPart::Refused)?;
    if left.is_empty() {
        return Ok(None);
    }
    let (written, _sealed, times) = copy_into_part(&left, workload, part, path, stop)?;
    crate::events::emit!(
        tracing::Level::INFO,
        crate::events::WorkloadPreloaded {
            residents: left.len() as u64,
            bytes: written.copied,
            ms: clock.elapsed().as_secs_f64() * 1e3,
            check_ms: times.check.as_secs_f64() * 1e3,
        },
        "copied the workload's {} large resident(s) ({}) into memory in {:.0} ms while \
                 the modules built (checked: {:.0} ms of it)",
        left.len(),
        bytes::human(written.copied),
        clock.elapsed().as_secs_f64() * 1e3,
        times.check.as_secs_f64() * 1e3
    );
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    use shared_state::{Call, Tensor};

    use super::*;
    use crate::workload::Workload;

    fn part_memfd() -> (File, PathBuf) {
        let fd = rustix::fs::memfd_create("kiln-test-loads", rustix::fs::MemfdFlags::ALLOW_SEALING)
            .unwrap();
        let file = File::from(fd);
        let path = format!("/proc/self/fd/{}", file.as_raw_fd()).into();
        (file, path)
    }

    fn large(seed: f32) -> Tensor {
        Tensor::from_f32(&[40_000], (0..40_000).map(|i| i as f32 * seed).collect())
    }

    /// The workload file at `path` read as the worker reads it, its large
    /// loads left in the file.
    fn read_leaving(path: &Path) -> crate::workload::format::Answered {
        use crate::workload::format::{LoadAnswer, read_answering};
        read_answering(path, &mut |load| match goes_into_part(load) {
            true => LoadAnswer::Leave,
            false => LoadAnswer::Read,
        })
        .unwrap()
    }

    /// A workload of two large loads, a small one and a large call
    /// argument, in a file.
    fn a_workload_file(dir: &Path) -> PathBuf {
        let mut w = Workload::new("preload");
        w.load("x", large(0.25));
        w.load("small", Tensor::from_f32(&[4], vec![1.0, 2.0, 3.0, 4.0]));
        w.load("y", large(1.5));
        w.call(Call::new("dot").arg(large(2.0)), None);
        let path = dir.join("preload.kwl");
        crate::workload::write(&w, &path).unwrap();
        path
    }

    /// The part holds the two large loads, as the worker's own copy would
    /// (byte for byte), sealed against writing; the worker's check of it
    /// against its read of the file accepts it and serves the loads from
    /// it, bit for bit the file's.
    #[test]
    fn the_large_loads_are_copied_and_sealed_as_the_worker_would_copy_them() {
        let dir = tempfile::tempdir().unwrap();
        let workload = a_workload_file(dir.path());
        let (part, path) = part_memfd();
        let written = preload(&workload, 3, &path, &AtomicBool::new(false))
            .unwrap()
            .expect("written");
        assert_eq!(
            written.placed.keys().collect::<Vec<_>>(),
            ["resident/x", "resident/y"]
        );
        assert_eq!(written.copied, 2 * 160_000);
        let seals = rustix::fs::fcntl_get_seals(&part).unwrap();
        assert!(seals.contains(rustix::fs::SealFlags::WRITE), "{seals:?}");

        let read = read_leaving(&workload);
        let (_own, own_path) = part_memfd();
        let mut by_worker = read.workload.clone();
        let (bytes, _) = crate::worker::workload_loads::from_file(
            &mut by_worker,
            &read.left,
            &workload,
            3,
            &own_path,
        )
        .ok()
        .flatten()
        .expect("the worker's copy");
        assert_eq!(bytes, written.bytes);
        let mut preloaded = Vec::new();
        File::open(&path)
            .unwrap()
            .read_to_end(&mut preloaded)
            .unwrap();
        let mut own = Vec::new();
        File::open(&own_path)
            .unwrap()
            .read_to_end(&mut own)
            .unwrap();
        assert!(preloaded == own, "the same part, byte for byte");

        let mut served = read.workload;
        crate::worker::workload_loads::from_part(&mut served, &read.left, written, 3, &path)
            .unwrap()
            .expect("served from the part");
        assert_eq!(served, crate::workload::read(&workload).unwrap());
    }

    /// A large load whose bytes are not those its crc32 says is refused
    /// with the error a read of the file gives (the file, the section, the
    /// checksums); a workload without large loads writes nothing.
    #[test]
    fn a_damaged_large_load_is_refused_as_a_read_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let workload = a_workload_file(dir.path());
        let left = left_loads(&workload, &mut |load| goes_into_part(load)).unwrap();
        let y = &left[1];
        let mut bytes = std::fs::read(&workload).unwrap();
        bytes[y.place.start as usize + 999] ^= 0x08;
        std::fs::write(&workload, &bytes).unwrap();
        let (_part, path) = part_memfd();
        let Err(refused) = preload(&workload, 1, &path, &AtomicBool::new(false)) else {
            panic!("a damaged load was copied");
        };
        let expected = crate::workload::read(&workload).unwrap_err();
        assert_eq!(refused, NotInPart::Refused(expected.clone()));
        let expected = expected.to_string();
        assert!(
            expected.contains(&workload.display().to_string())
                && expected.contains("checksum mismatch"),
            "{expected}"
        );

        let mut small = Workload::new("small");
        small.load("a", Tensor::from_f32(&[4], vec![1.0; 4]));
        let small_path = dir.path().join("small.kwl");
        crate::workload::write(&small, &small_path).unwrap();
        let (_part, path) = part_memfd();
        assert!(matches!(
            preload(&small_path, 1, &path, &AtomicBool::new(false)),
            Ok(None)
        ));
    }

    /// A copy called off stops before its next piece: a failure that says
    /// so, and the part is left unsealed (nothing in it is served).
    #[test]
    fn a_copy_called_off_writes_nothing_it_would_serve() {
        let dir = tempfile::tempdir().unwrap();
        let workload = a_workload_file(dir.path());
        let (part, path) = part_memfd();
        let result = preload(&workload, 3, &path, &AtomicBool::new(true));
        let Err(NotInPart::Failed(why)) = result else {
            panic!("not called off: {result:?}");
        };
        assert!(why.contains("called off"), "{why}");
        let seals = rustix::fs::fcntl_get_seals(&part).unwrap();
        assert!(!seals.contains(rustix::fs::SealFlags::WRITE), "{seals:?}");

        let (_part, path) = part_memfd();
        Preloading::start(&workload, 4, path).unwrap().cancel();
    }

    /// A part that does not hold the loads the worker's read leaves (the
    /// file was rewritten with another large load between the two reads)
    /// is refused by the worker, which then reads them itself.
    #[test]
    fn a_part_written_from_another_file_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let workload = a_workload_file(dir.path());
        let (_part, path) = part_memfd();
        let written = preload(&workload, 3, &path, &AtomicBool::new(false))
            .unwrap()
            .expect("written");
        let mut w = Workload::new("preload");
        w.load("x", large(0.25));
        w.load("y", large(7.0));
        crate::workload::write(&w, &workload).unwrap();
        let read = read_leaving(&workload);
        let mut served = read.workload;
        let Err(e) =
            crate::worker::workload_loads::from_part(&mut served, &read.left, written, 3, &path)
        else {
            panic!("served from a part written from other bytes");
        };
        assert!(e.contains("does not hold"), "{e}");
    }
}

//! A checkpoint part whose tensor bytes come from ranges of a file (a
//! workload's large resident loads), written in one pass: each range is
//! copied in the kernel (`sendfile`, file to memfd: no copy through this
//! process's memory, nothing read into a buffer first) into the part at its
//! page-aligned offset, and then checksummed and hashed from a read-only
//! mapping of what was written, so the part's crc32 and state digest are
//! those of the bytes it holds, whatever the file holds by then. A range
//! whose bytes do not have the crc32 recorded for them stops the write
//! ([`RangeMismatch`]).
//!
//! Each piece is checked right after it is copied, while it is in cache,
//! on the writer's thread: copying piece `k + 1` on a second thread while
//! piece `k` is checked was no faster on 2 cores (512 MiB from the page
//! cache: median 374 ms on two threads, 358 ms on one, 9 runs each, load
//! average 2.2 to 2.6).

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use shared_state::DType;

use super::snapshot_file::{Outline, PartWritten, TensorSource, write_outline};

pub use super::snapshot_file::FileRange;

/// A range whose bytes, as copied into the part, do not have the crc32
/// recorded for them (the file changed since it was checked): the range's
/// index in the list written, and the crc32 computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("range {index}: its bytes have crc32 {computed:#010x}, not the one recorded")]
pub struct RangeMismatch {
    pub index: usize,
    pub computed: u32,
}

impl RangeMismatch {
    /// The mismatch `e` carries, if it is one (else another I/O error).
    pub fn of(e: &std::io::Error) -> Option<RangeMismatch> {
        e.get_ref()?.downcast_ref::<RangeMismatch>().copied()
    }
}

/// How much is copied, then checked, at a time: small enough to be read
/// back from cache (1, 2, 8, 32 and 64 MiB were within noise of each
/// other).
const PIECE: u64 = 2 << 20;

/// The time [`write_part_from_file`] spent copying in the kernel and
/// checking (crc32 and state hash) what was copied.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyTimes {
    pub copy: std::time::Duration,
    pub check: std::time::Duration,
}

/// Writes checkpoint part `part` (a whole snapshot file of module
/// `module`, backend `backend`) into the fresh memfd `out`: one tensor
/// section per range of `from`, in that order, its bytes copied from the
/// file in the kernel and checked and hashed from the part. An I/O error,
/// or a [`RangeMismatch`] ([`RangeMismatch::of`]) at the first range whose
/// bytes are not what its crc32 says; once `stop` is set, an
/// `Interrupted` error at the next piece. Returns what was written and the
/// time spent copying and checking.
pub fn write_part_from_file(
    module: &str,
    backend: &str,
    ranges: &[FileRange],
    from: &File,
    out: &mut File,
    part: u64,
    stop: &AtomicBool,
) -> std::io::Result<(PartWritten, CopyTimes)> {
    let tensors: Vec<(String, DType, Vec<usize>, u64)> = ranges
        .iter()
        .map(|r| (r.name.clone(), r.dtype, r.shape.clone(), r.length))
        .collect();
    let outline = Outline::of_tensors(module, backend, &tensors);
    let mut source = FromFile {
        ranges,
        from,
        next: 0,
        times: CopyTimes::default(),
        stop,
    };
    let written = write_outline(&outline, out, part, &mut source)?;
    Ok((written, source.times))
}

/// [`TensorSource`] of the ranges of `from`, written in their order.
struct FromFile<'a> {
    ranges: &'a [FileRange],
    from: &'a File,
    /// The range written next.
    next: usize,
    times: CopyTimes,
    /// Set: stop at the next piece.
    stop: &'a AtomicBool,
}

impl TensorSource<File> for FromFile<'_> {
    fn write(
        &mut self,
        name: &str,
        bytes: u64,
        out: &mut File,
        each: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<()> {
        let range = self
            .ranges
            .get(self.next)
            .filter(|r| r.name == name && r.length == bytes)
            .ok_or_else(|| std::io::Error::other(format!("section {name}: not the next range")))?;
        copy_and_check(
            self.from,
            range.start,
            out,
            bytes,
            each,
            &mut self.times,
            self.stop,
        )
    }

    fn written(&mut self, _name: &str, crc32: u32) -> std::io::Result<()> {
        let index = self.next;
        self.next += 1;
        if crc32 == self.ranges[index].crc32 {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RangeMismatch {
                    index,
                    computed: crc32,
                },
            ))
        }
    }
}

/// Copies `length` bytes from byte `start` of `from` to `out` at its
/// position (page-aligned), a [`PIECE`] at a time, handing each piece,
/// read back from a read-only mapping of `out` while it is still in cache,
/// to `each`; adds the time spent on each to `times`. Stops with an
/// `Interrupted` error before a piece once `stop` is set.
fn copy_and_check(
    from: &File,
    start: u64,
    out: &mut File,
    length: u64,
    each: &mut dyn FnMut(&[u8]),
    times: &mut CopyTimes,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    if length == 0 {
        return Ok(());
    }
    let at = std::io::Seek::stream_position(out)?;
    // The whole range exists before it is mapped (a hole until written: no
    // memory), so no page of the mapping lies past the end of the file.
    if out.metadata()?.len() < at + length {
        out.set_len(at + length)?;
    }
    // SAFETY: a read-only shared mapping of `length` bytes of `out` from
    // `at` (page-aligned: the part's data start and every section in it
    // are), which the file covers (just above) and which nothing shrinks:
    // `out` is a fresh memfd this writer alone writes until it is sealed.
    // Nothing dereferences the mapping as a whole: only each piece once
    // the copy has written it (below), which nothing writes again.
    let mapped = unsafe {
        memmap2::MmapOptions::new()
            .offset(at)
            .len(length as usize)
            .map(&*out)?
    };
    let base = mapped.as_ptr();
    let mut offset = start;
    let mut checked = 0u64;
    while checked < length {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the copy was called off",
            ));
        }
        let n = (length - checked).min(PIECE);
        let clock = std::time::Instant::now();
        // Advances `out`'s position past the piece.
        send_exactly(out, from, &mut offset, n)?;
        let copied = std::time::Instant::now();
        times.copy += copied - clock;
        // SAFETY: bytes `checked..checked + n` of the mapping lie inside
        // it and were just written (the copy returned); nothing writes
        // them again while this slice lives.
        let piece = unsafe { std::slice::from_raw_parts(base.add(checked as usize), n as usize) };
        each(piece);
        times.check += copied.elapsed();
        checked += n;
    }
    Ok(())
}

/// Sends `n` bytes of `from` at `offset` (advanced) to `out` at its
/// position, in as many `sendfile` calls as it takes.
fn send_exactly(out: &File, from: &File, offset: &mut u64, mut n: u64) -> std::io::Result<()> {
    while n > 0 {
        let sent = rustix::fs::sendfile(out.as_fd(), from.as_fd(), Some(offset), n as usize)?;
        if sent == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ends at byte {offset}, before the range does"),
            ));
        }
        n -= sent as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use shared_state::{Buffer, Snapshot, Tensor};

    use super::*;
    use crate::swap::snapshot_file::{self, Placed};

    fn memfd() -> File {
        let fd = rustix::fs::memfd_create("kiln-test-part", rustix::fs::MemfdFlags::ALLOW_SEALING)
            .unwrap();
        File::from(fd)
    }

    fn bytes_of(file: &File) -> Vec<u8> {
        use std::io::{Read, Seek};
        let mut file = file.try_clone().unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    /// Tensors in a file, as a workload holds them (at unaligned offsets,
    /// after other bytes), and their ranges: one larger than a piece and
    /// not a multiple of it, one of an odd length, one empty.
    fn tensors_in_a_file() -> (
        Vec<(String, Tensor)>,
        tempfile::NamedTempFile,
        Vec<FileRange>,
    ) {
        let big = (PIECE as usize / 4) * 2 + 1234;
        let tensors = vec![
            (
                "resident/a".to_string(),
                Tensor::from_f32(&[big], (0..big).map(|i| (i as f32).sin()).collect()),
            ),
            (
                "resident/b".to_string(),
                Tensor::new(vec![1001], Buffer::U8((0..1001).map(|i| i as u8).collect())).unwrap(),
            ),
            ("resident/c".to_string(), Tensor::from_f32(&[0], Vec::new())),
        ];
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut at = 0u64;
        let mut ranges = Vec::new();
        for (name, t) in &tensors {
            file.write_all(&[7u8; 100]).unwrap();
            at += 100;
            let bytes = t.data().as_bytes();
            file.write_all(bytes).unwrap();
            ranges.push(FileRange {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                start: at,
                length: bytes.len() as u64,
                crc32: crc32fast::hash(bytes),
            });
            at += bytes.len() as u64;
        }
        file.flush().unwrap();
        (tensors, file, ranges)
    }

    /// A part written from ranges of a file is byte for byte the part
    /// written from the same tensors in memory, with the same state hash,
    /// and every section placed with the same crc32 and digest; its header
    /// reads back those placements.
    #[test]
    fn a_part_from_a_file_is_the_part_written_from_memory() {
        let (tensors, file, ranges) = tensors_in_a_file();
        let mut snapshot = Snapshot::new("kiln-workload-loads", "host");
        for (name, t) in &tensors {
            snapshot.insert_tensor(name.clone(), t.clone());
        }
        let mut from_memory = memfd();
        let in_memory =
            snapshot_file::write_part(&snapshot, &mut from_memory, 4, &|_, _| None).unwrap();
        let mut from_file = memfd();
        let (written, _) = write_part_from_file(
            "kiln-workload-loads",
            "host",
            &ranges,
            file.as_file(),
            &mut from_file,
            4,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(
            bytes_of(&from_memory) == bytes_of(&from_file),
            "the same bytes"
        );
        assert_eq!(written.bytes, in_memory.bytes);
        assert_eq!(written.bytes, from_file.metadata().unwrap().len());
        assert_eq!(written.hash, in_memory.hash);
        assert_eq!(written.copied, in_memory.copied);
        assert_eq!(written.placed, in_memory.placed);
        for (range, (name, t)) in ranges.iter().zip(&tensors) {
            let placed: &Placed = &written.placed[name];
            assert_eq!(placed.crc32, range.crc32);
            assert!(placed.digest.is_some(), "{name} is state");
            assert_eq!(placed.bytes, t.byte_len() as u64);
        }
        let path = std::path::PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&from_file)
        ));
        let read_back = snapshot_file::placements(&path, 4).unwrap();
        for (name, placed) in &written.placed {
            let back = &read_back[name];
            assert_eq!(
                (back.offset, back.bytes, back.crc32),
                (placed.offset, placed.bytes, placed.crc32)
            );
        }
    }

    /// A range whose bytes in the file are not those its crc32 says stops
    /// the write at that range, with the crc32 computed: a mismatch, not
    /// another I/O error. A file shorter than a range is an I/O error.
    #[test]
    fn a_range_whose_bytes_do_not_match_its_crc32_is_refused() {
        let (tensors, file, mut ranges) = tensors_in_a_file();
        let go = AtomicBool::new(false);
        let actual = ranges[1].crc32;
        ranges[1].crc32 ^= 1;
        let e = write_part_from_file("m", "host", &ranges, file.as_file(), &mut memfd(), 0, &go)
            .unwrap_err();
        assert_eq!(
            RangeMismatch::of(&e),
            Some(RangeMismatch {
                index: 1,
                computed: actual
            }),
            "{e}"
        );
        ranges[1].crc32 = actual;
        ranges[0].length = tensors[0].1.byte_len() as u64;
        ranges[0].start = file.as_file().metadata().unwrap().len() - 10;
        let e = write_part_from_file("m", "host", &ranges, file.as_file(), &mut memfd(), 0, &go)
            .unwrap_err();
        assert_eq!(RangeMismatch::of(&e), None, "{e}");
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
}

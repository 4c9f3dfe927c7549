//! Snapshot file format 3: a snapshot file that grows by appending. The
//! last good point kept on disk (`isolation/disk_copy.rs`) is one: each
//! checkpoint after the first appends only the tensor sections the file
//! does not hold yet, and a new header. A save that changed a call counter
//! next to GiBs of unchanged residents writes KiBs to disk, not the GiBs
//! again (a 4 GiB state took 11 to 15 s per checkpoint to copy whole on
//! this VM's disk, and `--state FILE` at Ctrl-C waited for it).
//!
//! Layout (little-endian):
//!
//! ```text
//! 0     8  magic  "KILNSNAP"
//! 8     4  u32    file format version (3)
//! 12   12  zeros  (format 2's header checksum and length: here the header
//!                 is at the end)
//! ..       zeros up to byte 4096
//! 4096     commits, one after another, each:
//!            its new tensor sections, each at a 4096-byte aligned offset
//!            its header: JSON, format 2's (`snapshot_header::Header`), every
//!              tensor's offset from the file's start (in this commit or
//!              an earlier one)
//!            spaces, so that the trailer ends on a 4096-byte boundary
//!            trailer (32 bytes): magic "KILNTAIL", u64 header offset,
//!              u64 header length, u32 header crc32, u32 crc32 of the
//!              trailer's first 28 bytes
//! ```
//!
//! The file is read from its last trailer ([`read_tail`]). A commit cut
//! short (the process killed mid-append) leaves bytes after the last whole
//! trailer and no trailer at the end: the reader walks back over the
//! 4096-byte boundaries to the last trailer whose header checks, the state
//! of the commit before, whole. A file that ends with a trailer that does
//! not check is damaged and refused (not read as an older commit). The new sections of a commit are synced
//! before its trailer is written (unless the caller says not to), so a
//! power cut leaves a trailer only after the data it points to.
//!
//! An appended file is only ever appended to by the copy that created it,
//! and only while no other name links it (`nlink` 1: a `--state FILE`
//! made a hard link to it must keep its bytes): [`Appended::is_alone_at`].

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use shared_state::{Section, Snapshot};

use super::snapshot_header::{ALIGN, Header, MAGIC, SectionHeader, scalar_header};

/// This format's version number.
pub const VERSION: u32 = 3;
const TAIL_MAGIC: &[u8; 8] = b"KILNTAIL";
const TAIL: u64 = 32;
/// How much is written between two asks of `go_on`.
const PIECE: usize = 64 << 20;

fn align(offset: u64) -> u64 {
    offset.div_ceil(ALIGN) * ALIGN
}

/// The header of the last whole commit of the format-3 file `file`
/// (`file_len` bytes long), and where that commit ends.
///
/// A file that does not end with a trailer had its last commit cut short:
/// its whole commit before is read. One that ends with a trailer that does
/// not check (its own checksum, its header's) is damaged, and refused: an
/// older commit is not silently served in its place.
pub(super) fn read_tail(file: &File, file_len: u64) -> Result<(Header, u64), String> {
    let ends_whole = file_len.is_multiple_of(ALIGN) && file_len >= ALIGN + TAIL && {
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, file_len - TAIL).is_ok() && &magic == TAIL_MAGIC
    };
    if ends_whole {
        return commit_ending_at(file, file_len)
            .map(|header| (header, file_len))
            .map_err(|e| format!("damaged appended snapshot (format {VERSION}): {e}"));
    }
    let mut end = file_len / ALIGN * ALIGN;
    while end >= ALIGN + TAIL {
        if let Ok(header) = commit_ending_at(file, end) {
            return Ok((header, end));
        }
        end -= ALIGN;
    }
    Err(format!(
        "no whole commit in this appended snapshot (format {VERSION}) file of {file_len} bytes"
    ))
}

/// The header of the commit whose trailer ends at `end`, checked.
fn commit_ending_at(file: &File, end: u64) -> Result<Header, String> {
    let mut tail = [0u8; TAIL as usize];
    file.read_exact_at(&mut tail, end - TAIL)
        .map_err(|e| format!("cannot read the trailer ending at byte {end}: {e}"))?;
    if &tail[..8] != TAIL_MAGIC {
        return Err(format!("no trailer ending at byte {end}"));
    }
    if crc32fast::hash(&tail[..28]).to_le_bytes() != tail[28..32] {
        return Err(format!(
            "trailer checksum mismatch (trailer at byte {})",
            end - TAIL
        ));
    }
    let word = |at: usize| u64::from_le_bytes(tail[at..at + 8].try_into().expect("8 bytes"));
    let (offset, len) = (word(8), word(16));
    let crc = u32::from_le_bytes(tail[24..28].try_into().expect("4 bytes"));
    if offset < ALIGN || offset.checked_add(len).is_none_or(|e| e > end - TAIL) {
        return Err(format!(
            "the trailer ending at byte {end} places its header ({len} bytes at byte {offset}) outside its commit"
        ));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact_at(&mut header, offset)
        .map_err(|e| format!("cannot read the header at byte {offset}: {e}"))?;
    if crc32fast::hash(&header) != crc {
        return Err(format!(
            "header checksum mismatch (header at byte {offset})"
        ));
    }
    serde_json::from_slice(&header).map_err(|e| format!("malformed header at byte {offset}: {e}"))
}

/// Whether a file of `len` bytes, growing by `new`, stays within twice a
/// state of `state` bytes (plus 64 MiB, so that small states append too).
fn worth(len: u64, new: u64, state: u64) -> bool {
    len.saturating_add(new) <= state.saturating_mul(2).saturating_add(64 << 20)
}

/// Where a tensor section's bytes come from, and what they are: a place
/// whose bytes never change (a sealed checkpoint part and an offset in
/// it), their length and their crc32. A section from the same source as
/// one the file holds is not written again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    pub part: u64,
    pub offset: u64,
    pub bytes: u64,
    pub crc32: u32,
}

/// Where a tensor section's bytes can be copied from in the kernel, by
/// section name: a file (a sealed checkpoint part) and the offset there.
/// A section without one is written from its tensor's memory.
pub type Origins = HashMap<String, (std::sync::Arc<File>, u64)>;

/// An appended snapshot file this process created, open to append to.
#[derive(Debug)]
pub struct Appended {
    file: File,
    /// Its device and inode.
    id: (u64, u64),
    /// Where its last whole commit ends.
    len: u64,
    /// The tensor sections written to it, by source: where they start.
    held: HashMap<Source, u64>,
}

/// What a commit wrote.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Committed {
    /// The file's length after it.
    pub len: u64,
    /// Bytes written by it: new sections, header and trailer.
    pub written: u64,
    /// Time spent syncing.
    pub sync_ms: f64,
}

/// When a commit's bytes are synced.
pub struct Sync<'a> {
    /// Asked before each piece of data: `false` abandons the commit.
    pub go_on: &'a dyn Fn() -> bool,
    /// Asked once the new sections are written, before the trailer: sync
    /// them?
    pub data: &'a dyn Fn() -> bool,
    /// Asked once the trailer is written (the commit is whole): sync?
    pub whole: &'a dyn Fn() -> bool,
}

impl Appended {
    /// Writes `snapshot` into `file` (new and empty) as a format-3 file of
    /// one commit. `None`: abandoned (`sync.go_on`), the file holds no
    /// commit.
    pub fn create(
        file: File,
        snapshot: &Snapshot,
        sources: &HashMap<String, Source>,
        origins: &Origins,
        sync: &Sync,
    ) -> std::io::Result<Option<(Appended, Committed)>> {
        let mut preamble = vec![0u8; ALIGN as usize];
        preamble[..8].copy_from_slice(MAGIC);
        preamble[8..12].copy_from_slice(&VERSION.to_le_bytes());
        file.write_all_at(&preamble, 0)?;
        let meta = file.metadata()?;
        let mut appended = Appended {
            file,
            id: (meta.dev(), meta.ino()),
            len: ALIGN,
            held: HashMap::new(),
        };
        Ok(appended
            .commit(snapshot, sources, origins, sync)?
            .map(|committed| (appended, committed)))
    }

    /// Whether `path` is this file and no other name links it: only then
    /// may it be appended to (a hard link elsewhere, such as a `--state`
    /// file, keeps the bytes it was linked with).
    pub fn is_alone_at(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == self.id && m.nlink() == 1)
    }

    /// The tensor bytes a commit of `snapshot` would write (those of
    /// sections the file does not hold yet).
    pub fn new_bytes(&self, snapshot: &Snapshot, sources: &HashMap<String, Source>) -> u64 {
        snapshot
            .sections()
            .filter_map(|(name, section)| match section {
                Section::Tensor(t)
                    if !sources.get(name).is_some_and(|s| self.held.contains_key(s)) =>
                {
                    Some(t.byte_len() as u64)
                }
                _ => None,
            })
            .sum()
    }

    /// Whether a commit of `snapshot` is worth appending: the file would
    /// stay within twice its state (plus 64 MiB); past that, a whole new
    /// file is smaller.
    pub fn worth_appending(&self, snapshot: &Snapshot, sources: &HashMap<String, Source>) -> bool {
        let state: u64 = snapshot
            .sections()
            .map(|(_, s)| match s {
                Section::Tensor(t) => t.byte_len() as u64,
                Section::Scalar(_) => 0,
            })
            .sum();
        worth(self.len, self.new_bytes(snapshot, sources), state)
    }

    /// Copies `bytes` bytes of `from` at `at` to this file at `to`, in the
    /// kernel (`sendfile`: no mapping of `from` is read, which was 3 times
    /// slower here: 4 GiB from a memfd's mapping in 11.7 s, by `sendfile`
    /// in 3.5 s), asking `go_on` before each piece. `false`: it said no.
    fn send(
        &mut self,
        from: &File,
        at: u64,
        bytes: u64,
        to: u64,
        go_on: &dyn Fn() -> bool,
    ) -> std::io::Result<bool> {
        use std::io::{Seek, SeekFrom};
        (&self.file).seek(SeekFrom::Start(to))?;
        let (mut from_at, end) = (at, at + bytes);
        while from_at < end {
            if !go_on() {
                return Ok(false);
            }
            let piece_end = (from_at + PIECE as u64).min(end);
            while from_at < piece_end {
                let count = (piece_end - from_at) as usize;
                let n = rustix::fs::sendfile(&self.file, from, Some(&mut from_at), count)?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the source ends at byte {from_at}, before byte {end}"),
                    ));
                }
            }
        }
        Ok(true)
    }

    /// Allocates the blocks a commit of `bytes` new tensor bytes will
    /// write, past the file's end without changing its length
    /// (`fallocate` with `KEEP_SIZE`: a reader still finds the last whole
    /// commit's trailer at the end): ext4 then writes into blocks it has,
    /// instead of finding them page by page. A 1 GiB `sendfile` from a
    /// memfd to a new file on this machine's ext4: 2.2-2.7 GB/s, after the
    /// `fallocate` 2.9-3.7 GB/s, the `fallocate` included
    /// (`bench/results/disk-copy-fallocate-2026-12-07.txt`). Filesystems
    /// without it are written as before; a commit abandoned gives its blocks
    /// back (cut to the last whole commit's length, the file keeps no
    /// block past it).
    fn reserve(&self, bytes: u64, sections: usize) {
        const WORTH_IT: u64 = 16 << 20;
        if bytes < WORTH_IT {
            return;
        }
        let start = align(self.len);
        // The sections' bytes, each section's start aligned: never more
        // than this (the header and trailer that follow them are written
        // as usual).
        let length = bytes + sections as u64 * ALIGN;
        if let Err(e) = rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            start,
            length,
        ) {
            tracing::debug!("no blocks reserved ahead of the copy (fallocate: {e})");
        }
    }

    /// The sources of the tensor sections the file holds.
    pub fn holds(&self) -> impl Iterator<Item = Source> + '_ {
        self.held.keys().copied()
    }

    /// The file's length (its last whole commit's end).
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Appends a commit of `snapshot`: the tensor sections the file does
    /// not hold yet (by `sources`; a section without a source is always
    /// written), then its header and trailer. `None`: abandoned
    /// (`sync.go_on`), the file cut back to its last whole commit.
    pub fn commit(
        &mut self,
        snapshot: &Snapshot,
        sources: &HashMap<String, Source>,
        origins: &Origins,
        sync: &Sync,
    ) -> std::io::Result<Option<Committed>> {
        self.reserve(
            self.new_bytes(snapshot, sources),
            snapshot.sections().count(),
        );
        let mut pos = self.len;
        let mut sync_ms = 0.0;
        let mut new_held = Vec::new();
        let mut sections = Vec::new();
        for (name, section) in snapshot.sections() {
            let t = match section {
                Section::Tensor(t) => t,
                Section::Scalar(v) => {
                    sections.push(scalar_header(name.to_string(), v));
                    continue;
                }
            };
            let bytes = t.data().as_bytes();
            let source = sources.get(name).filter(|s| s.bytes == bytes.len() as u64);
            let (offset, crc32) = match source.and_then(|s| self.held.get(s).map(|o| (*o, s))) {
                Some((offset, s)) => (offset, s.crc32),
                None => {
                    let start = align(pos);
                    let mut crc = crc32fast::Hasher::new();
                    let origin = origins.get(name).filter(|_| source.is_some());
                    let went_on = match origin {
                        Some((from, at)) => {
                            self.send(from, *at, bytes.len() as u64, start, sync.go_on)?
                        }
                        None => {
                            let mut at = start;
                            let mut went_on = true;
                            for piece in bytes.chunks(PIECE) {
                                if !(sync.go_on)() {
                                    went_on = false;
                                    break;
                                }
                                if source.is_none() {
                                    crc.update(piece);
                                }
                                self.file.write_all_at(piece, at)?;
                                at += piece.len() as u64;
                            }
                            went_on
                        }
                    };
                    if !went_on {
                        self.file.set_len(self.len)?;
                        return Ok(None);
                    }
                    pos = start + bytes.len() as u64;
                    let crc32 = source.map_or_else(|| crc.finalize(), |s| s.crc32);
                    if let Some(s) = source {
                        new_held.push((*s, start));
                    }
                    (start, crc32)
                }
            };
            sections.push(SectionHeader::Tensor {
                name: name.to_string(),
                dtype: t.dtype().name().to_string(),
                shape: t.shape().to_vec(),
                offset,
                bytes: bytes.len() as u64,
                crc32,
                part: None,
            });
        }
        let header = serde_json::to_vec(&Header {
            snapshot_format: snapshot.format,
            module: snapshot.module.clone(),
            backend: snapshot.backend.clone(),
            sections,
        })
        .map_err(std::io::Error::other)?;
        if (sync.data)() && pos > self.len {
            let start = Instant::now();
            self.file.sync_data()?;
            sync_ms += start.elapsed().as_secs_f64() * 1e3;
        }
        let header_at = pos;
        let header_len = header.len();
        let end = align(header_at + header_len as u64 + TAIL);
        let crc = crc32fast::hash(&header);
        let mut tail = header;
        tail.resize((end - TAIL - header_at) as usize, b' ');
        tail.extend_from_slice(TAIL_MAGIC);
        tail.extend_from_slice(&header_at.to_le_bytes());
        tail.extend_from_slice(&(header_len as u64).to_le_bytes());
        tail.extend_from_slice(&crc.to_le_bytes());
        let trailer_crc = crc32fast::hash(&tail[tail.len() - 28..]);
        tail.extend_from_slice(&trailer_crc.to_le_bytes());
        self.file.write_all_at(&tail, header_at)?;
        let written = end - self.len;
        self.len = end;
        self.held.extend(new_held);
        if (sync.whole)() {
            let start = Instant::now();
            self.file.sync_data()?;
            sync_ms += start.elapsed().as_secs_f64() * 1e3;
        }
        Ok(Some(Committed {
            len: end,
            written,
            sync_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::snapshot_file;
    use crate::swap::state_hash::state_hash;
    use shared_state::{Scalar, Tensor};

    const N: usize = 300_000;

    /// A state of two residents (`big` stays, `other` says `n`) and a
    /// counter `n`.
    fn state(n: i64, big: &Tensor) -> Snapshot {
        let mut s = Snapshot::new("kernel-test", "cpu");
        s.insert_tensor("resident/big", big.clone());
        s.insert_tensor(
            "resident/other",
            Tensor::from_f32(&[1000], vec![n as f32; 1000]),
        );
        s.insert_scalar("counters/calls", Scalar::I64(n));
        s
    }

    /// Sources as a checkpoint's parts give them: `big` always from one
    /// place, `other` from part `n`.
    fn sources(s: &Snapshot, n: u64) -> HashMap<String, Source> {
        s.sections()
            .filter_map(|(name, section)| match section {
                Section::Tensor(t) => Some((
                    name.to_string(),
                    Source {
                        part: if name == "resident/big" { 1 } else { n },
                        offset: 0,
                        bytes: t.byte_len() as u64,
                        crc32: crc32fast::hash(t.data().as_bytes()),
                    },
                )),
                Section::Scalar(_) => None,
            })
            .collect()
    }

    fn always() -> Sync<'static> {
        Sync {
            go_on: &|| true,
            data: &|| false,
            whole: &|| false,
        }
    }

    /// A commit told to stop before its first piece.
    fn abandoned() -> Sync<'static> {
        Sync {
            go_on: &|| false,
            ..always()
        }
    }

    fn big() -> Tensor {
        Tensor::from_f32(&[N], (0..N).map(|i| i as f32 * 0.5).collect())
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kiln-snapshot-append-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes states 1..=3 to a new appended file: (its path, the appender,
    /// each commit).
    fn three_commits(name: &str) -> (std::path::PathBuf, Appended, Vec<Committed>) {
        let path = dir(name).join("kept.snapshot");
        let big = big();
        let first = state(1, &big);
        // `big`'s bytes in a file of their own, after 4 KiB of something
        // else: the first commit copies them from there in the kernel.
        let origin = path.with_file_name("big.part");
        let mut bytes = vec![9u8; 4096];
        bytes.extend_from_slice(big.data().as_bytes());
        std::fs::write(&origin, &bytes).unwrap();
        let origins = Origins::from([(
            "resident/big".to_string(),
            (std::sync::Arc::new(File::open(&origin).unwrap()), 4096),
        )]);
        let (mut appended, c1) = Appended::create(
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap(),
            &first,
            &sources(&first, 1),
            &origins,
            &always(),
        )
        .unwrap()
        .unwrap();
        let mut commits = vec![c1];
        for n in 2..=3 {
            let s = state(n, &big);
            commits.push(
                appended
                    .commit(&s, &sources(&s, n as u64), &Origins::new(), &always())
                    .unwrap()
                    .unwrap(),
            );
        }
        (path, appended, commits)
    }

    #[test]
    fn a_commit_appends_only_what_the_file_does_not_hold_and_reads_back_bit_for_bit() {
        // (`big` was copied from its origin file by `sendfile`.)
        let (path, appended, commits) = three_commits("reads");
        let big = big();
        // The first commit holds everything; the next ones the small
        // resident, the header and the trailer only: not `big` again.
        assert!(commits[0].written > (N * 4) as u64);
        for c in &commits[1..] {
            assert!(c.written < 16 * 1024, "{c:?}");
        }
        assert_eq!(appended.file_len(), std::fs::metadata(&path).unwrap().len());
        assert_eq!(appended.file_len() % ALIGN, 0);
        let loaded = snapshot_file::load(&path).unwrap();
        let want = state(3, &big);
        assert_eq!(state_hash(&loaded), state_hash(&want));
        for name in ["resident/big", "resident/other"] {
            let (Some(Section::Tensor(a)), Some(Section::Tensor(b))) =
                (loaded.get(name), want.get(name))
            else {
                panic!("{name} missing");
            };
            assert_eq!(a.data().as_bytes(), b.data().as_bytes(), "{name}");
        }
        let verified = snapshot_file::verify(&path).unwrap();
        assert_eq!(verified.state_hash, state_hash(&want));
        assert_eq!(verified.bytes, appended.file_len());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_commit_cut_short_reads_as_the_one_before() {
        let (path, _, commits) = three_commits("cut");
        let big = big();
        let second_end = commits[0].len + commits[1].written;
        let full = std::fs::read(&path).unwrap();
        // Cut anywhere in the last commit: its data, header or trailer.
        for keep in [
            second_end + 1,
            second_end + ALIGN,
            full.len() as u64 - 1,
            full.len() as u64 - TAIL + 8,
        ] {
            std::fs::write(&path, &full[..keep as usize]).unwrap();
            let loaded = snapshot_file::load(&path)
                .unwrap_or_else(|e| panic!("cut at {keep} of {}: {e}", full.len()));
            assert_eq!(
                state_hash(&loaded),
                state_hash(&state(2, &big)),
                "cut at {keep}"
            );
        }
        // Garbage after a whole commit (a commit cut before its trailer,
        // its data all written): the commit before it.
        let mut longer = full.clone();
        longer.extend(vec![7u8; 3 * ALIGN as usize]);
        std::fs::write(&path, &longer).unwrap();
        let loaded = snapshot_file::load(&path).unwrap();
        assert_eq!(state_hash(&loaded), state_hash(&state(3, &big)));
        // A last trailer that does not check is damage, not a cut: refused.
        let mut damaged = full.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        let e = refused(&path);
        assert!(e.contains("trailer checksum mismatch"), "{e}");
        let mut damaged = full.clone();
        let trailer = damaged.len() - TAIL as usize;
        let header_at = u64::from_le_bytes(damaged[trailer + 8..trailer + 16].try_into().unwrap());
        damaged[header_at as usize + 10] ^= 0x20;
        std::fs::write(&path, &damaged).unwrap();
        let e = refused(&path);
        assert!(
            e.contains("damaged") && e.contains("header checksum mismatch"),
            "{e}"
        );
        // Nothing whole: refused, naming the format.
        std::fs::write(&path, &full[..(ALIGN + 100) as usize]).unwrap();
        let e = refused(&path);
        assert!(e.contains("no whole commit"), "{e}");
        assert!(e.contains("kept.snapshot"), "{e}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_abandoned_commit_leaves_the_file_at_its_last_whole_commit() {
        let (path, mut appended, _) = three_commits("abandon");
        let before = appended.file_len();
        let s = state(4, &big());
        assert_eq!(
            appended
                .commit(&s, &sources(&s, 4), &Origins::new(), &abandoned())
                .unwrap(),
            None
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        assert_eq!(appended.file_len(), before);
        let loaded = snapshot_file::load(&path).unwrap();
        assert_eq!(state_hash(&loaded), state_hash(&state(3, &big())));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A large commit reserves its blocks first, past the end: the file's
    /// length stays its last whole commit's, so it reads as before; one
    /// abandoned gives the blocks back (the cut to the last whole commit
    /// frees what lies past the end); written, it reads back bit for bit.
    #[test]
    fn a_large_commit_reserves_its_blocks_without_changing_what_the_file_reads_as() {
        use std::os::unix::fs::MetadataExt;
        let (path, mut appended, _) = three_commits("reserve");
        let before = appended.file_len();
        let blocks = || std::fs::metadata(&path).unwrap().blocks() * 512;
        let blocks_before = blocks();
        let large: usize = 24 << 20;
        appended.reserve(large as u64, 1);
        assert!(blocks() - blocks_before >= large as u64, "{}", blocks());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        assert_eq!(
            state_hash(&snapshot_file::load(&path).unwrap()),
            state_hash(&state(3, &big()))
        );

        let mut s = state(4, &big());
        s.insert_tensor(
            "resident/large",
            Tensor::from_f32(&[large / 4], (0..large / 4).map(|i| i as f32).collect()),
        );
        assert_eq!(
            appended
                .commit(&s, &sources(&s, 4), &Origins::new(), &abandoned())
                .unwrap(),
            None
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        assert!(blocks() < blocks_before + large as u64, "{}", blocks());
        appended
            .commit(&s, &sources(&s, 4), &Origins::new(), &always())
            .unwrap()
            .unwrap();
        assert_eq!(
            state_hash(&snapshot_file::load(&path).unwrap()),
            state_hash(&s)
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_file_linked_elsewhere_or_replaced_is_not_appended_to() {
        let (path, appended, _) = three_commits("alone");
        assert!(appended.is_alone_at(&path));
        let link = path.with_file_name("state.snap");
        std::fs::hard_link(&path, &link).unwrap();
        assert!(!appended.is_alone_at(&path), "a hard link elsewhere");
        std::fs::remove_file(&link).unwrap();
        assert!(appended.is_alone_at(&path));
        std::fs::rename(&path, &link).unwrap();
        std::fs::write(&path, b"another file").unwrap();
        assert!(!appended.is_alone_at(&path), "another file at its name");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_file_grown_past_twice_its_state_is_not_worth_appending_to() {
        let (path, appended, _) = three_commits("worth");
        let s = state(4, &big());
        // Only the small resident is new.
        assert_eq!(appended.new_bytes(&s, &sources(&s, 4)), 4000);
        assert!(appended.worth_appending(&s, &sources(&s, 4)));
        // Every section from a new place: all of it is new.
        let mut moved = sources(&s, 4);
        for source in moved.values_mut() {
            source.part = 99;
        }
        assert_eq!(appended.new_bytes(&s, &moved), s_bytes(&s));
        // The rule, at GiB sizes: 4 GiB of state in a file of 5 GiB takes
        // a new 1 GiB resident, not a second new 4 GiB.
        const GIB: u64 = 1 << 30;
        assert!(worth(5 * GIB, GIB, 4 * GIB));
        assert!(!worth(5 * GIB, 4 * GIB, 4 * GIB));
        assert!(worth(8 * GIB, 0, 4 * GIB));
        assert!(!worth(8 * GIB + (65 << 20), 0, 4 * GIB));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// Why loading `path` is refused (it must be).
    fn refused(path: &Path) -> String {
        match snapshot_file::load(path) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => e.to_string(),
        }
    }

    fn s_bytes(s: &Snapshot) -> u64 {
        s.sections()
            .map(|(_, x)| match x {
                Section::Tensor(t) => t.byte_len() as u64,
                Section::Scalar(_) => 0,
            })
            .sum()
    }
}

//! Snapshots on disk: how engine state survives a restart of the host
//! (`kiln dev --state FILE`, or the automatic save when the contract
//! changed and the host must restart).
//!
//! Layout (little-endian):
//!
//! ```text
//! 0   8  magic  "KILNSNAP"
//! 8   4  u32    file format version (2; 1 is still read)
//! 12  4  u32    crc32 of the header bytes
//! 16  8  u64    header length H
//! 24  H         header: JSON (serde_json), see `Header`
//! ..            data sections, each at a 4096-byte (page) aligned offset
//!               (format 1: 64-byte aligned)
//! ```
//!
//! Tensor bytes are written and read as raw little-endian memory (one
//! `read_exact` into the typed vector), each with its own crc32. Page
//! alignment (format 2) lets a sealed checkpoint be mapped and served in
//! place ([`map`]) instead of read.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use shared_state::{Buffer, DType, Scalar, Section, Snapshot, Tensor, element_count};

use super::snapshot_header::{ALIGN, Header, MAGIC, SectionHeader, scalar_header};
use super::state_hash::StateHasher;

const FILE_VERSION: u32 = 2;
/// Format 1's alignment (read only).
const ALIGN_V1: u64 = 64;
const PREAMBLE: u64 = 24;

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct SnapshotFileError {
    pub path: PathBuf,
    pub message: String,
}

fn align_to(offset: u64, alignment: u64) -> u64 {
    offset.div_ceil(alignment) * alignment
}

/// The data alignment of file format `version`, if this kiln reads it.
fn alignment_of(version: u32) -> Option<u64> {
    match version {
        1 => Some(ALIGN_V1),
        FILE_VERSION => Some(ALIGN),
        _ => None,
    }
}

/// Writes `snapshot` to `path` (via a temporary file and a rename, so a
/// crash never leaves a half-written snapshot under the real name).
pub fn save(snapshot: &Snapshot, path: &Path) -> Result<u64, SnapshotFileError> {
    let err = |message: String| SnapshotFileError {
        path: path.to_path_buf(),
        message,
    };
    let tmp = path.with_extension("partial");
    let write = || -> std::io::Result<u64> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let total = write_to(snapshot, &mut out)?;
        out.flush()?;
        Ok(total)
    };
    let total = write().map_err(|e| err(format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot rename into place: {e}")))?;
    Ok(total)
}

/// Writes `snapshot` in the file format to `out` (a file, shared memory);
/// returns the bytes written.
pub fn write_to(snapshot: &Snapshot, out: &mut impl Write) -> std::io::Result<u64> {
    write_version(snapshot, out, FILE_VERSION)
}

/// How much of a tensor [`write_hashed`] checksums, hashes and writes at a
/// time: small enough to stay in a core's L2 cache between the three.
const PIECE: usize = 256 << 10;

/// Writes `snapshot` in today's file format to `out` like [`write_to`],
/// in one pass over its bytes: each piece of a tensor is checksummed
/// (crc32), hashed into the state's hash
/// ([`super::state_hash::state_hash`]) and written while it is in cache,
/// the data first and the header (its crc32s known by then) last, padded
/// with spaces to the length reserved for it. Returns the bytes written and
/// the state's hash.
pub fn write_hashed(
    snapshot: &Snapshot,
    out: &mut (impl Write + Seek),
) -> std::io::Result<(u64, String)> {
    let written = write_part(snapshot, out, 0, &|_, _| None)?;
    Ok((written.bytes, written.hash))
}

/// Where a tensor section's bytes are in a checkpoint's parts, and what
/// they hash to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placed {
    /// The part (a sealed memfd) that holds them.
    pub part: u64,
    /// From that part's data start.
    pub offset: u64,
    pub bytes: u64,
    pub crc32: u32,
    /// The section's digest in the state's hash
    /// ([`super::state_hash::StateHasher::end_tensor`]); `None` for a cache
    /// section (not state).
    pub digest: Option<u128>,
}

/// What [`write_part`] wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartWritten {
    /// The part's length.
    pub bytes: u64,
    /// The hash of the whole state (as a full write records it).
    pub hash: String,
    /// Tensor bytes copied into this part.
    pub copied: u64,
    /// Where every tensor section is, by name.
    pub placed: std::collections::BTreeMap<String, Placed>,
}

/// Writes checkpoint part `part` of `snapshot` to `out`: a snapshot file
/// (format 2) whose header lists every section, holding the bytes of each
/// tensor section but those `earlier` says an earlier part already holds
/// (the header points there: `part`). With no earlier sections it is a
/// whole snapshot file. The state's hash is the whole state's: an earlier
/// section's recorded digest is folded in without reading its bytes.
pub fn write_part(
    snapshot: &Snapshot,
    out: &mut (impl Write + Seek),
    part: u64,
    earlier: &dyn Fn(&str, &Section) -> Option<Placed>,
) -> std::io::Result<PartWritten> {
    let outline = Outline::of(snapshot, part, earlier);
    let mut source = InMemory(|name: &str| match snapshot.get(name) {
        Some(Section::Tensor(t)) => Some(t.clone()),
        _ => None,
    });
    write_outline(&outline, out, part, &mut source)
}

/// [`write_part`] of a snapshot it takes, with no earlier part: each
/// tensor's memory is let go as soon as its bytes are written (when
/// nothing else holds it), so writing `n` bytes of tensors the snapshot
/// alone holds needs about the largest tensor's more, not `n` more.
pub fn write_part_taking(
    mut snapshot: Snapshot,
    out: &mut (impl Write + Seek),
    part: u64,
) -> std::io::Result<PartWritten> {
    let outline = Outline::of(&snapshot, part, &|_, _| None);
    let mut source = InMemory(|name: &str| snapshot.take_tensor(name));
    write_outline(&outline, out, part, &mut source)
}

/// What a part's header lists, known before any tensor byte is written:
/// every section's name, its scalar value or its tensor's dtype, shape and
/// length, and where an earlier part already holds it.
pub(super) struct Outline {
    format: u32,
    module: String,
    backend: String,
    sections: Vec<(String, OutlinedSection)>,
}

enum OutlinedSection {
    Tensor {
        dtype: String,
        shape: Vec<usize>,
        bytes: u64,
        earlier: Option<Placed>,
    },
    Scalar(Scalar),
}

impl Outline {
    fn of(
        snapshot: &Snapshot,
        part: u64,
        earlier: &dyn Fn(&str, &Section) -> Option<Placed>,
    ) -> Outline {
        let sections = snapshot
            .sections()
            .map(|(name, section)| {
                let outlined = match section {
                    Section::Tensor(t) => OutlinedSection::Tensor {
                        dtype: t.dtype().name().to_string(),
                        shape: t.shape().to_vec(),
                        bytes: t.byte_len() as u64,
                        earlier: earlier(name, section).filter(|p| {
                            p.part != part
                                && (Snapshot::is_cache_section(name) || p.digest.is_some())
                        }),
                    },
                    Section::Scalar(v) => OutlinedSection::Scalar(v.clone()),
                };
                (name.to_string(), outlined)
            })
            .collect();
        Outline {
            format: snapshot.format,
            module: snapshot.module.clone(),
            backend: snapshot.backend.clone(),
            sections,
        }
    }

    /// The outline of a part of module `module` and backend `backend`
    /// holding these tensors (name, dtype, shape, length), in this order,
    /// and nothing else.
    pub(super) fn of_tensors(
        module: &str,
        backend: &str,
        tensors: &[(String, DType, Vec<usize>, u64)],
    ) -> Outline {
        let empty = Snapshot::new(module, backend);
        let mut outline = Outline::of(&empty, 0, &|_, _| None);
        outline.sections = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                let section = OutlinedSection::Tensor {
                    dtype: dtype.name().to_string(),
                    shape: shape.clone(),
                    bytes: *bytes,
                    earlier: None,
                };
                (name.clone(), section)
            })
            .collect();
        outline
    }
}

/// Where the bytes of the tensor sections a part holds come from, for
/// [`write_outline`].
pub(super) trait TensorSource<W> {
    /// Writes the `bytes` bytes of tensor section `name` to `out` at its
    /// position (page-aligned), handing every byte written to `each`, in
    /// order, once (its crc32 and the state's hash).
    fn write(
        &mut self,
        name: &str,
        bytes: u64,
        out: &mut W,
        each: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<()>;

    /// Section `name` is written, and its bytes have the crc32 `crc32`:
    /// an error stops the write there.
    fn written(&mut self, _name: &str, _crc32: u32) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tensors in memory, by name (dropped once written, when taken).
struct InMemory<F>(F);

impl<W: Write, F: FnMut(&str) -> Option<Tensor>> TensorSource<W> for InMemory<F> {
    fn write(
        &mut self,
        name: &str,
        bytes: u64,
        out: &mut W,
        each: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<()> {
        let t = (self.0)(name)
            .ok_or_else(|| std::io::Error::other(format!("section {name}: its tensor is gone")))?;
        let data = t.data().as_bytes();
        if data.len() as u64 != bytes {
            return Err(std::io::Error::other(format!(
                "section {name}: {} bytes, its header says {bytes}",
                data.len()
            )));
        }
        // Each piece checksummed, hashed and written while in cache.
        for piece in data.chunks(PIECE) {
            each(piece);
            out.write_all(piece)?;
        }
        Ok(())
    }
}

/// Writes the part `outline` describes, each tensor written here from
/// `source`.
pub(super) fn write_outline<W: Write + Seek>(
    outline: &Outline,
    out: &mut W,
    part: u64,
    source: &mut dyn TensorSource<W>,
) -> std::io::Result<PartWritten> {
    let align = |offset: u64| align_to(offset, ALIGN);
    // The header with every crc32 unknown here at its longest, to reserve
    // its length.
    let header_of = |crcs: &[u32]| {
        let mut crcs = crcs.iter();
        let mut data_len = 0u64;
        let sections = outline
            .sections
            .iter()
            .map(|(name, section)| {
                let name = name.clone();
                match section {
                    OutlinedSection::Tensor {
                        dtype,
                        shape,
                        earlier: Some(p),
                        ..
                    } => SectionHeader::Tensor {
                        name,
                        dtype: dtype.clone(),
                        shape: shape.clone(),
                        offset: p.offset,
                        bytes: p.bytes,
                        crc32: p.crc32,
                        part: Some(p.part),
                    },
                    OutlinedSection::Tensor {
                        dtype,
                        shape,
                        bytes,
                        earlier: None,
                    } => {
                        let offset = data_len;
                        data_len = align(data_len + bytes);
                        SectionHeader::Tensor {
                            name,
                            dtype: dtype.clone(),
                            shape: shape.clone(),
                            offset,
                            bytes: *bytes,
                            crc32: crcs.next().copied().unwrap_or(u32::MAX),
                            part: None,
                        }
                    }
                    OutlinedSection::Scalar(v) => scalar_header(name, v),
                }
            })
            .collect();
        serde_json::to_vec(&Header {
            snapshot_format: outline.format,
            module: outline.module.clone(),
            backend: outline.backend.clone(),
            sections,
        })
        .map_err(std::io::Error::other)
    };
    let reserved = header_of(&[])?.len();
    let data_start = align(PREAMBLE + reserved as u64);
    let mut hasher = StateHasher::new(&outline.module);
    let mut crcs = Vec::new();
    let mut placed = std::collections::BTreeMap::new();
    let mut copied = 0u64;
    let mut pos = data_start;
    out.seek(SeekFrom::Start(data_start))?;
    for (name, section) in &outline.sections {
        let state = !Snapshot::is_cache_section(name);
        match section {
            OutlinedSection::Tensor {
                earlier: Some(p), ..
            } => {
                if let (true, Some(digest)) = (state, p.digest) {
                    hasher.tensor_digest(digest);
                }
                placed.insert(name.clone(), p.clone());
            }
            OutlinedSection::Tensor {
                dtype,
                shape,
                bytes,
                earlier: None,
            } => {
                let bytes = *bytes;
                if state {
                    hasher.tensor(name, dtype, shape, bytes);
                }
                let start = align(pos);
                out.write_all(&vec![0u8; (start - pos) as usize])?;
                let mut crc = crc32fast::Hasher::new();
                source.write(name, bytes, out, &mut |piece| {
                    crc.update(piece);
                    if state {
                        hasher.bytes(piece);
                    }
                })?;
                let crc32 = crc.finalize();
                source.written(name, crc32)?;
                crcs.push(crc32);
                placed.insert(
                    name.clone(),
                    Placed {
                        part,
                        offset: start - data_start,
                        bytes,
                        crc32,
                        digest: if state { hasher.end_tensor() } else { None },
                    },
                );
                copied += bytes;
                pos = start + bytes;
            }
            OutlinedSection::Scalar(v) if state => hasher.scalar(name, v),
            OutlinedSection::Scalar(_) => {}
        }
    }
    let mut header = header_of(&crcs)?;
    header.resize(reserved, b' ');
    out.seek(SeekFrom::Start(0))?;
    out.write_all(MAGIC)?;
    out.write_all(&FILE_VERSION.to_le_bytes())?;
    out.write_all(&crc32fast::hash(&header).to_le_bytes())?;
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    // The gap up to the data: zeros, as `write_to` writes it.
    out.write_all(&vec![
        0u8;
        (data_start - PREAMBLE - reserved as u64) as usize
    ])?;
    Ok(PartWritten {
        bytes: pos.max(data_start),
        hash: hasher.finish(),
        copied,
        placed,
    })
}

/// Writes `snapshot` in file format `version`: 2 (today's, what
/// [`write_to`] writes) or 1 (64-byte aligned, for tests that old files
/// still read). Panics on another version.
pub fn write_version(
    snapshot: &Snapshot,
    out: &mut impl Write,
    version: u32,
) -> std::io::Result<u64> {
    let alignment = alignment_of(version).expect("a format this kiln writes");
    let align = |offset: u64| align_to(offset, alignment);
    let mut sections = Vec::new();
    let mut tensors = Vec::new();
    let mut data_len = 0u64;
    for (name, section) in snapshot.sections() {
        let name = name.to_string();
        sections.push(match section {
            Section::Tensor(t) => {
                let bytes = t.data().as_bytes();
                let offset = data_len;
                data_len = align(data_len + bytes.len() as u64);
                tensors.push(bytes);
                SectionHeader::Tensor {
                    name,
                    dtype: t.dtype().name().to_string(),
                    shape: t.shape().to_vec(),
                    offset,
                    bytes: bytes.len() as u64,
                    crc32: crc32fast::hash(bytes),
                    part: None,
                }
            }
            Section::Scalar(v) => scalar_header(name, v),
        });
    }
    let header = Header {
        snapshot_format: snapshot.format,
        module: snapshot.module.clone(),
        backend: snapshot.backend.clone(),
        sections,
    };
    let header_bytes = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    let data_start = align(PREAMBLE + header_bytes.len() as u64);
    out.write_all(MAGIC)?;
    out.write_all(&version.to_le_bytes())?;
    out.write_all(&crc32fast::hash(&header_bytes).to_le_bytes())?;
    out.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
    out.write_all(&header_bytes)?;
    let mut pos = PREAMBLE + header_bytes.len() as u64;
    for bytes in tensors {
        let start = align(pos.max(data_start));
        out.write_all(&vec![0u8; (start - pos) as usize])?;
        out.write_all(bytes)?;
        pos = start + bytes.len() as u64;
    }
    Ok(pos)
}

/// Opens the snapshot file at `path` and reads its preamble and header:
/// the file, the header, where the data starts, and the file's length.
fn open_snapshot(path: &Path) -> Result<(File, Header, u64, u64), SnapshotFileError> {
    let err = |message: String| SnapshotFileError {
        path: path.to_path_buf(),
        message,
    };
    let mut file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let file_len = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let mut version = [0u8; 12];
    if file.read_exact(&mut version).is_ok()
        && &version[..8] == MAGIC
        && version[8..12] == super::snapshot_append::VERSION.to_le_bytes()
    {
        // Appended (format 3): read from its last whole commit; every
        // offset is from the file's start.
        let (header, _) = super::snapshot_append::read_tail(&file, file_len).map_err(err)?;
        return Ok((file, header, 0, file_len));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let (header, data_start) = read_header(&mut file, file_len).map_err(err)?;
    Ok((file, header, data_start, file_len))
}

/// Reads the preamble and header from `from` (the start of a snapshot of
/// `file_len` bytes): the header and where the data starts.
fn read_header(from: &mut impl Read, file_len: u64) -> Result<(Header, u64), String> {
    let mut preamble = [0u8; PREAMBLE as usize];
    from.read_exact(&mut preamble)
        .map_err(|_| format!("truncated: {file_len} bytes, a snapshot starts with {PREAMBLE}"))?;
    if &preamble[..8] != MAGIC {
        return Err("not a kiln snapshot (bad magic at byte 0)".into());
    }
    let version = u32::from_le_bytes(preamble[8..12].try_into().expect("4 bytes"));
    if version == super::snapshot_append::VERSION {
        return Err(format!(
            "an appended snapshot (file version {version}) is read from its trailer, not from here"
        ));
    }
    let alignment = alignment_of(version).ok_or_else(|| {
        format!(
            "snapshot file version {version} at byte 8, this kiln reads 1 to {}",
            super::snapshot_append::VERSION
        )
    })?;
    let header_crc = u32::from_le_bytes(preamble[12..16].try_into().expect("4 bytes"));
    let header_len = u64::from_le_bytes(preamble[16..24].try_into().expect("8 bytes"));
    if header_len > file_len - PREAMBLE {
        return Err(format!(
            "header length {header_len} at byte 16 runs past the end of the file ({file_len} bytes)"
        ));
    }
    let mut header_bytes = vec![0u8; header_len as usize];
    from.read_exact(&mut header_bytes)
        .map_err(|e| format!("cannot read header: {e}"))?;
    if crc32fast::hash(&header_bytes) != header_crc {
        return Err("header checksum mismatch (bytes 24..)".into());
    }
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|e| format!("malformed header: {e}"))?;
    Ok((header, align_to(PREAMBLE + header_len, alignment)))
}

/// The crc32 each tensor section of the snapshot file at `path` records
/// for its bytes, by section name, from its header alone (no data read).
pub fn tensor_crcs(
    path: &Path,
) -> Result<std::collections::HashMap<String, u32>, SnapshotFileError> {
    let (_, header, _, _) = open_snapshot(path)?;
    Ok(header
        .sections
        .into_iter()
        .filter_map(|s| match s {
            SectionHeader::Tensor { name, crc32, .. } => Some((name, crc32)),
            _ => None,
        })
        .collect())
}

/// Where each tensor section of the checkpoint whose newest part (number
/// `newest`) is at `path` is, from that part's header alone (no data
/// read): in the part its header names, else in `newest`. No digest is
/// known from a header ([`Placed::digest`] is `None`): a worker serving
/// these sections learns them by hashing the bytes it serves.
pub fn placements(
    path: &Path,
    newest: u64,
) -> Result<std::collections::BTreeMap<String, Placed>, SnapshotFileError> {
    let (_, header, _, _) = open_snapshot(path)?;
    Ok(header
        .sections
        .into_iter()
        .filter_map(|s| match s {
            SectionHeader::Tensor {
                name,
                offset,
                bytes,
                crc32,
                part,
                ..
            } => Some((
                name,
                Placed {
                    part: part.unwrap_or(newest),
                    offset,
                    bytes,
                    crc32,
                    digest: None,
                },
            )),
            _ => None,
        })
        .collect())
}

/// Where a tensor section's bytes start in the file, and its element count
/// and dtype, checked against the file's length and the section's shape.
fn tensor_place(
    name: &str,
    dtype: &str,
    shape: &[usize],
    offset: u64,
    bytes: u64,
    data_start: u64,
    file_len: u64,
) -> Result<(u64, usize, DType), String> {
    let dtype = DType::from_name(dtype)
        .ok_or_else(|| format!("section {name}: unknown dtype {dtype:?}"))?;
    let start = data_start
        .checked_add(offset)
        .filter(|s| s.checked_add(bytes).is_some_and(|end| end <= file_len))
        .ok_or_else(|| {
            format!("section {name}: {bytes} bytes at offset {offset} run past the end of the file")
        })?;
    let count = element_count(shape)
        .filter(|n| n.checked_mul(dtype.size()) == Some(bytes as usize))
        .ok_or_else(|| {
            format!("section {name}: shape {shape:?} of {dtype} does not match {bytes} bytes")
        })?;
    Ok((start, count, dtype))
}

/// What [`verify`] found in a whole, undamaged snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The file's length.
    pub bytes: u64,
    pub module: String,
    pub backend: String,
    /// The state's hash ([`crate::swap::state_hash::state_hash`] of the
    /// snapshot [`load`] would return).
    pub state_hash: String,
}

/// Reads the whole snapshot file at `path` in 1 MiB pieces (nothing the
/// size of the state is allocated), checks every checksum and returns its
/// state's hash: a damaged file is refused with the same reasons as
/// [`load`].
pub fn verify(path: &Path) -> Result<Verified, SnapshotFileError> {
    let err = |message: String| SnapshotFileError {
        path: path.to_path_buf(),
        message,
    };
    let (mut file, header, data_start, file_len) = open_snapshot(path)?;
    let mut hasher = StateHasher::new(&header.module);
    let mut piece = vec![0u8; 1 << 20];
    for section in &header.sections {
        match section {
            SectionHeader::Tensor {
                name,
                dtype,
                shape,
                offset,
                bytes,
                crc32,
                part,
            } => {
                if let Some(part) = part {
                    return Err(err(format!(
                        "section {name}: its bytes are in checkpoint part {part}, not in this \
                         file (not a whole snapshot file)"
                    )));
                }
                let (start, _, dtype) =
                    tensor_place(name, dtype, shape, *offset, *bytes, data_start, file_len)
                        .map_err(err)?;
                let state = !Snapshot::is_cache_section(name);
                if state {
                    hasher.tensor(name, dtype.name(), shape, *bytes);
                }
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| err(format!("section {name}: cannot read: {e}")))?;
                let mut crc = crc32fast::Hasher::new();
                let mut left = *bytes;
                while left > 0 {
                    let n = left.min(piece.len() as u64) as usize;
                    file.read_exact(&mut piece[..n])
                        .map_err(|e| err(format!("section {name}: cannot read: {e}")))?;
                    crc.update(&piece[..n]);
                    if state {
                        hasher.bytes(&piece[..n]);
                    }
                    left -= n as u64;
                }
                if crc.finalize() != *crc32 {
                    return Err(err(format!(
                        "section {name}: checksum mismatch (data at byte {start})"
                    )));
                }
            }
            SectionHeader::I64 { name, .. }
            | SectionHeader::F64 { name, .. }
            | SectionHeader::Bool { name, .. }
            | SectionHeader::Text { name, .. }
                if Snapshot::is_cache_section(name) => {}
            SectionHeader::I64 { name, value } => hasher.scalar(name, &Scalar::I64(*value)),
            SectionHeader::F64 { name, value } => hasher.scalar(name, &Scalar::F64(*value)),
            SectionHeader::Bool { name, value } => hasher.scalar(name, &Scalar::Bool(*value)),
            SectionHeader::Text { name, value } => {
                hasher.scalar(name, &Scalar::Text(value.clone()))
            }
        }
    }
    Ok(Verified {
        bytes: file_len,
        module: header.module,
        backend: header.backend,
        state_hash: hasher.finish(),
    })
}

/// Reads a snapshot written by [`save`]. A damaged file is refused with a
/// message naming the problem; nothing is allocated beyond what the file
/// can back.
pub fn load(path: &Path) -> Result<Snapshot, SnapshotFileError> {
    let err = |message: String| SnapshotFileError {
        path: path.to_path_buf(),
        message,
    };
    let (mut file, header, data_start, file_len) = open_snapshot(path)?;
    build(header, &mut whole(data_start, file_len), |tensor| {
        read_checked(&mut file, tensor).map(Some)
    })
    .map_err(err)
}

/// A tensor section's bytes in a file: `length` bytes from byte `start`,
/// whose crc32 the file records as `crc32` (`swap::part_from_file`
/// copies such ranges into a checkpoint part).
pub struct FileRange {
    /// The section's name in the part.
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub start: u64,
    pub length: u64,
    pub crc32: u32,
}

/// Like [`load`], but the tensor sections `leave` picks (by name and byte
/// length) are neither read nor in the snapshot returned: where their
/// bytes are in the file is returned instead (bounds checked against the
/// file and the section's shape; their crc32s are checked by whoever
/// copies them: `swap::part_from_file`). For a `--state` file whose large
/// tensors go into a checkpoint part of their own, copied in the kernel,
/// not read into the heap first.
pub fn load_leaving(
    path: &Path,
    leave: &dyn Fn(&str, u64) -> bool,
) -> Result<(Snapshot, Vec<FileRange>), SnapshotFileError> {
    let err = |message: String| SnapshotFileError {
        path: path.to_path_buf(),
        message,
    };
    let (mut file, header, data_start, file_len) = open_snapshot(path)?;
    let mut left = Vec::new();
    let snapshot = build(header, &mut whole(data_start, file_len), |tensor| {
        let bytes = (tensor.count * tensor.dtype.size()) as u64;
        if !leave(tensor.name, bytes) {
            return read_checked(&mut file, tensor).map(Some);
        }
        left.push(FileRange {
            name: tensor.name.to_string(),
            dtype: tensor.dtype,
            shape: tensor.shape.to_vec(),
            start: tensor.start,
            length: bytes,
            crc32: tensor.crc32,
        });
        Ok(None)
    })
    .map_err(err)?;
    Ok((snapshot, left))
}

/// The bytes of `tensor`, read from `file` and checked against its crc32.
fn read_checked(file: &mut File, tensor: &PlacedTensor) -> Result<Buffer, String> {
    let mut buffer = Buffer::zeros(tensor.dtype, tensor.count);
    file.seek(SeekFrom::Start(tensor.start))
        .and_then(|_| file.read_exact(buffer.as_bytes_mut()))
        .map_err(|e| format!("section {}: cannot read: {e}", tensor.name))?;
    if crc32fast::hash(buffer.as_bytes()) != tensor.crc32 {
        return Err(format!(
            "section {}: checksum mismatch (data at byte {})",
            tensor.name, tensor.start
        ));
    }
    Ok(buffer)
}

/// A tensor section, placed in the file ([`tensor_place`]).
struct PlacedTensor<'a> {
    name: &'a str,
    shape: &'a [usize],
    /// The checkpoint part holding it (`None`: this file).
    part: Option<u64>,
    start: u64,
    count: usize,
    dtype: DType,
    crc32: u32,
}

/// Where the data of a whole snapshot file (`data_start`, `file_len`)
/// is, for [`build`]: a section in another checkpoint part is refused.
fn whole(
    data_start: u64,
    file_len: u64,
) -> impl FnMut(Option<u64>) -> Result<Option<(u64, u64)>, String> {
    move |part| match part {
        None => Ok(Some((data_start, file_len))),
        Some(part) => Err(format!(
            "its bytes are in checkpoint part {part}, not in this file (not a whole snapshot file)"
        )),
    }
}

/// The snapshot `header` describes, each tensor's elements from
/// `elements` (`None`: leave the section out); `place` says where the
/// data of the part holding a section starts and how long that part is
/// (`None`: leave the section out).
fn build(
    header: Header,
    place: &mut dyn FnMut(Option<u64>) -> Result<Option<(u64, u64)>, String>,
    mut elements: impl FnMut(&PlacedTensor) -> Result<Option<Buffer>, String>,
) -> Result<Snapshot, String> {
    let mut snapshot = Snapshot::new(&header.module, &header.backend);
    snapshot.format = header.snapshot_format;
    for section in header.sections {
        match section {
            SectionHeader::Tensor {
                name,
                dtype,
                shape,
                offset,
                bytes,
                crc32,
                part,
            } => {
                let Some((data_start, file_len)) =
                    place(part).map_err(|e| format!("section {name}: {e}"))?
                else {
                    continue;
                };
                let (start, count, dtype) =
                    tensor_place(&name, &dtype, &shape, offset, bytes, data_start, file_len)?;
                let Some(buffer) = elements(&PlacedTensor {
                    name: &name,
                    shape: &shape,
                    part,
                    start,
                    count,
                    dtype,
                    crc32,
                })?
                else {
                    continue;
                };
                let tensor = Tensor::new(shape, buffer).map_err(|e| e.to_string())?;
                snapshot.insert_tensor(name, tensor);
            }
            scalar => insert_scalar(&mut snapshot, scalar),
        }
    }
    Ok(snapshot)
}

/// Inserts a scalar section into `snapshot` (a tensor section is not one).
fn insert_scalar(snapshot: &mut Snapshot, section: SectionHeader) {
    match section {
        SectionHeader::Tensor { .. } => {}
        SectionHeader::I64 { name, value } => snapshot.insert_scalar(name, Scalar::I64(value)),
        SectionHeader::F64 { name, value } => snapshot.insert_scalar(name, Scalar::F64(value)),
        SectionHeader::Bool { name, value } => snapshot.insert_scalar(name, Scalar::Bool(value)),
        SectionHeader::Text { name, value } => snapshot.insert_scalar(name, Scalar::Text(value)),
    }
}

/// The snapshot in `file`, a sealed checkpoint (a memfd that can no longer
/// be written or shrunk), served in place: every tensor's elements stay in
/// one read-only shared mapping of the file ([`Buffer::mapped`]), nothing
/// is copied or read ahead, and a write copies only what it writes to.
///
/// The tensors' crc32s are not checked here (that would read every byte
/// before serving): the bytes are the very ones the worker wrote before the
/// file was sealed, and a restart checks the state's hash recorded then
/// against what the new engine serves (`supervisor/recovery.rs`). The
/// header's checksum and every section's bounds are checked. A file that
/// is not sealed, or in format 1 (not page-aligned), is refused: read it
/// with [`load`].
pub fn map(file: &File, path: &Path) -> Result<Snapshot, SnapshotFileError> {
    map_parts(file, path, &|_| None, false)
}

/// A sealed checkpoint part, mapped: the mapping, where its data starts
/// and its length.
type MappedPart = (std::sync::Arc<shared_state::mapped::Mapping>, u64, u64);

/// Where the data of the format-2 snapshot in `file` (a checkpoint part)
/// starts: section offsets are from there. From its preamble alone (the
/// header's length), not checked: for copying a part's sections in the
/// kernel, whose bytes the part's own header already placed.
pub fn data_start(file: &File) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let mut preamble = [0u8; PREAMBLE as usize];
    file.read_exact_at(&mut preamble, 0)
        .map_err(|e| format!("cannot read the preamble: {e}"))?;
    if &preamble[..8] != MAGIC || preamble[8..12] != FILE_VERSION.to_le_bytes() {
        return Err(format!("not a format {FILE_VERSION} snapshot"));
    }
    let header_len = u64::from_le_bytes(preamble[16..24].try_into().expect("8 bytes"));
    Ok(align_to(PREAMBLE + header_len, ALIGN))
}

/// Maps the sealed checkpoint part `file` (at `path`) and reads its header.
fn map_part(file: &File) -> Result<MappedPart, String> {
    let mapping = std::sync::Arc::new(
        shared_state::mapped::Mapping::of_sealed(file).map_err(|e| e.to_string())?,
    );
    let bytes = mapping.bytes();
    if bytes.get(8..12) != Some(&FILE_VERSION.to_le_bytes()[..]) {
        return Err(format!(
            "not a format {FILE_VERSION} snapshot (page-aligned): cannot be mapped"
        ));
    }
    let file_len = bytes.len() as u64;
    let (_, data_start) = read_header(&mut &bytes[..], file_len)?;
    Ok((mapping, data_start, file_len))
}

/// The snapshot in the newest part `file` of a checkpoint (at `path`),
/// served in place like [`map`]: a section held by an earlier part is
/// served from that part, which `earlier` opens by its number. Without
/// `only_this_part`, a part `earlier` does not know is an error naming
/// it; with it, such sections are left out (the sections this part
/// holds, for a worker that serves from what it just wrote).
pub fn map_parts(
    file: &File,
    path: &Path,
    earlier: &dyn Fn(u64) -> Option<File>,
    only_this_part: bool,
) -> Result<Snapshot, SnapshotFileError> {
    let err = |message: String| SnapshotFileError {
        path: path.to_path_buf(),
        message,
    };
    let newest = map_part(file).map_err(err)?;
    let bytes = newest.0.bytes();
    let (header, _) = read_header(&mut &bytes[..], newest.2).map_err(err)?;
    let parts: std::cell::RefCell<std::collections::HashMap<u64, MappedPart>> = Default::default();
    let mut place = |part: Option<u64>| -> Result<Option<(u64, u64)>, String> {
        let Some(part) = part else {
            return Ok(Some((newest.1, newest.2)));
        };
        if let Some((_, start, len)) = parts.borrow().get(&part) {
            return Ok(Some((*start, *len)));
        }
        match earlier(part) {
            Some(file) => {
                let mapped = map_part(&file).map_err(|e| format!("checkpoint part {part}: {e}"))?;
                let placed = (mapped.1, mapped.2);
                parts.borrow_mut().insert(part, mapped);
                Ok(Some(placed))
            }
            None if only_this_part => Ok(None),
            None => Err(format!(
                "its bytes are in checkpoint part {part}, which is not given"
            )),
        }
    };
    build(header, &mut place, |tensor| {
        let parts = parts.borrow();
        let mapping = match tensor.part {
            None => &newest.0,
            Some(p) => &parts.get(&p).expect("placed before").0,
        };
        match tensor.count {
            0 => Ok(Some(Buffer::zeros(tensor.dtype, 0))),
            _ => Buffer::mapped(tensor.dtype, mapping, tensor.start as usize, tensor.count)
                .map(Some)
                .map_err(|e| format!("section {}: {e}", tensor.name)),
        }
    })
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut s = Snapshot::new("kernel-cpu", "cpu");
        s.insert_tensor(
            "resident/a",
            Tensor::from_f32(&[3, 2], vec![1.0, f32::NAN, -0.0, 4.0, 5.0, 6.0]),
        );
        s.insert_tensor(
            "resident/ids",
            Tensor::new(vec![3], Buffer::I64(vec![1, -2, 3].into())).unwrap(),
        );
        s.insert_tensor("resident/empty", Tensor::from_f32(&[0, 5], vec![]));
        s.insert_scalar("tuning/tile", Scalar::I64(64));
        s.insert_scalar("x", Scalar::F64(0.1));
        s.insert_scalar("flag", Scalar::Bool(true));
        s.insert_scalar("note", Scalar::Text("héllo".into()));
        s
    }

    /// The sections `load_leaving` leaves are not in the snapshot, and
    /// their places in the file hold exactly their bytes (with the crc32
    /// recorded for them); the rest is what `load` reads.
    #[test]
    fn load_leaving_places_the_left_sections_and_reads_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snapshot");
        let snapshot = sample();
        save(&snapshot, &path).unwrap();
        let (read, left) = load_leaving(&path, &|name, _| name == "resident/ids").unwrap();
        assert_eq!(left.len(), 1);
        assert!(read.get("resident/ids").is_none());
        let whole = load(&path).unwrap();
        for name in ["resident/a", "resident/empty", "tuning/tile", "note"] {
            assert!(read.get(name).is_some(), "{name}");
        }
        let ids = whole.get("resident/ids").unwrap();
        let shared_state::Section::Tensor(ids) = ids else {
            panic!("a tensor")
        };
        let bytes = std::fs::read(&path).unwrap();
        let range = &left[0];
        let placed = &bytes[range.start as usize..(range.start + range.length) as usize];
        assert_eq!(placed, ids.data().as_bytes());
        assert_eq!(range.crc32, crc32fast::hash(placed));
        assert_eq!(
            (range.dtype, range.shape.as_slice()),
            (ids.dtype(), ids.shape())
        );
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let dir = std::env::temp_dir().join(format!("kiln-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.snapshot");
        save(&sample(), &path).unwrap();
        let back = load(&path).unwrap();
        assert!(back.bit_eq(&sample()));
        assert_eq!(back.module, "kernel-cpu");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// [`sample`] with a tensor larger than a piece of [`verify`] and of
    /// [`write_hashed`], and a cache section (not state).
    fn sample_with_big_and_cache() -> Snapshot {
        let mut snapshot = sample();
        snapshot.insert_tensor(
            "resident/big",
            Tensor::from_f32(&[300_000], (0..300_000).map(|i| i as f32).collect()),
        );
        snapshot.insert_tensor(
            "cache/vulkan/pipeline-cache",
            Tensor::new(vec![3], Buffer::U8(vec![1, 2, 3].into())).unwrap(),
        );
        snapshot
    }

    #[test]
    fn a_part_copies_only_what_changed_and_hashes_the_whole_state() {
        let mut snapshot = sample_with_big_and_cache();
        let mut first = std::io::Cursor::new(Vec::new());
        let whole = write_part(&snapshot, &mut first, 1, &|_, _| None).unwrap();
        assert_eq!(whole.hash, crate::swap::state_hash::state_hash(&snapshot));
        let big = 300_000 * 4;
        assert!(whole.copied >= big);
        // A counter changes; `resident/big` stays in part 1.
        snapshot.insert_scalar("tuning/tile", Scalar::I64(65));
        let earlier =
            |name: &str, _: &Section| (name == "resident/big").then(|| whole.placed[name].clone());
        let mut second = std::io::Cursor::new(Vec::new());
        let part = write_part(&snapshot, &mut second, 2, &earlier).unwrap();
        assert_eq!(part.hash, crate::swap::state_hash::state_hash(&snapshot));
        assert_ne!(part.hash, whole.hash);
        assert!(part.copied < 4096, "{}", part.copied);
        assert_eq!(part.placed["resident/big"].part, 1);
        // Not a whole file: read alone, it says where the bytes are.
        let dir = std::env::temp_dir().join(format!("kiln-snap-part-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("part.snapshot");
        std::fs::write(&path, second.into_inner()).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("resident/big") && e.contains("part 1"), "{e}");
        let e = verify(&path).unwrap_err().to_string();
        assert!(e.contains("part 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A part written from a snapshot it takes is byte for byte the one
    /// written from a borrowed one, with the same placements, which
    /// [`placements`] reads back from its header (digests aside).
    #[test]
    fn a_part_written_taking_its_tensors_is_the_same_part() {
        let snapshot = sample_with_big_and_cache();
        let mut borrowed = std::io::Cursor::new(Vec::new());
        let from_borrowed = write_part(&snapshot, &mut borrowed, 3, &|_, _| None).unwrap();
        let mut taken = std::io::Cursor::new(Vec::new());
        let from_taken = write_part_taking(snapshot, &mut taken, 3).unwrap();
        assert!(borrowed.get_ref() == taken.get_ref());
        assert_eq!(from_borrowed.placed, from_taken.placed);
        assert_eq!(from_borrowed.hash, from_taken.hash);
        let dir = std::env::temp_dir().join(format!("kiln-snap-taken-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("part.snapshot");
        std::fs::write(&path, taken.into_inner()).unwrap();
        let without_digests = |placed: &std::collections::BTreeMap<String, Placed>| {
            placed
                .iter()
                .map(|(n, p)| (n.clone(), (p.part, p.offset, p.bytes, p.crc32)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            without_digests(&placements(&path, 3).unwrap()),
            without_digests(&from_taken.placed)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verify_hashes_the_state_as_the_loaded_snapshot_would() {
        let dir = std::env::temp_dir().join(format!("kiln-snap-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.snapshot");
        let mut snapshot = sample_with_big_and_cache();
        snapshot.insert_scalar(
            "cache/vulkan/pipeline-cache-key",
            Scalar::Text("vendor=1 len=3".into()),
        );
        let bytes = save(&snapshot, &path).unwrap();
        let verified = verify(&path).unwrap();
        assert_eq!(verified.bytes, bytes);
        assert_eq!(verified.module, "kernel-cpu");
        assert_eq!(verified.backend, "cpu");
        let hash = crate::swap::state_hash::state_hash(&snapshot);
        assert_eq!(verified.state_hash, hash);
        assert_eq!(
            crate::swap::state_hash::state_hash(&load(&path).unwrap()),
            hash
        );
        // The cache is not state; a resident's bit is.
        let mut other_cache = snapshot.clone();
        other_cache.insert_tensor(
            "cache/vulkan/pipeline-cache",
            Tensor::new(vec![1], Buffer::U8(vec![9].into())).unwrap(),
        );
        other_cache.insert_scalar("cache/vulkan/pipeline-cache-key", Scalar::Text("x".into()));
        assert_eq!(crate::swap::state_hash::state_hash(&other_cache), hash);
        snapshot.insert_scalar("tuning/tile", Scalar::I64(32));
        assert_ne!(crate::swap::state_hash::state_hash(&snapshot), hash);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_written_in_one_pass_reads_as_written_and_hashes_the_state() {
        let snapshot = sample_with_big_and_cache();
        let dir = std::env::temp_dir().join(format!("kiln-snap-hashed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.snapshot");
        let mut file = File::create(&path).unwrap();
        let (bytes, hash) = write_hashed(&snapshot, &mut file).unwrap();
        drop(file);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        assert_eq!(hash, crate::swap::state_hash::state_hash(&snapshot));
        assert!(load(&path).unwrap().bit_eq(&snapshot));
        let verified = verify(&path).unwrap();
        assert_eq!(verified.state_hash, hash);
        // The same data where `write_to` puts it, every crc32 recorded.
        let mut plain = Vec::new();
        write_to(&snapshot, &mut plain).unwrap();
        let one_pass = std::fs::read(&path).unwrap();
        assert_eq!(one_pass.len(), plain.len());
        let data = |b: &[u8]| b[b.len() - 300_000 * 4..].to_vec();
        assert_eq!(data(&one_pass), data(&plain));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_old_format_file_still_loads() {
        let dir = std::env::temp_dir().join(format!("kiln-snap-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.snapshot");
        let mut v1 = Vec::new();
        write_version(&sample(), &mut v1, 1).unwrap();
        assert_eq!(&v1[8..12], &1u32.to_le_bytes());
        std::fs::write(&path, &v1).unwrap();
        assert!(load(&path).unwrap().bit_eq(&sample()));
        let verified = verify(&path).unwrap();
        assert_eq!(
            verified.state_hash,
            crate::swap::state_hash::state_hash(&sample())
        );
        // Today's files put every section on a page of its own.
        save(&sample(), &path).unwrap();
        let v2 = std::fs::read(&path).unwrap();
        assert_eq!(&v2[8..12], &FILE_VERSION.to_le_bytes());
        assert!(v2.len() > v1.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A memfd holding `snapshot` as a file, sealed if `sealed`.
    fn memfd_of(snapshot: &Snapshot, version: u32, sealed: bool) -> File {
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd = rustix::fs::memfd_create("kiln-test", MemfdFlags::ALLOW_SEALING).unwrap();
        let mut file = File::from(fd);
        write_version(snapshot, &mut file, version).unwrap();
        if sealed {
            rustix::fs::fcntl_add_seals(
                &file,
                SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW,
            )
            .unwrap();
        }
        file
    }

    #[test]
    fn a_sealed_checkpoint_is_served_in_place() {
        let mut snapshot = sample();
        snapshot.insert_tensor(
            "resident/big",
            Tensor::from_f32(&[5000], (0..5000).map(|i| i as f32).collect()),
        );
        let file = memfd_of(&snapshot, FILE_VERSION, true);
        let path = Path::new("checkpoint");
        let mapped = map(&file, path).unwrap();
        assert!(mapped.bit_eq(&snapshot));
        let tensor = |s: &Snapshot, name: &str| match s.sections().find(|(n, _)| *n == name) {
            Some((_, Section::Tensor(t))) => t.clone(),
            _ => panic!("no tensor {name}"),
        };
        assert!(tensor(&mapped, "resident/big").data().is_mapped());
        assert!(tensor(&mapped, "resident/ids").data().is_mapped());
        // The seal holds: the file cannot be written any more.
        assert!(std::io::Write::write_all(&mut &file, b"x").is_err());
        // A write into a mapped tensor copies it; the file is unchanged.
        let mut big = tensor(&mapped, "resident/big");
        big.data_mut().as_f32_mut().unwrap()[0] = -1.0;
        assert!(!big.data().is_mapped());
        assert!(map(&file, path).unwrap().bit_eq(&snapshot));
        // Not sealed, or not page-aligned: refused (read it instead).
        let unsealed = memfd_of(&snapshot, FILE_VERSION, false);
        let e = map(&unsealed, path).unwrap_err().to_string();
        assert!(e.contains("not sealed") && e.contains("checkpoint"), "{e}");
        let old = memfd_of(&snapshot, 1, true);
        let e = map(&old, path).unwrap_err().to_string();
        assert!(e.contains("cannot be mapped"), "{e}");
    }

    #[test]
    fn damage_is_refused_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("kiln-snap-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.snapshot");
        save(&sample(), &path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"NOTASNAP".iter().chain(&good[8..]).copied().collect(),
                "bad magic",
            ),
            (good[..10].to_vec(), "truncated"),
            (
                {
                    let mut b = good.clone();
                    b[8] = 9;
                    b
                },
                "file version 9",
            ),
            (
                {
                    let mut b = good.clone();
                    b[30] ^= 1;
                    b
                },
                "header checksum",
            ),
            (
                {
                    let mut b = good.clone();
                    let n = b.len();
                    b[n - 1] ^= 1;
                    b
                },
                "checksum mismatch",
            ),
            (good[..good.len() - 8].to_vec(), "run past the end"),
            (
                {
                    let mut b = good.clone();
                    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
                    b
                },
                "header length",
            ),
        ];
        for (bytes, want) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let e = load(&path).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?}, got {e}");
            assert!(e.contains("a.snapshot"), "{e}");
            // Verifying without loading refuses it for the same reason.
            let v = verify(&path).unwrap_err().to_string();
            assert!(v.contains(want), "verify: want {want:?}, got {v}");
            assert!(v.contains("a.snapshot"), "{v}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

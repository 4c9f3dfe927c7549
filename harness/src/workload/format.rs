//! The workload file: versioned, checksummed, loaded at disk speed.
//!
//! ```text
//! offset 0   8 bytes   magic "KILNWKLD"
//! offset 8   u32 LE    format version (FORMAT_VERSION)
//! offset 12  u32 LE    CRC-32 (IEEE, zlib's) of the header bytes
//! offset 16  u64 LE    header length in bytes
//! offset 24  header    UTF-8 JSON: name, sections, steps
//! data start           align_up(24 + header length, 64)
//! data start + offset  each section's raw little-endian elements, at offsets
//!                      that are multiples of 64, not overlapping
//! ```
//!
//! The full description, with a Python writer, is `docs/workload-format.md`.
//! The reader checks every length and offset against the file size before it
//! allocates, reads each section with one `read_exact` straight into its typed
//! `Vec`, and refuses a damaged file with a [`WorkloadError`] that names the
//! file, the problem and the byte offset. [`read_answering`] may leave a
//! resident load's bytes in the file instead, saying where they are, for a
//! caller that copies them elsewhere and checks them there (the worker's
//! loads part).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shared_state::{Arg, Buffer, Call, DType, Scalar, Tensor, element_count, format_shape};

use super::model::{CallStep, Step, Trial, Workload};

/// First eight bytes of every workload file.
pub const MAGIC: [u8; 8] = *b"KILNWKLD";
/// The format version this code writes. It reads this one and every
/// earlier one (version 1: one trial, at most one expected output, no
/// signature tag).
pub const FORMAT_VERSION: u32 = 2;
/// Alignment of data sections (relative to the data start, which is itself
/// aligned in the file).
pub const ALIGN: u64 = 64;
/// Bytes before the header: magic, version, header checksum, header length.
pub const PREAMBLE_LEN: u64 = 24;

/// What is wrong with a workload file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadErrorKind {
    /// The file could not be opened, read or written.
    Io,
    /// Shorter than the preamble.
    Truncated,
    /// Does not start with [`MAGIC`].
    BadMagic,
    /// Version 0, or newer than [`FORMAT_VERSION`].
    BadVersion,
    /// The header length runs past the end of the file.
    HeaderLength,
    /// The header bytes do not match their checksum.
    HeaderChecksum,
    /// The header is not the JSON this version expects.
    MalformedHeader,
    /// A section has a dtype this version does not know.
    UnknownDType,
    /// A section's offset or length overflows, is misaligned or runs past
    /// the end of the file.
    SectionBounds,
    /// A section's shape does not match its byte length.
    ShapeMismatch,
    /// Two sections share bytes.
    Overlap,
    /// A section's bytes do not match their checksum.
    SectionChecksum,
    /// A step names a section that does not exist or another step uses.
    BadReference,
    /// The workload cannot be written (a parameter JSON cannot hold).
    Unwritable,
}

/// A workload file that cannot be read (or written): the file, the problem
/// and, where there is one, the byte offset it was found at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadError {
    pub path: PathBuf,
    pub kind: WorkloadErrorKind,
    pub offset: Option<u64>,
    pub message: String,
}

impl WorkloadError {
    fn new(path: &Path, kind: WorkloadErrorKind, offset: Option<u64>, message: String) -> Self {
        WorkloadError {
            path: path.to_path_buf(),
            kind,
            offset,
            message,
        }
    }
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workload {}: {}", self.path.display(), self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " (at byte {offset})")?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkloadError {}

// ----- the header, as JSON -----

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    sections: Vec<SectionEntry>,
    steps: Vec<StepEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionEntry {
    dtype: String,
    shape: Vec<u64>,
    /// From the data start.
    offset: u64,
    length: u64,
    crc32: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum StepEntry {
    Load {
        name: String,
        tensor: u64,
    },
    Call {
        kernel: String,
        args: Vec<ArgEntry>,
        #[serde(default)]
        params: BTreeMap<String, serde_json::Value>,
        #[serde(default)]
        store_as: Option<String>,
        /// Version 1: one section; version 2: a list, one per output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<Expected>,
        /// Version 2: further trials.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        trials: Vec<TrialEntry>,
        /// Version 2: the declaration signature the call was recorded for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        /// Version 2: the command that recorded the call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recorded_by: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Expected {
    One(u64),
    Many(Vec<u64>),
}

impl Expected {
    fn sections(&self) -> Vec<u64> {
        match self {
            Expected::One(i) => vec![*i],
            Expected::Many(v) => v.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialEntry {
    inputs: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    expected: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ArgEntry {
    Tensor(u64),
    Resident(String),
}

fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

// ----- writing -----

/// Writes `workload` to `path` (through a temporary file in the same
/// directory, renamed into place, so a reader never sees half a file).
pub fn write(workload: &Workload, path: &Path) -> Result<(), WorkloadError> {
    let io_err = |what: &str, e: std::io::Error| io_error(path, what, e);
    let file_name = path
        .file_name()
        .map_or_else(|| "workload".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| io_err("create a temporary file", e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        write_to(workload, &mut out, path)?;
        let file = out
            .into_inner()
            .map_err(|e| io_err("write", e.into_error()))?;
        file.sync_all().map_err(|e| io_err("sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err("rename the temporary file into place", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The whole file as bytes (for tests and small workloads).
pub fn to_bytes(workload: &Workload) -> Result<Vec<u8>, WorkloadError> {
    let mut out = Vec::new();
    write_to(workload, &mut out, Path::new("<memory>"))?;
    Ok(out)
}

/// Writes the file to `out`; `path` only names it in errors.
pub fn write_to<'a>(
    workload: &'a Workload,
    out: &mut impl Write,
    path: &Path,
) -> Result<(), WorkloadError> {
    let mut tensors: Vec<&'a Tensor> = Vec::new();
    let mut steps = Vec::with_capacity(workload.steps.len());
    for (i, step) in workload.steps.iter().enumerate() {
        match step {
            Step::Load { name, tensor } => {
                let index = tensors.len() as u64;
                tensors.push(tensor);
                steps.push(StepEntry::Load {
                    name: name.clone(),
                    tensor: index,
                });
            }
            Step::Call(CallStep {
                call,
                expected,
                trials,
                signature,
                recorded_by,
            }) => {
                let mut args = Vec::with_capacity(call.args.len());
                for arg in &call.args {
                    args.push(match arg {
                        Arg::Tensor(t) => {
                            let index = tensors.len() as u64;
                            tensors.push(t);
                            ArgEntry::Tensor(index)
                        }
                        Arg::Resident(name) => ArgEntry::Resident(name.clone()),
                    });
                }
                let mut params = BTreeMap::new();
                for (name, value) in &call.params {
                    params.insert(name.clone(), scalar_to_json(value).ok_or_else(|| {
                        WorkloadError::new(
                            path,
                            WorkloadErrorKind::Unwritable,
                            None,
                            format!(
                                "step {i} ({}): parameter {name} is {value}, which JSON cannot hold",
                                call.kernel
                            ),
                        )
                    })?);
                }
                let mut push_all = |list: &'a [Tensor]| -> Vec<u64> {
                    list.iter()
                        .map(|t| {
                            let index = tensors.len() as u64;
                            tensors.push(t);
                            index
                        })
                        .collect()
                };
                let expected = (!expected.is_empty()).then(|| Expected::Many(push_all(expected)));
                let trials = trials
                    .iter()
                    .map(|t| TrialEntry {
                        inputs: push_all(&t.inputs),
                        expected: push_all(&t.expected),
                    })
                    .collect();
                steps.push(StepEntry::Call {
                    kernel: call.kernel.clone(),
                    args,
                    params,
                    store_as: call.store_as.clone(),
                    expected,
                    trials,
                    signature: signature.clone(),
                    recorded_by: recorded_by.clone(),
                });
            }
        }
    }
    let mut sections = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in &tensors {
        let length = t.byte_len() as u64;
        sections.push(SectionEntry {
            dtype: t.dtype().name().to_string(),
            shape: t.shape().iter().map(|&d| d as u64).collect(),
            offset,
            length,
            crc32: crc32fast::hash(t.data().as_bytes()),
        });
        offset = align_up(offset + length).expect("in-memory sizes fit u64");
    }
    let header = serde_json::to_vec(&Header {
        name: workload.name.clone(),
        sections,
        steps,
    })
    .map_err(|e| {
        WorkloadError::new(
            path,
            WorkloadErrorKind::Unwritable,
            None,
            format!("header: {e}"),
        )
    })?;
    let io = |e: std::io::Error| {
        WorkloadError::new(
            path,
            WorkloadErrorKind::Io,
            None,
            format!("cannot write: {e}"),
        )
    };
    out.write_all(&MAGIC).map_err(io)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&crc32fast::hash(&header).to_le_bytes())
        .map_err(io)?;
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    let mut pos = PREAMBLE_LEN + header.len() as u64;
    let zeros = [0u8; ALIGN as usize];
    for t in &tensors {
        let pad = align_up(pos).expect("fits") - pos;
        out.write_all(&zeros[..pad as usize]).map_err(io)?;
        out.write_all(t.data().as_bytes()).map_err(io)?;
        pos += pad + t.byte_len() as u64;
    }
    // End on an aligned size, so that appending files stays aligned.
    let pad = align_up(pos).expect("fits") - pos;
    out.write_all(&zeros[..pad as usize]).map_err(io)?;
    Ok(())
}

fn scalar_to_json(value: &Scalar) -> Option<serde_json::Value> {
    Some(match value {
        Scalar::I64(v) => serde_json::Value::from(*v),
        Scalar::F64(v) => serde_json::Value::Number(serde_json::Number::from_f64(*v)?),
        Scalar::Bool(v) => serde_json::Value::Bool(*v),
        Scalar::Text(v) => serde_json::Value::String(v.clone()),
    })
}

fn json_to_scalar(value: &serde_json::Value) -> Option<Scalar> {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(Scalar::I64(i))
            } else if n.is_f64() {
                n.as_f64().map(Scalar::F64)
            } else {
                None // an integer beyond i64
            }
        }
        serde_json::Value::Bool(b) => Some(Scalar::Bool(*b)),
        serde_json::Value::String(s) => Some(Scalar::Text(s.clone())),
        _ => None,
    }
}

// ----- reading -----

/// Reads and checks a workload file.
pub fn read(path: &Path) -> Result<Workload, WorkloadError> {
    read_given(path, &mut |_| None).map(|(w, _)| w)
}

/// Checks a workload file as [`read`] does (every checksum, bound and
/// reference) without keeping its data: each section is read through one
/// 1 MiB piece, and the workload returned has every tensor's dtype and
/// shape but zeros for elements (memory the system maps only when
/// touched). For a check before a build and [`Workload::describe`]: a
/// GiB-sized workload costs its read from the page cache and its crc32s,
/// not a GiB of memory faulted in.
pub fn check(path: &Path) -> Result<Workload, WorkloadError> {
    let (file, len) = open(path)?;
    read_sections(file, len, path, &mut |_| LoadAnswer::Read, Data::Check).map(|r| r.workload)
}

/// Checks a workload file's structure as [`read`] does (preamble, header
/// and its checksum, every section's bounds, shape and reference) without
/// reading any section's bytes: their checksums are checked by whoever
/// reads them (`kiln dev`'s worker, as it loads them). The workload
/// returned has every tensor's dtype and shape but zeros for elements
/// (memory the system maps only when touched). Instant whatever the size:
/// a 4 GiB workload's [`check`] took 0.7 s here, on the start's path.
pub fn check_structure(path: &Path) -> Result<Workload, WorkloadError> {
    let (file, len) = open(path)?;
    read_sections(file, len, path, &mut |_| LoadAnswer::Read, Data::Skip).map(|r| r.workload)
}

/// The resident loads of the workload file at `path` for which `leave`
/// says so, as [`read_answering`] would leave them in the file, from its
/// structure alone ([`check_structure`]: no section's bytes are read or
/// checked).
pub fn left_loads(
    path: &Path,
    leave: &mut dyn FnMut(&LoadSection) -> bool,
) -> Result<Vec<LeftLoad>, WorkloadError> {
    let (file, len) = open(path)?;
    let answer = &mut |load: &LoadSection| match leave(load) {
        true => LoadAnswer::Leave,
        false => LoadAnswer::Read,
    };
    read_sections(file, len, path, answer, Data::Skip).map(|r| r.left)
}

/// An I/O error on the workload file at `path` while doing `what`.
fn io_error(path: &Path, what: &str, e: std::io::Error) -> WorkloadError {
    WorkloadError::new(
        path,
        WorkloadErrorKind::Io,
        None,
        format!("cannot {what}: {e}"),
    )
}

/// The workload file at `path`, opened, and its length.
fn open(path: &Path) -> Result<(File, u64), WorkloadError> {
    let io_err = |what: &str, e: std::io::Error| io_error(path, what, e);
    let file = File::open(path).map_err(|e| io_err("open", e))?;
    let len = file.metadata().map_err(|e| io_err("stat", e))?.len();
    Ok((file, len))
}

/// What [`read_sections`] does with each section's bytes once checked.
#[derive(Clone, Copy, PartialEq)]
enum Data {
    /// Keeps them (the workload to replay).
    Keep,
    /// Checks them only ([`check`]).
    Check,
    /// Neither reads nor checks them ([`check_structure`]).
    Skip,
}

/// What a resident load's section holds, for [`read_answering`]: the
/// load's name, its dtype and shape, the crc32 the file records for its
/// bytes, where they are in the file and how many of the workload's loads
/// load that name (a name loaded again replaces what it held).
pub struct LoadSection<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [usize],
    pub crc32: u32,
    pub place: SectionPlace,
    pub loads_of_name: usize,
}

/// Where a section's bytes are in the workload file: its index in the
/// header, and `length` bytes from byte `start` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionPlace {
    pub section: usize,
    pub start: u64,
    pub length: u64,
}

/// What [`read_answering`] does with a resident load's section.
pub enum LoadAnswer {
    /// Reads its bytes into a buffer of their own and checks them against
    /// their crc32, as [`read`] does.
    Read,
    /// Takes this tensor instead, without reading the section, when it has
    /// the section's dtype and shape (else reads it).
    Given(Tensor),
    /// Leaves the bytes in the file unread and unchecked: the load holds an
    /// empty tensor of the section's dtype, and [`Answered::left`] says
    /// where the bytes are, for the caller to copy them where they go and
    /// check them there ([`LeftLoad::checksum_mismatch`]).
    Leave,
}

/// A resident load whose bytes [`read_answering`] left in the file: the
/// step that loads it, its name, the tensor's dtype and shape, where its
/// bytes are and the crc32 the file records for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftLoad {
    pub step: usize,
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub place: SectionPlace,
    pub crc32: u32,
}

impl LeftLoad {
    /// The error [`read`] gives when this load's bytes in the file at
    /// `path` have the crc32 `computed`, not the one the file records.
    pub fn checksum_mismatch(&self, path: &Path, computed: u32) -> WorkloadError {
        section_checksum_error(
            path,
            self.place,
            self.dtype,
            &self.shape,
            self.crc32,
            computed,
        )
    }
}

/// What [`read_answering`] read: the workload, how many loads were given
/// ([`LoadAnswer::Given`]) and the loads left in the file
/// ([`LoadAnswer::Leave`]), in the order of their bytes in the file.
pub struct Answered {
    pub workload: Workload,
    pub given: usize,
    pub left: Vec<LeftLoad>,
}

/// Reads and checks a workload file like [`read`], except that a resident
/// load for which `given` returns a tensor (of the section's dtype and
/// shape) takes that tensor and its section is not read at all: a worker
/// restarted from a checkpoint that already holds those bytes (the same
/// crc32) reads only what the checkpoint lacks. Returns the workload and
/// how many loads were given.
pub fn read_given(
    path: &Path,
    given: &mut dyn FnMut(&LoadSection) -> Option<Tensor>,
) -> Result<(Workload, usize), WorkloadError> {
    read_answering(path, &mut |load| {
        given(load).map_or(LoadAnswer::Read, LoadAnswer::Given)
    })
    .map(|r| (r.workload, r.given))
}

/// Reads and checks a workload file like [`read`] (the preamble, the
/// header, every bound, shape and reference), asking `answer` what to do
/// with each resident load's bytes ([`LoadAnswer`]): read them, take a
/// tensor given instead, or leave them in the file for the caller (a
/// worker copies a large resident from the file into its checkpoint part
/// in the kernel, and checks it there, without reading it into memory of
/// its own first). Every other section is read and checked as [`read`]
/// does.
pub fn read_answering(
    path: &Path,
    answer: &mut dyn FnMut(&LoadSection) -> LoadAnswer,
) -> Result<Answered, WorkloadError> {
    let (file, len) = open(path)?;
    read_sections(file, len, path, answer, Data::Keep)
}

/// Reads a workload from `input`, which holds `len` bytes; `path` only names
/// it in errors.
pub fn read_from<R: Read + Seek>(
    input: R,
    len: u64,
    path: &Path,
) -> Result<Workload, WorkloadError> {
    read_sections(input, len, path, &mut |_| LoadAnswer::Read, Data::Keep).map(|r| r.workload)
}

/// The error of a section whose bytes (at `place`, of `dtype` and `shape`)
/// have the crc32 `computed`, not the `recorded` one.
fn section_checksum_error(
    path: &Path,
    place: SectionPlace,
    dtype: DType,
    shape: &[usize],
    recorded: u32,
    computed: u32,
) -> WorkloadError {
    WorkloadError::new(
        path,
        WorkloadErrorKind::SectionChecksum,
        Some(place.start),
        format!(
            "section {} ({dtype}[{}]): checksum mismatch: stored {recorded:#010x}, computed {computed:#010x}",
            place.section,
            format_shape(shape)
        ),
    )
}

/// [`read_from`], doing with each resident load what `answer` says (see
/// [`read_answering`]).
fn read_sections<R: Read + Seek>(
    mut input: R,
    len: u64,
    path: &Path,
    answer: &mut dyn FnMut(&LoadSection) -> LoadAnswer,
    data: Data,
) -> Result<Answered, WorkloadError> {
    use WorkloadErrorKind as K;
    let err =
        |kind, offset: u64, message: String| WorkloadError::new(path, kind, Some(offset), message);
    let io = |offset: u64, e: std::io::Error| err(K::Io, offset, format!("cannot read: {e}"));

    // Preamble.
    let mut magic = [0u8; 8];
    let have = len.min(8) as usize;
    input.read_exact(&mut magic[..have]).map_err(|e| io(0, e))?;
    if magic[..have] != MAGIC[..have] {
        return Err(err(
            K::BadMagic,
            0,
            format!(
                "not a kiln workload file: it starts with {:?}, not \"KILNWKLD\"",
                String::from_utf8_lossy(&magic[..have])
            ),
        ));
    }
    if len < PREAMBLE_LEN {
        return Err(err(
            K::Truncated,
            len,
            format!(
                "truncated: the file is {len} bytes, shorter than the {PREAMBLE_LEN}-byte preamble"
            ),
        ));
    }
    let mut rest = [0u8; 16];
    input.read_exact(&mut rest).map_err(|e| io(8, e))?;
    let version = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
    let header_crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let header_len = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
    if version == 0 {
        return Err(err(K::BadVersion, 8, "bad format version 0".to_string()));
    }
    if version > FORMAT_VERSION {
        return Err(err(
            K::BadVersion,
            8,
            format!(
                "unsupported format version {version} (this kiln reads versions 1 to {FORMAT_VERSION})"
            ),
        ));
    }
    if header_len > len - PREAMBLE_LEN {
        return Err(err(
            K::HeaderLength,
            16,
            format!(
                "header length {header_len} runs past the end of the file ({len} bytes, header starts at byte {PREAMBLE_LEN})"
            ),
        ));
    }

    // Header: bounded by the file size, checked before it is parsed.
    let mut header_bytes = vec![0u8; header_len as usize];
    input
        .read_exact(&mut header_bytes)
        .map_err(|e| io(PREAMBLE_LEN, e))?;
    let computed = crc32fast::hash(&header_bytes);
    if computed != header_crc {
        return Err(err(
            K::HeaderChecksum,
            12,
            format!(
                "header checksum mismatch: stored {header_crc:#010x}, computed {computed:#010x}"
            ),
        ));
    }
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|e| {
        let at = PREAMBLE_LEN + json_error_offset(&header_bytes, e.line(), e.column());
        err(K::MalformedHeader, at, format!("malformed header: {e}"))
    })?;
    drop(header_bytes);
    let data_start = align_up(PREAMBLE_LEN + header_len).ok_or_else(|| {
        err(
            K::HeaderLength,
            16,
            format!("header length {header_len} overflows"),
        )
    })?;

    // Sections: every bound checked against the file before any allocation.
    let mut layout = Vec::with_capacity(header.sections.len());
    for (i, s) in header.sections.iter().enumerate() {
        let dtype = DType::from_name(&s.dtype).ok_or_else(|| {
            err(
                K::UnknownDType,
                PREAMBLE_LEN,
                format!(
                    "section {i}: unknown dtype {:?} (known: {})",
                    s.dtype,
                    DType::ALL.map(DType::name).join(", ")
                ),
            )
        })?;
        let start = data_start.checked_add(s.offset).ok_or_else(|| {
            err(
                K::SectionBounds,
                PREAMBLE_LEN,
                format!("section {i}: offset {} overflows", s.offset),
            )
        })?;
        let end = start.checked_add(s.length).ok_or_else(|| {
            err(
                K::SectionBounds,
                PREAMBLE_LEN,
                format!(
                    "section {i}: offset {} + length {} overflows",
                    s.offset, s.length
                ),
            )
        })?;
        if s.offset % ALIGN != 0 {
            return Err(err(
                K::SectionBounds,
                start,
                format!(
                    "section {i}: offset {} is not a multiple of {ALIGN}",
                    s.offset
                ),
            ));
        }
        if end > len {
            return Err(err(
                K::SectionBounds,
                start,
                format!(
                    "section {i}: bytes {start}..{end} run past the end of the file ({len} bytes)"
                ),
            ));
        }
        let shape: Vec<usize> = s.shape.iter().map(|&d| d as usize).collect();
        let bytes = element_count(&shape).and_then(|n| n.checked_mul(dtype.size()));
        match bytes {
            Some(b) if b as u64 == s.length => {}
            Some(b) => {
                return Err(err(
                    K::ShapeMismatch,
                    start,
                    format!(
                        "section {i}: shape {} of {dtype} needs {b} bytes, the section has {}",
                        format_shape(&shape),
                        s.length
                    ),
                ));
            }
            None => {
                return Err(err(
                    K::ShapeMismatch,
                    start,
                    format!("section {i}: shape {} overflows", format_shape(&shape)),
                ));
            }
        }
        layout.push((i, dtype, shape, start, end, s.crc32));
    }
    let mut by_offset: Vec<usize> = (0..layout.len()).collect();
    by_offset.sort_by_key(|&i| (layout[i].3, layout[i].4));
    for pair in by_offset.windows(2) {
        let (a, b) = (&layout[pair[0]], &layout[pair[1]]);
        if b.3 < a.4 && a.3 < a.4 && b.3 < b.4 {
            return Err(err(
                K::Overlap,
                b.3,
                format!(
                    "section {} (bytes {}..{}) overlaps section {} (bytes {}..{})",
                    b.0, b.3, b.4, a.0, a.3, a.4
                ),
            ));
        }
    }

    // References: each section is used by at most one step, so the memory
    // the reader allocates never exceeds the file's size.
    let mut used_by: Vec<Option<usize>> = vec![None; layout.len()];
    let mut claim = |step: usize, index: u64| -> Result<usize, WorkloadError> {
        let i = usize::try_from(index)
            .ok()
            .filter(|&i| i < layout.len())
            .ok_or_else(|| {
                err(
                    K::BadReference,
                    PREAMBLE_LEN,
                    format!(
                        "step {step}: section {index} does not exist (the header lists {})",
                        layout.len()
                    ),
                )
            })?;
        if let Some(other) = used_by[i] {
            return Err(err(
                K::BadReference,
                PREAMBLE_LEN,
                format!("step {step}: section {i} is already used by step {other}"),
            ));
        }
        used_by[i] = Some(step);
        Ok(i)
    };
    for (step, entry) in header.steps.iter().enumerate() {
        match entry {
            StepEntry::Load { tensor, .. } => {
                claim(step, *tensor)?;
            }
            StepEntry::Call {
                args,
                expected,
                params,
                kernel,
                trials,
                ..
            } => {
                for arg in args {
                    if let ArgEntry::Tensor(t) = arg {
                        claim(step, *t)?;
                    }
                }
                for t in expected.iter().flat_map(Expected::sections) {
                    claim(step, t)?;
                }
                let tensor_args = args
                    .iter()
                    .filter(|a| matches!(a, ArgEntry::Tensor(_)))
                    .count();
                for (i, trial) in trials.iter().enumerate() {
                    if trial.inputs.len() != tensor_args {
                        return Err(err(
                            K::MalformedHeader,
                            PREAMBLE_LEN,
                            format!(
                                "step {step} ({kernel}): trial {} has {} inputs, the call has {tensor_args} tensor arguments",
                                i + 1,
                                trial.inputs.len()
                            ),
                        ));
                    }
                    for &t in trial.inputs.iter().chain(&trial.expected) {
                        claim(step, t)?;
                    }
                }
                for (name, value) in params {
                    if json_to_scalar(value).is_none() {
                        return Err(err(
                            K::MalformedHeader,
                            PREAMBLE_LEN,
                            format!(
                                "step {step} ({kernel}): parameter {name} must be an integer (i64), a number, a bool or a string, got {value}"
                            ),
                        ));
                    }
                }
            }
        }
    }

    // Data: one read_exact per section, straight into its typed Vec.
    let mut loads_of_name: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &header.steps {
        if let StepEntry::Load { name, .. } = entry {
            *loads_of_name.entry(name).or_default() += 1;
        }
    }
    let mut tensors: Vec<Option<Tensor>> = vec![None; layout.len()];
    let mut given = 0;
    let mut left = Vec::new();
    for &i in &by_offset {
        let (_, dtype, ref shape, start, end, crc) = layout[i];
        let Some(step) = used_by[i] else {
            continue;
        };
        if let StepEntry::Load { name, .. } = &header.steps[step] {
            let place = SectionPlace {
                section: i,
                start,
                length: end - start,
            };
            match answer(&LoadSection {
                name,
                dtype,
                shape,
                crc32: crc,
                place,
                loads_of_name: loads_of_name[name.as_str()],
            }) {
                LoadAnswer::Given(tensor)
                    if tensor.dtype() == dtype && tensor.shape() == shape.as_slice() =>
                {
                    tensors[i] = Some(tensor);
                    given += 1;
                    continue;
                }
                LoadAnswer::Leave => {
                    left.push(LeftLoad {
                        step,
                        name: name.clone(),
                        dtype,
                        shape: shape.clone(),
                        place,
                        crc32: crc,
                    });
                    let empty = Tensor::new(vec![0], Buffer::zeros(dtype, 0));
                    tensors[i] = Some(empty.expect("an empty tensor"));
                    continue;
                }
                LoadAnswer::Given(_) | LoadAnswer::Read => {}
            }
        }
        let count = ((end - start) as usize) / dtype.size();
        let mut buffer = Buffer::zeros(dtype, count);
        if data == Data::Skip {
            let tensor = Tensor::new(shape.clone(), buffer).expect("shape checked against length");
            tensors[i] = Some(tensor);
            continue;
        }
        input
            .seek(SeekFrom::Start(start))
            .map_err(|e| io(start, e))?;
        let cannot_read = |e: std::io::Error| {
            err(
                K::Io,
                start,
                format!("section {i}: cannot read bytes {start}..{end}: {e}"),
            )
        };
        let computed = match data {
            // No MADV_HUGEPAGE: it halved the median read of 512 MiB of
            // call arguments from the page cache here (143 vs 316 ms) but
            // made the slowest of 15 reads 1229 ms (without: 457 ms) and
            // the mean no better (366 vs 338 ms): huge pages are
            // compacted when they are faulted, and with most memory page
            // cache that stalls (a 4 GiB read took 0.9 to 9 s).
            Data::Keep => {
                input
                    .read_exact(buffer.as_bytes_mut())
                    .map_err(cannot_read)?;
                crc32fast::hash(buffer.as_bytes())
            }
            Data::Check => {
                let mut piece = vec![0u8; (end - start).min(1 << 20) as usize];
                let mut crc = crc32fast::Hasher::new();
                let mut left = end - start;
                while left > 0 {
                    let n = left.min(piece.len() as u64) as usize;
                    input.read_exact(&mut piece[..n]).map_err(cannot_read)?;
                    crc.update(&piece[..n]);
                    left -= n as u64;
                }
                crc.finalize()
            }
            Data::Skip => unreachable!("skipped above"),
        };
        if computed != crc {
            let place = SectionPlace {
                section: i,
                start,
                length: end - start,
            };
            return Err(section_checksum_error(
                path, place, dtype, shape, crc, computed,
            ));
        }
        let tensor = Tensor::new(shape.clone(), buffer).expect("shape checked against length");
        tensors[i] = Some(tensor);
    }
    let mut take = |index: u64| tensors[index as usize].take().expect("claimed once, read");

    let mut steps = Vec::with_capacity(header.steps.len());
    for entry in header.steps {
        steps.push(match entry {
            StepEntry::Load { name, tensor } => Step::Load {
                name,
                tensor: take(tensor),
            },
            StepEntry::Call {
                kernel,
                args,
                params,
                store_as,
                expected,
                trials,
                signature,
                recorded_by,
            } => Step::Call(CallStep {
                call: Call {
                    kernel,
                    args: args
                        .into_iter()
                        .map(|a| match a {
                            ArgEntry::Tensor(t) => Arg::Tensor(take(t)),
                            ArgEntry::Resident(name) => Arg::Resident(name),
                        })
                        .collect(),
                    params: params
                        .iter()
                        .map(|(k, v)| (k.clone(), json_to_scalar(v).expect("checked above")))
                        .collect(),
                    store_as,
                },
                expected: expected
                    .iter()
                    .flat_map(Expected::sections)
                    .map(&mut take)
                    .collect(),
                trials: trials
                    .iter()
                    .map(|t| Trial {
                        inputs: t.inputs.iter().map(|&i| take(i)).collect(),
                        expected: t.expected.iter().map(|&i| take(i)).collect(),
                    })
                    .collect(),
                signature,
                recorded_by,
            }),
        });
    }
    Ok(Answered {
        workload: Workload {
            name: header.name,
            steps,
        },
        given,
        left,
    })
}

/// Byte offset in `text` of serde_json's 1-based line and column.
fn json_error_offset(text: &[u8], line: usize, column: usize) -> u64 {
    let mut offset = 0usize;
    for _ in 1..line {
        match text[offset..].iter().position(|&b| b == b'\n') {
            Some(p) => offset += p + 1,
            None => break,
        }
    }
    (offset + column.saturating_sub(1)).min(text.len()) as u64
}

//! Shared by the workload tests: a small valid workload and byte surgery on
//! its file (the header is JSON, re-checksummed after an edit).
#![allow(dead_code)]

use std::path::PathBuf;

use kiln::workload::format::{ALIGN, PREAMBLE_LEN};
use kiln::workload::{Workload, format};
use shared_state::{Buffer, Call, Scalar, Tensor};

/// A fresh directory under cargo's per-target temp dir.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("workload-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A load, a call with tensor arguments, a parameter and an expected
/// output, and a call on the resident stored back over it.
pub fn small_workload() -> Workload {
    let mut w = Workload::new("small");
    w.load(
        "grid",
        Tensor::from_f32(&[2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
    );
    w.call(
        Call::new("saxpy")
            .arg(Tensor::from_f32(&[4], vec![1.0, 2.0, 3.0, 4.0]))
            .arg(Tensor::from_f32(&[4], vec![0.5; 4]))
            .param("a", Scalar::F64(2.0)),
        Some(Tensor::from_f32(&[4], vec![2.5, 4.5, 6.5, 8.5])),
    );
    w.call(
        Call::new("stencil2d")
            .resident("grid")
            .param("alpha", Scalar::F64(0.1))
            .store_as("grid"),
        None,
    );
    w.load(
        "ids",
        Tensor::new(vec![3], Buffer::I64(vec![-1, 0, i64::MAX].into())).unwrap(),
    );
    w
}

pub fn small_bytes() -> Vec<u8> {
    format::to_bytes(&small_workload()).expect("writes")
}

pub fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN as usize) * ALIGN as usize
}

/// Where the data area starts.
pub fn data_start(bytes: &[u8]) -> usize {
    align(PREAMBLE_LEN as usize + header_len(bytes))
}

/// The header as JSON.
pub fn header(bytes: &[u8]) -> serde_json::Value {
    let len = header_len(bytes);
    serde_json::from_slice(&bytes[24..24 + len]).expect("valid header")
}

/// The same file with `header_text` as its header (checksummed), the data
/// area moved to the new data start.
pub fn with_header_text(bytes: &[u8], header_text: &[u8]) -> Vec<u8> {
    let data = &bytes[data_start(bytes)..];
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(&bytes[8..12]);
    out.extend_from_slice(&crc32fast::hash(header_text).to_le_bytes());
    out.extend_from_slice(&(header_text.len() as u64).to_le_bytes());
    out.extend_from_slice(header_text);
    out.resize(align(out.len()), 0);
    out.extend_from_slice(data);
    out
}

/// The same file with its header edited by `edit`.
pub fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut h = header(bytes);
    edit(&mut h);
    with_header_text(bytes, &serde_json::to_vec(&h).unwrap())
}

/// Reads bytes as if they were the file `name`.
pub fn read_bytes(bytes: &[u8], name: &str) -> Result<Workload, format::WorkloadError> {
    format::read_from(
        std::io::Cursor::new(bytes),
        bytes.len() as u64,
        std::path::Path::new(name),
    )
}

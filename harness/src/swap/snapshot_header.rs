//! What every snapshot file format has in common: its magic, its data
//! alignment, and its header (JSON): the snapshot's module, backend and
//! format, and each section: a scalar's value, or a tensor's dtype, shape,
//! bytes and crc32 and where they are. Formats 1 and 2
//! ([`super::snapshot_file`]) put the header first; format 3
//! ([`super::snapshot_append`]) after each commit.

use serde::{Deserialize, Serialize};
use shared_state::Scalar;

pub const MAGIC: &[u8; 8] = b"KILNSNAP";
/// Where data sections start: a page, so that a mapping of the file can
/// serve them in place (formats 2 and 3).
pub const ALIGN: u64 = 4096;

#[derive(Serialize, Deserialize)]
pub struct Header {
    pub snapshot_format: u32,
    pub module: String,
    pub backend: String,
    pub sections: Vec<SectionHeader>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SectionHeader {
    Tensor {
        name: String,
        dtype: String,
        shape: Vec<usize>,
        offset: u64,
        bytes: u64,
        crc32: u32,
        /// Only in a checkpoint part (a memfd, never a file on disk): the
        /// bytes are in this earlier part, `offset` from its data start
        /// (`snapshot_file::write_part`, `snapshot_file::map_parts`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<u64>,
    },
    I64 {
        name: String,
        value: i64,
    },
    F64 {
        name: String,
        value: f64,
    },
    Bool {
        name: String,
        value: bool,
    },
    Text {
        name: String,
        value: String,
    },
}

/// The header entry of scalar section `name`.
pub fn scalar_header(name: String, value: &Scalar) -> SectionHeader {
    match value {
        Scalar::I64(v) => SectionHeader::I64 { name, value: *v },
        Scalar::F64(v) => SectionHeader::F64 { name, value: *v },
        Scalar::Bool(v) => SectionHeader::Bool { name, value: *v },
        Scalar::Text(v) => SectionHeader::Text {
            name,
            value: v.clone(),
        },
    }
}

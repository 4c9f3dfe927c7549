//! The hash of an engine's *state*: every section of a snapshot but the
//! caches an engine rebuilds ([`shared_state::CACHE_SECTION_PREFIX`]:
//! compiled pipelines, PTX), each by name, kind, dtype, shape and bytes.
//! Two engines hold the same state when these agree, whatever they have
//! compiled yet.
//!
//! [`StateHasher`] takes the sections one at a time, a tensor's bytes in
//! pieces, so a snapshot file is hashed while it is read
//! ([`super::snapshot_file::verify`]) with the same result as
//! [`state_hash`] of the snapshot in memory.

use shared_state::{Scalar, Section, Snapshot};
use xxhash_rust::xxh3::Xxh3;

/// Hashes a snapshot's state section by section, in the snapshot's order.
pub struct StateHasher(Xxh3);

impl StateHasher {
    /// A hasher for the state of `module`'s snapshot.
    pub fn new(module: &str) -> StateHasher {
        let mut hasher = Xxh3::new();
        hasher.update(module.as_bytes());
        hasher.update(&[0]);
        StateHasher(hasher)
    }

    fn name(&mut self, name: &str) {
        self.0.update(name.as_bytes());
        self.0.update(&[0]);
    }

    /// A tensor section: its bytes follow through [`StateHasher::bytes`].
    pub fn tensor(&mut self, name: &str, dtype: &str, shape: &[usize], bytes: u64) {
        self.name(name);
        self.0.update(b"tensor");
        self.0.update(dtype.as_bytes());
        for d in shape {
            self.0.update(&(*d as u64).to_le_bytes());
        }
        self.0.update(&bytes.to_le_bytes());
    }

    /// The next piece of the current tensor's bytes.
    pub fn bytes(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    /// A scalar section.
    pub fn scalar(&mut self, name: &str, value: &Scalar) {
        self.name(name);
        match value {
            Scalar::I64(v) => {
                self.0.update(b"i64");
                self.0.update(&v.to_le_bytes());
            }
            Scalar::F64(v) => {
                self.0.update(b"f64");
                self.0.update(&v.to_bits().to_le_bytes());
            }
            Scalar::Bool(v) => {
                self.0.update(b"bool");
                self.0.update(&[*v as u8]);
            }
            Scalar::Text(v) => {
                self.0.update(b"text");
                self.0.update(&(v.len() as u64).to_le_bytes());
                self.0.update(v.as_bytes());
            }
        }
    }

    pub fn finish(self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

/// The hash of the state in `snapshot` (see the module's description).
pub fn state_hash(snapshot: &Snapshot) -> String {
    let mut hasher = StateHasher::new(&snapshot.module);
    for (name, section) in snapshot.sections() {
        if Snapshot::is_cache_section(name) {
            continue;
        }
        match section {
            Section::Tensor(t) => {
                let bytes = t.data().as_bytes();
                hasher.tensor(name, t.dtype().name(), t.shape(), bytes.len() as u64);
                hasher.bytes(bytes);
            }
            Section::Scalar(s) => hasher.scalar(name, s),
        }
    }
    hasher.finish()
}

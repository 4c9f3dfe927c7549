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
///
/// A tensor section is hashed on its own (name, dtype, shape, length and
/// bytes: its *digest*, [`StateHasher::end_tensor`]) and only its digest
/// goes into the state's hash, so a checkpoint that copies only what
/// changed folds in an unchanged section's digest recorded earlier
/// ([`StateHasher::tensor_digest`]) instead of reading its bytes again: the
/// same hash as a pass over every byte.
pub struct StateHasher {
    state: Xxh3,
    /// The tensor section under way.
    tensor: Option<Xxh3>,
}

impl StateHasher {
    /// A hasher for the state of `module`'s snapshot.
    pub fn new(module: &str) -> StateHasher {
        let mut state = Xxh3::new();
        state.update(module.as_bytes());
        state.update(&[0]);
        StateHasher {
            state,
            tensor: None,
        }
    }

    /// Ends the tensor section under way, if any: its digest, folded into
    /// the state's hash.
    pub fn end_tensor(&mut self) -> Option<u128> {
        let digest = self.tensor.take()?.digest128();
        self.tensor_digest(digest);
        Some(digest)
    }

    /// A tensor section whose digest ([`StateHasher::end_tensor`]) is
    /// known: its bytes are not read.
    pub fn tensor_digest(&mut self, digest: u128) {
        self.end_tensor();
        self.state.update(b"tensor");
        self.state.update(&digest.to_le_bytes());
    }

    /// A tensor section: its bytes follow through [`StateHasher::bytes`].
    pub fn tensor(&mut self, name: &str, dtype: &str, shape: &[usize], bytes: u64) {
        self.end_tensor();
        let mut tensor = Xxh3::new();
        tensor.update(name.as_bytes());
        tensor.update(&[0]);
        tensor.update(dtype.as_bytes());
        for d in shape {
            tensor.update(&(*d as u64).to_le_bytes());
        }
        tensor.update(&bytes.to_le_bytes());
        self.tensor = Some(tensor);
    }

    /// The next piece of the current tensor's bytes.
    pub fn bytes(&mut self, piece: &[u8]) {
        if let Some(tensor) = &mut self.tensor {
            tensor.update(piece);
        }
    }

    /// A scalar section.
    pub fn scalar(&mut self, name: &str, value: &Scalar) {
        self.end_tensor();
        let state = &mut self.state;
        state.update(name.as_bytes());
        state.update(&[0]);
        match value {
            Scalar::I64(v) => {
                state.update(b"i64");
                state.update(&v.to_le_bytes());
            }
            Scalar::F64(v) => {
                state.update(b"f64");
                state.update(&v.to_bits().to_le_bytes());
            }
            Scalar::Bool(v) => {
                state.update(b"bool");
                state.update(&[*v as u8]);
            }
            Scalar::Text(v) => {
                state.update(b"text");
                state.update(&(v.len() as u64).to_le_bytes());
                state.update(v.as_bytes());
            }
        }
    }

    pub fn finish(mut self) -> String {
        self.end_tensor();
        format!("{:032x}", self.state.digest128())
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

//! The hash of an engine's *state*: every section of a snapshot but the
//! caches an engine rebuilds ([`shared_state::CACHE_SECTION_PREFIX`]:
//! compiled pipelines, PTX) and the replay's scratch residents
//! ([`is_scratch_section`]), each by name, kind, dtype, shape and bytes.
//! Two engines hold the same state when these agree, whatever they have
//! compiled or replayed yet.
//!
//! **Replay scratch is not state.** A replay stores a call's `store_as`
//! output as `replay/NAME` and its timing runs' arguments and outputs
//! under `replay-timing/` ([`SCRATCH_PREFIX`], [`TIMING_PREFIX`]): every
//! replay makes them again from the loaded residents, and nothing reads
//! one made by an earlier replay (a replay's calls read the workload's
//! resident until a call of *that* replay stores over it; the tuner reads
//! them in the same worker after the replay that made them). So they are
//! left out of everything that carries state: the state hash (here, and
//! in every [`StateHasher`] pass: a checkpoint's, a file's `verify`), the
//! exports a checkpoint, a `--state` file or a swap takes and the state an
//! engine starts from ([`without_scratch`], applied by
//! `swap/engine_handle.rs`). A user whose replay stores a
//! 1 GiB output next to 10 GB of weights pays for it in none of them; the
//! engine keeps it until the next replay stores over it. A file written
//! before this rule still restores: its scratch is dropped at the start.
//!
//! [`StateHasher`] takes the sections one at a time, a tensor's bytes in
//! pieces, so a snapshot file is hashed while it is read
//! ([`super::snapshot_file::verify`]) with the same result as
//! [`state_hash`] of the snapshot in memory.

use shared_state::{Scalar, Section, Snapshot};
use xxhash_rust::xxh3::Xxh3;

/// Prefix of the residents a replay stores its calls' `store_as` outputs
/// in (`replay/NAME`): scratch, not state (see the module's description).
pub const SCRATCH_PREFIX: &str = "replay/";
/// Prefix of the residents a replay's timing runs put their arguments and
/// outputs in: scratch, not state.
pub const TIMING_PREFIX: &str = "replay-timing/";

/// Whether snapshot section `name` is a replay scratch resident
/// (`resident/replay/...`, `resident/replay-timing/...`).
pub fn is_scratch_section(name: &str) -> bool {
    name.strip_prefix("resident/")
        .is_some_and(|r| r.starts_with(SCRATCH_PREFIX) || r.starts_with(TIMING_PREFIX))
}

/// Whether snapshot section `name` counts in the state's hash: neither a
/// cache nor replay scratch.
pub fn is_state_section(name: &str) -> bool {
    !Snapshot::is_cache_section(name) && !is_scratch_section(name)
}

/// `snapshot` without its replay scratch sections (host memory or left on
/// the device), each other section moved as it is (nothing copied).
pub fn without_scratch(mut snapshot: Snapshot) -> Snapshot {
    if !snapshot
        .section_names()
        .iter()
        .any(|n| is_scratch_section(n))
    {
        return snapshot;
    }
    let mut kept = Snapshot::new(&snapshot.module, &snapshot.backend);
    kept.format = snapshot.format;
    for name in snapshot.section_names() {
        if is_scratch_section(&name) {
            continue;
        }
        if let Some(section) = snapshot.take(&name) {
            kept.insert(name, section);
        }
    }
    // Left on the device: moved the same way (their own map).
    for (name, section) in snapshot.take_device_with_prefix("") {
        if !is_scratch_section(&name) {
            kept.insert_device(name, section);
        }
    }
    kept
}

/// Hashes a snapshot's state section by section, in the snapshot's order.
/// A replay scratch section it is given is skipped ([`is_scratch_section`]:
/// not state), so every pass agrees with [`state_hash`] whatever it reads,
/// a snapshot file written before scratch was left out too.
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

    /// A tensor section: its bytes follow through [`StateHasher::bytes`]
    /// (ignored, and no digest, for a scratch section).
    pub fn tensor(&mut self, name: &str, dtype: &str, shape: &[usize], bytes: u64) {
        self.end_tensor();
        if is_scratch_section(name) {
            return;
        }
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

    /// A scalar section (skipped when scratch).
    pub fn scalar(&mut self, name: &str, value: &Scalar) {
        self.end_tensor();
        if is_scratch_section(name) {
            return;
        }
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
    state_hash_and_digests(snapshot).0
}

/// [`state_hash`], and the digest of each tensor section of the state
/// ([`StateHasher::end_tensor`]), by name, from the same pass.
pub fn state_hash_and_digests(
    snapshot: &Snapshot,
) -> (String, std::collections::BTreeMap<String, u128>) {
    let mut hasher = StateHasher::new(&snapshot.module);
    let mut digests = std::collections::BTreeMap::new();
    for (name, section) in snapshot.sections() {
        if !is_state_section(name) {
            continue;
        }
        match section {
            Section::Tensor(t) => {
                let bytes = t.data().as_bytes();
                hasher.tensor(name, t.dtype().name(), t.shape(), bytes.len() as u64);
                hasher.bytes(bytes);
                if let Some(digest) = hasher.end_tensor() {
                    digests.insert(name.to_string(), digest);
                }
            }
            Section::Scalar(s) => hasher.scalar(name, s),
        }
    }
    (hasher.finish(), digests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::snapshot_file;
    use shared_state::{DType, DeviceHandle, DeviceSection, Tensor};

    fn state(scratch: f32) -> Snapshot {
        let mut s = Snapshot::new("kernel-cpu", "cpu");
        s.insert_tensor("resident/weights", Tensor::from_f32(&[4], vec![1.0; 4]));
        s.insert_scalar("counters/calls/saxpy", Scalar::I64(3));
        s.insert_tensor(
            "resident/replay/out",
            Tensor::from_f32(&[3], vec![scratch; 3]),
        );
        s.insert_tensor(
            "resident/replay-timing/0/arg0",
            Tensor::from_f32(&[2], vec![scratch; 2]),
        );
        s
    }

    #[test]
    fn scratch_is_not_in_the_state_hash_of_any_pass() {
        // A resident merely named like scratch is state.
        assert!(is_scratch_section("resident/replay/out"));
        assert!(is_scratch_section("resident/replay-timing/3/out"));
        assert!(!is_scratch_section("resident/replayed"));
        assert!(!is_scratch_section("replay/out"));
        let (a, b) = (state(1.0), state(2.0));
        assert_eq!(state_hash(&a), state_hash(&b), "scratch only differs");
        let bare = without_scratch(state(1.0));
        assert_eq!(state_hash(&bare), state_hash(&a));
        // A checkpoint's one pass, and a file's verify, agree with it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snapshot");
        let mut file = std::fs::File::create(&path).unwrap();
        let (_, hash) = snapshot_file::write_hashed(&a, &mut file).unwrap();
        assert_eq!(hash, state_hash(&a));
        let verified = snapshot_file::verify(&path).unwrap();
        assert_eq!(verified.state_hash, state_hash(&b));
        // A state change is seen.
        let mut other = state(1.0);
        other.insert_scalar("counters/calls/saxpy", Scalar::I64(4));
        assert_ne!(state_hash(&other), state_hash(&a));
    }

    #[test]
    fn without_scratch_keeps_every_other_section_as_it_is() {
        let mut s = state(1.0);
        let weights = match s.get("resident/weights") {
            Some(Section::Tensor(t)) => t.clone(),
            _ => unreachable!(),
        };
        let device = |name: &str| DeviceSection {
            handle: DeviceHandle::OpaqueFd(std::sync::Arc::new(
                std::fs::File::open("/dev/null").unwrap().into(),
            )),
            bytes: 0,
            allocation: 0,
            memory_kind: 0,
            dtype: DType::F32,
            shape: vec![0],
            device: name.to_string(),
        };
        s.insert_device("resident/grid", device("a"));
        s.insert_device("resident/replay/grid", device("b"));
        s.format = 7;
        let kept = without_scratch(s);
        assert_eq!(
            kept.section_names(),
            ["counters/calls/saxpy", "resident/grid", "resident/weights"]
        );
        assert_eq!(kept.format, 7);
        assert!(kept.taken_names().is_empty(), "nothing reads as restored");
        match kept.get("resident/weights") {
            Some(Section::Tensor(t)) => assert!(t.data().same_as(weights.data()), "moved"),
            _ => panic!("weights"),
        }
    }
}

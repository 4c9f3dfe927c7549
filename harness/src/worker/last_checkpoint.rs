//! What the last checkpoint this worker wrote holds and where: the next
//! checkpoint copies only the sections that changed since and points to
//! the others in the parts that already hold them.
//!
//! A large tensor is unchanged when it is the very buffer marked then
//! ([`StateMarks::same_buffer`]); everything else (scalars, small
//! tensors, a resident a workload reload added or replaced) is copied. A
//! part is pointed into only while at least half its bytes are still
//! live: else what is left of it is copied again, so that a superseded
//! part's memory goes instead of being kept alive by a few sections.

use std::collections::BTreeMap;

use shared_state::{Section, Snapshot};

use super::protocol::Checkpointed;
use super::state_marks::StateMarks;
use crate::swap::snapshot_file::Placed;

pub struct LastCheckpoint {
    pub written: Checkpointed,
    marks: StateMarks,
    /// Where every tensor section is.
    placed: BTreeMap<String, Placed>,
    /// The tensor bytes each part in use holds, live or not.
    part_bytes: BTreeMap<u64, u64>,
}

impl LastCheckpoint {
    /// After `written` (whose sections are `placed`) was written from a
    /// snapshot the engine now holds as `held`; `before` is the previous
    /// one, for the sizes of the parts still in use.
    pub fn new(
        written: Checkpointed,
        held: &Snapshot,
        placed: BTreeMap<String, Placed>,
        before: Option<&LastCheckpoint>,
    ) -> LastCheckpoint {
        let mut part_bytes = BTreeMap::new();
        for p in placed.values() {
            let size = before.and_then(|b| b.part_bytes.get(&p.part).copied());
            *part_bytes.entry(p.part).or_insert(0) = size.unwrap_or(0);
        }
        let new_part = written.parts.iter().copied().max();
        for p in placed.values() {
            if Some(p.part) == new_part {
                *part_bytes.entry(p.part).or_insert(0) += p.bytes;
            }
        }
        LastCheckpoint {
            written,
            marks: StateMarks::of(held),
            placed,
            part_bytes,
        }
    }

    /// What a part of loads this worker just `written` (a start's loads
    /// part: the workload's large loads, or a state file's large tensors)
    /// and `mapped` holds, as its last checkpoint: not a checkpoint of the
    /// state (no hash: never the supervisor's current one, so never taken
    /// for an unchanged state), but the next checkpoint points into it.
    pub fn of_part(
        written: crate::swap::snapshot_file::PartWritten,
        mapped: &Snapshot,
        part: u64,
    ) -> LastCheckpoint {
        let held = Checkpointed {
            bytes: written.bytes,
            state_bytes: written.copied,
            hash: String::new(),
            ms: 0.0,
            unchanged: false,
            copied_bytes: written.copied,
            parts: vec![part],
        };
        LastCheckpoint::served(
            held,
            mapped,
            written.placed,
            BTreeMap::from([(part, written.bytes)]),
        )
    }

    /// The checkpoint a worker started (or rolled back) from, whose parts
    /// it serves mapped: `held` is what its engine holds now, `placed`
    /// where each tensor section it serves as the very mapped bytes is
    /// (the others are copied by the next checkpoint), `part_bytes` the
    /// size of each part. Its hash and the sections' digests are not known
    /// until the worker hashes what it serves
    /// ([`LastCheckpoint::learn_digests`]).
    pub fn served(
        written: Checkpointed,
        held: &Snapshot,
        placed: BTreeMap<String, Placed>,
        part_bytes: BTreeMap<u64, u64>,
    ) -> LastCheckpoint {
        LastCheckpoint {
            written,
            marks: StateMarks::of(held),
            placed,
            part_bytes,
        }
    }

    /// Whether a section's digest is still to learn: until then the next
    /// checkpoint cannot fold it into the state's hash without reading it.
    pub fn lacks_digests(&self) -> bool {
        self.placed
            .iter()
            .any(|(name, p)| p.digest.is_none() && !Snapshot::is_cache_section(name))
    }

    /// Learns the digests of the sections still served as placed from a
    /// pass over `snapshot` (the engine's state now) that found `digests`
    /// and the state's `hash`; a section written since is no longer
    /// placed. When `snapshot` is exactly what was marked, `hash` is the
    /// state's as the checkpoint holds it.
    pub fn learn_digests(
        &mut self,
        snapshot: &Snapshot,
        digests: &BTreeMap<String, u128>,
        hash: &str,
    ) {
        let marks = &self.marks;
        self.placed.retain(|name, placed| {
            if placed.digest.is_some() || Snapshot::is_cache_section(name) {
                return true;
            }
            let same = snapshot
                .get(name)
                .is_some_and(|section| marks.same_buffer(name, section));
            placed.digest = digests.get(name).copied().filter(|_| same);
            placed.digest.is_some()
        });
        if self.written.hash.is_empty() && self.marks.unchanged(snapshot) {
            self.written.hash = hash.to_string();
        }
    }

    /// Whether `snapshot` is exactly what was marked.
    pub fn unchanged(&self, snapshot: &Snapshot) -> bool {
        self.marks.unchanged(snapshot)
    }

    /// Where the next checkpoint of `snapshot` finds each unchanged large
    /// tensor, in the parts the supervisor still `held`.
    pub fn reusable(&self, snapshot: &Snapshot, held: &[u64]) -> BTreeMap<String, Placed> {
        let candidates: BTreeMap<String, Placed> = snapshot
            .sections()
            .filter(|(name, section)| {
                matches!(section, Section::Tensor(_)) && self.marks.same_buffer(name, section)
            })
            .filter_map(|(name, _)| {
                let placed = self.placed.get(name)?;
                held.contains(&placed.part)
                    .then(|| (name.to_string(), placed.clone()))
            })
            .collect();
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        for p in candidates.values() {
            *live.entry(p.part).or_insert(0) += p.bytes;
        }
        candidates
            .into_iter()
            .filter(|(_, p)| {
                let size = self.part_bytes.get(&p.part).copied().unwrap_or(0);
                live[&p.part] * 2 >= size
            })
            .collect()
    }
}

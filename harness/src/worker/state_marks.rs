//! What the last checkpoint held, by identity, so that a checkpoint of
//! state that has not changed since is not written again (a replay that
//! wrote no resident, a swap whose handoff shared every buffer: the same
//! bytes, 1 GiB of them cost 0.6 s to copy and hash again).
//!
//! A large tensor is the same when its buffer still holds the very elements
//! it held ([`shared_state::Mark`]: a weak reference, so a mark neither
//! keeps memory alive nor makes the engine's next write copy); a small one
//! (up to [`SMALL`] bytes: the replay's emptied scratch residents, tuning
//! values) and a scalar are compared by value, since an engine may rebuild
//! them on every call.

use std::collections::BTreeMap;

use shared_state::{DType, Mark, Scalar, Section, Snapshot};
use xxhash_rust::xxh3::xxh3_128;

/// Tensors up to this many bytes are compared by value.
pub const SMALL: usize = 64 << 10;

enum SectionMark {
    Held {
        dtype: DType,
        shape: Vec<usize>,
        mark: Mark,
    },
    Value {
        dtype: DType,
        shape: Vec<usize>,
        hash: u128,
    },
    Scalar(Scalar),
}

impl SectionMark {
    fn of(section: &Section) -> SectionMark {
        match section {
            Section::Scalar(s) => SectionMark::Scalar(s.clone()),
            Section::Tensor(t) if t.byte_len() <= SMALL => SectionMark::Value {
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                hash: xxh3_128(t.data().as_bytes()),
            },
            Section::Tensor(t) => SectionMark::Held {
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                mark: t.data().mark(),
            },
        }
    }

    fn matches(&self, section: &Section) -> bool {
        match (self, section) {
            (SectionMark::Scalar(a), Section::Scalar(b)) => a == b,
            (SectionMark::Value { dtype, shape, hash }, Section::Tensor(t)) => {
                t.byte_len() <= SMALL
                    && *dtype == t.dtype()
                    && shape == t.shape()
                    && *hash == xxh3_128(t.data().as_bytes())
            }
            (SectionMark::Held { dtype, shape, mark }, Section::Tensor(t)) => {
                *dtype == t.dtype() && shape == t.shape() && mark.is(t.data())
            }
            _ => false,
        }
    }
}

/// Every section of a snapshot, marked.
pub struct StateMarks {
    format: u32,
    module: String,
    backend: String,
    sections: BTreeMap<String, SectionMark>,
}

impl StateMarks {
    pub fn of(snapshot: &Snapshot) -> StateMarks {
        StateMarks {
            format: snapshot.format,
            module: snapshot.module.clone(),
            backend: snapshot.backend.clone(),
            sections: snapshot
                .sections()
                .map(|(name, s)| (name.to_string(), SectionMark::of(s)))
                .collect(),
        }
    }

    /// Whether section `name` of a snapshot is `section`'s very buffer as
    /// marked (a large tensor whose elements were not written since): its
    /// bytes are those a checkpoint already holds.
    pub fn same_buffer(&self, name: &str, section: &Section) -> bool {
        matches!(
            (self.sections.get(name), section),
            (Some(mark @ SectionMark::Held { .. }), Section::Tensor(_)) if mark.matches(section)
        )
    }

    /// Whether `snapshot` holds exactly what was marked: the same section
    /// names, each the same elements (large tensors) or the same value.
    pub fn unchanged(&self, snapshot: &Snapshot) -> bool {
        snapshot.format == self.format
            && snapshot.module == self.module
            && snapshot.backend == self.backend
            && snapshot.sections().count() == self.sections.len()
            && snapshot.sections().all(|(name, section)| {
                self.sections
                    .get(name)
                    .is_some_and(|mark| mark.matches(section))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_state::Tensor;

    fn snapshot(big: Tensor, small: Tensor, n: i64) -> Snapshot {
        let mut s = Snapshot::new("kernel-cpu", "cpu");
        s.insert_tensor("weights", big);
        s.insert_tensor("replay/out", small);
        s.insert_scalar("step", Scalar::I64(n));
        s
    }

    #[test]
    fn the_same_buffers_and_values_are_unchanged_and_any_write_is_seen() {
        let big = Tensor::from_f32(&[SMALL], vec![1.0; SMALL]);
        let small = Tensor::from_f32(&[4], vec![0.0; 4]);
        let marks = StateMarks::of(&snapshot(big.clone(), small.clone(), 1));
        // The same buffers, a small tensor rebuilt with equal values.
        let rebuilt = Tensor::from_f32(&[4], vec![0.0; 4]);
        assert!(marks.unchanged(&snapshot(big.clone(), rebuilt, 1)));
        // Equal values in another buffer: not the marked elements.
        let copy = Tensor::from_f32(&[SMALL], vec![1.0; SMALL]);
        assert!(!marks.unchanged(&snapshot(copy, small.clone(), 1)));
        // A scalar, a small tensor's value, a section more: changed.
        assert!(!marks.unchanged(&snapshot(big.clone(), small.clone(), 2)));
        let other = Tensor::from_f32(&[4], vec![0.0, 1.0, 0.0, 0.0]);
        assert!(!marks.unchanged(&snapshot(big.clone(), other, 1)));
        let mut more = snapshot(big.clone(), small.clone(), 1);
        more.insert_scalar("extra", Scalar::I64(0));
        assert!(!marks.unchanged(&more));
        // A write into the big buffer, in place (no one else holds it).
        let mut written = big;
        written.data_mut().as_f32_mut().unwrap()[7] = 2.0;
        assert!(!marks.unchanged(&snapshot(written, small, 1)));
    }
}

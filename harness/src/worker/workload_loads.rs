//! The workload's large resident loads, put in memory once: moved into a
//! checkpoint part of their own (a memfd the supervisor made for it,
//! `Request::Start::loads`), each let go as soon as its bytes are written
//! there, then served from the sealed part's mapping by the workload's
//! `Load` steps, so by the engine and the reference engines they are
//! loaded into. The part is this worker's first "last checkpoint": the
//! first real one points into it instead of copying the residents again.
//!
//! Without it a start held the residents read from the workload file and
//! the first checkpoint's copy of them at once (2 x the state), then
//! dropped the first. Now the peak is the state and its largest resident.
//! The file's checksums were verified while reading it (`workload::read`),
//! before any byte goes into the part; nothing is served from a mapping of
//! the workload file itself (it may be rewritten in place).

use std::collections::BTreeMap;
use std::path::Path;

use shared_state::{Snapshot, Tensor};

use super::checkpoint_writer::write_taking;
use super::last_checkpoint::LastCheckpoint;
use super::protocol::Checkpointed;
use super::state_marks::SMALL;
use crate::swap::snapshot_file;
use crate::workload::{Step, Workload};

/// Moves the large resident loads of `workload` (over [`SMALL`] bytes,
/// each name loaded once, not `given` from the state the worker starts
/// from) into the part `part` at `path` and serves them from its mapping.
/// Returns the part's length and what it holds as this worker's last
/// checkpoint; `None` when there is no such load (nothing written). On an
/// error the moved loads are gone from `workload`: read it again.
pub fn into_part(
    workload: &mut Workload,
    given: &dyn Fn(&str, &Tensor) -> bool,
    part: u64,
    path: &Path,
) -> Result<Option<(u64, LastCheckpoint)>, String> {
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for step in &workload.steps {
        if let Step::Load { name, .. } = step {
            *times.entry(name).or_default() += 1;
        }
    }
    let moved: Vec<String> = workload
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Load { name, tensor }
                if times[name.as_str()] == 1
                    && tensor.byte_len() > SMALL
                    && !given(name, tensor) =>
            {
                Some(name.clone())
            }
            _ => None,
        })
        .collect();
    if moved.is_empty() {
        return Ok(None);
    }
    let mut loads = Snapshot::new("kiln-workload-loads", "host");
    for step in &mut workload.steps {
        if let Step::Load { name, tensor } = step
            && moved.contains(name)
        {
            let taken = std::mem::replace(tensor, Tensor::from_f32(&[0], Vec::new()));
            loads.insert_tensor(format!("resident/{name}"), taken);
        }
    }
    let (written, sealed) = write_taking(loads, path, part)?;
    let mapped =
        snapshot_file::map_parts(&sealed, path, &|_| None, true).map_err(|e| e.to_string())?;
    for step in &mut workload.steps {
        if let Step::Load { name, tensor } = step
            && let Some(shared_state::Section::Tensor(t)) = mapped.get(&format!("resident/{name}"))
        {
            *tensor = t.clone();
        }
    }
    let held = Checkpointed {
        bytes: written.bytes,
        // Not a checkpoint of the state: never the supervisor's current
        // one, so never taken for an unchanged state.
        hash: String::new(),
        ms: 0.0,
        unchanged: false,
        copied_bytes: written.copied,
        parts: vec![part],
    };
    let last = LastCheckpoint::served(
        held,
        &mapped,
        written.placed,
        BTreeMap::from([(part, written.bytes)]),
    );
    Ok(Some((written.bytes, last)))
}

//! `--state FILE` (and the state saved for a restart) put in place from
//! the current checkpoint, at the cost of a link where it can be.
//!
//! The kept file (`target/kiln/state/<module>.last-good.snapshot`, written
//! by the disk copy) usually holds the current checkpoint already, whole
//! and checked by its own checksums: FILE is then made a hard link to it
//! (through `FILE.partial` and a rename, so FILE is always whole), and no
//! byte is written, whatever the size. How, by what the copy holds
//! ([`choose`]):
//!
//! - the kept file holds the current checkpoint: linked;
//! - the copy under way writes it: its bytes are waited for, then its file
//!   is linked (as soon as they are all written, during its sync if any).
//!   That is always sooner than writing them again from memory: the copy
//!   started earlier and writes at the same rate, to the same filesystem;
//! - otherwise (an older checkpoint kept, or being copied): the copy under
//!   way is abandoned (the kept file stays the older one, whole), FILE is
//!   written from the checkpoint's memory, and the kept file becomes a link
//!   to FILE;
//! - no disk copy, or FILE on another filesystem (no hard link there):
//!   written from memory, and the copy goes on as it was.
//!
//! One file for two names is safe because nothing of kiln ever writes into
//! either in place: the copy writes a temporary file and renames it over
//! the kept file (FILE keeps its own bytes), FILE is replaced the same way,
//! and the next start renames the kept file aside (`supervisor/kept_state.rs`).
//! The copy of the checkpoint FILE holds is not synced: FILE is not
//! either, and they are one file.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use std::collections::HashSet;

use super::{DiskCopy, Job, Kept, UnderWay, kept_event, temporary_path};
use crate::isolation::checkpoint_parts::Parts;
use crate::swap::snapshot_append::Source;
use crate::swap::snapshot_file;
use crate::worker::protocol::Checkpointed;

/// What the disk copy holds when a state file is wanted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Seen {
    /// The checkpoint the kept file holds (the last copy completed).
    pub(super) kept: Option<u64>,
    /// The copy under way.
    pub(super) under_way: Option<UnderWay>,
}

/// How the state file is put in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Way {
    /// The kept file holds the checkpoint: linked, no byte written.
    LinkKept,
    /// The copy under way writes the checkpoint: its bytes are waited for,
    /// then its file is linked.
    AwaitCopy,
    /// The copy under way (or the kept file) holds an older checkpoint
    /// that differs from this one by little: that copy is let finish, this
    /// one appended to it, then its file is linked.
    AwaitThenAppend,
    /// Written from memory, then the kept file is made a link to it (the
    /// copy under way, of an older checkpoint, abandoned).
    MemoryThenKeep,
    /// Written from memory; the copy goes on as it was.
    Memory,
}

impl Way {
    fn describe(self) -> &'static str {
        match self {
            Way::LinkKept => "linked to the kept copy (no byte written)",
            Way::AwaitCopy => "linked to the copy that was under way, once written",
            Way::AwaitThenAppend => {
                "linked to the kept copy once the copy under way was done and this checkpoint appended to it"
            }
            Way::MemoryThenKeep => "written from memory; the kept copy is a link to it",
            Way::Memory => "written from memory",
        }
    }
}

/// How to put the state file of checkpoint `current` (its newest part) in
/// place, given what the copy holds; `linkable`: there is a disk copy, on
/// the state file's filesystem; `small_append`: what `current` holds that
/// the kept file will not once the copy under way is done is at most half
/// the state (appending it after that copy writes less than the whole
/// state from memory).
pub(super) fn choose(current: u64, seen: Seen, linkable: bool, small_append: bool) -> Way {
    if !linkable {
        return Way::Memory;
    }
    match seen.under_way {
        Some(copy) if copy.part == current => Way::AwaitCopy,
        None if seen.kept == Some(current) => Way::LinkKept,
        _ if small_append => Way::AwaitThenAppend,
        _ => Way::MemoryThenKeep,
    }
}

/// Whether the checkpoint in `parts` holds at most half its state in
/// tensor sections the kept file will not hold (`will_hold`) once the copy
/// under way is done: then appending it is cheaper than writing it whole.
fn small_append(parts: &Parts, will_hold: Option<&HashSet<Source>>) -> bool {
    let Some(will_hold) = will_hold else {
        return false;
    };
    let newest = super::path_of(&parts.files[&parts.newest]);
    let Ok(placed) = snapshot_file::placements(&newest, parts.newest) else {
        return false;
    };
    let (mut new, mut all) = (0u64, 0u64);
    for p in placed.values() {
        all += p.bytes;
        if !will_hold.contains(&super::source_of(p)) {
            new += p.bytes;
        }
    }
    new <= all / 2
}

/// Puts the state file of the checkpoint in `parts` at `path` (whole,
/// under its name only once complete; not synced), from what `disk` holds
/// where it can ([`choose`]); returns the file's length.
pub(crate) fn put_in_place(
    parts: &Arc<Parts>,
    written: &Checkpointed,
    disk: Option<&DiskCopy>,
    path: &Path,
) -> Result<u64, String> {
    let start = Instant::now();
    let current = parts.newest;
    let linkable = disk.is_some_and(|d| same_filesystem(&d.path, path));
    let mut way = match disk {
        Some(d) => {
            let state = d.shared.lock();
            let seen = Seen {
                kept: state
                    .last
                    .as_ref()
                    .and_then(|l| l.as_ref().ok())
                    .map(|k| k.part),
                under_way: state.under_way,
            };
            let will_hold = state.will_hold.clone();
            drop(state);
            let small = linkable && small_append(parts, will_hold.as_deref());
            choose(current, seen, linkable, small)
        }
        None => Way::Memory,
    };
    // A wait for a copy under way can be long (a first copy of GiBs runs
    // at the disk's pace): say so, or the end looks hung.
    let waits = matches!(way, Way::AwaitCopy | Way::AwaitThenAppend)
        && disk.is_some_and(|d| d.shared.lock().under_way.is_some_and(|u| !u.written));
    if waits {
        tracing::info!(
            "state file {}: waiting for the copy to disk under way to be written (the whole \
             state the first time: at the disk's pace once the page cache holds all the \
             unwritten data Linux allows)",
            path.display()
        );
    }
    let placed = match (disk, way) {
        (Some(d), Way::AwaitThenAppend) => match await_then_link(d, parts, written, path) {
            Some(placed) => placed,
            None => {
                way = Way::MemoryThenKeep;
                from_memory_then_keep(d, parts, written, path)
            }
        },
        (Some(d), Way::LinkKept | Way::AwaitCopy) => match link_from_copy(d, current, path) {
            Some(placed) => placed,
            None => {
                way = Way::MemoryThenKeep;
                from_memory_then_keep(d, parts, written, path)
            }
        },
        (Some(d), Way::MemoryThenKeep) => from_memory_then_keep(d, parts, written, path),
        (Some(d), Way::Memory) => {
            d.shared.lock().unsynced = Some((current, current));
            from_memory(parts, path)
        }
        (None, _) => from_memory(parts, path),
    };
    let bytes = placed?;
    let line = format!(
        "state file {} ({}): {} in {:.1} ms",
        path.display(),
        kiln_stats::bytes::human(bytes),
        way.describe(),
        start.elapsed().as_secs_f64() * 1e3
    );
    match waits {
        true => tracing::info!("{line}"),
        false => tracing::debug!("{line}"),
    }
    Ok(bytes)
}

/// [`Way::LinkKept`] and [`Way::AwaitCopy`]: waits until the copy of
/// checkpoint `current` has written all its bytes (not for its sync, which
/// it skips if it has not begun), then links its file to `path`. `None`:
/// the copy failed, or the link did (it is written from memory instead).
fn link_from_copy(disk: &DiskCopy, current: u64, path: &Path) -> Option<Result<u64, String>> {
    let shared = &disk.shared;
    let mut state = shared.lock();
    state.unsynced = Some((current, current));
    while state.under_way
        == Some(UnderWay {
            part: current,
            written: false,
        })
    {
        state = shared.wait(state);
    }
    let from = match (state.under_way, &state.last) {
        // Written: renamed over the kept file any moment now (a link to
        // either name is the same file).
        (Some(copy), _) if copy.part == current => temporary_path(&disk.path),
        (None, Some(Ok(kept))) if kept.part == current => {
            // Kept already: nothing more to copy.
            if state
                .pending
                .as_ref()
                .is_some_and(|job| job.parts.newest == current)
            {
                state.pending = None;
            }
            disk.path.clone()
        }
        _ => return None,
    };
    let partial = partial_path(path);
    let linked = match link_into_place(&from, path, &partial) {
        // Renamed meanwhile: after `written`, only that removes it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && from != disk.path => {
            link_into_place(&disk.path, path, &partial)
        }
        other => other,
    };
    drop(state);
    linked_length(linked, &from, path)
}

/// The state file's length once `from` was `linked` to `path`; `None`
/// when the link failed (it is written from memory instead).
fn linked_length(
    linked: std::io::Result<()>,
    from: &Path,
    path: &Path,
) -> Option<Result<u64, String>> {
    match linked {
        Ok(()) => Some(
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| e.to_string()),
        ),
        Err(e) => {
            tracing::debug!(
                "cannot link {} to {}: {e}; writing it from memory",
                from.display(),
                path.display()
            );
            None
        }
    }
}

/// [`Way::AwaitThenAppend`]: the copy thread finishes the copy under way,
/// then copies checkpoint `parts` (appended to that file: little of it is
/// new, [`small_append`]); neither is synced (the state file is not
/// either). Then the kept file is linked to `path`. `None`: a copy failed
/// or was abandoned (it is written from memory instead).
fn await_then_link(
    disk: &DiskCopy,
    parts: &Arc<Parts>,
    written: &Checkpointed,
    path: &Path,
) -> Option<Result<u64, String>> {
    let shared = &disk.shared;
    let current = parts.newest;
    let mut state = shared.lock();
    let from = state.under_way.map_or(current, |u| u.part.min(current));
    state.unsynced = Some((from, current));
    let kept_now = |state: &super::State| {
        state
            .last
            .as_ref()
            .is_some_and(|l| l.as_ref().is_ok_and(|k| k.part == current))
    };
    if state
        .pending
        .as_ref()
        .is_none_or(|job| job.parts.newest != current)
        && state.under_way.is_none_or(|u| u.part != current)
        && !kept_now(&state)
    {
        state.pending = Some(Job {
            parts: parts.clone(),
            written: written.clone(),
        });
    }
    shared.wake();
    loop {
        if state.under_way.is_none() && kept_now(&state) {
            break;
        }
        if state.under_way.is_none() && state.pending.is_none() {
            // Failed or abandoned: not on disk.
            return None;
        }
        state = shared.wait(state);
    }
    let linked = link_into_place(&disk.path, path, &partial_path(path));
    drop(state);
    linked_length(linked, &disk.path, path)
}

/// [`Way::MemoryThenKeep`]: abandons the copy under way (of an older
/// checkpoint) and the one pending, writes `path` from memory, then makes
/// the kept file a link to it. If that link fails, the copy is handed the
/// checkpoint as before.
fn from_memory_then_keep(
    disk: &DiskCopy,
    parts: &Arc<Parts>,
    written: &Checkpointed,
    path: &Path,
) -> Result<u64, String> {
    let start = Instant::now();
    let shared = &disk.shared;
    let mut state = shared.lock();
    state.pending = None;
    state.unsynced = Some((parts.newest, parts.newest));
    // A copy still writing stops at its next piece; one written already
    // (syncing) is renamed into place while this one is written.
    state.cancel = state.under_way.is_some();
    drop(state);
    let bytes = from_memory(parts, path)?;
    let mut state = shared.lock();
    while state.under_way.is_some() {
        state = shared.wait(state);
    }
    match link_into_place(path, &disk.path, &temporary_path(&disk.path)) {
        Ok(()) => {
            let kept = Kept {
                path: disk.path.clone(),
                part: parts.newest,
                bytes,
                // A link to the state file: nothing written for it.
                written: 0,
                appended: false,
                state_hash: written.hash.clone(),
                ms: start.elapsed().as_secs_f64() * 1e3,
                sync_ms: 0.0,
            };
            state.last = Some(Ok(kept.clone()));
            state.copies += 1;
            drop(state);
            kept_event(&disk.module, &kept);
        }
        Err(e) => {
            tracing::debug!(
                "cannot link {} to {}: {e}; the copy writes it",
                path.display(),
                disk.path.display()
            );
            state.pending = Some(Job {
                parts: parts.clone(),
                written: written.clone(),
            });
            drop(state);
            shared.wake();
        }
    }
    Ok(bytes)
}

/// Writes the checkpoint in `parts` to `path` from memory (via its
/// partial file and a rename); returns its length.
fn from_memory(parts: &Parts, path: &Path) -> Result<u64, String> {
    let tmp = partial_path(path);
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let file = File::create(&tmp).map_err(|e| fail(&e))?;
    let written = parts
        .write_whole_file(&file, &|| true)
        .map(|n| n.unwrap_or_default());
    drop(file);
    let renamed = written.and_then(|n| {
        std::fs::rename(&tmp, path)
            .map(|()| n)
            .map_err(|e| e.to_string())
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed.map_err(|e| fail(&e))
}

/// Where the state file `path` is made before it is renamed into place.
fn partial_path(path: &Path) -> PathBuf {
    path.with_extension("partial")
}

/// Makes `to` a hard link to `from`: linked as `tmp`, renamed over `to`.
fn link_into_place(from: &Path, to: &Path, tmp: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(tmp);
    std::fs::hard_link(from, tmp)?;
    let renamed = std::fs::rename(tmp, to);
    // After a rename that failed, or did nothing (`to` was `from`'s file
    // already), `tmp` is still there.
    let _ = std::fs::remove_file(tmp);
    renamed
}

/// Whether files at `a` and `b` would be on one filesystem (their
/// directories are).
fn same_filesystem(a: &Path, b: &Path) -> bool {
    let device = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::metadata(dir).map(|m| m.dev())
    };
    matches!((device(a), device(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copying(part: u64, written: bool) -> Option<UnderWay> {
        Some(UnderWay { part, written })
    }

    #[test]
    fn the_kept_copy_of_the_current_checkpoint_is_linked() {
        let seen = Seen {
            kept: Some(7),
            under_way: None,
        };
        assert_eq!(choose(7, seen, true, false), Way::LinkKept);
        // Another filesystem (or no disk copy): no link.
        assert_eq!(choose(7, seen, false, false), Way::Memory);
    }

    #[test]
    fn a_copy_under_way_of_the_current_checkpoint_is_waited_for() {
        for written in [false, true] {
            let seen = Seen {
                kept: Some(5),
                under_way: copying(7, written),
            };
            assert_eq!(choose(7, seen, true, false), Way::AwaitCopy);
        }
        let seen = Seen {
            kept: None,
            under_way: copying(7, false),
        };
        assert_eq!(choose(7, seen, true, false), Way::AwaitCopy);
        assert_eq!(choose(7, seen, false, false), Way::Memory);
    }

    #[test]
    fn an_older_checkpoint_on_disk_or_under_way_is_not_used_when_much_changed() {
        // Kept: an older one; nothing under way (the current one pending).
        let older = Seen {
            kept: Some(5),
            under_way: None,
        };
        assert_eq!(choose(7, older, true, false), Way::MemoryThenKeep);
        // An older one being copied: abandoned, not waited for.
        let older_under_way = Seen {
            kept: Some(3),
            under_way: copying(5, true),
        };
        assert_eq!(choose(7, older_under_way, true, false), Way::MemoryThenKeep);
        // Nothing kept yet (the first copy failed, or none ran).
        assert_eq!(choose(7, Seen::default(), true, false), Way::MemoryThenKeep);
        assert_eq!(choose(7, Seen::default(), false, false), Way::Memory);
    }

    #[test]
    fn an_older_checkpoint_that_differs_by_little_is_finished_then_appended_to() {
        for seen in [
            // Kept: an older one (the current one pending).
            Seen {
                kept: Some(5),
                under_way: None,
            },
            // An older one being copied: let finish, not abandoned.
            Seen {
                kept: Some(3),
                under_way: copying(5, false),
            },
        ] {
            assert_eq!(choose(7, seen, true, true), Way::AwaitThenAppend);
            assert_eq!(choose(7, seen, false, true), Way::Memory);
        }
        // The current one itself: as before.
        let current = Seen {
            kept: Some(5),
            under_way: copying(7, false),
        };
        assert_eq!(choose(7, current, true, true), Way::AwaitCopy);
        let kept = Seen {
            kept: Some(7),
            under_way: None,
        };
        assert_eq!(choose(7, kept, true, true), Way::LinkKept);
    }

    #[test]
    fn a_link_into_place_replaces_the_name_not_the_file_it_held() {
        let dir = std::env::temp_dir().join(format!("kiln-state-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (kept, user, tmp) = (dir.join("kept"), dir.join("user"), dir.join("user.partial"));
        std::fs::write(&kept, b"one").unwrap();
        link_into_place(&kept, &user, &tmp).unwrap();
        assert_eq!(std::fs::read(&user).unwrap(), b"one");
        assert!(!tmp.exists());
        // The kept file replaced as the copy does (a new file renamed over
        // it): the user's file still holds what it held.
        std::fs::write(dir.join("new"), b"two").unwrap();
        std::fs::rename(dir.join("new"), &kept).unwrap();
        assert_eq!(std::fs::read(&user).unwrap(), b"one");
        // Linked onto itself: nothing changes, no partial file is left.
        link_into_place(&user, &user, &tmp).unwrap();
        assert_eq!(std::fs::read(&user).unwrap(), b"one");
        assert!(!tmp.exists());
        assert!(same_filesystem(&kept, &user));
        assert!(!same_filesystem(&kept, Path::new("/proc/self/status")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

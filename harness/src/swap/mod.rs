//! The swap core: everything between "a module artifact exists" and "its
//! new version serves with the old one's state", in-process.
//!
//! [`stage`] (private versioned copy, with the version's declarations and
//! sources: [`version_files`]) -> [`load`] (dlopen, fingerprint
//! check, entry points) -> [`engine_handle`] (one engine per version on its
//! own thread, [`version_threads`] for its workers) -> [`served`] (routing
//! and the state handoff) -> retire (drop on the engine thread, join
//! threads, close the library). [`snapshot_file`] keeps state on disk
//! ([`snapshot_append`]: the kept copy, which grows by what changed;
//! [`part_from_file`] writes a checkpoint part from ranges of a file);
//! [`state_hash`] says whether two snapshots hold the same state.

pub mod engine_handle;
pub mod load;
pub mod part_from_file;
pub mod served;
pub mod snapshot_append;
pub mod snapshot_file;
pub mod snapshot_header;
pub mod stage;
pub mod state_hash;
pub mod version_files;
pub mod version_threads;

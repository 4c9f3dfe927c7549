//! What the keys and `kiln ctl` keep in the session: the good versions for
//! `undo`, the last replay, where the socket is.

use std::path::PathBuf;

use super::good_versions::GoodVersions;

/// What the control commands keep in the session.
#[derive(Debug, Default)]
pub(super) struct ControlState {
    /// Good versions for `undo`.
    pub(super) good: GoodVersions,
    /// The last replay of the served module (after a swap or a recheck):
    /// version and whether it passed.
    pub(super) last_replay: Option<(u64, bool)>,
    /// Where the socket is (for `status`).
    pub(super) socket: Option<PathBuf>,
}

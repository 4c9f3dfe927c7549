//! The last few versions that passed replay, kept for `undo`: a private
//! copy of each library (staged versions are removed when they retire)
//! and its declarations and sources, so an older version can be staged
//! again and swapped in without a build.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::swap::stage::Staged;
use crate::swap::version_files::VersionFiles;

/// How many good versions are kept.
pub(super) const KEEP: usize = 4;

/// One kept good version.
#[derive(Clone, Debug)]
pub(super) struct GoodVersion {
    pub(super) version: u64,
    pub(super) label: String,
    pub(super) copy: PathBuf,
    pub(super) files: VersionFiles,
    pub(super) version_hash: String,
}

/// The kept good versions, oldest first.
#[derive(Debug, Default)]
pub(super) struct GoodVersions {
    kept: VecDeque<GoodVersion>,
}

impl GoodVersions {
    /// Copies `staged`'s library into `dir` and keeps it (dropping the
    /// oldest beyond [`KEEP`]); returns the copy.
    pub(super) fn keep(&mut self, dir: &Path, staged: &Staged) -> std::io::Result<PathBuf> {
        let copy = dir.join(format!("{}-good-v{}.so", staged.module, staged.version));
        let _ = std::fs::remove_file(&copy);
        std::fs::copy(&staged.path, &copy)?;
        self.kept.push_back(GoodVersion {
            version: staged.version,
            label: staged.label.clone(),
            copy: copy.clone(),
            files: staged.files.clone(),
            version_hash: staged.version_hash.clone(),
        });
        while self.kept.len() > KEEP {
            if let Some(old) = self.kept.pop_front() {
                let _ = std::fs::remove_file(&old.copy);
            }
        }
        Ok(copy)
    }

    /// The version `undo` goes back to from the one serving (whose build
    /// is `serving_hash`): the newest kept version with other code. The
    /// serving version's own entries are taken off with it.
    pub(super) fn take_undo_target(
        &mut self,
        serving_hash: &str,
    ) -> Option<(GoodVersion, Vec<GoodVersion>)> {
        let mut dropped = Vec::new();
        while self
            .kept
            .back()
            .is_some_and(|g| g.version_hash == serving_hash)
        {
            dropped.extend(self.kept.pop_back());
        }
        match self.kept.pop_back() {
            Some(target) => Some((target, dropped)),
            None => {
                // Nothing to go back to: keep what was there.
                self.kept.extend(dropped.into_iter().rev());
                None
            }
        }
    }

    /// Puts back what [`GoodVersions::take_undo_target`] took (the undo
    /// failed).
    pub(super) fn put_back(&mut self, target: GoodVersion, dropped: Vec<GoodVersion>) {
        self.kept.push_back(target);
        self.kept.extend(dropped.into_iter().rev());
    }

    /// The version `undo` would go back to now, for `status`.
    pub(super) fn undo_target(&self, serving_hash: &str) -> Option<&GoodVersion> {
        self.kept
            .iter()
            .rev()
            .find(|g| g.version_hash != serving_hash)
    }

    pub(super) fn labels(&self) -> Vec<String> {
        self.kept.iter().map(|g| g.label.clone()).collect()
    }
}

//! The last few versions that passed replay, kept for `undo`: a private
//! copy of each library (staged versions are removed when they retire)
//! and its declarations and sources, so an older version can be staged
//! again and swapped in without a build.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::swap::stage::Staged;
use crate::swap::version_files::VersionFiles;

/// How many good versions of each module are kept.
pub(super) const KEEP: usize = 4;

/// One kept good version.
#[derive(Clone, Debug)]
pub(super) struct GoodVersion {
    /// The module (backend) it is a version of: after a switch, undo only
    /// goes back within the module being served.
    pub(super) module: String,
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
            module: staged.module.clone(),
            version: staged.version,
            label: staged.label.clone(),
            copy: copy.clone(),
            files: staged.files.clone(),
            version_hash: staged.version_hash.clone(),
        });
        // At most KEEP of each module: another served backend's last good
        // copy is never dropped for this one's.
        while self
            .kept
            .iter()
            .filter(|g| g.module == staged.module)
            .count()
            > KEEP
        {
            if let Some(at) = self.kept.iter().position(|g| g.module == staged.module)
                && let Some(old) = self.kept.remove(at)
            {
                let _ = std::fs::remove_file(&old.copy);
            }
        }
        Ok(copy)
    }

    /// The version `undo` goes back to from the one serving (`module`,
    /// whose build is `serving_hash`): the newest kept version of that
    /// module with other code. The serving version's own newer entries are
    /// taken off with it; other modules' entries stay.
    pub(super) fn take_undo_target(
        &mut self,
        module: &str,
        serving_hash: &str,
    ) -> Option<(GoodVersion, Vec<GoodVersion>)> {
        let target = self
            .kept
            .iter()
            .rposition(|g| g.module == module && g.version_hash != serving_hash)?;
        let mut dropped = Vec::new();
        let mut i = self.kept.len();
        while i > target + 1 {
            i -= 1;
            if self.kept[i].module == module {
                dropped.extend(self.kept.remove(i));
            }
        }
        let target = self.kept.remove(target)?;
        Some((target, dropped))
    }

    /// Puts back what [`GoodVersions::take_undo_target`] took (the undo
    /// failed).
    pub(super) fn put_back(&mut self, target: GoodVersion, dropped: Vec<GoodVersion>) {
        self.kept.push_back(target);
        self.kept.extend(dropped.into_iter().rev());
    }

    /// The version `undo` would go back to now, for `status`.
    pub(super) fn undo_target(&self, module: &str, serving_hash: &str) -> Option<&GoodVersion> {
        self.kept
            .iter()
            .rev()
            .find(|g| g.module == module && g.version_hash != serving_hash)
    }

    pub(super) fn labels(&self) -> Vec<String> {
        self.kept.iter().map(|g| g.label.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(module: &str, version: u64, hash: &str) -> GoodVersion {
        GoodVersion {
            module: module.to_string(),
            version,
            label: format!("{module}-v{version}"),
            copy: PathBuf::from(format!("/nonexistent/{module}-{version}.so")),
            files: VersionFiles::default(),
            version_hash: hash.to_string(),
        }
    }

    #[test]
    fn undo_stays_within_the_served_module() {
        let mut kept = GoodVersions::default();
        kept.kept.extend([
            good("kernel-cpu", 1, "a"),
            good("kernel-cpu", 2, "b"),
            good("kernel-vulkan", 1, "v"),
            good("kernel-cpu", 3, "c"),
        ]);
        // Serving kernel-cpu v3 (hash c): back to v2, never to vulkan's.
        assert_eq!(kept.undo_target("kernel-cpu", "c").unwrap().version, 2);
        let (target, dropped) = kept.take_undo_target("kernel-cpu", "c").unwrap();
        assert_eq!((target.module.as_str(), target.version), ("kernel-cpu", 2));
        assert_eq!(dropped.len(), 1, "v3 is taken off with it");
        assert_eq!(kept.labels(), ["kernel-cpu-v1", "kernel-vulkan-v1"]);
        // Serving vulkan v1 with nothing older of its own: no undo.
        assert!(kept.take_undo_target("kernel-vulkan", "v").is_none());
        assert_eq!(kept.labels(), ["kernel-cpu-v1", "kernel-vulkan-v1"]);
    }
}

//! Edited copies of the workspace: copy the sources to a temporary
//! directory, change a kernel there, and build the module from the copy's
//! manifest with real cargo, as `kiln dev` would after a save.
//!
//! The copy is a whole workspace (same `Cargo.toml`, `Cargo.lock`,
//! `.cargo/config.toml` and contract crate), so the module it builds has the
//! host's ABI fingerprint: cargo derives crate metadata from paths relative
//! to the workspace root, so the contract's `TypeId`s do not change with
//! the copy's location. Builds share one target directory
//! ([`edited_target_dir`]) so registry dependencies are compiled once.

use std::path::{Path, PathBuf};

use kiln::workspace;

use crate::workspace_root;

/// The target directory every edited copy builds into (kept apart from the
/// module target directory: the copy's workspace crates have the same
/// metadata as the original's and would overwrite their artifacts).
pub fn edited_target_dir() -> PathBuf {
    workspace::target_dir(&workspace_root()).join("kiln-e2e-edited")
}

/// A copy of the workspace's sources in a temporary directory, removed when
/// dropped.
pub struct EditedWorkspace {
    root: PathBuf,
}

/// Top-level entries not copied: build output and version control.
const SKIPPED: [&str; 2] = ["target", ".git"];

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

impl EditedWorkspace {
    /// Copies the workspace (everything but `target/` and `.git`) into a
    /// fresh temporary directory named after `name` and this process.
    pub fn copy(name: &str) -> EditedWorkspace {
        let root =
            std::env::temp_dir().join(format!("kiln-e2e-edited-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the copy's directory");
        let source = workspace_root();
        for entry in std::fs::read_dir(&source).expect("read the workspace") {
            let entry = entry.expect("workspace entry");
            let file_name = entry.file_name();
            if SKIPPED.iter().any(|s| file_name == *s) {
                continue;
            }
            let kind = entry.file_type().expect("file type");
            let target = root.join(&file_name);
            if kind.is_dir() {
                copy_tree(&entry.path(), &target)
                    .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
            } else if kind.is_file() {
                std::fs::copy(entry.path(), &target)
                    .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
            }
        }
        EditedWorkspace { root }
    }

    /// The copy's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Replaces the one occurrence of `find` in the file at `relative` (from
    /// the copy's root) with `replace`. Panics unless `find` occurs exactly
    /// once, so an edit cannot silently miss after the source changes.
    pub fn edit(&self, relative: &str, find: &str, replace: &str) {
        let path = self.root.join(relative);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let count = text.matches(find).count();
        assert_eq!(
            count, 1,
            "{relative}: expected exactly one occurrence of {find:?}, found {count}"
        );
        std::fs::write(&path, text.replacen(find, replace, 1))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Builds `package` from the copy's manifest with the host's profile
    /// into [`edited_target_dir`] and returns its cdylib. Panics with
    /// cargo's output if the build fails.
    pub fn build(&self, package: &str) -> PathBuf {
        crate::build_with(&self.root, package, &edited_target_dir(), &[])
    }
}

impl Drop for EditedWorkspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

//! The local side of the mirror: which files of the workspace travel (what
//! the watcher and cargo need: `git ls-files`, tracked or new but not
//! ignored; without git, everything but `target/` and `.git/`), with their
//! content hashes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use super::protocol::{FileEntry, hash_text};

/// The mirror's name for this workspace on the remote: the directory's
/// name and a hash of the local machine's name and the absolute path, so
/// that two checkouts never share a mirror.
pub fn workspace_id(root: &Path) -> String {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let key = format!("{}\n{}", host.trim(), root.display());
    let name: String = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{name}-{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// Every file of the workspace at `root`, sorted by path, hashed.
pub fn collect(root: &Path) -> Result<Vec<FileEntry>, String> {
    collect_since(root, &[])
}

/// [`collect`], reusing the hash of an entry of `previous` whose size and
/// modification time (to the nanosecond) are unchanged, without reading
/// the file (on every save of a `kiln dev --on` session).
pub fn collect_since(root: &Path, previous: &[FileEntry]) -> Result<Vec<FileEntry>, String> {
    let known: std::collections::HashMap<&str, &FileEntry> =
        previous.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut entries = Vec::new();
    for rel in file_set(root) {
        let path = root.join(&rel);
        let Ok(meta) = fs::metadata(&path) else {
            continue; // deleted in the worktree but still tracked
        };
        if !meta.is_file() {
            continue;
        }
        let Some(rel) = rel.to_str() else {
            return Err(format!(
                "{}: the path is not UTF-8; the mirror cannot name it",
                path.display()
            ));
        };
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        let executable = meta.permissions().mode() & 0o111 != 0;
        if let Some(same) = known.get(rel).filter(|f| {
            f.len == meta.len()
                && f.mtime_ns == mtime_ns
                && f.executable == executable
                && mtime_ns != 0
        }) {
            entries.push((*same).clone());
            continue;
        }
        let contents =
            fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        entries.push(FileEntry {
            path: rel.to_string(),
            hash: hash_text(xxhash_rust::xxh3::xxh3_64(&contents)),
            len: contents.len() as u64,
            mtime_ns,
            executable,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);
    Ok(entries)
}

/// The workspace's files, relative to `root` (the set [`collect`] hashes).
pub fn file_set(root: &Path) -> Vec<PathBuf> {
    let out = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => out
            .stdout
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| PathBuf::from(String::from_utf8_lossy(s).into_owned()))
            .collect(),
        _ => {
            let mut files = Vec::new();
            walk(root, root, &mut files);
            files
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn an_unchanged_size_and_time_reuse_the_hash_a_new_time_reads_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.rs");
        fs::write(&path, "fn a() {}\n").unwrap();
        let first = collect(dir.path()).unwrap();
        let time = fs::metadata(&path).unwrap().modified().unwrap();
        // Same size, same time, other bytes: taken as unchanged (not read).
        fs::write(&path, "fn b() {}\n").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(time)
            .unwrap();
        assert_eq!(collect_since(dir.path(), &first).unwrap(), first);
        // A save moves the time: read and hashed again.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(time + std::time::Duration::from_millis(1))
            .unwrap();
        let again = collect_since(dir.path(), &first).unwrap();
        assert_ne!(again[0].hash, first[0].hash);
        assert_eq!(again, collect(dir.path()).unwrap());
    }
}

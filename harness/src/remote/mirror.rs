//! The agent's side of the mirror: a persistent directory per workspace,
//! `<mirror root>/<workspace id>/` (the root: `$KILN_MIRROR_ROOT`, else
//! `$XDG_CACHE_HOME/kiln/mirror`, else `~/.cache/kiln/mirror`), holding
//!
//! - `tree/`: the workspace, equal to the last manifest synced;
//! - `target/`: its cargo target directory (kept between sessions, so that
//!   a second session does not build cold);
//! - `incoming/`: blobs received, by hash, and every temporary file;
//! - `manifest.json`: what `tree/` holds, by path;
//! - `lock`: `flock`ed by the agent that has it open (one at a time);
//! - `session/`: a `kiln dev --on` session's files (its log, state file,
//!   pid), see [`super::agent_dev`].
//!
//! A blob is written to `incoming/<hash>.part` and renamed to
//! `incoming/<hash>` once complete and its hash checked; a commit copies
//! each to `incoming/<n>.stage` and renames that into `tree/`. A transfer
//! cut half-way therefore leaves `tree/` as it was, and no file anywhere
//! with half its contents under its final name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::protocol::{FileEntry, hash_text, receive_body};

/// Overrides where mirrors are kept (tests point it at a temporary dir).
pub const MIRROR_ROOT_ENV: &str = "KILN_MIRROR_ROOT";

/// Where the mirrors of this account are kept.
pub fn mirror_root() -> Result<PathBuf, String> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(MIRROR_ROOT_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("kiln/mirror"));
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache/kiln/mirror")),
        None => Err(format!(
            "neither {MIRROR_ROOT_ENV}, XDG_CACHE_HOME nor HOME is set: no place for the mirror"
        )),
    }
}

/// One workspace's mirror, open: one agent at a time (`lock`, `flock`ed).
pub struct Mirror {
    dir: PathBuf,
    /// Held while open; the lock goes with the descriptor.
    _lock: File,
    /// What `tree/` holds, by path.
    record: BTreeMap<String, FileEntry>,
    /// The manifest being synced, and the hashes still wanted.
    pending: Option<(Vec<FileEntry>, BTreeSet<String>)>,
    /// Why a blob that arrived whole was not kept (another hash: the file
    /// changed while it was sent; the disk full): the stream is still in
    /// step, so the commit refuses with this and the agent serves on.
    failed: Option<String>,
}

impl Mirror {
    /// How long an agent waits for the mirror's previous agent to exit (one
    /// whose connection was just cut sees the end of its input promptly).
    pub const LOCK_WAIT: Duration = Duration::from_secs(10);

    /// Opens (creating) the mirror of workspace `id` under `root`, waiting
    /// up to `lock_wait` for another agent to leave it.
    pub fn open(root: &Path, id: &str, lock_wait: Duration) -> Result<Mirror, String> {
        let valid = !id.is_empty()
            && id.len() <= 100
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(format!(
                "workspace id {id:?}: expected letters, digits, '-', '_' or '.'"
            ));
        }
        let dir = root.join(id);
        for sub in ["tree", "target", "incoming", "session"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path)
            .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
        let since = Instant::now();
        loop {
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) if since.elapsed() < lock_wait => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(format!(
                        "the mirror {} is in use by another kiln session on this machine",
                        dir.display()
                    ));
                }
                Err(e) => return Err(format!("cannot lock {}: {e}", lock_path.display())),
            }
        }
        let record_path = dir.join("manifest.json");
        let record = match fs::read(&record_path) {
            Ok(bytes) => serde_json::from_slice::<Vec<FileEntry>>(&bytes)
                .map_err(|e| format!("{}: {e}", record_path.display()))?
                .into_iter()
                .map(|e| (e.path.clone(), e))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", record_path.display())),
        };
        let mirror = Mirror {
            dir,
            _lock: lock,
            record,
            pending: None,
            failed: None,
        };
        mirror.remove_temporaries();
        Ok(mirror)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The mirrored workspace.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// Its cargo target directory.
    pub fn target(&self) -> PathBuf {
        self.dir.join("target")
    }

    /// A `kiln dev --on` session's files.
    pub fn session(&self) -> PathBuf {
        self.dir.join("session")
    }

    /// The manifest of the tree with `changed` in it and `deleted` out of
    /// it (what a [`super::protocol::Message::Patch`] describes).
    pub fn patched(&self, changed: Vec<FileEntry>, deleted: &[String]) -> Vec<FileEntry> {
        let mut files = self.record.clone();
        for path in deleted {
            files.remove(path);
        }
        for file in changed {
            files.insert(file.path.clone(), file);
        }
        files.into_values().collect()
    }

    fn incoming(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    /// Left by an agent killed mid-transfer: never used again.
    fn remove_temporaries(&self) {
        let Ok(entries) = fs::read_dir(self.incoming()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".part") || name.ends_with(".stage") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Takes a manifest; returns the hashes of the contents the mirror
    /// lacks (neither in `tree/` under that path nor received already).
    pub fn want(&mut self, files: Vec<FileEntry>) -> Result<Vec<String>, String> {
        let mut wanted = BTreeSet::new();
        for file in &files {
            check_path(&file.path)?;
            if file.hash.len() != 16 || !file.hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("{}: bad hash {:?}", file.path, file.hash));
            }
            if !self.holds(file) && !self.incoming().join(&file.hash).is_file() {
                wanted.insert(file.hash.clone());
            }
        }
        let list = wanted.iter().cloned().collect();
        self.pending = Some((files, wanted));
        self.failed = None;
        Ok(list)
    }

    /// Whether `tree/` holds `file` as recorded (same hash and size).
    fn holds(&self, file: &FileEntry) -> bool {
        self.record.get(&file.path).is_some_and(|held| {
            held.hash == file.hash
                && fs::metadata(self.tree().join(&file.path)).is_ok_and(|m| m.len() == file.len)
        })
    }

    /// Receives one blob's body from `input` into `incoming/`.
    ///
    /// An error here leaves the stream out of step (the body not read, or
    /// not whole): the connection must end. A blob read whole but not kept
    /// is `Ok`, and the next [`Mirror::commit`] says why.
    pub fn receive(&mut self, hash: &str, len: u64, input: &mut impl Read) -> Result<(), String> {
        let Some((_, wanted)) = self.pending.as_mut() else {
            return Err("a blob before any manifest".to_string());
        };
        if !wanted.contains(hash) {
            return Err(format!("blob {hash} was not asked for"));
        }
        let part = self.dir.join("incoming").join(format!("{hash}.part"));
        // A file that cannot be written (the disk full) does not stop the
        // body being read: the stream stays in step.
        let mut out = WriteOrRemember(File::create(&part).map(BufWriter::new));
        let result = receive_body(input, len, &mut out).map(hash_text);
        let written = out
            .0
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_data());
        if let (Ok(_), Err(e)) = (&result, written) {
            let _ = fs::remove_file(&part);
            self.failed = Some(format!("cannot keep blob {hash}: {e}"));
            return Ok(());
        }
        match result {
            Ok(got) if got == hash => {
                match fs::rename(&part, self.dir.join("incoming").join(hash)) {
                    Ok(()) => {
                        wanted.remove(hash);
                    }
                    Err(e) => {
                        let _ = fs::remove_file(&part);
                        self.failed = Some(format!("cannot keep blob {hash}: {e}"));
                    }
                }
                Ok(())
            }
            Ok(got) => {
                let _ = fs::remove_file(&part);
                self.failed = Some(format!(
                    "blob {hash} arrived with hash {got}: the file changed while it was sent; sync again"
                ));
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&part);
                Err(format!("receiving blob {hash}: {e}"))
            }
        }
    }

    /// Makes `tree/` equal the manifest: files not in it deleted, then
    /// changed files renamed in. Returns (written, deleted).
    pub fn commit(&mut self) -> Result<(usize, usize), String> {
        let Some((files, wanted)) = self.pending.take() else {
            return Err("a commit before any manifest".to_string());
        };
        if let Some(why) = self.failed.take() {
            return Err(why);
        }
        if let Some(missing) = wanted.first() {
            return Err(format!(
                "commit with {} blob(s) never sent (first: {missing})",
                wanted.len()
            ));
        }
        let tree = self.tree();
        // Deletions first: a file that became a folder of the same name
        // (or the other way round) must be gone before its new self is
        // placed.
        let keep: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let mut deleted = 0;
        for path in self.record.keys() {
            if !keep.contains(path.as_str()) {
                match fs::remove_file(tree.join(path)) {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("cannot delete {path} in the mirror: {e}")),
                }
                remove_empty_parents(&tree, &tree.join(path));
            }
        }
        let mut written = 0;
        for (n, file) in files.iter().enumerate() {
            if self.holds(file) {
                continue;
            }
            let stage = self.incoming().join(format!("{n}.stage"));
            let target = tree.join(&file.path);
            place(&self.incoming().join(&file.hash), &stage, &target, file)
                .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
            written += 1;
        }
        self.record = files.into_iter().map(|f| (f.path.clone(), f)).collect();
        let record: Vec<&FileEntry> = self.record.values().collect();
        let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        let staged = self.incoming().join("manifest.json.stage");
        fs::write(&staged, json)
            .and_then(|()| fs::rename(&staged, self.dir.join("manifest.json")))
            .map_err(|e| format!("cannot write the mirror's manifest: {e}"))?;
        // The blobs are in tree/ now.
        if let Ok(entries) = fs::read_dir(self.incoming()) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok((written, deleted))
    }
}

/// A relative path of plain components: nothing outside the tree.
pub(super) fn check_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    let plain = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "manifest path {path:?}: expected a relative path inside the workspace"
        ))
    }
}

/// Copies `blob` to `stage` with `file`'s mode and time, then renames it to
/// `target` (replacing atomically whatever was there).
fn place(blob: &Path, stage: &Path, target: &Path, file: &FileEntry) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(blob, stage)?;
    let staged = File::options().write(true).open(stage)?;
    staged.set_permissions(fs::Permissions::from_mode(if file.executable {
        0o755
    } else {
        0o644
    }))?;
    staged.set_modified(UNIX_EPOCH + Duration::from_nanos(file.mtime_ns))?;
    staged.sync_data()?;
    drop(staged);
    if target.is_dir() {
        fs::remove_dir_all(target)?;
    }
    fs::rename(stage, target)
}

fn remove_empty_parents(tree: &Path, removed: &Path) {
    let mut dir = removed.parent();
    while let Some(d) = dir {
        if d == tree || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// A writer that, after its first error, takes and drops the rest (the
/// error kept for later).
struct WriteOrRemember<W>(io::Result<W>);

impl<W: io::Write> io::Write for WriteOrRemember<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(out) = &mut self.0 {
            if let Err(e) = out.write_all(buf) {
                self.0 = Err(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, contents: &[u8]) -> FileEntry {
        FileEntry {
            path: path.to_string(),
            hash: hash_text(xxhash_rust::xxh3::xxh3_64(contents)),
            len: contents.len() as u64,
            mtime_ns: 1_700_000_000_000_000_000,
            executable: false,
        }
    }

    #[test]
    fn paths_outside_the_tree_and_bad_ids_are_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        for id in ["", "..", "a/b", ".hidden"] {
            let err = Mirror::open(root.path(), id, Duration::ZERO)
                .err()
                .expect(id);
            assert!(err.contains("workspace id"), "{err}");
        }
        let mut mirror = Mirror::open(root.path(), "ws", Duration::ZERO).unwrap();
        let err = Mirror::open(root.path(), "ws", Duration::ZERO)
            .err()
            .expect("one agent at a time");
        assert!(err.contains("in use by another kiln session"), "{err}");
        for path in ["../escape", "/etc/passwd", "a/../../b", "", "./a"] {
            let err = mirror.want(vec![entry(path, b"x")]).unwrap_err();
            assert!(err.contains("expected a relative path"), "{path}: {err}");
        }
    }

    #[test]
    fn a_blob_must_be_asked_for_and_whole_and_a_commit_needs_every_one() {
        let root = tempfile::tempdir().unwrap();
        let mut mirror = Mirror::open(root.path(), "ws", Duration::ZERO).unwrap();
        let (a, b) = (b"first file\n".as_slice(), b"second\n".as_slice());
        let wanted = mirror.want(vec![entry("a", a), entry("d/b", b)]).unwrap();
        assert_eq!(wanted.len(), 2);
        let err = mirror
            .receive(&"0".repeat(16), 1, &mut io::Cursor::new(b"z"))
            .unwrap_err();
        assert!(err.contains("not asked for"), "{err}");
        // The right hash but other bytes, whole: the stream is in step, so
        // taken; not kept, and the commit refuses, saying why.
        let hash_a = entry("a", a).hash;
        mirror
            .receive(
                &hash_a,
                a.len() as u64,
                &mut io::Cursor::new(b"other file\n"),
            )
            .unwrap();
        let err = mirror.commit().unwrap_err();
        assert!(err.contains("changed while it was sent"), "{err}");
        assert!(!mirror.incoming().join(&hash_a).exists(), "not kept");
        // The next sync starts clean.
        mirror.want(vec![entry("a", a), entry("d/b", b)]).unwrap();
        mirror
            .receive(&hash_a, a.len() as u64, &mut io::Cursor::new(a))
            .unwrap();
        let err = mirror.commit().unwrap_err();
        assert!(err.contains("never sent"), "{err}");
        assert!(!mirror.tree().join("a").exists(), "nothing committed");
        // Cut mid-body: no file, no .part left.
        drop(mirror);
        // Opened again with a wait, as the agent opens it: another test of
        // this binary that spawns a process while the lock's file is open
        // shares the lock until its child execs (fork copies the open
        // file, and an flock belongs to the open file), so it can outlive
        // the dropped mirror for a moment (a fresh-clone CI run read "in
        // use by another kiln session" here with no wait).
        let mut mirror = Mirror::open(root.path(), "ws", Mirror::LOCK_WAIT).unwrap();
        mirror.want(vec![entry("a", a), entry("d/b", b)]).unwrap();
        let hash_b = entry("d/b", b).hash;
        let err = mirror
            .receive(&hash_b, b.len() as u64, &mut io::Cursor::new(&b[..3]))
            .unwrap_err();
        assert!(err.contains("closed"), "{err}");
        let left: Vec<_> = fs::read_dir(mirror.incoming())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            [std::ffi::OsString::from(&hash_a)],
            "the whole blob stays"
        );
        mirror
            .receive(&hash_b, b.len() as u64, &mut io::Cursor::new(b))
            .unwrap();
        assert_eq!(mirror.commit().unwrap(), (2, 0));
        assert_eq!(fs::read(mirror.tree().join("d/b")).unwrap(), b);
        // Reopened: the record holds; nothing wanted.
        drop(mirror);
        let mut mirror = Mirror::open(root.path(), "ws", Duration::ZERO).unwrap();
        assert!(
            mirror
                .want(vec![entry("a", a), entry("d/b", b)])
                .unwrap()
                .is_empty()
        );
        assert_eq!(mirror.commit().unwrap(), (0, 0));
    }

    #[test]
    fn a_file_that_becomes_a_folder_and_back_is_mirrored() {
        let root = tempfile::tempdir().unwrap();
        let mut mirror = Mirror::open(root.path(), "ws", Duration::ZERO).unwrap();
        let sync = |mirror: &mut Mirror, files: Vec<FileEntry>, bodies: &[&[u8]]| {
            let wanted = mirror.want(files.clone()).unwrap();
            for (file, body) in files.iter().zip(bodies) {
                if wanted.contains(&file.hash) {
                    mirror
                        .receive(&file.hash, body.len() as u64, &mut io::Cursor::new(body))
                        .unwrap();
                }
            }
            mirror.commit().unwrap()
        };
        sync(&mut mirror, vec![entry("x", b"a file")], &[b"a file"]);
        assert!(mirror.tree().join("x").is_file());
        sync(&mut mirror, vec![entry("x/y", b"inside")], &[b"inside"]);
        assert_eq!(fs::read(mirror.tree().join("x/y")).unwrap(), b"inside");
        sync(
            &mut mirror,
            vec![entry("x", b"a file again")],
            &[b"a file again"],
        );
        assert_eq!(fs::read(mirror.tree().join("x")).unwrap(), b"a file again");
    }
}

//! Whole files across the connection, outside the mirror's tree: a file
//! put into a session's folder (a workload, a state file to start from),
//! and a file of the mirror fetched back (the history, the state file),
//! each a [`Message::Blob`]-style line and its bytes, written under a
//! temporary name and renamed once whole and its hash checked.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_stats::bytes;

use super::mirror::check_path;
use super::protocol::{Message, hash_text, receive_body, send};

/// The names a session's folder takes from the local side.
pub fn check_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "session file name {name:?}: expected letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Agent: receives `len` bytes from `input` into `dir/name`, atomically.
pub fn put(
    dir: &Path,
    name: &str,
    hash: &str,
    len: u64,
    input: &mut impl Read,
) -> Result<PathBuf, String> {
    check_name(name)?;
    let target = dir.join(name);
    receive_to(input, hash, len, &target, None)?;
    Ok(target)
}

/// `rel` (a relative path of plain components) under `root`.
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, String> {
    check_path(rel)?;
    Ok(root.join(rel))
}

/// Agent: the plain files directly in `dir` (none when it does not exist).
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The xxh3 (as it travels) and length of the file at `path`.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    let mut file = File::open(path)?;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hash_text(hasher.digest()), len))
}

/// Writes the `len` bytes of `path` (as hashed) to `out`.
pub fn copy_body(out: &mut impl Write, path: &Path, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut File::open(path)?.take(len), out)?;
    if copied != len {
        return Err(io::Error::other(format!(
            "{} shrank while it was sent",
            path.display()
        )));
    }
    out.flush()
}

/// Sends `path` as a blob line and its bytes (hashed first, so the line
/// can carry the hash).
pub fn send_file(out: &mut impl Write, path: &Path) -> io::Result<()> {
    let (hash, len) = hash_file(path)?;
    send(out, &Message::Blob { hash, len })?;
    copy_body(out, path, len)
}

/// Receives `len` bytes whose xxh3 is `hash` from `input` into `target`
/// (through `target.part`, renamed once whole and checked). With
/// `progress`, prints `progress: N of M` on stderr as it goes.
pub fn receive_to(
    input: &mut impl Read,
    hash: &str,
    len: u64,
    target: &Path,
    progress: Option<&str>,
) -> Result<(), String> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut part = target.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = (|| {
        let file = File::create(&part)?;
        let mut out = Progress {
            inner: BufWriter::new(file),
            label: progress,
            done: 0,
            total: len,
            shown: Instant::now(),
        };
        let got = receive_body(input, len, &mut out)?;
        out.finish();
        out.inner
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_data()?;
        Ok::<_, io::Error>(hash_text(got))
    })();
    match result {
        Ok(got) if got == hash => {
            fs::rename(&part, target).map_err(|e| format!("cannot write {}: {e}", target.display()))
        }
        Ok(got) => {
            let _ = fs::remove_file(&part);
            Err(format!(
                "{} arrived with hash {got}, not {hash}: it changed while it was sent",
                target.display()
            ))
        }
        Err(e) => {
            let _ = fs::remove_file(&part);
            Err(format!("receiving {}: {e}", target.display()))
        }
    }
}

/// A writer that shows how much of a transfer is done, every half second.
struct Progress<'a, W> {
    inner: W,
    label: Option<&'a str>,
    done: u64,
    total: u64,
    shown: Instant,
}

impl<W> Progress<'_, W> {
    fn finish(&self) {
        if let Some(label) = self.label {
            eprintln!(
                "{label}: {} of {}, done",
                bytes::human(self.done),
                bytes::human(self.total)
            );
        }
    }
}

impl<W: Write> Write for Progress<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.done += n as u64;
        if let Some(label) = self.label
            && self.shown.elapsed() >= Duration::from_millis(500)
        {
            self.shown = Instant::now();
            let pct = (self.done as f64 / self.total.max(1) as f64) * 100.0;
            eprintln!(
                "{label}: {} of {} ({pct:.0}%)",
                bytes::human(self.done),
                bytes::human(self.total)
            );
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_round_trips_and_a_cut_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("state.bin");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&source, &body).unwrap();
        let mut wire = Vec::new();
        send_file(&mut wire, &source).unwrap();
        let mut input = io::Cursor::new(wire.clone());
        let Message::Blob { hash, len } = super::super::protocol::receive(&mut input).unwrap()
        else {
            panic!("a blob line first")
        };
        let got = dir.path().join("out/fetched.bin");
        receive_to(&mut input, &hash, len, &got, None).unwrap();
        assert!(fs::read(&got).unwrap() == body);

        // Cut half-way: an error, no file under either name.
        let cut = dir.path().join("cut.bin");
        let header = wire.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut input = io::Cursor::new(wire[header..header + 1000].to_vec());
        let err = receive_to(&mut input, &hash, len, &cut, None).unwrap_err();
        assert!(err.contains("connection closed"), "{err}");
        assert!(!cut.exists() && !dir.path().join("cut.bin.part").exists());
    }

    #[test]
    fn names_and_paths_stay_inside() {
        for bad in ["", ".x", "a/b", "..", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("state.kiln").unwrap();
        assert!(resolve(Path::new("/m"), "../etc").is_err());
        assert_eq!(
            resolve(Path::new("/m"), "target/kiln/history").unwrap(),
            Path::new("/m/target/kiln/history")
        );
    }
}

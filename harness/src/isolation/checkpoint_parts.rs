//! The sealed parts of one checkpoint (`checkpoint.rs` makes them,
//! `disk_copy.rs` writes them to disk as one whole file): mapped together
//! they are its state.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::swap::snapshot_file;

/// The sealed parts of one checkpoint, by number: its newest part (whose
/// header lists every section) and every earlier part it points to.
#[derive(Debug)]
pub struct Parts {
    pub newest: u64,
    pub files: BTreeMap<u64, Arc<File>>,
}

impl Parts {
    /// The checkpoint's state, served from mappings of its parts.
    pub fn map(&self) -> Result<shared_state::Snapshot, String> {
        let newest = &self.files[&self.newest];
        let earlier = |part: u64| self.files.get(&part).and_then(|f| f.try_clone().ok());
        snapshot_file::map_parts(newest, &path_of(newest), &earlier, false)
            .map_err(|e| e.to_string())
    }

    /// Writes the checkpoint as one whole snapshot file to `out`; returns
    /// its length.
    pub fn write_whole(&self, out: &mut impl Write) -> Result<u64, String> {
        let snapshot = self.map()?;
        snapshot_file::write_to(&snapshot, out).map_err(|e| e.to_string())
    }

    /// Writes the checkpoint as one whole snapshot file to `to` (a new,
    /// empty file), in pieces of at most [`PIECE`] bytes, asking `go_on`
    /// before each; returns its length, or `None` when `go_on` said no.
    ///
    /// A checkpoint of one part is a whole snapshot file already (its
    /// header points to no other part): it is copied in the kernel
    /// (`sendfile`), its checksums not computed again. One of several
    /// parts is assembled from their mappings ([`Parts::write_whole`],
    /// which checksums each tensor again).
    pub fn write_whole_file(
        &self,
        to: &File,
        go_on: &dyn Fn() -> bool,
    ) -> Result<Option<u64>, String> {
        if let [(_, only)] = self.files.iter().collect::<Vec<_>>()[..] {
            // Its own open file description: its own offset.
            let from = File::open(path_of(only)).map_err(|e| e.to_string())?;
            let mut copied = 0;
            loop {
                if !go_on() {
                    return Ok(None);
                }
                match std::io::copy(&mut (&from).take(PIECE), &mut &*to) {
                    Ok(0) => return Ok(Some(copied)),
                    Ok(n) => copied += n,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        let stopped = Cell::new(false);
        let mut out = BufWriter::with_capacity(
            1 << 20,
            Pieces {
                to,
                go_on,
                stopped: &stopped,
            },
        );
        let written = self
            .write_whole(&mut out)
            .and_then(|n| out.flush().map(|()| n).map_err(|e| e.to_string()));
        drop(out);
        match written {
            _ if stopped.get() => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(e) => Err(e),
        }
    }
}

/// How much [`Parts::write_whole_file`] writes between two questions.
const PIECE: u64 = 64 << 20;

/// A file written in pieces of at most [`PIECE`] bytes, each after `go_on`
/// said yes.
struct Pieces<'a> {
    to: &'a File,
    go_on: &'a dyn Fn() -> bool,
    /// `go_on` said no.
    stopped: &'a Cell<bool>,
}

impl Write for Pieces<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !(self.go_on)() {
            self.stopped.set(true);
            return Err(std::io::Error::other("stopped"));
        }
        (&mut &*self.to).write(&buf[..buf.len().min(PIECE as usize)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The path another process (or this one) opens `file` by
/// (`/proc/PID/fd/N`): its own open description, so its own offset.
pub(super) fn path_of(file: &File) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::checkpoint_writer::write_part;
    use rustix::fs::{MemfdFlags, SealFlags};
    use shared_state::{Scalar, Snapshot, Tensor};

    /// Two residents and a counter.
    fn state(calls: i64) -> Snapshot {
        let mut s = Snapshot::new("kernel-test", "cpu");
        s.insert_tensor("resident/x", Tensor::from_f32(&[70_000], vec![1.5; 70_000]));
        s.insert_tensor(
            "resident/y",
            Tensor::from_f32(&[3], vec![f32::NAN, -0.0, 7.0]),
        );
        s.insert_scalar("counters/calls/x", Scalar::I64(calls));
        s
    }

    /// `snapshot` written as checkpoint part `part` into a sealed memfd,
    /// its sections `earlier` places left in an earlier part.
    fn part(
        snapshot: &Snapshot,
        part: u64,
        earlier: &BTreeMap<String, snapshot_file::Placed>,
    ) -> (File, BTreeMap<String, snapshot_file::Placed>) {
        let fd = rustix::fs::memfd_create("kiln-test-part", MemfdFlags::ALLOW_SEALING).unwrap();
        let file = File::from(fd);
        let (_, _, placed) = write_part(snapshot, &path_of(&file), part, &|name, _| {
            earlier.get(name).cloned()
        })
        .unwrap();
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW,
        )
        .unwrap();
        (file, placed)
    }

    fn written_whole(parts: &Parts, name: &str) -> (std::path::PathBuf, Option<u64>) {
        let path = std::env::temp_dir().join(format!("kiln-parts-{}-{name}", std::process::id()));
        let file = File::create(&path).unwrap();
        let n = parts.write_whole_file(&file, &|| true).unwrap();
        (path, n)
    }

    #[test]
    fn a_whole_file_of_one_part_or_of_several_restores_bit_for_bit() {
        let first = state(1);
        let (one, placed) = part(&first, 1, &BTreeMap::new());
        let one = Arc::new(one);
        let single = Parts {
            newest: 1,
            files: BTreeMap::from([(1, one.clone())]),
        };
        let (path, n) = written_whole(&single, "one");
        assert_eq!(n, Some(std::fs::metadata(&path).unwrap().len()));
        assert!(snapshot_file::load(&path).unwrap().bit_eq(&first));
        snapshot_file::verify(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // A second part holding only the counter, pointing to the first.
        let second = state(2);
        let (two, _) = part(&second, 2, &placed);
        assert!(two.metadata().unwrap().len() < one.metadata().unwrap().len() / 2);
        let both = Parts {
            newest: 2,
            files: BTreeMap::from([(1, one), (2, Arc::new(two))]),
        };
        let (path, n) = written_whole(&both, "two");
        assert_eq!(n, Some(std::fs::metadata(&path).unwrap().len()));
        let verified = snapshot_file::verify(&path).unwrap();
        assert_eq!(
            verified.state_hash,
            crate::swap::state_hash::state_hash(&second)
        );
        assert!(snapshot_file::load(&path).unwrap().bit_eq(&second));
        std::fs::remove_file(&path).unwrap();
        // Asked to stop: it does, and says so.
        for parts in [&single, &both] {
            let path = std::env::temp_dir().join(format!("kiln-parts-{}-stop", std::process::id()));
            let file = File::create(&path).unwrap();
            assert_eq!(parts.write_whole_file(&file, &|| false).unwrap(), None);
            std::fs::remove_file(&path).unwrap();
        }
    }
}

//! The status record: what the worker is running right now (operation,
//! engine label, call index, kernel, since when), in a page of shared memory
//! (a memfd both processes map). The worker writes it before every
//! operation and every kernel call; the supervisor reads it to enforce
//! deadlines, and after the worker died to say what was running: it
//! survives the crash because it lives in the supervisor's memfd.
//!
//! A seqlock over `AtomicU64` words: the writer makes the sequence odd,
//! writes, makes it even; a reader retries while it is odd or changed.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

use memmap2::MmapMut;

const WORDS: usize = 64;
const SEQ: usize = 0;
const BUSY: usize = 1;
const STARTED_NS: usize = 2;
const INDEX: usize = 3;
const OP: usize = 4; // 8 words: 64 bytes
const LABEL: usize = 12; // 16 words: 128 bytes
const KERNEL: usize = 28; // 16 words: 128 bytes
const NO_INDEX: u64 = u64::MAX;

/// Nanoseconds of `CLOCK_MONOTONIC` (the same clock in every process).
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What the worker was running.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Running {
    /// `start`, `swap`, `replay`, `checkpoint`, ...
    pub op: String,
    /// The engine it ran on (`kernel-cpu-v3`), if any.
    pub label: String,
    /// The call's index among the workload's calls, and its kernel.
    pub call: Option<(usize, String)>,
    /// How long it had been running when read.
    pub elapsed: Duration,
}

impl std::fmt::Display for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.call {
            Some((index, kernel)) => write!(f, "call {index} ({kernel}) on {}", self.label)?,
            None if self.label.is_empty() => write!(f, "{}", self.op)?,
            None => write!(f, "{} on {}", self.op, self.label)?,
        }
        write!(f, ", {:.1} s in", self.elapsed.as_secs_f64())
    }
}

/// One shared page, mapped.
pub struct StatusRecord {
    map: MmapMut,
}

impl StatusRecord {
    /// Creates the record in a new memfd (the supervisor's side).
    pub fn create() -> std::io::Result<(StatusRecord, File)> {
        let fd = rustix::fs::memfd_create("kiln-status", rustix::fs::MemfdFlags::CLOEXEC)?;
        let file = File::from(fd);
        file.set_len(4096)?;
        Ok((StatusRecord::map(&file)?, file))
    }

    /// Maps the record held by `file` (both sides).
    pub fn map(file: &File) -> std::io::Result<StatusRecord> {
        // SAFETY: the memfd is private to supervisor and worker, never
        // truncated after creation (4096 bytes), and only ever accessed
        // through the atomics of `words`, so concurrent writes by the other
        // process are not data races.
        let map = unsafe { MmapMut::map_mut(file)? };
        if map.len() < WORDS * 8 {
            return Err(std::io::Error::other("status record too small"));
        }
        Ok(StatusRecord { map })
    }

    fn words(&self) -> &[AtomicU64; WORDS] {
        // SAFETY: the mapping is page-aligned (so 8-byte aligned), at least
        // WORDS * 8 bytes long (checked in `map`), lives as long as `self`,
        // and `AtomicU64` has the layout of `u64`; every access to the page
        // in either process goes through these atomics.
        unsafe { &*(self.map.as_ptr() as *const [AtomicU64; WORDS]) }
    }

    /// Records that `op` started now (on `label`, for call `call`).
    pub fn begin(&self, op: &str, label: &str, call: Option<(usize, &str)>) {
        let w = self.words();
        let seq = w[SEQ].load(Ordering::Relaxed);
        w[SEQ].store(seq.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        w[BUSY].store(1, Ordering::Relaxed);
        w[STARTED_NS].store(monotonic_ns(), Ordering::Relaxed);
        w[INDEX].store(call.map_or(NO_INDEX, |(i, _)| i as u64), Ordering::Relaxed);
        put_text(&w[OP..LABEL], op);
        put_text(&w[LABEL..KERNEL], label);
        put_text(&w[KERNEL..KERNEL + 16], call.map_or("", |(_, k)| k));
        w[SEQ].store((seq | 1).wrapping_add(1), Ordering::Release);
    }

    /// Records that nothing runs.
    pub fn idle(&self) {
        let w = self.words();
        let seq = w[SEQ].load(Ordering::Relaxed);
        w[SEQ].store(seq | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        w[BUSY].store(0, Ordering::Relaxed);
        w[SEQ].store((seq | 1).wrapping_add(1), Ordering::Release);
    }

    /// What runs now (`None`: idle). After the writer died mid-update the
    /// sequence stays odd: a few retries, then the fields as they are.
    pub fn read(&self) -> Option<Running> {
        let w = self.words();
        for attempt in 0..1000 {
            let s1 = w[SEQ].load(Ordering::Acquire);
            if s1 & 1 == 1 && attempt < 999 {
                std::hint::spin_loop();
                continue;
            }
            let busy = w[BUSY].load(Ordering::Relaxed) == 1;
            let started = w[STARTED_NS].load(Ordering::Relaxed);
            let index = w[INDEX].load(Ordering::Relaxed);
            let op = get_text(&w[OP..LABEL]);
            let label = get_text(&w[LABEL..KERNEL]);
            let kernel = get_text(&w[KERNEL..KERNEL + 16]);
            fence(Ordering::Acquire);
            if w[SEQ].load(Ordering::Relaxed) != s1 && attempt < 999 {
                continue;
            }
            if !busy {
                return None;
            }
            return Some(Running {
                op,
                label,
                call: (index != NO_INDEX).then_some((index as usize, kernel)),
                elapsed: Duration::from_nanos(monotonic_ns().saturating_sub(started)),
            });
        }
        None
    }
}

fn put_text(words: &[AtomicU64], text: &str) {
    let max = words.len() * 8 - 1;
    let mut bytes = text.as_bytes();
    if bytes.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        bytes = &bytes[..end];
    }
    let mut buf = vec![0u8; words.len() * 8];
    buf[0] = bytes.len() as u8;
    buf[1..1 + bytes.len()].copy_from_slice(bytes);
    for (word, chunk) in words.iter().zip(buf.chunks_exact(8)) {
        word.store(
            u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
}

fn get_text(words: &[AtomicU64]) -> String {
    let buf: Vec<u8> = words
        .iter()
        .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
        .collect();
    let len = (buf[0] as usize).min(buf.len() - 1);
    String::from_utf8_lossy(&buf[1..1 + len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_mapping_sees_what_the_first_wrote() {
        let (writer, file) = StatusRecord::create().unwrap();
        let reader = StatusRecord::map(&file).unwrap();
        assert_eq!(reader.read(), None);
        writer.begin("replay", "kernel-cpu-v3", Some((4, "matmul")));
        let running = reader.read().expect("busy");
        assert_eq!(running.op, "replay");
        assert_eq!(running.label, "kernel-cpu-v3");
        assert_eq!(running.call, Some((4, "matmul".to_string())));
        writer.begin("swap", &"x".repeat(300), None);
        let running = reader.read().expect("busy");
        assert_eq!(running.call, None);
        assert_eq!(
            running.label.len(),
            127,
            "long labels are cut, not overflowing"
        );
        writer.idle();
        assert_eq!(reader.read(), None);
    }
}

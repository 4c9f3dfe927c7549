//! Whether the local side has left: the agent's stdin hung up (its writer
//! closed). Checked while the agent runs a long command and reads nothing,
//! so that an agent whose session ended (Ctrl-C, the connection cut) stops
//! at once rather than when the command is done; under Slurm that ends the
//! job step, and with it the allocation `srun` made.
//!
//! Through ssh the agent's stdin is a pipe or a socket from sshd; through
//! `srun` it is a pipe from slurmstepd, closed when srun's own stdin ends.
//! A pipe reports `POLLHUP` once every writer closed, a socket `POLLRDHUP`
//! once the peer shut its side down, even with data left unread.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// True when the writer of `fd` is gone (never blocks).
pub fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `poll` points to one valid pollfd for the duration of the
    // call (count 1), the descriptor is open (borrowed), timeout 0.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
}

/// True when this process's stdin hung up.
pub fn stdin_hung_up() -> bool {
    hung_up(std::io::stdin().as_fd())
}

/// The agent's limit on silence, in ms (0: none), set once a dev session
/// starts (before it, the local side may be busy hashing its workspace).
static STDIN_SILENCE_MS: AtomicU64 = AtomicU64::new(0);

/// From now on a read of the agent's stdin that waits longer than `limit`
/// fails with `TimedOut`.
pub fn limit_stdin_silence(limit: Duration) {
    STDIN_SILENCE_MS.store(limit.as_millis() as u64, Ordering::SeqCst);
}

/// The agent's stdin, read unbuffered (wrap it in a `BufReader`), failing
/// with `TimedOut` when nothing came for the limit set by
/// [`limit_stdin_silence`]: a silent network drop closes no stream, and the
/// remote TCP may take hours to notice.
pub struct WatchedStdin;

impl Read for WatchedStdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stdin = io::stdin();
        read_watched(stdin.as_fd(), buf, &STDIN_SILENCE_MS)
    }
}

/// Reads `fd` once, after waiting at most `limit` ms (0: no limit) for data.
fn read_watched(fd: BorrowedFd<'_>, buf: &mut [u8], limit: &AtomicU64) -> io::Result<usize> {
    let limit = limit.load(Ordering::SeqCst);
    if limit > 0 {
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = i32::try_from(limit).unwrap_or(i32::MAX);
        // SAFETY: `poll` points to one valid pollfd for the duration of the
        // call (count 1), the descriptor is open (borrowed).
        match unsafe { libc::poll(&mut poll, 1, timeout) } {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "nothing from the local side for {:.0} s: the connection is taken as lost",
                        limit as f64 / 1000.0
                    ),
                ));
            }
            -1 => return Err(io::Error::last_os_error()),
            _ => {}
        }
    }
    // SAFETY: read(2) into `buf`, valid and writable for `buf.len()` bytes
    // for the duration of the call; the descriptor is open (borrowed).
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_hangs_up_when_its_writer_closes_even_with_data_unread() {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        assert!(!hung_up(reader.as_fd()), "open, empty");
        std::io::Write::write_all(&mut writer, b"unread\n").unwrap();
        assert!(!hung_up(reader.as_fd()), "open, data waiting");
        drop(writer);
        assert!(hung_up(reader.as_fd()), "writer closed, data unread");
    }

    #[test]
    fn a_read_fails_after_the_silence_limit_on_a_pipe_open_and_silent() {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        let limit = AtomicU64::new(50);
        let mut buf = [0u8; 16];
        let err = read_watched(reader.as_fd(), &mut buf, &limit).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("taken as lost"), "{err}");
        // Data waiting: read at once.
        std::io::Write::write_all(&mut writer, b"hb\n").unwrap();
        let n = read_watched(reader.as_fd(), &mut buf, &limit).unwrap();
        assert_eq!(&buf[..n], b"hb\n");
        // The writer gone: the end of the stream, not a timeout.
        drop(writer);
        assert_eq!(read_watched(reader.as_fd(), &mut buf, &limit).unwrap(), 0);
    }

    #[test]
    fn a_socket_hangs_up_when_its_peer_shuts_its_side() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        assert!(!hung_up(ours.as_fd()));
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(hung_up(ours.as_fd()));
    }
}

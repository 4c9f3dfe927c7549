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

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

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
    fn a_socket_hangs_up_when_its_peer_shuts_its_side() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        assert!(!hung_up(ours.as_fd()));
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(hung_up(ours.as_fd()));
    }
}

//! Starting the agent through the system `ssh`: `ssh [-F CONFIG] -T -e none
//! DEST 'REMOTE_KILN agent --stdio'`. The user's OpenSSH client does the
//! rest (config, keys, known hosts, ProxyJump); its messages go to our
//! stderr. The connection is ssh's stdin and stdout.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`Connection::finish`] waits for the remote side to end.
pub const FINISH_DEADLINE: Duration = Duration::from_secs(10);

/// Where and how to reach the agent.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// An ssh destination (`host`, `user@host`, a `Host` of the config).
    pub destination: String,
    /// `--ssh-config FILE`: ssh's `-F` (instead of `~/.ssh/config`).
    pub config: Option<PathBuf>,
    /// The remote command that runs kiln (`--remote-kiln`, default `kiln`),
    /// read by the remote's shell: it may set variables (`VAR=x kiln`).
    pub remote_kiln: String,
}

/// A running `ssh` and its two pipes.
pub struct Connection {
    /// ssh's stdout (a reader thread may borrow it: see
    /// [`super::session::Session::take_input`]).
    pub input: BufReader<Box<dyn Read + Send>>,
    pub output: Counted<BufWriter<ChildStdin>>,
    /// Declared after the pipes, so dropped after them: a connection
    /// dropped without [`Connection::finish`] (an error on the way) has
    /// closed ssh's input by the time its [`Reaped`] lets ssh end.
    child: Reaped,
}

/// The ssh client, waited for however its connection ends: by
/// [`Connection::finish`] or [`Connection::cut`], or, when the connection
/// is dropped while ssh still runs, by a thread that waits for it as
/// `finish` does (the agent ends at the end of its input) and ends it past
/// the deadline. Without it a dropped connection left ssh running, then a
/// zombie, for as long as the `kiln dev` that started it.
struct Reaped {
    /// `Some` until dropped.
    child: Option<Child>,
    /// How long a dropped connection's ssh is given to end by itself.
    deadline: Duration,
}

impl Reaped {
    fn get(&mut self) -> &mut Child {
        self.child.as_mut().expect("taken only when dropped")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            // Waited for already (or not ours to wait for).
            return;
        }
        let deadline = self.deadline;
        let reaper = std::thread::Builder::new()
            .name("kiln-ssh-reaper".to_string())
            .spawn(move || {
                let _ = wait_then_end(&mut child, deadline);
            });
        if let Err(e) = reaper {
            tracing::warn!("cannot start a thread to wait for a dropped ssh: {e}");
        }
    }
}

/// Waits for `child` up to `deadline`, then ends it (SIGTERM) and waits:
/// its exit code (`None` when it was killed or cannot be waited for), and
/// whether it had to be ended.
fn wait_then_end(child: &mut Child, deadline: Duration) -> (Option<i32>, bool) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return (status.code(), false),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return (None, false),
        }
    }
    // SAFETY: kill() on the pid of our own child, not yet reaped (we hold
    // its Child and its last try_wait said it runs), so the pid still
    // names that process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    (child.wait().ok().and_then(|s| s.code()), true)
}

impl SshTarget {
    /// Starts `ssh` with the agent as its remote command.
    pub fn connect(&self) -> Result<Connection, String> {
        if self.destination.is_empty() || self.destination.starts_with('-') {
            return Err(format!(
                "--on {:?}: expected an ssh destination (host, user@host)",
                self.destination
            ));
        }
        let mut command = Command::new("ssh");
        if let Some(config) = &self.config {
            if !config.is_file() {
                return Err(format!("--ssh-config {}: no such file", config.display()));
            }
            command.arg("-F").arg(config);
        }
        let remote = format!("{} agent --stdio", self.remote_kiln);
        let child = command
            // A silent network drop (no FIN) ends ssh within 3 to 4 s:
            // three unanswered keep-alives, one a second.
            .args(["-T", "-e", "none", "-o", "ServerAliveInterval=1"])
            .args(["-o", "ServerAliveCountMax=3"])
            .arg(&self.destination)
            .arg(&remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run ssh (the OpenSSH client): {e}"))?;
        Ok(Connection::of(child, FINISH_DEADLINE))
    }

    /// Why the connection ended before the agent answered, from ssh's exit.
    pub fn explain_exit(&self, code: Option<i32>) -> String {
        match code {
            Some(255) => format!(
                "ssh could not reach {} (its message is above)",
                self.destination
            ),
            Some(127) => format!(
                "{} has no `{}` to run (exit 127): install kiln there (`cargo install --locked \
                 --path harness` in a copy of this workspace) or pass --remote-kiln PATH",
                self.destination, self.remote_kiln
            ),
            Some(code) => format!(
                "`{} agent --stdio` on {} exited with code {code} before answering \
                 (its message, or its launcher's, is above)",
                self.remote_kiln, self.destination
            ),
            None => format!("ssh to {} was killed by a signal", self.destination),
        }
    }
}

impl Connection {
    /// The connection through `child`'s stdin and stdout (both piped);
    /// dropped without [`Connection::finish`], its child is given
    /// `deadline` to end.
    fn of(mut child: Child, deadline: Duration) -> Connection {
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both pipes were asked for")
        };
        Connection {
            input: BufReader::with_capacity(256 << 10, Box::new(stdout)),
            output: Counted {
                inner: BufWriter::with_capacity(256 << 10, stdin),
                bytes: 0,
            },
            child: Reaped {
                child: Some(child),
                deadline,
            },
        }
    }

    /// Closes our side and waits for ssh (the agent, and under a launcher
    /// its job step, end at the end of their input) up to
    /// [`FINISH_DEADLINE`], then ends ssh (SIGTERM); its exit code.
    pub fn finish(mut self) -> Option<i32> {
        let _ = self.output.flush();
        drop(self.output);
        let (code, ended) = wait_then_end(self.child.get(), FINISH_DEADLINE);
        if ended {
            eprintln!("kiln: the remote side did not end within {FINISH_DEADLINE:?}; ended ssh");
        }
        code
    }

    /// The ssh client's pid.
    pub fn pid(&self) -> u32 {
        self.child.child.as_ref().map_or(0, Child::id)
    }

    /// Cuts the connection now (SIGKILL to ssh), as a dropped network does.
    pub fn cut(&mut self) {
        let child = self.child.get();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A writer that counts the bytes written through it.
pub struct Counted<W> {
    inner: W,
    pub bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pid`'s state letter in `/proc/PID/stat` (`Z`: a zombie), `None`
    /// once it is gone (reaped).
    fn state_of(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    fn piped(script: &str) -> Child {
        Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh")
    }

    /// Waits up to 10 s for `pid` to be gone; its last state otherwise.
    fn gone_within(pid: u32) -> Result<(), Option<char>> {
        let start = Instant::now();
        loop {
            match state_of(pid) {
                None => return Ok(()),
                Some(state) if start.elapsed() > Duration::from_secs(10) => {
                    return Err(Some(state));
                }
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    #[test]
    fn a_dropped_connection_s_child_ends_at_the_end_of_its_input_and_is_reaped() {
        // Like the agent: runs until its input ends.
        let connection = Connection::of(piped("cat > /dev/null"), Duration::from_secs(60));
        let pid = connection.pid();
        assert_eq!(state_of(pid).map(|s| s != 'Z'), Some(true), "it runs");
        drop(connection);
        assert_eq!(gone_within(pid), Ok(()), "still there after the drop");
    }

    #[test]
    fn a_dropped_connection_s_child_that_ignores_its_input_ending_is_ended_past_the_deadline() {
        let connection = Connection::of(piped("exec sleep 300"), Duration::from_millis(200));
        let pid = connection.pid();
        drop(connection);
        assert_eq!(gone_within(pid), Ok(()), "still there after the drop");
    }

    #[test]
    fn finish_and_cut_wait_for_the_child_and_leave_nothing_to_reap() {
        let connection = Connection::of(piped("cat > /dev/null; exit 3"), FINISH_DEADLINE);
        let pid = connection.pid();
        assert_eq!(connection.finish(), Some(3));
        assert_eq!(state_of(pid), None);
        let mut connection = Connection::of(piped("exec sleep 300"), FINISH_DEADLINE);
        let pid = connection.pid();
        connection.cut();
        assert_eq!(state_of(pid), None);
        drop(connection);
    }
}

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
    child: Child,
    /// ssh's stdout (a reader thread may borrow it: see
    /// [`super::session::Session::take_input`]).
    pub input: BufReader<Box<dyn Read + Send>>,
    pub output: Counted<BufWriter<ChildStdin>>,
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
        let mut child = command
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
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both pipes were asked for")
        };
        Ok(Connection {
            child,
            input: BufReader::with_capacity(256 << 10, Box::new(stdout)),
            output: Counted {
                inner: BufWriter::with_capacity(256 << 10, stdin),
                bytes: 0,
            },
        })
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
    /// Closes our side and waits for ssh (the agent, and under a launcher
    /// its job step, end at the end of their input) up to
    /// [`FINISH_DEADLINE`], then ends ssh (SIGTERM); its exit code.
    pub fn finish(mut self) -> Option<i32> {
        let _ = self.output.flush();
        drop(self.output);
        let start = Instant::now();
        while start.elapsed() < FINISH_DEADLINE {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        }
        eprintln!("kiln: the remote side did not end within {FINISH_DEADLINE:?}; ending ssh");
        // SAFETY: kill() on the pid of our own child, not yet reaped (we
        // hold its Child and did not wait on it to the end), so the pid
        // still names that process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// The ssh client's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Cuts the connection now (SIGKILL to ssh), as a dropped network does.
    pub fn cut(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

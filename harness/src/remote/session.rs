//! The local side of a connection to `kiln agent`: the version handshake,
//! syncing the workspace into the agent's mirror, running a command there.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::manifest::{collect, workspace_id};
use super::protocol::{self, Message, PROTOCOL, ReadError, receive, send};
use super::ssh::{Connection, SshTarget};
use super::version;

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Files in the workspace's manifest.
    pub files: usize,
    /// Their total size.
    pub total_bytes: u64,
    /// The paths whose contents were sent (a content sent once for several
    /// paths is listed under the first).
    pub sent_paths: Vec<String>,
    /// The contents sent, bytes.
    pub sent_bytes: u64,
    /// Files the agent wrote into the mirror, and deleted from it.
    pub written: usize,
    pub deleted: usize,
}

/// An open connection that passed the handshake, with the mirror open.
pub struct Session {
    target: SshTarget,
    connection: Connection,
    /// The mirror's directory on the remote.
    pub mirror: String,
    cut_after: Option<u64>,
}

impl Session {
    /// Starts the agent, checks its version, opens the mirror of the
    /// workspace at `root`.
    pub fn connect(target: &SshTarget, root: &Path) -> Result<Session, String> {
        let mut connection = target.connect()?;
        let own = version::own();
        let remote = match hello(&mut connection) {
            Ok(version) => version,
            Err(None) => return Err(target.explain_exit(connection.finish())),
            Err(Some(e)) => {
                connection.cut();
                return Err(e);
            }
        };
        if remote != own {
            let _ = connection.finish();
            let config = target.config.as_ref().map(|c| c.display().to_string());
            return Err(version::mismatch(
                &target.destination,
                &remote,
                config.as_deref(),
            ));
        }
        let mut session = Session {
            target: target.clone(),
            connection,
            mirror: String::new(),
            cut_after: None,
        };
        session.send(&Message::Hello {
            version: own,
            protocol: PROTOCOL,
        })?;
        session.send(&Message::Open {
            workspace: workspace_id(root),
        })?;
        match session.receive()? {
            Message::Ready { mirror } => session.mirror = mirror,
            other => return Err(session.unexpected(other)),
        }
        Ok(session)
    }

    /// Test-only: cut the connection (SIGKILL to ssh, as a dropped network
    /// does) once `bytes` more bytes of file contents were sent, so that a
    /// test can check what a cut transfer leaves in the mirror.
    pub fn cut_after_for_test(&mut self, bytes: u64) {
        self.cut_after = Some(bytes);
    }

    /// Bytes written to the connection so far (messages and contents).
    pub fn wire_bytes(&self) -> u64 {
        self.connection.output.bytes
    }

    /// Makes the mirror equal the workspace at `root`: sends the manifest,
    /// then the contents the agent lacks, then commits.
    pub fn sync(&mut self, root: &Path) -> Result<SyncReport, String> {
        let files = collect(root)?;
        let mut report = SyncReport {
            files: files.len(),
            total_bytes: files.iter().map(|f| f.len).sum(),
            ..SyncReport::default()
        };
        let by_hash: BTreeMap<&str, &protocol::FileEntry> =
            files.iter().rev().map(|f| (f.hash.as_str(), f)).collect();
        self.send(&Message::Manifest {
            files: files.clone(),
        })?;
        let hashes = match self.receive()? {
            Message::Wanted { hashes } => hashes,
            other => return Err(self.unexpected(other)),
        };
        for hash in &hashes {
            let Some(file) = by_hash.get(hash.as_str()) else {
                return Err(format!("the agent asked for {hash}, which no file has"));
            };
            self.send_file(root, file)?;
            report.sent_paths.push(file.path.clone());
            report.sent_bytes += file.len;
        }
        self.send(&Message::Commit)?;
        match self.receive()? {
            Message::Synced { written, deleted } => {
                report.written = written;
                report.deleted = deleted;
                Ok(report)
            }
            other => Err(self.unexpected(other)),
        }
    }

    fn send_file(&mut self, root: &Path, file: &protocol::FileEntry) -> Result<(), String> {
        let path = root.join(&file.path);
        let mut contents = Vec::with_capacity(file.len as usize);
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut contents))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if contents.len() as u64 != file.len {
            return Err(format!(
                "{} changed while it was sent; sync again",
                path.display()
            ));
        }
        send(
            &mut self.connection.output,
            &Message::Blob {
                hash: file.hash.clone(),
                len: file.len,
            },
        )
        .map_err(|e| self.lost(e))?;
        let body: &[u8] = match self.cut_after {
            Some(left) if left < file.len => &contents[..left as usize],
            _ => &contents,
        };
        self.connection
            .output
            .write_all(body)
            .map_err(|e| self.lost(e))?;
        if let Some(left) = self.cut_after.as_mut() {
            if *left < file.len {
                let _ = self.connection.output.flush();
                self.connection.cut();
                return Err(format!("cut the connection in {} (test)", file.path));
            }
            *left -= file.len;
        }
        Ok(())
    }

    /// Runs `kiln backends NAMES` in the mirror; each line it prints goes
    /// to `line(stream, text)`; returns its exit code.
    pub fn backends(
        &mut self,
        names: &[String],
        mut line: impl FnMut(&str, &str),
    ) -> Result<i32, String> {
        self.send(&Message::Backends {
            names: names.to_vec(),
        })?;
        loop {
            match self.receive()? {
                Message::Output { stream, line: text } => line(&stream, &text),
                Message::Exit { code } => return Ok(code),
                other => return Err(self.unexpected(other)),
            }
        }
    }

    /// Ends the session: the agent sees the end of its input and exits.
    pub fn close(self) {
        let _ = self.connection.finish();
    }

    fn send(&mut self, message: &Message) -> Result<(), String> {
        send(&mut self.connection.output, message)
            .and_then(|()| self.connection.output.flush())
            .map_err(|e| self.lost(e))
    }

    fn receive(&mut self) -> Result<Message, String> {
        receive(&mut self.connection.input).map_err(|e| match e {
            ReadError::Closed => format!(
                "the connection to {} closed (the agent's message, if any, is above)",
                self.target.destination
            ),
            other => format!("from the agent on {}: {other}", self.target.destination),
        })
    }

    fn lost(&self, e: io::Error) -> String {
        format!(
            "the connection to {} was lost: {e}",
            self.target.destination
        )
    }

    fn unexpected(&self, message: Message) -> String {
        match message {
            Message::Error { message } | Message::Refused { reason: message } => format!(
                "the agent on {} refused: {message}",
                self.target.destination
            ),
            other => format!(
                "the agent on {} answered out of turn: {other:?}",
                self.target.destination
            ),
        }
    }
}

/// Reads the agent's hello; lines before it that are not messages (a
/// login script's output) are shown on stderr. `Err(None)`: the stream
/// ended first.
fn hello(connection: &mut Connection) -> Result<String, Option<String>> {
    loop {
        let line = match protocol::read_line(&mut connection.input) {
            Ok(line) => line,
            Err(ReadError::Closed) => return Err(None),
            Err(e) => return Err(Some(format!("reading the agent's hello: {e}"))),
        };
        match protocol::parse(&line) {
            Ok(Message::Hello { version, .. }) => return Ok(version),
            Ok(other) => {
                return Err(Some(format!("the agent spoke before its hello: {other:?}")));
            }
            Err(_) => eprintln!("(remote) {line}"),
        }
    }
}

//! The local side of a connection to `kiln agent`: the version handshake,
//! syncing the workspace into the agent's mirror, running a command there.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use crossbeam_channel::Receiver;

use super::files;
use super::manifest::{collect, collect_since, workspace_id};
use super::protocol::{self, Message, PROTOCOL, ReadError, receive, send};
use super::ssh::{Connection, SshTarget};
use super::version;

/// How long a request answered through the reader thread waits for its
/// answer (a commit renames the saved files into place: quick).
pub const REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// The manifest last synced (what the mirror holds).
    synced: Option<Vec<protocol::FileEntry>>,
    /// While a reader thread holds the input: the messages it hands on.
    replies: Option<Receiver<Message>>,
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
            synced: None,
            replies: None,
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
        let request = Message::Manifest {
            files: files.clone(),
        };
        self.transfer(root, files, request)
    }

    /// Like [`Session::sync`] after a first sync: sends only the entries
    /// that changed since (a patch), then the contents the agent lacks.
    /// `None` when nothing changed (nothing is sent).
    pub fn sync_changes(&mut self, root: &Path) -> Result<Option<SyncReport>, String> {
        let Some(before) = self.synced.as_ref() else {
            return self.sync(root).map(Some);
        };
        let files = collect_since(root, before)?;
        let old: BTreeMap<&str, &protocol::FileEntry> =
            before.iter().map(|f| (f.path.as_str(), f)).collect();
        let new: BTreeMap<&str, &protocol::FileEntry> =
            files.iter().map(|f| (f.path.as_str(), f)).collect();
        let changed: Vec<protocol::FileEntry> = files
            .iter()
            .filter(|f| old.get(f.path.as_str()) != Some(f))
            .cloned()
            .collect();
        let deleted: Vec<String> = before
            .iter()
            .filter(|f| !new.contains_key(f.path.as_str()))
            .map(|f| f.path.clone())
            .collect();
        if changed.is_empty() && deleted.is_empty() {
            return Ok(None);
        }
        let request = Message::Patch { changed, deleted };
        self.transfer(root, files, request).map(Some)
    }

    /// Sends `request` (a manifest or a patch leading to `files`), then the
    /// contents the agent asks for, then commits.
    fn transfer(
        &mut self,
        root: &Path,
        files: Vec<protocol::FileEntry>,
        request: Message,
    ) -> Result<SyncReport, String> {
        let mut report = SyncReport {
            files: files.len(),
            total_bytes: files.iter().map(|f| f.len).sum(),
            ..SyncReport::default()
        };
        let by_hash: BTreeMap<&str, &protocol::FileEntry> =
            files.iter().rev().map(|f| (f.hash.as_str(), f)).collect();
        self.send(&request)?;
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
                self.synced = Some(files);
                Ok(report)
            }
            other => Err(self.unexpected(other)),
        }
    }

    /// Puts the local file `path` into the remote session's folder as
    /// `name`; returns its path there.
    pub fn put(&mut self, path: &Path, name: &str) -> Result<String, String> {
        let (hash, len) =
            files::hash_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.send(&Message::Put {
            name: name.to_string(),
            hash,
            len,
        })?;
        files::copy_body(&mut self.connection.output, path, len)
            .map_err(|e| format!("sending {}: {e}", path.display()))?;
        match self.receive()? {
            Message::Stored { path } => Ok(path),
            other => Err(self.unexpected(other)),
        }
    }

    /// Fetches the mirror's file `rel` into `to`, showing progress under
    /// `progress` if given. Needs the input (no reader thread).
    pub fn fetch(&mut self, rel: &str, to: &Path, progress: Option<&str>) -> Result<u64, String> {
        self.send(&Message::Fetch {
            path: rel.to_string(),
        })?;
        match self.receive()? {
            Message::Blob { hash, len } => {
                files::receive_to(&mut self.connection.input, &hash, len, to, progress)?;
                Ok(len)
            }
            other => Err(self.unexpected(other)),
        }
    }

    /// The plain files in the mirror's folder `rel`.
    pub fn list(&mut self, rel: &str) -> Result<Vec<String>, String> {
        self.send(&Message::List {
            dir: rel.to_string(),
        })?;
        match self.receive()? {
            Message::Listing { files } => Ok(files),
            other => Err(self.unexpected(other)),
        }
    }

    /// Hands the input to a reader thread: from now on [`Session`]'s
    /// requests take their answers from `replies` (what that thread hands
    /// on), until [`Session::restore_input`].
    pub fn take_input(&mut self, replies: Receiver<Message>) -> BufReader<Box<dyn Read + Send>> {
        self.replies = Some(replies);
        std::mem::replace(
            &mut self.connection.input,
            BufReader::new(Box::new(io::empty())),
        )
    }

    /// Takes the input back from the reader thread.
    pub fn restore_input(&mut self, input: BufReader<Box<dyn Read + Send>>) {
        self.replies = None;
        self.connection.input = input;
    }

    /// Sends one message (for requests answered through the reader thread).
    pub fn post(&mut self, message: &Message) -> Result<(), String> {
        self.send(message)
    }

    /// Cuts the connection now (SIGKILL to ssh).
    pub fn cut(&mut self) {
        self.connection.cut();
    }

    /// The pid of the ssh client.
    pub fn ssh_pid(&self) -> u32 {
        self.connection.pid()
    }

    pub fn destination(&self) -> &str {
        &self.target.destination
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
            match self.receive_any()? {
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

    /// The next answer: from the reader thread while it holds the input
    /// (waiting at most [`REPLY_WAIT`]: the caller may hold the session's
    /// lock, and Ctrl-C must get through). Without a reader thread, the log
    /// lines and `kiln ctl` answers a session sent late are skipped.
    pub fn receive(&mut self) -> Result<Message, String> {
        if let Some(replies) = &self.replies {
            return replies.recv_timeout(REPLY_WAIT).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => format!(
                    "the agent on {} did not answer within {} s",
                    self.target.destination,
                    REPLY_WAIT.as_secs()
                ),
                crossbeam_channel::RecvTimeoutError::Disconnected => format!(
                    "the connection to {} closed (the agent's message, if any, is above)",
                    self.target.destination
                ),
            });
        }
        loop {
            match self.receive_any()? {
                Message::Output { .. } | Message::CtlAnswer { .. } => continue,
                message => return Ok(message),
            }
        }
    }

    /// The next message on the input, whatever it is.
    fn receive_any(&mut self) -> Result<Message, String> {
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

    pub fn unexpected(&self, message: Message) -> String {
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

//! The messages of a remote connection and their framing: one JSON object
//! per line; a [`Message::Blob`] line is followed by exactly `len` raw
//! bytes (a file's contents), then the next line.

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped when a message changes shape. The version handshake already
/// refuses another build; this names the protocol in the hello.
pub const PROTOCOL: u32 = 3;

/// How often the local side of a dev session sends [`Message::Heartbeat`].
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the agent of a dev session waits for any input before it takes
/// the connection as lost (a silent network drop ends no stream).
pub const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest line read (a manifest of tens of thousands of files fits).
const MAX_LINE: u64 = 64 << 20;

/// One file of the workspace: its path (relative, `/`-separated), content
/// hash, size, modification time and executable bit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// xxh3-64 of the contents, 16 hex digits.
    pub hash: String,
    pub len: u64,
    /// Modification time, nanoseconds since the Unix epoch (kept in the
    /// mirror, so that cargo there sees unchanged files as unchanged).
    pub mtime_ns: u64,
    pub executable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    /// Both sides, first: who is speaking.
    Hello { version: String, protocol: u32 },
    /// Local: the workspace whose mirror to use (an id, see
    /// [`super::manifest::workspace_id`]).
    Open { workspace: String },
    /// Agent: the mirror is open at this directory.
    Ready { mirror: String },
    /// Agent: the request is refused (another version, a bad workspace id).
    Refused { reason: String },
    /// Local: every file of the workspace.
    Manifest { files: Vec<FileEntry> },
    /// Agent: the contents it lacks, by hash.
    Wanted { hashes: Vec<String> },
    /// Local: `len` bytes follow this line, whose xxh3 is `hash`.
    Blob { hash: String, len: u64 },
    /// Local: every wanted blob was sent; make the mirror equal the manifest.
    Commit,
    /// Agent: the mirror equals the manifest.
    Synced { written: usize, deleted: usize },
    /// Local: run `kiln backends NAMES` in the mirror.
    Backends { names: Vec<String> },
    /// Agent: a line the command printed (`stream`: stdout or stderr).
    Output { stream: String, line: String },
    /// Agent: the command exited with this code.
    Exit { code: i32 },
    /// Agent: the request failed.
    Error { message: String },
    /// Local: the changes since the last sync (the agent completes the
    /// manifest from its own record): answered like a manifest.
    Patch {
        changed: Vec<FileEntry>,
        deleted: Vec<String>,
    },
    /// Local: `len` bytes follow, whose xxh3 is `hash`: a file for the
    /// session directory (`session/NAME`), written atomically.
    Put {
        name: String,
        hash: String,
        len: u64,
    },
    /// Agent: the file was put.
    Stored { path: String },
    /// Local: run `kiln dev ARGS` in the mirror (or reattach to the one
    /// running there), detached from this connection; `grace_s`: how long
    /// it outlives a lost connection; `env`: variables for it (RUST_LOG).
    Dev {
        args: Vec<String>,
        grace_s: u64,
        env: Vec<(String, String)>,
        fresh: bool,
        /// `--state FILE` was put as `session/state.sent.kiln`; its
        /// modification time here (ms after the epoch): it is restored
        /// unless the remote holds a newer `state.kiln`.
        #[serde(default)]
        state_sent: Option<u64>,
    },
    /// Agent: the session runs (`reattached`: it was running already).
    DevStarted {
        pid: u32,
        reattached: bool,
        state: String,
        log: String,
        /// The Slurm job the agent runs in (`SLURM_JOB_ID`), if any: a
        /// reattach goes through `srun --jobid=ID --overlap`.
        job: Option<String>,
        /// What of the request the agent did not do, and why.
        #[serde(default)]
        notes: Vec<String>,
    },
    /// Local: one `kiln ctl` command (the control socket's JSON line) for
    /// the remote session, answered by [`Message::CtlAnswer`]s.
    Ctl { id: u64, line: String },
    /// Agent: one answer line of the remote session to command `id`.
    CtlAnswer { id: u64, line: String },
    /// Local: end the remote session as Ctrl-C does.
    Stop,
    /// Local, every [`HEARTBEAT`] during a dev session: the connection is
    /// alive (an agent that hears nothing for [`SILENCE_LIMIT`] takes it as
    /// lost, see [`super::hangup::WatchedStdin`]).
    Heartbeat,
    /// Agent: the remote session ended; its state file, if it saved one;
    /// its exit code, when this agent started it (a reattached agent
    /// cannot collect it).
    DevEnded {
        state: Option<String>,
        code: Option<i32>,
    },
    /// Local: send this file of the mirror (a relative path).
    Fetch { path: String },
    /// Local: the plain files in this folder of the mirror.
    List { dir: String },
    /// Agent: their names.
    Listing { files: Vec<String> },
}

/// Writes one message line.
pub fn send(out: &mut impl Write, message: &Message) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

/// What came off the stream instead of a message.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("not a message: {line:?} ({why})")]
    NotAMessage { line: String, why: String },
}

/// Reads the next line as a message.
pub fn receive(input: &mut impl BufRead) -> Result<Message, ReadError> {
    let line = read_line(input)?;
    parse(&line)
}

/// Parses one line as a message.
pub fn parse(line: &str) -> Result<Message, ReadError> {
    serde_json::from_str(line).map_err(|e| ReadError::NotAMessage {
        line: line.chars().take(200).collect(),
        why: e.to_string(),
    })
}

/// Reads one line (without its newline); [`ReadError::Closed`] at the end.
pub fn read_line(input: &mut impl BufRead) -> Result<String, ReadError> {
    let mut bytes = Vec::new();
    let n = input.take(MAX_LINE + 1).read_until(b'\n', &mut bytes)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if bytes.last() != Some(&b'\n') {
        return Err(if n as u64 > MAX_LINE {
            ReadError::TooLong
        } else {
            ReadError::Closed
        });
    }
    bytes.pop();
    String::from_utf8(bytes).map_err(|e| ReadError::NotAMessage {
        line: String::from_utf8_lossy(e.as_bytes())
            .chars()
            .take(200)
            .collect(),
        why: "not UTF-8".to_string(),
    })
}

/// Copies exactly `len` bytes of a blob's body from `input` to `out`,
/// returning their xxh3; an early end of the stream is an error (the
/// connection was cut).
pub fn receive_body(input: &mut impl Read, len: u64, out: &mut impl Write) -> io::Result<u64> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut left = len;
    let mut buf = vec![0u8; 256 << 10];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the connection closed {left} bytes before the end of a file"),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(hasher.digest())
}

/// A hash as it travels: 16 hex digits.
pub fn hash_text(hash: u64) -> String {
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_line_and_its_body_round_trip() {
        let mut wire = Vec::new();
        let body = b"fn main() {}\n";
        let hash = hash_text(xxhash_rust::xxh3::xxh3_64(body));
        let blob = Message::Blob {
            hash: hash.clone(),
            len: body.len() as u64,
        };
        send(&mut wire, &blob).unwrap();
        wire.extend_from_slice(body);
        send(&mut wire, &Message::Commit).unwrap();
        let mut input = io::Cursor::new(wire);
        assert_eq!(receive(&mut input).unwrap(), blob);
        let mut got = Vec::new();
        let h = receive_body(&mut input, body.len() as u64, &mut got).unwrap();
        assert_eq!((hash_text(h), got.as_slice()), (hash, &body[..]));
        assert_eq!(receive(&mut input).unwrap(), Message::Commit);
        assert!(matches!(receive(&mut input), Err(ReadError::Closed)));
    }

    #[test]
    fn a_cut_body_is_an_error_and_a_cut_line_is_closed() {
        let mut input = io::Cursor::new(b"abc".to_vec());
        let err = receive_body(&mut input, 10, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut input = io::Cursor::new(b"{\"t\":\"com".to_vec());
        assert!(matches!(receive(&mut input), Err(ReadError::Closed)));
        let mut input = io::Cursor::new(b"hello there\n".to_vec());
        assert!(matches!(
            receive(&mut input),
            Err(ReadError::NotAMessage { .. })
        ));
    }
}

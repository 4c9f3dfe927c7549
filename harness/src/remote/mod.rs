//! Running kiln's work on another machine over SSH (`kiln backends --on
//! DEST`; `kiln dev --on DEST` is the next step).
//!
//! The local side starts the system `ssh` (the user's OpenSSH client, their
//! `~/.ssh/config`, keys, known hosts, ProxyJump) with the remote command
//! `kiln agent --stdio`; nothing of kiln listens on any port. One stream
//! (ssh's stdin and stdout) carries JSON lines, a few of which announce a
//! length-prefixed run of raw bytes (a file's contents).
//!
//! - [`protocol`]: the messages and how they are framed on the stream.
//! - [`version`]: the version both sides must share (crate version and the
//!   build's ABI fingerprint), checked first.
//! - [`manifest`]: the local workspace's file set with content hashes.
//! - [`mirror`]: the agent's persistent copy of the workspace, written
//!   content-addressed and atomically (temporary name, then rename).
//! - [`agent`]: `kiln agent --stdio`, the remote side.
//! - [`ssh`]: starting `ssh DEST kiln agent --stdio`.
//! - [`launcher`]: `--launcher "srun ..."`: the agent as a Slurm job step.
//! - [`hangup`]: the agent notices that the local side left mid-command.
//! - [`session`]: the local side of a connection: handshake, sync, run.
//! - [`backends`]: `kiln backends --on DEST`.

pub mod agent;
pub mod backends;
pub mod hangup;
pub mod launcher;
pub mod manifest;
pub mod mirror;
pub mod protocol;
pub mod session;
pub mod ssh;
pub mod version;

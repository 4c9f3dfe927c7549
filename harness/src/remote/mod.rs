//! Running kiln's work on another machine over SSH (`kiln backends --on
//! DEST`, `kiln dev --on DEST`).
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
//! - [`agent_dev`]: the agent hosting a `kiln dev` session in the mirror,
//!   detached from the connection, kept for a grace period when it drops.
//! - [`files`]: whole files put into a session's folder or fetched back.
//! - [`dev`]: `kiln dev --on DEST`, the local side: watcher, log, `kiln
//!   ctl` and keys relayed, history and state fetched at the end.
//! - [`ssh`]: starting `ssh DEST kiln agent --stdio`.
//! - [`launcher`]: `--launcher "srun ..."`: the agent as a Slurm job step.
//! - [`hangup`]: the agent notices that the local side left mid-command.
//! - [`session`]: the local side of a connection: handshake, sync, run.
//! - [`backends`]: `kiln backends --on DEST`.

pub mod agent;
pub mod agent_dev;
mod agent_io;
pub mod backends;
pub mod dev;
pub mod files;
pub mod hangup;
pub mod launcher;
pub mod manifest;
pub mod mirror;
pub mod protocol;
pub mod session;
pub mod ssh;
pub mod version;

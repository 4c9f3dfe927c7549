//! The control socket of a `kiln dev` session: where it lives, the lock
//! that keeps one session per workspace, and the server thread that takes
//! one command per connection and hands it to the dev loop.
//!
//! - Path: `target/kiln/dev.sock` in the workspace. A Unix socket path
//!   must fit `sun_path` (108 bytes with its NUL); a longer one falls back
//!   to `$XDG_RUNTIME_DIR` (else `/tmp`) as `kiln-HASH.sock`, HASH naming
//!   the workspace, which client and server both compute.
//! - One session per workspace: `target/kiln/dev.lock` is `flock`ed for
//!   the session's life (the kernel drops the lock when the process dies,
//!   however it dies). A socket file found while holding the lock is stale
//!   (its session is gone) and is replaced.
//! - Only the session's user: the socket is `0600`, and every connection's
//!   peer uid is checked with `SO_PEERCRED` (root ignores file modes).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::protocol::{Answer, Command};
use super::request::{Origin, Request};
use crate::events::{self, emit};

/// The longest socket path `sun_path` holds (108 bytes with the NUL).
const SUN_PATH_MAX: usize = 107;
/// The longest command line a client may send.
const MAX_LINE: u64 = 64 * 1024;

/// Where a workspace's session keeps its socket and lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPaths {
    pub socket: PathBuf,
    pub lock: PathBuf,
    /// Set when the socket is not under `target/kiln/` (path too long).
    pub fallback: Option<String>,
}

/// The socket and lock paths of `workspace`'s session.
pub fn session_paths(workspace: &Path) -> SessionPaths {
    session_paths_in(workspace, &crate::workspace::target_dir(workspace))
}

/// [`session_paths`] for a session whose target directory is `target`
/// (`kiln agent` reaches the session it started in a mirror this way).
pub fn session_paths_in(workspace: &Path, target: &Path) -> SessionPaths {
    let dir = target.join("kiln");
    let lock = dir.join("dev.lock");
    let socket = dir.join("dev.sock");
    if socket.as_os_str().len() <= SUN_PATH_MAX {
        return SessionPaths {
            socket,
            lock,
            fallback: None,
        };
    }
    let hash = xxhash_rust::xxh3::xxh3_64(workspace.as_os_str().as_encoded_bytes());
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let short = base.join(format!("kiln-{hash:016x}.sock"));
    SessionPaths {
        fallback: Some(format!(
            "{} is {} bytes, longer than a Unix socket path may be ({SUN_PATH_MAX}); the socket is {}",
            socket.display(),
            socket.as_os_str().len(),
            short.display()
        )),
        socket: short,
        lock,
    }
}

/// The running server; dropping it stops the thread, removes the socket
/// and releases the lock.
pub struct ControlServer {
    paths: SessionPaths,
    /// The listening socket (the accept thread owns another handle to
    /// it): shut down to wake the accept, even when the socket's file is
    /// gone (`cargo clean`, `rm -r target/kiln` during the session) and
    /// nothing could connect to wake it.
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _lock: File,
}

/// Takes the workspace's lock (refusing when another session holds it),
/// replaces a stale socket, binds, and serves connections on a thread.
pub fn serve(workspace: &Path, requests: Sender<Request>) -> Result<ControlServer, String> {
    let paths = session_paths(workspace);
    let lock = take_lock(&paths)?;
    if let Some(note) = &paths.fallback {
        tracing::info!("control socket: {note}");
    }
    if std::fs::symlink_metadata(&paths.socket).is_ok() {
        // We hold the lock: no live session owns this file.
        std::fs::remove_file(&paths.socket).map_err(|e| {
            format!(
                "cannot replace the stale control socket {}: {e}",
                paths.socket.display()
            )
        })?;
        emit!(
            tracing::Level::INFO,
            events::StaleSocketReplaced {},
            "replaced the control socket {} left by a session that did not exit cleanly",
            paths.socket.display()
        );
    }
    let listener = UnixListener::bind(&paths.socket).map_err(|e| {
        format!(
            "cannot create the control socket {}: {e}",
            paths.socket.display()
        )
    })?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", paths.socket.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let accepting = listener
        .try_clone()
        .map_err(|e| format!("cannot share the control socket: {e}"))?;
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no
    // memory of ours.
    let owner = unsafe { libc::geteuid() };
    let thread = std::thread::Builder::new()
        .name("kiln-control".into())
        .spawn(move || accept_loop(accepting, requests, flag, owner))
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    Ok(ControlServer {
        paths,
        listener,
        stop,
        thread: Some(thread),
        _lock: lock,
    })
}

impl ControlServer {
    pub fn socket(&self) -> &Path {
        &self.paths.socket
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept (shutting a listening socket down makes
        // its accept fail at once, EINVAL); it sees the flag and returns.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.paths.socket);
    }
}

fn take_lock(paths: &SessionPaths) -> Result<File, String> {
    if let Some(dir) = paths.lock.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.lock)
        .map_err(|e| format!("cannot open {}: {e}", paths.lock.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let who = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            return Err(format!(
                "another kiln dev{who} already serves this workspace (it holds {}); \
                 drive it with `kiln ctl status`, or stop it before starting another",
                paths.lock.display()
            ));
        }
        Err(e) => return Err(format!("cannot lock {}: {e}", paths.lock.display())),
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", paths.lock.display()))?;
    Ok(file)
}

fn accept_loop(
    listener: UnixListener,
    requests: Sender<Request>,
    stop: Arc<AtomicBool>,
    owner: u32,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let requests = requests.clone();
        let spawned = std::thread::Builder::new()
            .name("kiln-control-client".into())
            .spawn(move || {
                if let Err(e) = serve_client(stream, &requests, owner) {
                    tracing::debug!("control client: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot serve a control client: {e}");
        }
    }
}

fn send(stream: &mut UnixStream, answer: &Answer) -> std::io::Result<()> {
    stream.write_all(answer.to_line().as_bytes())
}

/// One connection: check the peer, read one command, relay its answers.
fn serve_client(
    mut stream: UnixStream,
    requests: &Sender<Request>,
    owner: u32,
) -> std::io::Result<()> {
    let peer = rustix::net::sockopt::socket_peercred(&stream)?;
    let uid = peer.uid.as_raw();
    if uid != owner {
        emit!(
            tracing::Level::WARN,
            events::ControlRefused {},
            "refused a control connection from uid {uid} (pid {}): this session belongs to uid {owner}",
            peer.pid.as_raw_nonzero()
        );
        return send(
            &mut stream,
            &Answer::refused(format!(
                "this kiln dev session belongs to uid {owner}; uid {uid} may not drive it \
                 (checked with SO_PEERCRED)"
            )),
        );
    }
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let command = match Command::from_line(line.trim()) {
        Ok(c) => c,
        Err(why) => {
            emit!(
                tracing::Level::WARN,
                events::ControlRefused {},
                "kiln ctl: {why}"
            );
            return send(&mut stream, &Answer::refused(why));
        }
    };
    let (reply, answers) = crossbeam_channel::unbounded();
    let request = Request {
        command,
        origin: Origin::Socket,
        reply: Some(reply),
    };
    if requests.send(request).is_err() {
        return send(&mut stream, &Answer::refused("the session is ending"));
    }
    loop {
        match answers.recv() {
            Ok(answer) => {
                send(&mut stream, &answer)?;
                if answer.is_final() {
                    return Ok(());
                }
            }
            Err(_) => {
                return send(
                    &mut stream,
                    &Answer::refused("the session ended before applying the command"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_workspace_path_falls_back_to_a_short_socket() {
        let short = session_paths(Path::new("/w"));
        let expected = crate::workspace::target_dir(Path::new("/w")).join("kiln/dev.sock");
        if expected.as_os_str().len() <= SUN_PATH_MAX {
            assert_eq!(short.socket, expected);
            assert!(short.fallback.is_none());
        }
        let deep = format!("/{}", "d".repeat(120));
        let long = session_paths(Path::new(&deep));
        assert!(long.socket.as_os_str().len() <= SUN_PATH_MAX, "{long:?}");
        assert!(
            long.lock.starts_with(&deep),
            "the lock stays in the workspace"
        );
        assert!(
            long.fallback
                .unwrap()
                .contains("longer than a Unix socket path")
        );
        // Client and server compute the same path.
        assert_eq!(session_paths(Path::new(&deep)).socket, long.socket);
    }

    #[test]
    fn a_session_whose_socket_file_was_deleted_still_stops() {
        let workspace =
            std::env::temp_dir().join(format!("kiln-control-deleted-{}", std::process::id()));
        std::fs::create_dir_all(&workspace).unwrap();
        let (requests, _unused) = crossbeam_channel::unbounded();
        let server = serve(&workspace, requests).unwrap();
        // `cargo clean` or `rm -r target/kiln` during the session: nothing
        // can connect to the socket to wake its accept any more.
        std::fs::remove_file(server.socket()).unwrap();
        let (dropped, done) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            drop(server);
            let _ = dropped.send(());
        });
        // Generous: a drop that works returns at once; one that waits for a
        // connection never returns.
        assert!(
            done.recv_timeout(Duration::from_secs(30)).is_ok(),
            "dropping the control server hung: its accept was never woken"
        );
        let _ = std::fs::remove_dir_all(&workspace);
    }
}

//! A real OpenSSH server for the remote tests, on 127.0.0.1 only, on a
//! free port, with a host key and a client key made for the run in a
//! temporary directory (nothing written under the real `~/.ssh`), and the
//! ssh config file a client uses to reach it as `kiln-test`.
//!
//! [`Sshd::start`] returns `None` when `/usr/sbin/sshd` is not installed,
//! unless `KILN_REQUIRE_SSHD` is set (CI sets it): then it panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// The `Host` of the generated client config.
pub const HOST: &str = "kiln-test";

pub struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl Sshd {
    pub fn start() -> Option<Sshd> {
        if !Path::new(SSHD).exists() {
            assert!(
                std::env::var_os("KILN_REQUIRE_SSHD").is_none(),
                "KILN_REQUIRE_SSHD is set but {SSHD} is missing \
                 (apt-get install openssh-server; mkdir -p /run/sshd)"
            );
            eprintln!("skipped: no {SSHD} (apt-get install openssh-server)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-sshd-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("id"));
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).expect("authorized_keys");
        if is_root() {
            // sshd's privilege separation directory (as .ci/run makes it).
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        for _attempt in 0..5 {
            let port = free_port();
            let config = d.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
                     AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\n\
                     PubkeyAuthentication yes\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                     UsePAM no\nPidFile {dir}/sshd.pid\nLogLevel ERROR\n",
                    dir = d.display()
                ),
            )
            .expect("sshd_config");
            let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
            let mut fields = host_pub.split_whitespace();
            let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
            std::fs::write(
                d.join("known_hosts"),
                format!("[127.0.0.1]:{port} {kind} {key}\n"),
            )
            .expect("known_hosts");
            std::fs::write(
                d.join("ssh_config"),
                format!(
                    "Host {HOST}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
                     IdentityFile {dir}/id\n  IdentitiesOnly yes\n  \
                     UserKnownHostsFile {dir}/known_hosts\n  StrictHostKeyChecking yes\n  \
                     BatchMode yes\n  LogLevel ERROR\n",
                    user = user(),
                    dir = d.display()
                ),
            )
            .expect("ssh_config");
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .spawn()
                .expect("start sshd");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Some(status) = child.try_wait().expect("sshd status") {
                    eprintln!("sshd exited ({status}) on port {port}; trying another");
                    break;
                }
                // sshd writes its pid file once it listens (a probe by
                // connecting would log an aborted key exchange).
                if d.join("sshd.pid").is_file() {
                    return Some(Sshd { dir, child, port });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start (its messages are above)");
    }

    /// The client's ssh config file (`ssh -F`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen {}", path.display());
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// A value quoted for a POSIX shell (the remote command is read by one).
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The remote command that runs `kiln` for the tests' agent: `env`, the
/// mirrors under `mirrors`, modules built into `module_target` if given
/// (warm builds shared with the other tests; else the mirror's own target
/// directory, cold), this PATH, `extra` variables (sshd gives the agent a
/// clean environment), then the quoted binary.
pub fn agent_command(
    kiln: &Path,
    mirrors: &Path,
    module_target: Option<&Path>,
    extra: &[(&str, &str)],
) -> String {
    let mut vars = vec![
        ("KILN_MIRROR_ROOT", mirrors.display().to_string()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ];
    if let Some(target) = module_target {
        vars.push(("KILN_MODULE_TARGET_DIR", target.display().to_string()));
    }
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let mut command = String::from("env");
    for (k, v) in vars {
        command.push_str(&format!(" {k}={}", shell_quote(&v)));
    }
    command.push_str(&format!(" {}", shell_quote(&kiln.display().to_string())));
    command
}

/// A temporary directory for the agent's mirrors (`KILN_MIRROR_ROOT`).
pub fn mirrors_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kiln-mirrors-")
        .tempdir()
        .expect("temporary directory")
}

/// The pid of the ssh client that the local kiln `pid` started (to cut
/// its connection as a dropped network would).
pub fn ssh_child(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("the children of kiln");
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "ssh")
        })
        .unwrap_or_else(|| panic!("kiln {pid} has no ssh child ({children:?})"))
}

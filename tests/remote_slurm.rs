//! kiln through Slurm: `kiln backends --on DEST --launcher "srun ..."` over
//! a real sshd on 127.0.0.1 (kiln_e2e::sshd) to a real single-node Slurm
//! (kiln_e2e::slurm: munged, slurmctld, slurmd started per test, their
//! files in a temporary directory). The agent is a job step of the
//! allocation srun makes:
//!
//! - the remote lines come back through srun, and once kiln exits the
//!   queue is empty within [`RELEASED_WITHIN`];
//! - kiln interrupted (SIGINT to kiln alone, or to kiln and its ssh as
//!   Ctrl-C in a terminal does) while the remote `kiln backends` runs: the
//!   agent sees its input hang up, stops the command, the step ends and the
//!   queue is empty within [`RELEASED_WITHIN`] too;
//! - a launcher that fails (a partition that does not exist) is reported
//!   with srun's own message.
//!
//! Skipped without Slurm's packages (or when not root) unless
//! KILN_REQUIRE_SLURM is set. Run with
//! `cargo test --release -p kiln-e2e --test remote_slurm`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::workspace;
use kiln_e2e::dev_session::kiln_binary;
use kiln_e2e::slurm::Slurm;
use kiln_e2e::sshd::{HOST, Sshd, shell_quote};
use kiln_e2e::workspace_root;

/// How soon after kiln exits the allocation must be gone (KillWait=1,
/// slurmctld's bookkeeping; seconds in practice).
const RELEASED_WITHIN: Duration = Duration::from_secs(20);

struct Cluster {
    slurm: Slurm,
    sshd: Sshd,
    mirrors: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let slurm = Slurm::start()?;
        let sshd = Sshd::start()?;
        let mirrors = tempfile::Builder::new()
            .prefix("kiln-mirrors-")
            .tempdir()
            .expect("temporary directory");
        Some(Cluster {
            slurm,
            sshd,
            mirrors,
        })
    }

    /// `kiln backends NAMES --on kiln-test --launcher "srun -N1 -n1 -u
    /// PARTITION"`: srun reaches the test's cluster through SLURM_CONF;
    /// `warm` shares the module target directory (a warm build), otherwise
    /// the mirror's own target directory is cold (a long build).
    fn backends(&self, names: &[&str], partition: &str, warm: bool) -> Command {
        let mut vars = vec![
            (
                "KILN_MIRROR_ROOT",
                self.mirrors.path().display().to_string(),
            ),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ];
        if warm {
            let target = workspace::module_target_dir(&workspace_root());
            vars.push(("KILN_MODULE_TARGET_DIR", target.display().to_string()));
        }
        let mut remote_kiln = String::from("env");
        for (k, v) in vars {
            remote_kiln.push_str(&format!(" {k}={}", shell_quote(&v)));
        }
        remote_kiln.push_str(&format!(
            " {}",
            shell_quote(&kiln_binary().display().to_string())
        ));
        let launcher = format!(
            "env SLURM_CONF={} srun -N1 -n1 -u --partition={partition} --job-name=kiln-agent",
            shell_quote(&self.slurm.conf().display().to_string())
        );
        let mut command = Command::new(kiln_binary());
        command
            .current_dir(workspace_root())
            .arg("backends")
            .args(names)
            .args(["--on", HOST, "--ssh-config"])
            .arg(self.sshd.ssh_config())
            .arg("--remote-kiln")
            .arg(remote_kiln)
            .arg("--launcher")
            .arg(launcher);
        command
    }

    /// The queue empties within RELEASED_WITHIN; how long it took.
    fn assert_released(&self) -> Duration {
        match self.slurm.wait_until_empty(RELEASED_WITHIN) {
            Ok(took) => {
                eprintln!(
                    "the allocation was gone {:.1} s after kiln",
                    took.as_secs_f64()
                );
                took
            }
            Err(jobs) => panic!(
                "still queued {RELEASED_WITHIN:?} after kiln exited: {jobs:?}\n{}",
                self.slurm.logs()
            ),
        }
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn backends_through_srun_prints_the_remote_lines_and_releases_the_allocation() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let started = Instant::now();
    let out = cluster
        .backends(&["cpu"], "debug", true)
        .output()
        .expect("kiln runs");
    let (stdout, stderr) = text(&out);
    eprintln!(
        "kiln backends --on --launcher srun took {:.1} s\n{stdout}\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("on {HOST}:\n")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("cpu ") && l.contains("available")),
        "the remote's cpu line came back through srun: {stdout}\n{stderr}"
    );
    cluster.assert_released();
}

#[test]
fn kiln_interrupted_mid_run_releases_the_allocation() {
    interrupted_mid_run(false);
}

/// Ctrl-C in a terminal: SIGINT to kiln and its ssh together (the
/// foreground process group).
#[test]
fn ctrl_c_to_kiln_and_its_ssh_mid_run_releases_the_allocation() {
    interrupted_mid_run(true);
}

/// SIGINT to kiln alone (its ssh then sees its input end), or to kiln's
/// whole process group, once the remote `kiln backends` runs.
fn interrupted_mid_run(whole_group: bool) {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    // A cold target directory: the remote `kiln backends` builds the
    // modules for far longer than this test waits before the interrupt.
    let mut child = cluster
        .backends(&["cpu"], "debug", false)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("kiln runs");
    // `on kiln-test:` is printed once the mirror is synced, as the remote
    // command is asked for.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("kiln's first line");
    assert_eq!(first, format!("on {HOST}:\n"), "kiln reached the agent");
    let jobs = cluster.slurm.jobs();
    assert_eq!(jobs.len(), 1, "the agent runs as a job step: {jobs:?}");
    std::thread::sleep(Duration::from_millis(500));
    // The group kiln leads (process_group(0)), or kiln alone.
    let pid = child.id() as libc::pid_t;
    let target = if whole_group { -pid } else { pid };
    // SAFETY: kill() on our own child, not yet reaped, or the process
    // group it leads: the ids still name them.
    unsafe { libc::kill(target, libc::SIGINT) };
    let status = child.wait().expect("kiln exits");
    // Killed by the interrupt, not finished before it (the cold build
    // takes minutes: a queue empty within RELEASED_WITHIN means it was
    // stopped, not waited for).
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    cluster.assert_released();
    // The stopped build is gone too (its cargo and rustc name the mirror).
    let mirrors = cluster.mirrors.path().display().to_string();
    let start = Instant::now();
    loop {
        let left = processes_mentioning(&mirrors);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < RELEASED_WITHIN,
            "still running after the session: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Command lines of the processes whose arguments contain `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let own = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != own)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn a_launcher_that_fails_is_reported_with_its_own_message() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let out = cluster
        .backends(&["cpu"], "no-such-partition", true)
        .output()
        .expect("kiln runs");
    let (stdout, stderr) = text(&out);
    eprintln!("{stdout}\n{stderr}");
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("srun: error:") && stderr.contains("partition"),
        "srun's message: {stderr}"
    );
    assert!(
        stderr.contains("before answering"),
        "kiln says the agent never answered: {stderr}"
    );
    assert!(cluster.slurm.jobs().is_empty());
}

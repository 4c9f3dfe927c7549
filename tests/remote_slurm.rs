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
//!   with srun's own message;
//! - `kiln dev --on --launcher srun`: the session runs under the job step
//!   (one job while it serves, `kiln ctl` answering here); the ssh client
//!   killed, the allocation lives on and kiln names the job; `--launcher
//!   "srun --jobid=ID --overlap -u"` reattaches; after Ctrl-C the queue is
//!   empty within [`RELEASED_WITHIN`].
//!
//! Skipped without Slurm's packages (or when not root) unless
//! KILN_REQUIRE_SLURM is set. Run with
//! `cargo test --release -p kiln-e2e --test remote_slurm`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::workspace;
use kiln_e2e::dev_session::{BUILD_DEADLINE, DevCommand, kiln_binary, kiln_ctl};
use kiln_e2e::misbehaving::{self, MisbehavingWorkspace};
use kiln_e2e::slurm::Slurm;
use kiln_e2e::sshd::{HOST, Sshd, agent_command, mirrors_dir, shell_quote, ssh_child};
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
        let mirrors = mirrors_dir();
        Some(Cluster {
            slurm,
            sshd,
            mirrors,
        })
    }

    /// The ssh options that reach the agent as a job step: `--on
    /// kiln-test --ssh-config .. --remote-kiln .. --launcher "srun -N1 -n1
    /// -u PARTITION"`; srun reaches the test's cluster through SLURM_CONF;
    /// modules build into `module_target` if given (warm), otherwise into
    /// the mirror's own target directory (cold: a long build).
    fn on(&self, partition: &str, module_target: Option<&Path>) -> Vec<OsString> {
        let remote_kiln = agent_command(&kiln_binary(), self.mirrors.path(), module_target, &[]);
        let launcher = format!(
            "env SLURM_CONF={} srun -N1 -n1 -u --partition={partition} --job-name=kiln-agent",
            shell_quote(&self.slurm.conf().display().to_string())
        );
        vec![
            "--on".into(),
            HOST.into(),
            "--ssh-config".into(),
            self.sshd.ssh_config().into(),
            "--remote-kiln".into(),
            remote_kiln.into(),
            "--launcher".into(),
            launcher.into(),
        ]
    }

    /// `kiln backends NAMES` through srun; `warm` shares the module target
    /// directory.
    fn backends(&self, names: &[&str], partition: &str, warm: bool) -> Command {
        let target = workspace::module_target_dir(&workspace_root());
        let mut command = Command::new(kiln_binary());
        command
            .current_dir(workspace_root())
            .arg("backends")
            .args(names)
            .args(self.on(partition, warm.then_some(target.as_path())));
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

#[test]
fn a_dev_session_through_srun_serves_survives_a_cut_through_overlap_and_releases_the_allocation() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let ws = MisbehavingWorkspace::new();
    let mut session = DevCommand::new(&kiln_binary(), ws.root())
        .args(ws.args())
        .args(cluster.on("debug", Some(misbehaving::module_target_dir().as_path())))
        .env_remove("CARGO_TARGET_DIR")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    session.wait_for("the remote watcher", BUILD_DEADLINE, |e| {
        kiln_dev_driver::is_watching(e)
    });
    let jobs = cluster.slurm.jobs();
    assert_eq!(jobs.len(), 1, "the agent runs as a job step: {jobs:?}");
    let (ok, out) = kiln_ctl(&ws.copy, &["status"]);
    assert!(ok, "kiln ctl answers through the job step: {out}");

    // The connection cut: the allocation lives on with the session; kiln
    // names the job and the launcher that reattaches through it.
    let pid = session.pid();
    let ssh = ssh_child(pid);
    // SAFETY: kill(2) on the ssh client read from /proc just before (kiln's
    // child, not reaped by us) with a valid signal number.
    unsafe { libc::kill(ssh as libc::pid_t, libc::SIGKILL) };
    let lost = session.stop();
    assert!(!lost.status.success(), "{}", lost.stderr);
    let id = lost
        .stderr
        .split("srun --jobid=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("the job id named: {}", lost.stderr))
        .to_string();
    assert_eq!(cluster.slurm.jobs().len(), 1, "the allocation lives on");
    let mut on = cluster.on("debug", Some(misbehaving::module_target_dir().as_path()));
    let last = on.len() - 1;
    on[last] = format!(
        "env SLURM_CONF={} srun --jobid={id} --overlap -u",
        shell_quote(&cluster.slurm.conf().display().to_string())
    )
    .into();
    let session = DevCommand::new(&kiln_binary(), ws.root())
        .args(ws.args())
        .args(on)
        .env_remove("CARGO_TARGET_DIR")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    while !kiln_ctl(&ws.copy, &["status"]).0 {
        assert!(start.elapsed() < BUILD_DEADLINE, "{}", session.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    while !session
        .stderr()
        .contains("reattached to the session running on")
    {
        assert!(start.elapsed() < BUILD_DEADLINE, "{}", session.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = session.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("the state is on kiln-test at"),
        "{}",
        stopped.stderr
    );
    cluster.assert_released();
}

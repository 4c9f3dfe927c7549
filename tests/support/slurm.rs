//! A real single-node Slurm cluster for the remote tests, from the
//! distribution's packages (slurmctld, slurmd, slurm-client, munge), with
//! every file in a temporary directory: munge's key made for the run and
//! `munged` on a socket there; a generated slurm.conf (`SlurmUser=root`,
//! `ProctrackType=proctrack/linuxproc`, `TaskPlugin=task/none`,
//! `JobAcctGatherType=jobacct_gather/none`, `KillWait=1`, one node named
//! after this machine with the CPUs `slurmd -C` reports, no GPU resource,
//! free ports on 127.0.0.1). The daemons run in the foreground as children
//! of the test and are stopped when it ends: nothing system-wide is left
//! running. Clients reach it through `SLURM_CONF` ([`Slurm::conf`]).
//!
//! slurmd starts job steps as the user who asked, so it runs as root: the
//! test process must be root (CI's is). [`Slurm::start`] returns `None`
//! when the packages are missing or the test is not root, unless
//! `KILN_REQUIRE_SLURM` is set (CI sets it): then it panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAEMONS: [&str; 3] = [
    "/usr/sbin/munged",
    "/usr/sbin/slurmctld",
    "/usr/sbin/slurmd",
];

pub struct Slurm {
    dir: tempfile::TempDir,
    /// slurmd, slurmctld, munged: stopped in this order.
    daemons: Vec<Child>,
    /// One cluster at a time in a test binary: on a 2-core machine two
    /// clusters compete for the CPUs, and each takes two ports chosen
    /// before its daemons bind them.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Slurm {
    pub fn start() -> Option<Slurm> {
        let required = std::env::var_os("KILN_REQUIRE_SLURM").is_some();
        let missing: Vec<&str> = DAEMONS
            .into_iter()
            .chain(["/usr/bin/srun", "/usr/bin/squeue", "/usr/sbin/mungekey"])
            .filter(|p| !Path::new(p).exists())
            .collect();
        let why = if !missing.is_empty() {
            format!(
                "no {} (apt-get install slurmctld slurmd slurm-client munge)",
                missing.join(", ")
            )
        } else if !is_root() {
            "slurmd must run as root to start job steps".to_string()
        } else {
            return Some(Slurm::start_here());
        };
        assert!(!required, "KILN_REQUIRE_SLURM is set but {why}");
        eprintln!("skipped: {why}");
        None
    }

    fn start_here() -> Slurm {
        let one_at_a_time = ONE_CLUSTER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::Builder::new()
            .prefix("kiln-slurm-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path().to_path_buf();
        for sub in ["munge", "state", "spool"] {
            std::fs::create_dir_all(d.join(sub)).expect("slurm directories");
        }
        let key = d.join("munge/munge.key");
        run(Command::new("mungekey")
            .arg("--create")
            .arg(format!("--keyfile={}", key.display())));
        let mut slurm = Slurm {
            dir,
            daemons: Vec::new(),
            _one_at_a_time: one_at_a_time,
        };
        let socket = d.join("munge/munge.socket");
        slurm.spawn(
            "munged",
            Command::new(DAEMONS[0])
                .args(["--foreground", "--force"])
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!(
                    "--pid-file={}",
                    d.join("munge/munged.pid").display()
                ))
                .arg(format!(
                    "--log-file={}",
                    d.join("munge/munged.log").display()
                ))
                .arg(format!(
                    "--seed-file={}",
                    d.join("munge/munged.seed").display()
                )),
        );
        slurm.wait_for("munged's socket", |_| socket.exists());
        std::fs::write(slurm.conf(), config(&d, &socket)).expect("slurm.conf");
        slurm.spawn(
            "slurmctld",
            Command::new(DAEMONS[1])
                .args(["-D", "-i", "-f"])
                .arg(slurm.conf()),
        );
        slurm.spawn(
            "slurmd",
            Command::new(DAEMONS[2])
                .args(["-D", "-f"])
                .arg(slurm.conf()),
        );
        slurm.wait_for("the node to be idle", |slurm| {
            slurm.client("sinfo", &["-h", "-o", "%t"]).trim() == "idle"
        });
        slurm
    }

    /// The generated slurm.conf (`SLURM_CONF` for its clients).
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// The jobs in the queue (pending, running or completing): `ID STATE`.
    pub fn jobs(&self) -> Vec<String> {
        self.client("squeue", &["-h", "-o", "%i %T"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until the queue is empty; the jobs still there after `limit`.
    pub fn wait_until_empty(&self, limit: Duration) -> Result<Duration, Vec<String>> {
        let start = Instant::now();
        loop {
            let jobs = self.jobs();
            if jobs.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(jobs);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a Slurm client (`squeue`, `sinfo`...) against this cluster.
    pub fn client(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(name)
            .args(args)
            .env("SLURM_CONF", self.conf())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{name} runs: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn(&mut self, name: &str, command: &mut Command) {
        let log = |suffix: &str| {
            std::fs::File::create(self.dir.path().join(format!("{name}.{suffix}")))
                .expect("daemon log file")
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.daemons.insert(0, child);
    }

    fn wait_for(&mut self, what: &str, ready: impl Fn(&Slurm) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if ready(self) {
                return;
            }
            if self
                .daemons
                .iter_mut()
                .any(|c| c.try_wait().ok().flatten().is_some())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "Slurm did not start (waiting for {what}); its logs:\n{}",
            self.logs()
        );
    }

    /// The daemons' output, for a failure's message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["munged", "slurmctld", "slurmd"] {
            for suffix in ["out", "err"] {
                let path = self.dir.path().join(format!("{name}.{suffix}"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if !text.trim().is_empty() {
                    all.push_str(&format!("--- {}\n{text}", path.display()));
                }
            }
        }
        all
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Jobs a failed test left: this cluster's only (its own config).
        let _ = Command::new("scancel")
            .args(["--user", "root"])
            .env("SLURM_CONF", self.conf())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for child in &mut self.daemons {
            // SAFETY: kill() on the pid of our own child, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        for child in &mut self.daemons {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// slurm.conf for one node, this machine, on free loopback ports.
fn config(d: &Path, munge_socket: &Path) -> String {
    // `slurmd -C`: `NodeName=HOST CPUs=... RealMemory=...` for this machine.
    let node = String::from_utf8_lossy(
        &Command::new(DAEMONS[2])
            .arg("-C")
            .output()
            .expect("slurmd -C runs")
            .stdout,
    )
    .lines()
    .next()
    .unwrap_or_default()
    .to_string();
    assert!(node.starts_with("NodeName="), "slurmd -C: {node:?}");
    let host = node["NodeName=".len()..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    // Two distinct ports (taken one after the other, a port just
    // released could come back).
    let ctld = free_port();
    let ports = loop {
        let slurmd = free_port();
        if slurmd != ctld {
            break (ctld, slurmd);
        }
    };
    format!(
        "ClusterName=kilntest\n\
         SlurmctldHost={host}(127.0.0.1)\n\
         SlurmctldPort={ctld_port}\nSlurmdPort={slurmd_port}\n\
         SlurmUser=root\nSlurmdUser=root\n\
         AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={socket}\n\
         StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
         SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
         SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
         ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
         JobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\n\
         SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
         SchedulerType=sched/builtin\nMpiDefault=none\n\
         KillWait=1\nMinJobAge=2\nReturnToService=2\n\
         {node} NodeAddr=127.0.0.1 State=UNKNOWN\n\
         PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
        ctld_port = ports.0,
        slurmd_port = ports.1,
        socket = munge_socket.display(),
        d = d.display(),
    )
}

fn run(command: &mut Command) {
    let out = command.output().expect("command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

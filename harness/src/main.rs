//! `kiln`: the hot-reloading harness for compute kernels.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kiln::events::{self, emit};
use kiln::logging::LogFormat;
use kiln::supervisor::{DevOptions, OnFail};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Hot-reloading development harness for compute kernels",
    long_about = "kiln keeps your kernels' engine running while you edit them. Save a kernel \
                  source file and kiln rebuilds that module, loads the new version next to the \
                  old one, hands the engine's state over, replays your workload on it and tells \
                  you whether it is still correct and whether it got faster.\n\n\
                  Start with `kiln dev` (or `cargo dev` from the workspace), then edit a file \
                  under kernels/cpu/src/.",
    after_help = "Examples:\n  \
                  kiln dev                                   CPU backend, bundled workload\n  \
                  kiln dev --backend vulkan --workload mm.kiln\n  \
                  kiln record --kernel matmul --dims m=512,k=512,n=512 --seed 7 -o mm.kiln\n  \
                  kiln replay mm.kiln --backend vulkan --reference cpu\n  \
                  kiln new kernel relu --inputs \"x: f32[n]\" --outputs \"y: f32[n]\"\n  \
                  kiln kernels\n  \
                  kiln backends\n  \
                  kiln backends --on gpu-box                 what another machine can run (ssh)\n  \
                  kiln dev --on gpu-box --backend cuda       the session there, your editor here\n  \
                  kiln report"
)]
struct Cli {
    /// Log lines: `human` (readable) or `json` (one object per line, with
    /// `event`, `module`, `version` and `ms` fields).
    #[arg(long, global = true, default_value = "human", value_name = "FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How `--on DEST` reaches the remote kiln (`kiln dev`, `kiln backends`).
#[derive(clap::Args)]
struct RemoteOptions {
    /// With --on: the ssh config file to use instead of ~/.ssh/config.
    #[arg(long, value_name = "FILE", requires = "on")]
    ssh_config: Option<PathBuf>,
    /// With --on: the command that runs kiln on DEST (the same build as
    /// this one).
    #[arg(long, value_name = "COMMAND", default_value = "kiln", requires = "on")]
    remote_kiln: String,
    /// With --on: start the remote kiln through this command on DEST, such
    /// as "srun -N1 -n1 -u -p gpu" (a Slurm job step from the login node;
    /// the allocation ends with the session).
    #[arg(long, value_name = "COMMAND", requires = "on")]
    launcher: Option<String>,
}

impl RemoteOptions {
    /// The ssh target for DEST, the launcher put before the remote kiln.
    fn target(self, destination: String) -> Result<kiln::remote::ssh::SshTarget, String> {
        Ok(kiln::remote::ssh::SshTarget {
            destination,
            config: self.ssh_config,
            remote_kiln: kiln::remote::launcher::wrap(self.launcher.as_deref(), &self.remote_kiln)?,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Watch kernels/*, rebuild the changed module, swap it in with the
    /// engine's state, replay the workload, and print live reload logs.
    Dev {
        /// Backend to serve: cpu, vulkan or cuda (any module under kernels/),
        /// or `auto`: CUDA where usable, else a Vulkan GPU, else cpu.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Serve several backends at once, each from its own module and
        /// worker: `--backends cpu,vulkan`. A save swaps its backend only;
        /// the workload replays on every one and their outputs are
        /// compared with each other. The first is the one keys and
        /// `kiln ctl` act on; replaces --backend.
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "A,B,...",
            conflicts_with = "backend"
        )]
        backends: Vec<String>,
        /// Workload to replay after every swap (default: the bundled one).
        #[arg(long, value_name = "FILE")]
        workload: Option<PathBuf>,
        /// Device to use, by index or name (see `kiln backends`).
        #[arg(long, value_name = "NAME|INDEX")]
        device: Option<String>,
        /// Worker threads for the engine (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// What to do when a new version fails replay: `rollback` to the last
        /// good version (with the state) or `keep` it and warn.
        #[arg(long, default_value = "rollback", value_name = "rollback|keep")]
        on_fail: OnFail,
        /// Do not replay the workload after swaps.
        #[arg(long)]
        no_replay: bool,
        /// Restore the engine's state from this snapshot file at start (if
        /// it exists) and save it there when kiln dev stops.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Start from the workload: restore no state kept under
        /// target/kiln/state/ (the last good point of a session that was
        /// killed, or the state saved for a restart). The files are kept.
        #[arg(long)]
        fresh: bool,
        /// How long file events must be quiet before a rebuild starts.
        #[arg(long, default_value_t = 50, value_name = "MS")]
        debounce_ms: u64,
        /// When kiln dev stops, save the session as a workload: the engine's
        /// resident buffers and the calls it served in its last passing
        /// replay, with their outputs as expected values.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Deadline of every kernel call, in seconds (default: the larger of
        /// 10 s and 50 times the previous version's median for that call).
        /// A call past it is killed with its worker, as for a crash.
        #[arg(long, value_name = "SECS")]
        call_timeout: Option<f64>,
        /// Memory limit of the worker process that runs the kernels (like
        /// 8G or 512M; 0 for none). Default: 3/4 of the machine's memory.
        #[arg(long, value_name = "SIZE")]
        worker_memory: Option<String>,
        /// Check every call against this backend's module, run on the same
        /// inputs (e.g. `--reference cpu` while serving vulkan), instead of
        /// the workload's stored outputs or the reference module.
        #[arg(long, value_name = "BACKEND")]
        reference: Option<String>,
        /// Time on cold caches: flush them before every timed run (the
        /// flush is not timed; its cost is printed once).
        #[arg(long)]
        cold: bool,
        /// Do not autotune the declared tunables after a version passes.
        #[arg(long)]
        no_tune: bool,
        /// Serve a live page (log, state, roofline, buttons) on
        /// 127.0.0.1, on a port the system picks; its URL, printed at
        /// start, carries the token every request needs.
        #[arg(long)]
        ui: bool,
        /// Run the session on another machine, over ssh: the workspace is
        /// mirrored there, built, served and replayed with its toolchain
        /// and GPUs; saves here send the changed files, the log shows
        /// here, `kiln ctl` here drives it. DEST: an ssh destination.
        #[arg(long, value_name = "DEST", conflicts_with = "ui")]
        on: Option<String>,
        #[command(flatten)]
        remote: RemoteOptions,
        /// With --on: how long the remote session outlives a lost
        /// connection, waiting to be reattached (then it saves its state
        /// there and ends).
        #[arg(long, value_name = "SECS", default_value_t = 600, requires = "on")]
        grace: u64,
    },
    /// Drive the running `kiln dev` session of this workspace (the same
    /// commands as its keys): status, replay, history, undo, bless [FILE],
    /// switch BACKEND, quit. Waits for the final answer; exits 0 when done,
    /// 1 when refused, 2 when no session runs.
    Ctl {
        /// status | replay | history | undo | bless [FILE] | switch BACKEND | quit
        command: String,
        /// The command's argument (bless: the workload file to write;
        /// switch: the backend).
        args: Vec<String>,
        /// Print the session's answers as JSON lines, as they come.
        #[arg(long)]
        json: bool,
    },
    /// The engine host of `kiln dev` (started by kiln itself).
    #[command(hide = true)]
    Worker,
    /// Probe the CUDA and Vulkan drivers, print JSON (`--backend auto`
    /// runs it in a child process).
    #[command(hide = true)]
    ProbeDevices,
    /// Say which backends this machine can run, with their devices, or why not.
    Backends {
        /// Only these backends; exit non-zero if one of them cannot run.
        names: Vec<String>,
        /// Ask another machine, over ssh: mirror this workspace there,
        /// build and probe the backends with its toolchain and drivers.
        /// DEST is an ssh destination (`host`, `user@host`, a Host of your
        /// ssh config).
        #[arg(long, value_name = "DEST")]
        on: Option<String>,
        #[command(flatten)]
        remote: RemoteOptions,
    },
    /// The remote side of `--on DEST` (started by kiln over ssh): speaks
    /// kiln's protocol on stdin and stdout.
    Agent {
        /// Speak on stdin and stdout (the only transport).
        #[arg(long, required = true)]
        stdio: bool,
    },
    /// Record a call of a declared kernel into a workload file: inputs from
    /// its declaration, expected outputs from the reference module. An
    /// existing file keeps its other calls (the kernel's are replaced).
    Record {
        /// A declared kernel (see `kiln kernels`), or `default` for the
        /// bundled workload.
        #[arg(long)]
        kernel: String,
        /// The kernel's dims: `rows=512,cols=1024`.
        #[arg(long, default_value = "")]
        dims: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Independent input sets; the call passes only if every one does.
        #[arg(long, default_value_t = 2)]
        trials: usize,
        /// Output file.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// List the declared kernels with their signatures and the backends
    /// that implement them.
    Kernels,
    /// Scaffold something new: `kiln new kernel NAME --inputs ... --outputs ...`.
    New {
        #[command(subcommand)]
        what: kiln::scaffold::NewCommand,
    },
    /// Replay a workload on a backend (or on a given module file) and report
    /// correctness and timing. Exits non-zero if any call fails.
    Replay {
        /// The workload file.
        file: PathBuf,
        /// Backend: cpu, vulkan, cuda, or `auto` (as for `kiln dev`).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Load this module file instead of building the backend's module.
        #[arg(long, value_name = "PATH")]
        module: Option<PathBuf>,
        #[arg(long, value_name = "NAME|INDEX")]
        device: Option<String>,
        /// Check correctness only (no timing runs).
        #[arg(long)]
        no_timing: bool,
        /// Time on cold caches: flush them before every timed run (the
        /// flush is not timed; its cost is printed once).
        #[arg(long)]
        cold: bool,
        /// Expected outputs from this backend's module, run on the same
        /// inputs (instead of the stored ones or the reference module).
        #[arg(long, value_name = "BACKEND")]
        reference: Option<String>,
        /// Deadline of every call, in seconds (default 10). A call past it
        /// is reported as failed and its worker killed.
        #[arg(long, value_name = "SECS")]
        call_timeout: Option<f64>,
    },
    /// Check that a backend's state survives a swap bit for bit, and time it:
    /// puts MIB MiB of arbitrary bits into an engine, swaps to a fresh copy
    /// of the same module, compares.
    CheckSwap {
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Load this module file instead of building the backend's module.
        #[arg(long, value_name = "PATH")]
        module: Option<PathBuf>,
        #[arg(long, value_name = "NAME|INDEX")]
        device: Option<String>,
        /// Resident state to hand over, in MiB.
        #[arg(long, default_value_t = 256, value_name = "MIB")]
        state_mib: usize,
    },
    /// Show the last dev session's versions as a table and write an SVG chart.
    Report {
        /// Module whose history to show.
        #[arg(long, default_value = "kernel-cpu")]
        module: String,
        /// Where to write the chart (default: next to the history file).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Also write each chart as PNG next to its SVG (same name, `.png`),
        /// drawn from the SVG with the font kept in the repository.
        #[arg(long)]
        png: bool,
        /// A history file to show instead of the module's last session (an
        /// earlier session's: `target/kiln/history/MODULE.session-NNNN.json`).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Then serve the session's page from its history on 127.0.0.1
        /// (as `kiln dev --ui`: a token, the Host checked) until Ctrl-C.
        #[arg(long)]
        ui: bool,
    },
    /// Print this machine's measured peaks (memory bandwidth, compute), the
    /// last-level cache size used and the cold-cache flush cost.
    Machine {
        /// Threads to measure with, as the engine's `--threads` (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Measure again even if cached peaks still apply.
        #[arg(long)]
        remeasure: bool,
        /// Only these backends (`cpu`, `vulkan`, `cuda`; comma-separated).
        /// Default: every backend this machine can run.
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
        /// Measure the devices of this GPU module file (built elsewhere)
        /// instead of building the backends' modules.
        #[arg(long)]
        module: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    kiln::process::configure_malloc();
    if matches!(cli.command, Command::Worker) {
        // The worker sets up its own log (its lines go to the supervisor).
        return kiln::worker::main(cli.log_format);
    }
    if matches!(cli.command, Command::Agent { .. }) {
        // stdout carries the protocol: no log on it.
        return kiln::remote::agent::main();
    }
    if matches!(cli.command, Command::ProbeDevices) {
        kiln::supervisor::backend_choice::print_probe();
        return ExitCode::SUCCESS;
    }
    if let Command::Ctl {
        command,
        args,
        json,
    } = &cli.command
    {
        return ExitCode::from(kiln::control::client::main(command, args, *json));
    }
    let json = cli.log_format == LogFormat::Json;
    match cli.command {
        Command::Backends { .. } | Command::Kernels => {
            kiln::logging::init_on_stderr(cli.log_format)
        }
        _ => kiln::logging::init(cli.log_format),
    }
    let result = match cli.command {
        Command::Dev {
            backend,
            backends,
            workload,
            device,
            threads,
            on_fail,
            no_replay,
            state,
            fresh,
            debounce_ms,
            record,
            call_timeout,
            worker_memory,
            reference,
            cold,
            no_tune,
            ui,
            on,
            remote,
            grace,
        } => {
            if ui {
                let root = std::env::current_dir()
                    .ok()
                    .and_then(|d| kiln::workspace::find_workspace_root(&d))
                    .unwrap_or_else(kiln::workspace::built_workspace_root);
                if let Err(e) = kiln::ui::start(root) {
                    eprintln!("kiln: --ui: {e}");
                    return ExitCode::from(2);
                }
            }
            let worker_memory_arg = worker_memory.clone();
            let worker_memory = match worker_memory.as_deref() {
                None => Ok(kiln::isolation::memory_limit::default_limit()),
                Some(text) => kiln::isolation::memory_limit::parse(text),
            };
            let call_timeout = match call_timeout {
                Some(secs) if !(secs > 0.0 && secs.is_finite()) => Err(format!(
                    "--call-timeout {secs}: must be a positive number of seconds"
                )),
                other => Ok(other.map(Duration::from_secs_f64)),
            };
            let (worker_memory, call_timeout) = match (worker_memory, call_timeout) {
                (Ok(m), Ok(t)) => (m, t),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("kiln: {e}");
                    return ExitCode::from(2);
                }
            };
            let (tx, rx) = crossbeam_channel::bounded(1);
            // Ctrl-C, SIGTERM and SIGHUP all end the session the same way.
            if let Err(e) = ctrlc::set_handler(move || {
                let _ = tx.try_send(());
            }) {
                eprintln!("kiln: cannot handle Ctrl-C, SIGTERM and SIGHUP: {e}");
            }
            // `--on DEST`: the session runs there (kiln::remote::dev).
            let serve = |options: DevOptions, rx| match on {
                Some(destination) => remote.target(destination).and_then(|target| {
                    remote_dev(
                        &options,
                        target,
                        worker_memory_arg.as_deref(),
                        Duration::from_secs(grace),
                        rx,
                    )
                }),
                None => kiln::supervisor::run(options, rx).map_err(|e| e.to_string()),
            };
            serve(
                DevOptions {
                    backend: backends.first().cloned().unwrap_or(backend),
                    other_backends: backends.iter().skip(1).cloned().collect(),
                    workload,
                    device,
                    threads,
                    on_fail,
                    replay: !no_replay,
                    state,
                    fresh,
                    debounce: Duration::from_millis(debounce_ms),
                    workspace: None,
                    record,
                    log_format: cli.log_format,
                    call_timeout,
                    worker_memory,
                    reference,
                    cold,
                    tune: !no_tune,
                },
                rx,
            )
        }
        Command::Worker | Command::ProbeDevices | Command::Ctl { .. } | Command::Agent { .. } => {
            unreachable!("handled above")
        }
        Command::Backends {
            names,
            on: Some(destination),
            remote,
        } => remote.target(destination).and_then(|target| {
            kiln::remote::backends::main(
                &target,
                &std::env::current_dir()
                    .ok()
                    .and_then(|d| kiln::workspace::find_workspace_root(&d))
                    .unwrap_or_else(kiln::workspace::built_workspace_root),
                &names,
            )
        }),
        Command::Backends { names, .. } => kiln::commands::backends(&names, cli.log_format),
        Command::Record {
            kernel,
            dims,
            seed,
            trials,
            output,
        } => kiln::kernel_commands::record(&kiln::kernel_commands::RecordArgs {
            kernel,
            dims,
            seed,
            trials,
            output,
        }),
        Command::Kernels => kiln::kernel_commands::kernels(),
        Command::New { what } => what.run(),
        Command::Replay {
            file,
            backend,
            module,
            device,
            no_timing,
            cold,
            call_timeout,
            reference,
        } => kiln::commands::replay(
            &file,
            &kiln::commands::ReplayCommand {
                backend,
                module_file: module,
                device,
                timing: !no_timing,
                call_timeout: call_timeout
                    .filter(|s| *s > 0.0 && s.is_finite())
                    .map(Duration::from_secs_f64),
                log_format: cli.log_format,
                reference,
                cold,
            },
        ),
        Command::CheckSwap {
            backend,
            module,
            device,
            state_mib,
        } => kiln::commands::check_swap(&backend, module.as_deref(), device, state_mib),
        Command::Report {
            module,
            svg,
            png,
            file,
            ui,
        } => kiln::commands::report(&module, svg.as_deref(), png, file.as_deref(), ui),
        Command::Machine {
            threads,
            remeasure,
            backends,
            module,
        } => kiln::machine_command::main(threads, remeasure, &backends, module.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            if json {
                emit!(tracing::Level::ERROR, events::Error {}, "{message}");
            }
            eprintln!("kiln: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `kiln dev --on DEST`: the session on DEST (see kiln::remote::dev).
fn remote_dev(
    options: &DevOptions,
    target: kiln::remote::ssh::SshTarget,
    worker_memory: Option<&str>,
    grace: Duration,
    interrupt: crossbeam_channel::Receiver<()>,
) -> Result<(), String> {
    let root = std::env::current_dir()
        .ok()
        .and_then(|d| kiln::workspace::find_workspace_root(&d))
        .unwrap_or_else(kiln::workspace::built_workspace_root);
    let (args, workload) = kiln::remote::dev::remote_args(options, worker_memory, &root)?;
    kiln::remote::dev::main(
        kiln::remote::dev::RemoteDev {
            target,
            root,
            args,
            workload,
            state: options.state.clone(),
            grace,
            fresh: options.fresh,
            debounce: options.debounce,
        },
        interrupt,
    )
}

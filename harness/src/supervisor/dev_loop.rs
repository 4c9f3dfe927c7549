//! `kiln dev`: watch the kernel sources, rebuild the served module on every
//! save, swap the new version in with the engine's state, replay the
//! workload, and log every step with its timing.
//!
//! Threads: the watcher and the build queue run on their own threads and
//! report on channels; this loop owns the served module, so builds never
//! block the serving path, and every swap and replay happens here, in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use super::control_commands::ControlQueue;
use super::kept_state::{BUNDLED, Given, KeptState, NotRestored};
use super::lane::{Fresh, Lane};
use super::options::{DevError, DevOptions, err};
use super::session::Session;
use super::spinner::Spinner;
use super::sync_build::build_at_start;
use super::watch::{ChangeSet, ModuleWatcher, WatchOptions};
use crate::build::module_build::ModuleBuilder;
use crate::build::module_graph::{KernelModule, ModuleGraph};
use crate::build::queue::{BuildEvent, BuildQueue};
use crate::events::{self, emit};
use crate::isolation::isolated::{IsolatedEngine, IsolationOptions};
use crate::isolation::worker_process::SpawnOptions;
use crate::swap::stage::StagingDir;
use crate::worker::protocol::WorkerConfig;
use crate::workload::compare::Tolerances;
use crate::workspace;

/// The state file written when the host must restart.
fn restart_state_path(target: &Path, module: &str) -> PathBuf {
    target
        .join("kiln")
        .join("state")
        .join(format!("{module}.snapshot"))
}

fn select_module(graph: &ModuleGraph, backend: &str) -> Result<KernelModule, DevError> {
    graph.module_for_backend(backend).map_err(err)
}

/// `--backend auto`: probes the drivers (in a child process, no module
/// built) and logs what it chose and why not the others.
fn choose_backend(graph: &ModuleGraph) -> Result<String, DevError> {
    super::backend_choice::choose_among(graph).map_err(err)
}

/// What the dev loop reacts to, one at a time.
enum LoopEvent {
    /// Ctrl-C, SIGTERM or SIGHUP.
    Shutdown,
    /// A channel the loop needs closed: the session ends with the reason.
    Stopped(&'static str),
    /// A burst of saves.
    Change(ChangeSet),
    /// The build thread started, progressed or finished a build.
    Build(BuildEvent),
    /// A key or `kiln ctl` command.
    Control(crate::control::Request),
    /// The spinner's tick.
    Tick,
    /// One bounded autotuning step (only while nothing else is ready).
    Tune,
    /// A worker's output ended (pid): if a lane was not waiting on it, it
    /// went down while idle.
    WorkerExited(u32),
}

/// Ready at once while tuning is under way (one bounded step runs between
/// events), never otherwise.
fn tune_now(session: &Session) -> Receiver<Instant> {
    if session.tuning {
        crossbeam_channel::after(Duration::ZERO)
    } else {
        crossbeam_channel::never()
    }
}

/// Runs the dev loop until `shutdown` fires.
pub fn run(options: DevOptions, shutdown: Receiver<()>) -> Result<(), DevError> {
    let root = match &options.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()
            .ok()
            .and_then(|d| workspace::find_workspace_root(&d))
            .unwrap_or_else(workspace::built_workspace_root),
    };
    let workload_path = options
        .workload
        .as_ref()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    let tolerances_path = root.join("kiln.toml");
    // Workers tell the loop when they end, so that one killed between
    // requests is recovered at once, not at the next save.
    let (exits, worker_exits) = crossbeam_channel::unbounded();
    let mut engine_options = BTreeMap::new();
    if let Some(device) = &options.device {
        engine_options.insert("device".to_string(), device.clone());
    }
    let mut isolation = IsolationOptions {
        spawn: SpawnOptions {
            program: None,
            log_format: options.log_format,
            forward_output: true,
            memory_limit: options.worker_memory,
            exits: Some(exits),
        },
        worker: WorkerConfig {
            threads: options.threads,
            engine_options,
            workload: workload_path.clone(),
            tolerances: tolerances_path.exists().then(|| tolerances_path.clone()),
            timing: true,
            // Kept for --record and `kiln ctl bless` (the last replay's
            // outputs only).
            keep_outputs: true,
            workspace: Some(root.clone()),
            // Set once their modules are built (below).
            reference: None,
            cross_reference: None,
            cold: options.cold,
            tune: options.tune && options.replay,
        },
        call_timeout: options.call_timeout,
    };
    let mut engine = IsolatedEngine::new(isolation.clone(), Some(shutdown.clone()))
        .map_err(|e| err(format!("cannot set up the worker's shared memory: {e}")))?;
    // The workload's large residents are copied into memory from here on,
    // while cargo reads the workspace and the modules build
    // (`isolation/preload.rs`; 2 to 3 s at 4 GiB, as long as a build that
    // compiles or longer), unless a `--state` file will be restored; the
    // copy is called off below if a kept state will be.
    if let Some(path) = &workload_path
        && !options.state.as_ref().is_some_and(|p| p.exists())
        && let Err(e) = engine.preload_workload(path)
    {
        tracing::warn!("the workload's residents are copied once the modules are built: {e}");
    }
    crate::loop_alignment::warn_at_start(&root);
    let mut graph = ModuleGraph::discover(&root).map_err(|e| err(e.to_string()))?;
    let backend = match options.backend.as_str() {
        "auto" => choose_backend(&graph)?,
        named => named.to_string(),
    };
    let module = select_module(&graph, &backend)?;
    let all_modules = graph.modules().to_vec();
    // One session per workspace; keys and `kiln ctl` drive it.
    let control = crate::control::Control::start(&root, true).map_err(err)?;
    let target = workspace::target_dir(&root);
    let stage_root = workspace::staging_root(&root);
    graph.ignore_dir(stage_root.clone());
    tracing::info!(
        "kiln dev: serving {} ({} backend) from {}",
        module.package,
        module.backend,
        root.display()
    );

    // The workload's structure is checked first (header, bounds, shapes,
    // references: `format::check_structure`, instant at any size), so a
    // malformed file stops us before a build. Its data's checksums are
    // checked by the worker as it loads each section (a damaged section
    // stops the start, naming the file and the section, before anything
    // serves): checking them here too read a 4 GiB workload once more on
    // the start's path (0.7 s). The supervisor keeps only the name (a
    // GiB-sized workload held here for the whole session was one more copy
    // of the state in the peak memory).
    let workload = match &workload_path {
        Some(path) => {
            crate::workload::format::check_structure(path).map_err(|e| err(e.to_string()))?
        }
        None => crate::supervisor::declarations::bundled_workload(&root).map_err(err)?,
    };
    tracing::info!("{}", workload.describe());
    let workload_name = workload.name.clone();
    drop(workload);
    // Check the tolerances now: a bad kiln.toml stops us before a build.
    if tolerances_path.exists() {
        Tolerances::load(&tolerances_path).map_err(|e| err(e.to_string()))?;
    }

    // State: an explicit --state file, or the one saved for a restart,
    // else the last good point kept on disk by a session that died
    // (`kept_state.rs`), else the workload's buffers.
    let state_path = restart_state_path(&target, &module.package);
    let explicit = options.state.clone().filter(|p| p.exists());
    let given = match &explicit {
        Some(path) => Some(Given {
            path: path.clone(),
            why: NotRestored::StateGiven,
        }),
        None => (state_path.exists() && !options.fresh).then(|| Given {
            path: state_path.clone(),
            why: NotRestored::RestartState,
        }),
    };
    let restoring_restart_state = given
        .as_ref()
        .is_some_and(|g| g.why == NotRestored::RestartState);
    let workload_served = workload_path
        .as_ref()
        .map_or_else(|| BUNDLED.to_string(), |p| p.display().to_string());
    let kept = KeptState::new(&target, &module.package, &workload_served);
    // The copy started at the top is the start's only if it starts from
    // the workload after all.
    if !kept.starts_from_workload(given.as_ref(), options.fresh) {
        engine.cancel_preload();
    }
    let builder = ModuleBuilder::new(&root, workspace::module_target_dir(&root))
        .with_profile(workspace::HOST_PROFILE);
    let (artifact, build_ms) = build_at_start(&builder, &module)?;
    let stage = StagingDir::create(&stage_root)
        .map_err(|e| err(e.to_string()))?
        .for_workspace(&root);
    let reference = options
        .replay
        .then(|| crate::supervisor::declarations::stage_reference(&root, &stage))
        .flatten();
    let cross_reference = match (&options.reference, options.replay) {
        (Some(backend), true) => {
            let staged =
                super::declarations::stage_backend(&root, &stage, backend, None).map_err(|e| {
                    err(format!(
                        "--reference {backend}: cannot build its module: {e}"
                    ))
                })?;
            emit!(
                tracing::Level::INFO,
                events::Reference {},
                "--reference {backend}: every call's expected outputs come from {}",
                staged.label
            );
            Some(staged)
        }
        _ => None,
    };
    isolation.worker.reference = reference.as_ref().map(Into::into);
    isolation.worker.cross_reference = cross_reference.as_ref().map(Into::into);
    *engine.worker_config_mut() = isolation.worker.clone();
    let other_isolation = isolation;
    let reference_module = graph
        .modules()
        .iter()
        .find(|m| m.backend == crate::workspace::REFERENCE_BACKEND)
        .filter(|m| reference.is_some() && m.package != module.package)
        .cloned();
    if let Some(path) = &workload_path {
        graph.watch_file(path);
    }
    // Watching starts here, on a thread of its own while the worker starts
    // (the scan of the sources took 0.1 to 0.8 s with a GiB-sized state
    // in memory), and before the first checkpoint and replay: a save made
    // while they run is seen (not taken into the sources' first hashes).
    let debounce = options.debounce;
    let watching = std::thread::Builder::new()
        .name("kiln-watch-start".into())
        .spawn(move || {
            ModuleWatcher::start(
                graph,
                WatchOptions {
                    debounce,
                    ..WatchOptions::default()
                },
            )
        })
        .map_err(|e| err(format!("cannot start the watcher: {e}")))?;
    let staged = stage
        .stage(&module.package, &artifact)
        .map_err(|e| err(e.to_string()))?;

    let restage = || {
        stage
            .stage(&module.package, &artifact)
            .map_err(|e| e.to_string())
    };
    let (started, staged, restored_from) = kept
        .start(&mut engine, staged, &restage, given, options.fresh)
        .map_err(|e| err(format!("cannot start {}: {e}", module.package)))?;
    emit!(
        tracing::Level::INFO,
        events::WorkerStarted {
            module: module.package.clone(),
            version: started.version,
            pid: engine.worker_pid(),
        },
        "{} serving on {} (worker pid {})",
        started.label,
        started.device,
        engine.worker_pid().unwrap_or_default()
    );
    let loaded = engine
        .load_workload_state()
        .map_err(|e| err(format!("cannot load the workload's buffers: {e}")))?;
    if loaded > 0 {
        tracing::info!("loaded {loaded} resident buffer(s) from the workload");
    }

    let others = super::served_backends::start_others(super::served_backends::OthersSetup {
        names: &options.other_backends,
        modules: &all_modules,
        primary: &module,
        builder: &builder,
        stage: &stage,
        isolation: &other_isolation,
        shutdown: &shutdown,
        // The `--state` file (backend-neutral), else each backend's own
        // kept last good point if its session died, else the state this
        // backend restored (its kept file, or the state saved for a
        // restart), else the workload's buffers.
        state: explicit.clone(),
        first_restored: restored_from,
        fresh: options.fresh,
        target: &target,
        workload_name: &workload_name,
        workload_served: &workload_served,
    })?;
    // Read by the other backends' starts too.
    if restoring_restart_state {
        let _ = std::fs::remove_file(&state_path);
    }
    let mut own = Lane::new(module, engine, staged, &workload_name, &target);
    own.kept = Some(kept);
    own.fresh = Some(Fresh {
        build_ms: Some(build_ms),
        swap_ms: None,
        old_alive: false,
    });
    let mut session = Session {
        lanes: std::iter::once(own).chain(others).collect(),
        stage,
        replay: options.replay,
        on_fail: options.on_fail,
        state_path,
        explicit_state: options.state.clone(),
        spinner: Spinner::new(),
        record: options.record.clone(),
        stopping: false,
        reference_module,
        tuning: false,
        tune: options.tune && options.replay,
        control: super::control_state::ControlState {
            socket: Some(control.socket()),
            ..Default::default()
        },
        backends: super::backends::Backends::new(root.clone(), all_modules.clone()),
    };
    let watcher = watching
        .join()
        .map_err(|_| err("the watcher's start panicked".to_string()))?
        .map_err(|e| err(format!("cannot watch the sources: {e}")))?;
    // Every module: after a switch, saves build the newly served one.
    let queue = BuildQueue::start(builder, all_modules)
        .map_err(|e| err(format!("cannot start the build thread: {e}")))?;
    // The last good point starts here: the loaded state, before any replay.
    for i in 0..session.lanes.len() {
        session.checkpoint(i);
    }
    if !session.stopping {
        session.replay_all();
    }

    tracing::info!(
        "watching {} (and its path dependencies); save a kernel to rebuild. Ctrl-C to stop.",
        session
            .lanes
            .iter()
            .map(|l| l.module.dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let ticker = crossbeam_channel::tick(Duration::from_millis(100));
    let mut stopped_by: Option<&str> = None;
    let mut commands = ControlQueue::default();
    while !session.stopping {
        let event = select! {
            recv(shutdown) -> _ => LoopEvent::Shutdown,
            recv(watcher.changes()) -> change => match change {
                Ok(change) => LoopEvent::Change(change),
                Err(_) => LoopEvent::Stopped("the file watcher stopped"),
            },
            recv(queue.events()) -> event => match event {
                Ok(event) => LoopEvent::Build(event),
                Err(_) => LoopEvent::Stopped("the build thread stopped"),
            },
            recv(control.requests()) -> request => match request {
                Ok(request) => LoopEvent::Control(request),
                Err(_) => LoopEvent::Tick,
            },
            recv(worker_exits) -> pid => match pid {
                Ok(pid) => LoopEvent::WorkerExited(pid),
                Err(_) => LoopEvent::Tick,
            },
            recv(ticker) -> _ => LoopEvent::Tick,
            recv(tune_now(&session)) -> _ => LoopEvent::Tune,
        };
        match event {
            LoopEvent::Shutdown => break,
            LoopEvent::Stopped(why) => {
                stopped_by = Some(why);
                break;
            }
            LoopEvent::Change(change) => session.on_change(&change, &queue),
            LoopEvent::Build(BuildEvent::Started { module, requests }) => {
                emit!(
                    tracing::Level::INFO,
                    events::BuildStarted {
                        module: module.clone(),
                        version: session.version(),
                        requests: Some(requests as u64),
                    },
                    "building {module}"
                );
                session.spinner.start(&module);
            }
            LoopEvent::Build(BuildEvent::Progress { progress, .. }) => {
                session.spinner.progress(&progress.step)
            }
            LoopEvent::Build(BuildEvent::Finished(report)) => {
                session.spinner.clear();
                session.on_built(report);
            }
            LoopEvent::Control(request) => commands.receive(&mut session, request),
            LoopEvent::Tick => session.spinner.tick(),
            LoopEvent::Tune => session.tune_step(),
            LoopEvent::WorkerExited(pid) => session.on_worker_exited(pid),
        }
        commands.apply_waiting(&mut session);
        if session.stopping || commands.quit {
            break;
        }
    }
    drop(watcher);
    queue.shutdown();
    session.finish();
    match stopped_by {
        None => Ok(()),
        Some(why) => Err(err(format!("kiln dev stopped unexpectedly: {why}"))),
    }
}

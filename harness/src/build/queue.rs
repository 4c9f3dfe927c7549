//! Runs module builds one at a time on a thread of their own, coalescing
//! requests that arrive while a build runs.
//!
//! Requests queue in a channel while the build thread is busy. When a build
//! ends, the thread takes every queued request at once and merges those for
//! the same module: however many saves landed during a build, the module is
//! built once more afterwards, from the sources as they are then. Modules are
//! built in the order of their first pending request. Events (start,
//! progress, result with timings) arrive on [`BuildQueue::events`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::build::module_build::{BuildError, BuildOutcome, BuildProgress, ModuleBuilder};
use crate::build::module_graph::KernelModule;

/// What the build thread reports.
#[derive(Debug)]
pub enum BuildEvent {
    /// A build of `module` started, serving `requests` coalesced requests.
    Started { module: String, requests: usize },
    /// Cargo moved on (for a spinner on builds longer than a second).
    Progress {
        module: String,
        progress: BuildProgress,
    },
    /// A build ended.
    Finished(BuildReport),
}

/// The result of one build and its timings.
#[derive(Debug)]
pub struct BuildReport {
    /// Package name of the module.
    pub module: String,
    /// The build's outcome; `Err` when cargo could not be run at all.
    pub result: Result<BuildOutcome, BuildError>,
    /// How many requests this build served.
    pub requests: usize,
    /// When the earliest of those requests said the sources changed.
    pub changed_at: Instant,
    /// When cargo was started.
    pub started_at: Instant,
    /// When cargo exited.
    pub finished_at: Instant,
}

/// A request named a module the queue does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownModule(pub String);

impl fmt::Display for UnknownModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no kernel module named {:?}", self.0)
    }
}

impl std::error::Error for UnknownModule {}

struct Request {
    module: String,
    changed_at: Instant,
    /// The changed source files, when known.
    paths: Option<Vec<PathBuf>>,
}

/// A module's pending follow-up build.
struct Pending {
    module: String,
    requests: usize,
    changed_at: Instant,
    /// Every request's changed files; `None` once one request did not say.
    paths: Option<Vec<PathBuf>>,
}

/// The build thread and its channels. Dropping the queue stops it after
/// the build in progress (without waiting); [`BuildQueue::shutdown`] waits.
pub struct BuildQueue {
    modules: BTreeMap<String, KernelModule>,
    requests: Option<Sender<Request>>,
    events: Receiver<BuildEvent>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for BuildQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildQueue")
            .field("modules", &self.modules.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BuildQueue {
    /// Starts the build thread for these modules.
    pub fn start(
        builder: ModuleBuilder,
        modules: impl IntoIterator<Item = KernelModule>,
    ) -> std::io::Result<BuildQueue> {
        let modules: BTreeMap<String, KernelModule> = modules
            .into_iter()
            .map(|m| (m.package.clone(), m))
            .collect();
        let (request_tx, request_rx) = crossbeam_channel::unbounded();
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        let thread_modules = modules.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-build".to_string())
            .spawn(move || run_builds(&builder, &thread_modules, &request_rx, &event_tx))?;
        Ok(BuildQueue {
            modules,
            requests: Some(request_tx),
            events: event_rx,
            thread: Some(thread),
        })
    }

    /// Asks for a build of `module` (package name) because its sources
    /// changed at `changed_at` (e.g. [`crate::supervisor::watch::ChangeSet::first_event_at`]).
    /// Returns at once.
    pub fn request(&self, module: &str, changed_at: Instant) -> Result<(), UnknownModule> {
        self.send(module, changed_at, None)
    }

    /// Like [`BuildQueue::request`], saying which files changed (the
    /// watcher's [`crate::supervisor::watch::ChangeSet::paths`]): a build
    /// whose coalesced requests all changed only the module crate's own
    /// sources may skip cargo ([`ModuleBuilder::after_changes`]).
    pub fn request_changed(
        &self,
        module: &str,
        changed_at: Instant,
        paths: &[PathBuf],
    ) -> Result<(), UnknownModule> {
        self.send(module, changed_at, Some(paths.to_vec()))
    }

    fn send(
        &self,
        module: &str,
        changed_at: Instant,
        paths: Option<Vec<PathBuf>>,
    ) -> Result<(), UnknownModule> {
        if !self.modules.contains_key(module) {
            return Err(UnknownModule(module.to_string()));
        }
        if let Some(requests) = &self.requests {
            // The thread only exits once `requests` is dropped.
            let _ = requests.send(Request {
                module: module.to_string(),
                changed_at,
                paths,
            });
        }
        Ok(())
    }

    /// Build events: starts, progress and results.
    pub fn events(&self) -> &Receiver<BuildEvent> {
        &self.events
    }

    /// Stops taking requests and waits for the build in progress to end.
    pub fn shutdown(mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BuildQueue {
    fn drop(&mut self) {
        // Disconnecting the request channel ends the thread after its build.
        self.requests = None;
    }
}

fn run_builds(
    builder: &ModuleBuilder,
    modules: &BTreeMap<String, KernelModule>,
    requests: &Receiver<Request>,
    events: &Sender<BuildEvent>,
) {
    let mut pending: Vec<Pending> = Vec::new();
    let add = |pending: &mut Vec<Pending>, request: Request| match pending
        .iter_mut()
        .find(|p| p.module == request.module)
    {
        Some(p) => {
            p.requests += 1;
            p.changed_at = p.changed_at.min(request.changed_at);
            p.paths = match (p.paths.take(), request.paths) {
                (Some(mut all), Some(more)) => {
                    all.extend(more);
                    Some(all)
                }
                _ => None,
            };
        }
        None => pending.push(Pending {
            module: request.module,
            requests: 1,
            changed_at: request.changed_at,
            paths: request.paths,
        }),
    };
    loop {
        if pending.is_empty() {
            match requests.recv() {
                Ok(request) => add(&mut pending, request),
                Err(_) => return,
            }
        }
        // Everything that arrived during the last build coalesces here.
        loop {
            match requests.try_recv() {
                Ok(request) => add(&mut pending, request),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let next = pending.remove(0);
        let Some(module) = modules.get(&next.module) else {
            continue;
        };
        let _ = events.send(BuildEvent::Started {
            module: next.module.clone(),
            requests: next.requests,
        });
        let started_at = Instant::now();
        let builder = match &next.paths {
            Some(paths) => builder.after_changes(paths),
            None => builder.clone(),
        };
        let result = builder.build(module, &mut |progress| {
            let _ = events.send(BuildEvent::Progress {
                module: next.module.clone(),
                progress: progress.clone(),
            });
        });
        let report = BuildReport {
            module: next.module,
            result,
            requests: next.requests,
            changed_at: next.changed_at,
            started_at,
            finished_at: Instant::now(),
        };
        if events.send(BuildEvent::Finished(report)).is_err() {
            return;
        }
    }
}

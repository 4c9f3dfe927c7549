//! The events of the live reload log, as one typed set: [`Event`] is every
//! event kiln emits with its fields (one struct per event, below), tagged
//! by its name on the wire; [`EventKind`] names them without fields; and
//! [`LogLine`] reads one line of `--log-format json` back, for the tests,
//! the benchmarks and any tool that follows a session.
//!
//! Every emit site goes through [`emit!`], which logs a `tracing` event
//! whose message is for people and whose fields are the [`Event`]: the
//! JSON formatter ([`crate::logging`]) writes them at the top level of the
//! line (`"event":"swapped","module":...`), so the JSON lines are what
//! README.md's "JSON events" paragraph documents (a unit test below checks
//! that it lists exactly [`EventKind::ALL`]):
//!
//! ```ignore
//! emit!(
//!     tracing::Level::INFO,
//!     events::Loaded { module, version, ms },
//!     "loaded {label} in {ms:.1} ms"
//! );
//! ```
//!
//! A line is read back typed with [`LogLine::get`]
//! (`line.get::<events::Swapped>()`), or by key ([`LogLine::u64`], ...).
//! Kernel modules do not depend on this crate; a module that logged an
//! `event` field of its own would arrive as an unknown name, which
//! [`LogLine`] keeps in [`LogLine::fields`] (none of the bundled modules
//! does).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `tracing` field [`emit!`] records the event's fields in, as one
/// JSON object (the JSON formatter splices its keys into the line).
pub const EVENT_FIELD: &str = "kiln_event";

/// Emits a kiln event: `emit!(Level::INFO, events::Swapped { .. }, "fmt",
/// args...)`, optionally with `target: "..."` first. The event (any of the
/// structs below, or an [`Event`]) and the message are built only if the
/// level and target are enabled. It is an ordinary `tracing` event (target:
/// the emitting module), so `RUST_LOG` filters it and the human formatter
/// prints its message; its fields go in one field, [`EVENT_FIELD`].
#[macro_export]
macro_rules! emit {
    (target: $target:expr, $level:expr, $event:expr, $($message:tt)+) => {
        ::tracing::event!(
            target: $target,
            $level,
            kiln_event = %$crate::events::Emitted(&$crate::events::Event::from($event)),
            $($message)+
        )
    };
    ($level:expr, $event:expr, $($message:tt)+) => {
        ::tracing::event!(
            $level,
            kiln_event = %$crate::events::Emitted(&$crate::events::Event::from($event)),
            $($message)+
        )
    };
}
pub use emit;

/// An event as [`emit!`] records it: its JSON object.
#[doc(hidden)]
pub struct Emitted<'a>(pub &'a Event);

impl fmt::Display for Emitted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self.0).map_err(|_| fmt::Error)?)
    }
}

/// The fields of one kind of event (or of several: [`WentDown`]), read
/// from a line with [`LogLine::get`].
pub trait EventFields: Sized {
    /// The events that carry these fields.
    const KINDS: &'static [EventKind];

    /// These fields of `event`, if it is one of [`EventFields::KINDS`].
    fn of(event: &Event) -> Option<&Self>;
}

/// Declares [`EventKind`] and [`Event`] once: each event with its name on
/// the wire and its fields (the struct of the event's name, or the one
/// named in parentheses when several events share it); from that
/// [`EventKind::ALL`], [`EventKind::as_str`] and [`Event::kind`], and for
/// a struct of one event `From<Struct> for Event` and [`EventFields`] (a
/// shared struct implements [`EventFields`] by hand).
macro_rules! event_set {
    ($($(#[doc = $doc:literal])+ $variant:ident $(($shared:ident))? = $name:literal,)+) => {
        /// One kind of event of the log (the `event` field of a line),
        /// written in snake_case (`build_started`).
        #[derive(
            Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum EventKind {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl EventKind {
            /// Every event kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),+];

            /// The name on the wire (`"build_started"`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)+
                }
            }
        }

        /// Every event kiln emits, with its fields: one JSON object tagged
        /// by `event` (`{"event":"swapped","module":...}`).
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[serde(tag = "event")]
        pub enum Event {
            $(
                $(#[doc = $doc])+
                #[serde(rename = $name)]
                $variant(event_set!(@fields $variant $($shared)?)),
            )+
        }

        impl Event {
            /// Its kind (its name on the wire).
            pub fn kind(&self) -> EventKind {
                match self {
                    $(Event::$variant(_) => EventKind::$variant,)+
                }
            }
        }

        $(event_set!(@single $variant $($shared)?);)+
    };
    (@fields $variant:ident) => { $variant };
    (@fields $variant:ident $shared:ident) => { $shared };
    (@single $variant:ident $shared:ident) => {};
    (@single $variant:ident) => {
        impl From<$variant> for Event {
            fn from(fields: $variant) -> Event {
                Event::$variant(fields)
            }
        }

        impl EventFields for $variant {
            const KINDS: &'static [EventKind] = &[EventKind::$variant];

            fn of(event: &Event) -> Option<&$variant> {
                match event {
                    Event::$variant(fields) => Some(fields),
                    _ => None,
                }
            }
        }
    };
}

event_set! {
    /// A save changed a module's sources (`ms`: the debounce).
    Change = "change",
    /// A build of a module started (`requests`: saves it covers).
    BuildStarted = "build_started",
    /// A build succeeded (`ms`).
    BuildFinished = "build_finished",
    /// A build failed (`ms`, `diagnostics` without ANSI colours).
    BuildFailed = "build_failed",
    /// How a build ran: `via` `rustc direct` or `cargo` (with `why`).
    BuildPath = "build_path",
    /// A library was copied to its private versioned file (`bytes`).
    Staged = "staged",
    /// A staged library was loaded and its fingerprint checked (`ms`).
    Loaded = "loaded",
    /// A version (or a request to a worker) was refused; the serving one
    /// keeps serving.
    Refused = "refused",
    /// The old engine's state was handed to the new one (`bytes`, `ms`).
    Handoff = "handoff",
    /// State sections the new engine does not know were not carried over.
    StateDropped = "state_dropped",
    /// A new version serves (`from_version`, `ms`: save to serving,
    /// `debounce_ms`, `build_ms`, `stage_load_ms`, `handoff_ms`,
    /// `handoff_bytes`, `restaged`).
    Swapped = "swapped",
    /// One call of a replay (`call`, `kernel`, `pass`, errors, `ms`,
    /// `verdict`, `reference`, `skipped`, ...).
    Replay = "replay",
    /// A version failed its replay (rolled back, or kept).
    ReplayFailed = "replay_failed",
    /// The last good version serves again (`ms`: the pause).
    RolledBack = "rolled_back",
    /// An old engine's thread ended (`ms`).
    Retired = "retired",
    /// A library copy was closed (`ms`).
    Unloaded = "unloaded",
    /// The contract changed: the host must restart (state saved).
    RestartRequired = "restart_required",
    /// A worker process started (`pid`).
    WorkerStarted = "worker_started",
    /// The last good point's state was written (`bytes`, `state_hash`).
    Checkpoint = "checkpoint",
    /// A worker crashed (`signal`, `call`, `kernel`, `op`, `elapsed_ms`,
    /// `last_words`, `old`).
    Crashed(WentDown) = "crashed",
    /// A call or operation in a worker ran past its deadline (as `crashed`).
    Hung(WentDown) = "hung",
    /// A new worker serves the last good version with the checkpoint
    /// (`from_version`, `pid`, `state_hash`, `checkpoint_hash`,
    /// `state_matches`).
    Restarted = "restarted",
    /// Ctrl-C: the state was saved to a file (`bytes`).
    StateSaved = "state_saved",
    /// A checkpoint reached its file under `target/kiln/state/`, behind
    /// the session (debug level: `path`, `bytes` (the file's length),
    /// `written` (what this copy wrote of it), `appended` (what changed
    /// appended to the kept file, else a whole new file), `state_hash`,
    /// `ms`, `sync_ms`).
    StateKept = "state_kept",
    /// At start: the previous session did not end cleanly, and its last
    /// good point's state, kept on disk, was restored (`path`, `bytes`,
    /// `state_hash`).
    StateRecovered = "state_recovered",
    /// At start: a kept last good point was not restored (`path`, `reason`:
    /// `ended_cleanly`, `state_given`, `restart_state`, `fresh`, `damaged`,
    /// `refused`; `kept`: where the file is now).
    StateNotRecovered = "state_not_recovered",
    /// At start: the workload's large residents were copied into memory
    /// while the modules built (`residents`, `bytes`, `ms`, `check_ms`).
    WorkloadPreloaded = "workload_preloaded",
    /// A kernel declaration does not parse (`file`, `line`).
    DeclarationInvalid = "declaration_invalid",
    /// The workload file was read again.
    WorkloadReloaded = "workload_reloaded",
    /// The workload file changed but cannot be read; the last one stays.
    WorkloadInvalid = "workload_invalid",
    /// The reference module was rebuilt and swapped in (`reference`).
    ReferenceSwapped = "reference_swapped",
    /// The served version is checked again (the workload or the reference
    /// changed).
    Recheck = "recheck",
    /// The result of a recheck (`pass`).
    Rechecked = "rechecked",
    /// Calls of a kernel were skipped (stale signature, not written on this
    /// backend: `kernel`, `calls`, `why`).
    ReplaySkipped = "replay_skipped",
    /// A control command was applied (`command`, `outcome`), or the socket
    /// is up (`socket`).
    Control = "control",
    /// A control command waits for a build (`command`).
    ControlQueued = "control_queued",
    /// A control connection or command was refused.
    ControlRefused = "control_refused",
    /// `undo`: an earlier good version's code serves again (`code_of`).
    Undone = "undone",
    /// `bless`: the last replay's outputs are the expected outputs (`path`).
    Blessed = "blessed",
    /// A control socket left by a session that did not exit was replaced.
    StaleSocketReplaced = "stale_socket_replaced",
    /// The keys a terminal session takes.
    Keys = "keys",
    /// Where expected outputs come from (the reference module, or
    /// `--reference BACKEND`).
    Reference = "reference",
    /// An autotuning step kept a tunable's value (`tunable`, `value`).
    Tuned = "tuned",
    /// A staging directory of a dead process was removed (`dir`).
    StaleStageRemoved = "stale_stage_removed",
    /// `--backend auto` chose a backend (`backend`).
    BackendChosen = "backend_chosen",
    /// A switch to another backend serves (`from`, `to`).
    Switched = "switched",
    /// A switch was refused (`backend`).
    SwitchRefused = "switch_refused",
    /// A switched-to backend failed: the previous one serves again.
    SwitchedBack = "switched_back",
    /// With `--backends`: every backend replayed (`backends`, `agree`).
    BackendsReplayed = "backends_replayed",
    /// One backend's outputs compared with the first's (`backend`,
    /// `against`, `agree`, `compared`, `agreed`).
    CrossCompared = "cross_compared",
    /// The outputs could not be cross-compared.
    CrossCompareFailed = "cross_compare_failed",
    /// At start: RUSTFLAGS, CARGO_ENCODED_RUSTFLAGS or `[target.*]
    /// rustflags` drop the loop alignment the verdicts rely on, or kiln was
    /// built without it (`crate::loop_alignment`).
    LoopAlignment = "loop_alignment",
    /// A command failed (`--log-format json`): the message says why.
    Error = "error",
    /// `kiln dev --ui`: the live page serves (`url`, with its token).
    Ui = "ui",
    /// After a timed replay's `replay` events: each call's achieved rates
    /// and the roofs they were judged against (`roof_gbs`, `roof_gflops`,
    /// `calls`).
    Roofline = "roofline",
}

/// Declares the field structs with the derives every one needs. An
/// `Option` field is left out of the line when `None` (as `tracing` left
/// out a `None` field before), and reads as `None` when absent.
macro_rules! event_fields {
    ($($(#[doc = $doc:literal])+ $name:ident { $($body:tt)* })+) => {
        $(
            $(#[doc = $doc])+
            #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
            pub struct $name { $($body)* }
        )+
    };
}

event_fields! {
    /// `change`: a save changed a module's sources.
    Change {
        pub module: String,
        /// The version serving when the change was seen.
        pub version: u64,
        /// From the first save of the burst to its being seen (the debounce).
        pub ms: f64,
        /// The changed files, comma-separated.
        pub paths: String,
        /// Whether the change needs a build (else: re-staged or reloaded).
        pub build: bool,
    }

    /// `build_started`.
    BuildStarted {
        pub module: String,
        pub version: u64,
        /// Saves this build covers (`kiln dev`'s build thread; absent for
        /// the build at start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub requests: Option<u64>,
    }

    /// `build_finished`.
    BuildFinished {
        pub module: String,
        pub version: u64,
        pub ms: f64,
    }

    /// `build_failed`.
    BuildFailed {
        pub module: String,
        pub version: u64,
        pub ms: f64,
        /// The compiler's messages without ANSI colours (absent when cargo
        /// did not run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub diagnostics: Option<String>,
    }

    /// `build_path`: how a build ran.
    BuildPath {
        pub module: String,
        /// `rustc direct` or `cargo`.
        pub via: String,
        /// Why cargo (absent for `rustc direct`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub why: Option<String>,
    }

    /// `staged`.
    Staged {
        pub module: String,
        pub version: u64,
        pub bytes: u64,
        pub ms: f64,
    }

    /// `loaded`.
    Loaded {
        pub module: String,
        pub version: u64,
        pub ms: f64,
    }

    /// `refused`: the message says why.
    Refused {
        pub module: String,
        /// The refused version, where one is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub version: Option<u64>,
    }

    /// `handoff`: the state handed from one engine to the next.
    Handoff {
        pub module: String,
        /// The version taking the state.
        pub version: u64,
        pub bytes: u64,
        /// Export plus import.
        pub ms: f64,
    }

    /// `state_dropped`: the message lists the sections.
    StateDropped {
        pub module: String,
    }

    /// `swapped`: a new version serves.
    Swapped {
        pub module: String,
        pub version: u64,
        pub from_version: u64,
        /// From the save to serving (stage, load and handoff when the swap
        /// did not follow a save).
        pub ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub debounce_ms: Option<f64>,
        /// Absent when re-staged without a build.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub build_ms: Option<f64>,
        pub stage_load_ms: f64,
        pub handoff_ms: f64,
        pub handoff_bytes: u64,
        /// The same library staged again (new declarations or sources).
        pub restaged: bool,
    }

    /// `replay`: one call of a replay.
    Replay {
        pub module: String,
        pub version: u64,
        pub call: u64,
        pub kernel: String,
        pub pass: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_abs_err: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_rel_err: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_ulps: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mismatches: Option<u64>,
        /// The median time of the call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ms: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mad_ms: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub verdict: Option<String>,
        /// The previous version's median, when it was timed against it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub previous_ms: Option<f64>,
        /// The median over the previous version's (below 1: faster), when
        /// it was timed against it, with its 95% interval.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ratio: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ratio_low: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ratio_high: Option<f64>,
        /// How the previous version was timed: `interleaved` (alive, timed
        /// alternately with this one) or `recorded` (its earlier timings).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ratio_against: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
        /// Where the expected outputs came from.
        pub reference: String,
        pub trials_passed: u64,
        pub trials: u64,
        /// Why the call was not run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub skipped: Option<String>,
    }

    /// `roofline`: a replay's calls on the roofline (those timed with
    /// declared work), and the peaks of the device that ran them.
    Roofline {
        pub module: String,
        pub version: u64,
        /// The memory roof (measured GB/s); `None` without measured peaks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub roof_gbs: Option<f64>,
        /// The f32 compute roof (measured GFLOP/s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub roof_gflops: Option<f64>,
        /// The i8 compute roof (GOP/s), where measured.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub roof_i8_gops: Option<f64>,
        pub calls: Vec<RooflinePoint>,
    }

    /// `replay_failed`: the message says what follows.
    ReplayFailed {
        pub module: String,
        pub version: u64,
    }

    /// `rolled_back`.
    RolledBack {
        pub module: String,
        /// The version now serving.
        pub version: u64,
        /// The pause of the handoff.
        pub ms: f64,
    }

    /// `retired`.
    Retired {
        pub module: String,
        pub version: u64,
        pub ms: f64,
    }

    /// `unloaded`.
    Unloaded {
        pub module: String,
        pub version: u64,
        pub ms: f64,
    }

    /// `restart_required`.
    RestartRequired {
        pub module: String,
        pub version: u64,
    }

    /// `worker_started`.
    WorkerStarted {
        pub module: String,
        pub version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pid: Option<u32>,
    }

    /// `checkpoint`.
    Checkpoint {
        pub module: String,
        pub version: u64,
        /// The length of the part written (sections earlier parts hold are
        /// pointed to).
        pub bytes: u64,
        /// The state's tensor bytes, wherever they are.
        #[serde(default)]
        pub state_bytes: u64,
        pub ms: f64,
        pub state_hash: String,
        /// The state was the current checkpoint's: nothing was written.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub unchanged: bool,
        /// Tensor bytes copied: the sections that changed since the last
        /// checkpoint (the others stay in the parts that hold them).
        #[serde(default)]
        pub copied_bytes: u64,
    }

    /// `crashed` and `hung`: a worker went down.
    WentDown {
        pub module: String,
        /// The version blamed (the one that ran).
        pub version: u64,
        /// The signal that killed it (`crashed`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub signal: Option<String>,
        /// The call that was running.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub call: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub kernel: Option<String>,
        /// The operation that was running.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub op: Option<String>,
        /// How long that call (or operation) had run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub elapsed_ms: Option<f64>,
        /// Its last lines of standard error.
        pub last_words: String,
        /// The one that went down was the previous version, timed against
        /// the new one (written only when true).
        #[serde(default, skip_serializing_if = "is_false")]
        pub old: bool,
    }

    /// `restarted`: a new worker serves the last good version.
    Restarted {
        pub module: String,
        pub version: u64,
        /// The version that went down.
        pub from_version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pid: Option<u32>,
        /// From the crash being noticed to serving again.
        pub ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub state_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub state_hash: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub checkpoint_hash: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub state_matches: Option<bool>,
    }

    /// `state_saved`.
    StateSaved {
        pub module: String,
        pub version: u64,
        pub bytes: u64,
    }

    /// `state_kept`.
    StateKept {
        pub module: String,
        pub path: String,
        pub bytes: u64,
        pub written: u64,
        pub appended: bool,
        pub state_hash: String,
        pub ms: f64,
        pub sync_ms: f64,
    }

    /// `workload_preloaded`.
    WorkloadPreloaded {
        pub residents: u64,
        pub bytes: u64,
        pub ms: f64,
        pub check_ms: f64,
    }

    /// `state_recovered`.
    StateRecovered {
        pub module: String,
        pub version: u64,
        pub path: String,
        pub bytes: u64,
        pub state_hash: String,
    }

    /// `state_not_recovered`.
    StateNotRecovered {
        pub module: String,
        pub path: String,
        pub reason: String,
        pub kept: String,
    }

    /// `declaration_invalid`.
    DeclarationInvalid {
        pub module: String,
        pub version: u64,
        pub file: String,
        pub line: u64,
    }

    /// `workload_reloaded`.
    WorkloadReloaded {
        pub module: String,
        pub version: u64,
    }

    /// `workload_invalid`.
    WorkloadInvalid {
        pub module: String,
        pub version: u64,
    }

    /// `reference_swapped`.
    ReferenceSwapped {
        pub module: String,
        pub version: u64,
        /// The new reference's label.
        pub reference: String,
    }

    /// `recheck`.
    Recheck {
        pub module: String,
        pub version: u64,
    }

    /// `rechecked`.
    Rechecked {
        pub module: String,
        pub version: u64,
        pub pass: bool,
    }

    /// `replay_skipped`.
    ReplaySkipped {
        pub module: String,
        pub version: u64,
        pub kernel: String,
        /// How many calls were skipped.
        pub calls: u64,
        pub why: String,
    }

    /// `control`: a command was applied (`module`, `version`, `command`,
    /// `outcome`), or the socket is up (`socket` alone).
    Control {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub module: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub version: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub command: Option<String>,
        /// `done`, `refused` or `queued`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub outcome: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub socket: Option<String>,
    }

    /// `control_queued`.
    ControlQueued {
        pub module: String,
        pub version: u64,
        pub command: String,
    }

    /// `control_refused`: the message says why.
    ControlRefused {}

    /// `undone`.
    Undone {
        pub module: String,
        pub version: u64,
        /// The earlier version whose code serves again.
        pub code_of: u64,
        pub ms: f64,
    }

    /// `blessed`.
    Blessed {
        pub module: String,
        pub version: u64,
        /// The workload file written.
        pub path: String,
    }

    /// `stale_socket_replaced`.
    StaleSocketReplaced {}

    /// `keys`: the message lists them.
    Keys {}

    /// `reference`: the message says where expected outputs come from.
    Reference {}

    /// `tuned`.
    Tuned {
        pub module: String,
        pub version: u64,
        pub tunable: String,
        pub value: String,
        /// The value came from the tuning cache.
        pub cached: bool,
    }

    /// `stale_stage_removed`.
    StaleStageRemoved {
        pub dir: String,
    }

    /// `backend_chosen`.
    BackendChosen {
        pub backend: String,
    }

    /// `switched`: another backend serves, with the state.
    Switched {
        pub module: String,
        pub version: u64,
        /// The labels of the versions switched from and to.
        pub from: String,
        pub to: String,
        pub handoff_bytes: u64,
        pub handoff_ms: f64,
        pub build_ms: f64,
        /// State sections not carried over, comma-separated.
        pub dropped: String,
        /// State sections the new engine defaulted, comma-separated.
        pub defaulted: String,
    }

    /// `switch_refused`: the message says why.
    SwitchRefused {
        /// The backend asked for (absent when none was named).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub backend: Option<String>,
    }

    /// `switched_back`.
    SwitchedBack {
        pub module: String,
        pub version: u64,
    }

    /// `backends_replayed`.
    BackendsReplayed {
        pub module: String,
        pub version: u64,
        /// The backends, comma-separated.
        pub backends: String,
        /// Every backend passed.
        pub passed: bool,
        /// Every cross-comparison agreed (false when there was none).
        pub agree: bool,
        /// The side-by-side table.
        pub table: String,
    }

    /// `cross_compared`.
    CrossCompared {
        pub module: String,
        pub backend: String,
        /// The backend compared against (the first).
        pub against: String,
        pub agree: bool,
        /// Calls compared, and of those the ones that agreed.
        pub compared: u64,
        pub agreed: u64,
    }

    /// `cross_compare_failed`.
    CrossCompareFailed {
        pub module: String,
    }

    /// `loop_alignment`: the message says what drops it.
    LoopAlignment {}

    /// `error`: the message says why.
    Error {}

    /// `ui`: the live page of `kiln dev --ui` serves at `url` (its token
    /// in the query).
    Ui {
        pub url: String,
    }
}

/// One call of a [`Roofline`] event: what it achieved at its median time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RooflinePoint {
    pub call: u64,
    pub kernel: String,
    /// The call's arguments (`f32[1048576] f32[1048576]`).
    pub dims: String,
    pub ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gbs: Option<f64>,
    /// flop/byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity: Option<f64>,
    /// Achieved / roofline bound x 100; `None` without measured peaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// `f32` or `i8`: the compute roof that judges it.
    pub compute: String,
    /// `memory` or `compute`: the roof that bounds it (above a memory
    /// roof: the data stayed in a cache).
    pub bound: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl EventFields for WentDown {
    const KINDS: &'static [EventKind] = &[EventKind::Crashed, EventKind::Hung];

    fn of(event: &Event) -> Option<&WentDown> {
        match event {
            Event::Crashed(fields) | Event::Hung(fields) => Some(fields),
            _ => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event {s:?}"))
    }
}

/// One line of `kiln --log-format json`: the fields every line may carry,
/// typed, the others (`timestamp`, `target`, each event's own) in
/// [`LogLine::fields`], and kiln's event with all its fields typed in
/// [`LogLine::typed`] ([`LogLine::get`]). A line that is not a JSON object (text on standard
/// output) is kept as its [`LogLine::message`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct LogLine {
    /// The event, if the line names one of kiln's (an unknown name stays
    /// in `fields` under `event`; so does any typed field of another type).
    pub event: Option<EventKind>,
    /// The event with its fields, if the line names one of kiln's and its
    /// fields read as that event's (a line of another kiln version may
    /// not). Its fields stay readable by key too.
    pub typed: Option<Event>,
    /// `INFO`, `WARN`, ... (`None` for a line that was not JSON).
    pub level: Option<String>,
    /// The human message.
    pub message: String,
    pub module: Option<String>,
    pub version: Option<u64>,
    /// A duration, where one applies.
    pub ms: Option<f64>,
    /// Every other field.
    pub fields: Map<String, Value>,
}

/// Takes `key` out of `fields` if `take` accepts its value (a value of
/// another type stays among the fields).
fn take_typed<T>(
    fields: &mut Map<String, Value>,
    key: &str,
    take: impl FnOnce(&Value) -> Option<T>,
) -> Option<T> {
    let typed = take(fields.get(key)?)?;
    fields.remove(key);
    Some(typed)
}

impl From<Map<String, Value>> for LogLine {
    fn from(fields: Map<String, Value>) -> LogLine {
        let string = |v: &Value| v.as_str().map(str::to_string);
        let known = fields
            .get("event")
            .and_then(Value::as_str)
            .is_some_and(|name| name.parse::<EventKind>().is_ok());
        // The whole object is the event (serde skips the keys it does not
        // know: timestamp, level, message, target, a newer kiln's fields).
        let object = Value::Object(fields);
        let typed = if known {
            Event::deserialize(&object).ok()
        } else {
            None
        };
        let Value::Object(mut fields) = object else {
            unreachable!("built as an object above")
        };
        LogLine {
            typed,
            event: take_typed(&mut fields, "event", |v| v.as_str()?.parse().ok()),
            level: take_typed(&mut fields, "level", string),
            message: take_typed(&mut fields, "message", string).unwrap_or_default(),
            module: take_typed(&mut fields, "module", string),
            version: take_typed(&mut fields, "version", Value::as_u64),
            ms: take_typed(&mut fields, "ms", Value::as_f64),
            fields,
        }
    }
}

impl From<LogLine> for Map<String, Value> {
    fn from(line: LogLine) -> Map<String, Value> {
        let mut map = line.fields;
        let typed = [
            ("event", line.event.map(|k| Value::from(k.as_str()))),
            ("level", line.level.map(Value::from)),
            ("message", Some(Value::from(line.message))),
            ("module", line.module.map(Value::from)),
            ("version", line.version.map(Value::from)),
            ("ms", line.ms.map(Value::from)),
        ];
        for (key, value) in typed {
            if let Some(value) = value {
                map.insert(key.to_string(), value);
            }
        }
        map
    }
}

impl LogLine {
    /// Reads one line: a JSON object as its fields, anything else as a
    /// plain message.
    pub fn parse(line: &str) -> LogLine {
        serde_json::from_str(line).unwrap_or_else(|_| LogLine {
            message: line.to_string(),
            ..LogLine::default()
        })
    }

    /// The event, if kiln's.
    pub fn kind(&self) -> Option<EventKind> {
        self.event
    }

    /// The event with its typed fields, if kiln's and they read.
    pub fn event_typed(&self) -> Option<&Event> {
        self.typed.as_ref()
    }

    /// The typed fields of this line's event, if it is one that carries
    /// `T` (`line.get::<events::Swapped>()`).
    pub fn get<T: EventFields>(&self) -> Option<&T> {
        T::of(self.typed.as_ref()?)
    }

    /// Whether this line is a `kind` event.
    pub fn is(&self, kind: EventKind) -> bool {
        self.event == Some(kind)
    }

    /// Whether this line is one of `kinds`.
    pub fn is_any(&self, kinds: &[EventKind]) -> bool {
        self.event.is_some_and(|k| kinds.contains(&k))
    }

    /// The human message (`""` if none).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn module(&self) -> Option<&str> {
        self.module.as_deref()
    }

    pub fn version(&self) -> Option<u64> {
        self.version
    }

    pub fn ms(&self) -> Option<f64> {
        self.ms
    }

    /// Another field (not one of the typed ones) as written.
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// A string field (`module` included).
    pub fn str(&self, key: &str) -> Option<&str> {
        match key {
            "module" => self.module(),
            "message" => Some(self.message()),
            "level" => self.level.as_deref(),
            _ => self.field(key).and_then(Value::as_str),
        }
    }

    /// An unsigned number field (`version` included).
    pub fn u64(&self, key: &str) -> Option<u64> {
        match key {
            "version" => self.version,
            _ => self.field(key).and_then(Value::as_u64),
        }
    }

    /// A number field (`ms` and `version` included).
    pub fn f64(&self, key: &str) -> Option<f64> {
        match key {
            "ms" => self.ms,
            "version" => self.version.map(|v| v as f64),
            _ => self.field(key).and_then(Value::as_f64),
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.field(key).and_then(Value::as_bool)
    }

    /// The line as JSON again (fields in another order than written).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The line as one JSON object (for messages and logs).
impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_serde_names_and_parse_back() {
        let mut seen = BTreeSet::new();
        for &kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::String(kind.as_str().into())
            );
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            assert!(seen.insert(kind.as_str()), "{kind} twice");
            assert!(
                kind.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{kind}"
            );
        }
        assert!("no_such_event".parse::<EventKind>().is_err());
    }

    #[test]
    fn a_line_reads_typed_and_keeps_the_rest() {
        let line = LogLine::parse(
            r#"{"timestamp":"t","level":"INFO","message":"swapped v1 -> v2","event":"swapped","module":"kernel-cpu","version":2,"from_version":1,"ms":12.5,"debounce_ms":3.0,"stage_load_ms":1.5,"handoff_ms":0.25,"handoff_bytes":4096,"restaged":false,"target":"kiln::supervisor::session"}"#,
        );
        assert_eq!(line.kind(), Some(EventKind::Swapped));
        assert!(line.is(EventKind::Swapped));
        let swapped = line.get::<Swapped>().expect("typed swapped fields");
        assert_eq!(
            swapped,
            &Swapped {
                module: "kernel-cpu".into(),
                version: 2,
                from_version: 1,
                ms: 12.5,
                debounce_ms: Some(3.0),
                build_ms: None,
                stage_load_ms: 1.5,
                handoff_ms: 0.25,
                handoff_bytes: 4096,
                restaged: false,
            }
        );
        assert_eq!(
            line.event_typed().map(Event::kind),
            Some(EventKind::Swapped)
        );
        assert_eq!(line.get::<Loaded>(), None);
        assert_eq!(line.get::<WentDown>(), None);
        // The fields read by key too.
        assert_eq!(line.module(), Some("kernel-cpu"));
        assert_eq!(line.str("module"), Some("kernel-cpu"));
        assert_eq!(line.version(), Some(2));
        assert_eq!(line.u64("version"), Some(2));
        assert_eq!(line.u64("from_version"), Some(1));
        assert_eq!(line.ms(), Some(12.5));
        assert_eq!(line.f64("ms"), Some(12.5));
        assert_eq!(line.bool("restaged"), Some(false));
        assert_eq!(line.level.as_deref(), Some("INFO"));
        assert_eq!(line.message(), "swapped v1 -> v2");
        assert_eq!(line.str("target"), Some("kiln::supervisor::session"));
        let again = LogLine::parse(&line.to_string());
        assert_eq!(again, line);
        assert_eq!(line.to_json()["event"], "swapped");
    }

    #[test]
    fn unknown_events_and_plain_text_are_kept() {
        let line = LogLine::parse(r#"{"level":"INFO","message":"m","event":"module_own"}"#);
        assert_eq!(line.kind(), None);
        assert_eq!(line.event_typed(), None);
        assert_eq!(line.str("event"), Some("module_own"));
        assert_eq!(line.to_json()["event"], "module_own");
        let text = LogLine::parse("watching kernels/ (not JSON)");
        assert_eq!(text.kind(), None);
        assert_eq!(text.event_typed(), None);
        assert_eq!(text.level, None);
        assert_eq!(text.message(), "watching kernels/ (not JSON)");
    }

    #[test]
    fn a_kiln_event_with_unknown_or_missing_fields_still_reads() {
        // A field this kiln does not know (a newer one's): the event reads,
        // and the field stays readable by key.
        let line = LogLine::parse(
            r#"{"level":"INFO","message":"m","event":"loaded","module":"kernel-cpu","version":3,"ms":1.0,"new_field":[1,2]}"#,
        );
        assert_eq!(
            line.get::<Loaded>(),
            Some(&Loaded {
                module: "kernel-cpu".into(),
                version: 3,
                ms: 1.0,
            })
        );
        assert_eq!(line.field("new_field"), Some(&serde_json::json!([1, 2])));
        // A field missing or of another type: the kind reads, the fields
        // do not (they stay readable by key).
        for text in [
            r#"{"message":"m","event":"loaded","version":3,"ms":1.0}"#,
            r#"{"message":"m","event":"loaded","module":"kernel-cpu","version":"3","ms":1.0}"#,
        ] {
            let line = LogLine::parse(text);
            assert_eq!(line.kind(), Some(EventKind::Loaded), "{text}");
            assert_eq!(line.event_typed(), None, "{text}");
            assert_eq!(line.ms(), Some(1.0), "{text}");
        }
    }

    /// Lines written by the JSON subscriber of `--log-format json` while
    /// `f` runs on this thread.
    fn json_lines(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
            type Writer = Buffer;
            fn make_writer(&'a self) -> Buffer {
                self.clone()
            }
        }
        let buffer = Buffer::default();
        let subscriber = crate::logging::json_subscriber(
            buffer.clone(),
            tracing_subscriber::EnvFilter::new("trace"),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    /// One event of each kind, `Option` fields set in some and not in
    /// others.
    fn one_of_each() -> Vec<Event> {
        let m = || "kernel-cpu".to_string();
        let s = |t: &str| t.to_string();
        let down = |old: bool| WentDown {
            module: m(),
            version: 4,
            signal: (!old).then(|| s("SIGSEGV")),
            call: (!old).then_some(7),
            kernel: (!old).then(|| s("misbehave")),
            op: (!old).then(|| s("call")),
            elapsed_ms: (!old).then_some(12.5),
            last_words: s("thread 'x' panicked\nat src/lib.rs:1"),
            old,
        };
        vec![
            Change {
                module: m(),
                version: 1,
                ms: 41.5,
                paths: s("a.rs,b.rs"),
                build: true,
            }
            .into(),
            BuildStarted {
                module: m(),
                version: 1,
                requests: Some(2),
            }
            .into(),
            BuildFinished {
                module: m(),
                version: 1,
                ms: 812.0,
            }
            .into(),
            BuildFailed {
                module: m(),
                version: 1,
                ms: 90.5,
                diagnostics: Some(s("error[E0308]: \"mismatched\"\n --> x.rs")),
            }
            .into(),
            BuildPath {
                module: m(),
                via: s("rustc direct"),
                why: None,
            }
            .into(),
            Staged {
                module: m(),
                version: 2,
                bytes: 901_234,
                ms: 3.25,
            }
            .into(),
            Loaded {
                module: m(),
                version: 2,
                ms: 1.5,
            }
            .into(),
            Refused {
                module: m(),
                version: None,
            }
            .into(),
            Handoff {
                module: m(),
                version: 2,
                bytes: 1 << 20,
                ms: 0.75,
            }
            .into(),
            StateDropped { module: m() }.into(),
            Swapped {
                module: m(),
                version: 2,
                from_version: 1,
                ms: 950.25,
                debounce_ms: Some(40.0),
                build_ms: None,
                stage_load_ms: 4.5,
                handoff_ms: 0.5,
                handoff_bytes: 4096,
                restaged: true,
            }
            .into(),
            Replay {
                module: m(),
                version: 2,
                call: 3,
                kernel: s("saxpy"),
                pass: false,
                max_abs_err: Some(1.0),
                max_rel_err: Some(0.5),
                max_ulps: Some(1 << 40),
                mismatches: Some(65536),
                ms: Some(0.125),
                mad_ms: Some(0.01),
                verdict: Some(s("slower")),
                previous_ms: Some(0.1),
                ratio: Some(1.25),
                ratio_low: Some(1.125),
                ratio_high: Some(1.375),
                ratio_against: Some(s("interleaved")),
                error: None,
                reference: s("vs stored outputs"),
                trials_passed: 0,
                trials: 3,
                skipped: None,
            }
            .into(),
            ReplayFailed {
                module: m(),
                version: 2,
            }
            .into(),
            RolledBack {
                module: m(),
                version: 3,
                ms: 0.5,
            }
            .into(),
            Retired {
                module: m(),
                version: 1,
                ms: 0.25,
            }
            .into(),
            Unloaded {
                module: m(),
                version: 1,
                ms: 0.5,
            }
            .into(),
            RestartRequired {
                module: m(),
                version: 2,
            }
            .into(),
            WorkerStarted {
                module: m(),
                version: 1,
                pid: Some(4242),
            }
            .into(),
            Checkpoint {
                module: m(),
                version: 2,
                bytes: 8192,
                state_bytes: 1 << 30,
                ms: 1.0,
                state_hash: s("ab12"),
                unchanged: true,
                copied_bytes: 0,
            }
            .into(),
            Event::Crashed(down(false)),
            Event::Hung(down(true)),
            Restarted {
                module: m(),
                version: 5,
                from_version: 4,
                pid: Some(4243),
                ms: 120.0,
                state_bytes: Some(8192),
                state_hash: Some(s("ab12")),
                checkpoint_hash: Some(s("ab12")),
                state_matches: Some(true),
            }
            .into(),
            StateSaved {
                module: m(),
                version: 5,
                bytes: 8192,
            }
            .into(),
            StateKept {
                module: m(),
                path: s("target/kiln/state/kernel-cpu.last-good.snapshot"),
                bytes: 4096,
                written: 512,
                appended: true,
                state_hash: s("00ff"),
                ms: 5.5,
                sync_ms: 2.5,
            }
            .into(),
            StateRecovered {
                module: m(),
                version: 1,
                path: s("target/kiln/state/kernel-cpu.last-good.snapshot"),
                bytes: 4096,
                state_hash: s("00ff"),
            }
            .into(),
            StateNotRecovered {
                module: m(),
                path: s("target/kiln/state/kernel-cpu.last-good.snapshot"),
                reason: s("ended_cleanly"),
                kept: s("target/kiln/state/kernel-cpu.previous.snapshot"),
            }
            .into(),
            WorkloadPreloaded {
                residents: 2,
                bytes: 1 << 30,
                ms: 2100.0,
                check_ms: 480.0,
            }
            .into(),
            DeclarationInvalid {
                module: m(),
                version: 5,
                file: s("kernels/declarations/x.toml"),
                line: 12,
            }
            .into(),
            WorkloadReloaded {
                module: m(),
                version: 5,
            }
            .into(),
            WorkloadInvalid {
                module: m(),
                version: 5,
            }
            .into(),
            ReferenceSwapped {
                module: m(),
                version: 5,
                reference: s("kernel-reference-v2"),
            }
            .into(),
            Recheck {
                module: m(),
                version: 5,
            }
            .into(),
            Rechecked {
                module: m(),
                version: 5,
                pass: true,
            }
            .into(),
            ReplaySkipped {
                module: m(),
                version: 5,
                kernel: s("relu"),
                calls: 2,
                why: s("stale signature"),
            }
            .into(),
            Control {
                module: Some(m()),
                version: Some(5),
                command: Some(s("replay")),
                outcome: Some(s("done")),
                socket: None,
            }
            .into(),
            ControlQueued {
                module: m(),
                version: 5,
                command: s("bless"),
            }
            .into(),
            ControlRefused {}.into(),
            Undone {
                module: m(),
                version: 6,
                code_of: 3,
                ms: 0.5,
            }
            .into(),
            Blessed {
                module: m(),
                version: 6,
                path: s("target/kiln/x.kiln"),
            }
            .into(),
            StaleSocketReplaced {}.into(),
            Keys {}.into(),
            Reference {}.into(),
            Tuned {
                module: m(),
                version: 6,
                tunable: s("chunk"),
                value: s("4096"),
                cached: false,
            }
            .into(),
            StaleStageRemoved {
                dir: s("target/kiln-stage/99"),
            }
            .into(),
            BackendChosen {
                backend: s("vulkan"),
            }
            .into(),
            Switched {
                module: s("kernel-vulkan"),
                version: 7,
                from: s("kernel-cpu-v6"),
                to: s("kernel-vulkan-v7"),
                handoff_bytes: 8192,
                handoff_ms: 2.5,
                build_ms: 1500.0,
                dropped: s(""),
                defaulted: s("scratch"),
            }
            .into(),
            SwitchRefused {
                backend: Some(s("cuda")),
            }
            .into(),
            SwitchedBack {
                module: m(),
                version: 8,
            }
            .into(),
            BackendsReplayed {
                module: m(),
                version: 8,
                backends: s("kernel-cpu-v8,kernel-vulkan-v2"),
                passed: true,
                agree: false,
                table: s("call | a | b\n0 | ok | ok"),
            }
            .into(),
            CrossCompared {
                module: s("kernel-vulkan"),
                backend: s("kernel-vulkan-v2"),
                against: s("kernel-cpu-v8"),
                agree: false,
                compared: 10,
                agreed: 9,
            }
            .into(),
            CrossCompareFailed { module: m() }.into(),
            LoopAlignment {}.into(),
            Error {}.into(),
            Ui {
                url: s("http://127.0.0.1:40123/?token=00ff"),
            }
            .into(),
            Roofline {
                module: m(),
                version: 2,
                roof_gbs: Some(48.75),
                roof_gflops: Some(512.0),
                roof_i8_gops: None,
                calls: vec![RooflinePoint {
                    call: 3,
                    kernel: s("saxpy"),
                    dims: s("f32[1024] f32[1024]"),
                    ms: 0.125,
                    gflops: Some(0.016),
                    gbs: Some(0.098),
                    intensity: Some(1.0 / 6.0),
                    percent: Some(0.2),
                    compute: s("f32"),
                    bound: s("memory"),
                }],
            }
            .into(),
        ]
    }

    #[test]
    fn one_of_each_covers_every_kind_and_its_tag_is_its_kind() {
        let events = one_of_each();
        let kinds: Vec<EventKind> = events.iter().map(Event::kind).collect();
        assert_eq!(kinds, EventKind::ALL);
        for event in &events {
            assert_eq!(
                serde_json::to_value(event).unwrap()["event"],
                event.kind().as_str()
            );
        }
    }

    /// Every event, emitted with [`emit!`] through the JSON formatter of
    /// `--log-format json`, reads back as itself; the line has the keys of
    /// tracing-subscriber's flattened JSON format, in its order.
    #[test]
    fn every_event_round_trips_through_the_json_formatter() {
        let events = one_of_each();
        let lines = json_lines(|| {
            for (i, event) in events.iter().enumerate() {
                emit!(
                    tracing::Level::WARN,
                    event.clone(),
                    "event {i}: \"{}\"",
                    event.kind()
                );
            }
        });
        assert_eq!(lines.len(), events.len(), "{lines:#?}");
        for (i, (text, event)) in lines.iter().zip(&events).enumerate() {
            let line = LogLine::parse(text);
            assert_eq!(line.event_typed(), Some(event), "{text}");
            assert_eq!(line.kind(), Some(event.kind()), "{text}");
            assert_eq!(line.message(), format!("event {i}: \"{}\"", event.kind()));
            assert_eq!(line.level.as_deref(), Some("WARN"));
            assert_eq!(line.str("target"), Some(module_path!()));
            // Keys: timestamp, level, message, the event's (tag first, no
            // `None` field, nothing else), target.
            let object: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            let Value::Object(fields) = serde_json::to_value(event).unwrap() else {
                panic!("an event is an object")
            };
            assert!(fields.values().all(|v| !v.is_null()), "{text}");
            let mut expected = vec!["timestamp", "level", "message"];
            expected.extend(fields.keys().map(String::as_str));
            expected.push("target");
            let (mut sorted_keys, mut sorted_expected) = (keys.clone(), expected.clone());
            sorted_keys.sort_unstable();
            sorted_expected.sort_unstable();
            assert_eq!(sorted_keys, sorted_expected, "{text}");
            // Order: serde_json's Map is sorted, so the order is read off
            // the text.
            let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
            assert!(text.starts_with("{\"timestamp\":\""), "{text}");
            assert!(
                at("timestamp") < at("level") && at("level") < at("message"),
                "{text}"
            );
            assert!(at("message") < at("event"), "{text}");
            assert!(
                text.ends_with(&format!("\"target\":\"{}\"}}", module_path!())),
                "{text}"
            );
            assert!(!text.contains(EVENT_FIELD), "{text}");
        }
        // `None` fields are left out, `old: false` too.
        let crashed = LogLine::parse(&lines[19]);
        assert!(crashed.is(EventKind::Crashed));
        assert_eq!(crashed.field("old"), None);
        let hung = LogLine::parse(&lines[20]);
        assert_eq!(hung.bool("old"), Some(true));
        assert_eq!(hung.field("signal"), None);
        assert_eq!(hung.get::<WentDown>().map(|d| d.old), Some(true));
    }

    /// A module's own events (fields of every kind, no kiln event) are
    /// written as they come, and read back by key.
    #[test]
    fn module_events_keep_their_fields() {
        let lines = json_lines(|| {
            tracing::info!(
                target: "kernel_cpu::engine",
                answer = 42u64,
                delta = -3i64,
                ratio = 0.5,
                flag = true,
                name = "x\"y",
                shown = %"displayed",
                debugged = ?vec![1, 2],
                kiln_event = "not json",
                event = "module_own",
                "hello {}",
                1
            );
        });
        assert_eq!(lines.len(), 1);
        let line = LogLine::parse(&lines[0]);
        assert_eq!(line.kind(), None);
        assert_eq!(line.event_typed(), None);
        assert_eq!(line.message(), "hello 1");
        assert_eq!(line.level.as_deref(), Some("INFO"));
        assert_eq!(line.str("target"), Some("kernel_cpu::engine"));
        assert_eq!(line.u64("answer"), Some(42));
        assert_eq!(line.field("delta"), Some(&Value::from(-3)));
        assert_eq!(line.f64("ratio"), Some(0.5));
        assert_eq!(line.bool("flag"), Some(true));
        assert_eq!(line.str("name"), Some("x\"y"));
        assert_eq!(line.str("shown"), Some("displayed"));
        assert_eq!(line.str("debugged"), Some("[1, 2]"));
        assert_eq!(line.str(EVENT_FIELD), Some("not json"));
        assert_eq!(line.str("event"), Some("module_own"));
    }

    /// The names in README.md's "JSON events" paragraph: the backticked
    /// words inside the parentheses after "carry `event` (".
    fn readme_event_names() -> Vec<String> {
        let readme_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&readme_path).expect("README.md");
        let opening = "JSON events (`--log-format json`) carry `event` (";
        let start = readme
            .find(opening)
            .expect("README.md has the \"JSON events\" paragraph")
            + opening.len();
        let list = &readme[start..];
        let list = &list[..list.find(')').expect("the event list ends with `)`")];
        list.split(',')
            .map(|item| {
                let item = item.trim();
                item.strip_prefix('`')
                    .and_then(|s| s.strip_suffix('`'))
                    .unwrap_or_else(|| panic!("README.md event list: {item:?} is not `name`"))
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn readme_lists_every_event_and_nothing_else() {
        let listed = readme_event_names();
        let listed_set: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
        assert_eq!(
            listed.len(),
            listed_set.len(),
            "README.md lists an event twice"
        );
        let all: BTreeSet<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        let missing: Vec<_> = all.difference(&listed_set).collect();
        let extra: Vec<_> = listed_set.difference(&all).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "README.md's JSON events paragraph (\"carry `event` (...)\") must list \
             exactly EventKind::ALL (harness/src/events.rs): missing {missing:?}, \
             not events {extra:?}"
        );
    }

    /// Every kind is emitted somewhere in harness/src (`events::Name {`,
    /// or `Event::Name(` for a shared struct, outside this file): a kind
    /// no site emits is a dead name.
    #[test]
    fn every_kind_is_emitted_somewhere() {
        fn sources(dir: &std::path::Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).expect("harness/src").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("events.rs")
                {
                    out.push_str(&std::fs::read_to_string(&path).expect("source"));
                }
            }
        }
        let mut text = String::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut text,
        );
        let unused: Vec<_> = EventKind::ALL
            .iter()
            .filter(|k| {
                !text.contains(&format!("events::{k:?} {{"))
                    && !text.contains(&format!("Event::{k:?}("))
            })
            .collect();
        assert!(unused.is_empty(), "never emitted: {unused:?}");
    }
}

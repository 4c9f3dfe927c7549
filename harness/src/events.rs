//! The events of the live reload log, as one typed set: [`EventKind`] names
//! every event kiln emits (the `event` field of a log line), and
//! [`LogLine`] reads one line of `--log-format json` back, for the tests,
//! the benchmarks and any tool that follows a session.
//!
//! Every emit site names its event through the enum; the line itself keeps
//! the string (`"event":"swapped"`), so the JSON lines are what README.md's
//! "JSON events" paragraph documents (a unit test below checks that it
//! lists exactly [`EventKind::ALL`]):
//!
//! ```ignore
//! tracing::info!(event = %EventKind::Swapped, module = %module, version, "...");
//! ```
//!
//! Kernel modules do not depend on this crate; a module that logged an
//! `event` field of its own would arrive as an unknown name, which
//! [`LogLine`] keeps in [`LogLine::fields`] (none of the bundled modules
//! does).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Declares [`EventKind`] once: each variant with its name on the wire, and
/// from that [`EventKind::ALL`] and [`EventKind::as_str`].
macro_rules! event_kinds {
    ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal,)+) => {
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
    };
}

event_kinds! {
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
    Crashed = "crashed",
    /// A call or operation in a worker ran past its deadline (as `crashed`).
    Hung = "hung",
    /// A new worker serves the last good version with the checkpoint
    /// (`from_version`, `pid`, `state_hash`, `checkpoint_hash`,
    /// `state_matches`).
    Restarted = "restarted",
    /// Ctrl-C: the state was saved to a file (`bytes`).
    StateSaved = "state_saved",
    /// A checkpoint reached its file under `target/kiln/state/`, behind
    /// the session (debug level: `path`, `bytes`, `state_hash`, `ms`,
    /// `sync_ms`).
    StateKept = "state_kept",
    /// At start: the previous session did not end cleanly, and its last
    /// good point's state, kept on disk, was restored (`path`, `bytes`,
    /// `state_hash`).
    StateRecovered = "state_recovered",
    /// At start: a kept last good point was not restored (`path`, `reason`:
    /// `ended_cleanly`, `state_given`, `restart_state`, `fresh`, `damaged`,
    /// `refused`; `kept`: where the file is now).
    StateNotRecovered = "state_not_recovered",
    /// A kernel declaration does not parse (`file`, `line`, ...).
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
    /// backend: `kernel`, `skipped`).
    ReplaySkipped = "replay_skipped",
    /// A control command was applied (`command`), or the socket is up
    /// (`socket`).
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
    /// An autotuning step kept a tunable's value (`tunable`).
    Tuned = "tuned",
    /// A staging directory of a dead process was removed (`dir`).
    StaleStageRemoved = "stale_stage_removed",
    /// `--backend auto` chose a backend (`backend`).
    BackendChosen = "backend_chosen",
    /// A switch to another backend serves (`from`).
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
/// typed, and the others (`timestamp`, `target`, each event's own) in
/// [`LogLine::fields`]. A line that is not a JSON object (text on standard
/// output) is kept as its [`LogLine::message`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct LogLine {
    /// The event, if the line names one of kiln's (an unknown name stays
    /// in `fields` under `event`; so does any typed field of another type).
    pub event: Option<EventKind>,
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
    fn from(mut fields: Map<String, Value>) -> LogLine {
        let string = |v: &Value| v.as_str().map(str::to_string);
        LogLine {
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
            r#"{"timestamp":"t","level":"INFO","message":"swapped v1 -> v2","event":"swapped","module":"kernel-cpu","version":2,"from_version":1,"ms":12.5,"restaged":false,"target":"kiln::supervisor::session"}"#,
        );
        assert_eq!(line.kind(), Some(EventKind::Swapped));
        assert!(line.is(EventKind::Swapped));
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
        assert_eq!(line.str("event"), Some("module_own"));
        assert_eq!(line.to_json()["event"], "module_own");
        let text = LogLine::parse("watching kernels/ (not JSON)");
        assert_eq!(text.kind(), None);
        assert_eq!(text.level, None);
        assert_eq!(text.message(), "watching kernels/ (not JSON)");
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

    /// Every kind is emitted somewhere in harness/src (`EventKind::Name`
    /// outside this file): a kind no site emits is a dead name.
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
                let path = format!("EventKind::{k:?}");
                !text
                    .match_indices(&path)
                    .any(|(i, _)| !text[i + path.len()..].starts_with(char::is_alphanumeric))
            })
            .collect();
        assert!(unused.is_empty(), "never emitted: {unused:?}");
    }
}

//! The live reload log: one readable line per event (`human`), or one JSON
//! object per line (`json`) with the fields `event`, `module`, `version`
//! and `ms` at the top level, for tools and tests to follow a session.
//!
//! kiln's events are ordinary `tracing` events emitted with
//! [`crate::events::emit!`]: the message is for people, and the event's
//! typed fields ([`crate::events::Event`]) travel as one JSON object in the
//! field [`EVENT_FIELD`], which [`JsonLine`] splices into the line (the
//! human lines print the message alone). Modules' own events arrive here
//! too (the host hands its dispatcher to every module it loads), their
//! fields written as they come. `RUST_LOG` filters as usual (default:
//! `info`).

use std::fmt;
use std::io::IsTerminal;
use std::time::Instant;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::events::EVENT_FIELD;

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (human or json)")),
        }
    }
}

/// Human lines: `  1.234s  message` with the level shown when it is not
/// INFO, in colour on a terminal.
struct HumanLine {
    start: Instant,
    ansi: bool,
}

#[derive(Default)]
struct MessageOnly {
    message: String,
}

impl Visit for MessageOnly {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write;
            let _ = write!(self.message, "{value:?}");
        }
    }
}

impl<S, N> FormatEvent<S, N> for HumanLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Per-call replay events are for tools; people read the table.
        if event.metadata().target() == "kiln::workload::replay" {
            return Ok(());
        }
        let mut visitor = MessageOnly::default();
        event.record(&mut visitor);
        let secs = self.start.elapsed().as_secs_f64();
        let meta = event.metadata();
        writer.write_str(&human_text(
            secs,
            *meta.level(),
            meta.target(),
            &visitor.message,
            self.ansi,
        ))
    }
}

/// One human line (with its newline): `  1.234s  message`, the level when
/// it is not INFO, the target when it is not kiln's.
fn human_text(secs: f64, level: Level, target: &str, message: &str, ansi: bool) -> String {
    let (tag, colour) = match level {
        Level::ERROR => ("error: ", "\x1b[1;31m"),
        Level::WARN => ("warning: ", "\x1b[1;33m"),
        Level::INFO => ("", ""),
        Level::DEBUG => ("debug: ", "\x1b[2m"),
        Level::TRACE => ("trace: ", "\x1b[2m"),
    };
    let origin = if target.starts_with("kiln") {
        String::new()
    } else {
        format!("[{target}] ")
    };
    if ansi && !colour.is_empty() {
        format!("\x1b[2m{secs:8.3}s\x1b[0m  {colour}{tag}\x1b[0m{origin}{message}\n")
    } else if ansi {
        format!("\x1b[2m{secs:8.3}s\x1b[0m  {origin}{message}\n")
    } else {
        format!("{secs:8.3}s  {tag}{origin}{message}\n")
    }
}

/// The human line of a JSON line (a worker's, when the tap wants its
/// events as JSON and people read human lines), timed now on this
/// process's clock; `None` for a line people do not read (per-call replay
/// events) or one that is not a JSON object.
pub fn human_of_json(line: &str, ansi: bool) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let target = value.get("target")?.as_str()?;
    if target == "kiln::workload::replay" {
        return None;
    }
    let level = value
        .get("level")
        .and_then(|l| l.as_str()?.parse::<Level>().ok())
        .unwrap_or(Level::INFO);
    let message = value.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let secs = started_at().elapsed().as_secs_f64();
    Some(human_text(secs, level, target, message, ansi))
}

/// JSON lines: one object per event with the keys `tracing-subscriber`'s
/// flattened JSON format wrote (`timestamp`, `level`, the event's fields in
/// order, the message first, then `target`), a kiln event's fields
/// ([`EVENT_FIELD`], a JSON object) spliced in at the top level.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", json_of(event)?)
    }
}

/// One event as the JSON object of its line (no newline).
fn json_of(event: &Event<'_>) -> Result<String, fmt::Error> {
    let mut timestamp = String::new();
    SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
    let meta = event.metadata();
    let mut line = JsonObject::default();
    line.entry("timestamp", timestamp.as_str());
    line.entry("level", meta.level().as_str());
    event.record(&mut line);
    line.entry("target", meta.target());
    line.text.push('}');
    Ok(line.text)
}

/// Where a copy of every event goes as a JSON line, whatever the log's
/// format (`kiln dev --ui`'s live feed): set once per process.
type Tap = Box<dyn Fn(&str) + Send + Sync>;

static TAP: std::sync::OnceLock<Tap> = std::sync::OnceLock::new();

/// Sends a copy of every later event of this process (and of its workers'
/// JSON lines, [`tap_lines`]) to `tap`, one JSON object each; `false` if a
/// tap was set already.
pub fn set_tap(tap: impl Fn(&str) + Send + Sync + 'static) -> bool {
    TAP.set(Box::new(tap)).is_ok()
}

/// Whether a tap is set (a worker's lines are then wanted as JSON).
pub fn tapped() -> bool {
    TAP.get().is_some()
}

/// Hands `text`'s JSON-object lines (a worker's log lines) to the tap.
pub fn tap_lines(text: &str) {
    let Some(tap) = TAP.get() else { return };
    for line in text.lines().map(str::trim) {
        if line.starts_with('{') && line.ends_with('}') {
            tap(line);
        }
    }
}

/// The layer that feeds the tap (present in every subscriber; idle
/// without a tap). The replay table, for people, is left out.
struct TapLayer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for TapLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(tap) = TAP.get() else { return };
        if event.metadata().target() == "kiln::table" {
            return;
        }
        if let Ok(line) = json_of(event) {
            tap(&line);
        }
    }
}

/// A JSON object being written (without its closing brace).
struct JsonObject {
    text: String,
}

impl Default for JsonObject {
    fn default() -> JsonObject {
        JsonObject {
            text: String::from("{"),
        }
    }
}

impl JsonObject {
    fn entry(&mut self, key: &str, value: impl Serialize) {
        // Strings, numbers and booleans always serialize (a float that is
        // not finite as `null`).
        let (Ok(key), Ok(value)) = (serde_json::to_string(key), serde_json::to_string(&value))
        else {
            return;
        };
        self.members(&format!("{key}:{value}"));
    }

    /// Appends `members` (`"key":value,...`) after those written so far.
    fn members(&mut self, members: &str) {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        self.text.push_str(members);
    }

    /// Writes the members of `object` (a JSON object's text) as this
    /// object's; `false` if it is not a JSON object.
    fn splice(&mut self, object: &str) -> bool {
        let object = object.trim();
        let is_object = object.starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(object).is_ok();
        if !is_object {
            return false;
        }
        let members = object[1..object.len() - 1].trim();
        if !members.is_empty() {
            self.members(members);
        }
        true
    }
}

impl Visit for JsonObject {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == EVENT_FIELD && self.splice(&text) {
            return;
        }
        self.entry(field.name(), text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field.name(), value);
    }
}

/// When this process's log started (human lines count from here).
pub fn started_at() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The log goes to standard error ([`init_on_stderr`]), not standard output.
static ON_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes lines already formatted elsewhere (a worker's log) where this
/// process's log goes.
pub fn write_forwarded(text: &[u8]) {
    use std::io::Write as _;
    if ON_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        let mut out = std::io::stderr().lock();
        let _ = out.write_all(text);
        let _ = out.flush();
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text);
        let _ = out.flush();
    }
}

/// Installs the global subscriber. Log lines go to standard output: in
/// `kiln dev` the log is what the user watches.
pub fn init(format: LogFormat) {
    init_with(
        format,
        std::io::stdout,
        std::io::stdout().is_terminal(),
        started_at(),
    );
}

/// Installs the global subscriber with log lines on standard error: for a
/// command whose standard output is its answer (`kiln backends`, `kiln
/// kernels`), which a script reads without the build's log lines.
pub fn init_on_stderr(format: LogFormat) {
    ON_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
    init_with(
        format,
        std::io::stderr,
        std::io::stderr().is_terminal(),
        started_at(),
    );
}

/// The subscriber of `--log-format json` writing lines to `writer`, with
/// `filter` (the replay table, for people, is left out: tools get one
/// `replay` event per call).
pub fn json_subscriber<W>(writer: W, filter: EnvFilter) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter.add_directive("kiln::table=off".parse().expect("valid directive")))
        .with_writer(writer)
        .event_format(JsonLine)
        .finish()
        .with(TapLayer)
}

/// Installs the global subscriber writing lines to `writer` (a `kiln dev`
/// worker's go to its supervisor, which prints them as they come); human
/// lines count seconds from `start`.
pub fn init_with<W>(format: LogFormat, writer: W, ansi: bool, start: Instant)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .event_format(HumanLine { start, ansi })
            .finish()
            .with(TapLayer)
            .try_init(),
        LogFormat::Json => json_subscriber(writer, filter).try_init(),
    };
    if let Err(e) = result {
        eprintln!("kiln: logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_reads_as_the_human_line_of_its_event() {
        let line = r#"{"timestamp":"t","level":"WARN","message":"slow","event":"x","target":"kiln::worker"}"#;
        let human = human_of_json(line, false).expect("a line");
        assert!(human.ends_with("s  warning: slow\n"), "{human:?}");
        let module = r#"{"level":"INFO","message":"hi","target":"kernel_cpu"}"#;
        assert!(
            human_of_json(module, false)
                .unwrap()
                .ends_with("s  [kernel_cpu] hi\n")
        );
        // Per-call replay events are for tools; text is no JSON line.
        let replay = r#"{"level":"INFO","message":"m","target":"kiln::workload::replay"}"#;
        assert_eq!(human_of_json(replay, false), None);
        assert_eq!(human_of_json("plain text", false), None);
    }
}

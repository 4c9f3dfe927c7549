//! The live reload log: one readable line per event (`human`), or one JSON
//! object per line (`json`) with the fields `event`, `module`, `version`
//! and `ms` at the top level, for tools and tests to follow a session.
//!
//! Events are ordinary `tracing` events with an `event` field, named by
//! [`crate::events::EventKind`] (`event = %EventKind::Swapped`); modules'
//! own events arrive here too (the host hands its dispatcher to every
//! module it loads). `RUST_LOG` filters as usual (default: `info`).

use std::fmt;
use std::io::IsTerminal;
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        let level = *event.metadata().level();
        let (tag, colour) = match level {
            Level::ERROR => ("error: ", "\x1b[1;31m"),
            Level::WARN => ("warning: ", "\x1b[1;33m"),
            Level::INFO => ("", ""),
            Level::DEBUG => ("debug: ", "\x1b[2m"),
            Level::TRACE => ("trace: ", "\x1b[2m"),
        };
        let target = event.metadata().target();
        let origin = if target.starts_with("kiln") {
            String::new()
        } else {
            format!("[{target}] ")
        };
        if self.ansi && !colour.is_empty() {
            writeln!(
                writer,
                "\x1b[2m{secs:8.3}s\x1b[0m  {colour}{tag}\x1b[0m{origin}{}",
                visitor.message
            )
        } else if self.ansi {
            writeln!(
                writer,
                "\x1b[2m{secs:8.3}s\x1b[0m  {origin}{}",
                visitor.message
            )
        } else {
            writeln!(writer, "{secs:8.3}s  {tag}{origin}{}", visitor.message)
        }
    }
}

/// When this process's log started (human lines count from here).
pub fn started_at() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Installs the global subscriber. Log lines go to standard output.
pub fn init(format: LogFormat) {
    init_with(
        format,
        std::io::stdout,
        std::io::stdout().is_terminal(),
        started_at(),
    );
}

/// Installs the global subscriber writing lines to `writer` (a `kiln dev`
/// worker's go to its supervisor, which prints them); human lines count
/// seconds from `start`.
pub fn init_with<W>(format: LogFormat, writer: W, ansi: bool, start: Instant)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .event_format(HumanLine { start, ansi })
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            // The replay table is for people; tools get one `replay` event per call.
            .with_env_filter(
                filter.add_directive("kiln::table=off".parse().expect("valid directive")),
            )
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("kiln: logging already initialised: {e}");
    }
}

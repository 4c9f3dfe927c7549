//! `kiln dev --ui`: a live page on 127.0.0.1 (a random port, a token per
//! session) with the log, the state, the roofline of the serving version
//! and each call's ratio to the previous version, fed by kiln's events
//! alone (a tap on the log, [`crate::logging::set_tap`]: the supervisor's
//! events and its workers' JSON lines), its buttons sent through the control socket as `kiln ctl`
//! sends them. Nothing here knows the supervisor.
//!
//! - [`server`]: binding, the token and `Host` checks, the routes
//! - [`feed`]: the events kept and streamed (`/events`)
//! - [`page`]: the page (inline script and style; no external asset)
//! - [`roofline`]: the roofline plot of each served backend
//!   (`/roofline`), drawn by the code of `kiln report`'s plot
//! - [`ratios`]: the per-call chart across versions (`/ratios`), drawn by
//!   the code of `kiln report`'s chart

pub mod feed;
pub mod page;
pub mod ratios;
pub mod roofline;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use crate::events::{self, emit};

/// Starts the page for the session of `workspace`: from now on every event
/// of this process goes to its feed. Returns its URL (token included),
/// also logged as a `ui` event.
pub fn start(workspace: PathBuf) -> Result<String, String> {
    let feed = Arc::new(feed::Feed::default());
    let tap = feed.clone();
    if !crate::logging::set_tap(move |line| tap.push(line)) {
        return Err("the log's tap is taken already".into());
    }
    let started = server::start(Some(workspace), feed)?;
    let url = format!("http://127.0.0.1:{}/?token={}", started.port, started.token);
    emit!(
        tracing::Level::INFO,
        events::Ui { url: url.clone() },
        "ui: {url}"
    );
    Ok(url)
}

/// Serves the page of a finished session (`kiln report --ui`) from
/// `events` (its history as the events a live session logs,
/// `History::events`) in a feed of their own: the same server, token and
/// `Host` check; its buttons are refused (no session). Returns its URL
/// (token included).
pub fn serve_events(events: &[String]) -> Result<String, String> {
    let feed = Arc::new(feed::Feed::default());
    for line in events {
        feed.push(line);
    }
    let started = server::start(None, feed)?;
    Ok(format!(
        "http://127.0.0.1:{}/?token={}",
        started.port, started.token
    ))
}

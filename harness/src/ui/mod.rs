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
    let started = server::start(workspace, feed)?;
    let url = format!("http://127.0.0.1:{}/?token={}", started.port, started.token);
    emit!(
        tracing::Level::INFO,
        events::Ui { url: url.clone() },
        "ui: {url}"
    );
    Ok(url)
}

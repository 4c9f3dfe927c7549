//! The page's HTTP server: bound to 127.0.0.1 on a port the system picks,
//! every request checked (the session's token, in the query `token=` or
//! the header `X-Kiln-Token`; a `Host` of exactly `127.0.0.1:PORT`, against
//! DNS rebinding) before its route: `/` the page, `/events` the live feed
//! (Server-Sent Events), `/ratios` the per-call ratio charts and
//! `/roofline` the roofline plots (HTML with inline SVG, drawn from the
//! feed's events), `POST /control/NAME` a command to the session
//! through the control socket, as `kiln ctl NAME` sends it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use super::feed::Feed;
use super::page;
use crate::control::client::exchange;
use crate::control::protocol::{Answer, Command};

/// The header a request may carry its token in.
pub const TOKEN_HEADER: &str = "X-Kiln-Token";
/// The width of the page's charts.
const CHART_WIDTH: f64 = 760.0;
/// The commands the page's buttons send.
pub const COMMANDS: &[&str] = &["replay", "undo", "bless", "switch", "status"];

/// A started server: its address and token.
pub struct Started {
    pub port: u16,
    pub token: String,
}

/// Binds 127.0.0.1:0 and serves on a thread of its own until the process
/// ends.
/// `workspace`: the session the buttons drive (`None`: a finished
/// session's page, whose buttons are refused).
pub fn start(workspace: Option<PathBuf>, feed: Arc<Feed>) -> Result<Started, String> {
    let token = random_token()?;
    let server = Server::http("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1: {e}"))?;
    let port = server
        .server_addr()
        .to_ip()
        .map(|a| a.port())
        .ok_or("the server has no IP address")?;
    let allowed = Allowed {
        host: format!("127.0.0.1:{port}"),
        token: token.clone(),
    };
    std::thread::Builder::new()
        .name("kiln-ui".into())
        .spawn(move || {
            let shared = Arc::new((allowed, workspace, feed));
            for request in server.incoming_requests() {
                let shared = shared.clone();
                // A stream lasts as long as its page; a command as long as
                // the session takes: each request on its own thread.
                let _ = std::thread::Builder::new()
                    .name("kiln-ui-request".into())
                    .spawn(move || {
                        let (allowed, workspace, feed) = &*shared;
                        handle(request, allowed, workspace, feed);
                    });
            }
        })
        .map_err(|e| format!("cannot start the page's thread: {e}"))?;
    Ok(Started { port, token })
}

/// What a request must show.
struct Allowed {
    host: String,
    token: String,
}

impl Allowed {
    /// `None` when the request may go on, else why it may not.
    fn refusal(&self, request: &Request) -> Option<&'static str> {
        let header = |name: &'static str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.equiv(name))
                .map(|h| h.value.as_str())
        };
        let query_token = query(request.url())
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="));
        let token = header(TOKEN_HEADER).or(query_token);
        if !token.is_some_and(|t| same(t.as_bytes(), self.token.as_bytes())) {
            return Some("a token is required (the URL kiln dev printed)");
        }
        if header("Host") != Some(self.host.as_str()) {
            return Some("wrong Host");
        }
        None
    }
}

/// Compares every byte (no early exit on the first difference).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn path(url: &str) -> &str {
    url.split_once('?').map_or(url, |(p, _)| p)
}

fn query(url: &str) -> &str {
    url.split_once('?').map_or("", |(_, q)| q)
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("an ASCII header")
}

fn handle(request: Request, allowed: &Allowed, workspace: &Option<PathBuf>, feed: &Feed) {
    if let Some(why) = allowed.refusal(&request) {
        let _ = request.respond(Response::from_string(why).with_status_code(403));
        return;
    }
    let route = path(request.url()).to_string();
    match (request.method(), route.as_str()) {
        (Method::Get, "/") => {
            let _ = request.respond(
                Response::from_string(page::HTML)
                    .with_header(header("Content-Type", "text/html; charset=utf-8"))
                    .with_header(header("Cache-Control", "no-store"))
                    .with_header(header(
                        "Content-Security-Policy",
                        "default-src 'none'; script-src 'unsafe-inline'; \
                         style-src 'unsafe-inline'; connect-src 'self'",
                    )),
            );
        }
        (Method::Get, "/ratios") => {
            let html = super::ratios::charts(&kept(feed), CHART_WIDTH);
            respond_html(request, html);
        }
        (Method::Get, "/roofline") => {
            let html = super::roofline::charts(&kept(feed), CHART_WIDTH);
            respond_html(request, html);
        }
        (Method::Get, "/events") => {
            // A page that reconnects says what it has (EventSource does).
            let seen = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Last-Event-ID"))
                .and_then(|h| h.value.as_str().trim().parse().ok())
                .unwrap_or(0);
            stream(request, feed, seen)
        }
        (Method::Post, route) if route.starts_with("/control/") => {
            let name = &route["/control/".len()..];
            let arg = query(request.url())
                .split('&')
                .find_map(|pair| pair.strip_prefix("arg="))
                .map(str::to_string);
            let body = match workspace {
                Some(w) => control(w, name, arg),
                None => serde_json::json!({"answer": "refused",
                    "reason": "a finished session's page (kiln report --ui): no session to send it to"}),
            };
            let _ = request.respond(
                Response::from_string(body.to_string())
                    .with_header(header("Content-Type", "application/json")),
            );
        }
        _ => {
            let _ = request.respond(Response::from_string("not found").with_status_code(404));
        }
    }
}

/// Every event the feed keeps, oldest first.
fn kept(feed: &Feed) -> Vec<String> {
    feed.after(0, Duration::ZERO)
        .into_iter()
        .map(|(_, line)| line)
        .collect()
}

/// A chart's HTML, never cached.
fn respond_html(request: Request, html: String) {
    let _ = request.respond(
        Response::from_string(html)
            .with_header(header("Content-Type", "text/html; charset=utf-8"))
            .with_header(header("Cache-Control", "no-store")),
    );
}

/// Sends `name` (with `arg`, the query's `arg=`: a backend to switch to)
/// to the session as `kiln ctl NAME [ARG]` does: `{"answer": "done" |
/// "refused", "message" | "reason": ...}`, refused with why when no
/// session answers. The page blesses the session's own workload file (no
/// path) and names a backend in letters, digits, `-`, `_` and `.`.
fn control(workspace: &std::path::Path, name: &str, arg: Option<String>) -> serde_json::Value {
    let refused = |reason: String| serde_json::json!({"answer": "refused", "reason": reason});
    if !COMMANDS.contains(&name) {
        return refused(format!("the page sends no {name:?}"));
    }
    // Only switch takes an argument from the page: bless with a path would
    // write a workload file wherever the request names.
    if name != "switch" && arg.as_deref().is_some_and(|a| !a.is_empty()) {
        return refused(format!("the page's {name} takes no argument"));
    }
    if let Some(a) = &arg
        && !a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return refused(format!(
            "{a:?} is no backend name (letters, digits, '-', '_', '.')"
        ));
    }
    let args: Vec<String> = arg.into_iter().filter(|a| !a.is_empty()).collect();
    let outcome = Command::from_args(name, &args)
        .map_err(|why| why.to_string())
        .and_then(|c| exchange(workspace, &c, |_, _| {}).map_err(|e| e.to_string()));
    match outcome {
        Ok(answer @ (Answer::Done { .. } | Answer::Refused { .. })) => {
            serde_json::to_value(&answer).unwrap_or_default()
        }
        Ok(Answer::Queued { reason }) | Err(reason) => refused(reason),
    }
}

/// `/events`: every kept event after `seen`, then each new one as it
/// comes, one SSE message each (`id:` its number, `data:` its JSON), a
/// comment every 15 s so a closed page is noticed; ends when the page goes.
fn stream(request: Request, feed: &Feed, mut seen: u64) {
    let mut out = request.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                Cache-Control: no-store\r\nConnection: close\r\n\r\n";
    if out
        .write_all(head.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        return;
    }
    loop {
        let lines = feed.after(seen, Duration::from_secs(15));
        let mut text = String::new();
        for (n, line) in &lines {
            text.push_str(&format!("id: {n}\ndata: {line}\n\n"));
            seen = *n;
        }
        if text.is_empty() {
            text.push_str(": still here\n\n");
        }
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// 16 bytes from the system's random source, in hex.
fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom for the page's token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_compare_whole() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
        assert!(!same(a.as_bytes(), &a.as_bytes()[..31]));
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(path("/events?token=1"), "/events");
        assert_eq!(query("/events?token=1"), "token=1");
        assert_eq!(query("/"), "");
    }
}

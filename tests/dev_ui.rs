//! `kiln dev --ui`: the live page of a real session, spoken to over plain
//! HTTP (a `TcpStream`): a request without the session's token, or with
//! another `Host`, is refused (403); the page is served with the token and
//! loads nothing from elsewhere; `/events` (Server-Sent Events) delivers
//! the `swapped` and `replay` events of an edit as they happen (the replay's
//! ratio to the previous version with its interval, and `/ratios`, the
//! chart of them, behind the token too); the page's
//! replay button (`POST /control/replay`) reaches the session through its
//! control socket (its replay's events, then the session's `control`
//! event), undo is refused with why and then done; switch is refused
//! with the session's reason, bless done; `/roofline`, the plot the page
//! shows, is behind the token and has the new version's dots and arrows. Then a session in the
//! default (human) log format: its workers' events still reach the page
//! (a `roofline` event) while the terminal gets human lines only.
//!
//! Real binary, real cargo, real sockets; one session for the file. Run
//! with `cargo test --release -p kiln-e2e --test dev_ui`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, CHUNK_LINE, DevSession, WorkspaceCopy, first_version, kiln_command,
    replace_once, save_in_place,
};
use kiln_e2e::ui_page::{parse, ui_address};
use serde_json::Value;

/// Generous: the machine may be busy with builds.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// One HTTP/1.1 request; the status and the body.
fn request(
    port: u16,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the page");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut text = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The switch button with `backend` typed beside it: `POST
/// /control/switch?arg=BACKEND`; its JSON answer.
fn press_with(port: u16, token: &str, name: &str, arg: &str) -> Value {
    press(port, token, &format!("{name}?arg={arg}"))
}

/// A button of the page: `POST /control/NAME` with the token; its JSON
/// answer (`answer`: `done` or `refused`, with `message` or `reason`).
fn press(port: u16, token: &str, name: &str) -> Value {
    let host = format!("127.0.0.1:{port}");
    let target = format!("/control/{name}");
    let (status, body) = request(port, "POST", &target, &host, &[("X-Kiln-Token", token)]);
    assert_eq!(status, 200, "{name}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {body}: {e}"))
}

/// `/events` read on a thread: each `data:` line's JSON, in order, with
/// its `id:` added as `_id`.
fn subscribe(port: u16, token: &str) -> crossbeam_channel::Receiver<Value> {
    subscribe_after(port, token, None)
}

/// [`subscribe`] as a page that reconnects having seen up to `last_id`.
fn subscribe_after(
    port: u16,
    token: &str,
    last_id: Option<u64>,
) -> crossbeam_channel::Receiver<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to /events");
    let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let head = format!(
        "GET /events?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Accept: text/event-stream\r\n{resume}\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "/events answered {status:?}"
        );
        let mut id = None;
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("id: ") {
                id = n.parse::<u64>().ok();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let mut value: Value = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("/events sent {data:?}: {e}"));
                value["_id"] = id.into();
                if tx.send(value).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// The events from `feed` up to the first that `pred` accepts (that one
/// last), within `deadline`.
fn until(
    feed: &crossbeam_channel::Receiver<Value>,
    what: &str,
    deadline: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let end = Instant::now() + deadline;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match feed.recv_timeout(left) {
            Ok(event) => {
                let done = pred(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("/events: no {what} within {deadline:?} ({e})"),
        }
    }
}

/// The next event from `feed` that `pred` accepts, within `deadline`.
fn next_where(
    feed: &crossbeam_channel::Receiver<Value>,
    what: &str,
    deadline: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    until(feed, what, deadline, pred).pop().expect("the match")
}

/// Reads `feed` until it has been silent for `quiet` (at most `max`).
fn drain_until_quiet(feed: &crossbeam_channel::Receiver<Value>, quiet: Duration, max: Duration) {
    let end = Instant::now() + max;
    while Instant::now() < end && feed.recv_timeout(quiet).is_ok() {}
}

#[test]
fn the_page_needs_its_token_and_host_and_shows_the_session_live() {
    let copy = WorkspaceCopy::new();
    let mut session = DevSession::start(&copy, &["--ui"]);
    let first = first_version(&session.events);
    let page_at = ui_address(&session);
    let (port, token, host) = (page_at.port, page_at.token.as_str(), page_at.host());
    assert!(token.len() >= 32, "a long random token: {token}");

    // Refused: no token, a wrong token, another Host (DNS rebinding).
    assert_eq!(request(port, "GET", "/", &host, &[]).0, 403);
    assert_eq!(request(port, "GET", "/?token=0000", &host, &[]).0, 403);
    assert_eq!(request(port, "GET", "/events", &host, &[]).0, 403);
    let with_token = format!("/?token={token}");
    for other in [
        format!("localhost:{port}"),
        format!("evil.example:{port}"),
        "127.0.0.1".into(),
    ] {
        assert_eq!(
            request(port, "GET", &with_token, &other, &[]).0,
            403,
            "Host {other}"
        );
    }
    assert_eq!(request(port, "POST", "/control/replay", &host, &[]).0, 403);

    // The page: served with the token (in the query or the header), no
    // asset from elsewhere.
    let (status, page) = request(port, "GET", &with_token, &host, &[]);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("id=\"roofline\""),
        "the roofline's place: {page}"
    );
    assert!(page.contains("/events"), "the page follows /events");
    for external in ["http://", "https://", "//cdn", "@import"] {
        assert!(!page.contains(external), "the page refers to {external}");
    }
    assert_eq!(
        request(port, "GET", "/", &host, &[("X-Kiln-Token", token)]).0,
        200
    );

    // Undo with one good version: refused, and the page gets why.
    let refused = press(port, token, "undo");
    assert_eq!(refused["answer"], "refused", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no earlier good version")),
        "{refused}"
    );

    // Live: an edit's `swapped` and its replay's events come over /events.
    let feed = subscribe(port, token);
    let kernels = copy.kernels_rs();
    let source = std::fs::read_to_string(&kernels).unwrap();
    save_in_place(
        &kernels,
        &replace_once(&source, CHUNK_LINE, "const MIN_CHUNK: usize = 8192;"),
    );
    let swapped = next_where(&feed, "swapped after the edit", BUILD_DEADLINE * 2, |e| {
        e["event"] == "swapped" && e["version"].as_u64().is_some_and(|v| v > first)
    });
    let version = swapped["version"].as_u64().unwrap();
    let replayed = next_where(&feed, "a replay of the new version", BUILD_DEADLINE, |e| {
        e["event"] == "replay" && e["version"] == version && e["kernel"] == "saxpy"
    });
    // Timed against the previous version: the ratio and its interval.
    let (ratio, low, high) = (
        replayed["ratio"].as_f64(),
        replayed["ratio_low"].as_f64(),
        replayed["ratio_high"].as_f64(),
    );
    assert!(
        matches!((ratio, low, high), (Some(r), Some(l), Some(h)) if 0.0 < l && l <= r && r <= h),
        "{replayed}"
    );
    assert!(
        ["interleaved", "recorded"].contains(&replayed["ratio_against"].as_str().unwrap_or("")),
        "{replayed}"
    );
    // The figures the roofline plots (saxpy declares its flops and bytes).
    let roofline = next_where(&feed, "the new version's roofline", BUILD_DEADLINE, |e| {
        e["event"] == "roofline" && e["version"] == version
    });
    // A page that reconnects gets what came after what it had.
    let id = roofline["_id"].as_u64().expect("an id");
    let resumed = subscribe_after(port, token, Some(id - 1));
    let again = resumed.recv_timeout(IO_TIMEOUT).expect("a resumed stream");
    assert_eq!(again["_id"], id, "{again}");
    assert_eq!(again["event"], "roofline", "{again}");
    let calls = roofline["calls"].as_array().expect("calls");
    let saxpy = calls
        .iter()
        .find(|c| c["kernel"] == "saxpy")
        .unwrap_or_else(|| panic!("saxpy on the roofline: {roofline}"));
    for key in ["ms", "gflops", "gbs", "intensity"] {
        assert!(
            saxpy[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} in {saxpy}"
        );
    }
    assert!(
        saxpy["dims"].as_str().is_some_and(|d| d.contains("f32[")),
        "{saxpy}"
    );
    let _ = session.wait_replay(BUILD_DEADLINE);
    // The per-call ratio chart the page fetches: the token is required,
    // and the new version's saxpy is on it.
    assert_eq!(request(port, "GET", "/ratios", &host, &[]).0, 403);
    let (status, ratios) = request(port, "GET", "/ratios", &host, &[("X-Kiln-Token", token)]);
    assert_eq!(status, 200, "{ratios}");
    assert!(
        ratios.contains("<svg") && ratios.contains(&format!("v{version} ")),
        "{ratios}"
    );
    assert!(
        page.contains("id=\"ratios\""),
        "the page has the ratio chart's place"
    );
    // The roofline plot the page fetches, drawn by the server: behind the
    // token; the new version's dots with arrows from the previous one's,
    // the roofs at the peaks of the roofline event.
    assert_eq!(request(port, "GET", "/roofline", &host, &[]).0, 403);
    let (status, plot) = request(port, "GET", "/roofline", &host, &[("X-Kiln-Token", token)]);
    assert_eq!(status, 200, "{plot}");
    assert!(
        plot.contains(&format!("<title>v{version} call ")),
        "the new version's dots: {plot}"
    );
    assert!(plot.contains(r#"class="arrow""#), "arrows: {plot}");
    if let (Some(gbs), Some(peak)) = (
        roofline["roof_gbs"].as_f64(),
        roofline["roof_gflops"].as_f64(),
    ) {
        assert!(
            plot.contains(&format!(r#"data-gbs="{gbs}" data-peak="{peak}""#)),
            "the roof at {gbs} GB/s, {peak} GFLOP/s: {plot}"
        );
    }

    // The replay button: through the control socket, as `kiln ctl replay`;
    // the session's `control` event for it follows that replay's events.
    drain_until_quiet(&feed, Duration::from_secs(3), BUILD_DEADLINE);
    let answer = press(port, token, "replay");
    assert_eq!(answer["answer"], "done", "{answer}");
    let applied = until(
        &feed,
        "the control event of the replay",
        BUILD_DEADLINE,
        |e| e["event"] == "control" && e["command"] == "replay",
    );
    assert_eq!(applied.last().unwrap()["outcome"], "done");
    assert!(
        applied
            .iter()
            .any(|e| e["event"] == "replay" && e["version"] == version),
        "the button's replay: {applied:?}"
    );
    // Undo now has an earlier good version: done, an `undone` event follows.
    let undone = press(port, token, "undo");
    assert_eq!(undone["answer"], "done", "{undone}");
    next_where(&feed, "undone", BUILD_DEADLINE, |e| e["event"] == "undone");
    // A command the page does not send is refused with why.
    let refused = press(port, token, "quit");
    assert_eq!(refused["answer"], "refused", "{refused}");
    // Switch, as `kiln ctl switch`: refused with the session's reason (an
    // unknown backend, the one already served), or the page's own (no
    // backend name).
    let unknown = press_with(port, token, "switch", "no-such-backend");
    assert_eq!(unknown["answer"], "refused", "{unknown}");
    assert!(
        unknown["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown backend")),
        "{unknown}"
    );
    let same = press_with(port, token, "switch", "cpu");
    assert!(
        same["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already serves")),
        "{same}"
    );
    let odd = press_with(port, token, "switch", "../cpu");
    assert_eq!(odd["answer"], "refused", "{odd}");
    // Bless from the page takes no path: it would write a workload file
    // wherever the request names.
    let elsewhere = press_with(port, token, "bless", "elsewhere.kiln");
    assert_eq!(elsewhere["answer"], "refused", "{elsewhere}");
    assert!(
        !copy.root().join("elsewhere.kiln").exists(),
        "nothing written"
    );
    // Bless, as `kiln ctl bless`: done, the session logs it.
    let blessed = press(port, token, "bless");
    assert_eq!(blessed["answer"], "done", "{blessed}");
    next_where(&feed, "bless's control event", BUILD_DEADLINE, |e| {
        e["event"] == "control" && e["command"] == "bless" && e["outcome"] == "done"
    });
    session.stop();
    human_lines_and_the_workers_events(&copy);
}

/// In the default (human) log format the page still gets the workers'
/// events (the session's workers log JSON lines, which kiln prints as human
/// lines): the `roofline` event of the first replay, and no JSON on the
/// terminal.
fn human_lines_and_the_workers_events(copy: &WorkspaceCopy) {
    let mut child = kiln_command(copy, &["dev", "--ui"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kiln dev --ui");
    let (tx, lines) = crossbeam_channel::unbounded();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let url = loop {
        let line = lines
            .recv_timeout(BUILD_DEADLINE)
            .expect("kiln dev --ui prints its URL");
        printed.push(line.clone());
        if let Some(at) = line.find("ui: http://127.0.0.1:") {
            break line[at + "ui: ".len()..].trim().to_string();
        }
    };
    let page_at = parse(&url).unwrap_or_else(|| panic!("the page's URL: {url}"));
    let feed = subscribe(page_at.port, &page_at.token);
    let roofline = next_where(&feed, "the first replay's roofline", BUILD_DEADLINE, |e| {
        e["event"] == "roofline"
    });
    assert!(
        roofline["calls"].as_array().is_some_and(|c| !c.is_empty()),
        "{roofline}"
    );
    // SIGINT ends it as Ctrl-C does.
    let pid = child.id() as i32;
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = child.wait().expect("kiln dev exits");
    reader.join().unwrap();
    printed.extend(lines.try_iter());
    assert!(
        status.success(),
        "kiln dev --ui: {status}\n{}",
        printed.join("\n")
    );
    let json: Vec<&String> = printed
        .iter()
        .filter(|l| l.trim_start().starts_with('{'))
        .collect();
    assert!(json.is_empty(), "JSON on a human log: {json:?}");
    // The worker loads the module: its `loaded` line, as people read it.
    assert!(
        printed
            .iter()
            .any(|l| l.contains("s  loaded kernel-cpu-v") && l.contains("(fingerprint ok)")),
        "the worker's human lines: {}",
        printed.join("\n")
    );
}

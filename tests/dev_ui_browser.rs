//! `kiln dev --ui` in a real browser: a headless Chromium, driven over its
//! DevTools protocol (a WebSocket), opens the page of a running session.
//! The roofline shows one dot per call the `roofline` event plotted, and
//! its roofs at the measured peaks (read back from the page's SVG); an edit
//! makes the new version's dots and arrows from the previous ones appear
//! without a reload; the undo button undoes (the session logs `undone`),
//! and a second undo is refused with the reason on the page, as is a
//! switch to an unknown backend; the page
//! without its token is refused.
//!
//! Needs `chromium` on PATH (Debian: `apt-get install chromium`, which
//! `.ci/run` does); it runs as root in CI, hence `--no-sandbox`. Skipped
//! when the browser is absent, unless `KILN_REQUIRE_BROWSER=1`. Run with
//! `cargo test --release -p kiln-e2e --test dev_ui_browser`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_e2e::dev_session::{
    BUILD_DEADLINE, CHUNK_LINE, DevSession, EventKind, WorkspaceCopy, events, replace_once,
    save_in_place,
};
use kiln_e2e::ui_page::ui_address;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

/// How long the page may take to show what the session logged.
const PAGE_DEADLINE: Duration = Duration::from_secs(120);

/// The browser on PATH, or `None` (the test is skipped then, unless
/// `KILN_REQUIRE_BROWSER=1`).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() && std::env::var("KILN_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("KILN_REQUIRE_BROWSER=1 but no chromium on PATH");
    }
    found
}

/// A headless Chromium and a DevTools connection to its one page.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    page: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    fn start(program: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().expect("a browser profile dir");
        let mut child = Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(PAGE_DEADLINE)
            .expect("chromium says where its DevTools listen");
        let port: u16 = browser_url
            .strip_prefix("ws://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("DevTools URL {browser_url}"));
        let targets = http_get(port, "/json/list");
        let targets: Value = serde_json::from_str(&targets).expect("/json/list is JSON");
        let page_url = targets
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {targets}"))
            .to_string();
        let (page, _) = tungstenite::connect(page_url.as_str()).expect("connect to the page");
        Browser {
            child,
            _profile: profile,
            page,
            next_id: 1,
        }
    }

    /// One DevTools command; its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({"id": id, "method": method, "params": params});
        self.page
            .send(Message::text(command.to_string()))
            .expect("send a DevTools command");
        loop {
            let message = self.page.read().expect("read from DevTools");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// The value of `expression` in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    fn wait_for(&mut self, what: &str, expression: &str) {
        let end = Instant::now() + PAGE_DEADLINE;
        while self.eval(expression) != Value::Bool(true) {
            assert!(
                Instant::now() < end,
                "the page did not show {what} within {PAGE_DEADLINE:?}; it shows: {}",
                self.eval("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET of DevTools' HTTP endpoint: the body (read up to its
/// `Content-Length`: the endpoint keeps the connection open).
fn http_get(port: u16, path: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(PAGE_DEADLINE)).unwrap();
    write!(
        &stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("the body");
    String::from_utf8(body).expect("UTF-8")
}

/// The calls a `roofline` event plots (flops and bytes declared).
fn plotted(event: &events::Roofline) -> usize {
    event
        .calls
        .iter()
        .filter(|c| c.intensity.is_some_and(|i| i > 0.0) && c.gflops.is_some_and(|g| g > 0.0))
        .count()
}

#[test]
fn the_page_in_a_browser_plots_the_calls_follows_an_edit_and_its_buttons_work() {
    let Some(program) = chromium() else {
        eprintln!("skipped: no chromium on PATH");
        return;
    };
    let copy = WorkspaceCopy::new();
    let mut session = DevSession::start(&copy, &["--ui"]);
    let page_at = ui_address(&session);
    let url = page_at.url.clone();
    let first = session
        .events
        .iter()
        .rev()
        .find_map(|e| e.get::<events::Roofline>())
        .cloned()
        .unwrap_or_else(|| session.fail("no roofline event after the first replay"));
    let mut browser = Browser::start(&program);

    // Without the token: refused, in the browser too.
    browser.open(&page_at.bare());
    browser.wait_for(
        "the refusal",
        "document.body && document.body.innerText.includes('token')",
    );

    // The roofline: one dot per plotted call, the roofs at the peaks.
    browser.open(&url);
    let dots = plotted(&first);
    assert!(dots > 0, "the first replay plots calls: {first:?}");
    browser.wait_for(
        "a dot per call",
        &format!("document.querySelectorAll('#roofline circle.dot').length === {dots}"),
    );
    let roofs = browser.eval(
        "[...document.querySelectorAll('#roofline polyline.roof')]\
         .map(p => [Number(p.dataset.gbs), Number(p.dataset.peak)])",
    );
    let f32_roof = roofs
        .as_array()
        .and_then(|r| r.first())
        .unwrap_or_else(|| panic!("no roof drawn: {roofs}"));
    let close = |a: &Value, b: Option<f64>| {
        a.as_f64()
            .zip(b)
            .is_some_and(|(a, b)| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
    };
    assert!(
        close(&f32_roof[0], first.roof_gbs) && close(&f32_roof[1], first.roof_gflops),
        "the roofs are the measured peaks: page {roofs}, event {:?} GB/s {:?} GFLOP/s",
        first.roof_gbs,
        first.roof_gflops
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#roofline line.arrow').length"),
        json!(0),
        "no arrow before a second version"
    );

    // An edit: the new version's dots, with arrows from the old ones,
    // without a reload.
    let kernels = copy.kernels_rs();
    let source = std::fs::read_to_string(&kernels).unwrap();
    save_in_place(
        &kernels,
        &replace_once(&source, CHUNK_LINE, "const MIN_CHUNK: usize = 8192;"),
    );
    let swapped = session.wait_event(EventKind::Swapped, BUILD_DEADLINE);
    let v2 = swapped.version().expect("version");
    browser.wait_for(
        "arrows from the previous version",
        &format!("document.querySelectorAll('#roofline line.arrow').length === {dots}"),
    );
    let title = browser.eval("document.querySelector('#roofline circle.dot title').textContent");
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("v{v2} "))),
        "a dot names its version and call: {title}"
    );
    session.wait_for("the new version's checkpoint", BUILD_DEADLINE, |e| {
        e.is(EventKind::Checkpoint) && e.version() == Some(v2)
    });

    // Undo: done (the session logs it), then refused with why.
    browser.eval("document.getElementById('undo').click()");
    session.wait_event(EventKind::Undone, BUILD_DEADLINE);
    browser.wait_for(
        "undo's answer",
        "!document.getElementById('answer').textContent.endsWith('...') && \
         document.getElementById('answer').textContent.length > 0",
    );
    assert_eq!(
        browser.eval("document.getElementById('answer').className"),
        json!(""),
        "undo was done"
    );
    browser.eval("document.getElementById('undo').click()");
    browser.wait_for(
        "a refused undo",
        "document.getElementById('answer').className === 'refused' && \
         document.getElementById('answer').textContent.startsWith('refused: ')",
    );
    // Switch to the backend typed beside it: refused, the session's reason
    // on the page.
    browser.eval(
        "document.getElementById('backend').value = 'no-such-backend'; \
         document.getElementById('switch').click()",
    );
    browser.wait_for(
        "a refused switch with its reason",
        "document.getElementById('answer').className === 'refused' && \
         document.getElementById('answer').textContent.includes('unknown backend')",
    );
    drop(browser);
    let _ = session.stop();
}

//! `kiln report` end to end on a history file as `kiln dev` writes it: a
//! slow spell of the machine (every median of one version 1.3x the
//! previous one's, while the interleaved comparisons saw ratios near 1)
//! draws as ratios near 1, not as every call regressing; a regression
//! draws above; failed and crashed versions are marked; every text lies
//! inside the image and the ratio axis has at least three labelled ticks.
//! The roofline plot it writes next to it: at least three labelled ticks
//! per axis, every text inside, each dot and roof where its numbers put it
//! on the axes' own ticks, an arrow from the previous version's dot.
//! `kiln report --ui` serves the finished session's page: the token and
//! the `Host` required, its roofline and ratio charts drawn from the
//! history, its buttons refused (no session). `kiln report --png`: each
//! chart also as PNG of the SVG's size, its title drawn.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use kiln::chart::bounds::text_outside;
use kiln::history::{History, VersionRecord};
use kiln::machine::recorded::{CallRate, RateBasis};
use kiln::workload::timing::{Against, Ratio};

/// `kiln report --file FILE ARGS` run in `dir`.
fn report(dir: &std::path::Path, file: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("report")
        .arg("--file")
        .arg(file)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// [`report`]'s stdout, having succeeded.
fn report_ok(dir: &std::path::Path, file: &std::path::Path, args: &[&str]) -> String {
    let out = report(dir, file, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn version(v: u64, scale: f64, ratio: Option<f64>) -> VersionRecord {
    let keys = ["0:saxpy", "1:matmul", "2:softmax"];
    let medians: BTreeMap<String, f64> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), 1e-3 * (i + 1) as f64 * scale))
        .collect();
    let ratios: BTreeMap<String, Ratio> = ratio
        .map(|r| {
            keys.iter()
                .map(|k| {
                    let ratio = Ratio {
                        ratio: r,
                        low: r / 1.04,
                        high: r * 1.04,
                        against: Against::Interleaved,
                    };
                    (k.to_string(), ratio)
                })
                .collect()
        })
        .unwrap_or_default();
    VersionRecord {
        version: v,
        label: format!("kernel-cpu-v{v}"),
        source_hash: "h".into(),
        build_ms: Some(800.0),
        swap_ms: Some(2.0),
        medians,
        passed: true,
        crashed: false,
        note: None,
        tuning: Default::default(),
        rates: Default::default(),
        basis: None,
        ratios,
    }
}

/// The y of each ratio dot, and the y of the dashed line at 1x.
fn dots_and_one(svg: &str) -> (Vec<(String, f64)>, f64) {
    let attr = |element: &str, name: &str| -> f64 {
        let key = format!(" {name}=\"");
        let at = element.find(&key).unwrap() + key.len();
        element[at..at + element[at..].find('"').unwrap()]
            .parse()
            .unwrap()
    };
    let dots = svg
        .lines()
        .filter(|l| l.contains(r#"class="ratio""#))
        .map(|l| {
            let title = &l[l.find("<title>").unwrap() + 7..l.find("</title>").unwrap()];
            (title.to_string(), attr(l, "cy"))
        })
        .collect();
    let one = svg
        .lines()
        .find(|l| l.starts_with("<line") && l.contains("stroke-dasharray"))
        .map(|l| attr(l, "y1"))
        .expect("the dashed line at 1x");
    (dots, one)
}

#[test]
fn a_slow_spell_draws_as_ratios_near_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut failed = version(4, 1.3, Some(1.0));
    failed.passed = false;
    let mut crashed = version(5, 1.3, None);
    crashed.passed = false;
    crashed.crashed = true;
    crashed.note = Some("crashed: SIGSEGV".into());
    let history = History {
        module: "kernel-cpu".into(),
        backend: "cpu".into(),
        workload: "default".into(),
        versions: vec![
            version(1, 1.0, None),
            // The slow spell: every median 1.3x, the ratios near 1.
            version(2, 1.3, Some(1.01)),
            version(3, 1.3, Some(0.99)),
            failed,
            crashed,
            // A real regression: 1.5x.
            version(6, 1.95, Some(1.5)),
        ],
    };
    let file = dir.path().join("kernel-cpu.json");
    history.save(&file).unwrap();
    let svg_path = dir.path().join("chart.svg");
    let stdout = report_ok(dir.path(), &file, &["--svg", "chart.svg"]);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
    let (dots, one) = dots_and_one(&svg);
    // Three calls in versions 2, 3, 4 and 6.
    assert_eq!(dots.len(), 12, "{svg}");
    for (title, y) in &dots {
        if title.starts_with("v6 ") {
            assert!(
                *y < one - 40.0,
                "a 1.5x regression draws well above 1x: {title} at {y}, 1x at {one}"
            );
        } else {
            assert!(
                (y - one).abs() < 10.0,
                "the slow spell draws near 1x: {title} at {y}, 1x at {one}"
            );
        }
    }
    assert!(
        svg.contains(">failed<") && svg.contains(">crashed<"),
        "{svg}"
    );
    let ticks = svg.matches("x</text>").count();
    assert!(
        ticks >= 3,
        "at least three labelled ticks on the ratio axis: {svg}"
    );
    // The table still has the medians.
    assert!(stdout.contains("v2"), "{stdout}");
}

/// The value of attribute `name` of the element on `line`.
fn attr_of(line: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name}: {line}"))
        + key.len();
    line[at..at + line[at..].find('"').unwrap()].to_string()
}

fn number(line: &str, name: &str) -> f64 {
    attr_of(line, name).parse().unwrap()
}

/// A log axis read back from its labelled ticks (`class` `xtick` or
/// `ytick`): (value, position) of the first and last, and their count.
fn ticks(svg: &str, class: &str, coordinate: &str) -> (usize, (f64, f64), (f64, f64)) {
    let ticks: Vec<(f64, f64)> = svg
        .lines()
        .filter(|l| l.contains(&format!(r#"class="{class}""#)))
        .map(|l| {
            let text = &l[l.find('>').unwrap() + 1..l.find("</text>").unwrap()];
            let mut at = number(l, coordinate);
            if coordinate == "y" {
                at -= 4.0; // labels sit 4 below their tick
            }
            (text.parse().unwrap(), at)
        })
        .collect();
    (ticks.len(), ticks[0], *ticks.last().unwrap())
}

/// Where `v` falls between two ticks of a log axis.
fn on_log((v0, p0): (f64, f64), (v1, p1): (f64, f64), v: f64) -> f64 {
    p0 + (p1 - p0) * (v.ln() - v0.ln()) / (v1.ln() - v0.ln())
}

fn rated(v: u64, saxpy_gbs: f64, matmul_gflops: f64) -> VersionRecord {
    let mut r = version(v, 1.0, None);
    let rate = |gbs: f64, gflops: f64, intensity: f64, percent: f64, bound: &str| CallRate {
        gbs: Some(gbs),
        gflops: Some(gflops),
        intensity: Some(intensity),
        percent: Some(percent),
        bound: Some(bound.into()),
        compute: Some("f32".into()),
    };
    r.rates = [
        // saxpy: 2 flops per 12 bytes, against a 10 GB/s roof.
        (
            "0:saxpy".to_string(),
            rate(
                saxpy_gbs,
                saxpy_gbs / 6.0,
                1.0 / 6.0,
                saxpy_gbs * 10.0,
                "memory",
            ),
        ),
        (
            "1:matmul".to_string(),
            rate(1.0, matmul_gflops, 50.0, matmul_gflops, "compute"),
        ),
    ]
    .into();
    r.basis = Some(RateBasis {
        cold: false,
        bandwidth_gbs: Some(10.0),
        compute_gflops: Some(100.0),
        compute_i8_gops: None,
        device: Some("Test CPU, 2 threads".into()),
    });
    r
}

/// Two versions with rates; v2: saxpy above the memory roof
/// (cache-resident), matmul 3x faster. Saved in `dir`.
fn rated_history(dir: &std::path::Path) -> std::path::PathBuf {
    let mut v2 = rated(2, 12.0, 60.0);
    v2.ratios = version(2, 1.0, Some(0.5)).ratios;
    let history = History {
        module: "kernel-cpu".into(),
        backend: "cpu".into(),
        workload: "default".into(),
        versions: vec![rated(1, 6.0, 20.0), v2],
    };
    let file = dir.join("kernel-cpu.json");
    history.save(&file).unwrap();
    file
}

#[test]
fn the_roofline_plot_has_its_dots_and_roofs_where_the_numbers_say() {
    let dir = tempfile::tempdir().unwrap();
    let file = rated_history(dir.path());
    let stdout = report_ok(dir.path(), &file, &[]);
    let path = dir.path().join("kernel-cpu.roofline.svg");
    assert!(stdout.contains("kernel-cpu.roofline.svg"), "{stdout}");
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text_outside(&svg), Vec::<String>::new(), "{svg}");
    let (nx, x0, x1) = ticks(&svg, "xtick", "x");
    let (ny, y0, y1) = ticks(&svg, "ytick", "y");
    assert!(nx >= 3 && ny >= 3, "three labelled ticks per axis: {svg}");
    let near = |a: f64, b: f64, what: &str| {
        assert!((a - b).abs() < 1.0, "{what}: at {a}, the ticks say {b}")
    };
    // Each dot at its intensity and GFLOP/s; the hollow one above its roof.
    let dots: Vec<&str> = svg
        .lines()
        .filter(|l| l.contains(r#"class="dot"#))
        .collect();
    assert_eq!(dots.len(), 2, "{svg}");
    for (call, intensity, gflops, hollow) in [
        ("0:saxpy", 1.0 / 6.0, 2.0, true),
        ("1:matmul", 50.0, 60.0, false),
    ] {
        let dot = dots
            .iter()
            .find(|l| attr_of(l, "data-call") == call)
            .unwrap_or_else(|| panic!("no dot of {call}: {svg}"));
        near(number(dot, "cx"), on_log(x0, x1, intensity), call);
        near(number(dot, "cy"), on_log(y0, y1, gflops), call);
        assert_eq!(dot.contains("dot above"), hollow, "{dot}");
        assert!(dot.contains(&format!("<title>v2 call {call}")), "{dot}");
    }
    assert!(svg.contains("cache-resident"), "{svg}");
    assert_eq!(svg.matches(r#"class="arrow""#).count(), 2, "{svg}");
    // The roof: the memory slope up to the knee at 10 flop/byte, flat at
    // 100 GFLOP/s after it.
    let roof = svg
        .lines()
        .find(|l| l.contains(r#"class="roof""#))
        .expect("a roof");
    assert_eq!(
        (attr_of(roof, "data-gbs"), attr_of(roof, "data-peak")),
        ("10".to_string(), "100".to_string())
    );
    let points: Vec<(f64, f64)> = attr_of(roof, "points")
        .split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    let knee = points
        .iter()
        .find(|(x, _)| (x - on_log(x0, x1, 10.0)).abs() < 1.0)
        .unwrap_or_else(|| panic!("no knee at 10 flop/byte: {points:?}"));
    near(knee.1, on_log(y0, y1, 100.0), "the knee");
    near(
        points.last().unwrap().1,
        on_log(y0, y1, 100.0),
        "the flat roof",
    );
}

/// One HTTP/1.1 request (the connection closed after it): status, body.
fn request(
    port: u16,
    method: &str,
    target: &str,
    host: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let token = token.map_or(String::new(), |t| format!("X-Kiln-Token: {t}\r\n"));
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{token}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Kills the served page's process when the test ends, passed or not.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn report_ui_serves_the_finished_sessions_page() {
    let dir = tempfile::tempdir().unwrap();
    let file = rated_history(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["report", "--ui", "--file"])
        .arg(&file)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _serving = Serving(child);
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("ui: ")
                .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("kiln report --ui prints its URL");
    let (port, token) = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.split_once("/?token="))
        .unwrap_or_else(|| panic!("the page's URL: {url}"));
    let port: u16 = port.parse().unwrap();
    let host = format!("127.0.0.1:{port}");
    assert_eq!(request(port, "GET", "/", &host, None).0, 403);
    let other = format!("localhost:{port}");
    assert_eq!(request(port, "GET", "/", &other, Some(token)).0, 403);
    let (status, page) = request(port, "GET", "/", &host, Some(token));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"roofline\""), "{page}");
    let (status, plot) = request(port, "GET", "/roofline", &host, Some(token));
    assert_eq!(status, 200, "{plot}");
    assert!(plot.contains("<title>v2 call 0:saxpy"), "{plot}");
    assert_eq!(plot.matches(r#"class="arrow""#).count(), 2, "{plot}");
    assert!(plot.contains(r#"data-gbs="10" data-peak="100""#), "{plot}");
    let (_, ratios) = request(port, "GET", "/ratios", &host, Some(token));
    assert_eq!(ratios.matches(r#"class="ratio""#).count(), 3, "{ratios}");
    let (status, undo) = request(port, "POST", "/control/undo", &host, Some(token));
    assert_eq!(status, 200, "{undo}");
    assert!(
        undo.contains("refused") && undo.contains("finished session"),
        "{undo}"
    );
}

/// The `width` and `height` of an SVG document, rounded up to pixels.
#[cfg(feature = "png")]
fn svg_size(svg: &str) -> (u32, u32) {
    let head = svg.lines().next().unwrap();
    let size = |name| number(head, name).ceil() as u32;
    (size("width"), size("height"))
}

#[cfg(feature = "png")]
#[test]
fn report_png_draws_each_chart_with_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let file = rated_history(dir.path());
    let stdout = report_ok(dir.path(), &file, &["--png"]);
    for stem in ["kernel-cpu", "kernel-cpu.roofline"] {
        let png_path = dir.path().join(format!("{stem}.png"));
        assert!(stdout.contains(&png_path.display().to_string()), "{stdout}");
        let svg = std::fs::read_to_string(dir.path().join(format!("{stem}.svg"))).unwrap();
        let png = std::fs::read(&png_path).unwrap();
        let pixmap = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
        let (width, height) = svg_size(&svg);
        assert_eq!((pixmap.width(), pixmap.height()), (width, height), "{stem}");
        // Not blank: a white background with a good deal drawn on it.
        let white = pixmap
            .pixels()
            .iter()
            .filter(|p| p.red() == 255 && p.green() == 255 && p.blue() == 255)
            .count();
        let drawn = pixmap.pixels().len() - white;
        assert!(white > 0 && drawn > 2000, "{stem}: {drawn} pixels drawn");
        // The title was drawn: dark pixels in the top line (none there
        // without the font: chart::png's unit test).
        let title = kiln::chart::png::dark_pixels(&png, (0, 0, width, 24)).unwrap();
        assert!(title > 100, "{stem}: {title} dark pixels in the title");
    }
}

#[cfg(feature = "png")]
#[test]
fn report_png_refuses_to_overwrite_the_svg() {
    let dir = tempfile::tempdir().unwrap();
    let file = rated_history(dir.path());
    let out = report(dir.path(), &file, &["--png", "--svg", "chart.png"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("chart.png") && stderr.contains("would overwrite"),
        "{stderr}"
    );
    assert!(!dir.path().join("chart.png").exists());
}

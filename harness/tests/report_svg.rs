//! `kiln report` end to end on a history file as `kiln dev` writes it: a
//! slow spell of the machine (every median of one version 1.3x the
//! previous one's, while the interleaved comparisons saw ratios near 1)
//! draws as ratios near 1, not as every call regressing; a regression
//! draws above; failed and crashed versions are marked; every text lies
//! inside the image and the ratio axis has at least three labelled ticks.

use std::collections::BTreeMap;
use std::process::Command;

use kiln::chart::bounds::text_outside;
use kiln::history::{History, VersionRecord};
use kiln::workload::timing::{Against, Ratio};

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
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("report")
        .arg("--file")
        .arg(&file)
        .arg("--svg")
        .arg(&svg_path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

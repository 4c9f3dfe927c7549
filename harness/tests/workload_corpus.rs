//! The corpus of damaged and edge-case workload files in
//! `tests/corpus/workload/`: every `NAME.kwl` with a `NAME.expect` beside it
//! must be refused with a message containing the `.expect` text; every
//! `valid-*.kwl` must read. Add a file found by fuzzing here with its
//! `.expect`. The hand-made ones are (re)written by the ignored test
//! `regenerate_corpus` (`cargo test -p kiln --test workload_corpus -- --ignored`).

mod workload_util;

use std::path::{Path, PathBuf};

use kiln::workload::{Workload, format, read};
use serde_json::json;
use shared_state::{DType, Tensor};
use workload_util::*;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/workload")
}

#[test]
fn every_corpus_file_is_refused_with_its_message_or_reads() {
    let mut checked = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kwl"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expect = path.with_extension("expect");
        let result = read(&path);
        if name.starts_with("valid-") {
            let w = result.unwrap_or_else(|e| panic!("{name} must read: {e}"));
            // and it writes back to a file that reads the same
            let again = format::to_bytes(&w).unwrap();
            assert_eq!(read_bytes(&again, &name).unwrap(), w, "{name}");
        } else {
            let fragment = std::fs::read_to_string(&expect)
                .unwrap_or_else(|_| panic!("{name} has no {}", expect.display()));
            let e = match result {
                Ok(_) => panic!("{name} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.starts_with(&format!("workload {}: ", path.display())),
                "{name}: the message does not name the file: {e}"
            );
            assert!(
                e.contains(fragment.trim_end()),
                "{name}: {e:?} does not contain {:?}",
                fragment.trim_end()
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} corpus files");
}

fn put(name: &str, bytes: &[u8], expect: Option<&str>) {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.kwl")), bytes).unwrap();
    if let Some(text) = expect {
        std::fs::write(dir.join(format!("{name}.expect")), format!("{text}\n")).unwrap();
    }
}

#[test]
#[ignore = "rewrites the hand-made corpus files"]
fn regenerate_corpus() {
    let good = small_bytes();
    let start = data_start(&good);
    let edit = |f: &dyn Fn(&mut serde_json::Value)| with_header(&good, |h| f(h));

    put("valid-small", &good, None);
    put(
        "valid-empty",
        &format::to_bytes(&Workload::new("empty")).unwrap(),
        None,
    );
    let mut zero = Workload::new("zero-size");
    zero.load("nothing", Tensor::zeros(DType::F32, &[0, 1 << 20]).unwrap());
    zero.load("scalar", Tensor::zeros(DType::U8, &[]).unwrap());
    put("valid-zero-size", &format::to_bytes(&zero).unwrap(), None);

    put(
        "empty-file",
        b"",
        Some("shorter than the 24-byte preamble (at byte 0)"),
    );
    put(
        "bad-magic-zip",
        b"PK\x03\x04\x14\x00\x00\x00",
        Some("not a kiln workload file"),
    );
    put(
        "truncated-preamble",
        &good[..17],
        Some("the file is 17 bytes, shorter than"),
    );
    let mut v = good.clone();
    v[8..12].copy_from_slice(&0u32.to_le_bytes());
    put("version-0", &v, Some("bad format version 0 (at byte 8)"));
    v[8..12].copy_from_slice(&99u32.to_le_bytes());
    put("version-99", &v, Some("unsupported format version 99"));
    let mut v = good.clone();
    v[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    put(
        "header-length-huge",
        &v,
        Some("runs past the end of the file"),
    );
    let mut v = good.clone();
    v[40] ^= 4;
    put("header-checksum", &v, Some("header checksum mismatch"));
    put(
        "header-not-json",
        &with_header_text(&good, b"# name = 'toml?'"),
        Some("malformed header: expected value at line 1 column 1 (at byte 24)"),
    );
    // a deeply nested parameter value: serde_json's recursion limit, no
    // stack overflow
    let deep = format!(
        r#"{{"name":"deep","sections":[],"steps":[{{"call":{{"kernel":"k","args":[],"params":{{"a":{}{}}}}}}}]}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    put(
        "header-deep-nesting",
        &with_header_text(&good, deep.as_bytes()),
        Some("malformed header: recursion limit exceeded"),
    );
    put(
        "header-unknown-step",
        &edit(&|h| h["steps"][0] = json!({"sleep": 1})),
        Some("malformed header: unknown variant `sleep`"),
    );
    put(
        "unknown-dtype",
        &edit(&|h| h["sections"][0]["dtype"] = json!("complex64")),
        Some("section 0: unknown dtype \"complex64\""),
    );
    put(
        "offset-overflow",
        &edit(&|h| h["sections"][1]["offset"] = json!(u64::MAX)),
        Some("section 1: offset 18446744073709551615 overflows"),
    );
    put(
        "length-overflow",
        &edit(&|h| h["sections"][1]["length"] = json!(u64::MAX - 100)),
        Some("section 1: offset 64 + length 18446744073709551515 overflows"),
    );
    put(
        "length-past-end",
        &edit(&|h| {
            h["sections"][2]["length"] = json!(1u64 << 36);
            h["sections"][2]["shape"] = json!([1u64 << 34]);
        }),
        Some("run past the end of the file"),
    );
    put(
        "misaligned-offset",
        &edit(&|h| h["sections"][2]["offset"] = json!(129)),
        Some("section 2: offset 129 is not a multiple of 64"),
    );
    put(
        "shape-mismatch",
        &edit(&|h| h["sections"][0]["shape"] = json!([3, 3])),
        Some("section 0: shape 3x3 of f32 needs 36 bytes, the section has 24"),
    );
    put(
        "shape-overflow",
        &edit(&|h| h["sections"][0]["shape"] = json!([u64::MAX, 2])),
        Some("section 0: shape 18446744073709551615x2 overflows"),
    );
    let mut v = good.clone();
    v[start + 1] ^= 0x80;
    put(
        "section-checksum",
        &v,
        Some("section 0 (f32[2x3]): checksum mismatch: stored 0x"),
    );
    put(
        "overlap",
        &edit(&|h| h["sections"][3]["offset"] = json!(128)),
        Some("overlaps section"),
    );
    put(
        "dangling-section",
        &edit(&|h| h["steps"][1]["call"]["expected"] = json!(77)),
        Some("step 1: section 77 does not exist (the header lists 5)"),
    );
    put(
        "section-used-twice",
        &edit(&|h| h["steps"][1]["call"]["args"] = json!([{"tensor": 1}, {"tensor": 1}])),
        Some("step 1: section 1 is already used by step 1"),
    );
    put(
        "param-null",
        &edit(&|h| h["steps"][2]["call"]["params"]["alpha"] = json!(null)),
        Some("parameter alpha must be an integer (i64), a number, a bool or a string, got null"),
    );
    put(
        "param-huge-integer",
        &edit(&|h| h["steps"][2]["call"]["params"]["alpha"] = json!(u64::MAX)),
        Some("parameter alpha must be an integer (i64)"),
    );
    put(
        "truncated-data",
        &good[..good.len() - 100],
        Some("run past the end of the file"),
    );
}

//! The workload file: round trips, layout, and one test per way a damaged
//! or hostile file is refused (each asserting its own message and offset).

mod workload_util;

use kiln::workload::format::{self, ALIGN, WorkloadErrorKind as K};
use kiln::workload::{Step, Workload, read, write};
use serde_json::json;
use shared_state::{Buffer, Call, DType, Scalar, Tensor};
use workload_util::*;

fn refused(bytes: &[u8]) -> format::WorkloadError {
    match read_bytes(bytes, "bad.kwl") {
        Ok(_) => panic!("a damaged file was accepted"),
        Err(e) => e,
    }
}

/// Asserts `bytes` are refused with `kind`, a message containing `fragment`
/// and (when given) that byte offset.
fn assert_refused(bytes: &[u8], kind: K, offset: Option<u64>, fragment: &str) {
    let e = refused(bytes);
    let text = e.to_string();
    assert!(text.starts_with("workload bad.kwl: "), "{text}");
    assert!(text.contains(fragment), "{text:?} lacks {fragment:?}");
    assert_eq!(e.kind, kind, "{text}");
    // `None`: the offset is not checked here (it depends on the JSON text)
    if let Some(o) = offset {
        assert_eq!(e.offset, Some(o), "{text}");
        assert!(text.ends_with(&format!("(at byte {o})")), "{text}");
    }
}

#[test]
fn round_trip_through_a_file_keeps_everything() {
    let dir = scratch_dir("round_trip");
    let path = dir.join("w.kwl");
    let mut w = small_workload();
    // every dtype, an empty tensor and a rank-0 one, every scalar kind
    for dtype in DType::ALL {
        let mut buf = Buffer::zeros(dtype, 5);
        for (i, b) in buf.as_bytes_mut().iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        w.load(dtype.name(), Tensor::new(vec![5], buf).unwrap());
    }
    w.load("empty", Tensor::zeros(DType::F32, &[0, 4]).unwrap());
    w.load("scalar", Tensor::zeros(DType::F64, &[]).unwrap());
    w.call(
        Call::new("custom")
            .arg(Tensor::from_f32(&[1], vec![f32::NAN]))
            .param("i", Scalar::I64(-3))
            .param("f", Scalar::F64(3.0))
            .param("b", Scalar::Bool(true))
            .param("t", Scalar::Text("x\"y".into())),
        Some(Tensor::from_f32(&[1], vec![f32::INFINITY])),
    );
    // Version 2: several outputs, trials, a signature tag.
    w.call_step(kiln::workload::CallStep {
        call: Call::new("two_outputs").arg(Tensor::from_f32(&[2], vec![1.0, -0.0])),
        expected: vec![
            Tensor::from_f32(&[2], vec![2.0, 3.0]),
            Tensor::from_vec(&[1], vec![shared_state::bf16::from_f32(-1.5)]),
        ],
        trials: vec![kiln::workload::Trial {
            inputs: vec![Tensor::from_vec(&[2], vec![f32::NEG_INFINITY, 5e-45])],
            expected: vec![
                Tensor::from_f32(&[2], vec![0.0, 1.0]),
                Tensor::from_vec(&[1], vec![shared_state::bf16::NAN]),
            ],
        }],
        signature: Some("two_outputs(x: f32[n]) -> a: f32[n], b: bf16[1]".into()),
        recorded_by: Some("kiln record --kernel two_outputs --dims n=2".into()),
    });
    write(&w, &path).unwrap();
    let back = read(&path).unwrap();
    assert_eq!(back.name, w.name);
    assert_eq!(back.steps.len(), w.steps.len());
    for (a, b) in back.steps.iter().zip(&w.steps) {
        match (a, b) {
            (
                Step::Load {
                    name: n1,
                    tensor: t1,
                },
                Step::Load {
                    name: n2,
                    tensor: t2,
                },
            ) => {
                assert_eq!(n1, n2);
                assert!(t1.bit_eq(t2), "{n1}");
            }
            (Step::Call(s1), Step::Call(s2)) => {
                let (c1, e1, c2, e2) = (&s1.call, &s1.expected, &s2.call, &s2.expected);
                assert_eq!(s1.signature, s2.signature);
                assert_eq!(s1.recorded_by, s2.recorded_by);
                assert_eq!(s1.trials.len(), s2.trials.len());
                for (t1, t2) in s1.trials.iter().zip(&s2.trials) {
                    for (x, y) in t1
                        .inputs
                        .iter()
                        .chain(&t1.expected)
                        .zip(t2.inputs.iter().chain(&t2.expected))
                    {
                        assert!(x.bit_eq(y));
                    }
                }
                assert_eq!(c1.kernel, c2.kernel);
                assert_eq!(c1.params, c2.params, "scalar kinds survive");
                assert_eq!(c1.store_as, c2.store_as);
                assert_eq!(c1.args.len(), c2.args.len());
                for (x, y) in c1.args.iter().zip(&c2.args) {
                    match (x, y) {
                        (shared_state::Arg::Tensor(x), shared_state::Arg::Tensor(y)) => {
                            assert!(x.bit_eq(y))
                        }
                        (x, y) => assert_eq!(x, y),
                    }
                }
                assert_eq!(e1.len(), e2.len());
                for (x, y) in e1.iter().zip(e2) {
                    assert!(x.bit_eq(y));
                }
            }
            _ => panic!("step kinds differ"),
        }
    }
    // written through a temporary that is gone now
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["w.kwl"]);
}

#[test]
fn sections_are_aligned_and_raw_little_endian() {
    let bytes = small_bytes();
    assert_eq!(&bytes[..8], b"KILNWKLD");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    assert_eq!(bytes.len() % ALIGN as usize, 0);
    let start = data_start(&bytes);
    let h = header(&bytes);
    let sections = h["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 5);
    // section 1 is saxpy's x = [1, 2, 3, 4]
    let s = &sections[1];
    assert_eq!(s["dtype"], "f32");
    assert_eq!(s["shape"], json!([4]));
    let off = start + s["offset"].as_u64().unwrap() as usize;
    assert_eq!(off % ALIGN as usize, 0);
    assert_eq!(&bytes[off..off + 4], &1.0f32.to_le_bytes());
    assert_eq!(&bytes[off + 12..off + 16], &4.0f32.to_le_bytes());
    assert_eq!(
        s["crc32"].as_u64().unwrap() as u32,
        crc32fast::hash(&bytes[off..off + 16])
    );
    assert_eq!(
        h["steps"][1]["call"]["args"],
        json!([{"tensor": 1}, {"tensor": 2}])
    );
    assert_eq!(h["steps"][2]["call"]["args"], json!([{"resident": "grid"}]));
    assert_eq!(h["steps"][2]["call"]["store_as"], "grid");
    assert_eq!(h["steps"][1]["call"]["params"]["a"], json!(2.0));
}

#[test]
fn an_empty_workload_round_trips() {
    let w = Workload::new("");
    let bytes = format::to_bytes(&w).unwrap();
    assert_eq!(read_bytes(&bytes, "e.kwl").unwrap(), w);
}

#[test]
fn missing_file_names_the_file() {
    let e = read(std::path::Path::new("/nonexistent/w.kwl")).unwrap_err();
    assert_eq!(e.kind, K::Io);
    assert!(
        e.to_string()
            .starts_with("workload /nonexistent/w.kwl: cannot open:"),
        "{e}"
    );
}

#[test]
fn refuses_wrong_magic() {
    let mut bytes = small_bytes();
    bytes[..8].copy_from_slice(b"PK\x03\x04abcd");
    assert_refused(
        &bytes,
        K::BadMagic,
        Some(0),
        "not a kiln workload file: it starts with",
    );
    // also when the file is shorter than the magic
    assert_refused(b"KILX", K::BadMagic, Some(0), "not a kiln workload file");
}

#[test]
fn refuses_a_file_shorter_than_the_preamble() {
    let bytes = small_bytes();
    assert_refused(
        &bytes[..20],
        K::Truncated,
        Some(20),
        "truncated: the file is 20 bytes, shorter than the 24-byte preamble",
    );
    assert_refused(&[], K::Truncated, Some(0), "the file is 0 bytes");
}

#[test]
fn refuses_version_zero() {
    let mut bytes = small_bytes();
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert_refused(&bytes, K::BadVersion, Some(8), "bad format version 0");
}

#[test]
fn refuses_a_newer_version() {
    let mut bytes = small_bytes();
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    assert_refused(
        &bytes,
        K::BadVersion,
        Some(8),
        "unsupported format version 3 (this kiln reads versions 1 to 2)",
    );
}

#[test]
fn refuses_a_header_length_beyond_the_file() {
    let mut bytes = small_bytes();
    let len = bytes.len();
    bytes[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    assert_refused(
        &bytes,
        K::HeaderLength,
        Some(16),
        &format!("header length {len} runs past the end of the file ({len} bytes"),
    );
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_refused(
        &bytes,
        K::HeaderLength,
        Some(16),
        "runs past the end of the file",
    );
}

#[test]
fn refuses_a_header_checksum_mismatch() {
    let mut bytes = small_bytes();
    bytes[30] ^= 0x20;
    assert_refused(
        &bytes,
        K::HeaderChecksum,
        Some(12),
        "header checksum mismatch: stored 0x",
    );
}

#[test]
fn refuses_a_malformed_header() {
    let bytes = with_header_text(&small_bytes(), b"{\"name\": \"x\",\n \"sections\": [}");
    let e = refused(&bytes);
    assert_eq!(e.kind, K::MalformedHeader);
    assert!(e.message.starts_with("malformed header: "), "{e}");
    // the offset points into the header, at the stray brace on line 2
    assert_eq!(e.offset, Some(24 + 14 + 14), "{e}");
    let bytes = with_header(&small_bytes(), |h| {
        h.as_object_mut().unwrap().remove("steps");
    });
    assert_refused(&bytes, K::MalformedHeader, None, "missing field `steps`");
    let bytes = with_header(&small_bytes(), |h| h["sections"][0]["offset"] = json!(-64));
    assert_refused(
        &bytes,
        K::MalformedHeader,
        None,
        "malformed header: invalid value",
    );
}

#[test]
fn refuses_an_unknown_header_key() {
    let bytes = with_header(&small_bytes(), |h| h["sections"][0]["stride"] = json!(4));
    let e = refused(&bytes);
    assert_eq!(e.kind, K::MalformedHeader);
    assert!(e.message.contains("unknown field `stride`"), "{e}");
    // the offset is where serde_json stopped, inside the header
    let end = 24 + header_len(&bytes) as u64;
    assert!(matches!(e.offset, Some(o) if o > 24 && o <= end), "{e}");
}

#[test]
fn refuses_a_parameter_json_cannot_map_to_a_scalar() {
    let bytes = with_header(&small_bytes(), |h| {
        h["steps"][1]["call"]["params"]["a"] = json!([1, 2])
    });
    assert_refused(
        &bytes,
        K::MalformedHeader,
        Some(24),
        "step 1 (saxpy): parameter a must be an integer (i64), a number, a bool or a string, got [1,2]",
    );
}

#[test]
fn refuses_an_unknown_dtype() {
    let bytes = with_header(&small_bytes(), |h| h["sections"][2]["dtype"] = json!("f17"));
    assert_refused(
        &bytes,
        K::UnknownDType,
        Some(24),
        "section 2: unknown dtype \"f17\" (known: f32, f64, i32, i64, u32, u8, f16, bf16, i8)",
    );
}

#[test]
fn refuses_an_offset_that_overflows() {
    let bytes = with_header(&small_bytes(), |h| {
        h["sections"][0]["offset"] = json!(u64::MAX - 63)
    });
    assert_refused(
        &bytes,
        K::SectionBounds,
        Some(24),
        &format!("section 0: offset {} overflows", u64::MAX - 63),
    );
    let bytes = with_header(&small_bytes(), |h| {
        h["sections"][0]["length"] = json!(u64::MAX)
    });
    assert_refused(
        &bytes,
        K::SectionBounds,
        Some(24),
        &format!("section 0: offset 0 + length {} overflows", u64::MAX),
    );
}

#[test]
fn refuses_a_section_past_the_end_of_the_file() {
    let bytes = small_bytes();
    let start = data_start(&bytes) as u64;
    // a huge claimed length is refused before anything is allocated
    let hostile = with_header(&bytes, |h| {
        h["sections"][0]["length"] = json!(1u64 << 40);
        h["sections"][0]["shape"] = json!([1u64 << 38]);
    });
    assert_refused(
        &hostile,
        K::SectionBounds,
        Some(start),
        &format!(
            "section 0: bytes {start}..{} run past the end of the file",
            start + (1 << 40)
        ),
    );
    // a file cut inside its data area
    let cut = &bytes[..start as usize + 8];
    assert_refused(cut, K::SectionBounds, Some(start), "section 0: bytes");
}

#[test]
fn refuses_a_misaligned_offset() {
    let bytes = with_header(&small_bytes(), |h| h["sections"][4]["offset"] = json!(8));
    let start = data_start(&bytes) as u64 + 8;
    assert_refused(
        &bytes,
        K::SectionBounds,
        Some(start),
        "section 4: offset 8 is not a multiple of 64",
    );
}

#[test]
fn refuses_a_shape_that_does_not_match_the_length() {
    let bytes = with_header(&small_bytes(), |h| h["sections"][1]["shape"] = json!([5]));
    let h = header(&small_bytes());
    let start = data_start(&small_bytes()) as u64 + h["sections"][1]["offset"].as_u64().unwrap();
    assert_refused(
        &bytes,
        K::ShapeMismatch,
        Some(start),
        "section 1: shape 5 of f32 needs 20 bytes, the section has 16",
    );
    let bytes = with_header(&small_bytes(), |h| {
        h["sections"][1]["shape"] = json!([1u64 << 40, 1u64 << 40])
    });
    assert_refused(
        &bytes,
        K::ShapeMismatch,
        Some(start),
        "section 1: shape 1099511627776x1099511627776 overflows",
    );
}

#[test]
fn refuses_a_section_checksum_mismatch() {
    let mut bytes = small_bytes();
    let h = header(&bytes);
    let start = data_start(&bytes) + h["sections"][3]["offset"].as_u64().unwrap() as usize;
    bytes[start + 2] ^= 1;
    assert_refused(
        &bytes,
        K::SectionChecksum,
        Some(start as u64),
        "section 3 (f32[4]): checksum mismatch: stored 0x",
    );
}

/// `kiln dev`'s check before its build reads no section's bytes
/// (`format::check_structure`): a section whose bytes are damaged passes
/// it (the worker's read refuses it, as `read` and `check` do), while every
/// refusal of the structure still stops it.
#[test]
fn the_structure_check_reads_no_data_and_refuses_what_the_structure_breaks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.kwl");
    let good = small_bytes();
    let h = header(&good);
    let start = data_start(&good) + h["sections"][3]["offset"].as_u64().unwrap() as usize;
    let mut damaged = good.clone();
    damaged[start + 2] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    let outline = format::check_structure(&path).expect("the structure is whole");
    assert_eq!(
        outline.describe(),
        read_bytes(&good, "w.kwl").unwrap().describe()
    );
    for (what, refusal) in [("read", read(&path)), ("check", format::check(&path))] {
        let e = match refusal {
            Ok(_) => panic!("{what} accepted damaged data"),
            Err(e) => e,
        };
        assert_eq!(e.kind, K::SectionChecksum, "{what}: {e}");
    }
    // A file cut inside its data area, a header checksum that fails: refused.
    std::fs::write(&path, &good[..data_start(&good) + 8]).unwrap();
    let Err(e) = format::check_structure(&path) else {
        panic!("a cut file was accepted")
    };
    assert_eq!(e.kind, K::SectionBounds, "{e}");
    let mut header_damaged = good.clone();
    header_damaged[30] ^= 1;
    std::fs::write(&path, &header_damaged).unwrap();
    let Err(e) = format::check_structure(&path) else {
        panic!("a damaged header was accepted")
    };
    assert_eq!(e.kind, K::HeaderChecksum, "{e}");
}

#[test]
fn refuses_overlapping_sections() {
    let bytes = with_header(&small_bytes(), |h| {
        // section 0 (24 bytes at 0) now also covers section 1's place
        h["sections"][1]["offset"] = json!(0);
    });
    let start = data_start(&small_bytes());
    assert_refused(
        &bytes,
        K::Overlap,
        Some(start as u64),
        &format!(
            "section 0 (bytes {start}..{}) overlaps section 1 (bytes {start}..{})",
            start + 24,
            start + 16
        ),
    );
}

#[test]
fn refuses_a_reference_to_a_missing_section() {
    let bytes = with_header(&small_bytes(), |h| {
        h["steps"][0]["load"]["tensor"] = json!(9)
    });
    assert_refused(
        &bytes,
        K::BadReference,
        Some(24),
        "step 0: section 9 does not exist (the header lists 5)",
    );
}

#[test]
fn refuses_a_section_used_twice() {
    let bytes = with_header(&small_bytes(), |h| {
        h["steps"][3]["load"]["tensor"] = json!(0)
    });
    assert_refused(
        &bytes,
        K::BadReference,
        Some(24),
        "step 3: section 0 is already used by step 0",
    );
}

#[test]
fn refuses_to_write_a_parameter_json_cannot_hold() {
    let mut w = Workload::new("nan");
    w.call(Call::new("saxpy").param("a", Scalar::F64(f64::NAN)), None);
    let e = format::to_bytes(&w).unwrap_err();
    assert_eq!(e.kind, K::Unwritable);
    assert_eq!(
        e.to_string(),
        "workload <memory>: step 0 (saxpy): parameter a is NaN, which JSON cannot hold"
    );
}

#[test]
fn a_large_section_round_trips_through_a_file() {
    // large enough for the reader's huge-page path (8 MiB)
    let dir = scratch_dir("large");
    let path = dir.join("large.kwl");
    let n = 2 << 20;
    let mut w = Workload::new("large");
    w.load(
        "big",
        Tensor::from_f32(&[n], (0..n).map(|i| i as f32 * 0.5).collect()),
    );
    write(&w, &path).unwrap();
    assert_eq!(read(&path).unwrap(), w);
    // one flipped bit deep inside it is found
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 4096;
    bytes[at] ^= 0x10;
    let e = read_bytes(&bytes, "large.kwl").unwrap_err();
    assert_eq!(e.kind, K::SectionChecksum, "{e}");
}

/// A load `read_given` is given (same dtype and shape) is taken and its
/// section never read: here that section is damaged, and the read still
/// succeeds; a load not given is read and checked as usual; a given
/// tensor of another shape is not taken.
#[test]
fn a_given_load_is_taken_instead_of_read() {
    let dir = std::env::temp_dir().join(format!("kiln-wl-given-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("given.kiln");
    let big = Tensor::from_f32(&[4096], (0..4096).map(|i| i as f32).collect());
    let small = Tensor::from_f32(&[4], vec![1.0, 2.0, 3.0, 4.0]);
    let mut w = Workload::new("given");
    w.load("big", big.clone());
    w.load("small", small.clone());
    write(&w, &path).unwrap();
    // Damage `big`'s bytes (its crc32 in the header unchanged).
    let mut bytes = std::fs::read(&path).unwrap();
    let needle: Vec<u8> = (1000..1004u32)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let at = bytes.windows(16).position(|w| w == needle).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(read(&path).is_err(), "the damage is seen by a full read");

    let replacement = Tensor::from_f32(&[4096], vec![7.0; 4096]);
    let mut asked = Vec::new();
    let (read_back, taken) = format::read_given(&path, &mut |load| {
        asked.push((load.name.to_string(), load.crc32));
        (load.name == "big").then(|| replacement.clone())
    })
    .unwrap();
    assert_eq!(taken, 1);
    assert_eq!(asked.len(), 2, "asked once per load: {asked:?}");
    let crc_of = |t: &Tensor| crc32fast::hash(t.data().as_bytes());
    assert!(asked.contains(&("big".to_string(), crc_of(&big))));
    assert!(asked.contains(&("small".to_string(), crc_of(&small))));
    let loads: Vec<(&str, &Tensor)> = read_back
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Load { name, tensor } => Some((name.as_str(), tensor)),
            _ => None,
        })
        .collect();
    assert!(loads[0].1.bit_eq(&replacement));
    assert!(loads[1].1.bit_eq(&small));

    // Another shape is not taken: the damaged section is read, and refused.
    let e = format::read_given(&path, &mut |_| Some(Tensor::from_f32(&[1], vec![0.0])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A load `read_answering` is told to leave in the file is not read: here
/// its bytes are damaged and the read still succeeds, the load holds an
/// empty tensor of its dtype, and the left load says where its bytes are
/// (those bytes, in the undamaged file, are the tensor's) and builds the
/// very error `read` gives for the damage. The loads of a name are
/// counted; every other section is read and checked; and a file the header
/// checks refuse is refused before anything is left.
#[test]
fn a_load_left_in_the_file_is_not_read_and_says_where_its_bytes_are() {
    let dir = std::env::temp_dir().join(format!("kiln-wl-left-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("left.kiln");
    let big = Tensor::from_f32(&[4096], (0..4096).map(|i| i as f32 + 0.5).collect());
    let twice = Tensor::from_f32(&[2], vec![5.0, 6.0]);
    let arg = Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]);
    let mut w = Workload::new("left");
    w.load("twice", twice.clone());
    w.load("big", big.clone());
    w.load("twice", twice.clone());
    w.call(Call::new("saxpy").arg(arg), None);
    write(&w, &path).unwrap();
    let clean = std::fs::read(&path).unwrap();

    let answer_for = |load: &format::LoadSection| {
        if load.name == "big" {
            format::LoadAnswer::Leave
        } else {
            format::LoadAnswer::Read
        }
    };
    let mut counts = Vec::new();
    let read_back = format::read_answering(&path, &mut |load| {
        counts.push((load.name.to_string(), load.loads_of_name));
        answer_for(load)
    })
    .unwrap();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("big".to_string(), 1),
            ("twice".to_string(), 2),
            ("twice".to_string(), 2)
        ]
    );
    assert_eq!(read_back.given, 0);
    let [left] = read_back.left.as_slice() else {
        panic!("one load left: {:?}", read_back.left)
    };
    assert_eq!((left.step, left.name.as_str()), (1, "big"));
    assert_eq!(
        (left.dtype, left.shape.as_slice()),
        (DType::F32, &[4096usize][..])
    );
    assert_eq!(left.place.section, 1);
    assert_eq!(left.crc32, crc32fast::hash(big.data().as_bytes()));
    let range = left.place.start as usize..(left.place.start + left.place.length) as usize;
    assert!(clean[range.clone()] == *big.data().as_bytes(), "its bytes");
    match &read_back.workload.steps[1] {
        Step::Load { name, tensor } => {
            assert_eq!(name, "big");
            assert_eq!((tensor.dtype(), tensor.byte_len()), (DType::F32, 0));
        }
        other => panic!("{other:?}"),
    }
    // Everything else as `read` reads it.
    let mut expected = w.clone();
    if let Step::Load { tensor, .. } = &mut expected.steps[1] {
        *tensor = Tensor::new(vec![0], Buffer::zeros(DType::F32, 0)).unwrap();
    }
    assert_eq!(read_back.workload, expected);

    // Its bytes damaged: left, the read succeeds; the left load's error is
    // `read`'s.
    let mut damaged = clean.clone();
    damaged[range.start + 100] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    let again = format::read_answering(&path, &mut |load| answer_for(load)).unwrap();
    assert_eq!(again.left, read_back.left);
    let refused = read(&path).unwrap_err();
    assert_eq!(refused.kind, K::SectionChecksum);
    let computed = crc32fast::hash(&damaged[range.clone()]);
    assert_eq!(again.left[0].checksum_mismatch(&path, computed), refused);

    // The header's checks come first: a file cut inside the data is
    // refused, left or not.
    std::fs::write(&path, &clean[..range.start + 8]).unwrap();
    let e = format::read_answering(&path, &mut |_| format::LoadAnswer::Leave)
        .err()
        .expect("a cut file is refused");
    assert_eq!(e.kind, K::SectionBounds, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `check` refuses what `read` refuses, for the same reason, and describes
/// the workload as `read` would; its tensors have the file's dtypes and
/// shapes and hold zeros (the data is checked, not kept).
#[test]
fn check_refuses_what_read_refuses_and_keeps_no_data() {
    let dir = std::env::temp_dir().join(format!("kiln-wl-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checked.kiln");
    // Larger than check's 1 MiB piece.
    let big = Tensor::from_f32(&[300_000], (0..300_000).map(|i| i as f32 + 1.0).collect());
    let mut w = Workload::new("checked");
    w.load("big", big.clone());
    w.call(
        Call::new("saxpy")
            .arg(Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]))
            .arg(Tensor::from_f32(&[3], vec![4.0, 5.0, 6.0]))
            .param("a", Scalar::F64(2.0)),
        Some(Tensor::from_f32(&[3], vec![6.0, 9.0, 12.0])),
    );
    write(&w, &path).unwrap();
    let checked = format::check(&path).unwrap();
    assert_eq!(checked.describe(), w.describe());
    let Step::Load { tensor, .. } = &checked.steps[0] else {
        panic!("a load first");
    };
    assert_eq!(tensor.shape(), big.shape());
    assert_eq!(tensor.dtype(), DType::F32);
    assert!(tensor.as_f32().unwrap().iter().all(|v| *v == 0.0));

    // One bit of the big section flipped, near its end: both refuse it.
    let mut bytes = std::fs::read(&path).unwrap();
    let needle: Vec<u8> = (299_000..299_004u32)
        .flat_map(|i| (i as f32 + 1.0).to_le_bytes())
        .collect();
    let at = bytes.windows(16).position(|w| w == needle).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let by_read = read(&path).unwrap_err();
    let by_check = format::check(&path).unwrap_err();
    assert_eq!(by_check.kind, K::SectionChecksum);
    assert_eq!(by_check.to_string(), by_read.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Property tests: damaged, truncated, re-checksummed and arbitrary files
//! are read to `Ok` or `Err`, never a panic and never an allocation the
//! file cannot back (an absurd allocation would abort the test process).

mod workload_util;

use proptest::prelude::*;
use workload_util::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn flipped_bytes_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = small_bytes();
        let original = bytes.clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(w) = read_bytes(&bytes, "fuzz.kwl") {
            // only a change in padding (or none at all) may still read
            prop_assert_eq!(
                kiln::workload::format::to_bytes(&w).unwrap().len(),
                original.len()
            );
        }
    }

    #[test]
    fn truncated_files_never_panic(cut in any::<prop::sample::Index>()) {
        let bytes = small_bytes();
        let cut = cut.index(bytes.len());
        let last_data_end = {
            let h = header(&bytes);
            h["sections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["offset"].as_u64().unwrap() + s["length"].as_u64().unwrap())
                .max()
                .unwrap() as usize
                + data_start(&bytes)
        };
        match read_bytes(&bytes[..cut], "cut.kwl") {
            Ok(w) => {
                prop_assert!(cut >= last_data_end, "read a file cut at {} < {}", cut, last_data_end);
                prop_assert_eq!(w, small_workload());
            }
            Err(e) => prop_assert!(cut < last_data_end, "{}", e),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(read_bytes(&bytes, "junk.kwl").is_err());
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_preamble_never_panic(
        header_len in 0u64..4096,
        rest in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = b"KILNWKLD".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        let n = (header_len as usize).min(rest.len());
        bytes.extend_from_slice(&crc32fast::hash(&rest[..n]).to_le_bytes());
        bytes.extend_from_slice(&header_len.to_le_bytes());
        bytes.extend_from_slice(&rest);
        let _ = read_bytes(&bytes, "junk.kwl");
    }

    #[test]
    fn edited_headers_with_valid_checksums_never_panic(
        edits in proptest::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(b"0123456789{}[],:\"-.e ftxa".to_vec())),
            1..6,
        )
    ) {
        let bytes = small_bytes();
        let mut text = serde_json::to_vec(&header(&bytes)).unwrap();
        for (at, c) in edits {
            let i = at.index(text.len());
            text[i] = c;
        }
        let _ = read_bytes(&with_header_text(&bytes, &text), "edited.kwl");
    }

    #[test]
    fn hostile_section_tables_are_refused_before_allocating(
        offset in any::<u64>(),
        length in any::<u64>(),
        shape in proptest::collection::vec(any::<u64>(), 0..4),
        dtype in prop::sample::select(vec!["f32", "f64", "u8", "i64", "bf16"]),
    ) {
        let bytes = with_header(&small_bytes(), |h| {
            h["sections"][0]["offset"] = offset.into();
            h["sections"][0]["length"] = length.into();
            h["sections"][0]["shape"] = shape.clone().into();
            h["sections"][0]["dtype"] = dtype.into();
        });
        // the file is a few hundred bytes: anything claiming more is refused
        if let Ok(w) = read_bytes(&bytes, "hostile.kwl") {
            prop_assert!(length < bytes.len() as u64);
            prop_assert!(w.input_bytes() < bytes.len() as u64);
        }
    }
}

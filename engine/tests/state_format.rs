//! The state store's on-disk structures match `docs/FORMAT.md` and decode without panicking on
//! any input. The state root's field table in the doc is parsed and compared with the code's
//! offsets; records are encoded and their bytes checked at the doc's offsets; then proptest feeds
//! arbitrary and mutated bytes to every record decoder and to the root decoder.

use bytes::Bytes;
use engine::state::record::{self, root_field, StateRoot};
use proptest::prelude::*;

/// `(offset, len, name)` rows of the code block under `heading` in FORMAT.md.
fn doc_rows(heading: &str) -> Vec<(usize, usize, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} missing"));
    let block = doc[start..].split("```").nth(1).expect("code block");
    block
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let off = w.next()?.parse().ok()?;
            let len = w.next()?.parse().ok()?;
            Some((off, len, w.next()?.to_string()))
        })
        .collect()
}

#[test]
fn state_root_layout_matches_format_md() {
    let rows = doc_rows("### State root (copy c at STATE_ROOT_OFFSETS[c])");
    let f = |name: &str| {
        rows.iter()
            .find(|r| r.2 == name)
            .map(|r| (r.0, r.1))
            .unwrap_or_else(|| panic!("FORMAT.md state root has no field {name}"))
    };
    for (name, off, len) in [
        ("checksum", root_field::CHECKSUM, 4),
        ("magic", root_field::MAGIC, 4),
        ("version", root_field::VERSION, 4),
        ("copy", root_field::COPY, 4),
        ("sequence", root_field::SEQUENCE, 8),
        ("generation_next", root_field::GENERATION_NEXT, 8),
        ("start_segment", root_field::START_SEGMENT, 4),
        ("start_offset", root_field::START_OFFSET, 4),
        ("start_generation", root_field::START_GENERATION, 8),
        ("body_bytes", root_field::BODY_BYTES, 8),
        ("record_count", root_field::RECORD_COUNT, 4),
        ("body_crc", root_field::BODY_CRC, 4),
    ] {
        assert_eq!(f(name), (off, len), "state root field {name}");
    }
    let root = StateRoot {
        sequence: 0x1111,
        generation_next: 0x2222,
        start_segment: 0x33,
        start_offset: 0x44,
        start_generation: 0x5555,
        body_bytes: 0x6666,
        record_count: 0x77,
        body_crc: 0x8888,
    };
    let mut img = vec![0u8; 4096];
    root.encode(1, 589824, 9, &mut img);
    assert_eq!(&img[4..8], b"BSRT");
    assert_eq!(img[16..24], 0x1111u64.to_le_bytes());
    assert_eq!(img[60..64], 0x8888u32.to_le_bytes());
    assert!(
        img[64..].iter().all(|&b| b == 0),
        "bytes past 64 must be zero"
    );
    assert_eq!(StateRoot::decode(1, 589824, 9, &img), Some(root));
    assert_eq!(
        StateRoot::decode(0, 589824, 9, &img),
        None,
        "wrong copy accepted"
    );
    assert_eq!(
        StateRoot::decode(1, 65536, 9, &img),
        None,
        "wrong offset accepted"
    );
    assert_eq!(
        StateRoot::decode(1, 589824, 8, &img),
        None,
        "wrong nonce accepted"
    );
}

#[test]
fn records_have_the_documented_layout() {
    let mut v = Vec::new();
    record::encode_value(&mut v, 0x0102_0304_0506_0708, b"key", b"value!");
    assert_eq!(v.len(), 24 + 3 + 6);
    assert_eq!(&v[..4], &[1, 0, 0, 0]);
    assert_eq!(v[4..8], 3u32.to_le_bytes());
    assert_eq!(v[8..12], 6u32.to_le_bytes());
    assert_eq!(v[12..20], 0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&v[20..23], b"key");
    assert_eq!(&v[23..29], b"value!");
    assert_eq!(v[29..33], crc32fast::hash(&v[..29]).to_le_bytes());
    let rec = record::decode_value(&Bytes::from(v.clone())).expect("valid");
    assert_eq!(
        (rec.region_id, &rec.key[..], &rec.value[..]),
        (0x0102_0304_0506_0708, &b"key"[..], &b"value!"[..])
    );

    let mut l = Vec::new();
    record::encode_link(&mut l, 7, 0x99);
    assert_eq!(l.len(), record::LINK_LEN);
    assert_eq!(
        (l[0], &l[4..8], &l[8..16]),
        (2, &7u32.to_le_bytes()[..], &0x99u64.to_le_bytes()[..])
    );
    assert_eq!(record::decode_link(&l), Ok((7, 0x99)));

    let mut c = Vec::new();
    record::encode_checkpoint(&mut c, 42, b"body");
    assert_eq!(c.len(), record::CHECKPOINT_OVERHEAD + 4);
    assert_eq!(
        (c[0], &c[4..8], &c[8..16], &c[16..20]),
        (
            3,
            &4u32.to_le_bytes()[..],
            &42u64.to_le_bytes()[..],
            &b"body"[..]
        )
    );
    assert_eq!(record::decode_checkpoint(&c), Ok((42, &b"body"[..])));
    for (kind, bytes) in [(1u8, &v), (2, &l), (3, &c)] {
        assert_eq!(record::peek(bytes), Ok((kind, bytes.len() as u64)));
    }
}

fn valid_records() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    record::encode_value(&mut v, 5, b"k", &[7u8; 300]);
    let mut l = Vec::new();
    record::encode_link(&mut l, 3, 4);
    let mut c = Vec::new();
    record::encode_checkpoint(&mut c, 9, &[1, 2, 3, 4, 5]);
    vec![v, l, c]
}

fn decode_all(bytes: &[u8]) {
    let _ = record::peek(bytes);
    let _ = record::decode_value(&Bytes::copy_from_slice(bytes));
    let _ = record::decode_link(bytes);
    let _ = record::decode_checkpoint(bytes);
    for copy in 0..3 {
        let _ = StateRoot::decode(copy, 65536, 1, bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_records_are_rejected_or_decoded_without_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        cut in any::<Option<usize>>(),
    ) {
        let original = valid_records()[which].clone();
        let mut rec = original.clone();
        for (at, x) in flips {
            let i = at % rec.len();
            rec[i] ^= x;
        }
        if let Some(c) = cut {
            rec.truncate(c % (rec.len() + 1));
        }
        decode_all(&rec);
        // Flips can cancel out; a record that did change breaks its CRC and never decodes.
        prop_assume!(rec != original);
        prop_assert!(record::decode_value(&Bytes::from(rec.clone())).is_err());
        prop_assert!(record::decode_link(&rec).is_err());
        prop_assert!(record::decode_checkpoint(&rec).is_err());
    }
}

//! The on-disk layout matches `docs/FORMAT.md`, and formatting/opening behave at the edges. The
//! offsets in the doc's engine tables are parsed and compared with the code's constants; then, on
//! the sim device: format refuses foreign signatures and existing stores unless forced, rejects
//! too small devices and bad block sizes, opening an unformatted device names it, and inspect
//! verifies every checksum.

mod log_harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use engine::error::EngineError;
use engine::format::{format, open_superblock, FormatOptions};
use engine::io::sim::{FaultConfig, SimIo};
use engine::io::{run_one, AlignedBuf, Geometry, IoOp};
use engine::layout::{
    block, superblock, SUPERBLOCK_AREA_BYTES, SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS,
};
use engine::log::record::{self, batch_field};
use log_harness::*;

/// `field name -> (offset, size)` of the first table after `heading` in FORMAT.md.
fn doc_table(heading: &str) -> HashMap<String, (usize, usize)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("heading {heading} missing"));
    let mut rows = HashMap::new();
    let mut in_table = false;
    for line in doc[start..].lines().skip(1) {
        if line.starts_with("| Offset") {
            in_table = true;
            continue;
        }
        if in_table && !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if !in_table || cells.len() < 4 || cells[1].starts_with("---") {
            continue;
        }
        if let (Ok(off), Ok(size)) = (cells[1].parse(), cells[2].parse()) {
            rows.insert(cells[3].to_string(), (off, size));
        }
    }
    assert!(!rows.is_empty(), "no table under {heading}");
    rows
}

fn check(table: &HashMap<String, (usize, usize)>, name: &str, offset: usize, size: usize) {
    assert_eq!(
        table.get(name),
        Some(&(offset, size)),
        "FORMAT.md field `{name}`"
    );
}

#[test]
fn layout_constants_match_format_md() {
    use superblock::field as sb;
    let t = doc_table("### Superblock copy (4096 bytes, at offset 0 and at offset 524288)");
    assert_eq!(
        (SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS, SUPERBLOCK_AREA_BYTES),
        (4096, [0, 524288], 1048576)
    );
    for (name, off, size) in [
        ("magic", sb::MAGIC, 8),
        ("version", sb::VERSION, 4),
        ("copy", sb::COPY, 4),
        ("sequence", sb::SEQUENCE, 8),
        ("store_id", sb::STORE_ID, 8),
        ("cluster_id", sb::CLUSTER_ID, 16),
        ("format_nonce", sb::FORMAT_NONCE, 8),
        ("block_size", sb::BLOCK_SIZE, 4),
        ("segment_count", sb::SEGMENT_COUNT, 4),
        ("segment_size", sb::SEGMENT_SIZE, 8),
        ("device_size", sb::DEVICE_SIZE, 8),
        ("data_start", sb::DATA_START, 8),
        ("checkpoint_offset", sb::CHECKPOINT_OFFSET, 8),
        ("checkpoint_sequence", sb::CHECKPOINT_SEQUENCE, 8),
        ("checkpoint_prev_checksum", sb::CHECKPOINT_PREV_CHECKSUM, 4),
        ("checkpoint_segment", sb::CHECKPOINT_SEGMENT, 4),
        ("log_segment_count", sb::LOG_SEGMENT_COUNT, 4),
        ("reserved", sb::RESERVED, sb::CHECKSUM - sb::RESERVED),
        ("checksum", sb::CHECKSUM, 4),
    ] {
        check(&t, name, off, size);
    }
    assert_eq!(superblock::SUPERBLOCK_MAGIC, *b"BASALTSB");

    use block::field as bf;
    let t = doc_table("### Block header (32 bytes");
    assert_eq!(block::BLOCK_HEADER_LEN, 32);
    for (name, off, size) in [
        ("checksum", bf::CHECKSUM, 4),
        ("magic", bf::MAGIC, 4),
        ("sequence", bf::SEQUENCE, 8),
        ("block_index", bf::BLOCK_INDEX, 4),
        ("block_count", bf::BLOCK_COUNT, 4),
        ("payload_len", bf::PAYLOAD_LEN, 4),
        ("reserved", bf::RESERVED, 4),
    ] {
        check(&t, name, off, size);
    }
    assert_eq!(block::BLOCK_MAGIC, *b"BSLG");

    let t = doc_table("### Batch header (20 bytes");
    assert_eq!(record::BATCH_HEADER_LEN, 20);
    for (name, off) in [
        ("prev_checksum", batch_field::PREV_CHECKSUM),
        ("record_count", batch_field::RECORD_COUNT),
        ("payload_len", batch_field::PAYLOAD_LEN),
        ("flags", batch_field::FLAGS),
        ("summary_count", batch_field::SUMMARY_COUNT),
    ] {
        check(&t, name, off, 4);
    }
    let t = doc_table("### Summary span (24 bytes");
    assert_eq!(
        (
            record::SPAN_LEN,
            record::SUMMARY_SPANS_MAX,
            record::SUMMARY_TOO_LONG
        ),
        (24, 1024, 0xFFFF_FFFF)
    );
    for (name, off) in [("region_id", 0), ("first_index", 8), ("last_index", 16)] {
        check(&t, name, off, 8);
    }
    let t = doc_table("### Record header (8 bytes)");
    assert_eq!(record::RECORD_HEADER_LEN, 8);
    check(&t, "kind", 0, 1);
    check(&t, "body_len", 4, 4);
    let kinds = [
        record::kind::ENTRIES,
        record::kind::HARD_STATE,
        record::kind::CONF_STATE,
        record::kind::COMPACT,
        record::kind::REGION_META,
    ];
    assert_eq!(kinds, [1, 2, 3, 4, 5]);
    let t = doc_table("### Record bodies");
    assert_eq!(record::ENTRIES_BODY_FIXED_LEN, 20);
    check(&t, "count", 16, 4);
    assert_eq!(
        record::ENTRY_HEADER_LEN,
        17,
        "entry header: term 8 + type 1 + context_len 4 + data_len 4"
    );
}

fn sim(capacity_bytes: u64, block_size: u32) -> Arc<Mutex<SimIo>> {
    Arc::new(Mutex::new(SimIo::new(
        7,
        Geometry {
            block_size,
            capacity_bytes,
        },
        FaultConfig::none(),
    )))
}

fn opts(force: bool) -> FormatOptions {
    FormatOptions {
        segment_size_bytes: 64 * 1024,
        force,
        ..FormatOptions::new("/dev/test0")
    }
}

fn put(sim: &Arc<Mutex<SimIo>>, offset: u64, at: usize, bytes: &[u8]) {
    let mut io = SharedSim::new(Arc::clone(sim));
    let mut buf = AlignedBuf::new(4096, 4096);
    buf.as_mut_slice()[at..at + bytes.len()].copy_from_slice(bytes);
    run_one(
        &mut io,
        IoOp::Write {
            tag: 9,
            offset,
            buf,
            durable: true,
        },
    )
    .unwrap()
    .result
    .unwrap();
}

#[test]
fn format_refuses_signatures_and_existing_stores_unless_forced() {
    let cases: [(&str, u64, usize, &[u8]); 5] = [
        ("ext2/3/4", 0, 1080, &[0x53, 0xef]),
        ("XFS", 0, 0, b"XFSB"),
        ("btrfs", 65536, 64, b"_BHRfS_M"),
        ("swap", 0, 4086, b"SWAPSPACE2"),
        ("GPT partition table", 0, 512, b"EFI PART"),
    ];
    for (what, offset, at, magic) in cases {
        let s = sim(4 << 20, 512);
        put(&s, offset, at, magic);
        let mut io = SharedSim::new(Arc::clone(&s));
        match format(&mut io, &opts(false)) {
            Err(EngineError::ForeignSignature {
                what: w, device, ..
            }) => assert_eq!((w, device.as_str()), (what, "/dev/test0")),
            other => panic!("{what}: {other:?}"),
        }
        format(&mut io, &opts(true)).expect("forced format");
    }
    let s = sim(4 << 20, 512);
    let mut io = SharedSim::new(Arc::clone(&s));
    let sb = format(
        &mut io,
        &FormatOptions {
            store_id: Some(5),
            ..opts(false)
        },
    )
    .expect("format");
    assert!(matches!(
        format(&mut io, &opts(false)),
        Err(EngineError::AlreadyFormatted { store_id: 5, .. })
    ));
    let again = format(&mut io, &opts(true)).expect("forced reformat");
    assert_ne!(
        again.format_nonce, sb.format_nonce,
        "a reformat must not trust the old blocks"
    );
}

#[test]
fn bad_geometry_is_refused_with_the_device_named() {
    let s = sim(SUPERBLOCK_AREA_BYTES + 64 * 1024, 512);
    let mut io = SharedSim::new(Arc::clone(&s));
    match format(&mut io, &opts(false)) {
        Err(e @ EngineError::DeviceTooSmall { .. }) => {
            assert!(e.to_string().contains("/dev/test0"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let s = sim(4 << 20, 512);
    let mut io = SharedSim::new(Arc::clone(&s));
    let bad = FormatOptions {
        block_size: 3000,
        ..opts(false)
    };
    assert!(matches!(
        format(&mut io, &bad),
        Err(EngineError::InvalidConfig {
            key: "block_size",
            ..
        })
    ));
    let s = sim(4 << 20, 4096);
    let mut io = SharedSim::new(Arc::clone(&s));
    let small = FormatOptions {
        block_size: 512,
        ..opts(false)
    };
    assert!(matches!(
        format(&mut io, &small),
        Err(EngineError::BadBlockSize {
            block_size: 512,
            device_block_size: 4096,
            ..
        })
    ));
}

#[test]
fn opening_unformatted_or_damaged_devices_is_a_clear_error() {
    let s = sim(4 << 20, 512);
    let mut io = SharedSim::new(Arc::clone(&s));
    match open_superblock(&mut io, "/dev/blank") {
        Err(e @ EngineError::NotFormatted { .. }) => {
            assert!(e.to_string().contains("/dev/blank"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    format(&mut io, &opts(false)).expect("format");
    // One damaged copy: the other serves; both damaged: a clear error.
    s.lock().unwrap().rot(SUPERBLOCK_OFFSETS[1] + 8);
    assert_eq!(
        open_superblock(&mut io, "/dev/test0")
            .expect("copy 0 serves")
            .0,
        0
    );
    s.lock().unwrap().rot(16);
    assert!(matches!(
        open_superblock(&mut io, "/dev/test0"),
        Err(EngineError::NotFormatted { .. })
    ));
}

#[test]
fn inspect_verifies_every_checksum() {
    let s = sim_store(3, 512, 16 * 1024, 8);
    let (mut store, _) = open(&s, 1 << 20);
    let mut rng = Rng(3);
    let mut model = Model::default();
    for step in 0..20 {
        let b = random_batch(&mut rng, &model, 3, step);
        model.apply(b.records());
        store.write_sync(b).expect("write");
    }
    let (_, head, _) = store.head_position();
    drop(store);
    let report =
        engine::inspect::inspect(Box::new(SharedSim::new(Arc::clone(&s))), "sim").expect("inspect");
    assert!(!report.corrupt(), "{report}");
    assert_eq!(report.recovery.batches, 20);
    let text = report.to_string();
    assert!(
        text.contains("superblock copy 0") && text.contains("all verified"),
        "{text}"
    );
    s.lock().unwrap().rot(SUPERBLOCK_AREA_BYTES + 512);
    let _ = head;
    let report =
        engine::inspect::inspect(Box::new(SharedSim::new(Arc::clone(&s))), "sim").expect("inspect");
    assert!(report.corrupt(), "{report}");
    assert!(report.to_string().contains("CORRUPT"));
}

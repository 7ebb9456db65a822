//! The state store on a real file through the `sync` and `uring` backends (two handles on the
//! file, `O_DIRECT`): puts and overwrites large enough to fill several segments, compaction,
//! a checkpoint, a clean reopen, and every value read back cold from the device, byte for byte.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use engine::device::{open as open_device, Backend, OpenOptions};
use engine::format::{format, open_superblock, FormatOptions};
use engine::io::{Io, IoError};
use engine::state::{Command, Op, RegionState, StateConfig, StateStore};

const SIZE_BYTES: u64 = 24 << 20;

fn handle(path: &Path, backend: Backend, create: bool) -> Option<Box<dyn Io>> {
    let opts = OpenOptions {
        backend,
        create_size_bytes: create.then_some(SIZE_BYTES),
        ..OpenOptions::default()
    };
    match open_device(path, &opts) {
        Ok((io, _)) => Some(io),
        Err(engine::device::DeviceError::Io {
            source: IoError::UringUnavailable(e),
            ..
        }) => {
            eprintln!("skipping the uring backend: io_uring unavailable here ({e})");
            None
        }
        Err(e) => panic!("open {}: {e}", path.display()),
    }
}

fn open_store(path: &Path, backend: Backend) -> Option<StateStore> {
    let mut w = handle(path, backend, false)?;
    let r = handle(path, backend, false)?;
    let (_, sb) = open_superblock(w.as_mut(), "file").expect("superblock");
    let mut config = StateConfig::new(path.display().to_string());
    config.compaction_step_bytes = 256 * 1024;
    Some(StateStore::open(w, r, &sb, config).expect("open state store"))
}

fn value(i: u64, round: u64) -> Bytes {
    let len = 100 + (i * 37 + round * 11) % 3000;
    Bytes::from((0..len).map(|k| (k + i + round) as u8).collect::<Vec<u8>>())
}

fn workload(path: &Path, backend: Backend) {
    let Some(mut io) = handle(path, backend, true) else {
        return;
    };
    let f = FormatOptions {
        segment_size_bytes: 1 << 20,
        log_segment_count: Some(4),
        force: true,
        ..FormatOptions::new("file")
    };
    format(io.as_mut(), &f).expect("format");
    drop(io);
    let Some(mut store) = open_store(path, backend) else {
        return;
    };
    store
        .create_region(RegionState::new(
            1,
            raftlog::ConfState::from_voters(vec![1]),
        ))
        .unwrap();
    let mut model = BTreeMap::new();
    for round in 0..6u64 {
        let ops = (0..1000u64)
            .map(|i| {
                let (k, v) = (Bytes::from(format!("key{i:05}")), value(i, round));
                model.insert(k.clone(), v.clone());
                Op::Put { key: k, value: v }
            })
            .collect();
        let cmd = Command {
            client_id: 1,
            sequence: round,
            ops,
        };
        store
            .apply(1, round + 1, 1, &cmd)
            .expect("apply")
            .expect("fresh");
        while store.compact_step().expect("compact") {}
        store.checkpoint().expect("checkpoint");
    }
    let want: Vec<(Bytes, Bytes)> = model.into_iter().collect();
    assert_eq!(store.scan(1, b"", None, usize::MAX).unwrap(), want);
    drop(store);
    let store = open_store(path, backend).expect("reopen");
    assert_eq!(store.region_state(1).unwrap().applied_index, 6);
    assert_eq!(store.scan(1, b"", None, usize::MAX).unwrap(), want);
    let garbage: u64 = store
        .segment_stats()
        .iter()
        .map(|s| s.written_bytes - s.live_bytes)
        .sum();
    let live: u64 = store.segment_stats().iter().map(|s| s.live_bytes).sum();
    assert!(
        garbage < 2 * live + (4 << 20),
        "compaction left {garbage} bytes of garbage"
    );
}

#[test]
fn file_with_sync_backend() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("state_real_sync.img");
    workload(&path, Backend::Sync);
    let _ = std::fs::remove_file(path);
}

#[test]
fn file_with_uring_backend() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("state_real_uring.img");
    workload(&path, Backend::Uring);
    let _ = std::fs::remove_file(path);
}

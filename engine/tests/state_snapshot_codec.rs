//! The command and snapshot-chunk codecs, fuzzed with proptest: encodings round-trip; decoders
//! never panic on arbitrary or mutated bytes and refuse every damaged encoding; the builder is
//! deterministic and resumable; the receiver installs a stream into an in-memory model target
//! exactly, refuses corrupt, duplicate, missing and foreign chunks without losing its place, and
//! aborts the install (old state stands) when the whole-stream checksum fails.

use std::collections::BTreeMap;

use bytes::Bytes;
use engine::state::command::{Command, Op};
use engine::state::snapshot::{
    Chunk, InstallTarget, ReceiveProgress, SnapshotBuilder, SnapshotError, SnapshotMeta,
    SnapshotReceiver, SnapshotSource, CHUNK_HEADER_LEN,
};
use engine::state::{CheckpointInfo, RegionState};
use proptest::prelude::*;
use raftlog::ConfState;

fn bytes_strategy(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (bytes_strategy(16), bytes_strategy(64)).prop_map(|(key, value)| Op::Put { key, value }),
        bytes_strategy(16).prop_map(|key| Op::Delete { key }),
        (bytes_strategy(16), bytes_strategy(16))
            .prop_map(|(start, end)| Op::DeleteRange { start, end }),
        (
            bytes_strategy(16),
            proptest::option::of(bytes_strategy(32)),
            proptest::option::of(bytes_strategy(32))
        )
            .prop_map(|(key, expected, new)| Op::Cas { key, expected, new }),
    ]
}

fn command_strategy() -> impl Strategy<Value = Command> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(op_strategy(), 0..8),
    )
        .prop_map(|(client_id, sequence, ops)| Command {
            client_id,
            sequence,
            ops,
        })
}

/// A frozen region held in memory.
#[derive(Debug)]
struct ModelSource {
    state: RegionState,
    data: BTreeMap<Bytes, Bytes>,
}

impl SnapshotSource for ModelSource {
    fn state(&self) -> &RegionState {
        &self.state
    }
    fn key_count(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_from(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> engine::error::Result<(Vec<(Bytes, Bytes)>, bool)> {
        let mut out = Vec::new();
        let mut size = 0;
        let range = self
            .data
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_ref() > a));
        for (k, v) in range {
            if !out.is_empty() && size + k.len() + v.len() > max_bytes {
                return Ok((out, false));
            }
            size += k.len() + v.len();
            out.push((k.clone(), v.clone()));
        }
        Ok((out, true))
    }
}

/// A store of regions held in memory; installs switch in at `install_finish`.
#[derive(Default)]
struct ModelTarget {
    regions: BTreeMap<u64, (RegionState, BTreeMap<Bytes, Bytes>)>,
    installing: BTreeMap<u64, (RegionState, BTreeMap<Bytes, Bytes>)>,
    next_id: u64,
    aborted: u32,
}

impl InstallTarget for ModelTarget {
    type Install = u64;
    fn install_begin(&mut self, state: RegionState) -> engine::error::Result<u64> {
        self.next_id += 1;
        self.installing
            .insert(self.next_id, (state, BTreeMap::new()));
        Ok(self.next_id)
    }
    fn install_put(&mut self, id: u64, key: &[u8], value: &[u8]) -> engine::error::Result<()> {
        let (_, data) = self.installing.get_mut(&id).expect("install in progress");
        if let Some((last, _)) = data.last_key_value() {
            assert!(last.as_ref() < key, "keys ascending");
        }
        data.insert(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
        Ok(())
    }
    fn install_finish(&mut self, id: u64) -> engine::error::Result<CheckpointInfo> {
        let (state, data) = self.installing.remove(&id).expect("install in progress");
        let info = CheckpointInfo {
            regions: vec![(state.region_id, state.applied_index)],
            bytes: 0,
        };
        self.regions.insert(state.region_id, (state, data));
        Ok(info)
    }
    fn install_abort(&mut self, id: u64) {
        assert!(self.installing.remove(&id).is_some());
        self.aborted += 1;
    }
}

fn region_state(meta: Bytes) -> RegionState {
    RegionState {
        region_id: 9,
        applied_index: 120,
        applied_term: 4,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        },
        meta,
        sessions: sessions(),
    }
}

/// Two clients' sessions (the first chunk carries them).
fn sessions() -> engine::state::SessionTable {
    let mut t = engine::state::SessionTable::default();
    let cas = engine::state::OpResult::Cas {
        succeeded: false,
        previous: Some(Bytes::from_static(b"found")),
    };
    t.record(3, 8, 100, &[engine::state::OpResult::Done, cas], 16);
    t.record(4, 1, 110, &[], 16);
    t
}

fn source_strategy() -> impl Strategy<Value = ModelSource> {
    (
        proptest::collection::btree_map(bytes_strategy(24), bytes_strategy(600), 0..60),
        bytes_strategy(40),
    )
        .prop_map(|(data, meta)| ModelSource {
            state: region_state(meta),
            data,
        })
}

fn build_all<S: SnapshotSource>(b: &mut SnapshotBuilder<S>) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(c) = b.next_chunk().expect("model source never fails") {
        out.push(c);
    }
    out
}

fn install(chunks: &[Bytes], meta: SnapshotMeta, target: &mut ModelTarget) {
    let mut rx = SnapshotReceiver::new(meta);
    for (i, c) in chunks.iter().enumerate() {
        match rx.receive(target, c).expect("valid chunk") {
            ReceiveProgress::More { next_chunk_no } => assert_eq!(next_chunk_no as usize, i + 1),
            ReceiveProgress::Installed(info) => {
                assert_eq!(i + 1, chunks.len());
                assert_eq!(info.regions, vec![(meta.region_id, meta.index)]);
            }
        }
    }
}

/// Recomputes a chunk's CRC after the test changed its header or body.
fn reseal(mut v: Vec<u8>) -> Bytes {
    let mut h = crc32fast::Hasher::new();
    h.update(&v[..52]);
    h.update(&v[CHUNK_HEADER_LEN..]);
    let crc = h.finalize();
    v[52..56].copy_from_slice(&crc.to_le_bytes());
    Bytes::from(v)
}

proptest! {
    #[test]
    fn command_round_trips(c in command_strategy()) {
        let b = c.encode();
        prop_assert_eq!(b.len(), c.encoded_len());
        prop_assert_eq!(Command::decode(&b).unwrap(), c);
    }

    #[test]
    fn command_decode_survives_arbitrary_bytes(v in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Command::decode(&Bytes::from(v));
    }

    #[test]
    fn command_refuses_mutations(c in command_strategy(), at in any::<prop::sample::Index>(),
                                 flip in 1u8..=255, cut in any::<prop::sample::Index>()) {
        let b = c.encode();
        let mut v = b.to_vec();
        v[at.index(b.len())] ^= flip;
        prop_assert!(Command::decode(&Bytes::from(v)).is_err());
        let short = b.slice(..cut.index(b.len()));
        prop_assert!(Command::decode(&short).is_err());
        let mut long = b.to_vec();
        long.push(0);
        prop_assert!(Command::decode(&Bytes::from(long)).is_err());
    }

    #[test]
    fn chunk_and_meta_decoders_survive_arbitrary_bytes(v in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Chunk::decode(&Bytes::from(v.clone()));
        let _ = SnapshotMeta::decode(&v);
        // Also with a valid CRC, so the parser behind the checksum is exercised.
        if v.len() >= CHUNK_HEADER_LEN {
            let mut w = v.clone();
            let body = (w.len() - CHUNK_HEADER_LEN) as u32;
            w[..4].copy_from_slice(b"BSNC");
            w[4] = engine::state::snapshot::SNAPSHOT_FORMAT_VERSION;
            w[5] &= 3;
            w[6] = 0;
            w[7] = 0;
            w[48..52].copy_from_slice(&body.to_le_bytes());
            let _ = Chunk::decode(&reseal(w));
        }
    }

    #[test]
    fn snapshot_round_trips_and_resumes(src in source_strategy(), chunk_kib in 1usize..4,
                                        resume in any::<prop::sample::Index>()) {
        let chunk_max = chunk_kib * 1024;
        let expected = src.data.clone();
        let state = src.state.clone();
        let mut b = SnapshotBuilder::new(src, 77, chunk_max);
        let chunks = build_all(&mut b);
        let meta = b.meta().expect("finished");
        prop_assert_eq!(meta.key_count, expected.len() as u64);
        prop_assert_eq!(meta.chunk_count as usize, chunks.len());
        prop_assert_eq!(meta.total_bytes, chunks.iter().map(|c| c.len() as u64).sum::<u64>());
        prop_assert_eq!(SnapshotMeta::decode(&meta.encode()).unwrap(), meta);
        for c in &chunks {
            let d = Chunk::decode(c).unwrap();
            prop_assert!(c.len() <= chunk_max || d.entries.len() == 1);
            prop_assert_eq!(&d.encode(), c);
        }
        // Resuming, from this builder's marks or by a fresh builder, gives the same suffix.
        let k = resume.index(chunks.len()) as u32;
        b.resume_after(k).unwrap();
        prop_assert_eq!(&build_all(&mut b)[..], &chunks[k as usize + 1..]);
        let mut fresh = SnapshotBuilder::new(
            ModelSource { state: state.clone(), data: expected.clone() }, 77, chunk_max);
        fresh.resume_after(k).unwrap();
        prop_assert_eq!(&build_all(&mut fresh)[..], &chunks[k as usize + 1..]);
        let mut target = ModelTarget::default();
        install(&chunks, meta, &mut target);
        let (got_state, got) = &target.regions[&9];
        prop_assert_eq!(got_state, &state);
        prop_assert_eq!(got, &expected);
    }

    #[test]
    fn receiver_refuses_damage_and_keeps_its_place(src in source_strategy(),
                                                   victim in any::<prop::sample::Index>(),
                                                   at in any::<prop::sample::Index>(),
                                                   flip in 1u8..=255) {
        let expected = src.data.clone();
        let mut b = SnapshotBuilder::new(src, 5, 1024);
        let chunks = build_all(&mut b);
        let meta = b.meta().unwrap();
        let v = victim.index(chunks.len());
        let mut target = ModelTarget::default();
        let mut rx = SnapshotReceiver::new(meta);
        for (i, c) in chunks.iter().enumerate() {
            if i == v {
                let mut bad = c.to_vec();
                bad[at.index(c.len())] ^= flip;
                let e = rx.receive(&mut target, &Bytes::from(bad)).unwrap_err();
                prop_assert!(!e.is_fatal(), "{e}");
                if i + 1 < chunks.len() {
                    let gap = rx.receive(&mut target, &chunks[i + 1]).unwrap_err();
                    let is_gap = matches!(gap, SnapshotError::Gap { .. });
                    prop_assert!(is_gap);
                }
                if i > 0 {
                    let dup = rx.receive(&mut target, &chunks[i - 1]).unwrap_err();
                    let is_dup = matches!(dup, SnapshotError::Duplicate { .. });
                    prop_assert!(is_dup);
                }
                prop_assert_eq!(rx.next_chunk_no() as usize, i);
            }
            rx.receive(&mut target, c).unwrap();
        }
        prop_assert_eq!(&target.regions[&9].1, &expected);
        prop_assert_eq!(target.aborted, 0);
    }
}

#[test]
fn foreign_chunk_is_refused() {
    let data: BTreeMap<Bytes, Bytes> = (0..50u32)
        .map(|i| {
            (
                Bytes::from(i.to_be_bytes().to_vec()),
                Bytes::from(vec![1u8; 100]),
            )
        })
        .collect();
    let src = |id| {
        SnapshotBuilder::new(
            ModelSource {
                state: region_state(Bytes::new()),
                data: data.clone(),
            },
            id,
            1024,
        )
    };
    let (mut a, mut b) = (src(1), src(2));
    let (ca, cb) = (build_all(&mut a), build_all(&mut b));
    let mut target = ModelTarget::default();
    let mut rx = SnapshotReceiver::new(a.meta().unwrap());
    rx.receive(&mut target, &ca[0]).unwrap();
    let e = rx.receive(&mut target, &cb[1]).unwrap_err();
    assert!(
        matches!(
            e,
            SnapshotError::WrongSnapshot {
                field: "snapshot id",
                ..
            }
        ),
        "{e}"
    );
    for c in &ca[1..] {
        rx.receive(&mut target, c).unwrap();
    }
    assert_eq!(target.regions[&9].1, data);
}

#[test]
fn stream_checksum_failure_aborts_and_keeps_the_old_state() {
    let data: BTreeMap<Bytes, Bytes> = (0..30u32)
        .map(|i| {
            (
                Bytes::from(i.to_be_bytes().to_vec()),
                Bytes::from(vec![7u8; 90]),
            )
        })
        .collect();
    let mut b = SnapshotBuilder::new(
        ModelSource {
            state: region_state(Bytes::from_static(b"m")),
            data,
        },
        3,
        1024,
    );
    let chunks = build_all(&mut b);
    assert!(chunks.len() > 2);
    let mut target = ModelTarget::default();
    let old = (region_state(Bytes::from_static(b"old")), BTreeMap::new());
    target.regions.insert(9, old.clone());
    // Re-seal the last chunk with a wrong stream checksum: each chunk verifies, the stream not.
    let last = chunks.last().unwrap().to_vec();
    let n = last.len();
    let mut bad = last.clone();
    bad[n - 4] ^= 1;
    let mut rx = SnapshotReceiver::new(b.meta().unwrap());
    for c in &chunks[..chunks.len() - 1] {
        rx.receive(&mut target, c).unwrap();
    }
    let e = rx.receive(&mut target, &reseal(bad)).unwrap_err();
    assert!(e.is_fatal(), "{e}");
    assert_eq!(target.aborted, 1);
    assert_eq!(target.regions[&9], old);
    assert!(matches!(
        rx.receive(&mut target, chunks.last().unwrap()),
        Err(SnapshotError::Closed)
    ));
}

#[test]
fn empty_region_is_one_chunk() {
    let mut b = SnapshotBuilder::new(
        ModelSource {
            state: region_state(Bytes::new()),
            data: BTreeMap::new(),
        },
        1,
        1024,
    );
    let chunks = build_all(&mut b);
    assert_eq!(chunks.len(), 1);
    let d = Chunk::decode(&chunks[0]).unwrap();
    assert!(d.header.first && d.header.last && d.entries.is_empty());
    let mut target = ModelTarget::default();
    install(&chunks, b.meta().unwrap(), &mut target);
    assert!(target.regions[&9].1.is_empty());
}

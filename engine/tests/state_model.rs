//! Model check of the state store on a small sim device: random puts, deletes, ranges, CAS and
//! batches on several regions match a `BTreeMap` model (results, gets, scans) across compactions,
//! interleaved checkpoints and restarts with and without a checkpoint (replaying the test's "log").
//! Also: corruption and damaged roots are detected, failed commands apply nothing, frozen views
//! hold. `SEED=` is printed on failure (`BASALT_SIM_SEED`, `BASALT_SIM_RUNS`).

mod state_harness;

use std::collections::BTreeMap;

use bytes::Bytes;
use engine::error::EngineError;
use engine::state::{Command, Op, StateStore};
use state_harness::*;

const REGIONS: u64 = 3;
const STATE_SEGMENTS: u64 = 40;

struct Run {
    rng: Rng,
    log: Log,
    model: Model,
    next_index: BTreeMap<u64, u64>,
    ckpt_active: bool,
}

impl Run {
    fn step(&mut self, store: &mut StateStore) {
        let r = 1 + self.rng.below(REGIONS);
        let index = self.next_index[&r];
        let entry = if self.rng.chance(0.05) {
            store.set_applied(r, index, 1).expect("set_applied");
            Entry::Empty
        } else {
            let cmd = random_command(&mut self.rng, &self.model.regions[&r].1);
            let got = store
                .apply(r, index, 1, &cmd)
                .expect("apply")
                .expect("no session");
            let e = Entry::Cmd(cmd);
            let want = self.model.apply(r, index, &e);
            assert_eq!(got, want, "results at region {r} index {index}");
            self.log.entries.entry(r).or_default().push((index, e));
            self.next_index.insert(r, index + 1);
            return;
        };
        self.model.apply(r, index, &entry);
        self.log.entries.entry(r).or_default().push((index, entry));
        self.next_index.insert(r, index + 1);
    }

    fn check_reads(&mut self, store: &StateStore) {
        let r = 1 + self.rng.below(REGIONS);
        let m = &self.model.regions[&r].1;
        for _ in 0..5 {
            let k = key(&mut self.rng);
            let want = m.get(&k[..]).map(|v| Bytes::from(v.clone()));
            assert_eq!(store.get(r, &k).expect("get"), want, "get {k:?}");
        }
        let (a, b) = (key(&mut self.rng), key(&mut self.rng));
        let limit = 1 + self.rng.below(20) as usize;
        let got = store.scan(r, &a, Some(&b), limit).expect("scan");
        let want: Vec<(Bytes, Bytes)> = m
            .range(a.to_vec()..)
            .filter(|(k, _)| k[..] < b[..])
            .take(limit)
            .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
            .collect();
        assert!(a >= b || got == want, "scan {a:?}..{b:?} limit {limit}");
    }

    fn maintain(&mut self, store: &mut StateStore) {
        if self.ckpt_active {
            if store
                .checkpoint_step(8 * 1024)
                .expect("checkpoint step")
                .is_some()
            {
                self.ckpt_active = false;
            }
        } else if self.rng.chance(0.02) {
            store.checkpoint_begin().expect("begin");
            self.ckpt_active = true;
        }
        if self.rng.chance(0.2) {
            store.compact_step().expect("compact");
        }
        let in_use = store.segment_stats().len() as u64;
        if in_use + 8 > STATE_SEGMENTS {
            while store.compact_step().expect("compact") {}
            store.checkpoint().expect("checkpoint");
            self.ckpt_active = false;
        }
    }

    fn restart(
        &mut self,
        sim: &mut engine::io::sim::SimIo,
        store: StateStore,
        sb: &engine::layout::Superblock,
    ) -> StateStore {
        let mut store = store;
        let with_checkpoint = self.rng.chance(0.5);
        let durable = if with_checkpoint {
            let info = store.checkpoint().expect("checkpoint");
            Some(info.regions)
        } else {
            None
        };
        drop(store);
        sim.restart();
        let mut store = open(sim, sb);
        self.ckpt_active = false;
        if let Some(regions) = durable {
            for (r, applied) in regions {
                assert_eq!(
                    store.region_state(r).unwrap().applied_index,
                    applied,
                    "checkpointed index"
                );
            }
        }
        let applied: BTreeMap<u64, u64> = store
            .region_ids()
            .into_iter()
            .map(|r| (r, store.region_state(r).unwrap().applied_index))
            .collect();
        assert_matches(&store, &self.log.model_at(&applied));
        self.log.replay(&mut store);
        assert_matches(&store, &self.model);
        store
    }
}

fn run(seed: u64) {
    let (mut sim, sb) = device(seed, STATE_SEGMENTS);
    let mut store = open(&sim, &sb);
    let mut run = Run {
        rng: Rng(seed),
        log: Log::default(),
        model: Model::default(),
        next_index: BTreeMap::new(),
        ckpt_active: false,
    };
    for r in 1..=REGIONS {
        store.create_region(region_state(r)).expect("create");
        run.model.regions.insert(r, (0, BTreeMap::new()));
        run.next_index.insert(r, 1);
    }
    store.checkpoint().expect("bootstrap checkpoint");
    for _ in 0..4000 {
        run.step(&mut store);
        if run.rng.chance(0.1) {
            run.check_reads(&store);
        }
        run.maintain(&mut store);
        if run.rng.chance(0.008) {
            store = run.restart(&mut sim, store, &sb);
        }
    }
    assert_matches(&store, &run.model);
    let reused = store
        .segment_stats()
        .iter()
        .any(|s| s.generation > STATE_SEGMENTS);
    assert!(reused, "the run never reused a segment");
}

#[test]
fn state_matches_model_across_restarts_and_compactions() {
    for_each_seed(4, run);
}

#[test]
fn flipped_bit_in_a_value_block_is_detected() {
    let (mut sim, sb) = device(7, 16);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    let ops = (0..50)
        .map(|i| Op::Put {
            key: Bytes::from(format!("key{i:02}")),
            value: Bytes::from(vec![i as u8; 300]),
        })
        .collect();
    store
        .apply(
            1,
            1,
            1,
            &Command {
                client_id: 1,
                sequence: 1,
                ops,
            },
        )
        .unwrap()
        .unwrap();
    store.checkpoint().unwrap();
    assert_eq!(store.scan(1, b"", None, 100).unwrap().len(), 50);
    let seg = store
        .segment_stats()
        .into_iter()
        .find(|s| s.live_bytes > 0)
        .unwrap();
    let seg_offset = sb.data_start_offset + seg.segment as u64 * sb.segment_size_bytes;
    drop(store);
    sim.rot(seg_offset + BLOCK as u64);
    let store = open(&sim, &sb);
    let errors = (0..50)
        .filter(|i| {
            let r = store.get(1, format!("key{i:02}").as_bytes());
            assert!(
                matches!(r, Ok(_) | Err(EngineError::Corrupt { .. })),
                "{r:?}"
            );
            r.is_err()
        })
        .count();
    assert!(errors > 0, "a rotted value block went unnoticed");
    assert!(store.scan(1, b"", None, 100).is_err());
}

#[test]
fn frozen_region_keeps_its_view_through_overwrites_and_compaction() {
    let (sim, sb) = device(9, 24);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    let put_all = |store: &mut StateStore, index: u64, fill: u8| {
        let ops = (0..40)
            .map(|i| Op::Put {
                key: Bytes::from(format!("key{i:02}")),
                value: Bytes::from(vec![fill; 1000]),
            })
            .collect();
        let cmd = Command {
            client_id: 1,
            sequence: index,
            ops,
        };
        store.apply(1, index, 1, &cmd).unwrap().unwrap();
    };
    put_all(&mut store, 1, 1);
    let frozen = store.freeze(1).unwrap();
    for i in 2..16 {
        put_all(&mut store, i, i as u8);
        while store.compact_step().unwrap() {}
        store.checkpoint().unwrap();
    }
    assert_eq!(frozen.state().applied_index, 1);
    assert_eq!(frozen.key_count(), 40);
    let mut after: Option<Bytes> = None;
    let mut seen = 0;
    loop {
        let (chunk, done) = frozen.read_from(after.as_deref(), 5000).unwrap();
        for (_, v) in &chunk {
            assert_eq!(&v[..], &[1u8; 1000][..]);
        }
        seen += chunk.len();
        after = chunk.last().map(|(k, _)| k.clone());
        if done {
            break;
        }
    }
    assert_eq!(seen, 40);
    assert!(
        store.segment_stats().iter().any(|s| s.pinned),
        "nothing pinned by the frozen view"
    );
    drop(frozen);
    store.checkpoint().unwrap();
    assert!(store.segment_stats().iter().all(|s| !s.pinned));
    assert_eq!(store.get(1, b"key05").unwrap().unwrap()[0], 15);
}

#[test]
fn a_failed_command_applies_nothing() {
    let (sim, sb) = device(11, 16);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    let put = |k: &str, len: usize| Op::Put {
        key: Bytes::from(k.to_string()),
        value: Bytes::from(vec![5u8; len]),
    };
    let ok = Command {
        client_id: 1,
        sequence: 1,
        ops: vec![put("a", 10)],
    };
    store.apply(1, 1, 1, &ok).unwrap().unwrap();
    let ops = vec![
        put("b", 10),
        Op::Delete {
            key: Bytes::from_static(b"a"),
        },
        put("c", SEGMENT_BYTES as usize),
    ];
    let bad = Command {
        client_id: 1,
        sequence: 2,
        ops,
    };
    let r = store.apply(1, 2, 1, &bad);
    assert!(
        matches!(r, Err(EngineError::StateRecordTooLarge { .. })),
        "{r:?}"
    );
    assert_eq!(store.region_state(1).unwrap().applied_index, 1);
    let all = store.scan(1, b"", None, 10).unwrap();
    assert_eq!(
        all,
        vec![(Bytes::from_static(b"a"), Bytes::from(vec![5u8; 10]))]
    );
    let stale = store.apply(1, 1, 1, &ok);
    assert!(
        matches!(stale, Err(EngineError::StaleApply { .. })),
        "{stale:?}"
    );
    let live: u64 = store.segment_stats().iter().map(|s| s.live_bytes).sum();
    assert_eq!(
        live,
        24 + 1 + 10,
        "live bytes count only the committed value"
    );
}

fn put_cmd(seq: u64, keys: std::ops::Range<u32>, fill: u8) -> Command {
    let ops = keys
        .map(|i| Op::Put {
            key: Bytes::from(format!("key{i:03}")),
            value: Bytes::from(vec![fill; 200]),
        })
        .collect();
    Command {
        client_id: 1,
        sequence: seq,
        ops,
    }
}

#[test]
fn a_damaged_newest_root_falls_back_to_the_older_checkpoint() {
    let (mut sim, sb) = device(13, 16);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    store
        .apply(1, 1, 1, &put_cmd(1, 0..20, 1))
        .unwrap()
        .unwrap();
    store.checkpoint().unwrap();
    store
        .apply(1, 2, 1, &put_cmd(2, 10..30, 2))
        .unwrap()
        .unwrap();
    store.checkpoint().unwrap();
    drop(store);
    // The second root went to copy 1.
    sim.rot(engine::layout::STATE_ROOT_OFFSETS[1]);
    let store = open(&sim, &sb);
    assert_eq!(store.region_state(1).unwrap().applied_index, 1);
    let all = store.scan(1, b"", None, 100).unwrap();
    assert_eq!(all.len(), 20);
    assert!(all.iter().all(|(_, v)| v[..] == [1u8; 200][..]));
}

#[test]
fn a_damaged_checkpoint_fails_open_instead_of_starting_empty() {
    let (mut sim, sb) = device(17, 16);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    store
        .apply(1, 1, 1, &put_cmd(1, 0..100, 1))
        .unwrap()
        .unwrap();
    store.checkpoint().unwrap();
    let segments: Vec<u32> = store.segment_stats().iter().map(|s| s.segment).collect();
    drop(store);
    let blocks = SEGMENT_BYTES / BLOCK as u64;
    for s in segments {
        let at = sb.data_start_offset + s as u64 * sb.segment_size_bytes;
        for b in 0..blocks {
            sim.rot(at + b * BLOCK as u64);
        }
    }
    let r = StateStore::open(Box::new(sim.share()), Box::new(sim.share()), &sb, config());
    assert!(
        matches!(r, Err(EngineError::Corrupt { .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn a_full_partition_still_checkpoints_and_recovers_space() {
    let (sim, sb) = device(19, 12);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    let mut index = 0;
    let full = loop {
        index += 1;
        match store.apply(1, index, 1, &put_cmd(index, 0..10, index as u8)) {
            Ok(_) => assert!(index < 1000, "never filled up"),
            Err(e) => break e,
        }
    };
    assert!(matches!(full, EngineError::StateFull { .. }), "{full:?}");
    while store.compact_step().unwrap() {}
    store
        .checkpoint()
        .expect("checkpoint in the reserved segments");
    for i in 0..50 {
        store
            .apply(1, index + i, 1, &put_cmd(index + i, 0..10, 7))
            .expect("space recovered")
            .expect("fresh");
        while store.compact_step().unwrap() {}
        if i % 10 == 9 {
            store.checkpoint().unwrap();
        }
    }
    assert_eq!(
        store.get(1, b"key005").unwrap().unwrap()[..],
        [7u8; 200][..]
    );
}

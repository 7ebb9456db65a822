//! Crash safety on the seeded sim device: random multi-region batches (group-committed, some
//! overwriting a region's tail, compactions wrapping the segment ring), power cut at a random
//! point, recovery; every acknowledged batch must be there byte for byte and pending batches whole
//! or absent (the log equals the acknowledged model plus a prefix of the pending batches).
//! Failures print `SEED=...`; `BASALT_SIM_RUNS=N` runs more, `BASALT_SIM_SEED=S` replays one.

mod log_harness;

use engine::log::{LogStore, Record};
use log_harness::*;

struct Run {
    rng: Rng,
    acked: Model,
    pending: Vec<(u64, Vec<Record>)>,
    regions: u64,
    step: u64,
}

impl Run {
    fn projected(&self) -> Model {
        let mut m = self.acked.clone();
        for (_, recs) in &self.pending {
            m.apply(recs);
        }
        m
    }

    fn take_acks(&mut self, acks: Vec<engine::log::Ack>) {
        for a in acks {
            let (t, recs) = self.pending.remove(0);
            assert_eq!(t, a.ticket.0, "acknowledgements out of order");
            match a.result {
                Ok(()) => self.acked.apply(&recs),
                // Fails every queued batch; the ring frees up once compaction catches up.
                Err(engine::error::EngineError::LogFull { .. }) => {}
                Err(e) => panic!("batch {:?} failed: {e}", a.ticket),
            }
        }
    }

    fn drain(&mut self, store: &mut LogStore) {
        while !self.pending.is_empty() {
            let acks = store.poll(true).expect("poll");
            self.take_acks(acks);
        }
    }

    fn compact_some(&mut self, store: &mut LogStore, all: bool) {
        self.drain(store);
        let ids: Vec<u64> = self.acked.regions.keys().copied().collect();
        for r in ids {
            if !all && !self.rng.chance(0.3) {
                continue;
            }
            let m = self.acked.region(r);
            let to = if all {
                m.last_index()
            } else {
                m.first_index - 1 + self.rng.below(m.entries.len() as u64 + 1)
            };
            let t = store.compact_to(r, to).expect("compact_to");
            self.pending.push((
                t.0,
                vec![Record::Compact {
                    region_id: r,
                    index: to,
                    term: 0,
                }],
            ));
        }
        self.drain(store);
    }

    fn step(&mut self, store: &mut LogStore) {
        self.step += 1;
        let (tail, head) = store.segment_extent();
        let segments = store.superblock().segment_count;
        let used = (head + segments - tail) % segments + 1;
        if used + 3 >= segments {
            self.compact_some(store, true);
        } else if self.rng.chance(0.08) {
            self.compact_some(store, false);
        }
        if self.rng.chance(0.02) {
            // A destroyed peer's region starts over (the next batches write it from index 1).
            let region_id = 1 + self.rng.below(self.regions);
            let mut clean = engine::log::LogBatch::new();
            clean.clean_region(region_id);
            let recs = clean.records().to_vec();
            let t = store.append(clean).expect("append clean");
            self.pending.push((t.0, recs));
        }
        let projected = self.projected();
        let batch = random_batch(&mut self.rng, &projected, self.regions, self.step);
        let recs = batch.records().to_vec();
        match store.append(batch) {
            Ok(t) => self.pending.push((t.0, recs)),
            Err(engine::error::EngineError::BatchTooLarge {
                size_bytes,
                max_bytes,
            }) => assert!(size_bytes > max_bytes),
            Err(e) => panic!("append: {e}"),
        }
        let acks = match self.rng.below(10) {
            0..=3 => store.poll(false).expect("poll"),
            4..=6 => store.poll(true).expect("poll"),
            _ => Vec::new(),
        };
        self.take_acks(acks);
    }
}

fn one_run(seed: u64) {
    let mut rng = Rng(seed);
    let block_size = if rng.chance(0.7) { 512 } else { 4096 };
    let segment_size = block_size as u64 * (16 + rng.below(48));
    let sim = sim_store(seed, block_size, segment_size, 6 + rng.below(6));
    let cache = if rng.chance(0.5) { 2048 } else { 1 << 20 };
    let regions = 1 + rng.below(6);
    let durable_writes = rng.chance(0.7);
    let mut run = Run {
        rng,
        acked: Model::default(),
        pending: vec![],
        regions,
        step: 0,
    };
    for _round in 0..3 {
        let (mut store, report) = open_with(&sim, cache, durable_writes);
        assert!(
            report.corruptions.is_empty(),
            "corruption without faults: {:?}",
            report.corruptions
        );
        let steps = 5 + run.rng.below(60);
        for _ in 0..steps {
            run.step(&mut store);
        }
        drop(store);
        {
            let mut s = sim.lock().unwrap();
            if run.rng.chance(0.8) {
                s.power_loss();
            } else {
                s.restart();
            }
        }
        let (store, report) = open_with(&sim, cache, durable_writes);
        assert!(
            report.corruptions.is_empty() && report.refused_regions.is_empty(),
            "{report:?}"
        );
        let ids: Vec<u64> = (1..=regions).collect();
        let got = read_all(&store, ids);
        let mut candidate = run.acked.clone();
        let mut matched = normalized(&candidate) == got;
        let mut k = 0;
        while !matched && k < run.pending.len() {
            candidate.apply(&run.pending[k].1);
            k += 1;
            matched = normalized(&candidate) == got;
        }
        assert!(
            matched,
            "recovered log matches no prefix of the {} pending batches ({report:?}); vs acknowledged:\n{}",
            run.pending.len(),
            diff(&normalized(&run.acked), &got)
        );
        run.acked = candidate;
        run.pending.clear();
    }
}

#[test]
fn acknowledged_batches_survive_power_loss() {
    let runs = runs(2000);
    let only: Option<u64> = std::env::var("BASALT_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    for seed in only.map_or(0..runs, |s| s..s + 1) {
        let result = std::panic::catch_unwind(|| one_run(seed));
        if let Err(e) = result {
            eprintln!("SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn entries_honours_max_size_on_cold_and_cached_ranges() {
    use raftlog::{Entry, Storage};
    let sim = sim_store(99, 512, 32 * 1024, 8);
    for cache in [0, 1 << 20] {
        let (mut store, _) = open(&sim, cache);
        let first = store.region_log(1).last_index().unwrap() + 1;
        let entries: Vec<Entry> = (first..first + 50)
            .map(|i| Entry::new(1, i, vec![i as u8; 100]))
            .collect();
        let mut b = engine::log::LogBatch::new();
        b.add_entries(1, entries.clone());
        store.write_sync(b).unwrap();
        let log = store.region_log(1);
        let all = log.entries(first, first + 50, None).unwrap();
        assert_eq!(all, entries);
        let one = entries[0].size_bytes();
        assert_eq!(
            log.entries(first, first + 50, Some(0)).unwrap(),
            entries[..1]
        );
        assert_eq!(
            log.entries(first, first + 50, Some(3 * one)).unwrap(),
            entries[..3]
        );
        assert_eq!(
            log.entries(first + 10, first + 50, Some(3 * one - 1))
                .unwrap(),
            entries[10..12]
        );
        let t = store.compact_to(1, first + 4).unwrap();
        store.wait_for(t).unwrap();
        assert_eq!(log.first_index().unwrap(), first + 5);
        assert_eq!(log.term(first + 4).unwrap(), 1);
        assert_eq!(
            log.entries(first + 4, first + 6, None),
            Err(raftlog::StorageError::Compacted.into())
        );
        assert_eq!(
            log.entries(first + 5, first + 6, None).unwrap(),
            entries[5..6]
        );
        assert_eq!(
            log.entries(first + 50, first + 51, None),
            Err(raftlog::StorageError::Unavailable.into())
        );
    }
}

#[test]
fn checkpoint_larger_than_a_segment_is_split_and_frees_the_tail() {
    use raftlog::{ConfState, Entry, HardState};
    let sim = sim_store(5, 512, 512 * 16, 12);
    let (mut store, _) = open(&sim, 1 << 20);
    let mut model = Model::default();
    for chunk in 0..10u64 {
        let mut b = engine::log::LogBatch::new();
        for r in chunk * 20 + 1..=chunk * 20 + 20 {
            b.add_entries(r, vec![Entry::new(1, 1, vec![r as u8; 10])]);
            b.set_hard_state(
                r,
                HardState {
                    term: 1,
                    vote: r,
                    commit: 1,
                },
            );
            b.set_conf_state(r, ConfState::from_voters(vec![1, 2, 3]));
        }
        model.apply(b.records());
        store.write_sync(b).unwrap();
    }
    let mut last = None;
    for r in 1..=200 {
        last = Some(store.compact_to(r, 1).unwrap());
        model.apply(&[Record::Compact {
            region_id: r,
            index: 1,
            term: 0,
        }]);
    }
    store.wait_for(last.unwrap()).unwrap();
    for i in 2..40 {
        let mut b = engine::log::LogBatch::new();
        b.add_entries(1, vec![Entry::new(1, i, vec![0u8; 600])]);
        model.apply(b.records());
        store.write_sync(b).unwrap();
    }
    assert_ne!(
        store.segment_extent().0,
        0,
        "the tail never moved: the checkpoint did not free it"
    );
    drop(store);
    sim.lock().unwrap().power_loss();
    let (store, report) = open(&sim, 1 << 20);
    assert!(report.corruptions.is_empty(), "{report:?}");
    let got = read_all(&store, 1..=200);
    assert!(
        normalized(&model) == got,
        "{}",
        diff(&normalized(&model), &got)
    );
}

/// A compaction queued while a snapshot record of the same region is not yet durable must not
/// record the term of the entry the snapshot replaces: the compaction point's term would then
/// disagree with the snapshot, and the region's leader would find the log diverging at an
/// index this store has applied.
#[test]
fn compaction_behind_a_pending_snapshot_keeps_the_snapshot_term() {
    use raftlog::{Entry, Storage};
    let sim = sim_store(7, 512, 512 * 64, 8);
    let (mut store, _) = open(&sim, 1 << 20);
    let entries: Vec<Entry> = (1..=5)
        .map(|i| Entry {
            index: i,
            term: 1,
            data: vec![i as u8; 8].into(),
            ..Default::default()
        })
        .collect();
    let mut b = engine::log::LogBatch::new();
    b.add_entries(1, entries);
    store.write_sync(b).expect("entries");
    // A snapshot at (5, term 2) replaces those entries; before it is durable, a checkpoint asks
    // to compact up to 5.
    let mut snap = engine::log::LogBatch::new();
    snap.set_snapshot(1, 5, 2);
    let t = store.append(snap).expect("snapshot");
    store.compact_to(1, 5).expect("compaction");
    store.wait_for(t).expect("snapshot durable");
    while !store.poll(true).expect("poll").is_empty() {}
    let log = store.region_log(1);
    assert_eq!(log.term(5).expect("term of the compaction point"), 2);
    drop(store);
    let (store, _) = open(&sim, 1 << 20);
    assert_eq!(store.region_log(1).term(5).expect("after recovery"), 2);
}

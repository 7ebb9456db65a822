//! Power loss on the sim device at random points during applies, compaction steps and
//! checkpoints (the store's write handle refuses writes after a random number, then the power is
//! cut): on reopen each region is at its last durable checkpoint (or the one whose root was being
//! written), the state equals the model at exactly that index, and replaying the "log" converges.
//! `SEED=` is printed on failure (`BASALT_SIM_SEED`, `BASALT_SIM_RUNS`).

mod state_harness;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use engine::error::EngineError;
use engine::io::sim::{FaultConfig, SimIo};
use engine::layout::Superblock;
use engine::state::StateStore;
use state_harness::*;

const REGIONS: u64 = 3;

/// Power cuts that hit an apply, a compaction step, a checkpoint (over every seed run).
static CUTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
const STATE_SEGMENTS: u64 = 40;

fn open_crashing(sim: &SimIo, sb: &Superblock, budget: &Arc<AtomicI64>) -> StateStore {
    let write = CrashIo::new(sim.share(), Arc::clone(budget));
    StateStore::open(Box::new(write), Box::new(sim.share()), sb, config()).expect("open")
}

fn applied_of(store: &StateStore) -> BTreeMap<u64, u64> {
    store
        .region_ids()
        .into_iter()
        .map(|r| (r, store.region_state(r).unwrap().applied_index))
        .collect()
}

/// Counts a power cut hitting operation kind `kind`.
fn cut_in<T>(kind: usize, r: Result<T, EngineError>) -> Result<T, EngineError> {
    if r.is_err() {
        CUTS[kind].fetch_add(1, Ordering::Relaxed);
    }
    r
}

struct Run {
    rng: Rng,
    log: Log,
    model: Model,
    next_index: BTreeMap<u64, u64>,
    /// Applied indexes of the last checkpoint that returned.
    durable: BTreeMap<u64, u64>,
    /// Applied indexes frozen by the checkpoint in progress.
    pending: Option<BTreeMap<u64, u64>>,
}

impl Run {
    /// One random action; `Err` when the device has been cut off.
    fn action(&mut self, store: &mut StateStore) -> Result<(), EngineError> {
        match self.rng.below(20) {
            0..=14 => {
                let r = 1 + self.rng.below(REGIONS);
                let index = self.next_index[&r];
                self.next_index.insert(r, index + 1);
                let cmd = random_command(&mut self.rng, &self.model.regions[&r].1);
                let e = Entry::Cmd(cmd.clone());
                // The entry is in the (durable) log before it is applied.
                self.model.apply(r, index, &e);
                self.log.entries.entry(r).or_default().push((index, e));
                cut_in(0, store.apply(r, index, 1, &cmd))?.expect("no session");
            }
            15 | 16 => {
                cut_in(1, store.compact_step())?;
            }
            _ => {
                if self.pending.is_none() {
                    self.pending = Some(applied_of(store));
                    cut_in(2, store.checkpoint_begin())?;
                } else if let Some(info) = cut_in(2, store.checkpoint_step(4096))? {
                    self.durable = info.regions.into_iter().collect();
                    self.pending = None;
                }
            }
        }
        if store.segment_stats().len() as u64 + 8 > STATE_SEGMENTS {
            while cut_in(1, store.compact_step())? {}
            while self.pending.is_some() {
                if let Some(info) = cut_in(2, store.checkpoint_step(u64::MAX))? {
                    self.durable = info.regions.into_iter().collect();
                    self.pending = None;
                }
            }
            self.pending = Some(applied_of(store));
            let info = cut_in(2, store.checkpoint())?;
            self.durable = info.regions.into_iter().collect();
            self.pending = None;
        }
        Ok(())
    }

    fn check_recovered(&mut self, store: &mut StateStore) {
        let applied = applied_of(store);
        for (&r, &a) in &applied {
            let durable = self.durable[&r];
            let pending = self.pending.as_ref().map(|p| p[&r]);
            assert!(
                a == durable || Some(a) == pending,
                "region {r} recovered at {a}; last checkpoint {durable}, pending {pending:?}"
            );
        }
        if let Some(p) = &self.pending {
            let all_new = applied.iter().all(|(r, a)| p[r] == *a);
            let all_old = applied.iter().all(|(r, a)| self.durable[r] == *a);
            assert!(all_new || all_old, "a checkpoint recovered in part");
            if all_new {
                self.durable = p.clone();
            }
        }
        self.pending = None;
        assert_matches(store, &self.log.model_at(&applied));
        self.log.replay(store);
        assert_matches(store, &self.model);
    }
}

fn run(seed: u64) {
    let (mut sim, sb) = device(seed, STATE_SEGMENTS);
    sim.set_faults(FaultConfig {
        latency_ops: (0, 3),
        ..FaultConfig::none()
    });
    let budget = Arc::new(AtomicI64::new(i64::MAX));
    let mut store = open_crashing(&sim, &sb, &budget);
    let mut run = Run {
        rng: Rng(seed),
        log: Log::default(),
        model: Model::default(),
        next_index: BTreeMap::new(),
        durable: BTreeMap::new(),
        pending: None,
    };
    for r in 1..=REGIONS {
        store.create_region(region_state(r)).expect("create");
        run.model.regions.insert(r, (0, BTreeMap::new()));
        run.next_index.insert(r, 1);
        run.durable.insert(r, 0);
    }
    store.checkpoint().expect("bootstrap checkpoint");
    let mut cuts = 0;
    for _ in 0..6 {
        budget.store(1 + run.rng.below(120) as i64, Ordering::SeqCst);
        for _ in 0..400 {
            if run.action(&mut store).is_err() {
                cuts += 1;
                break;
            }
        }
        drop(store);
        sim.power_loss();
        budget.store(i64::MAX, Ordering::SeqCst);
        store = open_crashing(&sim, &sb, &budget);
        run.check_recovered(&mut store);
        // Start from a durable checkpoint of the replayed state, as a store would.
        let info = store.checkpoint().expect("checkpoint after replay");
        run.durable = info.regions.into_iter().collect();
    }
    assert!(cuts > 0, "the power was never cut during an operation");
}

#[test]
fn state_after_power_loss_is_the_model_at_the_durable_index() {
    for_each_seed(12, run);
    let cuts: Vec<u64> = CUTS.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!("power cuts during apply, compaction, checkpoint: {cuts:?}");
    if seeds(12).len() >= 12 {
        assert!(
            cuts.iter().all(|&c| c > 0),
            "some kind of operation was never cut: {cuts:?}"
        );
    }
}

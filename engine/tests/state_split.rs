//! Region splits vs a model on a sim device: random commands, splits at random keys, writes to
//! both halves, compaction, checkpoints, restarts with and without a checkpoint (replaying the
//! global "log", splits included), power cuts aimed at splits; a child installed first; the
//! apply worker's `Split`; batched reads while writes land out of order. Failing runs print
//! `SEED=` (`BASALT_SIM_SEED`, `BASALT_SIM_RUNS`).

mod state_harness;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::error::EngineError;
use engine::io::sim::{FaultConfig, SimIo};
use engine::layout::Superblock;
use engine::state::record::value_len;
use engine::state::worker::{ApplyConfig, ApplyEvent, ApplyRequest, ApplyTask, ApplyWorker};
use engine::state::{Command, Op, RegionState, SplitOutcome, StateStore};
use raftlog::EntryType;
use state_harness::*;

const STATE_SEGMENTS: u64 = 40;
/// Applied index a split's child starts at (as a Raft peer created by a split does).
const CHILD_APPLIED: u64 = 5;
const REGIONS_MAX: usize = 10;
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Splits that moved keys, replays answered `AlreadyApplied`, splits repeated by a replay,
/// power cuts during a split (over every seed run).
static MOVED: AtomicU64 = AtomicU64::new(0);
static REPLAY_SKIPPED: AtomicU64 = AtomicU64::new(0);
static REPLAY_REDONE: AtomicU64 = AtomicU64::new(0);
static CUT_IN_SPLIT: AtomicU64 = AtomicU64::new(0);

/// One entry of the global "log" (all regions, in the order they were applied).
#[derive(Clone, Debug)]
enum Ev {
    Cmd(Command),
    Empty,
    Split { key: Bytes, child: u64 },
}

fn child_state(child: u64) -> RegionState {
    RegionState {
        region_id: child,
        applied_index: CHILD_APPLIED,
        applied_term: 1,
        conf_state: raftlog::ConfState::from_voters(vec![1, 2, 3]),
        meta: Bytes::from(format!("child-{child}")),
        sessions: Default::default(),
    }
}

fn parent_meta(parent: u64, index: u64) -> Bytes {
    Bytes::from(format!("parent-{parent}-at-{index}"))
}

type Range = (Vec<u8>, Option<Vec<u8>>);

fn in_range(k: &[u8], (start, end): &Range) -> bool {
    k >= &start[..] && end.as_ref().is_none_or(|e| k < &e[..])
}

/// The model: contents and applied indexes, metadata, key ranges, and the log.
#[derive(Clone, Default)]
struct World {
    model: Model,
    meta: BTreeMap<u64, Bytes>,
    range: BTreeMap<u64, Range>,
    next_index: BTreeMap<u64, u64>,
    next_region: u64,
    log: Vec<(u64, u64, Ev)>,
}

impl World {
    fn new() -> World {
        let mut w = World {
            next_region: 2,
            ..World::default()
        };
        w.model.regions.insert(1, (0, BTreeMap::new()));
        w.meta.insert(1, Bytes::new());
        w.range.insert(1, (Vec::new(), None));
        w.next_index.insert(1, 1);
        w
    }

    /// Records `ev` at the region's next index in the model and the log; returns the index.
    fn record(&mut self, r: u64, ev: Ev) -> u64 {
        let index = self.next_index[&r];
        self.next_index.insert(r, index + 1);
        match &ev {
            Ev::Cmd(c) => {
                self.model.apply(r, index, &Entry::Cmd(c.clone()));
            }
            Ev::Empty => {
                self.model.apply(r, index, &Entry::Empty);
            }
            Ev::Split { key, child } => {
                let (applied, kv) = self.model.regions.get_mut(&r).expect("parent");
                *applied = index;
                let moved = kv.split_off(&key[..]);
                self.model.regions.insert(*child, (CHILD_APPLIED, moved));
                self.meta.insert(r, parent_meta(r, index));
                self.meta.insert(*child, child_state(*child).meta);
                let (start, end) = self.range[&r].clone();
                self.range.insert(r, (start, Some(key.to_vec())));
                self.range.insert(*child, (key.to_vec(), end));
                self.next_index.insert(*child, CHILD_APPLIED + 1);
            }
        }
        self.log.push((r, index, ev));
        index
    }

    /// A random command of region `r`, its ops clipped to the region's key range.
    fn command(&self, rng: &mut Rng, r: u64) -> Command {
        let range = &self.range[&r];
        let mut cmd = random_command(rng, &self.model.regions[&r].1);
        cmd.ops = cmd
            .ops
            .into_iter()
            .filter_map(|op| clip(op, range))
            .collect();
        cmd
    }

    /// `cmd` after checking that all its keys are in region `r`'s range.
    fn command_checked(&self, r: u64, cmd: Command) -> Command {
        let range = &self.range[&r];
        assert!(cmd
            .ops
            .iter()
            .all(|op| clip(op.clone(), range).as_ref() == Some(op)));
        cmd
    }

    /// A split key strictly inside region `r`'s range, if one is found.
    fn split_key(&self, rng: &mut Rng, r: u64) -> Option<Bytes> {
        let range = &self.range[&r];
        for _ in 0..10 {
            let mut k = key(rng).to_vec();
            if rng.chance(0.5) {
                k.push(b'~');
            }
            if k > range.0 && in_range(&k, range) {
                return Some(Bytes::from(k));
            }
        }
        None
    }

    /// The region with the most keys (its split moves the most data).
    fn biggest_region(&self) -> u64 {
        let most = self
            .model
            .regions
            .iter()
            .max_by_key(|(_, (_, kv))| kv.len());
        most.map_or(1, |(r, _)| *r)
    }

    fn random_region(&self, rng: &mut Rng) -> u64 {
        let ids: Vec<u64> = self.model.regions.keys().copied().collect();
        ids[rng.below(ids.len() as u64) as usize]
    }
}

fn clip(op: Op, range: &Range) -> Option<Op> {
    match op {
        Op::Put { ref key, .. } | Op::Delete { ref key } | Op::Cas { ref key, .. } => {
            in_range(key, range).then_some(op)
        }
        Op::DeleteRange { start, end } => {
            let start = start.max(Bytes::from(range.0.clone()));
            let end = match &range.1 {
                Some(e) => end.min(Bytes::from(e.clone())),
                None => end,
            };
            (start < end).then_some(Op::DeleteRange { start, end })
        }
    }
}

/// Applies one log entry to the store.
fn apply_ev(store: &mut StateStore, r: u64, index: u64, ev: &Ev) -> Result<(), EngineError> {
    match ev {
        Ev::Cmd(c) => store.apply(r, index, 1, c).map(|_| ()),
        Ev::Empty => store.set_applied(r, index, 1),
        Ev::Split { key, child } => {
            let out =
                store.split_region(r, index, 1, key, child_state(*child), parent_meta(r, index))?;
            assert!(matches!(out, SplitOutcome::Moved { .. }), "{out:?}");
            Ok(())
        }
    }
}

/// Replays the log into a reopened store: each entry above its region's applied index is
/// applied; a split at or below it must be answered `AlreadyApplied`.
fn replay(store: &mut StateStore, log: &[(u64, u64, Ev)]) {
    for (r, index, ev) in log {
        let applied = store
            .region_state(*r)
            .unwrap_or_else(|| panic!("region {r} missing in replay at index {index}"))
            .applied_index;
        if *index > applied {
            if matches!(ev, Ev::Split { .. }) {
                REPLAY_REDONE.fetch_add(1, Ordering::Relaxed);
            }
            apply_ev(store, *r, *index, ev).expect("replay");
        } else if let Ev::Split { key, child } = ev {
            let again = store
                .split_region(*r, *index, 1, key, child_state(*child), Bytes::new())
                .expect("replayed split");
            assert_eq!(again, SplitOutcome::AlreadyApplied);
            REPLAY_SKIPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The store holds exactly the world's regions, contents, applied indexes and metadata, and
/// its live bytes are exactly the records of the live values (nothing live is unaccounted for,
/// nothing dead is counted).
fn check(store: &StateStore, w: &World) {
    assert_matches(store, &w.model);
    for (r, meta) in &w.meta {
        assert_eq!(&store.region_state(*r).unwrap().meta, meta, "meta of {r}");
    }
    let want: u64 = w
        .model
        .regions
        .values()
        .flat_map(|(_, kv)| kv.iter())
        .map(|(k, v)| value_len(k.len(), v.len()) as u64)
        .sum();
    let live: u64 = store.segment_stats().iter().map(|s| s.live_bytes).sum();
    assert_eq!(live, want, "live bytes");
}

struct Run {
    rng: Rng,
    w: World,
    /// The world as of the last durable checkpoint, and as of the one in progress.
    durable: World,
    pending: Option<World>,
    /// Split the region with the most keys rather than a random one.
    split_biggest: bool,
}

impl Run {
    fn new(seed: u64, store: &mut StateStore) -> Run {
        let w = World::new();
        let mut s = RegionState::new(1, raftlog::ConfState::from_voters(vec![1, 2, 3]));
        s.meta = Bytes::new();
        store.create_region(s).expect("create");
        store.checkpoint().expect("bootstrap checkpoint");
        Run {
            rng: Rng(seed),
            durable: w.clone(),
            w,
            pending: None,
            split_biggest: false,
        }
    }

    /// A write, an empty entry or a split on a random region.
    fn step(&mut self, store: &mut StateStore, split_chance: f64) -> Result<(), EngineError> {
        let split = self.w.model.regions.len() < REGIONS_MAX && self.rng.chance(split_chance);
        let r = match split && self.split_biggest {
            true => self.w.biggest_region(),
            false => self.w.random_region(&mut self.rng),
        };
        let key = match self.split_biggest {
            // Just above the range's start: the bulk-loaded keys all move.
            true => Some(Bytes::from([&self.w.range[&r].0[..], &[1]].concat())),
            false => self.w.split_key(&mut self.rng, r),
        };
        let ev = match split.then_some(key).flatten() {
            Some(key) => {
                let child = self.w.next_region;
                self.w.next_region += 1;
                Ev::Split { key, child }
            }
            None if self.rng.chance(0.05) => Ev::Empty,
            None => Ev::Cmd(self.w.command(&mut self.rng, r)),
        };
        // The entry is in the (durable) log before it is applied.
        let index = self.w.record(r, ev.clone());
        let moved = match &ev {
            Ev::Split { child, .. } => self.w.model.regions[child].1.len() as u64,
            _ => 0,
        };
        if let Ev::Split { key, child } = &ev {
            let out =
                store.split_region(r, index, 1, key, child_state(*child), parent_meta(r, index))?;
            match out {
                SplitOutcome::Moved { keys, .. } => assert_eq!(keys, moved, "keys moved"),
                o => panic!("split of {r} at {index}: {o:?}"),
            }
            MOVED.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        apply_ev(store, r, index, &ev)
    }

    /// Puts 40 values of 1500 bytes into the biggest region (so that splitting it moves more
    /// than the write buffer holds and the split itself writes to the device).
    fn bulk_load(&mut self, store: &mut StateStore) {
        let r = self.w.biggest_region();
        let start = self.w.range[&r].0.clone();
        let ops = (0..40u8)
            .map(|i| {
                let mut k = start.clone();
                k.extend_from_slice(&[1, b'a' + i / 10, b'0' + i % 10]);
                Op::Put {
                    key: Bytes::from(k),
                    value: Bytes::from(vec![i; 1500]),
                }
            })
            .collect();
        let cmd = Command {
            client_id: 0,
            sequence: self.rng.next_u64(),
            ops,
        };
        let ev = Ev::Cmd(self.w.command_checked(r, cmd));
        let index = self.w.record(r, ev.clone());
        apply_ev(store, r, index, &ev).expect("bulk load");
    }

    fn check_reads(&mut self, store: &StateStore) {
        let r = self.w.random_region(&mut self.rng);
        let m = &self.w.model.regions[&r].1;
        for _ in 0..5 {
            let k = key(&mut self.rng);
            let want = m.get(&k[..]).map(|v| Bytes::from(v.clone()));
            assert_eq!(store.get(r, &k).expect("get"), want, "get {k:?} in {r}");
        }
    }

    fn checkpoint_done(&mut self) {
        self.durable = self.pending.take().expect("a checkpoint was begun");
    }

    /// Checkpoint steps, compaction, and room on the small device.
    fn maintain(&mut self, store: &mut StateStore) -> Result<(), EngineError> {
        if self.pending.is_some() {
            if store.checkpoint_step(8 * 1024)?.is_some() {
                self.checkpoint_done();
            }
        } else if self.rng.chance(0.03) {
            self.pending = Some(self.w.clone());
            store.checkpoint_begin()?;
        }
        if self.rng.chance(0.2) {
            store.compact_step()?;
        }
        if store.segment_stats().len() as u64 + 8 > STATE_SEGMENTS {
            while store.compact_step()? {}
            while self.pending.is_some() {
                if store.checkpoint_step(u64::MAX)?.is_some() {
                    self.checkpoint_done();
                }
            }
            self.pending = Some(self.w.clone());
            store.checkpoint()?;
            self.checkpoint_done();
        }
        Ok(())
    }

    /// After a reopen: the store is at the durable checkpoint (or, after a power cut during a
    /// root write, the pending one); replaying the log brings it to the world.
    fn recover(&mut self, store: &mut StateStore) {
        let at_pending = self.pending.as_ref().is_some_and(|p| {
            store.region_ids() == p.model.regions.keys().copied().collect::<Vec<_>>()
                && p.model
                    .regions
                    .iter()
                    .all(|(r, (a, _))| store.region_state(*r).unwrap().applied_index == *a)
        });
        if at_pending {
            self.checkpoint_done();
        }
        self.pending = None;
        check(store, &self.durable);
        replay(store, &self.w.log);
        check(store, &self.w);
    }
}

fn model_run(seed: u64) {
    let (mut sim, sb) = device(seed, STATE_SEGMENTS);
    let mut store = open(&sim, &sb);
    let mut run = Run::new(seed, &mut store);
    for _ in 0..2500 {
        run.step(&mut store, 0.04).expect("step");
        if run.rng.chance(0.1) {
            run.check_reads(&store);
        }
        run.maintain(&mut store).expect("maintain");
        if run.rng.chance(0.01) {
            check(&store, &run.w);
            if run.rng.chance(0.5) {
                run.pending = Some(run.w.clone());
                store.checkpoint().expect("checkpoint");
                run.checkpoint_done();
            }
            drop(store);
            sim.restart();
            store = open(&sim, &sb);
            run.recover(&mut store);
        }
    }
    check(&store, &run.w);
    while store.compact_step().expect("compact") {}
    check(&store, &run.w);
    assert!(run.w.model.regions.len() > 3, "too few splits");
}

#[test]
fn splits_match_the_model_across_writes_compaction_and_restarts() {
    for_each_seed(4, model_run);
    let (moved, skipped, redone) = (
        MOVED.load(Ordering::Relaxed),
        REPLAY_SKIPPED.load(Ordering::Relaxed),
        REPLAY_REDONE.load(Ordering::Relaxed),
    );
    println!("splits {moved}, replays skipped {skipped}, replays redone {redone}");
    if seeds(4).len() >= 4 {
        assert!(skipped > 0 && redone > 0, "replay paths not both taken");
    }
}

fn open_crashing(sim: &SimIo, sb: &Superblock, budget: &Arc<AtomicI64>) -> StateStore {
    let write = CrashIo::new(sim.share(), Arc::clone(budget));
    StateStore::open(Box::new(write), Box::new(sim.share()), sb, config()).expect("open")
}

fn power_run(seed: u64) {
    let (mut sim, sb) = device(seed, STATE_SEGMENTS);
    sim.set_faults(FaultConfig {
        latency_ops: (0, 3),
        ..FaultConfig::none()
    });
    let budget = Arc::new(AtomicI64::new(i64::MAX));
    let mut store = open_crashing(&sim, &sb, &budget);
    let mut run = Run::new(seed, &mut store);
    for _ in 0..8 {
        // Half the rounds cut the power within a few writes of a split of the biggest region;
        // the others at a random write (and do not split: the model test covers that).
        let aim = run.rng.chance(0.5);
        run.split_biggest = aim;
        if aim {
            run.bulk_load(&mut store);
        }
        if !aim {
            budget.store(1 + run.rng.below(60) as i64, Ordering::SeqCst);
        }
        for _ in 0..300 {
            let splits = run.w.model.regions.len();
            if aim && splits < REGIONS_MAX {
                // Armed only for the step: a step that does not split leaves it unlimited.
                budget.store(run.rng.below(8) as i64, Ordering::SeqCst);
            }
            let r = run.step(&mut store, if aim { 0.3 } else { 0.0 });
            let split_now = run.w.model.regions.len() > splits;
            if aim && !split_now && r.is_ok() {
                budget.store(i64::MAX, Ordering::SeqCst);
            }
            if r.is_err() && split_now {
                CUT_IN_SPLIT.fetch_add(1, Ordering::Relaxed);
            }
            if r.is_err() || (aim && split_now) {
                break;
            }
            if run.maintain(&mut store).is_err() {
                break;
            }
        }
        // A cut right after an aimed split: a few more writes, then the power goes.
        for _ in 0..run.rng.below(3) {
            if run.step(&mut store, 0.0).is_err() {
                break;
            }
        }
        drop(store);
        sim.power_loss();
        budget.store(i64::MAX, Ordering::SeqCst);
        store = open_crashing(&sim, &sb, &budget);
        run.recover(&mut store);
        run.pending = Some(run.w.clone());
        store.checkpoint().expect("checkpoint after replay");
        run.checkpoint_done();
    }
}

#[test]
fn power_cuts_around_splits_recover_to_a_checkpoint_and_replay() {
    for_each_seed(10, power_run);
    let cuts = CUT_IN_SPLIT.load(Ordering::Relaxed);
    println!("power cuts inside a split: {cuts}");
    if seeds(10).len() >= 10 {
        assert!(cuts > 0, "the power was never cut inside a split");
    }
}

fn fill(store: &mut StateStore, r: u64, index: u64, keys: &[&str], v: u8) {
    let ops = keys
        .iter()
        .map(|k| Op::Put {
            key: Bytes::from(k.to_string()),
            value: Bytes::from(vec![v; 300]),
        })
        .collect();
    let cmd = Command {
        client_id: 0,
        sequence: index,
        ops,
    };
    store
        .apply(r, index, 1, &cmd)
        .expect("apply")
        .expect("no session");
}

#[test]
fn a_child_installed_first_keeps_its_data_and_the_parent_drops_its_copy() {
    let (mut sim, sb) = device(21, 16);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    fill(&mut store, 1, 1, &["a", "f", "m", "q", "z"], 1);
    let mut child = child_state(2);
    child.applied_index = 9;
    let id = store.install_begin(child.clone()).unwrap();
    store.install_put(id, b"m", b"newer").unwrap();
    store.install_finish(id).unwrap();
    let out = store
        .split_region(1, 2, 1, b"m", child_state(2), parent_meta(1, 2))
        .unwrap();
    assert_eq!(out, SplitOutcome::ChildExisted { dropped_keys: 3 });
    let keys = |s: &StateStore, r| -> Vec<Bytes> {
        let all = s.scan(r, b"", None, 100).unwrap();
        all.into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(keys(&store, 1), vec!["a", "f"]);
    assert_eq!(store.get(2, b"m").unwrap().unwrap(), "newer");
    assert_eq!(store.region_state(2).unwrap(), child);
    assert_eq!(store.region_state(1).unwrap().applied_index, 2);
    let live: u64 = store.segment_stats().iter().map(|s| s.live_bytes).sum();
    let want = 2 * value_len(1, 300) + value_len(1, 5);
    assert_eq!(live, want as u64, "the dropped keys are garbage");
    while store.compact_step().unwrap() {}
    store.checkpoint().unwrap();
    drop(store);
    sim.restart();
    let store = open(&sim, &sb);
    assert_eq!(keys(&store, 1), vec!["a", "f"]);
    assert_eq!(store.get(2, b"m").unwrap().unwrap(), "newer");
}

#[test]
fn bad_splits_change_nothing() {
    let (sim, sb) = device(23, 16);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    fill(&mut store, 1, 1, &["a", "m"], 1);
    let same = store.split_region(1, 2, 1, b"m", child_state(1), Bytes::new());
    assert!(matches!(same, Err(EngineError::StateRegionExists { .. })));
    let unknown = store.split_region(7, 2, 1, b"m", child_state(2), Bytes::new());
    assert!(matches!(
        unknown,
        Err(EngineError::StateRegionUnknown { .. })
    ));
    assert_eq!(store.region_ids(), vec![1]);
    assert_eq!(store.key_count(1), Some(2));
    assert_eq!(store.region_state(1).unwrap().applied_index, 1);
}

fn next_event(w: &ApplyWorker) -> ApplyEvent {
    loop {
        match w.events().recv_timeout(HANG_GUARD).expect("no event") {
            ApplyEvent::CheckpointDone(_) => continue,
            e => return e,
        }
    }
}

fn put_entry(term: u64, index: u64, k: &str, v: &str) -> raftlog::Entry {
    let cmd = Command {
        client_id: 0,
        sequence: index,
        ops: vec![Op::Put {
            key: Bytes::from(k.to_string()),
            value: Bytes::from(v.to_string()),
        }],
    };
    raftlog::Entry::new(term, index, cmd.encode())
}

fn split_request(index: u64) -> ApplyRequest {
    ApplyRequest::Split {
        region_id: 1,
        index,
        term: 2,
        split_key: Bytes::from_static(b"m"),
        child: child_state(2),
        parent_meta: parent_meta(1, index),
    }
}

#[test]
fn the_apply_worker_splits_in_order_with_applies() {
    let (mut sim, sb) = device(25, 16);
    let store = open(&sim, &sb);
    let worker = ApplyWorker::spawn(store, ApplyConfig::default()).unwrap();
    worker
        .send(ApplyRequest::CreateRegion(region_state(1)))
        .unwrap();
    let mut cc = raftlog::Entry::new(2, 3, Bytes::new());
    cc.entry_type = EntryType::EntryConfChangeV2;
    let task = ApplyTask {
        region_id: 1,
        entries: vec![put_entry(2, 1, "a", "1"), put_entry(2, 2, "x", "1"), cc],
        conf_states: vec![(3, raftlog::ConfState::from_voters(vec![1, 2]))],
        metas: vec![(3, Bytes::from_static(b"conf-v2"))],
        responders: Vec::new(),
    };
    worker.send(ApplyRequest::Apply(task)).unwrap();
    // Queued right behind the entries: the split sees them applied.
    worker.send(split_request(4)).unwrap();
    let after = vec![put_entry(2, 5, "b", "2")];
    worker
        .send(ApplyRequest::Apply(ApplyTask::new(1, after)))
        .unwrap();
    let child_entry = put_entry(2, CHILD_APPLIED + 1, "y", "2");
    worker
        .send(ApplyRequest::Apply(ApplyTask::new(2, vec![child_entry])))
        .unwrap();
    worker.send(split_request(4)).unwrap();
    worker.send(split_request(9)).unwrap();
    assert!(matches!(
        next_event(&worker),
        ApplyEvent::Applied {
            applied_index: 3,
            ..
        }
    ));
    match next_event(&worker) {
        ApplyEvent::Split {
            region_id: 1,
            applied_index: 4,
            applied_term: 2,
            child_region_id: 2,
            outcome: SplitOutcome::Moved { keys: 1, .. },
        } => {}
        e => panic!("{e:?}"),
    }
    assert!(matches!(next_event(&worker), ApplyEvent::Applied { .. }));
    assert!(matches!(next_event(&worker), ApplyEvent::Applied { .. }));
    match next_event(&worker) {
        ApplyEvent::Split {
            applied_index: 5,
            outcome: SplitOutcome::AlreadyApplied,
            ..
        } => {}
        e => panic!("{e:?}"),
    }
    match next_event(&worker) {
        ApplyEvent::Refused {
            error: EngineError::AppendGap { index: 9, .. },
            ..
        } => {}
        e => panic!("{e:?}"),
    }
    let store = worker.stop().unwrap();
    drop(store);
    sim.restart();
    let store = open(&sim, &sb);
    let scan = |r| -> Vec<(Bytes, Bytes)> { store.scan(r, b"", None, 10).unwrap() };
    let kv = |k: &'static str, v: &'static str| (Bytes::from(k), Bytes::from(v));
    assert_eq!(scan(1), vec![kv("a", "1"), kv("b", "2")]);
    assert_eq!(scan(2), vec![kv("x", "1"), kv("y", "2")]);
    let parent = store.region_state(1).unwrap();
    assert_eq!(parent.meta, parent_meta(1, 4));
    assert_eq!(parent.conf_state.voters, vec![1, 2]);
    assert_eq!(
        store.region_state(2).unwrap().applied_index,
        CHILD_APPLIED + 1
    );
}

/// Writes complete out of order on the sim (random latency): a scan (and a split's batched
/// read) must never coalesce a device read over a block still in flight between two landed
/// records.
#[test]
fn batched_reads_never_span_a_block_still_in_flight() {
    for_each_seed(30, |seed| {
        let (mut sim, sb) = device(seed, 24);
        sim.set_faults(FaultConfig {
            latency_ops: (0, 6),
            ..FaultConfig::none()
        });
        let mut store = open(&sim, &sb);
        store.create_region(region_state(1)).unwrap();
        let mut rng = Rng(seed);
        let mut model = BTreeMap::new();
        for index in 1..=60 {
            let ops: Vec<Op> = (0..6)
                .map(|_| Op::Put {
                    key: Bytes::from(format!("k{:03}", rng.below(200))),
                    value: Bytes::from(vec![index as u8; 100 + rng.below(3000) as usize]),
                })
                .collect();
            for op in &ops {
                if let Op::Put { key, value } = op {
                    model.insert(key.clone(), value.clone());
                }
            }
            let cmd = Command {
                client_id: 1,
                sequence: index,
                ops,
            };
            store.apply(1, index, 1, &cmd).unwrap().unwrap();
            let got = store.scan(1, b"", None, usize::MAX).expect("scan");
            let want: Vec<(Bytes, Bytes)> = model.clone().into_iter().collect();
            assert!(got == want, "scan after index {index}");
        }
    });
}

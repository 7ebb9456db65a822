//! End to end on one simulated device: single-voter regions driven by raftlog `RawNode`s over the
//! real log (`RegionLog` as `Storage`), committed commands applied to the real state store,
//! checkpoints (then log compaction) and compaction steps at random, and power cuts at random
//! points — also in the middle of a checkpoint. After each cut the log and the state store are
//! reopened and Raft replays the committed entries after each region's checkpointed applied index:
//! the state must equal a `BTreeMap` model at the durable commit index, and the number of entries
//! replayed must be exactly the log tail after the checkpoint (restart never replays more).
//! `BASALT_SIM_RUNS` (default 12) runs more seeds; a failure prints `SEED=n`, and
//! `BASALT_SIM_SEED=n` replays that one.

mod log_harness;
mod state_harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use engine::io::sim::SimIo;
use engine::log::{LogBatch, LogStore, RegionLog};
use engine::state::{Command, Op, RegionState, StateConfig, StateStore};
use log_harness::{sim_store, Rng};
use raftlog::{ConfState, Config, Entry, EntryType, RawNode, StateRole};

const REGIONS: [u64; 3] = [1, 2, 3];

type Model = BTreeMap<u64, BTreeMap<Bytes, Bytes>>;

fn apply_model(m: &mut BTreeMap<Bytes, Bytes>, cmd: &Command) {
    for op in &cmd.ops {
        match op {
            Op::Put { key, value } => {
                m.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                m.remove(key);
            }
            Op::DeleteRange { start, end } => {
                let doomed: Vec<Bytes> = m
                    .range(start.clone()..)
                    .take_while(|(k, _)| k < &end)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    m.remove(&k);
                }
            }
            Op::Cas { key, expected, new } => {
                if m.get(key) == expected.as_ref() {
                    match new {
                        Some(v) => m.insert(key.clone(), v.clone()),
                        None => m.remove(key),
                    };
                }
            }
        }
    }
}

fn random_command(rng: &mut Rng, seq: u64) -> Command {
    let key = |rng: &mut Rng| Bytes::from(format!("k{:02}", rng.below(40)).into_bytes());
    let value = |rng: &mut Rng| {
        let len = if rng.chance(0.05) {
            5000
        } else {
            rng.below(300) as usize
        };
        Bytes::from(vec![rng.below(256) as u8; len])
    };
    let ops = (0..1 + rng.below(3))
        .map(|_| match rng.below(10) {
            0..=5 => Op::Put {
                key: key(rng),
                value: value(rng),
            },
            6 | 7 => Op::Delete { key: key(rng) },
            8 => {
                let (a, b) = (key(rng), key(rng));
                Op::DeleteRange {
                    start: a.clone().min(b.clone()),
                    end: a.max(b),
                }
            }
            _ => Op::Cas {
                key: key(rng),
                expected: rng.chance(0.5).then(|| value(rng)),
                new: rng.chance(0.8).then(|| value(rng)),
            },
        })
        .collect();
    Command {
        client_id: 7,
        sequence: seq,
        ops,
    }
}

struct Node {
    log: LogStore,
    state: StateStore,
    rafts: BTreeMap<u64, RawNode<RegionLog>>,
    /// Entries applied since open, per region.
    applied_since_open: BTreeMap<u64, u64>,
    /// Per region at open: (applied index in the state store, commit index in the log).
    at_open: BTreeMap<u64, (u64, u64)>,
}

fn open_node(sim: &Arc<Mutex<SimIo>>, fresh: bool) -> Node {
    let (mut log, _) = log_harness::open(sim, 1 << 20);
    let sb = *log.superblock();
    let (w, r) = {
        let s = sim.lock().unwrap();
        (s.share(), s.share())
    };
    let mut state = StateStore::open(Box::new(w), Box::new(r), &sb, StateConfig::new("sim"))
        .expect("open state");
    let cs = ConfState::from((vec![1], vec![]));
    if fresh {
        let mut b = LogBatch::new();
        for r in REGIONS {
            b.set_conf_state(r, cs.clone());
            state
                .create_region(RegionState::new(r, cs.clone()))
                .expect("create region");
        }
        log.write_sync(b).expect("conf states");
    }
    let mut rafts = BTreeMap::new();
    let mut at_open = BTreeMap::new();
    for r in REGIONS {
        // A region created after the last checkpoint is known to the log only: it starts
        // empty in the state store and Raft replays its whole (never compacted) log.
        if state.region_state(r).is_none() {
            state
                .create_region(RegionState::new(r, cs.clone()))
                .expect("create region");
        }
        let applied = state.region_state(r).expect("region").applied_index;
        let commit = raftlog::Storage::initial_state(&log.region_log(r))
            .expect("initial state")
            .hard_state
            .commit;
        at_open.insert(r, (applied, commit));
        let mut c = Config::new(1);
        c.applied = applied;
        c.rng_seed = r;
        let mut node = RawNode::new(&c, log.region_log(r)).expect("raw node");
        node.campaign().expect("campaign");
        rafts.insert(r, node);
    }
    let mut n = Node {
        log,
        state,
        rafts,
        applied_since_open: BTreeMap::new(),
        at_open,
    };
    for r in REGIONS {
        n.drive(r);
        assert_eq!(n.rafts[&r].raft.state, StateRole::Leader);
    }
    n
}

impl Node {
    /// Handles Readies of region `r` until there are none: persist (durably) before applying.
    fn drive(&mut self, r: u64) {
        while self.rafts[&r].has_ready() {
            let node = self.rafts.get_mut(&r).unwrap();
            let mut rd = node.ready();
            let mut b = LogBatch::new();
            b.add_entries(r, rd.entries().clone());
            if let Some(hs) = rd.hs() {
                b.set_hard_state(r, *hs);
            }
            if !b.is_empty() {
                self.log.write_sync(b).expect("log write");
            }
            let mut committed = rd.take_committed_entries();
            let mut light = node.advance(rd);
            if let Some(commit) = light.commit_index() {
                let mut hs = node.raft.hard_state();
                hs.commit = commit;
                let mut b = LogBatch::new();
                b.set_hard_state(r, hs);
                self.log.write_sync(b).expect("commit write");
            }
            committed.extend(light.take_committed_entries());
            for e in &committed {
                self.apply(r, e);
            }
            self.rafts.get_mut(&r).unwrap().advance_apply();
        }
    }

    fn apply(&mut self, r: u64, e: &Entry) {
        *self.applied_since_open.entry(r).or_default() += 1;
        if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
            let cmd = Command::decode(&e.data).expect("command");
            self.state
                .apply(r, e.index, e.term, &cmd)
                .expect("apply")
                .expect("fresh");
        } else {
            self.state
                .set_applied(r, e.index, e.term)
                .expect("set applied");
        }
    }

    fn checkpoint_and_compact(&mut self) {
        let info = self.state.checkpoint().expect("checkpoint");
        for (r, index) in info.regions {
            let t = self.log.compact_to(r, index).expect("compact");
            self.log.wait_for(t).expect("compaction durable");
        }
    }
}

fn check(state: &StateStore, model: &Model, seed: u64) {
    for r in REGIONS {
        let applied = state.region_state(r).unwrap().applied_index;
        let got: BTreeMap<Bytes, Bytes> = state
            .scan(r, b"", None, usize::MAX)
            .expect("scan")
            .into_iter()
            .collect();
        assert_eq!(
            got, model[&r],
            "seed {seed}: region {r} at applied index {applied}"
        );
        for k in 0..40 {
            let key = format!("k{k:02}");
            assert_eq!(
                state.get(r, key.as_bytes()).expect("get").as_ref(),
                model[&r].get(key.as_bytes()),
                "seed {seed}: get {key} in region {r}"
            );
        }
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    // 16 segments of 1 MiB: 6 for the log's ring, 10 for the state store.
    let sim = sim_store(seed, 4096, 1 << 20, 16);
    {
        // sim_store formats a log-only store; give the state store its partition.
        let mut io = log_harness::SharedSim::new(Arc::clone(&sim));
        let opts = engine::format::FormatOptions {
            store_id: Some(1),
            cluster_id: Some(2),
            block_size: 4096,
            segment_size_bytes: 1 << 20,
            format_nonce: Some(seed),
            force: true,
            log_segment_count: Some(6),
            ..engine::format::FormatOptions::new("sim")
        };
        engine::format::format(&mut io, &opts).expect("format");
    }
    let mut node = open_node(&sim, true);
    let mut model: Model = REGIONS.iter().map(|&r| (r, BTreeMap::new())).collect();
    let mut seq = 0;
    for _round in 0..4 {
        for _ in 0..rng.below(120) {
            let r = REGIONS[rng.below(3) as usize];
            seq += 1;
            let cmd = random_command(&mut rng, seq);
            node.rafts
                .get_mut(&r)
                .unwrap()
                .propose(vec![], cmd.encode().to_vec())
                .expect("propose");
            node.drive(r);
            apply_model(model.get_mut(&r).unwrap(), &cmd);
            match rng.below(40) {
                0 => node.checkpoint_and_compact(),
                1 | 2 => {
                    node.state.compact_step().expect("compact step");
                }
                _ => {}
            }
        }
        check(&node.state, &model, seed);
        // Cut the power: maybe in the middle of a checkpoint.
        if rng.chance(0.5) {
            node.state.checkpoint_begin().expect("checkpoint begin");
            for _ in 0..rng.below(4) {
                if node
                    .state
                    .checkpoint_step(8 << 10)
                    .expect("checkpoint step")
                    .is_some()
                {
                    break;
                }
            }
        }
        drop(node);
        sim.lock().unwrap().power_loss();
        node = open_node(&sim, false);
        for r in REGIONS {
            // Every command was durable in the log (and its commit recorded) before it was
            // applied, so the log's commit covers them all; the state store reopened at its
            // last checkpoint and Raft replayed exactly the entries after it (plus the new
            // leader's empty entry).
            let (applied, commit) = node.at_open[&r];
            assert!(
                applied <= commit,
                "seed {seed}: region {r} applied {applied} > commit {commit}"
            );
            assert_eq!(
                node.applied_since_open[&r],
                commit - applied + 1,
                "seed {seed}: region {r} replayed other than the log tail {}..={commit}",
                applied + 1
            );
        }
        check(&node.state, &model, seed);
    }
}

#[test]
fn restart_replays_the_log_tail_onto_the_last_checkpoint() {
    state_harness::for_each_seed(12, run);
}

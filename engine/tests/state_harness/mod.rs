//! Shared by the state store tests: a small formatted sim device, a crash-injecting `Io`
//! wrapper, the "log" of applied commands, a `BTreeMap` reference model and a random command
//! generator.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use engine::format::{format, FormatOptions};
use engine::io::sim::{FaultConfig, SimIo};
use engine::io::{BufPool, Completion, Geometry, Io, IoError, IoOp};
use engine::layout::{Superblock, KIB, MIB};
use engine::state::{Command, Op, OpResult, RegionState, StateConfig, StateStore};

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// Seeds to run: `BASALT_SIM_SEED` (one) or `BASALT_SIM_RUNS` (default `default_runs`)
/// consecutive seeds from a fixed base.
pub fn seeds(default_runs: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("BASALT_SIM_SEED") {
        return vec![s.parse().expect("BASALT_SIM_SEED is a u64")];
    }
    let runs = std::env::var("BASALT_SIM_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default_runs);
    (0..runs).map(|i| 0x5747_e000 + i).collect()
}

/// Runs `f` for every seed, printing the failing one.
pub fn for_each_seed(default_runs: u64, f: impl Fn(u64)) {
    for seed in seeds(default_runs) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        if let Err(e) = r {
            eprintln!("SEED={seed} failed (replay with BASALT_SIM_SEED={seed})");
            std::panic::resume_unwind(e);
        }
    }
}

pub const BLOCK: u32 = 4096;
pub const SEGMENT_BYTES: u64 = 64 * KIB;
pub const LOG_SEGMENTS: u32 = 2;

/// A formatted sim device with `state_segments` state segments of 64 KiB.
pub fn device(seed: u64, state_segments: u64) -> (SimIo, Superblock) {
    let capacity = MIB + (LOG_SEGMENTS as u64 + state_segments) * SEGMENT_BYTES;
    let geo = Geometry {
        block_size: BLOCK,
        capacity_bytes: capacity,
    };
    let mut sim = SimIo::new(seed, geo, FaultConfig::none());
    let mut opts = FormatOptions::new("sim");
    opts.block_size = BLOCK;
    opts.segment_size_bytes = SEGMENT_BYTES;
    opts.log_segment_count = Some(LOG_SEGMENTS);
    opts.format_nonce = Some(seed ^ 0xabcd);
    opts.store_id = Some(1);
    opts.cluster_id = Some(1);
    let sb = format(&mut sim, &opts).expect("format");
    (sim, sb)
}

pub fn config() -> StateConfig {
    let mut c = StateConfig::new("sim");
    c.write_buffer_bytes = 16 * KIB as usize;
    c.compaction_step_bytes = 16 * KIB;
    c
}

/// Opens the state store on two new handles of `sim`.
pub fn open(sim: &SimIo, sb: &Superblock) -> StateStore {
    StateStore::open(Box::new(sim.share()), Box::new(sim.share()), sb, config()).expect("open")
}

/// An `Io` that fails every write and flush once its shared budget of them is spent: the
/// device "loses power" at that point (the test then calls `power_loss`).
pub struct CrashIo {
    pub inner: SimIo,
    pub budget: Arc<AtomicI64>,
    pool: BufPool,
}

impl CrashIo {
    pub fn new(inner: SimIo, budget: Arc<AtomicI64>) -> CrashIo {
        let pool = BufPool::new(64 * BLOCK as usize, 8, BLOCK as usize).unwrap();
        CrashIo {
            inner,
            budget,
            pool,
        }
    }
}

impl Io for CrashIo {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    fn submit(&mut self, op: IoOp) -> Result<(), IoError> {
        if !matches!(op, IoOp::Read { .. }) && self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(IoError::Injected("power cut"));
        }
        self.inner.submit(op)
    }
    fn kick(&mut self) -> Result<(), IoError> {
        self.inner.kick()
    }
    fn reap(&mut self, out: &mut Vec<Completion>, min_complete: usize) -> Result<usize, IoError> {
        self.inner.reap(out, min_complete)
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }
    fn pool(&mut self) -> &mut BufPool {
        &mut self.pool
    }
    fn backend_name(&self) -> &'static str {
        "sim"
    }
}

/// One entry of the test's "Raft log".
#[derive(Clone, Debug)]
pub enum Entry {
    Cmd(Command),
    Empty,
}

/// One region's keys and values.
pub type Kv = BTreeMap<Vec<u8>, Vec<u8>>;

/// The reference model: per region, its keys and applied index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub regions: BTreeMap<u64, (u64, Kv)>,
}

impl Model {
    pub fn apply(&mut self, region: u64, index: u64, e: &Entry) -> Vec<OpResult> {
        let (applied, m) = self.regions.get_mut(&region).expect("model region");
        assert!(index > *applied);
        *applied = index;
        let Entry::Cmd(c) = e else {
            return Vec::new();
        };
        c.ops.iter().map(|op| apply_op(m, op)).collect()
    }
}

fn apply_op(m: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op) -> OpResult {
    match op {
        Op::Put { key, value } => {
            m.insert(key.to_vec(), value.to_vec());
            OpResult::Done
        }
        Op::Delete { key } => {
            m.remove(&key[..]);
            OpResult::Done
        }
        Op::DeleteRange { start, end } => {
            let doomed: Vec<Vec<u8>> = m
                .keys()
                .filter(|k| k[..] >= start[..] && k[..] < end[..])
                .cloned()
                .collect();
            for k in doomed {
                m.remove(&k);
            }
            OpResult::Done
        }
        Op::Cas { key, expected, new } => {
            let previous = m.get(&key[..]).map(|v| Bytes::from(v.clone()));
            let succeeded = previous == *expected;
            if succeeded {
                match new {
                    Some(v) => m.insert(key.to_vec(), v.to_vec()),
                    None => m.remove(&key[..]),
                };
            }
            OpResult::Cas {
                succeeded,
                previous,
            }
        }
    }
}

/// The "log": every entry ever applied, per region in index order.
#[derive(Default)]
pub struct Log {
    pub entries: BTreeMap<u64, Vec<(u64, Entry)>>,
}

impl Log {
    /// The model of every region at `applied` (per region).
    pub fn model_at(&self, applied: &BTreeMap<u64, u64>) -> Model {
        let mut m = Model::default();
        for (&r, &a) in applied {
            m.regions.insert(r, (0, BTreeMap::new()));
            for (i, e) in self.entries.get(&r).into_iter().flatten() {
                if *i <= a {
                    m.apply(r, *i, e);
                }
            }
            m.regions.get_mut(&r).unwrap().0 = a;
        }
        m
    }

    /// Replays into `store` every entry after each region's applied index.
    pub fn replay(&self, store: &mut StateStore) {
        for r in store.region_ids() {
            let applied = store.region_state(r).unwrap().applied_index;
            for (i, e) in self.entries.get(&r).into_iter().flatten() {
                if *i > applied {
                    match e {
                        Entry::Cmd(c) => {
                            store.apply(r, *i, 1, c).expect("replay apply").ok();
                        }
                        Entry::Empty => store.set_applied(r, *i, 1).expect("replay set_applied"),
                    }
                }
            }
        }
    }
}

pub fn key(rng: &mut Rng) -> Bytes {
    let n = rng.below(48);
    if rng.chance(0.2) {
        Bytes::from(format!("long-key-{n:04}-padding-past-the-inline-limit"))
    } else {
        Bytes::from(format!("k{n:03}"))
    }
}

pub fn value(rng: &mut Rng) -> Bytes {
    let len = match rng.below(10) {
        0 => rng.below(6000),
        1 => 0,
        _ => rng.below(700),
    } as usize;
    let b = rng.next_u64() as u8;
    Bytes::from(
        (0..len)
            .map(|i| b.wrapping_add(i as u8))
            .collect::<Vec<u8>>(),
    )
}

pub fn random_op(rng: &mut Rng, current: &BTreeMap<Vec<u8>, Vec<u8>>) -> Op {
    match rng.below(10) {
        0..=4 => Op::Put {
            key: key(rng),
            value: value(rng),
        },
        5 | 6 => Op::Delete { key: key(rng) },
        7 => {
            let (a, b) = (key(rng), key(rng));
            let (start, end) = if a <= b { (a, b) } else { (b, a) };
            Op::DeleteRange { start, end }
        }
        _ => {
            let k = key(rng);
            let expected = match rng.below(3) {
                0 => None,
                1 => current.get(&k[..]).map(|v| Bytes::from(v.clone())),
                _ => Some(value(rng)),
            };
            let new = if rng.chance(0.2) {
                None
            } else {
                Some(value(rng))
            };
            Op::Cas {
                key: k,
                expected,
                new,
            }
        }
    }
}

pub fn random_command(rng: &mut Rng, current: &BTreeMap<Vec<u8>, Vec<u8>>) -> Command {
    let n = 1 + rng.below(4) as usize;
    Command {
        // No session (client 0): random sequences must not be refused as retries.
        client_id: 0,
        sequence: rng.next_u64(),
        ops: (0..n).map(|_| random_op(rng, current)).collect(),
    }
}

/// Asserts that `store` holds exactly `model` (regions, applied indexes, keys and values).
pub fn assert_matches(store: &StateStore, model: &Model) {
    let ids: Vec<u64> = model.regions.keys().copied().collect();
    assert_eq!(store.region_ids(), ids, "regions");
    for (&r, (applied, m)) in &model.regions {
        assert_eq!(
            store.region_state(r).unwrap().applied_index,
            *applied,
            "applied index of {r}"
        );
        let got = store.scan(r, b"", None, usize::MAX).expect("scan");
        let want: Vec<(Bytes, Bytes)> = m
            .iter()
            .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
            .collect();
        assert_eq!(got.len(), want.len(), "key count of region {r}");
        assert!(got == want, "contents of region {r} differ");
    }
}

/// One command putting `key-00000`.. `key-{n-1}` (zero-padded to 5 digits) to `value`.
pub fn bulk_puts(n: u32, value: &'static [u8]) -> Command {
    let ops = (0..n)
        .map(|k| Op::Put {
            key: Bytes::from(format!("key-{k:05}")),
            value: Bytes::from_static(value),
        })
        .collect();
    Command {
        client_id: 0,
        sequence: 0,
        ops,
    }
}

pub fn region_state(r: u64) -> RegionState {
    RegionState::new(r, raftlog::ConfState::from_voters(vec![1, 2, 3]))
}

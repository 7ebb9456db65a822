//! Shared by the log tests: a sim device the test can reach while the store owns it, a reference
//! model of what the log must hold, and a random batch generator.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use engine::format::{format, FormatOptions};
use engine::io::sim::{FaultConfig, SimIo};
use engine::io::{BufPool, Completion, Geometry, Io, IoError, IoOp};
use engine::log::{LogBatch, LogConfig, LogStore, Record, RecoveryReport};
use raftlog::{ConfState, Entry, HardState, Storage};

/// A `SimIo` behind a lock, so the test keeps a handle to cut the power while a store owns it.
pub struct SharedSim {
    pub sim: Arc<Mutex<SimIo>>,
    pool: BufPool,
    geometry: Geometry,
    /// Once set, every operation is refused: the power is off (see [`SharedSim::cut_by`]).
    cut: Option<Arc<AtomicBool>>,
}

impl SharedSim {
    pub fn new(sim: Arc<Mutex<SimIo>>) -> SharedSim {
        let geometry = sim.lock().unwrap().geometry();
        let pool = BufPool::new(256 * 1024, 4, geometry.block_size as usize).unwrap();
        SharedSim {
            sim,
            pool,
            geometry,
            cut: None,
        }
    }

    /// Refuses every operation once `cut` is set, so that nothing a store does after a power
    /// cut (set it and call `SimIo::power_loss` under the sim's lock) reaches the disk.
    pub fn cut_by(mut self, cut: Arc<AtomicBool>) -> SharedSim {
        self.cut = Some(cut);
        self
    }

    fn powered(&self) -> Result<(), IoError> {
        match &self.cut {
            Some(cut) if cut.load(Ordering::SeqCst) => Err(IoError::Injected("power cut")),
            _ => Ok(()),
        }
    }
}

impl Io for SharedSim {
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn submit(&mut self, op: IoOp) -> Result<(), IoError> {
        self.powered()?;
        self.sim.lock().unwrap().submit(op)
    }
    fn kick(&mut self) -> Result<(), IoError> {
        self.powered()?;
        self.sim.lock().unwrap().kick()
    }
    fn reap(&mut self, out: &mut Vec<Completion>, min_complete: usize) -> Result<usize, IoError> {
        self.powered()?;
        self.sim.lock().unwrap().reap(out, min_complete)
    }
    fn in_flight(&self) -> usize {
        self.sim.lock().unwrap().in_flight()
    }
    fn queue_depth(&self) -> usize {
        self.sim.lock().unwrap().queue_depth()
    }
    fn pool(&mut self) -> &mut BufPool {
        &mut self.pool
    }
    fn backend_name(&self) -> &'static str {
        "sim"
    }
}

/// Deterministic PRNG of the tests (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// A formatted sim device: 512-byte sectors, the given store block size, `segments` segments.
pub fn sim_store(
    seed: u64,
    block_size: u32,
    segment_size_bytes: u64,
    segments: u64,
) -> Arc<Mutex<SimIo>> {
    let capacity_bytes = engine::layout::SUPERBLOCK_AREA_BYTES + segments * segment_size_bytes;
    let faults = FaultConfig {
        latency_ops: (0, 2),
        ..FaultConfig::none()
    };
    let sim = Arc::new(Mutex::new(SimIo::new(
        seed,
        Geometry {
            block_size: 512,
            capacity_bytes,
        },
        faults,
    )));
    let mut io = SharedSim::new(Arc::clone(&sim));
    let opts = FormatOptions {
        store_id: Some(1),
        cluster_id: Some(2),
        block_size,
        segment_size_bytes,
        format_nonce: Some(seed ^ 0x5eed),
        // Log-only store: every segment is the log's (these tests size the ring exactly).
        log_segment_count: Some(segments as u32),
        ..FormatOptions::new(format!("sim-{seed}"))
    };
    format(&mut io, &opts).expect("format sim");
    sim
}

pub fn open(sim: &Arc<Mutex<SimIo>>, cache_bytes_max: u64) -> (LogStore, RecoveryReport) {
    open_with(sim, cache_bytes_max, true)
}

/// [`open`], choosing durable writes or write-then-flush.
pub fn open_with(
    sim: &Arc<Mutex<SimIo>>,
    cache_bytes_max: u64,
    durable_writes: bool,
) -> (LogStore, RecoveryReport) {
    let config = LogConfig {
        device_label: "sim".into(),
        cache_bytes_max,
        batch_bytes_max: 64 * 1024,
        durable_writes,
    };
    LogStore::open(Box::new(SharedSim::new(Arc::clone(sim))), config).expect("open")
}

/// What one region's log must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionModel {
    pub first_index: u64,
    pub compacted_term: u64,
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    pub conf_state: ConfState,
}

impl Default for RegionModel {
    fn default() -> Self {
        RegionModel {
            first_index: 1,
            compacted_term: 0,
            entries: vec![],
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
        }
    }
}

impl RegionModel {
    pub fn last_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64 - 1
    }
    fn term(&self, index: u64) -> u64 {
        if index + 1 == self.first_index {
            self.compacted_term
        } else {
            self.entries[(index - self.first_index) as usize].term
        }
    }
}

/// What the whole log must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub regions: BTreeMap<u64, RegionModel>,
}

impl Model {
    pub fn apply(&mut self, records: &[Record]) {
        for r in records {
            if let Record::Clean { region_id } = r {
                self.regions.remove(region_id);
                continue;
            }
            let m = self.regions.entry(r.region_id()).or_default();
            match r {
                Record::Entries { entries, .. } => {
                    let first = entries[0].index;
                    assert!(first <= m.last_index() + 1, "model: generator made a gap");
                    let skip = m.first_index.saturating_sub(first) as usize;
                    let keep = first.max(m.first_index) - m.first_index;
                    m.entries.truncate(keep as usize);
                    m.entries.extend(entries.iter().skip(skip).cloned());
                }
                Record::HardState { hard_state, .. } => m.hard_state = *hard_state,
                Record::ConfState { conf_state, .. } => m.conf_state = conf_state.clone(),
                Record::Compact { index, .. } => {
                    let index = (*index).min(m.last_index());
                    if index >= m.first_index {
                        m.compacted_term = m.term(index);
                        m.entries.drain(..(index + 1 - m.first_index) as usize);
                        m.first_index = index + 1;
                    }
                }
                Record::RegionMeta { .. } => {}
                Record::Clean { .. } => unreachable!("handled above"),
            }
        }
    }

    pub fn region(&self, region_id: u64) -> RegionModel {
        self.regions.get(&region_id).cloned().unwrap_or_default()
    }
}

/// Reads a region back through `raftlog::Storage` (cold reads included).
pub fn read_region(store: &LogStore, region_id: u64) -> Result<RegionModel, raftlog::Error> {
    let log = store.region_log(region_id);
    let state = log.initial_state()?;
    let first_index = log.first_index()?;
    let last = log.last_index()?;
    let entries = log.entries(first_index, last + 1, None)?;
    assert_eq!(
        entries.len() as u64,
        last + 1 - first_index,
        "entries() returned a short range"
    );
    Ok(RegionModel {
        first_index,
        compacted_term: log.term(first_index - 1)?,
        entries,
        hard_state: state.hard_state,
        conf_state: state.conf_state,
    })
}

/// Reads every region of `ids` back.
pub fn read_all(store: &LogStore, ids: impl IntoIterator<Item = u64>) -> Model {
    let mut m = Model::default();
    for r in ids {
        let got = read_region(store, r).unwrap_or_else(|e| panic!("region {r}: {e}"));
        if got != RegionModel::default() {
            m.regions.insert(r, got);
        }
    }
    m
}

/// Drops regions equal to the default so models compare by content.
pub fn normalized(m: &Model) -> Model {
    Model {
        regions: m
            .regions
            .iter()
            .filter(|(_, r)| **r != RegionModel::default())
            .map(|(k, v)| (*k, v.clone()))
            .collect(),
    }
}

/// A random batch consistent with `projected` (no gaps; sometimes an overwrite).
pub fn random_batch(rng: &mut Rng, projected: &Model, regions: u64, step: u64) -> LogBatch {
    let mut b = LogBatch::new();
    let n = 1 + rng.below(3);
    let mut touched = Vec::new();
    for _ in 0..n {
        let region_id = 1 + rng.below(regions);
        if touched.contains(&region_id) {
            continue;
        }
        touched.push(region_id);
        let m = projected.region(region_id);
        if rng.chance(0.85) {
            let last = m.last_index();
            let start = if rng.chance(0.15) && last >= m.first_index {
                last - rng.below((last + 1 - m.first_index).min(3))
            } else {
                last + 1
            };
            let count = 1 + rng.below(4);
            let entries = (start..start + count)
                .map(|i| {
                    let len = if rng.chance(0.1) {
                        rng.below(3000)
                    } else {
                        rng.below(200)
                    } as usize;
                    let data: Vec<u8> = (0..len)
                        .map(|k| (i as usize * 31 + k + step as usize) as u8)
                        .collect();
                    let mut e = Entry::new(step / 8 + 1, i, data);
                    if rng.chance(0.1) {
                        e.context = Bytes::from(vec![7u8; rng.below(20) as usize]);
                    }
                    e
                })
                .collect();
            b.add_entries(region_id, entries);
        }
        if rng.chance(0.4) {
            b.set_hard_state(
                region_id,
                HardState {
                    term: step / 8 + 1,
                    vote: rng.below(4),
                    commit: rng.below(100),
                },
            );
        }
        if rng.chance(0.05) {
            b.set_conf_state(
                region_id,
                ConfState::from_voters(vec![1, 2, 1 + rng.below(5)]),
            );
        }
    }
    if b.is_empty() {
        b.set_hard_state(
            1,
            HardState {
                term: step,
                vote: 0,
                commit: 0,
            },
        );
    }
    b
}

/// Number of runs: `BASALT_SIM_RUNS` or the default.
pub fn runs(default: u64) -> u64 {
    std::env::var("BASALT_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seeds to run: only `BASALT_SIM_SEED` when set (a replay), else `0..runs(default)`.
pub fn seeds(default: u64) -> std::ops::Range<u64> {
    let only: Option<u64> = std::env::var("BASALT_SIM_SEED")
        .ok()
        .map(|v| v.parse().expect("BASALT_SIM_SEED is a number"));
    only.map_or(0..runs(default), |s| s..s + 1)
}

/// A short description of how two models differ (for assertion messages).
pub fn diff(expected: &Model, got: &Model) -> String {
    let mut out = String::new();
    let ids: std::collections::BTreeSet<u64> = expected
        .regions
        .keys()
        .chain(got.regions.keys())
        .copied()
        .collect();
    for r in ids {
        let (e, g) = (expected.region(r), got.region(r));
        if e == g {
            continue;
        }
        out +=
            &format!(
            "region {r}: expected {}..={} hs {:?} cs {:?} ct {}; got {}..={} hs {:?} cs {:?} ct {}",
            e.first_index, e.last_index(), e.hard_state, e.conf_state.voters, e.compacted_term,
            g.first_index, g.last_index(), g.hard_state, g.conf_state.voters, g.compacted_term
        );
        if let Some((a, b)) = e.entries.iter().zip(&g.entries).find(|(a, b)| a != b) {
            out += &format!(
                "; first differing entry {} (term {} vs {}, {} vs {} bytes)",
                a.index,
                a.term,
                b.term,
                a.data.len(),
                b.data.len()
            );
        }
        out += "\n";
    }
    out
}

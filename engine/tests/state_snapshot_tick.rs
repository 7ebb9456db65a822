//! The store loop stays responsive while a large snapshot builds, on a simulated clock: a loop
//! ticks a leader `RawNode<RegionStorage>` whose learner needs a snapshot, while a pacer holds the
//! build until simulated time reaches `RELEASE_MS`. Were `snapshot()` to wait for the build, time
//! would stop and the pacer's real-time deadlock guard would trip, failing the test. Every tick
//! must run at its due time, and the learner must then get the snapshot and catch up.

mod state_harness;

/// How long a test waits for a worker's answer before calling it a deadlock (a hang guard,
/// not a performance bound: answers take milliseconds).
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::log::{LogBatch, LogConfig, LogStore};
use engine::state::snapshot::SnapshotMeta;
use engine::state::storage::RegionStorage;
use engine::state::worker::{
    ApplyConfig, ApplyWorker, BuildPacer, SnapshotConfig, SnapshotEvent, SnapshotWorker,
};
use engine::state::{Command, Op, RegionState};
use raftlog::{
    ConfState, Config, Entry, HardState, MemStorage, Message, MessageType, RawNode, StateRole,
    Storage,
};
use state_harness::*;

const REGION: u64 = 1;
const TICK_MS: u64 = 100;
const RELEASE_MS: u64 = 3_000;
/// Entries in the leader's (compacted) log, all applied in the state store.
const APPLIED: u64 = 20;

/// Holds the build before its second chunk until the simulated clock reaches `RELEASE_MS`.
struct ClockGate {
    clock_ms: Arc<AtomicU64>,
    reached: AtomicBool,
    /// Set if the clock stopped advancing: a real-time guard against a deadlocked loop.
    timed_out: AtomicBool,
}

impl BuildPacer for ClockGate {
    fn before_chunk(&self, _region_id: u64, chunk_no: u32) {
        if chunk_no != 1 {
            return;
        }
        self.reached.store(true, Ordering::SeqCst);
        let guard = Instant::now() + Duration::from_secs(10);
        while self.clock_ms.load(Ordering::SeqCst) < RELEASE_MS {
            if Instant::now() > guard {
                self.timed_out.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The store loop under test: owns the Raft nodes, ticks on simulated time, never waits on the
/// snapshot worker.
struct TickLoop {
    leader: RawNode<RegionStorage>,
    learner: RawNode<MemStorage>,
    log: LogStore,
    next_tick_due_ms: u64,
    /// (due, ran at) of every tick, in simulated milliseconds.
    ticks: Vec<(u64, u64)>,
    now_ms: u64,
    snapshot_sent_at_ms: Option<u64>,
    snapshot_received: Option<SnapshotMeta>,
}

impl TickLoop {
    fn advance_to(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        while self.next_tick_due_ms <= now_ms {
            self.ticks.push((self.next_tick_due_ms, now_ms));
            self.leader.tick();
            self.learner.tick();
            self.next_tick_due_ms += TICK_MS;
        }
        for _ in 0..100 {
            let mut out = Vec::new();
            let busy = self.leader_ready(&mut out) | self.learner_ready(&mut out);
            if !busy && out.is_empty() {
                return;
            }
            for m in out {
                self.deliver(m);
            }
        }
        panic!("the nodes never settle");
    }

    fn deliver(&mut self, m: Message) {
        if m.msg_type == MessageType::MsgSnapshot {
            self.snapshot_sent_at_ms.get_or_insert(self.now_ms);
        }
        let r = match m.to {
            1 => self.leader.step(m),
            _ => self.learner.step(m),
        };
        r.expect("step");
    }

    fn leader_ready(&mut self, out: &mut Vec<Message>) -> bool {
        if !self.leader.has_ready() {
            return false;
        }
        let mut rd = self.leader.ready();
        out.extend(rd.take_messages());
        let mut batch = LogBatch::new();
        batch.add_entries(REGION, rd.take_entries());
        if let Some(hs) = rd.hs() {
            batch.set_hard_state(REGION, *hs);
        }
        if !batch.is_empty() {
            self.log.write_sync(batch).expect("log write");
        }
        out.extend(rd.take_persisted_messages());
        let mut light = self.leader.advance(rd);
        out.extend(light.take_messages());
        self.leader.advance_apply();
        true
    }

    fn learner_ready(&mut self, out: &mut Vec<Message>) -> bool {
        if !self.learner.has_ready() {
            return false;
        }
        let mut rd = self.learner.ready();
        out.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let s = rd.snapshot().clone();
            self.snapshot_received = Some(SnapshotMeta::decode(&s.data).expect("descriptor"));
            self.learner
                .mut_store()
                .wl()
                .apply_snapshot(s)
                .expect("apply snapshot");
        }
        let entries = rd.take_entries();
        self.learner
            .mut_store()
            .wl()
            .append(&entries)
            .expect("append");
        if let Some(hs) = rd.hs() {
            self.learner.mut_store().wl().set_hard_state(*hs);
        }
        out.extend(rd.take_persisted_messages());
        let mut light = self.learner.advance(rd);
        if let Some(c) = light.commit_index() {
            self.learner.mut_store().wl().mut_hard_state().commit = c;
        }
        out.extend(light.take_messages());
        self.learner.advance_apply();
        true
    }
}

fn conf_state() -> ConfState {
    ConfState::from_voters_learners(vec![1], vec![2])
}

fn raft_config(id: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        applied: if id == 1 { APPLIED } else { 0 },
        ..Config::default()
    }
}

/// A leader log holding entries `1..=APPLIED`, compacted up to the last of them.
fn leader_log(seed: u64) -> LogStore {
    let (sim, _) = device(seed ^ 0x10, 4);
    let config = LogConfig {
        device_label: "log".into(),
        ..LogConfig::default()
    };
    let (mut log, _) = LogStore::open(Box::new(sim.share()), config).expect("open log");
    let mut batch = LogBatch::new();
    let entries = (1..=APPLIED)
        .map(|i| Entry::new(1, i, Bytes::new()))
        .collect();
    batch.add_entries(REGION, entries);
    batch.set_hard_state(
        REGION,
        HardState {
            term: 1,
            vote: 1,
            commit: APPLIED,
        },
    );
    batch.set_conf_state(REGION, conf_state());
    log.write_sync(batch).expect("write log");
    let t = log.compact_to(REGION, APPLIED).expect("compact");
    log.wait_for(t).expect("compact durable");
    log
}

/// A state store whose region holds about 1 MiB at applied index `APPLIED`.
fn large_region(seed: u64) -> engine::state::StateStore {
    let (sim, sb) = device(seed, 64);
    let mut store = open(&sim, &sb);
    store
        .create_region(RegionState::new(REGION, conf_state()))
        .expect("create");
    for i in 1..=APPLIED {
        let ops = (0..50)
            .map(|k| Op::Put {
                key: Bytes::from(format!("key-{i:03}-{k:03}")),
                value: Bytes::from(vec![i as u8; 1000]),
            })
            .collect();
        let cmd = Command {
            client_id: 1,
            sequence: i,
            ops,
        };
        store
            .apply(REGION, i, 1, &cmd)
            .expect("apply")
            .expect("fresh");
    }
    store
}

#[test]
fn ticks_are_never_late_while_a_large_snapshot_builds() {
    let seed = 11;
    let clock_ms = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(ClockGate {
        clock_ms: Arc::clone(&clock_ms),
        reached: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
    });
    let apply = ApplyWorker::spawn(large_region(seed), ApplyConfig::default()).unwrap();
    let snap_config = SnapshotConfig {
        chunk_bytes_max: 16 * 1024,
        ..SnapshotConfig::default()
    };
    let snap = SnapshotWorker::spawn(snap_config, apply.sender(), Some(gate.clone())).unwrap();
    let log = leader_log(seed);
    let storage = RegionStorage::new(log.region_log(REGION), snap.handle());
    assert_eq!(storage.first_index().unwrap(), APPLIED + 1);
    let leader = RawNode::new(&raft_config(1), storage).unwrap();
    let learner = RawNode::new(
        &raft_config(2),
        MemStorage::new_with_conf_state(conf_state()),
    )
    .unwrap();
    let mut lp = TickLoop {
        leader,
        learner,
        log,
        next_tick_due_ms: TICK_MS,
        ticks: Vec::new(),
        now_ms: 0,
        snapshot_sent_at_ms: None,
        snapshot_received: None,
    };
    lp.leader.campaign().unwrap();
    lp.advance_to(0);
    assert_eq!(lp.leader.status().ss.raft_state, StateRole::Leader);

    let mut build_requested_at_ms = None;
    let mut built: Option<SnapshotMeta> = None;
    let mut now_ms = 0;
    while now_ms < 60_000 {
        now_ms += TICK_MS;
        clock_ms.store(now_ms, Ordering::SeqCst);
        lp.advance_to(now_ms);
        if build_requested_at_ms.is_none() && snap.handle().is_building(REGION) {
            build_requested_at_ms = Some(now_ms);
        }
        if now_ms >= RELEASE_MS && built.is_none() {
            // The environment lets the build finish at this instant of simulated time.
            match snap
                .events()
                .recv_timeout(HANG_GUARD)
                .expect("no answer: deadlock?")
            {
                SnapshotEvent::Built(meta) => built = Some(meta),
                other => panic!("{other:?}"),
            }
        }
        let caught_up =
            lp.learner.store().last_index().unwrap() == lp.leader.store().last_index().unwrap();
        if lp.snapshot_received.is_some() && caught_up {
            break;
        }
    }
    assert!(
        !gate.timed_out.load(Ordering::SeqCst),
        "the loop stopped while the build ran"
    );
    assert!(
        gate.reached.load(Ordering::SeqCst),
        "the build was held mid-way"
    );
    let requested = build_requested_at_ms.expect("Raft asked for a snapshot");
    assert!(requested < RELEASE_MS, "asked at {requested} ms");
    for (n, &(due, ran)) in lp.ticks.iter().enumerate() {
        assert_eq!(due, (n as u64 + 1) * TICK_MS, "tick {n} missed");
        assert_eq!(ran, due, "tick {n} late");
    }
    let ticks_while_building = lp
        .ticks
        .iter()
        .filter(|(due, _)| *due > requested && *due < RELEASE_MS)
        .count() as u64;
    assert_eq!(ticks_while_building, (RELEASE_MS - requested) / TICK_MS - 1);
    let sent = lp.snapshot_sent_at_ms.expect("snapshot sent");
    assert!(
        sent >= RELEASE_MS,
        "sent at {sent} ms, before the build could finish"
    );
    let meta = built.expect("built");
    assert_eq!(lp.snapshot_received, Some(meta));
    assert_eq!((meta.index, meta.key_count), (APPLIED, APPLIED * 50));
    assert!(
        meta.chunk_count > 50,
        "a large snapshot: {} chunks",
        meta.chunk_count
    );
}

//! Snapshots of the real state store on the sim device: one built (held mid-build by a pacer)
//! while writes, checkpoints and compaction go on holds exactly the model at its index; installed
//! on an empty store plus a replay of later entries it converges with the source, across restart;
//! a power cut at any write of an install leaves the old state; damaged, duplicate, missing and
//! foreign chunks are refused (resumably) without disturbing the store. Failures print `SEED=...`.

mod state_harness;

/// How long a test waits for a worker's answer before calling it a deadlock (a hang guard,
/// not a performance bound: answers take milliseconds).
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use engine::io::sim::SimIo;
use engine::layout::Superblock;
use engine::state::snapshot::{
    Chunk, ReceiveProgress, SnapshotBuilder, SnapshotError, SnapshotMeta, SnapshotReceiver,
    CHUNK_HEADER_LEN,
};
use engine::state::worker::{
    ApplyConfig, ApplyEvent, ApplyRequest, ApplyTask, ApplyWorker, BuildPacer, SnapshotConfig,
    SnapshotEvent, SnapshotWorker,
};
use engine::state::{InstallId, Op, StateStore};
use state_harness::*;

const REGION: u64 = 1;

/// Holds a build before chunk `hold_at` until opened; tells the test when it got there.
struct Gate {
    hold_at: u32,
    open: Mutex<bool>,
    cv: Condvar,
    reached: Sender<u32>,
}

impl Gate {
    fn new(hold_at: u32) -> (Arc<Gate>, Receiver<u32>) {
        let (reached, rx) = crossbeam_channel::unbounded();
        let g = Gate {
            hold_at,
            open: Mutex::new(false),
            cv: Condvar::new(),
            reached,
        };
        (Arc::new(g), rx)
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

impl BuildPacer for Gate {
    fn before_chunk(&self, _region_id: u64, chunk_no: u32) {
        if chunk_no == self.hold_at {
            let _ = self.reached.send(chunk_no);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.cv.wait(open).unwrap();
            }
        }
    }
}

fn raft_entry(index: u64, e: &Entry) -> raftlog::Entry {
    match e {
        Entry::Cmd(c) => raftlog::Entry::new(1, index, c.encode()),
        Entry::Empty => raftlog::Entry::new(1, index, Bytes::new()),
    }
}

/// Appends `n` random entries of `REGION` to the log and the model; returns the apply task.
fn more_entries(rng: &mut Rng, log: &mut Log, model: &mut Model, n: u64) -> ApplyTask {
    let first = model.regions[&REGION].0 + 1;
    let mut entries = Vec::new();
    for i in first..first + n {
        let e = if rng.chance(0.1) {
            Entry::Empty
        } else {
            let mut c = random_command(rng, &model.regions[&REGION].1);
            // The harness's commands churn a small key space; these make the region grow.
            if rng.chance(0.7) {
                c.ops.push(Op::Put {
                    key: Bytes::from(format!("u{:06}", rng.below(1_000_000))),
                    value: Bytes::from(vec![i as u8; 100 + rng.below(300) as usize]),
                });
            }
            Entry::Cmd(c)
        };
        model.apply(REGION, i, &e);
        entries.push(raft_entry(i, &e));
        log.entries.entry(REGION).or_default().push((i, e));
    }
    ApplyTask::new(REGION, entries)
}

fn wait_applied(worker: &ApplyWorker, index: u64) {
    loop {
        match worker
            .events()
            .recv_timeout(HANG_GUARD)
            .expect("no answer: deadlock?")
        {
            ApplyEvent::Applied {
                region_id: REGION,
                applied_index,
                ..
            } if applied_index >= index => return,
            ApplyEvent::Failed(e) => panic!("apply worker failed: {e}"),
            _ => {}
        }
    }
}

fn apply_config() -> ApplyConfig {
    ApplyConfig {
        checkpoint_log_bytes: 48 * 1024,
        checkpoint_step_bytes: 8 * 1024,
        ..ApplyConfig::default()
    }
}

fn model_entries(model: &Model) -> Vec<(Bytes, Bytes)> {
    model.regions[&REGION]
        .1
        .iter()
        .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
        .collect()
}

/// Builds a snapshot on the workers while more entries are applied; returns the chunks, the
/// descriptor, and the source's log and model (at the last entry applied).
fn snapshot_under_writes(seed: u64) -> (Vec<Bytes>, SnapshotMeta, Log, Model, StateStore) {
    let mut rng = Rng(seed);
    let (sim, sb) = device(seed, 96);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(REGION)).unwrap();
    let apply = ApplyWorker::spawn(store, apply_config()).unwrap();
    let (gate, reached) = Gate::new(1);
    // Odd seeds keep no chunk in memory: they are made again from the frozen view on demand.
    let in_memory = seed % 2 == 0;
    let snap_config = SnapshotConfig {
        chunk_bytes_max: 4096,
        memory_bytes_max: if in_memory { 1 << 30 } else { 0 },
        ..SnapshotConfig::default()
    };
    let snap = SnapshotWorker::spawn(snap_config, apply.sender(), Some(gate.clone())).unwrap();
    let mut log = Log::default();
    let mut model = Model::default();
    model.regions.insert(REGION, (0, BTreeMap::new()));
    let before = 100 + rng.below(200);
    apply
        .send(ApplyRequest::Apply(more_entries(
            &mut rng, &mut log, &mut model, before,
        )))
        .unwrap();
    wait_applied(&apply, before);
    assert!(snap.handle().request_build(REGION));
    assert_eq!(
        reached
            .recv_timeout(HANG_GUARD)
            .expect("no answer: deadlock?"),
        1,
        "the build holds after its first chunk"
    );
    // Overwrites, deletes and compaction while the frozen view is being read.
    for _ in 0..4 {
        let task = more_entries(&mut rng, &mut log, &mut model, 50);
        apply.send(ApplyRequest::Apply(task)).unwrap();
    }
    apply.send(ApplyRequest::Checkpoint).unwrap();
    wait_applied(&apply, before + 200);
    gate.open();
    let meta = match snap
        .events()
        .recv_timeout(HANG_GUARD)
        .expect("no answer: deadlock?")
    {
        SnapshotEvent::Built(meta) => meta,
        other => panic!("{other:?}"),
    };
    assert_eq!(meta.index, before, "frozen at the index applied when asked");
    let built = snap.handle().built(REGION).unwrap();
    assert_eq!(built.meta, meta);
    assert_eq!(built.in_memory(), in_memory);
    // Fetched last to first, so regenerated chunks jump backwards through the stream.
    let mut chunks: Vec<Bytes> = (0..meta.chunk_count)
        .rev()
        .map(|n| built.chunk(n).unwrap())
        .collect();
    chunks.reverse();
    let in_order: Vec<Bytes> = (0..meta.chunk_count)
        .map(|n| built.chunk(n).unwrap())
        .collect();
    assert_eq!(
        in_order, chunks,
        "the same bytes, whichever order they are asked in"
    );
    assert!(built.chunk(meta.chunk_count).is_err());
    drop(built);
    drop(snap);
    let store = apply.stop().unwrap();
    (chunks, meta, log, model, store)
}

fn decode_all(chunks: &[Bytes]) -> Vec<(Bytes, Bytes)> {
    chunks
        .iter()
        .flat_map(|c| Chunk::decode(c).unwrap().entries)
        .collect()
}

#[test]
fn snapshot_under_writes_holds_exactly_its_index_and_installs_to_converge() {
    for_each_seed(3, |seed| {
        let (chunks, meta, log, model, source) = snapshot_under_writes(seed);
        assert!(
            chunks.len() > 4,
            "a multi-chunk snapshot ({} chunks)",
            chunks.len()
        );
        let at_index = log.model_at(&BTreeMap::from([(REGION, meta.index)]));
        assert_eq!(decode_all(&chunks), model_entries(&at_index));
        assert_eq!(meta.key_count, at_index.regions[&REGION].1.len() as u64);

        // Install on an empty store through the workers, then replay every entry.
        let (sim_b, sb_b) = device(seed ^ 0xb, 96);
        let apply = ApplyWorker::spawn(open(&sim_b, &sb_b), apply_config()).unwrap();
        let snap = SnapshotWorker::spawn(SnapshotConfig::default(), apply.sender(), None).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        for c in &chunks {
            tx.send(c.clone()).unwrap();
        }
        drop(tx);
        assert!(snap.handle().install(meta, rx));
        match snap
            .events()
            .recv_timeout(HANG_GUARD)
            .expect("no answer: deadlock?")
        {
            SnapshotEvent::Installed {
                meta: m,
                checkpoint,
            } => {
                assert_eq!(m, meta);
                assert!(checkpoint.regions.contains(&(REGION, meta.index)));
            }
            other => panic!("{other:?}"),
        }
        let all: Vec<raftlog::Entry> = log.entries[&REGION]
            .iter()
            .map(|(i, e)| raft_entry(*i, e))
            .collect();
        let last = all.last().unwrap().index;
        apply
            .send(ApplyRequest::Apply(ApplyTask::new(REGION, all)))
            .unwrap();
        wait_applied(&apply, last);
        drop(snap);
        let target = apply.stop().unwrap();
        assert_matches(&target, &model);
        assert_matches(&source, &model);
        assert_eq!(
            target.region_state(REGION).unwrap().conf_state,
            source.region_state(REGION).unwrap().conf_state
        );
        drop(target);
        let mut sim_b = sim_b;
        sim_b.power_loss();
        assert_matches(&open(&sim_b, &sb_b), &model);
    });
}

/// A source store with `n` applied entries, frozen and cut into chunks of 2 KiB.
fn source_chunks(seed: u64, n: u64) -> (Vec<Bytes>, SnapshotMeta, Model) {
    let mut rng = Rng(seed);
    let (sim, sb) = device(seed, 64);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(REGION)).unwrap();
    let mut log = Log::default();
    let mut model = Model::default();
    model.regions.insert(REGION, (0, BTreeMap::new()));
    more_entries(&mut rng, &mut log, &mut model, n);
    log.replay(&mut store);
    let frozen = store.freeze(REGION).unwrap();
    let mut b = SnapshotBuilder::new(frozen, seed, 2048);
    let mut chunks = Vec::new();
    while let Some(c) = b.next_chunk().unwrap() {
        chunks.push(c);
    }
    (chunks, b.meta().unwrap(), model)
}

/// A target store whose region holds an older, different state, checkpointed.
fn old_target(seed: u64) -> (SimIo, Superblock, Model) {
    let mut rng = Rng(seed ^ 0x01d);
    let (sim, sb) = device(seed ^ 0x7a, 64);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(REGION)).unwrap();
    let mut log = Log::default();
    let mut model = Model::default();
    model.regions.insert(REGION, (0, BTreeMap::new()));
    more_entries(&mut rng, &mut log, &mut model, 40);
    log.replay(&mut store);
    store.checkpoint().unwrap();
    (sim, sb, model)
}

fn receive_all(
    rx: &mut SnapshotReceiver<InstallId>,
    store: &mut StateStore,
    chunks: &[Bytes],
) -> Result<bool, SnapshotError> {
    for c in chunks {
        if let ReceiveProgress::Installed(_) = rx.receive(store, c)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn power_cut_during_install_leaves_the_old_state() {
    // How often each outcome occurred: installed, stopped early, cut by the power.
    let outcomes: [AtomicU32; 3] = Default::default();
    for_each_seed(40, |seed| {
        let mut rng = Rng(seed);
        let (chunks, meta, new_model) = source_chunks(seed, 150);
        let (mut sim, sb, old_model) = old_target(seed);
        let budget = Arc::new(AtomicI64::new(rng.below(10) as i64));
        let write = CrashIo::new(sim.share(), Arc::clone(&budget));
        let mut store =
            StateStore::open(Box::new(write), Box::new(sim.share()), &sb, config()).unwrap();
        let mut rx = SnapshotReceiver::new(meta);
        // Stop feeding at a random chunk, or run into the write budget.
        let fed = 1 + rng.below(chunks.len() as u64 + 1) as usize;
        let installed = receive_all(&mut rx, &mut store, &chunks[..fed.min(chunks.len())]);
        drop(store);
        sim.power_loss();
        let store = open(&sim, &sb);
        let outcome = match installed {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(_) => 2,
        };
        outcomes[outcome].fetch_add(1, Ordering::Relaxed);
        match installed {
            Ok(true) => assert_matches(&store, &new_model),
            Ok(false) => assert_matches(&store, &old_model),
            Err(_) => {
                let applied = store.region_state(REGION).unwrap().applied_index;
                if applied == meta.index {
                    assert_matches(&store, &new_model);
                } else {
                    assert_matches(&store, &old_model);
                }
            }
        }
    });
    if seeds(40).len() == 40 {
        let counts = outcomes.map(AtomicU32::into_inner);
        assert!(counts.iter().all(|&c| c > 0), "outcomes {counts:?}");
    }
}

#[test]
fn damaged_streams_are_refused_without_disturbing_the_store() {
    let (chunks, meta, new_model) = source_chunks(41, 200);
    assert!(chunks.len() > 3);
    let (sim, sb, old_model) = old_target(41);
    let mut store = open(&sim, &sb);
    let mut rx = SnapshotReceiver::new(meta);
    rx.receive(&mut store, &chunks[0]).unwrap();
    let mut bad = chunks[1].to_vec();
    bad[CHUNK_HEADER_LEN + 3] ^= 0x40;
    let e = rx.receive(&mut store, &Bytes::from(bad)).unwrap_err();
    assert!(
        matches!(e, SnapshotError::Checksum { what: "chunk", .. }),
        "{e}"
    );
    let e = rx.receive(&mut store, &chunks[2]).unwrap_err();
    assert!(matches!(e, SnapshotError::Gap { .. }), "{e}");
    let e = rx.receive(&mut store, &chunks[0]).unwrap_err();
    assert!(matches!(e, SnapshotError::Duplicate { .. }), "{e}");
    let e = rx
        .receive(&mut store, &chunks[1].slice(..chunks[1].len() - 1))
        .unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    // Mid-install, the region still serves its old state.
    assert_matches(&store, &old_model);
    assert!(receive_all(&mut rx, &mut store, &chunks[1..]).unwrap());
    assert_matches(&store, &new_model);

    // A stream whose parts verify but whose whole does not: the install is aborted.
    let (sim, sb, old_model) = old_target(42);
    let mut store = open(&sim, &sb);
    let mut tampered = meta;
    tampered.total_bytes += 1;
    let mut rx = SnapshotReceiver::new(tampered);
    let e = receive_all(&mut rx, &mut store, &chunks).unwrap_err();
    assert!(e.is_fatal(), "{e}");
    assert_matches(&store, &old_model);
    drop(store);
    assert_matches(&open(&sim, &sb), &old_model);
}

#[test]
fn the_log_records_an_installed_snapshot() {
    use engine::log::{LogBatch, LogConfig, LogStore};
    use raftlog::Storage;
    let (mut sim, _) = device(5, 4);
    let config = LogConfig {
        device_label: "log".into(),
        ..LogConfig::default()
    };
    let (mut log, _) = LogStore::open(Box::new(sim.share()), config.clone()).unwrap();
    let mut batch = LogBatch::new();
    batch.add_entries(
        REGION,
        (1..=5)
            .map(|i| raftlog::Entry::new(1, i, Bytes::new()))
            .collect(),
    );
    log.write_sync(batch).unwrap();
    let mut batch = LogBatch::new();
    batch.set_snapshot(REGION, 100, 7);
    log.write_sync(batch).unwrap();
    let check = |log: &LogStore| {
        let r = log.region_log(REGION);
        assert_eq!(
            (r.first_index().unwrap(), r.last_index().unwrap()),
            (101, 100)
        );
        assert_eq!(r.term(100).unwrap(), 7);
    };
    check(&log);
    drop(log);
    sim.power_loss();
    let (log, _) = LogStore::open(Box::new(sim.share()), config).unwrap();
    check(&log);
}

#[test]
fn installs_through_the_workers_resume_or_fail_keeping_the_old_state() {
    let (chunks, meta, new_model) = source_chunks(43, 200);
    let (sim, sb, old_model) = old_target(43);
    let apply = ApplyWorker::spawn(open(&sim, &sb), apply_config()).unwrap();
    let snap = SnapshotWorker::spawn(SnapshotConfig::default(), apply.sender(), None).unwrap();
    let mid = chunks.len() / 2;
    let mut damaged = chunks.clone();
    let mut bad = damaged[mid].to_vec();
    bad[CHUNK_HEADER_LEN] ^= 1;
    damaged[mid] = Bytes::from(bad);
    let next_event = || {
        snap.events()
            .recv_timeout(HANG_GUARD)
            .expect("no answer: deadlock?")
    };
    // Not resumed: the damaged chunk and every one after it are refused, then the stream ends.
    for (stream, cut) in [(damaged.clone(), false), (chunks[..mid].to_vec(), true)] {
        let (tx, rx) = crossbeam_channel::unbounded();
        stream.into_iter().for_each(|c| tx.send(c).unwrap());
        drop(tx);
        assert!(snap.handle().install(meta, rx));
        let mut refused = 0;
        loop {
            match next_event() {
                SnapshotEvent::ChunkRefused { next_chunk_no, .. } => {
                    assert_eq!(next_chunk_no as usize, mid);
                    refused += 1;
                }
                SnapshotEvent::InstallFailed { meta: m, error } => {
                    assert_eq!(m, meta);
                    assert!(matches!(
                        error,
                        SnapshotError::Totals { what: "chunks", .. }
                    ));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(refused, if cut { 0 } else { chunks.len() - mid });
    }
    // The region still serves the old state.
    let (tx, rx) = crossbeam_channel::bounded(1);
    apply
        .send(ApplyRequest::Scan {
            region_id: REGION,
            start: Bytes::new(),
            end: None,
            limit: usize::MAX,
            reply: tx,
        })
        .unwrap();
    let old = rx.recv_timeout(HANG_GUARD).expect("scan answered");
    assert_eq!(old.unwrap(), model_entries(&old_model));
    // Resumed, as a transport would: on a refusal, resend from the chunk the install expects.
    let (tx, rx) = crossbeam_channel::unbounded();
    damaged[..=mid]
        .iter()
        .for_each(|c| tx.send(c.clone()).unwrap());
    assert!(snap.handle().install(meta, rx));
    let resume_at = match next_event() {
        SnapshotEvent::ChunkRefused {
            next_chunk_no,
            error,
            ..
        } => {
            assert!(matches!(
                error,
                SnapshotError::Checksum { what: "chunk", .. }
            ));
            next_chunk_no as usize
        }
        other => panic!("{other:?}"),
    };
    chunks[resume_at..]
        .iter()
        .for_each(|c| tx.send(c.clone()).unwrap());
    assert!(matches!(next_event(), SnapshotEvent::Installed { .. }));
    drop(tx);
    drop(snap);
    assert_matches(&apply.stop().unwrap(), &new_model);
}

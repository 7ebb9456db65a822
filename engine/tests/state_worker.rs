//! The apply worker on a sim device: entries of several regions (commands, empty entries, conf
//! changes, undecodable data, replays, gaps) apply in order with the `BTreeMap` model's results;
//! reads are answered; checkpoints fire by applied bytes and on stop, in steps (an apply queued
//! behind one waits for one step); a power cut at a random write leaves exactly the model at a
//! durable applied index no older than the last checkpoint reported; responders are answered
//! with their own entry's result, or with none (no command, or a refused task). Failures print
//! `SEED=...`.

mod state_harness;

/// How long a test waits for a worker's answer before calling it a deadlock (a hang guard,
/// not a performance bound: answers take milliseconds).
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use bytes::Bytes;
use engine::state::worker::{
    ApplyConfig, ApplyEvent, ApplyRequest, ApplyResult, ApplyTask, ApplyWorker, Responder,
};
use engine::state::{CheckpointInfo, Command, StateStore};
use raftlog::{ConfState, EntryType};
use state_harness::*;

const REGIONS: [u64; 3] = [1, 2, 3];

fn raft_entry(index: u64, e: &Entry) -> raftlog::Entry {
    match e {
        Entry::Cmd(c) => raftlog::Entry::new(1, index, c.encode()),
        Entry::Empty => raftlog::Entry::new(1, index, Bytes::new()),
    }
}

type Answer = (
    u64,
    Option<((u64, u64), Result<Vec<engine::state::OpResult>, String>)>,
);

/// A responder that reports what it was answered on `answers`.
fn responder(index: u64, answers: &crossbeam_channel::Sender<Answer>) -> Responder {
    let answers = answers.clone();
    Responder::new(
        index,
        Box::new(move |r: Option<&ApplyResult>| {
            let r = r.map(|r| (r.client, r.results.clone().map_err(|e| e.to_string())));
            answers.send((index, r)).unwrap();
        }),
    )
}

fn small_config() -> ApplyConfig {
    ApplyConfig {
        checkpoint_log_bytes: 64 * 1024,
        checkpoint_log_bytes_max: 64 * 1024,
        checkpoint_step_bytes: 8 * 1024,
        requests_per_step_max: 4,
        queue_len_max: 64,
    }
}

/// What the test saw come back from the worker.
#[derive(Default)]
struct Seen {
    applied: BTreeMap<u64, u64>,
    checkpoints: Vec<CheckpointInfo>,
    failed: bool,
}

impl Seen {
    fn take(
        &mut self,
        ev: ApplyEvent,
        expect: &mut BTreeMap<(u64, u64), Vec<engine::state::OpResult>>,
    ) {
        match ev {
            ApplyEvent::Applied {
                region_id,
                applied_index,
                results,
                ..
            } => {
                self.applied.insert(region_id, applied_index);
                for r in results {
                    let want = expect
                        .remove(&(region_id, r.index))
                        .expect("a result per command");
                    assert_eq!(
                        r.results.as_ref().ok(),
                        Some(&want),
                        "results of {region_id}/{}",
                        r.index
                    );
                }
            }
            ApplyEvent::CheckpointDone(info) => self.checkpoints.push(info),
            ApplyEvent::Failed(_) => self.failed = true,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Returns whether the worker failed (the power cut hit it).
fn one_run(seed: u64, crash: bool) -> bool {
    let mut rng = Rng(seed);
    let (sim, sb) = device(seed, 48);
    let mut store = open(&sim, &sb);
    for r in REGIONS {
        store.create_region(region_state(r)).unwrap();
    }
    store.checkpoint().unwrap();
    drop(store);
    let budget = Arc::new(AtomicI64::new(if crash {
        rng.below(24) as i64
    } else {
        i64::MAX
    }));
    let write = CrashIo::new(sim.share(), Arc::clone(&budget));
    let store = StateStore::open(Box::new(write), Box::new(sim.share()), &sb, config()).unwrap();
    let worker = ApplyWorker::spawn(store, small_config()).unwrap();
    let mut log = Log::default();
    let mut model = Model::default();
    for r in REGIONS {
        model.regions.insert(r, (0, BTreeMap::new()));
    }
    let mut expect = BTreeMap::new();
    let mut seen = Seen::default();
    let mut next: BTreeMap<u64, u64> = REGIONS.iter().map(|&r| (r, 1)).collect();
    for _ in 0..40 {
        let r = REGIONS[rng.below(3) as usize];
        let first = next[&r];
        let mut entries = Vec::new();
        for i in first..first + 1 + rng.below(6) {
            let e = if rng.chance(0.15) {
                Entry::Empty
            } else {
                Entry::Cmd(random_command(&mut rng, &model.regions[&r].1))
            };
            let results = model.apply(r, i, &e);
            if let Entry::Cmd(_) = e {
                expect.insert((r, i), results);
            }
            entries.push(raft_entry(i, &e));
            log.entries.entry(r).or_default().push((i, e));
        }
        let last = entries.last().unwrap().index;
        next.insert(r, last + 1);
        // Replays of entries already applied are skipped.
        if first > 1 && rng.chance(0.3) {
            entries.insert(
                0,
                raft_entry(first - 1, &log.entries[&r][(first - 2) as usize].1),
            );
        }
        if worker
            .send(ApplyRequest::Apply(ApplyTask::new(r, entries)))
            .is_err()
        {
            break;
        }
        while let Ok(ev) = worker.events().try_recv() {
            seen.take(ev, &mut expect);
        }
        if seen.failed {
            break;
        }
    }
    let events = worker.events().clone();
    let stopped = worker.stop();
    for ev in events.try_iter() {
        seen.take(ev, &mut expect);
    }
    if !crash {
        assert!(stopped.is_ok(), "no faults, no failure");
        assert!(expect.is_empty(), "every command answered");
        assert!(
            seen.checkpoints.len() >= 2,
            "by bytes and on stop: {}",
            seen.checkpoints.len()
        );
    }
    drop(stopped);
    let mut sim = sim;
    sim.power_loss();
    let store = open(&sim, &sb);
    let durable: BTreeMap<u64, u64> = REGIONS
        .iter()
        .map(|&r| (r, store.region_state(r).unwrap().applied_index))
        .collect();
    for info in &seen.checkpoints {
        for (r, i) in &info.regions {
            assert!(
                durable[r] >= *i,
                "region {r}: checkpoint at {i} reported, {} durable",
                durable[r]
            );
        }
    }
    if !crash {
        assert_eq!(
            durable,
            next.iter().map(|(&r, &n)| (r, n - 1)).collect(),
            "stop checkpoints everything"
        );
    }
    assert_matches(&store, &log.model_at(&durable));
    seen.failed
}

#[test]
fn applies_in_order_and_checkpoints_by_bytes_and_on_stop() {
    for_each_seed(4, |seed| {
        one_run(seed, false);
    });
}

#[test]
fn power_cut_leaves_the_model_at_a_durable_index() {
    let failed = std::sync::atomic::AtomicU32::new(0);
    for_each_seed(24, |seed| {
        if one_run(seed, true) {
            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert!(failed.into_inner() > 0, "some runs must be cut mid-way");
}

#[test]
fn conf_changes_gaps_garbage_and_reads() {
    let (sim, sb) = device(7, 16);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    let worker = ApplyWorker::spawn(store, small_config()).unwrap();
    let put = Command {
        client_id: 3,
        sequence: 9,
        ops: vec![engine::state::Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        }],
    };
    let (answers, answered) = crossbeam_channel::unbounded();
    let cs = ConfState::from_voters(vec![1, 2, 3, 4]);
    let mut cc = raftlog::Entry::new(1, 2, Bytes::from_static(b"encoded conf change"));
    cc.entry_type = EntryType::EntryConfChangeV2;
    let task = ApplyTask {
        region_id: 1,
        entries: vec![
            raftlog::Entry::new(1, 1, put.encode()),
            cc,
            raftlog::Entry::new(2, 3, Bytes::from_static(b"not a command")),
        ],
        conf_states: vec![(2, cs.clone())],
        metas: Vec::new(),
        responders: vec![responder(1, &answers), responder(2, &answers)],
    };
    worker.send(ApplyRequest::Apply(task)).unwrap();
    // A gap: index 5 after applied 3.
    let mut gap = ApplyTask::new(1, vec![raftlog::Entry::new(2, 5, Bytes::new())]);
    gap.responders.push(responder(5, &answers));
    worker.send(ApplyRequest::Apply(gap)).unwrap();
    match worker
        .events()
        .recv_timeout(HANG_GUARD)
        .expect("no answer: deadlock?")
    {
        ApplyEvent::Applied {
            region_id: 1,
            applied_index: 3,
            applied_term: 2,
            results,
        } => {
            assert_eq!(results.len(), 2);
            assert_eq!(results[0].client, (3, 9));
            assert_eq!(results[0].results, Ok(vec![engine::state::OpResult::Done]));
            assert!(
                results[1].results.is_err(),
                "garbage is refused, applied as a no-op"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        worker
            .events()
            .recv_timeout(HANG_GUARD)
            .expect("no answer: deadlock?"),
        ApplyEvent::Refused { region_id: 1, .. }
    ));
    // The put's responder has its result; the conf change has none; the refused task's
    // responder is answered with none when the task is dropped.
    let got: Vec<_> = (0..3)
        .map(|_| {
            answered
                .recv_timeout(HANG_GUARD)
                .expect("a responder never answered")
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some(((3, 9), Ok(vec![engine::state::OpResult::Done])))),
            (2, None),
            (5, None),
        ]
    );
    let (tx, rx) = crossbeam_channel::bounded(1);
    worker
        .send(ApplyRequest::Get {
            region_id: 1,
            key: Bytes::from_static(b"k"),
            reply: tx,
        })
        .unwrap();
    assert_eq!(
        rx.recv_timeout(HANG_GUARD)
            .expect("no answer: deadlock?")
            .unwrap(),
        Some(Bytes::from_static(b"v"))
    );
    let (tx, rx) = crossbeam_channel::bounded(1);
    worker
        .send(ApplyRequest::Scan {
            region_id: 1,
            start: Bytes::new(),
            end: None,
            limit: 10,
            reply: tx,
        })
        .unwrap();
    assert_eq!(
        rx.recv_timeout(HANG_GUARD)
            .expect("no answer: deadlock?")
            .unwrap()
            .len(),
        1
    );
    let store = worker.stop().unwrap();
    let st = store.region_state(1).unwrap();
    assert_eq!((st.applied_index, st.applied_term), (3, 2));
    assert_eq!(st.conf_state, cs);
    drop(store);
    let store = open(&sim, &sb);
    assert_eq!(
        store.region_state(1).unwrap().conf_state,
        cs,
        "conf state checkpointed"
    );
}

#[test]
fn checkpoint_steps_interleave_with_applies() {
    let (sim, sb) = device(9, 64);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    store
        .apply(1, 1, 1, &bulk_puts(2000, b"v"))
        .unwrap()
        .unwrap();
    let config = ApplyConfig {
        checkpoint_step_bytes: 4096,
        requests_per_step_max: 1,
        ..ApplyConfig::default()
    };
    let worker = ApplyWorker::spawn(store, config).unwrap();
    // Hold the worker inside a read whose answer the test takes only once the checkpoint and
    // an apply are queued behind it.
    let (tx, held) = crossbeam_channel::bounded(0);
    worker
        .send(ApplyRequest::Get {
            region_id: 1,
            key: Bytes::from_static(b"key-00000"),
            reply: tx,
        })
        .unwrap();
    worker.send(ApplyRequest::Checkpoint).unwrap();
    let put = raftlog::Entry::new(1, 2, Bytes::new());
    worker
        .send(ApplyRequest::Apply(ApplyTask::new(1, vec![put])))
        .unwrap();
    assert!(held.recv_timeout(HANG_GUARD).unwrap().unwrap().is_some());
    let first = worker.events().recv_timeout(HANG_GUARD).unwrap();
    assert!(
        matches!(
            first,
            ApplyEvent::Applied {
                applied_index: 2,
                ..
            }
        ),
        "the apply waits for one checkpoint step, not the whole checkpoint: {first:?}"
    );
    match worker.events().recv_timeout(HANG_GUARD).unwrap() {
        ApplyEvent::CheckpointDone(info) => assert!(info.bytes > 4 * 4096, "{info:?}"),
        other => panic!("{other:?}"),
    }
    drop(worker.stop().unwrap());
}

/// The checkpoint trigger grows with the store: once a checkpoint wrote more than
/// `checkpoint_log_bytes`, the next one waits for that many applied bytes (up to the cap), so
/// checkpoint writes stay at most the bytes applied.
#[test]
fn checkpoint_trigger_grows_with_the_last_checkpoint() {
    let (sim, sb) = device(11, 64);
    let mut store = open(&sim, &sb);
    store.create_region(region_state(1)).unwrap();
    // 3000 keys: a checkpoint of about 3000 * 30 = 90 KB, well over the 8 KiB trigger.
    store
        .apply(1, 1, 1, &bulk_puts(3000, b"v"))
        .unwrap()
        .unwrap();
    let config = ApplyConfig {
        checkpoint_log_bytes: 8 * 1024,
        checkpoint_log_bytes_max: 1 << 30,
        checkpoint_step_bytes: 1 << 20,
        requests_per_step_max: 1,
        queue_len_max: 64,
    };
    let worker = ApplyWorker::spawn(store, config).unwrap();
    worker.send(ApplyRequest::Checkpoint).unwrap();
    let first = loop {
        match worker.events().recv_timeout(HANG_GUARD).unwrap() {
            ApplyEvent::CheckpointDone(info) => break info.bytes,
            ApplyEvent::Applied { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    assert!(first > 40 * 1024, "checkpoint of {first} bytes");
    // Apply entries of 1 KiB each and record the applied bytes at each checkpoint.
    let mut applied_bytes = 0u64;
    let mut at_checkpoint = Vec::new();
    for i in 0..200u64 {
        let e = raftlog::Entry::new(1, 2 + i, Bytes::from(vec![0u8; 1024]));
        applied_bytes += e.size_bytes();
        worker
            .send(ApplyRequest::Apply(ApplyTask::new(1, vec![e])))
            .unwrap();
        loop {
            match worker.events().recv_timeout(HANG_GUARD).unwrap() {
                ApplyEvent::Applied { .. } => break,
                ApplyEvent::CheckpointDone(_) => at_checkpoint.push(applied_bytes),
                other => panic!("{other:?}"),
            }
        }
    }
    while let Ok(ev) = worker.events().try_recv() {
        if let ApplyEvent::CheckpointDone(_) = ev {
            at_checkpoint.push(applied_bytes);
        }
    }
    assert!(
        !at_checkpoint.is_empty(),
        "no checkpoint in {applied_bytes} applied bytes"
    );
    assert!(
        at_checkpoint[0] >= first,
        "a checkpoint after {} applied bytes, under the last checkpoint's {first} bytes (the fixed 8 KiB trigger)",
        at_checkpoint[0]
    );
    drop(worker.stop().unwrap());
}

//! At-most-once application: a retried command (same client and sequence) is not applied twice
//! and answers its first results, an older sequence is refused, and this holds after a restart
//! from a checkpoint, after a restart that replays the log, after a snapshot is installed on
//! another store, in both halves of a split and through the apply worker. Each test applies a
//! non-idempotent change in between, so a second application would show in the data.

mod state_harness;

use std::collections::BTreeMap;

use bytes::Bytes;
use engine::io::sim::SimIo;
use engine::layout::Superblock;
use engine::state::snapshot::{ReceiveProgress, SnapshotBuilder, SnapshotReceiver};
use engine::state::worker::{ApplyConfig, ApplyEvent, ApplyRequest, ApplyTask, ApplyWorker};
use engine::state::{
    Command, CommandError, Op, OpResult, RegionState, SessionTable, SplitOutcome, StateStore,
};
use state_harness::*;

const R: u64 = 1;

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn put(client: u64, seq: u64, k: &str, v: &str) -> Command {
    Command {
        client_id: client,
        sequence: seq,
        ops: vec![Op::Put {
            key: b(k),
            value: b(v),
        }],
    }
}

/// Client `client`'s compare-and-swap of `k` from absent to `v`, then a put of `k2`.
fn cas_absent(client: u64, seq: u64, k: &str, v: &str, k2: &str) -> Command {
    Command {
        client_id: client,
        sequence: seq,
        ops: vec![
            Op::Cas {
                key: b(k),
                expected: None,
                new: Some(b(v)),
            },
            Op::Put {
                key: b(k2),
                value: b(v),
            },
        ],
    }
}

fn delete(k: &str) -> Command {
    Command {
        client_id: 0,
        sequence: 0,
        ops: vec![Op::Delete { key: b(k) }],
    }
}

fn dup(client_id: u64, sequence: u64, last: u64) -> CommandError {
    CommandError::Duplicate {
        client_id,
        sequence,
        last,
    }
}

fn get(s: &StateStore, r: u64, k: &str) -> Option<Bytes> {
    s.get(r, k.as_bytes()).expect("get")
}

fn sessions(s: &StateStore, r: u64) -> SessionTable {
    s.region_state(r).expect("region").sessions
}

/// A store with region `R` holding the history every test starts from: client 5's CAS
/// (sequence 1) at index 1, a session-less delete of its key at 2, client 6's put at 3.
/// Returns the CAS, whose first results are `first_results()`.
fn history(s: &mut StateStore, log: &mut Log) -> Command {
    s.create_region(region_state(R)).expect("create");
    let cas = cas_absent(5, 1, "k", "v1", "k2");
    let cmds = [cas.clone(), delete("k"), put(6, 1, "p", "six")];
    for (i, c) in cmds.into_iter().enumerate() {
        let index = i as u64 + 1;
        s.apply(R, index, 1, &c).expect("apply").expect("fresh");
        log.entries
            .entry(R)
            .or_default()
            .push((index, Entry::Cmd(c)));
    }
    cas
}

fn first_results() -> Vec<OpResult> {
    vec![
        OpResult::Cas {
            succeeded: true,
            previous: None,
        },
        OpResult::Done,
    ]
}

/// Retries client 5's CAS and an older command of client 6 at `index` and `index + 1` of
/// region `r`: neither applies, the CAS answers its first results.
fn assert_retries_refused(s: &mut StateStore, r: u64, index: u64, cas: &Command) {
    let p_before = get(s, r, "p");
    let again = s.apply(r, index, 1, cas).expect("apply");
    assert_eq!(
        again,
        Ok(first_results()),
        "a retry answers the first results"
    );
    assert_eq!(get(s, r, "k"), None, "the retried CAS must not apply again");
    let old = put(6, 0, "p", "old");
    let refused = s.apply(r, index + 1, 1, &old).expect("apply");
    assert_eq!(refused, Err(dup(6, 0, 1)));
    assert_eq!(get(s, r, "p"), p_before);
    let st = s.region_state(r).expect("region");
    assert_eq!(
        st.applied_index,
        index + 1,
        "refused entries still apply as no-ops"
    );
}

#[test]
fn a_retry_does_not_apply_twice_and_answers_the_first_results() {
    let (sim, sb) = device(1, 16);
    let mut s = open(&sim, &sb);
    let cas = history(&mut s, &mut Log::default());
    assert_retries_refused(&mut s, R, 4, &cas);
    // A retried plain put: the value a session-less write set after it stays.
    s.apply(R, 6, 1, &put(0, 0, "p", "changed"))
        .unwrap()
        .unwrap();
    let retry = s.apply(R, 7, 1, &put(6, 1, "p", "six")).unwrap();
    assert_eq!(retry, Ok(vec![OpResult::Done]));
    assert_eq!(get(&s, R, "p").as_deref(), Some(&b"changed"[..]));
    // A newer sequence applies; client 0 never has a session.
    let next = cas_absent(5, 2, "k", "v2", "k2");
    assert_eq!(s.apply(R, 8, 1, &next).unwrap(), Ok(first_results()));
    assert_eq!(get(&s, R, "k").as_deref(), Some(&b"v2"[..]));
    assert_eq!(sessions(&s, R).len(), 2);
    assert_eq!(
        sessions(&s, R).get(5).map(|x| (x.sequence, x.index)),
        Some((2, 8))
    );
}

#[test]
fn sessions_survive_a_restart_from_a_checkpoint() {
    let (sim, sb) = device(2, 16);
    let mut s = open(&sim, &sb);
    let cas = history(&mut s, &mut Log::default());
    let before = sessions(&s, R);
    s.checkpoint().expect("checkpoint");
    drop(s);
    let mut s = open(&sim, &sb);
    assert_eq!(sessions(&s, R), before);
    assert_retries_refused(&mut s, R, 4, &cas);
}

#[test]
fn replaying_the_log_rebuilds_the_same_sessions() {
    let (sim, sb) = device(3, 16);
    let mut s = open(&sim, &sb);
    let mut log = Log::default();
    s.create_region(region_state(R)).expect("create");
    let first = put(5, 1, "a", "1");
    s.apply(R, 1, 1, &first).unwrap().unwrap();
    log.entries
        .entry(R)
        .or_default()
        .push((1, Entry::Cmd(first)));
    s.checkpoint().expect("checkpoint");
    // After the checkpoint: client 5 moves on, its retry at 4 is refused, client 9 appears.
    let cas = cas_absent(5, 2, "k", "v1", "k2");
    let tail = [
        cas.clone(),
        delete("k"),
        cas.clone(),
        put(9, 3, "z", "9"),
        put(5, 1, "a", "stale"),
    ];
    let mut answers = Vec::new();
    for (i, c) in tail.into_iter().enumerate() {
        let index = i as u64 + 2;
        answers.push(s.apply(R, index, 1, &c).unwrap());
        log.entries
            .entry(R)
            .or_default()
            .push((index, Entry::Cmd(c)));
    }
    assert_eq!(answers[2], Ok(first_results()));
    assert_eq!(answers[4], Err(dup(5, 1, 2)));
    let before = sessions(&s, R);
    let data = s.scan(R, b"", None, 100).unwrap();
    drop(s); // no checkpoint: the restart replays indexes 2..=6
    let mut s = open(&sim, &sb);
    assert_eq!(s.region_state(R).unwrap().applied_index, 1);
    log.replay(&mut s);
    assert_eq!(sessions(&s, R), before, "replay rebuilds the table exactly");
    assert_eq!(s.scan(R, b"", None, 100).unwrap(), data);
    assert_eq!(get(&s, R, "k"), None, "the replayed retry did not apply");
    assert_eq!(s.apply(R, 7, 1, &cas).unwrap(), Ok(first_results()));
}

fn snapshot_chunks(
    s: &mut StateStore,
    r: u64,
) -> (Vec<Bytes>, engine::state::snapshot::SnapshotMeta) {
    let frozen = s.freeze(r).expect("freeze");
    let mut builder = SnapshotBuilder::new(frozen, 77, 1024);
    let mut chunks = Vec::new();
    while let Some(c) = builder.next_chunk().expect("chunk") {
        chunks.push(c);
    }
    (chunks, builder.meta().expect("finished"))
}

fn install(
    sim: &SimIo,
    sb: &Superblock,
    chunks: &[Bytes],
    meta: engine::state::snapshot::SnapshotMeta,
) {
    let mut t = open(sim, sb);
    let mut rx = SnapshotReceiver::new(meta);
    let mut done = false;
    for c in chunks {
        done = matches!(
            rx.receive(&mut t, c).expect("chunk"),
            ReceiveProgress::Installed(_)
        );
    }
    assert!(done, "installed");
}

#[test]
fn an_installed_snapshot_carries_the_sessions() {
    let (sim, sb) = device(4, 16);
    let mut s = open(&sim, &sb);
    let cas = history(&mut s, &mut Log::default());
    // Enough clients and kept results that the first chunk is larger than the chunk size.
    for c in 0..40u64 {
        let cmd = put(100 + c, 1, &format!("c{c:02}"), "x");
        s.apply(R, 4 + c, 1, &cmd).unwrap().unwrap();
    }
    let before = sessions(&s, R);
    let (chunks, meta) = snapshot_chunks(&mut s, R);
    let (tsim, tsb) = device(5, 16);
    install(&tsim, &tsb, &chunks, meta);
    let mut t = open(&tsim, &tsb);
    assert_eq!(sessions(&t, R), before, "installed and durable");
    assert_retries_refused(&mut t, R, 44, &cas);
    let old = put(120, 1, "c20", "again");
    assert_eq!(t.apply(R, 46, 1, &old).unwrap(), Ok(vec![OpResult::Done]));
    assert_eq!(get(&t, R, "c20").as_deref(), Some(&b"x"[..]));
}

#[test]
fn both_halves_of_a_split_refuse_a_retry() {
    let (sim, sb) = device(6, 16);
    let mut s = open(&sim, &sb);
    let cas = history(&mut s, &mut Log::default());
    // "k" < "m" <= "p": the CAS's key stays in the parent, client 6's key moves.
    let mut child = RegionState::new(2, raftlog::ConfState::from_voters(vec![1]));
    child.applied_index = 10;
    child.applied_term = 1;
    let out = s.split_region(R, 4, 1, b"m", child, Bytes::new()).unwrap();
    assert!(
        matches!(out, SplitOutcome::Moved { keys: 1, .. }),
        "{out:?}"
    );
    assert_eq!(
        sessions(&s, 2),
        sessions(&s, R),
        "the child copies the table"
    );
    s.checkpoint().expect("checkpoint");
    drop(s);
    let mut s = open(&sim, &sb);
    assert_retries_refused(&mut s, R, 5, &cas);
    // The child: a retry of client 6's put and of client 5's CAS (whose key is not in it).
    let retry = s.apply(2, 11, 1, &put(6, 1, "p", "six")).unwrap();
    assert_eq!(retry, Ok(vec![OpResult::Done]));
    s.apply(2, 12, 1, &put(0, 0, "p", "child"))
        .unwrap()
        .unwrap();
    assert_eq!(s.apply(2, 13, 1, &cas).unwrap(), Ok(first_results()));
    assert_eq!(get(&s, 2, "k"), None, "not applied in the child either");
    assert_eq!(
        s.apply(2, 14, 1, &put(6, 0, "p", "x")).unwrap(),
        Err(dup(6, 0, 1))
    );
    assert_eq!(get(&s, 2, "p").as_deref(), Some(&b"child"[..]));
}

fn store_with_max(sim: &SimIo, sb: &Superblock, clients_max: usize) -> StateStore {
    let mut c = config();
    c.session_clients_max = clients_max;
    StateStore::open(Box::new(sim.share()), Box::new(sim.share()), sb, c).expect("open")
}

#[test]
fn eviction_is_deterministic_and_takes_the_oldest_client() {
    let mut rng = Rng(0x5e55);
    let cmds: Vec<Command> = (0..200)
        .map(|i| {
            let client = 1 + rng.below(12);
            put(client, 1000 + i, &format!("c{client}"), &format!("{i}"))
        })
        .collect();
    let mut tables = Vec::new();
    for seed in [7, 8] {
        let (sim, sb) = device(seed, 16);
        let mut s = store_with_max(&sim, &sb, 4);
        s.create_region(region_state(R)).unwrap();
        for (i, c) in cmds.iter().enumerate() {
            s.apply(R, i as u64 + 1, 1, c).unwrap().unwrap();
        }
        tables.push(sessions(&s, R));
    }
    assert_eq!(tables[0], tables[1], "two replicas keep the same clients");
    // Exactly the 4 clients whose last commands are the most recent remain.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, c) in cmds.iter().enumerate() {
        last.insert(c.client_id, i as u64 + 1);
    }
    let mut by_recency: Vec<(u64, u64)> = last.iter().map(|(c, i)| (*i, *c)).collect();
    by_recency.sort_unstable();
    let mut want: Vec<u64> = by_recency.iter().rev().take(4).map(|x| x.1).collect();
    want.sort_unstable();
    let held: Vec<u64> = tables[0].iter().map(|(c, _)| c).collect();
    assert_eq!(held, want);
    for (c, s) in tables[0].iter() {
        assert_eq!(s.index, last[&c], "client {c}'s entry is its last command");
    }
}

#[test]
fn many_sessions_with_large_results_checkpoint_in_bounded_records() {
    let (sim, sb) = device(9, 32);
    let mut s = open(&sim, &sb);
    s.create_region(region_state(R)).unwrap();
    let value = Bytes::from(vec![3u8; 3000]);
    let mut index = 0;
    for c in 1..=60u64 {
        index += 1;
        let k = format!("key{c:03}");
        let set = Command {
            client_id: 0,
            sequence: 0,
            ops: vec![Op::Put {
                key: b(&k),
                value: value.clone(),
            }],
        };
        s.apply(R, index, 1, &set).unwrap().unwrap();
        // A failed CAS keeps the 3000-byte value it found among its results.
        index += 1;
        let cas = Command {
            client_id: c,
            sequence: 1,
            ops: vec![Op::Cas {
                key: b(&k),
                expected: None,
                new: Some(b("never")),
            }],
        };
        let res = s.apply(R, index, 1, &cas).unwrap().unwrap();
        assert_eq!(
            res,
            vec![OpResult::Cas {
                succeeded: false,
                previous: Some(value.clone())
            }]
        );
    }
    let before = sessions(&s, R);
    s.checkpoint()
        .expect("a checkpoint of 180 KB of sessions in 64 KiB segments");
    drop(s);
    let mut s = open(&sim, &sb);
    assert_eq!(sessions(&s, R), before);
    let retry = Command {
        client_id: 7,
        sequence: 1,
        ops: vec![Op::Cas {
            key: b("key007"),
            expected: None,
            new: Some(b("never")),
        }],
    };
    let again = s.apply(R, index + 1, 1, &retry).unwrap().unwrap();
    assert_eq!(
        again,
        vec![OpResult::Cas {
            succeeded: false,
            previous: Some(value)
        }]
    );
}

#[test]
fn the_apply_worker_reports_retries_and_refusals() {
    let (sim, sb) = device(10, 16);
    let mut s = open(&sim, &sb);
    s.create_region(region_state(R)).unwrap();
    let worker = ApplyWorker::spawn(s, ApplyConfig::default()).unwrap();
    let cmds = [
        put(5, 2, "a", "1"),
        put(0, 0, "a", "2"),
        put(5, 2, "a", "1"),
        put(5, 1, "a", "0"),
    ];
    let entries = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| raftlog::Entry::new(1, i as u64 + 1, c.encode()))
        .collect();
    worker
        .send(ApplyRequest::Apply(ApplyTask::new(R, entries)))
        .unwrap();
    let ev = worker
        .events()
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("an answer");
    let ApplyEvent::Applied {
        applied_index,
        results,
        ..
    } = ev
    else {
        panic!("{ev:?}");
    };
    assert_eq!(applied_index, 4);
    let got: Vec<_> = results
        .iter()
        .map(|r| (r.client, r.results.clone()))
        .collect();
    let done = Ok(vec![OpResult::Done]);
    assert_eq!(
        got,
        vec![
            ((5, 2), done.clone()),
            ((0, 0), done.clone()),
            ((5, 2), done),
            ((5, 1), Err(dup(5, 1, 2))),
        ]
    );
    let (tx, rx) = crossbeam_channel::bounded(1);
    worker
        .send(ApplyRequest::Get {
            region_id: R,
            key: b("a"),
            reply: tx,
        })
        .unwrap();
    assert_eq!(rx.recv().unwrap().unwrap().as_deref(), Some(&b"2"[..]));
}

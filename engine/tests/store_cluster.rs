//! The store layer end to end: three and more real stores (file devices, io_uring, all threads)
//! on an in-process network. Writes replicate, a cut-off leader is replaced without losing an
//! acknowledged write, a stopped store catches up from its log, a new store joins as a learner
//! through a snapshot and is promoted, a peer is removed, leadership moves, and a split region
//! serves both halves, also after every store crashed and replayed the split from its log.
//! Reads go through ReadIndex and are checked against what was written. A retried command
//! (same client id and sequence) is applied at most once, also after a leader change.

mod store_harness;

use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::state::{Op, OpResult};
use engine::store::{AdminRequest, ClientResponse, PeerRole, RequestError};
use store_harness::Cluster;

const T: Duration = Duration::from_secs(20);

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

#[test]
fn writes_replicate_and_survive_leader_loss() {
    let mut c = Cluster::start(3, 3, 1);
    for i in 0..50 {
        c.put(&key(i), format!("v{i}").as_bytes());
    }
    for i in 0..50 {
        assert_eq!(c.get(&key(i)).as_deref(), Some(format!("v{i}").as_bytes()));
    }
    assert!(c.wait_applied(b"key", T));
    let (old, _) = c.leader_of(b"key", T).expect("leader");
    c.isolate(old);
    let t0 = Instant::now();
    let (new, _) = c.leader_of(b"key", T).expect("a new leader");
    assert_ne!(new, old);
    eprintln!("failover took {:?}", t0.elapsed());
    for i in 50..60 {
        c.put(&key(i), format!("v{i}").as_bytes());
    }
    for i in 0..60 {
        assert_eq!(
            c.get(&key(i)).as_deref(),
            Some(format!("v{i}").as_bytes()),
            "key {i}"
        );
    }
    c.heal(old);
    c.stop_all();
}

#[test]
fn stopped_store_restarts_and_catches_up() {
    let mut c = Cluster::start(3, 3, 1);
    for i in 0..20 {
        c.put(&key(i), b"a");
    }
    let (leader, _) = c.leader_of(b"key", T).expect("leader");
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    c.stop_store(follower);
    for i in 20..40 {
        c.put(&key(i), b"b");
    }
    c.start_store(follower);
    assert!(c.wait_applied(b"key", T), "restarted follower caught up");
    // Make the restarted store the leader: it must hold everything.
    let info = c
        .regions(follower)
        .into_iter()
        .find(|r| r.meta.contains(b"key"))
        .expect("region on the follower");
    c.admin(
        b"key",
        AdminRequest::TransferLeader {
            peer_id: info.peer_id,
        },
    )
    .expect("transfer");
    let deadline = Instant::now() + T;
    while c.leader_of(b"key", T).map(|(s, _)| s) != Some(follower) {
        assert!(Instant::now() < deadline, "leadership moved");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..40 {
        let want: &[u8] = if i < 20 { b"a" } else { b"b" };
        assert_eq!(c.get(&key(i)).as_deref(), Some(want), "key {i}");
    }
    c.stop_all();
}

#[test]
fn learner_joins_by_snapshot_is_promoted_and_a_peer_is_removed() {
    let mut c = Cluster::start(4, 3, 1);
    for i in 0..300 {
        c.put(&key(i), &[b'x'; 200]);
    }
    // Push the log past a checkpoint so the new peer must be caught up by snapshot.
    assert!(matches!(
        c.admin(
            b"key",
            AdminRequest::AddPeer {
                store_id: 4,
                learner: true
            }
        ),
        Ok(ClientResponse::AdminDone)
    ));
    assert!(c.wait_applied(b"key", T), "learner caught up");
    let r4 = c
        .regions(4)
        .into_iter()
        .find(|r| r.meta.contains(b"key"))
        .expect("store 4 has the region");
    let me = r4.meta.peer_on_store(4).copied().expect("peer on 4");
    assert_eq!(me.role, PeerRole::Learner);
    c.admin(
        b"key",
        AdminRequest::PromoteLearner {
            peer_id: me.peer_id,
        },
    )
    .expect("promote");
    let (leader, info) = c.leader_of(b"key", T).expect("leader");
    assert_eq!(
        info.meta.peer(me.peer_id).map(|p| p.role),
        Some(PeerRole::Voter)
    );
    // Remove a follower that is not store 4.
    let victim = info
        .meta
        .peers
        .iter()
        .find(|p| p.store_id != leader && p.store_id != 4)
        .copied()
        .expect("a follower");
    c.admin(
        b"key",
        AdminRequest::RemovePeer {
            peer_id: victim.peer_id,
        },
    )
    .expect("remove");
    let deadline = Instant::now() + T;
    while c
        .regions(victim.store_id)
        .iter()
        .any(|r| r.meta.contains(b"key"))
    {
        assert!(Instant::now() < deadline, "removed peer destroyed");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.put(b"key-after", b"z");
    // Store 4 can now lead and serve everything.
    c.admin(
        b"key",
        AdminRequest::TransferLeader {
            peer_id: me.peer_id,
        },
    )
    .expect("transfer");
    let deadline = Instant::now() + T;
    while c.leader_of(b"key", T).map(|(s, _)| s) != Some(4) {
        assert!(Instant::now() < deadline, "store 4 leads");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..300 {
        assert_eq!(c.get(&key(i)).as_deref(), Some(&[b'x'; 200][..]));
    }
    assert_eq!(c.get(b"key-after").as_deref(), Some(&b"z"[..]));
    c.stop_all();
}

#[test]
fn split_region_serves_both_halves() {
    let mut c = Cluster::start(3, 3, 1);
    for i in 0..100 {
        c.put(&key(i), format!("v{i}").as_bytes());
    }
    c.admin(
        b"key",
        AdminRequest::Split {
            split_key: Bytes::from(key(50)),
        },
    )
    .expect("split");
    let (_, left) = c.leader_of(&key(0), T).expect("left leader");
    let (_, right) = c.leader_of(&key(50), T).expect("right leader");
    assert_ne!(left.meta.region_id, right.meta.region_id);
    assert_eq!(left.meta.end_key.as_ref(), key(50).as_slice());
    assert_eq!(right.meta.start_key.as_ref(), key(50).as_slice());
    for i in 100..120 {
        c.put(&key(i), format!("v{i}").as_bytes());
        c.put(&key(i - 100), format!("w{i}").as_bytes());
    }
    for i in 0..120 {
        let want = if i < 20 {
            format!("w{}", i + 100)
        } else {
            format!("v{i}")
        };
        assert_eq!(c.get(&key(i)).as_deref(), Some(want.as_bytes()), "key {i}");
    }
    // Every store has both regions.
    for s in 1..=3 {
        let ids: Vec<u64> = c.regions(s).iter().map(|r| r.meta.region_id).collect();
        assert!(
            ids.contains(&left.meta.region_id) && ids.contains(&right.meta.region_id),
            "store {s}: {ids:?}"
        );
    }
    // And after every store crashed and restarted: the split is replayed from the log (the
    // last checkpoint is older), the new region waiting for its parent's replay.
    for s in 1..=3 {
        c.crash_store(s);
    }
    for s in 1..=3 {
        c.start_store(s);
    }
    for i in 0..120 {
        let want = if i < 20 {
            format!("w{}", i + 100)
        } else {
            format!("v{i}")
        };
        assert_eq!(
            c.get(&key(i)).as_deref(),
            Some(want.as_bytes()),
            "key {i} after restart"
        );
    }
    c.stop_all();
}

fn put_op(k: &[u8], v: &[u8]) -> Op {
    Op::Put {
        key: Bytes::copy_from_slice(k),
        value: Bytes::copy_from_slice(v),
    }
}

#[test]
fn retried_commands_apply_at_most_once() {
    let mut c = Cluster::start(3, 3, 1);
    c.write_as(9, 1, vec![put_op(b"k", b"v0")], T).expect("put");
    let cas = Op::Cas {
        key: Bytes::from_static(b"k"),
        expected: Some(Bytes::from_static(b"v0")),
        new: Some(Bytes::from_static(b"v1")),
    };
    let first = c.write_as(9, 2, vec![cas.clone()], T).expect("cas");
    assert_eq!(
        first,
        ClientResponse::Written(vec![OpResult::Cas {
            succeeded: true,
            previous: Some(Bytes::from_static(b"v0")),
        }])
    );
    c.write_as(9, 3, vec![put_op(b"k", b"v3")], T).expect("put");
    c.write_as(10, 1, vec![put_op(b"k", b"v4")], T)
        .expect("other client");
    // The retry of sequence 3 must not put v3 back over v4; it answers as the first time.
    assert_eq!(
        c.write_as(9, 3, vec![put_op(b"k", b"v3")], T),
        Ok(ClientResponse::Written(vec![OpResult::Done]))
    );
    assert_eq!(c.get(b"k").as_deref(), Some(&b"v4"[..]));
    // An older sequence is refused, not applied.
    assert!(matches!(
        c.write_as(9, 2, vec![cas], T),
        Err(RequestError::AlreadyApplied {
            sequence: 2,
            last: 3,
            ..
        })
    ));
    // After the leader changes, the new leader's replica refuses the retry just the same.
    let (old, _) = c.leader_of(b"k", T).expect("leader");
    c.isolate(old);
    assert_eq!(
        c.write_as(9, 3, vec![put_op(b"k", b"v3")], T),
        Ok(ClientResponse::Written(vec![OpResult::Done]))
    );
    assert_eq!(c.get(b"k").as_deref(), Some(&b"v4"[..]));
    c.heal(old);
    c.stop_all();
}

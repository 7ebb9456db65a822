//! Flow control: appends in flight bounded by count (`max_inflight_msgs`) and by bytes
//! (`max_inflight_bytes`), `max_size_per_msg`, `max_uncommitted_size` back-pressure, the
//! probe/replicate/snapshot progress states, and a snapshot retried after
//! `SnapshotTemporarilyUnavailable`. Uses `harness::Network` with counting filters.

mod harness;

use std::cell::Cell;
use std::rc::Rc;

use harness::*;
use raftlog::tracker::ProgressState;
use raftlog::*;

fn progress_state(net: &mut Network, leader: u64, id: u64) -> ProgressState {
    net.node(leader)
        .status()
        .progress
        .expect("leader")
        .get(id)
        .expect("peer")
        .state
}

/// Counts appends to node 2 and drops node 2's answers.
fn count_appends_to_2(net: &mut Network) -> Rc<Cell<usize>> {
    let n = Rc::new(Cell::new(0));
    let seen = n.clone();
    net.set_filter(move |m| {
        if m.msg_type == MessageType::MsgAppend && m.to == 2 {
            seen.set(seen.get() + 1);
        }
        !(m.from == 2 && m.msg_type == MessageType::MsgAppendResponse)
    });
    n
}

#[test]
fn inflight_messages_bounded_by_count() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.max_inflight_msgs = 3);
    net.campaign(1);
    net.propose(1, b"warm").unwrap();
    assert_eq!(progress_state(&mut net, 1, 2), ProgressState::Replicate);
    let sent = count_appends_to_2(&mut net);
    for i in 0..10u8 {
        net.propose(1, &[i]).unwrap();
    }
    assert_eq!(sent.get(), 3, "appends in flight to a silent follower");
    assert_eq!(
        net.applied_data(3).len(),
        11,
        "the other follower kept replicating"
    );
}

#[test]
fn inflight_messages_bounded_by_bytes() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| {
        c.max_inflight_bytes = 1000;
        c.max_inflight_msgs = 256;
    });
    net.campaign(1);
    net.propose(1, b"warm").unwrap();
    let sent = count_appends_to_2(&mut net);
    for _ in 0..10 {
        net.propose(1, &[7u8; 300]).unwrap();
    }
    assert!(
        (2..=4).contains(&sent.get()),
        "{} appends of ~300 B in flight under a 1000 B cap",
        sent.get()
    );
}

#[test]
fn appends_respect_max_size_per_msg() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.max_size_per_msg = 1000);
    net.campaign(1);
    net.isolate(3);
    for _ in 0..20 {
        net.propose(1, &[1u8; 300]).unwrap();
    }
    net.heal();
    let since = net.delivered.len();
    net.tick(1, 3);
    let appends: Vec<&Message> = net.delivered[since..]
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgAppend && m.to == 3 && !m.entries.is_empty())
        .collect();
    assert!(
        appends.len() >= 6,
        "only {} appends for 20 entries of 300 B",
        appends.len()
    );
    for m in appends {
        let size: u64 = m.entries.iter().map(|e| e.size_bytes()).sum();
        assert!(
            m.entries.len() == 1 || size <= 1000,
            "append of {size} B over max_size_per_msg"
        );
    }
    assert_eq!(
        net.raft(3).raft_log.committed,
        net.raft(1).raft_log.committed
    );
}

#[test]
fn max_uncommitted_size_applies_back_pressure() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.max_uncommitted_size = 1000);
    net.campaign(1);
    net.isolate(2);
    net.isolate(3);
    let mut accepted = 0;
    let mut dropped = false;
    for _ in 0..10 {
        match net.propose(1, &[2u8; 300]) {
            Ok(()) => accepted += 1,
            Err(Error::ProposalDropped) => dropped = true,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(dropped, "no back-pressure");
    assert!(
        (3..=4).contains(&accepted),
        "{accepted} proposals of 300 B under a 1000 B limit"
    );
    net.heal();
    net.tick(1, 3);
    assert_eq!(net.applied_data(1).len(), accepted);
    net.propose(1, &[3u8; 300])
        .expect("accepted again once committed");
}

#[test]
fn unreachable_follower_goes_to_probe_and_probe_sends_one_append() {
    let mut net = elected(3);
    net.propose(1, b"a").unwrap();
    assert_eq!(progress_state(&mut net, 1, 2), ProgressState::Replicate);
    net.node(1).report_unreachable(2);
    assert_eq!(progress_state(&mut net, 1, 2), ProgressState::Probe);
    let sent = count_appends_to_2(&mut net);
    for i in 0..5u8 {
        net.propose(1, &[i]).unwrap();
    }
    assert_eq!(
        sent.get(),
        1,
        "probe state must send one append until answered"
    );
    net.clear_filter();
    net.tick(1, 2);
    assert_eq!(progress_state(&mut net, 1, 2), ProgressState::Replicate);
    assert_eq!(net.applied_data(2).len(), 6);
}

#[test]
fn follower_behind_first_index_goes_through_snapshot_state() {
    let mut net = elected(3);
    net.isolate(3);
    for i in 0..10u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.compact(1);
    // Let the snapshot be sent but not reported: the progress stays in Snapshot.
    net.heal();
    net.drop_types(&[MessageType::MsgSnapshot]);
    net.tick(1, 2);
    assert_eq!(progress_state(&mut net, 1, 3), ProgressState::Snapshot);
    net.node(1).report_snapshot(3, SnapshotStatus::Failure);
    assert_eq!(progress_state(&mut net, 1, 3), ProgressState::Probe);
    net.clear_filter();
    net.tick(1, 3);
    net.node(1).report_snapshot(3, SnapshotStatus::Finish);
    net.tick(1, 3);
    // After the snapshot the follower is probed, and the next acknowledged append replicates.
    net.propose(1, b"after").unwrap();
    assert_eq!(progress_state(&mut net, 1, 3), ProgressState::Replicate);
    assert_eq!(
        net.raft(3).raft_log.committed,
        net.raft(1).raft_log.committed
    );
}

#[test]
fn snapshot_retried_after_temporarily_unavailable() {
    let mut net = elected(3);
    net.isolate(3);
    for i in 0..10u8 {
        net.propose(1, &[i]).unwrap();
    }
    let compacted = net.compact(1);
    net.nodes[&1].store.trigger_snapshot_unavailable();
    net.heal();
    let since = net.delivered.len();
    net.stabilize();
    net.tick(1, 1);
    assert_eq!(
        net.count_delivered(since, MessageType::MsgSnapshot, 1, 3),
        0,
        "the first attempt should find no snapshot"
    );
    // Later heartbeats retry it.
    net.tick(1, 5);
    assert!(
        net.count_delivered(since, MessageType::MsgSnapshot, 1, 3) >= 1,
        "snapshot never retried"
    );
    assert_eq!(
        net.raft(3).raft_log.committed,
        net.raft(1).raft_log.committed
    );
    assert_eq!(
        net.raft(3).raft_log.first_index(),
        compacted + 1,
        "follower did not install the snapshot"
    );
}

#[test]
fn log_temporarily_unavailable_defers_appends_until_ready() {
    let mut net = elected(3);
    net.isolate(3);
    for i in 0..5u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.nodes[&1].store.wl().trigger_log_unavailable(true);
    net.heal();
    net.tick(1, 3);
    assert_eq!(
        net.raft(3).raft_log.last_index(),
        1,
        "entries sent while storage said they were unavailable"
    );
    net.nodes[&1].store.wl().trigger_log_unavailable(false);
    net.tick(1, 3);
    assert_eq!(
        net.applied_data(3).len(),
        5,
        "follower not caught up once entries became available"
    );
}

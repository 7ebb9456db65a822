//! ReadIndex: safe reads are answered only after a heartbeat quorum confirms leadership, at the
//! commit index; lease-based reads need no round trip; followers get the leader's index; a new
//! leader queues reads until its first current-term commit (not dropping them); a retried
//! request never gets an index older than the commit at retry time. Uses `harness::Network`.

mod harness;

use harness::*;
use raftlog::*;

fn reads(net: &Network, id: u64) -> Vec<(Vec<u8>, u64)> {
    net.nodes[&id]
        .read_states
        .iter()
        .map(|r| (r.request_ctx.clone(), r.index))
        .collect()
}

#[test]
fn safe_read_on_leader_returns_commit_index() {
    let mut net = elected(3);
    net.propose(1, b"a").unwrap();
    let commit = net.raft(1).raft_log.committed;
    net.node(1).read_index(b"r1".to_vec());
    net.stabilize();
    assert_eq!(reads(&net, 1), vec![(b"r1".to_vec(), commit)]);
}

#[test]
fn safe_read_needs_heartbeat_quorum() {
    let mut net = elected(3);
    net.isolate(1);
    net.node(1).read_index(b"r".to_vec());
    net.stabilize();
    net.tick(1, 3);
    assert!(
        reads(&net, 1).is_empty(),
        "a leader without quorum answered a safe read"
    );
    net.heal();
    net.tick(1, 2);
    assert_eq!(reads(&net, 1).len(), 1);
}

#[test]
fn safe_read_on_follower_gets_leader_commit() {
    let mut net = elected(3);
    net.propose(1, b"a").unwrap();
    net.node(3).read_index(b"f".to_vec());
    net.stabilize();
    assert_eq!(
        reads(&net, 3),
        vec![(b"f".to_vec(), net.raft(1).raft_log.committed)]
    );
}

#[test]
fn lease_read_answered_without_round_trip() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| {
        c.check_quorum = true;
        c.read_only_option = ReadOnlyOption::LeaseBased;
    });
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    net.drop_types(&[MessageType::MsgHeartbeat, MessageType::MsgHeartbeatResponse]);
    net.node(1).read_index(b"l".to_vec());
    net.stabilize();
    assert_eq!(
        reads(&net, 1),
        vec![(b"l".to_vec(), net.raft(1).raft_log.committed)]
    );
}

#[test]
fn safe_read_with_heartbeats_dropped_is_not_answered() {
    let mut net = elected(3);
    net.drop_types(&[MessageType::MsgHeartbeat, MessageType::MsgHeartbeatResponse]);
    net.node(1).read_index(b"s".to_vec());
    net.stabilize();
    assert!(
        reads(&net, 1).is_empty(),
        "control case: safe reads need the heartbeat round"
    );
}

#[test]
fn read_before_first_commit_of_term_is_queued_not_dropped() {
    let mut net = Network::new(3);
    // Node 1 wins, but its no-op cannot be acknowledged yet.
    net.drop_types(&[MessageType::MsgAppend]);
    net.campaign(1);
    assert_eq!(net.role(1), StateRole::Leader);
    net.tick(1, 1); // heartbeats tell the followers who leads
    assert_eq!(net.leader_of(2), 1);
    assert_eq!(net.raft(1).raft_log.committed, 0);
    net.node(1).read_index(b"q".to_vec());
    net.node(2).read_index(b"qf".to_vec());
    net.stabilize();
    assert!(
        reads(&net, 1).is_empty(),
        "answered before the term's first commit"
    );
    net.clear_filter();
    net.tick(1, 3);
    let noop = 1;
    let r1 = reads(&net, 1);
    assert_eq!(r1.len(), 1, "queued read was dropped: {r1:?}");
    assert!(r1[0].1 >= noop);
    let r2 = reads(&net, 2);
    assert_eq!(r2.len(), 1, "queued follower read was dropped: {r2:?}");
    assert!(r2[0].1 >= noop);
}

#[test]
fn retried_read_never_gets_stale_index() {
    let mut net = elected(3);
    // First attempt: the heartbeat round cannot complete.
    net.drop_types(&[MessageType::MsgHeartbeatResponse]);
    net.node(1).read_index(b"retry".to_vec());
    net.stabilize();
    assert!(reads(&net, 1).is_empty());
    // Writes commit in between (appends still flow).
    net.propose(1, b"w1").unwrap();
    net.propose(1, b"w2").unwrap();
    let commit_at_retry = net.raft(1).raft_log.committed;
    // The client retries the same request; the network heals.
    net.node(1).read_index(b"retry".to_vec());
    net.clear_filter();
    net.stabilize();
    net.tick(1, 2);
    let got = reads(&net, 1);
    assert!(!got.is_empty(), "retried read never answered");
    for (_, index) in got {
        assert!(
            index >= commit_at_retry,
            "read answered at {index}, before the write committed at {commit_at_retry}"
        );
    }
}

#[test]
fn read_on_node_without_leader_is_not_answered() {
    let mut net = Network::new(3);
    net.node(2).read_index(b"n".to_vec());
    net.stabilize();
    assert!(reads(&net, 2).is_empty());
}

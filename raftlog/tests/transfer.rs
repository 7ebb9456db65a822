//! Leadership transfer: to an up-to-date follower (MsgTimeoutNow, the target wins the next
//! term even under the leader lease), to a lagging follower (caught up first), proposals dropped
//! while a transfer is in flight, the transfer aborted after an election timeout, and requests
//! to transfer to self or a learner ignored. Each test drives a `harness::Network`.

mod harness;

use harness::*;
use raftlog::*;

#[test]
fn transfer_to_up_to_date_follower() {
    let mut net = elected(3);
    net.propose(1, b"a").unwrap();
    let term = net.raft(1).term;
    net.node(1).transfer_leader(2);
    net.stabilize();
    assert_eq!(net.role(2), StateRole::Leader);
    assert_eq!(net.role(1), StateRole::Follower);
    assert_eq!(net.raft(2).term, term + 1);
    assert_eq!(net.leader_of(1), 2);
    assert_eq!(net.raft(1).lead_transferee, None);
}

#[test]
fn transfer_overrides_leader_lease() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    net.campaign(1);
    net.tick_all(3);
    net.node(1).transfer_leader(3);
    net.stabilize();
    assert_eq!(
        net.role(3),
        StateRole::Leader,
        "forced campaign was refused by the lease"
    );
}

#[test]
fn transfer_to_lagging_follower_catches_it_up_first() {
    let mut net = elected(3);
    net.isolate(3);
    for i in 0..5u8 {
        net.propose(1, &[i]).unwrap();
    }
    net.heal();
    let since = net.delivered.len();
    net.node(1).transfer_leader(3);
    net.stabilize();
    assert_eq!(net.role(3), StateRole::Leader);
    assert_eq!(net.applied_data(3).len(), 5);
    // MsgTimeoutNow is sent only once the target's log matches.
    let first_timeout = net.delivered[since..]
        .iter()
        .position(|m| m.msg_type == MessageType::MsgTimeoutNow)
        .unwrap();
    let caught_up = net.delivered[since..]
        .iter()
        .position(|m| {
            m.msg_type == MessageType::MsgAppendResponse && m.from == 3 && !m.reject && m.index >= 6
        })
        .unwrap();
    assert!(caught_up < first_timeout);
}

#[test]
fn proposals_dropped_during_transfer() {
    let mut net = elected(3);
    net.isolate(3);
    net.propose(1, b"a").unwrap();
    net.node(1).transfer_leader(3);
    net.stabilize();
    assert_eq!(net.raft(1).lead_transferee, Some(3));
    assert_eq!(net.propose(1, b"b"), Err(Error::ProposalDropped));
}

#[test]
fn transfer_aborts_after_election_timeout() {
    let mut net = elected(3);
    net.isolate(3);
    net.propose(1, b"a").unwrap();
    net.node(1).transfer_leader(3);
    net.stabilize();
    assert_eq!(net.raft(1).lead_transferee, Some(3));
    net.tick(1, 20);
    assert_eq!(net.raft(1).lead_transferee, None, "transfer never aborted");
    assert_eq!(net.role(1), StateRole::Leader);
    net.propose(1, b"b").unwrap();
    assert_eq!(net.applied_data(2), vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn transfer_to_self_or_learner_is_ignored() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![4], |_| {});
    net.campaign(1);
    net.node(1).transfer_leader(1);
    net.stabilize();
    assert_eq!(net.raft(1).lead_transferee, None);
    net.node(1).transfer_leader(4);
    net.stabilize();
    assert_eq!(net.raft(1).lead_transferee, None);
    assert_eq!(net.role(1), StateRole::Leader);
    assert_eq!(net.role(4), StateRole::Follower);
}

#[test]
fn transfer_requested_at_follower_is_forwarded() {
    let mut net = elected(3);
    net.node(2).transfer_leader(2);
    net.stabilize();
    assert_eq!(net.role(2), StateRole::Leader);
}

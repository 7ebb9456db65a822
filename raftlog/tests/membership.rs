//! Membership: learners replicate but never vote or count; single-step add/remove; joint
//! consensus entered and left (auto and explicit); removing the leader is refused until
//! leadership moves; a leader removed by a committed change steps down; conf changes are
//! validated against the last configuration in the log; a 2-voter group shrinks to 1 via
//! transfer-then-remove. Each test drives a `harness::Network`, applying conf changes on commit.

mod harness;

use harness::*;
use raftlog::*;
use ConfChangeType::*;

fn propose_cc(net: &mut Network, id: u64, c: impl Into<ConfChangeI>) -> Result<()> {
    let r = net.node(id).propose_conf_change(vec![], c);
    net.stabilize();
    r
}

#[test]
fn learner_replicates_but_does_not_count_for_commit() {
    let mut net = Network::with_config(vec![1, 2], vec![3], |_| {});
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    assert_eq!(
        net.applied_data(3),
        vec![b"a".to_vec()],
        "learner did not replicate"
    );
    // With voter 2 gone, the learner's ack must not make a quorum.
    net.isolate(2);
    net.propose(1, b"b").unwrap();
    assert_eq!(
        net.raft(3).raft_log.last_index(),
        net.raft(1).raft_log.last_index()
    );
    assert_eq!(
        net.applied_data(1),
        vec![b"a".to_vec()],
        "a learner counted towards the quorum"
    );
}

#[test]
fn learner_vote_is_not_counted() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![4], |_| {});
    net.isolate(3);
    net.cut(1, 2);
    // Node 1 has itself and learner 4 only: not a majority of {1,2,3}.
    net.campaign(1);
    assert_ne!(net.role(1), StateRole::Leader);
}

#[test]
fn add_learner_then_promote() {
    let mut net = elected(3);
    net.add_node(4, |_| {});
    propose_cc(&mut net, 1, cc(AddLearnerNode, 4)).unwrap();
    assert_eq!(net.conf_state(1).learners, vec![4]);
    net.propose(1, b"x").unwrap();
    assert_eq!(net.applied_data(4), vec![b"x".to_vec()]);
    propose_cc(&mut net, 1, cc(AddNode, 4)).unwrap();
    let cs = net.conf_state(1);
    assert_eq!(cs.voters, vec![1, 2, 3, 4]);
    assert!(cs.learners.is_empty());
    assert_eq!(net.conf_state(4).voters, vec![1, 2, 3, 4]);
}

#[test]
fn added_voter_changes_the_quorum() {
    let mut net = elected(3);
    net.add_node(4, |_| {});
    propose_cc(&mut net, 1, cc(AddNode, 4)).unwrap();
    assert_eq!(net.conf_state(1).voters, vec![1, 2, 3, 4]);
    // 2 of 4 is not a majority any more (it was of 3).
    net.isolate(3);
    net.isolate(4);
    let before = net.raft(1).raft_log.committed;
    net.propose(1, b"x").unwrap();
    assert_eq!(
        net.raft(1).raft_log.committed,
        before,
        "committed with 2 of 4 voters"
    );
    net.heal();
    net.tick(1, 2);
    assert_eq!(net.applied_data(4), vec![b"x".to_vec()]);
}

#[test]
fn removed_voter_no_longer_counts() {
    let mut net = elected(3);
    propose_cc(&mut net, 1, cc(RemoveNode, 3)).unwrap();
    assert_eq!(net.conf_state(1).voters, vec![1, 2]);
    assert!(net.node(1).status().progress.unwrap().get(3).is_none());
    // Quorum of {1,2} needs both.
    net.isolate(2);
    let before = net.raft(1).raft_log.committed;
    net.propose(1, b"x").unwrap();
    assert_eq!(net.raft(1).raft_log.committed, before);
}

#[test]
fn joint_change_auto_leaves() {
    let mut net = elected(3);
    net.add_node(4, |_| {});
    net.add_node(5, |_| {});
    let c = cc_v2(
        ConfChangeTransition::Auto,
        &[(AddNode, 4), (AddNode, 5), (RemoveNode, 3)],
    );
    propose_cc(&mut net, 1, c).unwrap();
    net.tick(1, 2);
    let cs = net.conf_state(1);
    assert_eq!(cs.voters, vec![1, 2, 4, 5]);
    assert!(
        cs.voters_outgoing.is_empty(),
        "joint state not left: {cs:?}"
    );
    // The log holds the enter-joint entry and the automatic leave-joint entry.
    let v2: Vec<ConfChangeV2> = net.nodes[&1]
        .applied
        .iter()
        .filter(|e| e.entry_type == EntryType::EntryConfChangeV2)
        .map(|e| ConfChangeV2::decode(&e.data).unwrap())
        .collect();
    assert_eq!(v2.len(), 2);
    assert!(v2[1].changes.is_empty());
    assert_eq!(net.conf_state(4), cs);
}

#[test]
fn joint_change_explicit_stays_joint_until_left() {
    let mut net = elected(3);
    net.add_node(4, |_| {});
    let c = cc_v2(ConfChangeTransition::Explicit, &[(AddNode, 4)]);
    propose_cc(&mut net, 1, c).unwrap();
    net.tick(1, 5);
    let cs = net.conf_state(1);
    assert_eq!(cs.voters, vec![1, 2, 3, 4]);
    assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
    assert!(!cs.auto_leave);
    // In the joint config both majorities are needed: {1,2,3} alone is not enough without
    // a majority of {1,2,3,4} ... and {1,4} is not a majority of the old config.
    net.isolate(2);
    net.isolate(3);
    let before = net.raft(1).raft_log.committed;
    net.propose(1, b"x").unwrap();
    assert_eq!(
        net.raft(1).raft_log.committed,
        before,
        "joint config committed without the old majority"
    );
    net.heal();
    net.tick(1, 2);
    propose_cc(&mut net, 1, ConfChangeV2::default()).unwrap();
    let cs = net.conf_state(1);
    assert_eq!(cs.voters, vec![1, 2, 3, 4]);
    assert!(cs.voters_outgoing.is_empty());
}

#[test]
fn joint_demotion_goes_through_learners_next() {
    let mut net = Network::new(4);
    net.campaign(1);
    let c = cc_v2(ConfChangeTransition::Explicit, &[(AddLearnerNode, 4)]);
    propose_cc(&mut net, 1, c).unwrap();
    let cs = net.conf_state(1);
    assert_eq!(cs.voters_outgoing, vec![1, 2, 3, 4]);
    assert_eq!(cs.learners_next, vec![4]);
    propose_cc(&mut net, 1, ConfChangeV2::default()).unwrap();
    let cs = net.conf_state(1);
    assert_eq!(cs.voters, vec![1, 2, 3]);
    assert_eq!(cs.learners, vec![4]);
    assert!(cs.learners_next.is_empty());
}

#[test]
fn removing_the_leader_is_refused_with_clear_error() {
    let mut net = elected(3);
    let last = net.raft(1).raft_log.last_index();
    let err = propose_cc(&mut net, 1, cc(RemoveNode, 1)).unwrap_err();
    assert!(
        matches!(err, Error::ConfChangeError(_)),
        "unclear error: {err:?}"
    );
    assert!(
        err.to_string().to_lowercase().contains("leader"),
        "error does not say why: {err}"
    );
    assert_eq!(
        net.raft(1).raft_log.last_index(),
        last,
        "refused change reached the log"
    );
    let err = propose_cc(
        &mut net,
        1,
        cc_v2(ConfChangeTransition::Auto, &[(RemoveNode, 1), (AddNode, 4)]),
    )
    .unwrap_err();
    assert!(matches!(err, Error::ConfChangeError(_)), "{err:?}");
    assert_eq!(net.conf_state(1).voters, vec![1, 2, 3]);
}

#[test]
fn leader_removed_by_committed_change_steps_down() {
    let mut net = elected(3);
    // Leader 1 hands over to 2; 2 proposes removing 1, and the entry reaches 1 and 3 but no
    // acknowledgement reaches 2, so it is not committed.
    net.node(1).transfer_leader(2);
    net.stabilize();
    assert_eq!(net.role(2), StateRole::Leader);
    net.set_filter(|m| !(m.msg_type == MessageType::MsgAppendResponse && m.to == 2));
    propose_cc(&mut net, 2, cc(RemoveNode, 1)).unwrap();
    assert_eq!(net.conf_state(2).voters, vec![1, 2, 3]);
    // Node 2 goes away; node 1 wins the next election and commits its log, including the entry
    // that removes it.
    net.clear_filter();
    net.isolate(2);
    for _ in 0..3 {
        if net.role(1) != StateRole::Leader {
            net.campaign(1);
        }
    }
    net.tick(1, 2);
    assert_eq!(
        net.conf_state(1).voters,
        vec![2, 3],
        "removal not applied on node 1"
    );
    assert_ne!(
        net.role(1),
        StateRole::Leader,
        "a leader removed from the configuration kept leading"
    );
    // The remaining voters elect a leader among themselves.
    net.heal();
    net.isolate(1);
    net.tick_all(60);
    assert!([2, 3].iter().any(|id| net.role(*id) == StateRole::Leader));
}

#[test]
fn one_conf_change_at_a_time() {
    let mut net = elected(3);
    net.add_node(4, |_| {});
    net.nodes.get_mut(&1).unwrap().auto_apply = false;
    propose_cc(&mut net, 1, cc(AddLearnerNode, 4)).unwrap();
    let last = net.raft(1).raft_log.last_index();
    let second = propose_cc(&mut net, 1, cc(AddNode, 4));
    assert!(
        second.is_err(),
        "a second conf change was accepted while one is unapplied"
    );
    assert_eq!(net.raft(1).raft_log.last_index(), last);
    net.release_apply(1);
    propose_cc(&mut net, 1, cc(AddNode, 4)).unwrap();
    assert_eq!(net.conf_state(1).voters, vec![1, 2, 3, 4]);
}

#[test]
fn conf_change_validated_against_last_config_in_log() {
    let mut net = elected(3);
    // Leaving a joint config that does not exist is refused at proposal time.
    let last = net.raft(1).raft_log.last_index();
    let err = propose_cc(&mut net, 1, ConfChangeV2::default()).unwrap_err();
    assert!(matches!(err, Error::ConfChangeError(_)), "{err:?}");
    assert_eq!(net.raft(1).raft_log.last_index(), last);
    // Enter an explicit joint config, but hold node 1's apply: the joint config is the last one
    // in the log, not the applied one. Entering again must be refused; leaving must be accepted.
    net.add_node(4, |_| {});
    net.nodes.get_mut(&1).unwrap().auto_apply = false;
    propose_cc(
        &mut net,
        1,
        cc_v2(ConfChangeTransition::Explicit, &[(AddNode, 4)]),
    )
    .unwrap();
    net.release_apply(1);
    let again = propose_cc(
        &mut net,
        1,
        cc_v2(ConfChangeTransition::Explicit, &[(AddNode, 5)]),
    );
    assert!(matches!(again, Err(Error::ConfChangeError(_))), "{again:?}");
    propose_cc(&mut net, 1, ConfChangeV2::default()).unwrap();
    assert!(net.conf_state(1).voters_outgoing.is_empty());
}

#[test]
fn shrink_two_voters_to_one_via_transfer_then_remove() {
    let mut net = Network::new(2);
    net.campaign(1);
    net.propose(1, b"before").unwrap();
    // The operator wants node 1 gone; it leads, so removing it directly is refused.
    assert!(propose_cc(&mut net, 1, cc(RemoveNode, 1)).is_err());
    net.node(1).transfer_leader(2);
    net.stabilize();
    assert_eq!(net.role(2), StateRole::Leader);
    propose_cc(&mut net, 2, cc(RemoveNode, 1)).unwrap();
    assert_eq!(net.conf_state(2).voters, vec![2]);
    // Node 2 alone now commits, even with node 1 gone for good.
    net.isolate(1);
    net.propose(2, b"after").unwrap();
    assert_eq!(
        net.applied_data(2),
        vec![b"before".to_vec(), b"after".to_vec()]
    );
    net.tick(2, 30);
    assert_eq!(net.role(2), StateRole::Leader);
}

#[test]
fn new_node_catches_up_from_snapshot() {
    let mut net = elected(3);
    net.add_node(4, |_| {});
    net.isolate(4);
    propose_cc(&mut net, 1, cc(AddLearnerNode, 4)).unwrap();
    for i in 0..10u8 {
        net.propose(1, &[i]).unwrap();
    }
    // The snapshot includes learner 4 in its configuration.
    let compacted = net.compact(1);
    net.heal();
    let since = net.delivered.len();
    net.tick(1, 3);
    assert!(net.count_delivered(since, MessageType::MsgSnapshot, 1, 4) >= 1);
    assert_eq!(
        net.raft(4).raft_log.committed,
        net.raft(1).raft_log.committed
    );
    assert_eq!(net.raft(4).raft_log.first_index(), compacted + 1);
    assert_eq!(net.conf_state(4).learners, vec![4]);
}

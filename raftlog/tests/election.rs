//! Leader election: randomized, seeded timeouts; one vote per term; the election restriction
//! (Raft §5.4.1); pre-vote; check-quorum; the leader lease. Each test drives a `harness::Network`
//! of RawNodes and asserts on roles, terms and votes.

mod harness;

use harness::*;
use raftlog::*;

#[test]
fn single_node_elects_itself_after_timeout() {
    let mut net = Network::new(1);
    assert_eq!(net.role(1), StateRole::Follower);
    net.tick(1, 20);
    assert_eq!(net.role(1), StateRole::Leader);
    assert_eq!(net.raft(1).term, 1);
}

#[test]
fn campaign_wins_majority_and_followers_learn_leader() {
    let mut net = Network::new(3);
    net.campaign(1);
    assert_eq!(net.role(1), StateRole::Leader);
    for id in [2, 3] {
        assert_eq!(net.role(id), StateRole::Follower);
        assert_eq!(net.leader_of(id), 1);
        assert_eq!(net.raft(id).term, 1);
        assert_eq!(net.raft(id).vote, 1);
    }
    // The leader's no-op of its term commits everywhere.
    for id in 1..=3 {
        assert_eq!(net.raft(id).raft_log.committed, 1);
    }
}

/// Ticks until `id` starts campaigning; returns the tick count.
fn ticks_until_campaign(seed: u64) -> usize {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.rng_seed = seed);
    net.isolate(1);
    for t in 1..=100 {
        net.tick(1, 1);
        if net.raft(1).term > 0 {
            return t;
        }
    }
    panic!("never campaigned");
}

#[test]
fn election_timeout_is_randomized_in_range_and_seeded() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 1..=30 {
        let t = ticks_until_campaign(seed);
        assert!(
            (10..20).contains(&t),
            "timeout {t} outside [election_tick, 2*election_tick)"
        );
        assert_eq!(
            t,
            ticks_until_campaign(seed),
            "same seed must give the same timeout"
        );
        seen.insert(t);
    }
    assert!(seen.len() >= 3, "timeouts are not randomized: {seen:?}");
}

#[test]
fn grants_one_vote_per_term() {
    let mut net = Network::new(3);
    let vote = |from| Message {
        log_term: 0,
        index: 0,
        ..msg(MessageType::MsgRequestVote, from, 1, 1)
    };
    net.deliver(vote(2));
    net.deliver(vote(3));
    let mut rd = net.node(1).ready();
    let resps: Vec<Message> = rd
        .take_messages()
        .into_iter()
        .chain(rd.take_persisted_messages())
        .collect();
    let granted: Vec<u64> = resps
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgRequestVoteResponse && !m.reject)
        .map(|m| m.to)
        .collect();
    let rejected: Vec<u64> = resps
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgRequestVoteResponse && m.reject)
        .map(|m| m.to)
        .collect();
    assert_eq!(granted, vec![2]);
    assert_eq!(rejected, vec![3]);
    assert_eq!(net.raft(1).vote, 2);
}

#[test]
fn candidate_with_stale_log_cannot_win() {
    let mut net = elected(3);
    net.isolate(3);
    net.propose(1, b"a").unwrap();
    net.propose(1, b"b").unwrap();
    net.heal();
    // Node 3 lacks committed entries: voters with longer logs must refuse it.
    net.campaign(3);
    assert_ne!(net.role(3), StateRole::Leader);
    net.tick_all(40);
    let leader = (1..=3)
        .find(|id| net.role(*id) == StateRole::Leader)
        .expect("a leader");
    assert_ne!(leader, 3, "the stale node won an election");
    assert_eq!(net.applied_data(leader), vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn candidate_steps_down_on_append_from_leader_of_its_term() {
    let mut net = elected(3);
    let term = net.raft(1).term;
    net.isolate(2);
    net.node(2).campaign().unwrap();
    net.stabilize();
    assert_eq!(net.role(2), StateRole::Candidate);
    let t2 = net.raft(2).term;
    // A heartbeat from a leader with the candidate's term makes it a follower.
    net.heal();
    net.send(vec![Message {
        commit: 0,
        ..msg(MessageType::MsgHeartbeat, 1, 2, t2)
    }]);
    assert_eq!(net.role(2), StateRole::Follower);
    assert!(t2 > term);
}

#[test]
fn without_pre_vote_an_isolated_node_inflates_its_term() {
    let mut net = elected(3);
    net.isolate(3);
    net.tick(3, 50);
    assert!(
        net.raft(3).term > net.raft(1).term,
        "control case: the term grows without pre-vote"
    );
}

#[test]
fn pre_vote_keeps_isolated_node_term_and_leader_undisturbed() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.pre_vote = true);
    net.campaign(1);
    assert_eq!(net.role(1), StateRole::Leader);
    let term = net.raft(1).term;
    net.isolate(3);
    net.tick(3, 50);
    assert_eq!(
        net.raft(3).term,
        term,
        "pre-candidate must not bump its term"
    );
    assert_eq!(net.role(3), StateRole::PreCandidate);
    net.heal();
    net.tick_all(5);
    assert_eq!(
        net.role(1),
        StateRole::Leader,
        "rejoining node disrupted the leader"
    );
    assert_eq!(net.raft(1).term, term);
    assert_eq!(net.leader_of(3), 1);
}

#[test]
fn pre_vote_wins_when_leader_gone() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.pre_vote = true);
    net.campaign(1);
    net.isolate(1);
    net.tick_all(50);
    let leader = [2, 3]
        .into_iter()
        .find(|id| net.role(*id) == StateRole::Leader);
    assert!(
        leader.is_some(),
        "pre-vote must not prevent a real election"
    );
}

#[test]
fn check_quorum_leader_steps_down_without_quorum() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.check_quorum = true);
    net.campaign(1);
    assert_eq!(net.role(1), StateRole::Leader);
    net.isolate(1);
    net.tick(1, 25);
    assert_ne!(
        net.role(1),
        StateRole::Leader,
        "leader without quorum kept leading"
    );
}

#[test]
fn check_quorum_leader_keeps_leading_with_quorum() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.check_quorum = true);
    net.campaign(1);
    net.isolate(3);
    net.tick(1, 50);
    assert_eq!(net.role(1), StateRole::Leader);
}

#[test]
fn leader_lease_refuses_votes_while_leader_is_heard() {
    let mut net = Network::with_config(vec![1, 2, 3], vec![], |c| c.check_quorum = true);
    net.campaign(1);
    let term = net.raft(1).term;
    // Node 3 campaigns with a higher term; 1 and 2 heard the leader recently and must not vote.
    net.node(3).campaign().unwrap();
    net.stabilize();
    assert_ne!(net.role(3), StateRole::Leader);
    assert_eq!(
        net.role(1),
        StateRole::Leader,
        "the lease did not protect the leader"
    );
    assert_eq!(net.raft(2).vote, 1);
    assert_eq!(net.raft(2).term, term);
}

#[test]
fn without_check_quorum_a_higher_term_candidate_deposes_the_leader() {
    let mut net = elected(3);
    net.node(3).campaign().unwrap();
    net.stabilize();
    assert_ne!(
        net.raft(1).term,
        1,
        "control case: no lease without check-quorum"
    );
}

#[test]
fn learner_never_campaigns() {
    let mut net = Network::with_config(vec![1], vec![2], |_| {});
    net.isolate(2);
    net.tick(2, 100);
    assert_eq!(net.raft(2).term, 0);
    assert_eq!(net.role(2), StateRole::Follower);
}

#[test]
fn config_validation_rejects_bad_values() {
    let mut c = config(1);
    c.heartbeat_tick = 10;
    assert!(c.validate().is_err());
    assert!(RawNode::new(
        &c,
        MemStorage::new_with_conf_state(ConfState::from_voters(vec![1]))
    )
    .is_err());
    let mut c = config(0);
    c.id = 0;
    assert!(c.validate().is_err());
    let mut c = config(1);
    c.read_only_option = ReadOnlyOption::LeaseBased;
    c.check_quorum = false;
    assert!(matches!(c.validate(), Err(Error::ConfigInvalid(_))));
}

#[test]
fn restart_restores_term_vote_and_log() {
    let mut net = elected(3);
    net.propose(1, b"x").unwrap();
    let store = net.nodes[&2].store.clone();
    let (term, last) = (net.raft(2).term, net.raft(2).raft_log.last_index());
    let applied = net.raft(2).raft_log.applied;
    let mut c = config(2);
    c.applied = applied;
    let raw = RawNode::new(&c, store).unwrap();
    assert_eq!(raw.raft.term, term);
    assert_eq!(raw.raft.vote, 1);
    assert_eq!(raw.raft.raft_log.last_index(), last);
    assert_eq!(raw.raft.raft_log.committed, last);
}

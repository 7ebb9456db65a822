//! Log replication: proposals commit and apply everywhere, followers forward proposals,
//! proposals are dropped without a leader, conflicting follower suffixes are replaced, rejects
//! backtrack fast, and a follower behind the leader's first index is caught up by a snapshot.
//! Each test drives a `harness::Network` and checks logs, commits and applied data.

mod harness;

use harness::*;
use raftlog::*;

#[test]
fn proposal_commits_and_applies_everywhere() {
    let mut net = elected(3);
    net.propose(1, b"a").unwrap();
    net.propose(1, b"b").unwrap();
    for id in 1..=3 {
        assert_eq!(
            net.applied_data(id),
            vec![b"a".to_vec(), b"b".to_vec()],
            "node {id}"
        );
        assert_eq!(net.raft(id).raft_log.committed, 3);
    }
}

#[test]
fn follower_forwards_proposal_to_leader() {
    let mut net = elected(3);
    net.propose(2, b"via follower").unwrap();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id), vec![b"via follower".to_vec()]);
    }
}

#[test]
fn proposal_dropped_without_leader() {
    let mut net = Network::new(3);
    assert_eq!(net.propose(1, b"x"), Err(Error::ProposalDropped));
    assert_eq!(net.raft(1).raft_log.last_index(), 0);
}

#[test]
fn proposal_on_follower_dropped_when_leader_unknown() {
    let mut net = Network::new(3);
    net.node(2).tick();
    assert_eq!(net.propose(2, b"x"), Err(Error::ProposalDropped));
}

#[test]
fn minority_cannot_commit() {
    let mut net = elected(3);
    net.isolate(2);
    net.isolate(3);
    net.propose(1, b"lonely").unwrap();
    assert_eq!(
        net.raft(1).raft_log.committed,
        1,
        "a leader alone committed"
    );
    assert!(net.applied_data(1).is_empty());
    net.heal();
    net.tick(1, 2);
    assert_eq!(net.applied_data(2), vec![b"lonely".to_vec()]);
}

#[test]
fn follower_conflicting_suffix_is_replaced() {
    let mut net = elected(3);
    net.isolate(1);
    // The old leader appends entries no one else gets.
    for i in 0..3u8 {
        net.node(1).propose(vec![], vec![b'o', i]).unwrap();
    }
    net.stabilize();
    net.tick_all(40);
    let leader = [2, 3]
        .into_iter()
        .find(|id| net.role(*id) == StateRole::Leader)
        .expect("new leader");
    net.propose(leader, b"new").unwrap();
    net.heal();
    net.tick(leader, 3);
    assert_eq!(net.log_terms(1), net.log_terms(leader));
    assert_eq!(net.applied_data(1), vec![b"new".to_vec()]);
}

#[test]
fn reject_backtracks_fast_over_long_divergent_suffix() {
    let mut net = elected(3);
    // Node 3 is cut off; node 1 appends 50 uncommitted entries of term 1 alone.
    net.isolate(1);
    for i in 0..50u8 {
        net.node(1).propose(vec![], vec![i]).unwrap();
    }
    net.stabilize();
    // Node 2 takes over in a later term; node 1 rejoins as a follower.
    net.tick_all(40);
    let leader = [2, 3]
        .into_iter()
        .find(|id| net.role(*id) == StateRole::Leader)
        .expect("new leader");
    for i in 0..50u8 {
        net.node(leader).propose(vec![], vec![100, i]).unwrap();
    }
    net.stabilize();
    net.heal();
    let since = net.delivered.len();
    net.tick(leader, 3);
    let rejects = net.delivered[since..]
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgAppendResponse && m.from == 1 && m.reject)
        .count();
    assert!(
        rejects <= 3,
        "{rejects} rejects to back over 50 conflicting entries: no fast backtracking"
    );
    assert_eq!(net.log_terms(1), net.log_terms(leader));
}

#[test]
fn follower_behind_compacted_log_gets_snapshot() {
    let mut net = elected(3);
    net.isolate(3);
    for i in 0..20u8 {
        net.propose(1, &[i]).unwrap();
    }
    let compacted = net.compact(1);
    assert!(compacted >= 21);
    net.heal();
    let since = net.delivered.len();
    net.tick(1, 3);
    assert!(
        net.count_delivered(since, MessageType::MsgSnapshot, 1, 3) >= 1,
        "no snapshot sent"
    );
    assert_eq!(
        net.raft(3).raft_log.committed,
        net.raft(1).raft_log.committed
    );
    assert_eq!(net.nodes[&3].store.first_index().unwrap(), compacted + 1);
    net.propose(1, b"after").unwrap();
    assert_eq!(net.applied_data(3), vec![b"after".to_vec()]);
}

#[test]
fn heartbeat_commit_never_passes_follower_log() {
    let mut net = elected(3);
    // Node 3 gets heartbeats but no appends: the commit it learns must stay within its log.
    net.set_filter(|m| !(m.msg_type == MessageType::MsgAppend && m.to == 3));
    for i in 0..3u8 {
        net.propose(1, &[i]).unwrap();
    }
    let since = net.delivered.len();
    net.tick(1, 3);
    let hb: Vec<u64> = net.delivered[since..]
        .iter()
        .filter(|m| m.msg_type == MessageType::MsgHeartbeat && m.to == 3)
        .map(|m| m.commit)
        .collect();
    assert!(!hb.is_empty());
    assert!(
        hb.iter().all(|c| *c <= 1),
        "heartbeat commits {hb:?} beyond the follower's log (last index 1)"
    );
    assert_eq!(net.raft(3).raft_log.committed, 1);
    assert_eq!(net.raft(1).raft_log.committed, 4);
}

#[test]
fn append_with_mismatched_previous_term_is_rejected() {
    let mut net = elected(3);
    let term = net.raft(1).term;
    let m = Message {
        index: 1,
        log_term: 7, // node 2 has term 1 at index 1
        entries: vec![Entry::new(term, 2, b"x".to_vec())],
        ..msg(MessageType::MsgAppend, 1, 2, term)
    };
    net.deliver(m);
    let mut rd = net.node(2).ready();
    let resp: Vec<Message> = rd
        .take_messages()
        .into_iter()
        .chain(rd.take_persisted_messages())
        .collect();
    assert!(
        resp.iter()
            .any(|m| m.msg_type == MessageType::MsgAppendResponse && m.reject),
        "{resp:?}"
    );
    assert_eq!(net.raft(2).raft_log.last_index(), 1);
}

#[test]
fn stale_term_append_is_not_accepted() {
    let mut net = elected(3);
    net.isolate(1);
    net.tick_all(40);
    let new_term = net.raft(2).term;
    assert!(new_term > 1);
    let before = net.raft(2).raft_log.last_index();
    net.deliver(Message {
        index: before,
        log_term: 1,
        entries: vec![Entry::new(1, before + 1, b"old".to_vec())],
        ..msg(MessageType::MsgAppend, 1, 2, 1)
    });
    net.stabilize();
    assert_eq!(net.raft(2).term, new_term);
    assert!(net.raft(2).raft_log.last_index() == before || net.log_terms(2).last() != Some(&1));
}

#[test]
fn max_committed_size_per_ready_splits_committed_entries() {
    let mut net = Network::with_config(vec![1], vec![], |c| c.max_committed_size_per_ready = 600);
    net.campaign(1);
    for i in 0..10u8 {
        net.node(1).propose(vec![], vec![i; 200]).unwrap();
    }
    let mut biggest = 0;
    for _ in 0..100 {
        let node = net.nodes.get_mut(&1).unwrap();
        if !node.raw.has_ready() {
            break;
        }
        let rd = node.raw.ready();
        biggest = biggest.max(rd.committed_entries().len());
        node.store.wl().append(rd.entries()).unwrap();
        if let Some(hs) = rd.hs() {
            node.store.wl().set_hard_state(*hs);
        }
        let light = node.raw.advance(rd);
        biggest = biggest.max(light.committed_entries().len());
        node.raw.advance_apply();
    }
    assert!(
        biggest <= 3,
        "{biggest} committed entries of 200 B in one Ready over a 600 B cap"
    );
    assert_eq!(net.raft(1).raft_log.applied, 11);
}

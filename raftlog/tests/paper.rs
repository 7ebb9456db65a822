//! Scenarios from the Raft paper: Figure 7 (a new leader reconciles every kind of divergent
//! follower log to its own) and Figure 8 (a leader must not commit an entry of an earlier term
//! by counting replicas, because another leader can still overwrite it). Logs are built directly
//! in MemStorage, then driven through RawNodes in a `harness::Network`.

mod harness;

use harness::*;
use raftlog::*;

const LEADER_LOG: &[u64] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];

/// Figure 7: the leader of term 8 (node 1), a follower with a log from the figure (node 2), and
/// a third node holding the leader's log so the election can be won.
fn figure7_case(follower_log: &[u64]) {
    let conf = ConfState::from_voters(vec![1, 2, 3]);
    let mut net = Network::with_config(vec![], vec![], |_| {});
    net.boot_conf = conf.clone();
    net.add_node_with_store(1, store_with_log(&conf, LEADER_LOG, 7), |_| {});
    net.add_node_with_store(2, store_with_log(&conf, follower_log, 7), |_| {});
    net.add_node_with_store(3, store_with_log(&conf, LEADER_LOG, 7), |_| {});
    net.campaign(1);
    assert_eq!(net.role(1), StateRole::Leader, "case {follower_log:?}");
    assert_eq!(net.raft(1).term, 8);
    net.tick(1, 3);
    let mut want = LEADER_LOG.to_vec();
    want.push(8); // the new leader's no-op
    assert_eq!(
        net.log_terms(2),
        want,
        "follower {follower_log:?} not reconciled"
    );
    assert_eq!(net.raft(2).raft_log.committed, 11);
}

#[test]
fn figure7_a_missing_entries() {
    figure7_case(&[1, 1, 1, 4, 4, 5, 5, 6, 6]);
}

#[test]
fn figure7_b_missing_many() {
    figure7_case(&[1, 1, 1, 4]);
}

#[test]
fn figure7_c_extra_uncommitted_entry() {
    figure7_case(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]);
}

#[test]
fn figure7_d_extra_entries_of_later_term() {
    figure7_case(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]);
}

#[test]
fn figure7_e_missing_and_extra() {
    figure7_case(&[1, 1, 1, 4, 4, 4, 4]);
}

#[test]
fn figure7_f_divergent_terms() {
    figure7_case(&[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]);
}

/// Figure 8 setup: five nodes, index 1 (term 1) everywhere; S1 and S2 hold index 2 of term 2,
/// S5 holds index 2 of term 3; every node is in term 3.
fn figure8_network() -> Network {
    let conf = ConfState::from_voters(vec![1, 2, 3, 4, 5]);
    let mut net = Network::with_config(vec![], vec![], |_| {});
    net.boot_conf = conf.clone();
    let logs: [&[u64]; 5] = [&[1, 2], &[1, 2], &[1], &[1], &[1, 3]];
    for (i, log) in logs.iter().enumerate() {
        let store = store_with_log(&conf, log, 3);
        store.wl().mut_hard_state().commit = 1;
        net.add_node_with_store(i as u64 + 1, store, |c| c.applied = 1);
    }
    net
}

#[test]
fn figure8_old_term_entry_on_majority_is_not_committed() {
    let mut net = figure8_network();
    // S1 wins term 4 with S2, S3, S4, but only index 2 (term 2) may reach followers: strip the
    // leader's own term-4 entries from every append, as in Figure 8 (c).
    net.set_filter(|m| {
        if m.msg_type == MessageType::MsgAppend {
            m.entries.retain(|e| e.term < 4);
        }
        true
    });
    net.cut(1, 5);
    net.campaign(1);
    assert_eq!(net.role(1), StateRole::Leader);
    assert_eq!(net.raft(1).term, 4);
    net.tick(1, 3);
    assert_eq!(
        net.raft(3).log_terms_at(2),
        2,
        "S3 should now hold index 2 of term 2"
    );
    assert_eq!(
        net.raft(1).raft_log.committed,
        1,
        "entry 2 of term 2 committed by counting replicas"
    );
    // (d): S1 crashes; S5 is elected with S2, S3, S4 and overwrites index 2 with its term 3.
    net.heal();
    net.isolate(1);
    for _ in 0..3 {
        if net.role(5) != StateRole::Leader {
            net.campaign(5);
        }
    }
    assert_eq!(net.role(5), StateRole::Leader);
    net.tick(5, 3);
    for id in 2..=5 {
        assert_eq!(net.raft(id).log_terms_at(2), 3, "node {id}");
        assert!(net.raft(id).raft_log.committed >= 2);
    }
}

#[test]
fn figure8_entry_commits_with_current_term_entry() {
    let mut net = figure8_network();
    net.cut(1, 5);
    net.campaign(1);
    assert_eq!(net.raft(1).term, 4);
    net.tick(1, 3);
    // (e): once the term-4 entry is on a majority, it and index 2 are committed.
    assert_eq!(net.raft(1).raft_log.committed, 3);
    for id in 1..=4 {
        assert_eq!(net.raft(id).log_terms_at(2), 2);
    }
}

trait TermAt {
    fn log_terms_at(&self, i: u64) -> u64;
}

impl TermAt for Raft<MemStorage> {
    fn log_terms_at(&self, i: u64) -> u64 {
        self.raft_log.term(i).unwrap_or(0)
    }
}

#[test]
fn follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    let mut net = elected(3);
    let term = net.raft(1).term;
    // An append carrying entries up to 3 with leader commit 10: the follower commits only to 3.
    let m = Message {
        index: 1,
        log_term: 1,
        commit: 10,
        entries: vec![
            Entry::new(term, 2, b"a".to_vec()),
            Entry::new(term, 3, b"b".to_vec()),
        ],
        ..msg(MessageType::MsgAppend, 1, 2, term)
    };
    net.deliver(m);
    assert_eq!(net.raft(2).raft_log.committed, 3);
}

#[test]
fn voter_refuses_candidate_with_lower_last_term_even_if_longer() {
    // §5.4.1: a log is more up to date by last term first, then length.
    let conf = ConfState::from_voters(vec![1, 2, 3]);
    let mut net = Network::with_config(vec![], vec![], |_| {});
    net.boot_conf = conf.clone();
    net.add_node_with_store(1, store_with_log(&conf, &[1, 1, 1, 1, 1], 3), |_| {});
    net.add_node_with_store(2, store_with_log(&conf, &[1, 2], 3), |_| {});
    net.add_node_with_store(3, store_with_log(&conf, &[1, 2], 3), |_| {});
    net.campaign(1);
    assert_ne!(net.role(1), StateRole::Leader);
    net.campaign(2);
    assert_eq!(net.role(2), StateRole::Leader);
}

//! Unit tests of the core's internals that the RawNode-level tests in `tests/` cannot see
//! directly: which queue a message lands in (send now vs after persisting), answers to stale
//! terms, priority votes, the unapplied-conf-change campaign guard, append batching, and the
//! commit spreading that never overruns a silent follower's window.

use super::*;
use crate::storage::MemStorage;
use crate::types::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};

fn raft(id: u64, voters: &[u64], tweak: impl Fn(&mut Config)) -> Raft<MemStorage> {
    let store = MemStorage::new_with_conf_state(ConfState::from_voters(voters.to_vec()));
    let mut c = Config {
        rng_seed: 1,
        pre_vote: false,
        check_quorum: false,
        ..Config::new(id)
    };
    tweak(&mut c);
    Raft::new(&c, store).unwrap()
}

/// Makes `r` leader of term 1 with every peer's entries (the no-op) acknowledged.
fn leader(voters: &[u64], tweak: impl Fn(&mut Config)) -> Raft<MemStorage> {
    let mut r = raft(1, voters, tweak);
    r.become_candidate();
    r.become_leader();
    let (idx, term) = (r.raft_log.last_index(), r.term);
    let ents = r.raft_log.unstable_entries().to_vec();
    r.raft_log.mut_store().wl().append(&ents).unwrap();
    r.on_persist_entries(idx, term);
    for &p in &voters[1..] {
        let m = Message {
            msg_type: MessageType::MsgAppendResponse,
            from: p,
            to: 1,
            term,
            index: idx,
            ..Default::default()
        };
        r.step(m).unwrap();
    }
    r.msgs.clear();
    r.msgs_after_persist.clear();
    r
}

#[test]
fn leader_appends_go_out_at_once_follower_answers_after_persisting() {
    let mut l = leader(&[1, 2, 3], |_| {});
    l.step(Message {
        msg_type: MessageType::MsgPropose,
        from: 1,
        entries: vec![Entry::new(0, 0, b"x".to_vec())],
        ..Default::default()
    })
    .unwrap();
    assert!(l.msgs.iter().all(|m| m.msg_type == MessageType::MsgAppend) && l.msgs.len() == 2);
    assert!(l.msgs_after_persist.is_empty());

    let mut f = raft(2, &[1, 2, 3], |_| {});
    let append = l.msgs[0].clone();
    f.step(Message { to: 2, ..append }).unwrap();
    assert!(f.msgs.is_empty(), "a follower's answer promises durability");
    assert_eq!(
        f.msgs_after_persist[0].msg_type,
        MessageType::MsgAppendResponse
    );
}

#[test]
fn stale_append_is_answered_with_the_newer_term() {
    let mut f = raft(2, &[1, 2, 3], |c| c.check_quorum = true);
    f.become_follower(5, 3);
    f.step(Message {
        msg_type: MessageType::MsgAppend,
        from: 1,
        to: 2,
        term: 4,
        ..Default::default()
    })
    .unwrap();
    let resp = &f.msgs_after_persist[0];
    assert_eq!(
        (resp.msg_type, resp.term, resp.to),
        (MessageType::MsgAppendResponse, 5, 1)
    );
}

#[test]
fn equal_logs_refuse_votes_to_lower_priority() {
    let mut r = raft(2, &[1, 2, 3], |c| c.priority = 5);
    let vote = |prio| Message {
        msg_type: MessageType::MsgRequestVote,
        from: 1,
        to: 2,
        term: 1,
        priority: prio,
        ..Default::default()
    };
    r.step(vote(1)).unwrap();
    assert!(r.msgs_after_persist.pop().unwrap().reject);
    r.step(vote(5)).unwrap();
    assert!(!r.msgs_after_persist.pop().unwrap().reject);
    assert_eq!(r.vote, 1);
}

/// `r` with a conf change entry at index 1 of term 1 in its (empty) log, not committed.
fn with_conf_change_at_1(mut r: Raft<MemStorage>) -> Raft<MemStorage> {
    let cc = Entry {
        entry_type: EntryType::EntryConfChangeV2,
        term: 1,
        index: 1,
        ..Default::default()
    };
    r.raft_log.mut_store().wl().append(&[cc]).unwrap();
    r.raft_log = crate::raft_log::RaftLog::new(r.raft_log.store.clone());
    r
}

/// Node `id` of `[1, 2, 3]` with a conf change committed at index 1 and not yet applied.
fn with_unapplied_conf_change(id: u64) -> Raft<MemStorage> {
    let mut r = with_conf_change_at_1(raft(id, &[1, 2, 3], |_| {}));
    r.raft_log.commit_to(1);
    r
}

#[test]
fn committed_unapplied_conf_change_blocks_campaign() {
    let mut r = with_unapplied_conf_change(1);
    r.hup(false);
    assert_eq!(r.state, StateRole::Follower);
    r.commit_apply(1);
    r.hup(false);
    assert_eq!(r.state, StateRole::Candidate);
}

/// Follower 2 of `[1, 2, 3]` in term 1 under leader 1, with a conf change committed at index 1
/// and not yet applied.
fn follower_with_unapplied_conf_change() -> Raft<MemStorage> {
    let mut r = with_unapplied_conf_change(2);
    r.become_follower(1, 1);
    r
}

fn timeout_now(term: u64) -> Message {
    Message {
        msg_type: MessageType::MsgTimeoutNow,
        from: 1,
        to: 2,
        term,
        ..Default::default()
    }
}

/// Whether `r` asked for votes for a leadership transfer.
fn asked_transfer_votes(r: &Raft<MemStorage>) -> bool {
    r.msgs.iter().chain(&r.msgs_after_persist).any(|m| {
        m.msg_type == MessageType::MsgRequestVote && m.context.as_ref() == CAMPAIGN_TRANSFER
    })
}

#[test]
fn transfer_asked_before_a_conf_change_is_applied_campaigns_once_it_is() {
    let mut r = follower_with_unapplied_conf_change();
    r.step(timeout_now(1)).unwrap();
    assert_eq!(
        r.state,
        StateRole::Follower,
        "campaigned with a conf change unapplied"
    );
    r.commit_apply(1);
    assert_eq!(r.state, StateRole::Candidate);
    assert_eq!(r.term, 2);
    assert!(asked_transfer_votes(&r), "{:?}", r.msgs_after_persist);
}

#[test]
fn a_deferred_transfer_campaign_lapses_after_an_election_timeout_or_a_new_term() {
    // Lapsed: the leader gave the transfer up after an election timeout.
    let mut r = follower_with_unapplied_conf_change();
    r.step(timeout_now(1)).unwrap();
    for _ in 0..r.election_timeout {
        r.tick();
    }
    r.commit_apply(1);
    assert_eq!(r.state, StateRole::Follower);
    assert!(!asked_transfer_votes(&r));

    // A new term: whatever was asked in the old one no longer holds.
    let mut r = follower_with_unapplied_conf_change();
    r.step(timeout_now(1)).unwrap();
    r.become_follower(2, 3);
    r.commit_apply(1);
    assert_eq!(r.state, StateRole::Follower);
    assert_eq!(r.term, 2);

    // Not asked at all: applying alone never starts a campaign.
    let mut r = follower_with_unapplied_conf_change();
    r.commit_apply(1);
    assert_eq!(r.state, StateRole::Follower);
}

#[test]
fn a_learner_asked_to_campaign_before_its_promotion_is_known_committed_campaigns_once_applied() {
    // Learner 2 of voters [1, 3] holds its promotion at index 1, not yet known committed.
    let store =
        MemStorage::new_with_conf_state(ConfState::from_voters_learners(vec![1, 3], vec![2]));
    let c = Config {
        rng_seed: 1,
        pre_vote: false,
        check_quorum: false,
        ..Config::new(2)
    };
    let mut r = with_conf_change_at_1(Raft::new(&c, store).unwrap());
    r.become_follower(1, 1);
    r.step(timeout_now(1)).unwrap();
    assert_eq!(r.state, StateRole::Follower, "a learner campaigned");
    // The commit reaches it, then the promotion is applied.
    r.raft_log.commit_to(1);
    r.apply_conf_change(&ConfChangeV2 {
        changes: vec![ConfChangeSingle {
            change_type: ConfChangeType::AddNode,
            node_id: 2,
        }],
        ..Default::default()
    })
    .unwrap();
    r.commit_apply(1);
    assert_eq!(r.state, StateRole::Candidate);
    assert!(asked_transfer_votes(&r), "{:?}", r.msgs_after_persist);
}

#[test]
fn batch_append_merges_consecutive_appends_to_a_peer() {
    let mut l = leader(&[1, 2], |c| c.batch_append = true);
    for d in [b"a", b"b", b"c"] {
        l.step(Message {
            msg_type: MessageType::MsgPropose,
            from: 1,
            entries: vec![Entry::new(0, 0, d.to_vec())],
            ..Default::default()
        })
        .unwrap();
    }
    assert_eq!(l.msgs.len(), 1);
    assert_eq!(l.msgs[0].entries.len(), 3);
}

#[test]
fn commit_is_not_broadcast_to_a_follower_with_appends_in_flight() {
    let mut l = leader(&[1, 2, 3], |_| {});
    let prop = Message {
        msg_type: MessageType::MsgPropose,
        from: 1,
        entries: vec![Entry::new(0, 0, b"x".to_vec())],
        ..Default::default()
    };
    l.step(prop).unwrap();
    let (idx, term) = (l.raft_log.last_index(), l.term);
    let ents = l.raft_log.unstable_entries().to_vec();
    l.raft_log.mut_store().wl().append(&ents).unwrap();
    l.on_persist_entries(idx, term);
    l.msgs.clear();
    let ack = Message {
        msg_type: MessageType::MsgAppendResponse,
        from: 2,
        to: 1,
        term,
        index: idx,
        commit: idx - 1,
        ..Default::default()
    };
    l.step(ack.clone()).unwrap();
    assert_eq!(l.raft_log.committed, idx);
    let to: Vec<u64> = l.msgs.iter().map(|m| m.to).collect();
    assert_eq!(
        to,
        vec![2],
        "3 still has the append in flight; its ack brings the commit"
    );
    // Once 2 reports the new commit, nothing more is sent: no append/ack ping-pong.
    l.msgs.clear();
    l.step(Message { commit: idx, ..ack }).unwrap();
    assert!(l.msgs.is_empty());
}

#[test]
fn requested_snapshot_is_sent_even_to_a_replicating_follower() {
    let mut l = leader(&[1, 2], |_| {});
    l.commit_apply(1);
    l.raft_log
        .store
        .create_snapshot(1, None, b"s".to_vec())
        .unwrap();
    let mut f = raft(2, &[1, 2], |_| {});
    f.become_follower(1, 1);
    f.raft_log.append(&[Entry::new(1, 1, Vec::new())]);
    f.request_snapshot(1).unwrap();
    assert_eq!(
        f.request_snapshot(1),
        Err(crate::Error::RequestSnapshotDropped),
        "one request at a time"
    );
    let req = f.msgs_after_persist.pop().unwrap();
    assert!(req.reject && req.request_snapshot == 1);
    l.step(req).unwrap();
    let snap = l
        .msgs
        .iter()
        .find(|m| m.msg_type == MessageType::MsgSnapshot)
        .expect("snapshot sent");
    assert_eq!(snap.snapshot.as_ref().map(|s| s.metadata.index), Some(1));
}

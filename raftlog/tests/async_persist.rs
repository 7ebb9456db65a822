//! Async persistence: with `advance_append_async`, nothing counts as durable until
//! `on_persist_ready(number)` (a single node cannot commit its own entry before that); replies
//! that promise durability come in `persisted_messages`, never `messages`; one
//! `on_persist_ready` covers all earlier Readies; committed entries are not handed out before
//! they are persisted locally. Readies are handled by hand here.

mod harness;

use harness::*;
use raftlog::*;

fn single_async_leader() -> RawNode<MemStorage> {
    let store = MemStorage::new_with_conf_state(ConfState::from_voters(vec![1]));
    let mut raw = RawNode::new(&config(1), store).unwrap();
    raw.campaign().unwrap();
    raw
}

#[test]
fn single_node_commits_only_after_on_persist_ready() {
    let mut raw = single_async_leader();
    assert_eq!(raw.raft.state, StateRole::Leader);
    let rd = raw.ready();
    assert_eq!(rd.entries().len(), 1);
    let number = rd.number();
    raw.mut_store().wl().append(rd.entries()).unwrap();
    raw.advance_append_async(rd);
    assert_eq!(
        raw.raft.raft_log.committed, 0,
        "committed before the entry was durable"
    );
    raw.on_persist_ready(number);
    assert_eq!(raw.raft.raft_log.committed, 1);
    assert!(raw.has_ready());
    let rd = raw.ready();
    assert_eq!(rd.committed_entries().len(), 1);
}

#[test]
fn on_persist_ready_covers_earlier_readies() {
    let mut raw = single_async_leader();
    let rd1 = raw.ready();
    raw.mut_store().wl().append(rd1.entries()).unwrap();
    raw.advance_append_async(rd1);
    raw.propose(vec![], b"a".to_vec()).unwrap();
    let rd2 = raw.ready();
    assert!(rd2.number() > 0);
    assert_eq!(rd2.entries().len(), 1);
    let n2 = rd2.number();
    raw.mut_store().wl().append(rd2.entries()).unwrap();
    raw.advance_append_async(rd2);
    assert_eq!(raw.raft.raft_log.persisted, 0);
    raw.on_persist_ready(n2);
    assert_eq!(raw.raft.raft_log.persisted, 2);
    assert_eq!(raw.raft.raft_log.committed, 2);
}

#[test]
fn follower_append_response_waits_for_persistence() {
    let mut net = elected(3);
    net.nodes.get_mut(&2).unwrap().manual = true;
    net.node(1).propose(vec![], b"x".to_vec()).unwrap();
    net.stabilize();
    let raw = net.node(2);
    assert!(raw.has_ready());
    let mut rd = raw.ready();
    assert!(!rd.entries().is_empty());
    assert!(
        rd.messages()
            .iter()
            .all(|m| m.msg_type != MessageType::MsgAppendResponse),
        "an append was acknowledged before it was persisted"
    );
    let after: Vec<Message> = rd.take_persisted_messages();
    assert!(after
        .iter()
        .any(|m| m.msg_type == MessageType::MsgAppendResponse && !m.reject));
    assert!(rd.must_sync());
}

#[test]
fn vote_waits_for_persistence() {
    let mut net = Network::new(3);
    net.nodes.get_mut(&2).unwrap().manual = true;
    net.node(1).campaign().unwrap();
    net.stabilize();
    let mut rd = net.node(2).ready();
    assert!(rd.hs().is_some(), "the vote must be persisted");
    assert!(rd
        .messages()
        .iter()
        .all(|m| m.msg_type != MessageType::MsgRequestVoteResponse));
    assert!(rd
        .take_persisted_messages()
        .iter()
        .any(|m| m.msg_type == MessageType::MsgRequestVoteResponse));
}

#[test]
fn leader_does_not_hand_out_committed_entries_it_has_not_persisted() {
    let mut net = elected(3);
    net.nodes.get_mut(&1).unwrap().manual = true;
    net.node(1).propose(vec![], b"x".to_vec()).unwrap();
    // The leader sends its append at once but does not persist it yet.
    let mut rd = net.node(1).ready();
    let number = rd.number();
    let entries = rd.entries().clone();
    assert_eq!(entries.len(), 1);
    let msgs = rd.take_messages();
    assert!(
        msgs.iter().any(|m| m.msg_type == MessageType::MsgAppend),
        "leader appends must go out before persistence"
    );
    net.node(1).advance_append_async(rd);
    net.send(msgs);
    // Followers acknowledged: a quorum without the leader has it, so it is committed...
    let idx = entries[0].index;
    assert_eq!(net.raft(1).raft_log.committed, idx);
    // ...but the leader must not apply what it has not made durable itself.
    let raw = net.node(1);
    if raw.has_ready() {
        let rd = raw.ready();
        assert!(
            rd.committed_entries().iter().all(|e| e.index < idx),
            "unpersisted entry handed out for apply"
        );
        raw.advance_append_async(rd);
    }
    net.nodes[&1].store.wl().append(&entries).unwrap();
    let raw = net.node(1);
    raw.on_persist_ready(number);
    let mut got = vec![];
    for _ in 0..3 {
        if !raw.has_ready() {
            break;
        }
        let rd = raw.ready();
        got.extend(rd.committed_entries().iter().map(|e| e.index));
        let n = rd.number();
        raw.advance_append_async(rd);
        raw.on_persist_ready(n);
    }
    assert!(got.contains(&idx));
}

#[test]
fn advance_apply_to_moves_applied() {
    let mut raw = single_async_leader();
    let rd = raw.ready();
    let n = rd.number();
    raw.mut_store().wl().append(rd.entries()).unwrap();
    raw.advance_append_async(rd);
    raw.on_persist_ready(n);
    let rd = raw.ready();
    let last = rd.committed_entries().last().unwrap().index;
    raw.advance_append_async(rd);
    assert_eq!(raw.raft.raft_log.applied, 0);
    raw.advance_apply_to(last);
    assert_eq!(raw.raft.raft_log.applied, last);
    assert_eq!(raw.status().applied, last);
}

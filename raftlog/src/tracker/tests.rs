//! Flow control, per-peer progress state machine and the tracker's quorum bookkeeping. Inflight
//! windows are driven past both their count and byte caps; progress transitions and stale
//! rejections are tables of (state before, event, state after); the tracker is built through
//! real conf changes and checked for commit, activity, votes and deterministic iteration.

use std::collections::{BTreeSet, HashSet};

use super::{Inflights, Progress, ProgressState, ProgressTracker};
use crate::confchange::restore;
use crate::quorum::VoteResult;
use crate::types::ConfState;

#[test]
fn inflights_count_cap() {
    let mut ins = Inflights::new(3, 0);
    for i in 1..=3 {
        assert!(!ins.full());
        ins.add(i * 10, 1_000_000);
    }
    assert!(
        ins.full(),
        "three messages fill a count cap of three, whatever their size"
    );
    assert_eq!((ins.count(), ins.bytes()), (3, 3_000_000));
    ins.free_to(15);
    assert_eq!((ins.count(), ins.bytes()), (2, 2_000_000));
    assert!(!ins.full());
    ins.free_to(5);
    assert_eq!(ins.count(), 2, "freeing below the oldest frees nothing");
    ins.free_to(30);
    assert_eq!((ins.count(), ins.bytes()), (0, 0));
}

#[test]
fn inflights_byte_cap() {
    let mut ins = Inflights::new(100, 1000);
    ins.add(1, 400);
    ins.add(2, 400);
    assert!(!ins.full(), "800 of 1000 bytes");
    ins.add(3, 300);
    assert!(ins.full(), "1100 bytes reach the 1000-byte cap");
    assert_eq!(ins.bytes(), 1100);
    ins.free_first_one();
    assert_eq!((ins.count(), ins.bytes()), (2, 700));
    assert!(!ins.full());
    ins.free_to(3);
    assert_eq!((ins.count(), ins.bytes()), (0, 0));
    // A single message above the cap is still allowed when the window is empty.
    ins.add(4, 5000);
    assert!(ins.full());
}

#[test]
fn inflights_reset_and_set_cap() {
    let mut ins = Inflights::new(4, 0);
    for i in 1..=4 {
        ins.add(i, 10);
    }
    ins.set_cap(2, 0);
    assert!(ins.full(), "shrinking the cap keeps what is in flight");
    ins.free_to(2);
    assert!(ins.full(), "two left of a cap of two");
    ins.free_to(3);
    assert!(!ins.full());
    ins.set_cap(8, 15);
    assert!(!ins.full(), "10 bytes under a 15-byte cap");
    ins.add(5, 10);
    assert!(ins.full(), "20 bytes over a 15-byte cap");
    ins.reset();
    assert_eq!((ins.count(), ins.bytes(), ins.full()), (0, 0, false));
    assert_eq!((ins.cap_count(), ins.cap_bytes()), (8, 15));
}

#[test]
#[should_panic(expected = "full inflights")]
fn inflights_add_when_full_panics() {
    let mut ins = Inflights::new(1, 0);
    ins.add(1, 0);
    ins.add(2, 0);
}

#[test]
#[should_panic(expected = "added after")]
fn inflights_add_out_of_order_panics() {
    let mut ins = Inflights::new(4, 0);
    ins.add(5, 0);
    ins.add(4, 0);
}

fn progress(state: ProgressState, matched: u64, next_idx: u64) -> Progress {
    let mut pr = Progress::new(next_idx, 4, 0);
    pr.state = state;
    pr.matched = matched;
    pr
}

#[test]
fn become_probe_table() {
    use ProgressState::*;
    // (state, matched, next, pending snapshot) -> next after become_probe
    let rows = [
        (Replicate, 1, 5, 0, 2),
        (Probe, 3, 9, 0, 4),
        (Snapshot, 1, 5, 10, 11),   // assume the snapshot arrived
        (Snapshot, 12, 13, 10, 13), // caught up past it meanwhile
        (Snapshot, 1, 5, 0, 2),     // snapshot failed: back to matched
    ];
    for (i, (state, matched, next, pending, want)) in rows.into_iter().enumerate() {
        let mut pr = progress(state, matched, next);
        pr.pending_snapshot = pending;
        pr.probe_sent = true;
        pr.become_probe();
        assert_eq!(
            (pr.state, pr.next_idx, pr.pending_snapshot, pr.probe_sent),
            (Probe, want, 0, false),
            "row {i}"
        );
    }
}

#[test]
fn become_replicate_and_snapshot() {
    let mut pr = progress(ProgressState::Probe, 4, 9);
    pr.become_replicate();
    assert_eq!((pr.state, pr.next_idx), (ProgressState::Replicate, 5));
    pr.update_state_bytes(7, 100);
    assert_eq!((pr.ins.count(), pr.ins.bytes()), (1, 100));
    pr.become_snapshot(20);
    assert_eq!(
        (pr.state, pr.pending_snapshot, pr.ins.count()),
        (ProgressState::Snapshot, 20, 0)
    );
    assert!(pr.is_paused());
    assert!(!pr.maybe_snapshot_abort());
    pr.maybe_update(20);
    assert!(pr.maybe_snapshot_abort());
    pr.snapshot_failure();
    assert_eq!(pr.pending_snapshot, 0);
}

#[test]
fn maybe_update_table() {
    // (matched, next, ack) -> (raised, matched, next)
    let rows = [
        (5, 10, 4, false, 5, 10),  // stale ack
        (5, 10, 5, false, 5, 10),  // duplicate
        (5, 10, 7, true, 7, 10),   // next already past it
        (5, 10, 12, true, 12, 13), // ack beyond next (after a probe)
    ];
    for (i, (matched, next, ack, raised, m, n)) in rows.into_iter().enumerate() {
        let mut pr = progress(ProgressState::Probe, matched, next);
        pr.probe_sent = true;
        assert_eq!(pr.maybe_update(ack), raised, "row {i}");
        assert_eq!((pr.matched, pr.next_idx), (m, n), "row {i}");
        assert_eq!(
            pr.probe_sent, !raised,
            "row {i}: a raise unpauses the probe"
        );
    }
}

#[test]
fn maybe_decr_to_table() {
    use ProgressState::*;
    // (state, matched, next, rejected, hint, request_snapshot) -> (accepted, next, pending_req)
    #[rustfmt::skip]
    let rows = [
        // Replicate: rejections at or below matched are stale.
        (Replicate, 5, 10, 5, 5, 0, false, 10, 0),
        (Replicate, 5, 10, 4, 4, 0, false, 10, 0),
        // Replicate: a real rejection falls back to matched + 1.
        (Replicate, 5, 10, 9, 9, 0, true, 6, 0),
        // Replicate: a snapshot request at matched is not stale, next stays.
        (Replicate, 5, 10, 5, 5, 7, true, 10, 7),
        // Probe: only a rejection of next - 1 counts.
        (Probe, 0, 10, 5, 5, 0, false, 10, 0),
        (Probe, 0, 10, 9, 9, 0, true, 9, 0),
        // Probe: the hint jumps back further.
        (Probe, 0, 10, 9, 3, 0, true, 4, 0),
        // Probe: a hint above the rejected index is ignored.
        (Probe, 0, 10, 9, 20, 0, true, 9, 0),
        // Probe: never below matched + 1.
        (Probe, 6, 10, 9, 2, 0, true, 7, 0),
        // Probe: next never drops to 0.
        (Probe, 0, 1, 0, 0, 0, true, 1, 0),
        // Probe: a snapshot request is never stale and keeps next.
        (Probe, 0, 10, 3, 3, 8, true, 10, 8),
    ];
    for (i, (state, matched, next, rejected, hint, req, accepted, want_next, want_req)) in
        rows.into_iter().enumerate()
    {
        let mut pr = progress(state, matched, next);
        pr.probe_sent = true;
        assert_eq!(pr.maybe_decr_to(rejected, hint, req), accepted, "row {i}");
        assert_eq!(
            (pr.next_idx, pr.pending_request_snapshot),
            (want_next, want_req),
            "row {i}"
        );
        if accepted && state == Probe {
            assert!(
                !pr.probe_sent,
                "row {i}: accepted rejection unpauses the probe"
            );
        }
    }
}

#[test]
fn is_paused_per_state() {
    let mut pr = progress(ProgressState::Probe, 0, 1);
    assert!(!pr.is_paused());
    pr.update_state(1);
    assert!(
        pr.probe_sent && pr.is_paused(),
        "a probe pauses until answered"
    );
    pr.become_replicate();
    let mut pr2 = Progress::new(1, 2, 100);
    pr2.become_replicate();
    pr2.update_state_bytes(3, 60);
    assert!(!pr2.is_paused());
    pr2.update_state_bytes(5, 60);
    assert!(pr2.is_paused(), "byte cap reached");
    assert_eq!(pr2.next_idx, 6);
    pr2.resume_after_heartbeat();
    assert!(!pr2.is_paused(), "a heartbeat response frees one slot");
    assert!(!pr.is_paused());
    pr.become_snapshot(3);
    assert!(pr.is_paused());
}

#[test]
#[should_panic(expected = "snapshot state")]
fn update_state_in_snapshot_panics() {
    let mut pr = progress(ProgressState::Snapshot, 0, 1);
    pr.update_state(3);
}

fn tracker(cs: &ConfState) -> ProgressTracker {
    let mut t = ProgressTracker::new(8, 0);
    restore(&mut t, 1, cs).unwrap();
    t
}

fn joint(incoming: &[u64], outgoing: &[u64]) -> ConfState {
    ConfState {
        voters: incoming.to_vec(),
        voters_outgoing: outgoing.to_vec(),
        ..Default::default()
    }
}

#[test]
fn committed_uses_matched_of_voters_only() {
    let mut t = tracker(&ConfState::from_voters_learners(vec![1, 2, 3], vec![4]));
    for (id, m) in [(1, 5), (2, 3), (3, 1), (4, 100)] {
        t.get_mut(id).unwrap().maybe_update(m);
    }
    assert_eq!(t.committed(), 3, "learner 4's match does not count");

    let mut t = tracker(&joint(&[1, 2, 3], &[3, 4, 5]));
    for (id, m) in [(1, 9), (2, 9), (3, 2), (4, 2), (5, 1)] {
        t.get_mut(id).unwrap().maybe_update(m);
    }
    assert_eq!(t.committed(), 2, "the outgoing half holds the commit back");
}

#[test]
fn quorum_recently_active_counts_and_resets() {
    let mut t = tracker(&ConfState::from_voters_learners(
        vec![1, 2, 3, 4, 5],
        vec![6],
    ));
    for id in 1..=6 {
        t.get_mut(id).unwrap().recent_active = false;
    }
    t.get_mut(2).unwrap().recent_active = true;
    t.get_mut(6).unwrap().recent_active = true;
    assert!(
        !t.quorum_recently_active(1),
        "leader + 2 of 5; learner 6 does not count"
    );
    for id in [2, 3] {
        t.get_mut(id).unwrap().recent_active = true;
    }
    assert!(t.quorum_recently_active(1), "leader + 2 + 3");
    let active: Vec<u64> = (1..=6)
        .filter(|id| t.get(*id).unwrap().recent_active)
        .collect();
    assert_eq!(
        active,
        vec![1],
        "only the leader stays active for the next round"
    );
    assert!(!t.quorum_recently_active(1));
}

#[test]
fn has_quorum_joint() {
    let t = tracker(&joint(&[1, 2, 3], &[4, 5, 6]));
    let s = |ids: &[u64]| ids.iter().copied().collect::<HashSet<u64>>();
    assert!(!t.has_quorum(&s(&[1, 2])));
    assert!(t.has_quorum(&s(&[1, 2, 4, 5])));
    assert!(!t.has_quorum(&s(&[1, 4, 5, 6])));
}

#[test]
fn votes_tally() {
    let mut t = tracker(&ConfState::from_voters_learners(vec![1, 2, 3], vec![4]));
    t.record_vote(1, true);
    t.record_vote(4, true);
    assert_eq!(
        t.tally_votes(),
        (1, 0, VoteResult::Pending),
        "learner votes are ignored"
    );
    t.record_vote(2, false);
    t.record_vote(2, true);
    assert_eq!(
        t.tally_votes(),
        (1, 1, VoteResult::Pending),
        "first vote of a peer sticks"
    );
    t.record_vote(3, false);
    assert_eq!(t.tally_votes(), (1, 2, VoteResult::Lost));
    t.reset_votes();
    t.record_vote(1, true);
    t.record_vote(3, true);
    assert_eq!(t.tally_votes(), (2, 0, VoteResult::Won));
}

#[test]
fn tracker_queries_and_caps() {
    let mut t = tracker(&ConfState {
        voters: vec![1, 2],
        voters_outgoing: vec![1, 2, 3],
        learners: vec![5],
        learners_next: vec![3],
        auto_leave: true,
    });
    assert_eq!(t.voter_ids(), BTreeSet::from([1, 2, 3]));
    assert_eq!(t.learner_ids(), &BTreeSet::from([5]));
    assert_eq!(t.all_ids(), BTreeSet::from([1, 2, 3, 5]));
    assert!(t.is_voter(3) && !t.is_learner(3) && t.is_learner(5));
    assert!(!t.is_singleton());
    assert_eq!(t.conf_state().learners_next, vec![3]);
    t.set_inflight_caps(2, 64);
    assert!(t
        .iter()
        .all(|(_, p)| p.ins.cap_count() == 2 && p.ins.cap_bytes() == 64));
    assert_eq!(t.inflight_caps(), (2, 64));
    assert!(t.iter().all(|(_, p)| p.next_idx == 1 && p.recent_active));
    assert!(tracker(&ConfState::from_voters(vec![7])).is_singleton());
}

#[test]
fn iteration_order_is_deterministic() {
    let cs = ConfState::from_voters_learners((1..=7).collect::<Vec<_>>(), vec![40, 30, 20]);
    let order = |t: &ProgressTracker| t.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    let want = order(&tracker(&cs));
    for _ in 0..5 {
        assert_eq!(order(&tracker(&cs)), want);
    }
}

proptest::proptest! {
    /// Inflights against a plain list model under random adds and frees.
    #[test]
    fn inflights_match_model(
        cap_count in 1usize..6,
        cap_bytes in 0u64..300,
        ops in proptest::collection::vec((0u8..3, 1u64..100), 0..60),
    ) {
        let mut ins = Inflights::new(cap_count, cap_bytes);
        let mut model: Vec<(u64, u64)> = Vec::new();
        let mut last = 0;
        for (op, arg) in ops {
            let model_bytes: u64 = model.iter().map(|m| m.1).sum();
            let model_full = model.len() >= cap_count || (cap_bytes > 0 && model_bytes >= cap_bytes);
            proptest::prop_assert_eq!(ins.full(), model_full);
            match op {
                0 if !model_full => {
                    last += arg % 5;
                    ins.add(last, arg);
                    model.push((last, arg));
                }
                1 => {
                    let to = last.saturating_sub(arg % 8);
                    ins.free_to(to);
                    model.retain(|m| m.0 > to);
                }
                2 => {
                    ins.free_first_one();
                    if !model.is_empty() {
                        model.remove(0);
                    }
                }
                _ => {}
            }
            proptest::prop_assert_eq!(ins.count(), model.len());
            proptest::prop_assert_eq!(ins.bytes(), model.iter().map(|m| m.1).sum::<u64>());
        }
    }
}

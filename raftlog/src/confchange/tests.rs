//! Conf-change rules as data tables. Each row starts from a configuration (rebuilt with
//! `restore`), applies one operation (simple change, enter joint, leave joint) and expects
//! either the resulting `ConfState` plus the progress additions/removals, or an error whose text
//! names the broken rule. Successful results are then installed in the tracker, whose own
//! invariant checks must hold. `restore` is checked to round-trip valid configurations.

use super::{restore, Changer, MapChange, MapChangeType};
use crate::errors::Error;
use crate::tracker::ProgressTracker;
use crate::types::{ConfChangeSingle, ConfChangeType, ConfState};

use MapChangeType::{Add, Remove};

enum Op {
    Simple(Vec<ConfChangeSingle>),
    Enter(bool, Vec<ConfChangeSingle>),
    Leave,
}

fn add(id: u64) -> ConfChangeSingle {
    ConfChangeSingle {
        change_type: ConfChangeType::AddNode,
        node_id: id,
    }
}

fn learner(id: u64) -> ConfChangeSingle {
    ConfChangeSingle {
        change_type: ConfChangeType::AddLearnerNode,
        node_id: id,
    }
}

fn remove(id: u64) -> ConfChangeSingle {
    ConfChangeSingle {
        change_type: ConfChangeType::RemoveNode,
        node_id: id,
    }
}

fn cs(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState::from_voters_learners(voters.to_vec(), learners.to_vec())
}

/// A joint state: (incoming, outgoing, learners, learners_next, auto_leave).
fn jcs(
    voters: &[u64],
    outgoing: &[u64],
    learners: &[u64],
    next: &[u64],
    auto_leave: bool,
) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        voters_outgoing: outgoing.to_vec(),
        learners: learners.to_vec(),
        learners_next: next.to_vec(),
        auto_leave,
    }
}

type Want = Result<(ConfState, MapChange), &'static str>;

fn run(
    start: &ConfState,
    op: &Op,
) -> (
    ProgressTracker,
    crate::errors::Result<(crate::tracker::Configuration, MapChange)>,
) {
    let mut t = ProgressTracker::new(4, 0);
    restore(&mut t, 10, start).expect("start configuration must be valid");
    let res = {
        let c = Changer::new(&t);
        match op {
            Op::Simple(ccs) => c.simple(ccs),
            Op::Enter(auto_leave, ccs) => c.enter_joint(*auto_leave, ccs),
            Op::Leave => c.leave_joint(),
        }
    };
    (t, res)
}

fn check_rows(rows: Vec<(ConfState, Op, Want)>) {
    for (i, (start, op, want)) in rows.into_iter().enumerate() {
        let (mut t, got) = run(&start, &op);
        match (got, want) {
            (Ok((cfg, changes)), Ok((want_cs, want_changes))) => {
                assert_eq!(cfg.to_conf_state(), want_cs, "row {i}: configuration");
                assert_eq!(changes, want_changes, "row {i}: progress changes");
                t.apply_conf(cfg, changes, 20);
                let members: Vec<u64> = t.all_ids().into_iter().collect();
                let mut want_members: Vec<u64> = want_cs
                    .voters
                    .iter()
                    .chain(&want_cs.voters_outgoing)
                    .chain(&want_cs.learners)
                    .copied()
                    .collect();
                want_members.sort_unstable();
                want_members.dedup();
                assert_eq!(members, want_members, "row {i}: tracked peers");
            }
            (Err(Error::ConfChangeError(msg)), Err(want)) => {
                assert!(
                    msg.contains(want),
                    "row {i}: error {msg:?} should mention {want:?}"
                );
            }
            (got, want) => panic!("row {i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn simple_change_table() {
    let none: MapChange = vec![];
    #[rustfmt::skip]
    let rows: Vec<(ConfState, Op, Want)> = vec![
        // Add the first voter, then more, one at a time.
        (cs(&[], &[]), Op::Simple(vec![add(1)]), Ok((cs(&[1], &[]), vec![(1, Add)]))),
        (cs(&[1], &[]), Op::Simple(vec![add(2)]), Ok((cs(&[1, 2], &[]), vec![(2, Add)]))),
        (cs(&[1, 2], &[]), Op::Simple(vec![add(2)]), Ok((cs(&[1, 2], &[]), none.clone()))),
        // Remove.
        (cs(&[1, 2], &[]), Op::Simple(vec![remove(2)]), Ok((cs(&[1], &[]), vec![(2, Remove)]))),
        (cs(&[1, 2], &[]), Op::Simple(vec![remove(3)]), Ok((cs(&[1, 2], &[]), none.clone()))),
        (cs(&[1], &[2]), Op::Simple(vec![remove(2)]), Ok((cs(&[1], &[]), vec![(2, Remove)]))),
        // Learners: add, promote, demote.
        (cs(&[1], &[]), Op::Simple(vec![learner(2)]), Ok((cs(&[1], &[2]), vec![(2, Add)]))),
        (cs(&[1], &[2]), Op::Simple(vec![learner(2)]), Ok((cs(&[1], &[2]), none.clone()))),
        (cs(&[1], &[2]), Op::Simple(vec![add(2)]), Ok((cs(&[1, 2], &[]), none.clone()))),
        (cs(&[1, 2], &[]), Op::Simple(vec![learner(2)]), Ok((cs(&[1], &[2]), none.clone()))),
        // Any number of learner changes at once.
        (cs(&[1], &[]), Op::Simple(vec![learner(2), learner(3)]), Ok((cs(&[1], &[2, 3]), vec![(2, Add), (3, Add)]))),
        // Changes that cancel out touch no voter.
        (cs(&[1, 2, 3], &[]), Op::Simple(vec![add(4), remove(4)]), Ok((cs(&[1, 2, 3], &[]), vec![(4, Add), (4, Remove)]))),
        (cs(&[1], &[]), Op::Simple(vec![add(2), learner(2)]), Ok((cs(&[1], &[2]), vec![(2, Add)]))),
        // Node 0 is ignored.
        (cs(&[1], &[]), Op::Simple(vec![add(0)]), Ok((cs(&[1], &[]), none.clone()))),
        (cs(&[1], &[]), Op::Simple(vec![]), Ok((cs(&[1], &[]), none.clone()))),
        // Invalid.
        (cs(&[1], &[]), Op::Simple(vec![remove(1)]), Err("removed all voters")),
        (cs(&[1], &[2]), Op::Simple(vec![learner(1)]), Err("removed all voters")),
        (cs(&[], &[]), Op::Simple(vec![learner(1)]), Err("removed all voters")),
        (cs(&[1], &[]), Op::Simple(vec![add(2), add(3)]), Err("without entering a joint")),
        (cs(&[1, 2], &[]), Op::Simple(vec![remove(2), add(3)]), Err("without entering a joint")),
        (cs(&[1, 2, 3], &[]), Op::Simple(vec![learner(2), learner(3)]), Err("without entering a joint")),
        (cs(&[1, 2], &[3]), Op::Simple(vec![add(3), remove(2)]), Err("without entering a joint")),
        (jcs(&[1, 2], &[1, 2, 3], &[], &[], false), Op::Simple(vec![add(4)]), Err("in a joint configuration")),
    ];
    check_rows(rows);
}

#[test]
fn enter_joint_table() {
    #[rustfmt::skip]
    let rows: Vec<(ConfState, Op, Want)> = vec![
        // Replace a voter.
        (cs(&[1, 2, 3], &[]), Op::Enter(false, vec![add(4), remove(1)]),
            Ok((jcs(&[2, 3, 4], &[1, 2, 3], &[], &[], false), vec![(4, Add)]))),
        // Demote an outgoing voter: it waits in learners_next.
        (cs(&[1, 2, 3], &[]), Op::Enter(true, vec![learner(3)]),
            Ok((jcs(&[1, 2], &[1, 2, 3], &[], &[3], true), vec![]))),
        (cs(&[1, 2, 3], &[]), Op::Enter(true, vec![remove(3), learner(3)]),
            Ok((jcs(&[1, 2], &[1, 2, 3], &[], &[3], true), vec![]))),
        // Promote a learner while removing a voter.
        (cs(&[1], &[2]), Op::Enter(false, vec![add(2), remove(1)]),
            Ok((jcs(&[2], &[1], &[], &[], false), vec![]))),
        // Add a voter and a learner.
        (cs(&[1, 2, 3], &[]), Op::Enter(true, vec![learner(4), add(5)]),
            Ok((jcs(&[1, 2, 3, 5], &[1, 2, 3], &[4], &[], true), vec![(4, Add), (5, Add)]))),
        // No changes at all: joint with identical halves.
        (cs(&[1, 2, 3], &[]), Op::Enter(false, vec![]),
            Ok((jcs(&[1, 2, 3], &[1, 2, 3], &[], &[], false), vec![]))),
        // Swap every voter at once.
        (cs(&[1, 2], &[]), Op::Enter(true, vec![remove(1), remove(2), add(3), add(4), add(5)]),
            Ok((jcs(&[3, 4, 5], &[1, 2], &[], &[], true), vec![(3, Add), (4, Add), (5, Add)]))),
        // Remove a learner (not part of either half).
        (cs(&[1, 2], &[3]), Op::Enter(false, vec![remove(3), add(4)]),
            Ok((jcs(&[1, 2, 4], &[1, 2], &[], &[], false), vec![(3, Remove), (4, Add)]))),
        // Invalid.
        (jcs(&[1, 2], &[1, 2, 3], &[], &[], false), Op::Enter(false, vec![add(4)]), Err("already joint")),
        (cs(&[], &[]), Op::Enter(false, vec![add(1)]), Err("zero-voter")),
        (cs(&[1, 2], &[]), Op::Enter(false, vec![remove(1), remove(2)]), Err("removed all voters")),
        (cs(&[1], &[]), Op::Enter(true, vec![learner(1)]), Err("removed all voters")),
    ];
    check_rows(rows);
}

#[test]
fn leave_joint_table() {
    #[rustfmt::skip]
    let rows: Vec<(ConfState, Op, Want)> = vec![
        // Outgoing-only voters are removed.
        (jcs(&[2, 3, 4], &[1, 2, 3], &[], &[], false), Op::Leave, Ok((cs(&[2, 3, 4], &[]), vec![(1, Remove)]))),
        // Demoted voters become learners and keep their progress.
        (jcs(&[1, 2], &[1, 2, 3], &[], &[3], true), Op::Leave, Ok((cs(&[1, 2], &[3]), vec![]))),
        (jcs(&[1, 2], &[1, 2, 3], &[5], &[3], true), Op::Leave, Ok((cs(&[1, 2], &[3, 5]), vec![]))),
        // auto_leave is cleared.
        (jcs(&[1, 2, 3], &[1, 2, 3], &[], &[], true), Op::Leave, Ok((cs(&[1, 2, 3], &[]), vec![]))),
        (jcs(&[3, 4, 5], &[1, 2], &[], &[], true), Op::Leave, Ok((cs(&[3, 4, 5], &[]), vec![(1, Remove), (2, Remove)]))),
        // Invalid.
        (cs(&[1, 2, 3], &[]), Op::Leave, Err("non-joint")),
        (cs(&[], &[]), Op::Leave, Err("non-joint")),
    ];
    check_rows(rows);
}

#[test]
fn enter_then_leave_completes_a_replacement() {
    let mut t = ProgressTracker::new(4, 0);
    restore(&mut t, 1, &cs(&[1, 2, 3], &[])).unwrap();
    let (cfg, changes) = Changer::new(&t)
        .enter_joint(true, &[remove(1), learner(1), add(4)])
        .unwrap();
    t.apply_conf(cfg, changes, 7);
    assert_eq!(t.conf_state(), jcs(&[2, 3, 4], &[1, 2, 3], &[], &[1], true));
    assert_eq!(
        t.get(4).unwrap().next_idx,
        7,
        "new peer probes from next_idx"
    );
    assert_eq!(
        t.get(1).unwrap().next_idx,
        1,
        "existing peers keep their progress"
    );
    let (cfg, changes) = Changer::new(&t).leave_joint().unwrap();
    t.apply_conf(cfg, changes, 9);
    assert_eq!(t.conf_state(), cs(&[2, 3, 4], &[1]));
}

#[test]
fn restore_round_trips() {
    let states = vec![
        cs(&[], &[]),
        cs(&[1], &[]),
        cs(&[1, 2, 3], &[]),
        cs(&[1, 2, 3], &[4, 5]),
        jcs(&[1, 2, 3], &[1, 2, 4], &[5], &[4], true),
        jcs(&[4, 5, 6], &[1, 2, 3], &[], &[], false),
        jcs(&[1], &[1, 2], &[3], &[2], false),
        jcs(&[1, 2, 3], &[1, 2, 3], &[], &[], true),
    ];
    for (i, state) in states.into_iter().enumerate() {
        let mut t = ProgressTracker::new(4, 0);
        // A previous configuration is wiped.
        restore(&mut t, 3, &cs(&[9, 8], &[7])).unwrap();
        restore(&mut t, 5, &state).unwrap();
        assert_eq!(t.conf_state(), state, "row {i}");
        assert!(
            t.iter().all(|(_, p)| p.next_idx == 5 && p.matched == 0),
            "row {i}"
        );
    }
}

#[test]
fn restore_rejects_invalid_conf_states() {
    let rows: Vec<(ConfState, &str)> = vec![
        (cs(&[], &[1]), "removed all voters"),
        (cs(&[1], &[1]), "removed all voters"),
        (jcs(&[], &[1, 2], &[], &[], false), "removed all voters"),
    ];
    for (i, (state, want)) in rows.into_iter().enumerate() {
        let mut t = ProgressTracker::new(4, 0);
        match restore(&mut t, 1, &state) {
            Err(Error::ConfChangeError(msg)) => assert!(msg.contains(want), "row {i}: {msg}"),
            other => panic!("row {i}: {other:?}"),
        }
    }
}

#[test]
fn restore_rejects_states_it_would_have_to_repair() {
    let rows: Vec<ConfState> = vec![
        // A demoted learner that is not an outgoing voter.
        jcs(&[1, 2], &[1, 2], &[], &[3], false),
        // learners_next outside a joint configuration.
        jcs(&[1, 2], &[], &[], &[2], false),
        // auto_leave outside a joint configuration.
        jcs(&[1, 2], &[], &[], &[], true),
    ];
    for (i, state) in rows.into_iter().enumerate() {
        let mut t = ProgressTracker::new(4, 0);
        match restore(&mut t, 1, &state) {
            Err(Error::ConfChangeError(msg)) => {
                assert!(msg.contains("not a valid configuration"), "row {i}: {msg}")
            }
            other => panic!("row {i}: {other:?}"),
        }
    }
    // Order and duplicates do not matter.
    let mut t = ProgressTracker::new(4, 0);
    restore(&mut t, 1, &cs(&[3, 1, 2, 1], &[5, 4])).unwrap();
    assert_eq!(t.conf_state(), cs(&[1, 2, 3], &[4, 5]));
}

#[test]
fn invariant_violations_table() {
    use crate::quorum::JointConfig;
    use crate::tracker::Configuration;
    use std::collections::BTreeSet;

    let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
    let cfg = |inc: &[u64], out: &[u64], learners: &[u64], next: &[u64], auto_leave: bool| {
        Configuration {
            voters: JointConfig::new_joint(set(inc), set(out)),
            learners: set(learners),
            learners_next: set(next),
            auto_leave,
        }
    };
    let all = |_: u64| true;
    type Row<'a> = (Configuration, &'a dyn Fn(u64) -> bool, &'static str);
    let rows: Vec<Row> = vec![
        (
            cfg(&[1, 2], &[], &[], &[], false),
            &|id| id != 2,
            "no progress for 2",
        ),
        (
            cfg(&[1], &[1, 3], &[], &[], false),
            &|id| id != 3,
            "no progress for 3",
        ),
        (
            cfg(&[1], &[], &[4], &[], false),
            &|id| id != 4,
            "no progress for 4",
        ),
        (
            cfg(&[1], &[1, 2], &[], &[3], false),
            &all,
            "not in outgoing voters",
        ),
        (
            cfg(&[1], &[1, 2], &[2], &[2], false),
            &all,
            "in learners_next and in learners",
        ),
        (
            cfg(&[1, 2], &[], &[2], &[], false),
            &all,
            "learner and a voter",
        ),
        (
            cfg(&[1], &[1, 2], &[2], &[], false),
            &all,
            "learner and a voter",
        ),
        (
            cfg(&[1, 2], &[], &[], &[], true),
            &all,
            "auto_leave must be false",
        ),
    ];
    for (i, (c, has_progress, want)) in rows.into_iter().enumerate() {
        match super::changer::check_invariants(&c, has_progress) {
            Err(Error::ConfChangeError(msg)) => assert!(msg.contains(want), "row {i}: {msg}"),
            other => panic!("row {i}: {other:?}"),
        }
    }
    assert!(super::changer::check_invariants(&cfg(&[1], &[1, 2], &[3], &[2], true), all).is_ok());
}

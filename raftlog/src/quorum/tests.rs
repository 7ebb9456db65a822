//! Quorum rules as data tables: each row is a configuration, what each voter acknowledged or
//! voted, and the expected committed index or election result. Majority configurations of 1 to
//! 7 voters (and one past the stack buffer), then joint ones; the expected values were worked out
//! by hand from "more than half of each half".

use std::collections::{BTreeSet, HashMap};

use super::{JointConfig, MajorityConfig, VoteResult};
use VoteResult::{Lost, Pending, Won};

/// (incoming, outgoing, acked indexes, expected committed index).
type CommitRow = (&'static [u64], &'static [u64], &'static [(u64, u64)], u64);
/// (incoming, outgoing, votes, expected result).
type VoteRow = (
    &'static [u64],
    &'static [u64],
    &'static [(u64, bool)],
    VoteResult,
);

const Y: Option<bool> = Some(true);
const N: Option<bool> = Some(false);
const U: Option<bool> = None;

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

/// Voters 1..=acks.len(); voter i+1 acknowledged acks[i] (None: unknown).
fn majority_with_acks(acks: &[Option<u64>]) -> (MajorityConfig, HashMap<u64, u64>) {
    let cfg: MajorityConfig = (1..=acks.len() as u64).collect();
    let l = acks
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.map(|a| (i as u64 + 1, a)))
        .collect();
    (cfg, l)
}

#[test]
fn majority_committed_index_table() {
    let s = Some;
    #[rustfmt::skip]
    let rows: &[(&[Option<u64>], u64)] = &[
        (&[], u64::MAX),
        (&[None], 0), (&[s(0)], 0), (&[s(5)], 5),
        (&[s(5), s(3)], 3), (&[s(5), None], 0), (&[s(5), s(5)], 5), (&[None, None], 0),
        (&[s(1), s(2), s(3)], 2), (&[s(3), s(3), None], 3), (&[None, None, s(7)], 0),
        (&[s(10), s(2), s(2)], 2), (&[s(10), s(10), s(2)], 10), (&[s(2), s(10), s(10)], 10),
        (&[s(1), s(2), s(3), s(4)], 2), (&[s(5), s(5), s(5), None], 5),
        (&[s(5), s(5), None, None], 0), (&[s(9), s(1), s(9), s(9)], 9),
        (&[s(1), s(2), s(3), s(4), s(5)], 3), (&[s(9), s(9), s(1), s(1), s(1)], 1),
        (&[s(9), s(9), s(9), s(1), s(1)], 9), (&[None, None, s(3), s(3), s(3)], 3),
        (&[s(5), s(4), s(3), s(2), s(1)], 3),
        (&[s(1), s(2), s(3), s(4), s(5), s(6)], 3), (&[s(6), s(6), s(6), None, None, None], 0),
        (&[s(6), s(6), s(6), s(6), None, None], 6), (&[s(2), s(8), s(4), s(8), s(1), s(8)], 4),
        (&[s(1), s(2), s(3), s(4), s(5), s(6), s(7)], 4),
        (&[s(7), s(7), s(7), s(7), s(0), s(0), s(0)], 7),
        (&[s(7), s(7), s(7), s(0), s(0), s(0), s(0)], 0),
        (&[None, None, None, s(3), s(4), s(5), s(6)], 3),
        (&[s(100), s(90), s(80), s(70), s(60), s(50), s(40)], 70),
    ];
    for (i, (acks, want)) in rows.iter().enumerate() {
        let (cfg, l) = majority_with_acks(acks);
        assert_eq!(cfg.committed_index(&l), *want, "row {i}: acks {acks:?}");
    }
}

#[test]
fn majority_committed_index_ignores_non_voters_and_handles_sparse_ids() {
    let cfg = MajorityConfig::new(set(&[10, 20, 30]));
    let l: HashMap<u64, u64> = [(10, 4), (20, 6), (1, 100), (2, 100), (3, 100)].into();
    assert_eq!(cfg.committed_index(&l), 4);
}

#[test]
fn majority_committed_index_beyond_stack_buffer() {
    // 17 voters take the heap path; voter i acked i, so the 9th highest is 9.
    let cfg: MajorityConfig = (1..=17).collect();
    let l: HashMap<u64, u64> = (1..=17).map(|i| (i, i)).collect();
    assert_eq!(cfg.committed_index(&l), 9);
    let cfg: MajorityConfig = (1..=40).collect();
    let l: HashMap<u64, u64> = (1..=40).map(|i| (i, 1000 - i)).collect();
    // Quorum 21: the 21st highest of 999..=960 is 979.
    assert_eq!(cfg.committed_index(&l), 979);
}

#[test]
fn majority_vote_result_table() {
    #[rustfmt::skip]
    let rows: &[(&[Option<bool>], VoteResult)] = &[
        (&[], Won),
        (&[U], Pending), (&[Y], Won), (&[N], Lost),
        (&[Y, U], Pending), (&[Y, N], Lost), (&[Y, Y], Won), (&[N, U], Lost), (&[U, U], Pending),
        (&[Y, Y, U], Won), (&[Y, N, U], Pending), (&[N, N, U], Lost), (&[U, U, U], Pending),
        (&[Y, N, N], Lost), (&[Y, Y, N], Won),
        (&[Y, Y, N, U], Pending), (&[Y, Y, Y, N], Won), (&[Y, N, N, U], Lost), (&[Y, Y, N, N], Lost),
        (&[Y, Y, Y, N, N], Won), (&[Y, Y, N, N, U], Pending), (&[Y, N, N, N, U], Lost),
        (&[U, U, U, U, U], Pending), (&[Y, Y, U, U, U], Pending), (&[N, N, N, U, U], Lost),
        (&[Y, Y, Y, N, N, N], Lost), (&[Y, Y, Y, Y, N, N], Won), (&[Y, Y, Y, N, N, U], Pending),
        (&[Y, Y, Y, Y, N, N, N], Won), (&[Y, Y, Y, N, N, N, U], Pending),
        (&[N, N, N, N, Y, Y, Y], Lost), (&[Y, Y, Y, U, U, U, U], Pending),
        (&[N, N, N, U, U, U, U], Pending), (&[N, N, N, N, U, U, U], Lost),
    ];
    for (i, (votes, want)) in rows.iter().enumerate() {
        let cfg: MajorityConfig = (1..=votes.len() as u64).collect();
        let got = cfg.vote_result(|id| votes[id as usize - 1]);
        assert_eq!(got, *want, "row {i}: votes {votes:?}");
    }
}

#[test]
fn joint_committed_index_table() {
    #[rustfmt::skip]
    let rows: &[CommitRow] = &[
        // Not joint: the incoming half alone.
        (&[1, 2, 3], &[], &[(1, 5), (2, 6), (3, 7)], 6),
        // Identical halves.
        (&[1, 2, 3], &[1, 2, 3], &[(1, 5), (2, 6), (3, 7)], 6),
        // Disjoint halves: the lagging half decides.
        (&[1, 2, 3], &[4, 5, 6], &[(1, 10), (2, 10), (3, 1), (4, 1), (5, 1), (6, 1)], 1),
        (&[1, 2, 3], &[4, 5, 6], &[(1, 3), (2, 3), (4, 8), (5, 8), (6, 8)], 3),
        // Overlapping halves.
        (&[1, 2, 3], &[3, 4, 5], &[(1, 5), (2, 5), (3, 4), (4, 4), (5, 1)], 4),
        (&[1, 2, 3], &[3, 4, 5], &[(1, 9), (2, 9), (3, 9)], 0),
        // One voter replacing three, and the reverse.
        (&[1], &[1, 2, 3], &[(1, 9)], 0),
        (&[1], &[1, 2, 3], &[(1, 9), (3, 4)], 4),
        (&[1, 2, 3], &[1], &[(1, 2), (2, 9), (3, 9)], 2),
        // Empty incoming half (only ever transient): the outgoing half decides.
        (&[], &[1, 2], &[(1, 3), (2, 2)], 2),
        (&[], &[], &[], u64::MAX),
        // Five and seven voters.
        (&[1, 2, 3, 4, 5], &[1, 2, 3, 6, 7], &[(1, 6), (2, 6), (4, 6), (6, 2), (7, 2)], 2),
        (&[1, 2, 3, 4, 5, 6, 7], &[1, 2, 3], &[(4, 9), (5, 9), (6, 9), (7, 9), (1, 3), (2, 3)], 3),
    ];
    for (i, (inc, out, acks, want)) in rows.iter().enumerate() {
        let cfg = JointConfig::new_joint(set(inc), set(out));
        let l: HashMap<u64, u64> = acks.iter().copied().collect();
        assert_eq!(
            cfg.committed_index(&l),
            *want,
            "row {i}: {inc:?} / {out:?} acks {acks:?}"
        );
    }
}

#[test]
fn joint_vote_result_table() {
    #[rustfmt::skip]
    let rows: &[VoteRow] = &[
        (&[1, 2, 3], &[], &[(1, true), (2, true)], Won),
        (&[1, 2, 3], &[], &[(1, true)], Pending),
        (&[1, 2, 3], &[1, 2, 3], &[(1, true), (2, true)], Won),
        (&[1, 2, 3], &[1, 2, 3], &[(1, false), (2, false)], Lost),
        (&[1, 2, 3], &[4, 5, 6], &[(1, true), (2, true), (4, true)], Pending),
        (&[1, 2, 3], &[4, 5, 6], &[(1, true), (2, true), (4, true), (5, true)], Won),
        (&[1, 2, 3], &[4, 5, 6], &[(1, true), (2, true), (4, false), (5, false)], Lost),
        (&[1, 2, 3], &[4, 5, 6], &[(1, false), (2, false), (4, true), (5, true)], Lost),
        (&[1, 2, 3], &[4, 5, 6], &[(1, true), (4, false), (5, false)], Lost),
        (&[1, 2, 3], &[4, 5, 6], &[], Pending),
        (&[1, 2, 3], &[3, 4, 5], &[(1, true), (3, true), (4, true)], Won),
        (&[1, 2, 3], &[3, 4, 5], &[(1, true), (2, true), (3, false), (4, false)], Lost),
        (&[1, 2, 3], &[3, 4, 5], &[(1, true), (2, true), (4, true)], Pending),
        (&[1], &[1, 2, 3], &[(1, true)], Pending),
        (&[1], &[1, 2, 3], &[(1, true), (2, true)], Won),
        (&[1], &[1, 2, 3], &[(1, false), (2, true), (3, true)], Lost),
        (&[1, 2], &[1], &[(1, true), (2, true)], Won),
        (&[1, 2], &[1], &[(1, true)], Pending),
        (&[], &[], &[], Won),
    ];
    for (i, (inc, out, votes, want)) in rows.iter().enumerate() {
        let cfg = JointConfig::new_joint(set(inc), set(out));
        let votes: HashMap<u64, bool> = votes.iter().copied().collect();
        let got = cfg.vote_result(|id| votes.get(&id).copied());
        assert_eq!(got, *want, "row {i}: {inc:?} / {out:?} votes {votes:?}");
    }
}

#[test]
fn joint_membership_queries() {
    let cfg = JointConfig::new_joint(set(&[1, 2, 5]), set(&[2, 3, 4]));
    assert_eq!(cfg.ids(), set(&[1, 2, 3, 4, 5]));
    let mut seen = Vec::new();
    cfg.for_each_id(|id| seen.push(id));
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert!(cfg.contains(1) && cfg.contains(3) && !cfg.contains(6));
    assert!(cfg.is_joint() && !cfg.is_singleton());

    let mut seen = Vec::new();
    JointConfig::new_joint(set(&[7]), set(&[1, 9])).for_each_id(|id| seen.push(id));
    assert_eq!(seen, vec![1, 7, 9]);

    assert!(JointConfig::new(set(&[4])).is_singleton());
    assert!(!JointConfig::new(set(&[4, 5])).is_singleton());
    assert!(!JointConfig::new_joint(set(&[4]), set(&[4])).is_singleton());
    assert!(!JointConfig::new(set(&[])).is_singleton());

    let mut cfg = cfg;
    cfg.clear();
    assert!(cfg.ids().is_empty() && !cfg.is_joint());
}

/// The committed index by definition: the largest index that a quorum has acknowledged.
fn committed_by_definition(voters: &BTreeSet<u64>, l: &HashMap<u64, u64>) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let acked = |id: &u64| l.get(id).copied().unwrap_or(0);
    let quorum = voters.len() / 2 + 1;
    voters
        .iter()
        .map(acked)
        .filter(|&candidate| voters.iter().filter(|id| acked(id) >= candidate).count() >= quorum)
        .max()
        .unwrap_or(0)
}

proptest::proptest! {
    #[test]
    fn committed_index_matches_definition(
        acks in proptest::collection::vec(proptest::option::of(0u64..20), 0..20),
        out_acks in proptest::collection::vec(proptest::option::of(0u64..20), 0..8),
    ) {
        // Incoming voters 1..=n, outgoing voters overlapping from 3 on.
        let mut l = HashMap::new();
        let inc: BTreeSet<u64> = (1..=acks.len() as u64).collect();
        for (i, a) in acks.iter().enumerate() {
            if let Some(a) = a {
                l.insert(i as u64 + 1, *a);
            }
        }
        let out: BTreeSet<u64> = (3..3 + out_acks.len() as u64).collect();
        for (i, a) in out_acks.iter().enumerate() {
            if let Some(a) = a {
                l.entry(i as u64 + 3).or_insert(*a);
            }
        }
        let want = committed_by_definition(&inc, &l);
        proptest::prop_assert_eq!(MajorityConfig::new(inc.clone()).committed_index(&l), want);
        let joint = JointConfig::new_joint(inc.clone(), out.clone());
        let want_joint = want.min(committed_by_definition(&out, &l));
        proptest::prop_assert_eq!(joint.committed_index(&l), want_joint);
    }
}

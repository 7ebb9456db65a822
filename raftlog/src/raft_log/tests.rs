//! RaftLog over a real MemStorage: the stable/unstable split, conflict detection and
//! truncation on append, term lookups at the log's bounds, size-limited slices, the commit /
//! persist / apply cursors and what `next_entries` may hand out, and restoring from a snapshot.
//! Expected values come from small hand-built logs; panicking rows check the invariant asserts.

use super::RaftLog;
use crate::errors::{Error, StorageError};
use crate::storage::MemStorage;
use crate::types::{ConfState, Entry, Snapshot, SnapshotMetadata};

fn ent(index: u64, term: u64) -> Entry {
    Entry::new(term, index, Vec::<u8>::new())
}

/// Entries `first..` with the given terms.
fn ents(first: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| ent(first + i as u64, *t))
        .collect()
}

fn idx_terms(es: &[Entry]) -> Vec<(u64, u64)> {
    es.iter().map(|e| (e.index, e.term)).collect()
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        data: Default::default(),
        metadata: SnapshotMetadata {
            conf_state: ConfState::from_voters(vec![1]),
            index,
            term,
        },
    }
}

/// A log whose storage holds entries 1.. with `stable_terms`, then `unstable_terms` appended.
fn log(stable_terms: &[u64], unstable_terms: &[u64]) -> (RaftLog<MemStorage>, MemStorage) {
    let store = MemStorage::new();
    store.wl().append(&ents(1, stable_terms)).unwrap();
    let mut l = RaftLog::new(store.clone());
    l.append(&ents(stable_terms.len() as u64 + 1, unstable_terms));
    (l, store)
}

/// Hands the unstable entries to storage and acknowledges them, as the Ready loop does.
fn persist_all(l: &mut RaftLog<MemStorage>, store: &MemStorage) {
    let unstable = l.unstable_entries().to_vec();
    let Some(last) = unstable.last() else { return };
    store.wl().append(&unstable).unwrap();
    l.stable_entries(last.index, last.term);
    assert!(l.maybe_persist(last.index, last.term));
}

#[test]
fn new_takes_bounds_from_storage() {
    let l = RaftLog::new(MemStorage::new());
    assert_eq!((l.first_index(), l.last_index(), l.last_term()), (1, 0, 0));
    assert_eq!(
        (l.committed, l.applied, l.persisted, l.unstable.offset),
        (0, 0, 0, 1)
    );

    let store = MemStorage::new();
    store.wl().apply_snapshot(snapshot(5, 2)).unwrap();
    store.wl().append(&ents(6, &[3, 3, 3])).unwrap();
    let l = RaftLog::new(store);
    assert_eq!((l.first_index(), l.last_index(), l.last_term()), (6, 8, 3));
    assert_eq!(
        (l.committed, l.applied, l.persisted, l.unstable.offset),
        (5, 5, 8, 9)
    );
}

#[test]
fn term_at_bounds() {
    let store = MemStorage::new();
    store.wl().apply_snapshot(snapshot(3, 1)).unwrap();
    store.wl().append(&ents(4, &[2, 2])).unwrap();
    let mut l = RaftLog::new(store);
    l.append(&ents(6, &[3, 3]));
    // (index, term): below the snapshot and past the end read as 0.
    let rows = [
        (0, 0),
        (2, 0),
        (3, 1),
        (4, 2),
        (5, 2),
        (6, 3),
        (7, 3),
        (8, 0),
        (100, 0),
    ];
    for (idx, want) in rows {
        assert_eq!(l.term(idx), Ok(want), "term({idx})");
    }
    assert!(l.match_term(3, 1) && !l.match_term(3, 2) && !l.match_term(4, 1));
}

#[test]
fn find_conflict_table() {
    let (l, _) = log(&[1, 2, 3], &[]);
    #[rustfmt::skip]
    let rows: &[(Vec<Entry>, u64)] = &[
        (vec![], 0),
        (ents(1, &[1, 2, 3]), 0), (ents(2, &[2, 3]), 0), (ents(3, &[3]), 0),
        (ents(1, &[1, 2, 3, 4, 4]), 4), (ents(2, &[2, 3, 4, 4]), 4), (ents(3, &[3, 4, 4]), 4),
        (ents(4, &[4, 4]), 4),
        (ents(1, &[4, 4]), 1), (ents(2, &[1, 4, 4]), 2), (ents(3, &[1, 2, 4, 4]), 3),
    ];
    for (i, (es, want)) in rows.iter().enumerate() {
        assert_eq!(l.find_conflict(es), *want, "row {i}");
    }
}

#[test]
fn find_conflict_by_term_table() {
    let (l, _) = log(&[1, 1, 1, 2, 2, 3, 3, 3], &[5, 5]);
    // (index, term) -> (index, term there)
    let rows = [
        (10, 5, (10, Some(5))),
        (10, 4, (8, Some(3))),
        (10, 3, (8, Some(3))),
        (10, 2, (5, Some(2))),
        (10, 0, (0, Some(0))),
        (7, 2, (5, Some(2))),
        (3, 1, (3, Some(1))),
        (11, 5, (11, None)),
    ];
    for (i, (index, term, want)) in rows.into_iter().enumerate() {
        assert_eq!(l.find_conflict_by_term(index, term), want, "row {i}");
    }

    // Compacted: the search stops at the snapshot, and below it the term is unknown.
    let store = MemStorage::new();
    store.wl().append(&ents(1, &[1, 1, 1, 2, 2, 3])).unwrap();
    store.wl().compact(5).unwrap();
    let l = RaftLog::new(store);
    assert_eq!(l.find_conflict_by_term(6, 2), (5, Some(2)));
    assert_eq!(l.find_conflict_by_term(6, 1), (3, None));
}

#[test]
fn maybe_append_table() {
    // Log 1..=3 with terms 1, 2, 3; committed 1.
    // (prev index, prev term, leader commit, entries) -> (result, commit, log terms after)
    type Row = (u64, u64, u64, Vec<Entry>, Option<(u64, u64)>, u64, Vec<u64>);
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // The previous entry does not match: refused, nothing changes.
        (3, 2, 3, ents(4, &[4]), None, 1, vec![1, 2, 3]),
        (4, 3, 3, ents(5, &[4]), None, 1, vec![1, 2, 3]),
        // Heartbeat-like: no entries, commit follows min(leader commit, last new).
        (3, 3, 3, vec![], Some((0, 3)), 3, vec![1, 2, 3]),
        (3, 3, 4, vec![], Some((0, 3)), 3, vec![1, 2, 3]),
        (3, 3, 2, vec![], Some((0, 3)), 2, vec![1, 2, 3]),
        (3, 3, 0, vec![], Some((0, 3)), 1, vec![1, 2, 3]),
        (2, 2, 3, vec![], Some((0, 2)), 2, vec![1, 2, 3]),
        // New entries.
        (3, 3, 4, ents(4, &[4]), Some((4, 4)), 4, vec![1, 2, 3, 4]),
        (3, 3, 3, ents(4, &[4]), Some((4, 4)), 3, vec![1, 2, 3, 4]),
        (3, 3, 4, ents(4, &[4, 4]), Some((4, 5)), 4, vec![1, 2, 3, 4, 4]),
        // Entries already present: no conflict, nothing truncated.
        (1, 1, 2, ents(2, &[2, 3]), Some((0, 3)), 2, vec![1, 2, 3]),
        (1, 1, 9, ents(2, &[2]), Some((0, 2)), 2, vec![1, 2, 3]),
        // Conflicts above the commit index truncate the suffix.
        (2, 2, 3, ents(3, &[4]), Some((3, 3)), 3, vec![1, 2, 4]),
        (1, 1, 3, ents(2, &[4, 4]), Some((2, 3)), 3, vec![1, 4, 4]),
        (1, 1, 1, ents(2, &[2, 5, 5, 5]), Some((3, 5)), 1, vec![1, 2, 5, 5, 5]),
    ];
    for (i, (idx, term, commit, es, want, want_commit, want_terms)) in rows.into_iter().enumerate()
    {
        let (mut l, _) = log(&[1, 2, 3], &[]);
        l.commit_to(1);
        assert_eq!(l.maybe_append(idx, term, commit, &es), want, "row {i}");
        assert_eq!(l.committed, want_commit, "row {i}: committed");
        let terms: Vec<u64> = l.all_entries().iter().map(|e| e.term).collect();
        assert_eq!(terms, want_terms, "row {i}: log");
    }
}

#[test]
#[should_panic(expected = "conflicts with committed")]
fn maybe_append_conflict_with_committed_panics() {
    let (mut l, _) = log(&[1, 2, 3], &[]);
    l.commit_to(2);
    l.maybe_append(1, 1, 3, &ents(2, &[4]));
}

#[test]
fn conflict_lowers_persisted() {
    let (mut l, store) = log(&[1, 2, 3], &[]);
    assert_eq!(l.persisted, 3);
    assert_eq!(l.maybe_append(1, 1, 1, &ents(2, &[4, 4])), Some((2, 3)));
    assert_eq!(
        l.persisted, 1,
        "the replaced entries 2 and 3 are not the durable ones"
    );
    assert_eq!(idx_terms(l.unstable_entries()), vec![(2, 4), (3, 4)]);
    // The stale stored entry 2 (term 2) cannot be acknowledged as the new one.
    assert!(!l.maybe_persist(2, 4));
    persist_all(&mut l, &store);
    assert_eq!(l.persisted, 3);
}

#[test]
fn commit_to_never_decreases() {
    let (mut l, _) = log(&[1, 1, 1], &[]);
    l.commit_to(3);
    l.commit_to(2);
    assert_eq!(l.committed, 3);
}

#[test]
#[should_panic(expected = "out of range [last_index 3]")]
fn commit_to_beyond_last_index_panics() {
    let (mut l, _) = log(&[1, 1], &[1]);
    l.commit_to(4);
}

#[test]
fn maybe_commit_only_at_matching_term() {
    let (mut l, _) = log(&[1, 1], &[2, 2]);
    assert!(!l.maybe_commit(3, 1), "entry 3 is of term 2");
    assert!(!l.maybe_commit(5, 2), "past the end");
    assert!(l.maybe_commit(3, 2));
    assert!(!l.maybe_commit(2, 1), "below the commit index");
    assert_eq!(l.committed, 3);
    assert_eq!(l.commit_info(), (3, 2));
}

#[test]
fn slice_with_max_size() {
    // Stable 1..=5, unstable 6..=8; every entry has empty data: ENTRY_OVERHEAD_BYTES each.
    let (l, _) = log(&[1, 1, 1, 1, 1], &[2, 2, 2]);
    let e = ent(1, 1).size_bytes();
    #[rustfmt::skip]
    let rows: &[(u64, u64, Option<u64>, &[u64])] = &[
        (2, 2, None, &[]),
        (2, 4, None, &[2, 3]),
        (4, 8, None, &[4, 5, 6, 7]),
        (6, 9, None, &[6, 7, 8]),
        (1, 9, None, &[1, 2, 3, 4, 5, 6, 7, 8]),
        // At least one entry, whatever the limit.
        (4, 8, Some(0), &[4]),
        (6, 9, Some(1), &[6]),
        (2, 8, Some(e), &[2]),
        // Limits across the stable/unstable boundary.
        (4, 8, Some(2 * e), &[4, 5]),
        (4, 8, Some(3 * e), &[4, 5, 6]),
        (4, 8, Some(3 * e - 1), &[4, 5]),
        (4, 8, Some(100 * e), &[4, 5, 6, 7]),
        (1, 9, Some(7 * e), &[1, 2, 3, 4, 5, 6, 7]),
    ];
    for (i, (lo, hi, max, want)) in rows.iter().enumerate() {
        let got: Vec<u64> = l
            .slice(*lo, *hi, *max)
            .unwrap()
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(got, *want, "row {i}: slice [{lo}, {hi}) max {max:?}");
    }
    assert_eq!(l.entries(9, None), Ok(vec![]));
    assert_eq!(l.entries(7, None).unwrap().len(), 2);
}

#[test]
fn slice_below_first_index_is_compacted() {
    let (l, store) = log(&[1, 1, 1, 1], &[2]);
    store.wl().compact(3).unwrap();
    assert_eq!(l.first_index(), 3);
    assert_eq!(
        l.slice(2, 4, None),
        Err(Error::Store(StorageError::Compacted))
    );
    assert_eq!(l.slice(3, 6, None).unwrap().len(), 3);
}

#[test]
fn slice_passes_temporarily_unavailable_through() {
    let (l, store) = log(&[1, 1, 1], &[2]);
    store.wl().trigger_log_unavailable(true);
    assert_eq!(
        l.slice(1, 5, None),
        Err(Error::Store(StorageError::LogTemporarilyUnavailable))
    );
    assert_eq!(
        l.slice(4, 5, None).unwrap().len(),
        1,
        "the unstable part needs no storage"
    );
}

#[test]
#[should_panic(expected = "out of bounds")]
fn slice_past_last_index_panics() {
    let (l, _) = log(&[1, 1], &[1]);
    let _ = l.slice(1, 5, None);
}

#[test]
fn next_entries_respect_persisted_and_applied() {
    let (mut l, store) = log(&[1, 1, 1], &[2, 2, 2]);
    l.commit_to(5);
    let indexes =
        |es: Option<Vec<Entry>>| es.map(|es| es.iter().map(|e| e.index).collect::<Vec<_>>());
    // Only persisted entries (1..=3) may be applied, though 5 is committed.
    assert_eq!(indexes(l.next_entries(None)), Some(vec![1, 2, 3]));
    assert_eq!(indexes(l.next_entries(Some(0))), Some(vec![1]));
    assert_eq!(indexes(l.next_entries_since(1, None)), Some(vec![2, 3]));
    l.applied_to(3);
    assert!(!l.has_next_entries());
    assert_eq!(l.next_entries(None), None);
    persist_all(&mut l, &store);
    assert_eq!(l.persisted, 6);
    // Now persisted, but 6 is not committed.
    assert_eq!(indexes(l.next_entries(None)), Some(vec![4, 5]));
    l.applied_to(5);
    assert_eq!(l.next_entries(None), None);

    // Allowing unpersisted entries to be applied.
    let (mut l, _) = log(&[1], &[1, 1, 1, 1]);
    l.commit_to(4);
    l.max_apply_unpersisted_log_limit = 2;
    assert_eq!(indexes(l.next_entries(None)), Some(vec![1, 2, 3]));
    l.max_apply_unpersisted_log_limit = u64::MAX;
    assert_eq!(indexes(l.next_entries(None)), Some(vec![1, 2, 3, 4]));
}

#[test]
#[should_panic(expected = "applied(4) is out of range")]
fn applied_to_beyond_committed_panics() {
    let (mut l, _) = log(&[1, 1, 1, 1], &[]);
    l.commit_to(3);
    l.applied_to(4);
}

#[test]
fn stable_entries_only_when_term_matches() {
    let (mut l, _) = log(&[1, 1, 1], &[2, 2, 2]);
    l.stable_entries(5, 1);
    assert_eq!(l.unstable.offset, 4, "entry 5 is of term 2, not 1: ignored");
    l.stable_entries(9, 2);
    assert_eq!(l.unstable.offset, 4, "past the end: ignored");
    l.stable_entries(3, 1);
    assert_eq!(l.unstable.offset, 4, "already stable: ignored");
    l.stable_entries(5, 2);
    assert_eq!(idx_terms(l.unstable_entries()), vec![(6, 2)]);
    assert_eq!(l.unstable.entries_size, ent(6, 2).size_bytes());
    // A new leader overwrote entry 6 after the Ready was handed out: the old ack is stale.
    l.append(&ents(6, &[3]));
    l.stable_entries(6, 2);
    assert_eq!(idx_terms(l.unstable_entries()), vec![(6, 3)]);
    l.stable_entries(6, 3);
    assert!(l.unstable_entries().is_empty());
    assert_eq!((l.unstable.offset, l.unstable.entries_size), (7, 0));
}

#[test]
fn maybe_persist_requires_stable_entry_of_term() {
    let (mut l, store) = log(&[1, 1, 1], &[2, 2]);
    assert_eq!(l.persisted, 3);
    assert!(!l.maybe_persist(4, 2), "entry 4 is still unstable");
    assert!(!l.maybe_persist(3, 1), "not above persisted");
    store.wl().append(l.unstable_entries()).unwrap();
    l.stable_entries(5, 2);
    assert!(!l.maybe_persist(5, 1), "wrong term");
    assert!(l.maybe_persist(4, 2));
    assert!(l.maybe_persist(5, 2));
    assert_eq!(l.persisted, 5);
}

#[test]
fn unstable_stable_split_and_truncation() {
    let (mut l, _) = log(&[1, 1, 1], &[2, 2]);
    assert_eq!(idx_terms(l.unstable_entries()), vec![(4, 2), (5, 2)]);
    assert_eq!(l.all_entries().len(), 5);
    // Replace from 3 (stable) onwards: unstable restarts at 3, persisted drops to 2.
    l.commit_to(2);
    assert_eq!(l.append(&ents(3, &[3, 3])), 4);
    assert_eq!(l.unstable.offset, 3);
    assert_eq!(l.persisted, 2);
    assert_eq!(
        idx_terms(&l.all_entries()),
        vec![(1, 1), (2, 1), (3, 3), (4, 3)]
    );
    assert_eq!(
        l.term(3),
        Ok(3),
        "the unstable entry shadows the stale stored one"
    );
    // Truncate within the unstable part.
    assert_eq!(l.append(&ents(4, &[4, 4, 4])), 6);
    assert_eq!(
        idx_terms(l.unstable_entries()),
        vec![(3, 3), (4, 4), (5, 4), (6, 4)]
    );
    assert_eq!(l.append(&[]), 6);
    assert_eq!(l.last_term(), 4);
}

#[test]
#[should_panic(expected = "would overwrite committed")]
fn append_over_committed_panics() {
    let (mut l, _) = log(&[1, 1, 1], &[]);
    l.commit_to(3);
    l.append(&ents(3, &[2]));
}

#[test]
fn restore_from_snapshot() {
    let (mut l, store) = log(&[1, 1, 1], &[2, 2]);
    l.commit_to(2);
    l.applied_to(2);
    l.restore(snapshot(10, 4));
    assert_eq!(
        (l.first_index(), l.last_index(), l.last_term()),
        (11, 10, 4)
    );
    assert_eq!((l.committed, l.applied, l.unstable.offset), (10, 2, 11));
    assert_eq!(
        l.persisted, 3,
        "persisted is below the snapshot until it is saved"
    );
    assert!(l.has_pending_snapshot());
    assert_eq!(l.term(10), Ok(4));
    assert_eq!(l.term(9), Ok(0));
    assert_eq!(l.snapshot(0).unwrap().metadata.index, 10);
    assert!(l.unstable_entries().is_empty());
    assert_eq!(
        l.next_entries(None),
        None,
        "nothing after the snapshot to apply"
    );
    // Entries after the snapshot go to the unstable part.
    assert_eq!(l.append(&ents(11, &[4])), 11);

    store.wl().apply_snapshot(snapshot(10, 4)).unwrap();
    l.stable_snap(10);
    assert!(l.maybe_persist_snap(10));
    assert!(!l.maybe_persist_snap(10));
    assert!(!l.has_pending_snapshot());
    assert_eq!((l.persisted, l.first_index()), (10, 11));

    // A snapshot behind the persisted log lowers persisted to it.
    let (mut l, _) = log(&[1, 1, 1, 1, 1], &[]);
    l.commit_to(2);
    l.restore(snapshot(3, 1));
    assert_eq!((l.persisted, l.committed), (3, 3));
}

#[test]
#[should_panic(expected = "below committed")]
fn restore_below_committed_panics() {
    let (mut l, _) = log(&[1, 1, 1], &[]);
    l.commit_to(3);
    l.restore(snapshot(2, 1));
}

#[test]
fn is_up_to_date_table() {
    let (l, _) = log(&[1, 2], &[3]);
    // (candidate last index, candidate last term) -> up to date
    let rows = [
        (3, 3, true),
        (4, 3, true),
        (2, 3, false),
        (1, 4, true),
        (9, 2, false),
        (3, 2, false),
    ];
    for (index, term, want) in rows {
        assert_eq!(l.is_up_to_date(index, term), want, "({index}, {term})");
    }
}

#[test]
fn snapshot_prefers_unstable_then_storage() {
    let (mut l, store) = log(&[1, 1, 1], &[]);
    store.wl().commit_to(3).unwrap();
    assert_eq!(
        l.snapshot(0).unwrap().metadata.index,
        3,
        "storage builds one at its commit"
    );
    l.restore(snapshot(8, 2));
    assert_eq!(l.snapshot(5).unwrap().metadata.index, 8);
    assert_eq!(
        l.snapshot(9),
        Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    );
}

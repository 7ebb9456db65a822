//! Proves MemStorage keeps the `Storage` contract: log bounds (`Compacted`/`Unavailable`), the
//! term of `first_index() - 1` after compaction and snapshots, size-limited `entries` returning at
//! least one entry, conflict truncation on append, snapshot creation/application/out-of-date
//! rules, the one-shot unavailability triggers, and that clones of the handle share one state.
//! Each test builds a small log by hand and checks exact results.

use raftlog::{
    ConfState, Entry, Error, HardState, MemStorage, Snapshot, SnapshotMetadata, Storage,
    StorageError,
};

fn ent(term: u64, index: u64) -> Entry {
    Entry::new(term, index, vec![index as u8; 10])
}

/// A log of entries 1..=5 with terms 1, 1, 2, 3, 3.
fn storage_1_to_5() -> MemStorage {
    let s = MemStorage::new();
    s.append(&[ent(1, 1), ent(1, 2), ent(2, 3), ent(3, 4), ent(3, 5)])
        .unwrap();
    s
}

fn store_err(e: StorageError) -> Error {
    Error::Store(e)
}

fn terms(ents: &[Entry]) -> Vec<(u64, u64)> {
    ents.iter().map(|e| (e.term, e.index)).collect()
}

#[test]
fn fresh_storage_is_empty_with_index_zero_dummy() {
    let s = MemStorage::new();
    assert_eq!(s.first_index(), Ok(1));
    assert_eq!(s.last_index(), Ok(0));
    assert_eq!(s.term(0), Ok(0));
    assert_eq!(s.term(1), Err(store_err(StorageError::Unavailable)));
    assert_eq!(s.entries(1, 1, None), Ok(vec![]));
    assert!(!s.initial_state().unwrap().initialized());
}

#[test]
fn new_with_conf_state_is_initialized() {
    let s = MemStorage::new_with_conf_state(ConfState::from_voters(vec![1, 2, 3]));
    let state = s.initial_state().unwrap();
    assert!(state.initialized());
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    let from_tuple = MemStorage::new_with_conf_state((vec![1], vec![2]));
    assert_eq!(
        from_tuple.initial_state().unwrap().conf_state.learners,
        vec![2]
    );
}

#[test]
fn term_answers_within_bounds_only() {
    let s = storage_1_to_5();
    s.compact(3).unwrap(); // keeps 3..=5; 2 becomes the dummy
    assert_eq!(s.term(1), Err(store_err(StorageError::Compacted)));
    assert_eq!(s.term(2), Ok(1));
    assert_eq!(s.term(3), Ok(2));
    assert_eq!(s.term(5), Ok(3));
    assert_eq!(s.term(6), Err(store_err(StorageError::Unavailable)));
}

#[test]
fn entries_checks_bounds() {
    let s = storage_1_to_5();
    s.compact(3).unwrap();
    assert_eq!(
        s.entries(2, 4, None),
        Err(store_err(StorageError::Compacted))
    );
    assert_eq!(
        s.entries(3, 7, None),
        Err(store_err(StorageError::Unavailable))
    );
    assert_eq!(
        terms(&s.entries(3, 6, None).unwrap()),
        vec![(2, 3), (3, 4), (3, 5)]
    );
    assert_eq!(s.entries(4, 4, None), Ok(vec![]));
}

#[test]
fn entries_limits_size_but_returns_at_least_one() {
    let s = storage_1_to_5();
    let one = ent(1, 1).size_bytes();
    assert_eq!(s.entries(1, 6, Some(0)).unwrap().len(), 1);
    assert_eq!(s.entries(1, 6, Some(one - 1)).unwrap().len(), 1);
    assert_eq!(s.entries(1, 6, Some(one)).unwrap().len(), 1);
    assert_eq!(s.entries(1, 6, Some(2 * one)).unwrap().len(), 2);
    assert_eq!(s.entries(1, 6, Some(2 * one + 1)).unwrap().len(), 2);
    assert_eq!(s.entries(1, 6, Some(u64::MAX)).unwrap().len(), 5);
    assert_eq!(
        s.entries(2, 4, Some(u64::MAX)).unwrap(),
        vec![ent(1, 2), ent(2, 3)]
    );
}

#[test]
fn append_truncates_the_conflicting_suffix() {
    let s = storage_1_to_5();
    s.append(&[ent(4, 4), ent(4, 5), ent(4, 6)]).unwrap();
    assert_eq!(
        terms(&s.entries(1, 7, None).unwrap()),
        vec![(1, 1), (1, 2), (2, 3), (4, 4), (4, 5), (4, 6)]
    );
    // A shorter overwrite drops everything after it.
    s.append(&[ent(5, 3)]).unwrap();
    assert_eq!(s.last_index(), Ok(3));
    assert_eq!(s.term(3), Ok(5));
    // Appending right after the end extends.
    s.append(&[ent(5, 4)]).unwrap();
    assert_eq!(s.last_index(), Ok(4));
}

#[test]
fn append_skips_entries_already_compacted() {
    let s = storage_1_to_5();
    s.compact(4).unwrap();
    s.append(&[ent(1, 2), ent(2, 3), ent(3, 4), ent(3, 5), ent(3, 6)])
        .unwrap();
    assert_eq!(s.first_index(), Ok(4));
    assert_eq!(
        terms(&s.entries(4, 7, None).unwrap()),
        vec![(3, 4), (3, 5), (3, 6)]
    );
    // Entirely below the base: nothing changes.
    s.append(&[ent(1, 1), ent(1, 2)]).unwrap();
    assert_eq!(s.last_index(), Ok(6));
}

#[test]
#[should_panic(expected = "gap")]
fn append_with_a_gap_panics() {
    let s = storage_1_to_5();
    let _ = s.append(&[ent(3, 7)]);
}

#[test]
#[should_panic(expected = "not contiguous")]
fn append_of_non_consecutive_entries_panics() {
    let s = storage_1_to_5();
    let _ = s.append(&[ent(3, 6), ent(3, 8)]);
}

#[test]
fn compact_moves_first_index_and_keeps_the_dummy_term() {
    let s = storage_1_to_5();
    s.compact(1).unwrap(); // no-op
    assert_eq!(s.first_index(), Ok(1));
    s.compact(4).unwrap();
    assert_eq!(
        (s.first_index(), s.last_index(), s.term(3)),
        (Ok(4), Ok(5), Ok(2))
    );
    s.compact(2).unwrap(); // older than the base: no-op
    assert_eq!(s.first_index(), Ok(4));
    assert_eq!(s.compact(7), Err(store_err(StorageError::Unavailable)));
    s.compact(6).unwrap(); // everything
    assert_eq!(
        (s.first_index(), s.last_index(), s.term(5)),
        (Ok(6), Ok(5), Ok(3))
    );
    s.append(&[ent(4, 6)]).unwrap();
    assert_eq!(s.entries(6, 7, None).unwrap(), vec![ent(4, 6)]);
}

fn snap(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
    Snapshot {
        data: "state".into(),
        metadata: SnapshotMetadata {
            conf_state: ConfState::from_voters(voters),
            index,
            term,
        },
    }
}

#[test]
fn apply_snapshot_replaces_the_log() {
    let s = storage_1_to_5();
    s.set_hard_state(HardState {
        term: 3,
        vote: 1,
        commit: 2,
    });
    s.apply_snapshot(snap(8, 4, vec![1, 2])).unwrap();
    assert_eq!(
        (s.first_index(), s.last_index(), s.term(8)),
        (Ok(9), Ok(8), Ok(4))
    );
    assert_eq!(
        s.entries(8, 9, None),
        Err(store_err(StorageError::Compacted))
    );
    let state = s.initial_state().unwrap();
    assert_eq!(
        state.hard_state,
        HardState {
            term: 4,
            vote: 1,
            commit: 8
        }
    );
    assert_eq!(state.conf_state.voters, vec![1, 2]);
    assert_eq!(s.snapshot(0).unwrap(), snap(8, 4, vec![1, 2]));
    s.append(&[ent(4, 9)]).unwrap();
    assert_eq!(s.last_index(), Ok(9));
}

#[test]
fn apply_snapshot_rejects_older_or_equal() {
    let s = storage_1_to_5();
    s.compact(4).unwrap();
    assert_eq!(
        s.apply_snapshot(snap(3, 2, vec![1])),
        Err(store_err(StorageError::SnapshotOutOfDate))
    );
    s.apply_snapshot(snap(6, 3, vec![1])).unwrap();
    assert_eq!(
        s.apply_snapshot(snap(6, 3, vec![1])),
        Err(store_err(StorageError::SnapshotOutOfDate))
    );
    assert_eq!(
        s.apply_snapshot(snap(5, 3, vec![1])),
        Err(store_err(StorageError::SnapshotOutOfDate))
    );
    assert_eq!(s.first_index(), Ok(7));
}

#[test]
fn create_snapshot_is_returned_and_must_be_newer() {
    let s = storage_1_to_5();
    let created = s
        .create_snapshot(4, Some(ConfState::from_voters(vec![1, 2, 3])), "app state")
        .unwrap();
    assert_eq!((created.metadata.index, created.metadata.term), (4, 3));
    assert_eq!(&created.data[..], b"app state");
    assert_eq!(s.snapshot(0), Ok(created.clone()));
    assert_eq!(s.snapshot(4), Ok(created.clone()));
    assert_eq!(
        s.last_index(),
        Ok(5),
        "creating a snapshot does not compact"
    );
    assert_eq!(
        s.create_snapshot(4, None, ""),
        Err(store_err(StorageError::SnapshotOutOfDate))
    );
    assert_eq!(
        s.create_snapshot(6, None, ""),
        Err(store_err(StorageError::Unavailable))
    );
    // Without a conf state, the current one is used.
    s.set_conf_state(ConfState::from_voters(vec![7]));
    assert_eq!(
        s.create_snapshot(5, None, "")
            .unwrap()
            .metadata
            .conf_state
            .voters,
        vec![7]
    );
}

#[test]
fn snapshot_falls_back_to_the_commit_index() {
    let s = storage_1_to_5();
    s.set_conf_state(ConfState::from_voters(vec![1]));
    // Nothing committed, nothing created: not available yet.
    assert_eq!(
        s.snapshot(0),
        Err(store_err(StorageError::SnapshotTemporarilyUnavailable))
    );
    s.commit_to(4).unwrap();
    let built = s.snapshot(0).unwrap();
    assert_eq!((built.metadata.index, built.metadata.term), (4, 3));
    assert_eq!(built.metadata.conf_state.voters, vec![1]);
    // A request beyond the commit index cannot be served yet.
    assert_eq!(
        s.snapshot(5),
        Err(store_err(StorageError::SnapshotTemporarilyUnavailable))
    );
    // A created snapshot older than the log base is not returned: it cannot help a follower.
    let old = s.create_snapshot(2, None, "old").unwrap();
    assert_eq!(s.snapshot(0), Ok(old));
    s.compact(4).unwrap();
    assert_eq!(s.snapshot(0).unwrap().metadata.index, 4);
    assert_eq!(s.commit_to(6), Err(store_err(StorageError::Unavailable)));
}

#[test]
fn trigger_snapshot_unavailable_fails_exactly_once() {
    let s = storage_1_to_5();
    s.create_snapshot(3, None, "x").unwrap();
    s.trigger_snapshot_unavailable();
    assert_eq!(
        s.snapshot(0),
        Err(store_err(StorageError::SnapshotTemporarilyUnavailable))
    );
    assert_eq!(s.snapshot(0).unwrap().metadata.index, 3);
    // Through the core as well.
    s.wl().trigger_snapshot_unavailable();
    assert_eq!(
        s.rl().snapshot(0),
        Err(store_err(StorageError::SnapshotTemporarilyUnavailable))
    );
    assert!(s.rl().snapshot(0).is_ok());
}

#[test]
fn trigger_log_unavailable_holds_until_cleared() {
    let s = storage_1_to_5();
    s.trigger_log_unavailable(true);
    assert_eq!(
        s.entries(1, 2, None),
        Err(store_err(StorageError::LogTemporarilyUnavailable))
    );
    assert_eq!(
        s.entries(1, 2, None),
        Err(store_err(StorageError::LogTemporarilyUnavailable))
    );
    s.trigger_log_unavailable(false);
    assert_eq!(s.entries(1, 2, None).unwrap().len(), 1);
}

#[test]
fn clones_share_state_and_the_core_is_usable_directly() {
    let a = MemStorage::new();
    let b = a.clone();
    a.wl().append(&[ent(1, 1), ent(1, 2)]).unwrap();
    a.wl().mut_hard_state().commit = 2;
    assert_eq!(b.last_index(), Ok(2));
    assert_eq!(b.rl().last_index(), Ok(2));
    assert_eq!(b.hard_state().commit, 2);
    b.set_hard_state(HardState {
        term: 1,
        vote: 2,
        commit: 1,
    });
    assert_eq!(
        a.rl().hard_state(),
        HardState {
            term: 1,
            vote: 2,
            commit: 1
        }
    );
    let handle: Box<dyn Storage + Send + Sync> = Box::new(a);
    assert_eq!(handle.entries(1, 3, None).unwrap().len(), 2);
}

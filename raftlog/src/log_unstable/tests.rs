//! The unstable tail on its own: bounds and terms with and without a pending snapshot, the
//! three cases of truncate-and-append, size accounting, and slice bounds.

use super::Unstable;
use crate::types::{Entry, Snapshot, SnapshotMetadata};

fn ents(first: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| Entry::new(*t, first + i as u64, vec![0u8; i]))
        .collect()
}

fn snap(index: u64, term: u64) -> Snapshot {
    Snapshot {
        data: Default::default(),
        metadata: SnapshotMetadata {
            index,
            term,
            ..Default::default()
        },
    }
}

fn size(es: &[Entry]) -> u64 {
    es.iter().map(Entry::size_bytes).sum()
}

#[test]
fn bounds_and_terms() {
    let mut u = Unstable::new(5);
    assert_eq!(
        (u.maybe_first_index(), u.maybe_last_index(), u.maybe_term(5)),
        (None, None, None)
    );
    u.truncate_and_append(&ents(5, &[1, 2]));
    assert_eq!(
        (u.maybe_first_index(), u.maybe_last_index()),
        (None, Some(6))
    );
    assert_eq!(
        (
            u.maybe_term(4),
            u.maybe_term(5),
            u.maybe_term(6),
            u.maybe_term(7)
        ),
        (None, Some(1), Some(2), None)
    );

    u.restore(snap(9, 3));
    assert_eq!(
        (u.maybe_first_index(), u.maybe_last_index(), u.offset),
        (Some(10), Some(9), 10)
    );
    assert_eq!(
        (u.maybe_term(9), u.maybe_term(8), u.maybe_term(10)),
        (Some(3), None, None)
    );
    u.truncate_and_append(&ents(10, &[3]));
    assert_eq!(
        (u.maybe_last_index(), u.maybe_term(10)),
        (Some(10), Some(3))
    );
    u.stable_snap(8);
    assert!(u.snapshot.is_some(), "another snapshot's index: ignored");
    u.stable_snap(9);
    assert!(u.snapshot.is_none());
}

#[test]
fn truncate_and_append_cases() {
    // (offset, existing terms, append at, append terms) -> (offset, indexes/terms after)
    type Row = (
        u64,
        &'static [u64],
        u64,
        &'static [u64],
        u64,
        &'static [(u64, u64)],
    );
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // Directly after: plain append.
        (5, &[1], 6, &[1, 1], 5, &[(5, 1), (6, 1), (7, 1)]),
        (5, &[], 5, &[2], 5, &[(5, 2)]),
        // At or before the offset: everything replaced.
        (5, &[1], 5, &[2, 2], 5, &[(5, 2), (6, 2)]),
        (5, &[1], 4, &[2, 2, 2], 4, &[(4, 2), (5, 2), (6, 2)]),
        (5, &[], 3, &[2], 3, &[(3, 2)]),
        // Inside: truncate, then append.
        (5, &[1, 1, 1], 6, &[2], 5, &[(5, 1), (6, 2)]),
        (5, &[1, 1, 1], 7, &[2, 2], 5, &[(5, 1), (6, 1), (7, 2), (8, 2)]),
    ];
    for (i, (offset, terms, at, new_terms, want_offset, want)) in rows.iter().enumerate() {
        let mut u = Unstable::new(*offset);
        u.truncate_and_append(&ents(*offset, terms));
        u.truncate_and_append(&ents(*at, new_terms));
        let got: Vec<(u64, u64)> = u.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!((u.offset, got.as_slice()), (*want_offset, *want), "row {i}");
        assert_eq!(u.entries_size, size(&u.entries), "row {i}: size");
    }
}

#[test]
#[should_panic(expected = "leaves a gap")]
fn append_with_gap_panics() {
    let mut u = Unstable::new(5);
    u.truncate_and_append(&ents(7, &[1]));
}

#[test]
fn stable_entries_prefix_and_size() {
    let mut u = Unstable::new(1);
    u.truncate_and_append(&ents(1, &[1, 1, 2, 2]));
    u.stable_entries(2, 1);
    assert_eq!((u.offset, u.entries.len()), (3, 2));
    assert_eq!(u.entries_size, size(&u.entries));
    u.stable_entries(4, 1);
    assert_eq!(u.offset, 3, "term mismatch: ignored");
    u.stable_entries(4, 2);
    assert_eq!((u.offset, u.entries.len(), u.entries_size), (5, 0, 0));
}

#[test]
fn slice_within_bounds() {
    let mut u = Unstable::new(3);
    u.truncate_and_append(&ents(3, &[1, 1, 1]));
    assert_eq!(
        u.slice(4, 6).iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(u.slice(6, 6).is_empty());
}

#[test]
#[should_panic(expected = "out of bounds")]
fn slice_below_offset_panics() {
    let mut u = Unstable::new(3);
    u.truncate_and_append(&ents(3, &[1]));
    let _ = u.slice(2, 4);
}

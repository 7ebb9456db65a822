//! The checks `LogStore::append` makes before queueing a batch are all or nothing: a batch refused
//! for a gap in one region leaves no trace in the projected last index of the regions before it
//! in the same batch (a later append that would leave a gap there is still refused), and batches
//! spanning many regions and repeated regions are checked record by record. An acknowledged
//! batch is readable at once, though the writer puts its records in the index only when it next
//! waits for the device (`Shared::defer`). Runs on the sim device.

mod log_harness;

use engine::error::EngineError;
use engine::log::LogBatch;
use log_harness::*;
use raftlog::{Entry, Storage};

fn entries(first: u64, n: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|i| Entry::new(1, i, vec![i as u8; 8]))
        .collect()
}

/// A batch with entries 1 and 2 of each of regions `1..=regions`.
fn first_two_of_each(regions: u64) -> LogBatch {
    let mut b = LogBatch::new();
    for region in 1..=regions {
        b.add_entries(region, entries(1, 2));
    }
    b
}

#[test]
fn a_refused_batch_projects_nothing() {
    let sim = sim_store(7, 4096, 64 * 1024, 8);
    let (mut store, _) = open(&sim, 1 << 20);
    let mut bad = LogBatch::new();
    bad.add_entries(1, entries(1, 3));
    bad.add_entries(2, entries(5, 1)); // region 2 is empty: a gap
    assert!(matches!(
        store.append(bad),
        Err(EngineError::AppendGap { region_id: 2, .. })
    ));
    // Had region 1's entries 1..=3 been projected, entry 4 would be accepted.
    let mut next = LogBatch::new();
    next.add_entries(1, entries(4, 1));
    assert!(matches!(
        store.append(next),
        Err(EngineError::AppendGap {
            region_id: 1,
            last_index: 0,
            ..
        })
    ));
}

#[test]
fn repeated_and_many_regions_are_checked_in_order() {
    let sim = sim_store(8, 4096, 64 * 1024, 8);
    let (mut store, _) = open(&sim, 1 << 20);
    let mut b = first_two_of_each(100);
    b.add_entries(7, entries(3, 2)); // continues region 7 within the batch
    store.write_sync(b).expect("write");
    let mut gap = LogBatch::new();
    gap.add_entries(7, entries(5, 1));
    gap.add_entries(7, entries(7, 1)); // 6 missing, after this batch's own entry 5
    assert!(matches!(
        store.append(gap),
        Err(EngineError::AppendGap {
            region_id: 7,
            index: 7,
            last_index: 5
        })
    ));
    let log = store.region_log(7);
    assert_eq!(log.last_index().expect("last"), 4);
    assert_eq!(store.region_log(100).last_index().expect("last"), 2);
}

#[test]
fn acknowledged_batches_are_readable_at_once_and_in_order() {
    let sim = sim_store(9, 4096, 64 * 1024, 8);
    let (mut store, _) = open(&sim, 1 << 20);
    store.write_sync(first_two_of_each(100)).expect("write a");
    // Nothing has polled since the acknowledgement: the read itself must bring the index up.
    let log = store.region_log(42);
    assert_eq!(log.last_index().expect("last"), 2);
    assert_eq!(log.entries(1, 3, None).expect("entries"), entries(1, 2));
    // Two more batches, the second queued while the first is on the device; both acknowledged
    // before any read. Region 1 then holds 1..=6, region 2 only 1..=2.
    let mut b = LogBatch::new();
    b.add_entries(1, entries(3, 2));
    let tb = store.append(b).expect("append b");
    let mut c = LogBatch::new();
    c.add_entries(1, entries(5, 2));
    let tc = store.append(c).expect("append c");
    let mut acked = Vec::new();
    while acked.len() < 2 {
        let acks = store.poll(true).expect("poll");
        assert!(
            !acks.is_empty(),
            "the writer stopped with b or c unacknowledged"
        );
        for a in acks {
            a.result.expect("durable");
            acked.push(a.ticket);
        }
    }
    assert_eq!(acked, vec![tb, tc]);
    let log = store.region_log(1);
    assert_eq!(log.last_index().expect("last"), 6);
    assert_eq!(log.entries(1, 7, None).expect("entries"), entries(1, 6));
    assert_eq!(store.region_log(2).last_index().expect("last"), 2);
    // And the index survives a reopen the same (recovery rebuilds it from the device).
    drop(store);
    let (store, _) = open(&sim, 1 << 20);
    assert_eq!(
        store.region_log(1).entries(1, 7, None).expect("entries"),
        entries(1, 6)
    );
}

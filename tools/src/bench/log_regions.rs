//! Which entries a log writer appends next: each of `numjobs` writers owns the regions whose
//! `(id - 1) % numjobs` is its number (ids from 1), and spreads each append's entries round-robin
//! over them, one record per region with consecutive indexes, so no two writers ever race on a
//! region's index and no append leaves a gap.

use bytes::Bytes;
use engine::log::LogBatch;
use raftlog::Entry;

/// One writer's regions and where each one's log ends.
#[derive(Debug, Clone)]
pub struct RegionCursor {
    /// `(region id, last index appended)`.
    regions: Vec<(u64, u64)>,
    /// The region the next append starts with.
    next: usize,
    /// Device bytes written (by every writer) when this writer last compacted.
    compacted_at_bytes: u64,
}

impl RegionCursor {
    /// The cursor of writer `writer` of `numjobs` over regions `1..=regions`.
    pub fn new(regions: u64, numjobs: u64, writer: u64) -> RegionCursor {
        assert!(
            writer < numjobs && numjobs <= regions,
            "each writer owns at least one region"
        );
        let regions = (1..=regions)
            .filter(|r| (r - 1) % numjobs == writer)
            .map(|r| (r, 0))
            .collect();
        RegionCursor {
            regions,
            next: 0,
            compacted_at_bytes: 0,
        }
    }

    /// The next `entries_per_write` entries (term 1, each carrying `payload`).
    pub fn next_batch(&mut self, entries_per_write: u64, payload: &Bytes) -> LogBatch {
        let n = self.regions.len() as u64;
        let mut batch = LogBatch::new();
        for i in 0..entries_per_write.min(n) {
            let slot = (self.next + i as usize) % self.regions.len();
            let count = entries_per_write / n + u64::from(i < entries_per_write % n);
            let (region, last) = &mut self.regions[slot];
            let entries = (1..=count)
                .map(|k| Entry::new(1, *last + k, payload.clone()))
                .collect();
            *last += count;
            batch.add_entries(*region, entries);
        }
        self.next = (self.next + (entries_per_write % n) as usize) % self.regions.len();
        batch
    }

    /// Whether `every_bytes` device bytes were written since this writer last compacted
    /// (`written_bytes` is the log's running total); if so, notes the point.
    pub fn compaction_due(&mut self, written_bytes: u64, every_bytes: u64) -> bool {
        if written_bytes - self.compacted_at_bytes < every_bytes {
            return false;
        }
        self.compacted_at_bytes = written_bytes;
        true
    }

    /// `(region, last index)` of every region this writer has appended to.
    pub fn compaction_points(&self) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .filter(|(_, last)| *last > 0)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use engine::log::record::Record;

    use super::*;

    /// `(region, first index, last index)` of each record of `batch`.
    fn spans(batch: &LogBatch) -> Vec<(u64, u64, u64)> {
        batch
            .records()
            .iter()
            .map(|r| match r {
                Record::Entries { region_id, entries } => {
                    let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
                    let first = indexes[0];
                    assert!(
                        indexes.iter().zip(first..).all(|(a, b)| *a == b),
                        "{indexes:?}"
                    );
                    (*region_id, first, first + indexes.len() as u64 - 1)
                }
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    #[test]
    fn writers_own_disjoint_regions() {
        let owned = |w| {
            RegionCursor::new(5, 2, w)
                .regions
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(owned(0), vec![1, 3, 5]);
        assert_eq!(owned(1), vec![2, 4]);
    }

    #[test]
    fn entries_spread_round_robin_with_consecutive_indexes() {
        let payload = Bytes::from_static(b"x");
        let mut cursor = RegionCursor::new(5, 2, 0);
        assert_eq!(
            spans(&cursor.next_batch(7, &payload)),
            vec![(1, 1, 3), (3, 1, 2), (5, 1, 2)]
        );
        assert_eq!(
            spans(&cursor.next_batch(7, &payload)),
            vec![(3, 3, 5), (5, 3, 4), (1, 4, 5)]
        );
        assert_eq!(spans(&cursor.next_batch(1, &payload)), vec![(5, 5, 5)]);
        assert_eq!(spans(&cursor.next_batch(1, &payload)), vec![(1, 6, 6)]);
        assert_eq!(cursor.compaction_points(), vec![(1, 6), (3, 5), (5, 5)]);
    }

    #[test]
    fn compaction_comes_due_every_so_many_bytes() {
        let mut cursor = RegionCursor::new(1, 1, 0);
        assert!(!cursor.compaction_due(99, 100));
        assert!(cursor.compaction_due(100, 100));
        assert!(!cursor.compaction_due(150, 100));
        assert!(cursor.compaction_due(250, 100));
    }
}

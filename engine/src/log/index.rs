//! The in-memory index of the log: for each region, where every entry lives on the device, its
//! latest hard state, configuration and metadata, and a byte-bounded cache of the recent tail
//! entries (so `Storage::entries` on the hot path never touches the device).
//!
//! The index is rebuilt by recovery and updated by the writer only once a batch is durable; it is
//! the single place that decides which segments hold live data.
//!
//! # Cost on the writer's path
//! The writer applies every durable batch before acknowledging it, so this work sits between one
//! device write and the next. Per entries record it is one region lookup, one push of locations,
//! one push into the tail cache and one probe of the segment's per-region maximum; the work is
//! kept to that: regions and segment maxima sit in `FxHashMap`s (region ids are ours, not an
//! adversary's: no SipHash), the writer hands its records over so entries move into the cache
//! instead of being cloned ([`LogIndex::apply_owned`]), and an append past the last index skips
//! the truncation check (which read the back of the region's cache, a cache miss per record).
//! With the writer's own changes of the same round (see `writer`), CPU per 64-record write over
//! 100 regions went from 47 to 33 us (`cargo run --release -p engine --example log_cpu -- 100
//! 256 64 20000`, write_sync figure; 1 region: 21 to 20 us).

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::Bytes;
use raftlog::{ConfState, Entry, HardState};
use rustc_hash::FxHashMap;

use super::record::Record;
use crate::layout::segment::SegmentTable;
use crate::layout::Checkpoint;

/// Where one entry lives on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLoc {
    /// The entry's term (kept here so `term()` never reads the device).
    pub term: u64,
    /// Device offset of the first block of its batch.
    pub batch_offset: u64,
    /// Sequence number of its batch (a cold read checks the blocks still carry it).
    pub sequence: u64,
    /// Position of the entry's header in the batch payload.
    pub payload_pos: u32,
    /// Encoded length (entry header, context and data).
    pub encoded_len: u32,
}

/// Where a batch being applied lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchAt {
    /// Its segment.
    pub segment: u32,
    /// Device offset of its first block.
    pub offset: u64,
    /// Its sequence number.
    pub sequence: u64,
}

/// The kinds of per-region state record whose latest copy pins its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateKind {
    Hard = 0,
    Conf = 1,
    Compact = 2,
    Meta = 3,
}

/// Why a region is refused: its log was damaged before the tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// First index possibly affected.
    pub first_index: u64,
    /// Last index possibly affected (`u64::MAX`: unknown).
    pub last_index: u64,
    /// Where the damage is.
    pub detail: String,
}

/// Everything the log knows about one region.
#[derive(Clone, Debug)]
pub struct RegionIndex {
    /// First available index (compacted index + 1).
    pub first_index: u64,
    /// Term of the entry at `first_index - 1`.
    pub compacted_term: u64,
    /// Locations of entries `first_index..`.
    pub locs: VecDeque<EntryLoc>,
    /// The last `cache.len()` entries, in order.
    pub cache: VecDeque<Entry>,
    /// Latest hard state.
    pub hard_state: HardState,
    /// Latest configuration.
    pub conf_state: ConfState,
    /// Latest metadata.
    pub meta: Option<Bytes>,
    /// Index of the last compaction record (0: none).
    pub compacted_index: u64,
    state_segments: [Option<u32>; 4],
    /// Set when recovery found damage: every read fails.
    pub refused: Option<Refusal>,
}

impl Default for RegionIndex {
    fn default() -> RegionIndex {
        RegionIndex {
            first_index: 1,
            compacted_term: 0,
            locs: VecDeque::new(),
            cache: VecDeque::new(),
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            meta: None,
            compacted_index: 0,
            state_segments: [None; 4],
            refused: None,
        }
    }
}

impl RegionIndex {
    /// Index of the last entry (`first_index - 1` when empty).
    pub fn last_index(&self) -> u64 {
        self.first_index + self.locs.len() as u64 - 1
    }

    /// Index of the first cached entry.
    pub fn cache_first_index(&self) -> u64 {
        self.last_index() + 1 - self.cache.len() as u64
    }

    /// The term at `index`, if known (`first_index - 1 ..= last_index`).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index + 1 == self.first_index {
            return Some(self.compacted_term);
        }
        if index < self.first_index {
            return None;
        }
        self.locs
            .get((index - self.first_index) as usize)
            .map(|l| l.term)
    }
}

/// The index of all regions plus the segment table it keeps the liveness of.
#[derive(Debug)]
pub struct LogIndex {
    regions: FxHashMap<u64, RegionIndex>,
    /// The segment ring.
    pub segments: SegmentTable,
    cache_bytes: u64,
    cache_bytes_max: u64,
    cache_order: VecDeque<(u64, u64)>,
    /// Set when damage could not be bounded to named regions: every region is refused, including
    /// ones the log no longer shows.
    pub refuse_all: Option<Refusal>,
    /// Set once any region was handed out by [`Self::region_mut`] (how recovery marks a
    /// refusal): while clear, no region is refused and appends skip the per-record check.
    maybe_refused: bool,
}

impl LogIndex {
    /// An empty index over `segments`, caching up to `cache_bytes_max` bytes of tail entries.
    pub fn new(segments: SegmentTable, cache_bytes_max: u64) -> LogIndex {
        LogIndex {
            regions: FxHashMap::default(),
            segments,
            cache_bytes: 0,
            cache_bytes_max,
            cache_order: VecDeque::new(),
            refuse_all: None,
            maybe_refused: false,
        }
    }

    /// The region, if the log has ever seen it.
    pub fn region(&self, region_id: u64) -> Option<&RegionIndex> {
        self.regions.get(&region_id)
    }

    /// Why `region_id` is refused, if it is.
    pub fn refusal(&self, region_id: u64) -> Option<&Refusal> {
        self.regions
            .get(&region_id)
            .and_then(|r| r.refused.as_ref())
            .or(self.refuse_all.as_ref())
    }

    /// Whether some region may be refused (see [`Self::refusal`]); `false` means none is.
    pub fn any_refused(&self) -> bool {
        self.maybe_refused || self.refuse_all.is_some()
    }

    /// Mutable access (recovery marks refusals).
    pub fn region_mut(&mut self, region_id: u64) -> &mut RegionIndex {
        self.maybe_refused = true;
        self.region_entry(region_id)
    }

    fn region_entry(&mut self, region_id: u64) -> &mut RegionIndex {
        self.regions.entry(region_id).or_default()
    }

    /// All region ids, ascending.
    pub fn region_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.regions.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Bytes of entries in the tail cache.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// Records that the batch at `at` (whose chain predecessor checksum is `prev_checksum`) of
    /// `bytes` bytes is durable, in the segment table.
    pub fn note_batch(&mut self, at: BatchAt, prev_checksum: u32, bytes: u64) {
        let u = self.segments.usage_mut(at.segment);
        if u.first_batch.is_none() {
            u.first_batch = Some(Checkpoint {
                segment: at.segment,
                offset: at.offset,
                sequence: at.sequence,
                prev_checksum,
            });
        }
        u.batch_count += 1;
        u.bytes_used += bytes;
    }

    /// Applies one durable record found at `batch_offset` in `segment`. `entry_spans` gives each
    /// entry's payload position and length; `cache` says whether to keep the entries in memory
    /// (cloned from `record`).
    pub fn apply(&mut self, record: &Record, entry_spans: &[(u32, u32)], at: BatchAt, cache: bool) {
        match record {
            Record::Entries { region_id, entries } => {
                self.apply_entries(*region_id, Cow::Borrowed(entries), entry_spans, at, cache)
            }
            other => self.apply_state(other, at),
        }
    }

    /// [`Self::apply`] taking the record: its entries move into the tail cache instead of being
    /// cloned (the writer's path, which drops the record afterwards anyway).
    pub fn apply_owned(
        &mut self,
        record: Record,
        entry_spans: &[(u32, u32)],
        at: BatchAt,
        cache: bool,
    ) {
        match record {
            Record::Entries { region_id, entries } => {
                self.apply_entries(region_id, Cow::Owned(entries), entry_spans, at, cache)
            }
            other => self.apply_state(&other, at),
        }
    }

    /// Applies a record other than entries.
    fn apply_state(&mut self, record: &Record, at: BatchAt) {
        let region_id = record.region_id();
        match record {
            Record::Entries { .. } => unreachable!("entries go to apply_entries"),
            Record::HardState { hard_state, .. } => {
                self.region_entry(region_id).hard_state = *hard_state;
                self.move_state(region_id, StateKind::Hard, at.segment);
            }
            Record::ConfState { conf_state, .. } => {
                self.region_entry(region_id).conf_state = conf_state.clone();
                self.move_state(region_id, StateKind::Conf, at.segment);
            }
            Record::Compact { index, term, .. } => {
                self.compact(region_id, *index, *term);
                self.move_state(region_id, StateKind::Compact, at.segment);
            }
            Record::RegionMeta { data, .. } => {
                self.region_entry(region_id).meta = Some(data.clone());
                self.move_state(region_id, StateKind::Meta, at.segment);
            }
            Record::Clean { .. } => self.clean(region_id),
        }
    }

    /// Forgets everything of `region_id`: its states no longer pin their segments and its
    /// entries no longer keep any segment alive (a region of the same id starts over at index
    /// 1, below the entries the old one left in older segments).
    fn clean(&mut self, region_id: u64) {
        let Some(r) = self.regions.remove(&region_id) else {
            return;
        };
        for segment in r.state_segments.into_iter().flatten() {
            self.segments.usage_mut(segment).latest_state_count -= 1;
        }
        self.cache_bytes -= r.cache.iter().map(Entry::size_bytes).sum::<u64>();
        for segment in self.segments.in_use() {
            self.segments
                .usage_mut(segment)
                .region_index_max
                .remove(&region_id);
        }
    }

    fn move_state(&mut self, region_id: u64, kind: StateKind, segment: u32) {
        let old = self.region_entry(region_id).state_segments[kind as usize].replace(segment);
        if let Some(old) = old {
            self.segments.usage_mut(old).latest_state_count -= 1;
        }
        self.segments.usage_mut(segment).latest_state_count += 1;
    }

    fn apply_entries(
        &mut self,
        region_id: u64,
        entries: Cow<'_, [Entry]>,
        spans: &[(u32, u32)],
        at: BatchAt,
        cache: bool,
    ) {
        assert_eq!(entries.len(), spans.len(), "entry spans");
        let first = entries[0].index;
        let last = entries[entries.len() - 1].index;
        let r = self.regions.entry(region_id).or_default();
        if first > r.last_index() + 1 {
            // Only reachable after corruption dropped records (the writer refuses gaps): start the
            // log over at `first` so that what follows is still indexed.
            r.locs.clear();
            r.first_index = first;
            r.compacted_term = 0;
        }
        // Everything from `first` on is replaced, even when the run starts below `first_index`
        // (recovery may meet a region's log mid-way: the compaction point is restated later).
        truncate_from(r, first.max(r.first_index), &mut self.cache_bytes);
        let skip = (r.first_index.saturating_sub(first) as usize).min(entries.len());
        r.locs.extend(
            entries
                .iter()
                .zip(spans)
                .skip(skip)
                .map(|(e, &(pos, len))| EntryLoc {
                    term: e.term,
                    batch_offset: at.offset,
                    sequence: at.sequence,
                    payload_pos: pos,
                    encoded_len: len,
                }),
        );
        if cache && skip < entries.len() {
            let mut keep = |e: Entry| {
                self.cache_bytes += e.size_bytes();
                self.cache_order.push_back((region_id, e.index));
                r.cache.push_back(e);
            };
            match entries {
                Cow::Owned(v) => v.into_iter().skip(skip).for_each(&mut keep),
                Cow::Borrowed(s) => s.iter().skip(skip).cloned().for_each(&mut keep),
            }
        }
        let max = self
            .segments
            .usage_mut(at.segment)
            .region_index_max
            .entry(region_id)
            .or_insert(0);
        *max = (*max).max(last);
        if cache {
            self.evict();
        }
    }

    fn compact(&mut self, region_id: u64, index: u64, term: u64) {
        let r = self.regions.entry(region_id).or_default();
        r.compacted_index = r.compacted_index.max(index);
        if index + 1 == r.first_index {
            // A restated compaction (checkpoint) after recovery met the entries first.
            r.compacted_term = term;
        }
        if index < r.first_index {
            return;
        }
        // A snapshot installed over a log whose entry at `index` has another term: the whole
        // log conflicts with the snapshot (Raft discards it), so nothing of it survives. A
        // compaction always names the term the entry has, so it never takes this branch.
        let conflicts =
            index < r.last_index() && r.locs[(index - r.first_index) as usize].term != term;
        if index >= r.last_index() || conflicts {
            truncate_from(r, r.first_index, &mut self.cache_bytes);
            r.compacted_term = term;
        } else {
            let n = (index + 1 - r.first_index) as usize;
            r.compacted_term = r.locs[n - 1].term;
            r.locs.drain(..n);
            while r.cache.front().is_some_and(|e| e.index <= index) {
                let e = r.cache.pop_front().expect("front checked");
                self.cache_bytes -= e.size_bytes();
            }
        }
        r.first_index = index + 1;
    }

    fn evict(&mut self) {
        while self.cache_bytes > self.cache_bytes_max {
            let Some((region_id, index)) = self.cache_order.pop_front() else {
                break;
            };
            let Some(r) = self.regions.get_mut(&region_id) else {
                continue;
            };
            if r.cache.front().is_some_and(|e| e.index == index) {
                let e = r.cache.pop_front().expect("front checked");
                self.cache_bytes -= e.size_bytes();
            }
        }
        // Truncation and compaction leave stale pairs behind; drop them now and then so the
        // order queue stays proportional to the cache.
        if self.cache_order.len() % 4096 == 0 {
            let cached: usize = self.regions.values().map(|r| r.cache.len()).sum();
            if self.cache_order.len() > 2 * cached {
                let regions = &self.regions;
                self.cache_order.retain(|(rid, i)| {
                    regions.get(rid).is_some_and(|r| {
                        !r.cache.is_empty() && *i >= r.cache_first_index() && *i <= r.last_index()
                    })
                });
            }
        }
    }

    /// Whether segment `segment` holds nothing live: every region's entries in it are compacted
    /// and no region's latest state record is in it.
    pub fn segment_is_dead(&self, segment: u32) -> bool {
        let u = self.segments.usage(segment);
        u.latest_state_count == 0 && self.segment_entries_dead(segment)
    }

    /// Whether every region's entries in `segment` are compacted (states may still pin it).
    pub fn segment_entries_dead(&self, segment: u32) -> bool {
        self.segments
            .usage(segment)
            .region_index_max
            .iter()
            .all(|(rid, &max)| self.regions.get(rid).is_none_or(|r| max < r.first_index))
    }

    /// The records that restate every region's latest state (a checkpoint's contents).
    pub fn latest_state_records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for region_id in self.region_ids() {
            let r = &self.regions[&region_id];
            if r.state_segments[StateKind::Hard as usize].is_some() {
                out.push(Record::HardState {
                    region_id,
                    hard_state: r.hard_state,
                });
            }
            if r.state_segments[StateKind::Conf as usize].is_some() {
                out.push(Record::ConfState {
                    region_id,
                    conf_state: r.conf_state.clone(),
                });
            }
            if r.state_segments[StateKind::Compact as usize].is_some() {
                out.push(Record::Compact {
                    region_id,
                    index: r.first_index - 1,
                    term: r.compacted_term,
                });
            }
            if let (Some(_), Some(meta)) = (r.state_segments[StateKind::Meta as usize], &r.meta) {
                out.push(Record::RegionMeta {
                    region_id,
                    data: meta.clone(),
                });
            }
        }
        out
    }
}

/// Drops entries `from..` of `r` (locations and cache).
fn truncate_from(r: &mut RegionIndex, from: u64, cache_bytes: &mut u64) {
    if from > r.last_index() {
        // Nothing to drop (the common append): the cache holds no entry past the last index,
        // so its back need not be read (a cache miss per record on the writer's path).
        return;
    }
    let keep = (from - r.first_index) as usize;
    r.locs.truncate(keep.min(r.locs.len()));
    while r.cache.back().is_some_and(|e| e.index >= from) {
        let e = r.cache.pop_back().expect("back checked");
        *cache_bytes -= e.size_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{segment::Geometry, MIB};

    fn index(cache_max: u64) -> LogIndex {
        let g = Geometry::plan(8 * MIB, 4096, MIB).expect("geometry");
        LogIndex::new(SegmentTable::new(g, 0), cache_max)
    }

    fn at(segment: u32) -> BatchAt {
        BatchAt {
            segment,
            offset: 0,
            sequence: 1,
        }
    }

    fn ents(region_id: u64, first: u64, n: u64, term: u64) -> (Record, Vec<(u32, u32)>) {
        let entries = (first..first + n)
            .map(|i| Entry::new(term, i, vec![i as u8; 10]))
            .collect();
        (
            Record::Entries { region_id, entries },
            (0..n).map(|i| (i as u32 * 40, 40)).collect(),
        )
    }

    #[test]
    fn overwrite_truncates_the_suffix() {
        let mut ix = index(1 << 20);
        let (r, s) = ents(1, 1, 10, 1);
        ix.apply(&r, &s, at(0), true);
        let (r, s) = ents(1, 6, 2, 2);
        ix.apply(&r, &s, at(0), true);
        let reg = ix.region(1).expect("region");
        assert_eq!((reg.first_index, reg.last_index()), (1, 7));
        assert_eq!(
            (reg.term(5), reg.term(6), reg.term(8)),
            (Some(1), Some(2), None)
        );
        assert_eq!(
            reg.cache.iter().map(|e| e.index).collect::<Vec<_>>(),
            (1..=7).collect::<Vec<_>>()
        );
    }

    #[test]
    fn compaction_frees_segments_only_when_states_are_restated() {
        let mut ix = index(1 << 20);
        let (r, s) = ents(1, 1, 5, 1);
        ix.apply(&r, &s, at(0), true);
        ix.apply(
            &Record::HardState {
                region_id: 1,
                hard_state: HardState {
                    term: 1,
                    vote: 1,
                    commit: 5,
                },
            },
            &[],
            at(0),
            true,
        );
        assert!(!ix.segment_is_dead(0));
        ix.apply(
            &Record::Compact {
                region_id: 1,
                index: 5,
                term: 1,
            },
            &[],
            at(1),
            true,
        );
        assert!(
            ix.segment_entries_dead(0) && !ix.segment_is_dead(0),
            "hard state pins segment 0"
        );
        for rec in ix.latest_state_records() {
            ix.apply(&rec, &[], at(1), true);
        }
        assert!(ix.segment_is_dead(0));
        let reg = ix.region(1).expect("region");
        assert_eq!(
            (reg.first_index, reg.last_index(), reg.term(5)),
            (6, 5, Some(1))
        );
    }

    #[test]
    fn clean_forgets_a_region_and_unpins_its_segments() {
        let mut ix = index(1 << 20);
        let (r, s) = ents(1, 1, 5, 1);
        ix.apply(&r, &s, at(0), true);
        ix.apply(
            &Record::ConfState {
                region_id: 1,
                conf_state: ConfState {
                    voters: vec![1],
                    ..Default::default()
                },
            },
            &[],
            at(0),
            true,
        );
        assert!(!ix.segment_is_dead(0));
        ix.apply(&Record::Clean { region_id: 1 }, &[], at(1), true);
        assert!(ix.region(1).is_none());
        assert_eq!(ix.cache_bytes(), 0);
        assert!(
            ix.segment_is_dead(0),
            "nothing of the old region pins segment 0"
        );
        // The region starts over at index 1, below what segment 0 held of the old one.
        let (r, s) = ents(1, 1, 2, 3);
        ix.apply(&r, &s, at(1), true);
        assert!(ix.segment_is_dead(0));
        let reg = ix.region(1).expect("region");
        assert_eq!(
            (reg.first_index, reg.last_index(), reg.term(2)),
            (1, 2, Some(3))
        );
        assert_eq!(reg.conf_state, ConfState::default());
    }

    #[test]
    fn cache_is_bounded_by_bytes() {
        let mut ix = index(10 * (10 + raftlog::ENTRY_OVERHEAD_BYTES));
        for region_id in 1..=3 {
            let (r, s) = ents(region_id, 1, 10, 1);
            ix.apply(&r, &s, at(0), true);
        }
        assert!(ix.cache_bytes() <= 10 * (10 + raftlog::ENTRY_OVERHEAD_BYTES));
        assert_eq!(ix.region(3).expect("r3").cache.len(), 10);
        assert!(ix.region(1).expect("r1").cache.is_empty());
    }
}

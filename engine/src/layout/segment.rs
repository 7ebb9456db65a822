//! Segment geometry and the in-memory segment table.
//!
//! The device after the superblock area is cut into `segment_count` segments of
//! `segment_size_bytes`. The log uses them as a ring: it appends into the head segment, moves to
//! the next segment (wrapping) when a batch does not fit, and frees segments only from the tail.
//! There is no segment table on disk: the superblock's checkpoint names the tail, the head is
//! found by scanning, and everything outside `tail..=head` is free. Nothing on disk has to be kept
//! consistent with anything else, which is why there is no on-disk table to update (design choice;
//! see `docs/FORMAT.md`).

use rustc_hash::FxHashMap;

use super::superblock::{Checkpoint, Superblock};
use super::{
    BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, SEGMENT_BLOCKS_MIN, SEGMENT_COUNT_MIN, SUPERBLOCK_AREA_BYTES,
};

/// The geometry of a formatted store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Block size in bytes.
    pub block_size: u32,
    /// Segment size in bytes.
    pub segment_size_bytes: u64,
    /// Number of segments.
    pub segment_count: u32,
    /// Device offset of segment 0.
    pub data_start_offset: u64,
}

/// Why a geometry is impossible; the `&'static str` names the option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// A bad option value: `(key, reason)`.
    Invalid(&'static str, String),
    /// Too small a device: `min_bytes`.
    TooSmall(u64),
}

impl Geometry {
    /// The geometry for a device of `device_size_bytes` with the given block and segment sizes.
    pub fn plan(
        device_size_bytes: u64,
        block_size: u32,
        segment_size_bytes: u64,
    ) -> Result<Geometry, GeometryError> {
        if !block_size.is_power_of_two() || !(BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&block_size)
        {
            return Err(GeometryError::Invalid(
                "block_size",
                format!(
                    "{block_size} is not a power of two in {BLOCK_SIZE_MIN}..={BLOCK_SIZE_MAX}"
                ),
            ));
        }
        let min_segment = SEGMENT_BLOCKS_MIN * block_size as u64;
        if segment_size_bytes % block_size as u64 != 0 || segment_size_bytes < min_segment {
            return Err(GeometryError::Invalid(
                "segment_size",
                format!("{segment_size_bytes} must be a multiple of the block size {block_size} and at least {min_segment}"),
            ));
        }
        let min_bytes = SUPERBLOCK_AREA_BYTES + SEGMENT_COUNT_MIN * segment_size_bytes;
        if device_size_bytes < min_bytes {
            return Err(GeometryError::TooSmall(min_bytes));
        }
        let count = (device_size_bytes - SUPERBLOCK_AREA_BYTES) / segment_size_bytes;
        let segment_count = u32::try_from(count).map_err(|_| {
            GeometryError::Invalid("segment_size", format!("{count} segments exceed u32"))
        })?;
        Ok(Geometry {
            block_size,
            segment_size_bytes,
            segment_count,
            data_start_offset: SUPERBLOCK_AREA_BYTES,
        })
    }

    /// The geometry recorded in a superblock.
    pub fn of(sb: &Superblock) -> Geometry {
        Geometry {
            block_size: sb.block_size,
            segment_size_bytes: sb.segment_size_bytes,
            segment_count: sb.segment_count,
            data_start_offset: sb.data_start_offset,
        }
    }

    /// The geometry the log sees: the same grid cut to the log's ring (`0..log_segment_count`).
    pub fn log_of(sb: &Superblock) -> Geometry {
        Geometry {
            segment_count: sb.log_segment_count,
            ..Geometry::of(sb)
        }
    }

    /// The default split of `segment_count` segments: a quarter (at least
    /// [`SEGMENT_COUNT_MIN`]) for the log's ring, the rest for the state store. The log only
    /// holds entries not yet applied and checkpointed, so it needs far less than the data; a
    /// device with fewer than `2 * SEGMENT_COUNT_MIN` segments gives everything to the log
    /// (a log-only store: tests and tiny devices).
    pub fn default_log_segment_count(segment_count: u32) -> u32 {
        let min = SEGMENT_COUNT_MIN as u32;
        if segment_count < 2 * min {
            segment_count
        } else {
            (segment_count / 4).max(min)
        }
    }

    /// Device offset where segment `segment` starts.
    pub fn segment_offset(&self, segment: u32) -> u64 {
        assert!(
            segment < self.segment_count,
            "segment {segment} out of range"
        );
        self.data_start_offset + segment as u64 * self.segment_size_bytes
    }

    /// Device offset one past the end of segment `segment`.
    pub fn segment_end(&self, segment: u32) -> u64 {
        self.segment_offset(segment) + self.segment_size_bytes
    }

    /// The segment holding device offset `offset`.
    pub fn segment_of(&self, offset: u64) -> u32 {
        assert!(
            offset >= self.data_start_offset,
            "offset {offset} before the data area"
        );
        let s = (offset - self.data_start_offset) / self.segment_size_bytes;
        assert!(
            s < self.segment_count as u64,
            "offset {offset} beyond the last segment"
        );
        s as u32
    }

    /// The segment after `segment` in ring order.
    pub fn next_segment(&self, segment: u32) -> u32 {
        (segment + 1) % self.segment_count
    }

    /// Bytes of the whole device the layout covers.
    pub fn end_offset(&self) -> u64 {
        self.data_start_offset + self.segment_count as u64 * self.segment_size_bytes
    }
}

/// What the log knows about one segment in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentUsage {
    /// The first batch written into the segment (where a checkpoint at this segment points).
    pub first_batch: Option<Checkpoint>,
    /// For each region with entries here, the highest entry index here.
    pub region_index_max: FxHashMap<u64, u64>,
    /// How many regions' latest state records (hard state, conf state, compaction, metadata) are
    /// here: the segment cannot be freed while any are.
    pub latest_state_count: u32,
    /// Batches written into the segment.
    pub batch_count: u64,
    /// Bytes written into the segment.
    pub bytes_used: u64,
}

/// The ring of segments: `tail..=head` in ring order is in use, the rest is free.
#[derive(Clone, Debug)]
pub struct SegmentTable {
    geometry: Geometry,
    usage: Vec<SegmentUsage>,
    tail: u32,
    head: u32,
    // Invariant: `durable_tail..=tail` in ring order. Segments from `durable_tail` on are not
    // reused until the superblock naming a later tail is durable.
    durable_tail: u32,
}

impl SegmentTable {
    /// A table whose log starts (and ends) in segment `tail`.
    pub fn new(geometry: Geometry, tail: u32) -> SegmentTable {
        SegmentTable {
            geometry,
            usage: vec![SegmentUsage::default(); geometry.segment_count as usize],
            tail,
            head: tail,
            durable_tail: tail,
        }
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Oldest segment in use.
    pub fn tail(&self) -> u32 {
        self.tail
    }

    /// Segment being appended to.
    pub fn head(&self) -> u32 {
        self.head
    }

    /// Segments in use, tail first.
    pub fn in_use(&self) -> Vec<u32> {
        let mut v = vec![self.tail];
        let mut s = self.tail;
        while s != self.head {
            s = self.geometry.next_segment(s);
            v.push(s);
        }
        v
    }

    /// Usage of one segment.
    pub fn usage(&self, segment: u32) -> &SegmentUsage {
        &self.usage[segment as usize]
    }

    /// Mutable usage of one segment.
    pub fn usage_mut(&mut self, segment: u32) -> &mut SegmentUsage {
        &mut self.usage[segment as usize]
    }

    /// The tail the durable superblock names: segments from here on are not reused.
    pub fn durable_tail(&self) -> u32 {
        self.durable_tail
    }

    /// Records that a superblock naming `tail` as the log's start is durable.
    pub fn set_durable_tail(&mut self, tail: u32) {
        self.durable_tail = tail;
    }

    /// Moves the head to the next segment; `None` if that is the durable tail (the ring is full).
    pub fn advance_head(&mut self) -> Option<u32> {
        let next = self.geometry.next_segment(self.head);
        if next == self.durable_tail {
            return None;
        }
        self.usage[next as usize] = SegmentUsage::default();
        self.head = next;
        Some(next)
    }

    /// Frees the tail segment (the caller has checked it holds nothing live). The head is never
    /// freed.
    pub fn free_tail(&mut self) {
        assert_ne!(self.tail, self.head, "freeing the head segment");
        self.usage[self.tail as usize] = SegmentUsage::default();
        self.tail = self.geometry.next_segment(self.tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MIB;

    #[test]
    fn plan_rejects_bad_options_and_small_devices() {
        assert!(matches!(
            Geometry::plan(64 * MIB, 3000, MIB),
            Err(GeometryError::Invalid("block_size", _))
        ));
        assert!(matches!(
            Geometry::plan(64 * MIB, 4096, 4096 * 3),
            Err(GeometryError::Invalid("segment_size", _))
        ));
        assert_eq!(
            Geometry::plan(2 * MIB, 4096, MIB),
            Err(GeometryError::TooSmall(3 * MIB))
        );
        let g = Geometry::plan(10 * MIB + 5, 4096, MIB).expect("fits");
        assert_eq!(
            (
                g.segment_count,
                g.segment_offset(2),
                g.segment_of(g.segment_offset(8) + 1)
            ),
            (9, 3 * MIB, 8)
        );
    }

    #[test]
    fn ring_never_lets_the_head_reach_the_tail() {
        let g = Geometry::plan(5 * MIB, 4096, MIB).expect("fits");
        let mut t = SegmentTable::new(g, 2);
        assert_eq!(t.advance_head(), Some(3));
        assert_eq!(t.advance_head(), Some(0));
        assert_eq!(t.advance_head(), Some(1));
        assert_eq!(t.advance_head(), None);
        assert_eq!(t.in_use(), vec![2, 3, 0, 1]);
        t.free_tail();
        assert_eq!(
            t.advance_head(),
            None,
            "segment 2 reused before the superblock moved"
        );
        t.set_durable_tail(3);
        assert_eq!(t.advance_head(), Some(2));
    }
}

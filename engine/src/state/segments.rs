//! State segments: their block framing ([`StreamGeometry`]) and the table of which segment is
//! free, in use or emptied, with its generation and space accounting ([`SegmentTable`]).
//!
//! A state block is a [`crate::layout::block`] block with magic `BSST` whose header `sequence`
//! is the generation of the segment's current allocation, `block_index` its position in the
//! segment and `block_count` the segment's blocks. Generations are drawn from one counter per
//! store, persisted in each state root. After a crash, allocations made after the last root may
//! reuse generation numbers; that is harmless because nothing then refers to the blocks written
//! after that root (the loaded index only names blocks made durable before it).
//!
//! # Reuse of emptied segments
//! A segment emptied by compaction may still be referenced by the durable checkpoint, by the
//! checkpoint being written, and by a [`FrozenRegion`](super::FrozenRegion). It returns to the
//! free list only once (1) a checkpoint *begun after* it was emptied has a durable root, and
//! (2) every frozen region created before it was emptied is gone (frozen regions register an
//! epoch in [`Pins`]; creating one is O(1)).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::layout::block::{self, BlockDefect, BlockHeader, BLOCK_HEADER_LEN};
use crate::layout::segment::Geometry;

/// The 4 magic bytes of a state block.
pub const STATE_BLOCK_MAGIC: [u8; 4] = *b"BSST";

/// How a state segment's payload stream maps onto its blocks and the device.
#[derive(Clone, Copy, Debug)]
pub struct StreamGeometry {
    /// The device grid.
    pub geometry: Geometry,
    /// Format nonce (in every block checksum).
    pub nonce: u64,
    /// First state segment (the superblock's `log_segment_count`).
    pub first_segment: u32,
}

impl StreamGeometry {
    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        self.geometry.block_size as usize
    }

    /// Payload bytes per block.
    pub fn payload_capacity(&self) -> usize {
        block::payload_capacity(self.block_size())
    }

    /// Blocks per segment.
    pub fn blocks_per_segment(&self) -> u32 {
        (self.geometry.segment_size_bytes / self.geometry.block_size as u64) as u32
    }

    /// Bytes of a segment's payload stream.
    pub fn stream_capacity(&self) -> u64 {
        self.blocks_per_segment() as u64 * self.payload_capacity() as u64
    }

    /// Number of state segments.
    pub fn segment_count(&self) -> u32 {
        self.geometry.segment_count - self.first_segment
    }

    /// Whether `segment` is a state segment.
    pub fn is_state_segment(&self, segment: u32) -> bool {
        (self.first_segment..self.geometry.segment_count).contains(&segment)
    }

    /// The blocks holding stream bytes `offset..offset + len` (`len > 0`): first and last index.
    pub fn block_span(&self, offset: u64, len: u64) -> (u32, u32) {
        let cap = self.payload_capacity() as u64;
        ((offset / cap) as u32, ((offset + len - 1) / cap) as u32)
    }

    /// Device offset of block `block` of `segment`.
    pub fn block_offset(&self, segment: u32, block: u32) -> u64 {
        self.geometry.segment_offset(segment) + block as u64 * self.geometry.block_size as u64
    }

    /// Seals block `index` of `segment` (generation `generation`) in place.
    pub fn seal(&self, buf: &mut [u8], segment: u32, generation: u64, index: u32, used: usize) {
        let header = BlockHeader {
            checksum: 0,
            sequence: generation,
            block_index: index,
            block_count: self.blocks_per_segment(),
            payload_len: used as u32,
        };
        let offset = self.block_offset(segment, index);
        block::seal_with_magic(buf, STATE_BLOCK_MAGIC, offset, self.nonce, &header);
    }

    /// Verifies block `index` of `segment` as read, against the segment's `generation`; returns
    /// its payload area (whole capacity: bytes past the used length are zero padding).
    pub fn verify<'a>(
        &self,
        buf: &'a [u8],
        segment: u32,
        generation: u64,
        index: u32,
    ) -> Result<&'a [u8], String> {
        let offset = self.block_offset(segment, index);
        let h = block::verify_with_magic(buf, STATE_BLOCK_MAGIC, offset, self.nonce)
            .map_err(|d: BlockDefect| d.to_string())?;
        if h.sequence != generation {
            return Err(format!(
                "generation {} where segment {segment} has generation {generation}",
                h.sequence
            ));
        }
        if h.block_index != index || h.block_count != self.blocks_per_segment() {
            return Err(format!(
                "block {}/{} where block {index}/{} was expected",
                h.block_index,
                h.block_count,
                self.blocks_per_segment()
            ));
        }
        Ok(&buf[BLOCK_HEADER_LEN..])
    }
}

/// Live frozen regions by the epoch they were created in; shared with every
/// [`PinGuard`](Pin).
#[derive(Clone, Debug, Default)]
pub struct Pins(Arc<Mutex<BTreeMap<u64, usize>>>);

/// Keeps segments emptied after its creation from reuse until dropped.
#[derive(Debug)]
pub struct Pin {
    pins: Pins,
    epoch: u64,
}

impl Pins {
    /// Registers a frozen view created in `epoch`.
    pub fn pin(&self, epoch: u64) -> Pin {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *m.entry(epoch).or_insert(0) += 1;
        Pin {
            pins: self.clone(),
            epoch,
        }
    }

    /// Oldest epoch of a live frozen view.
    pub fn oldest(&self) -> Option<u64> {
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        m.keys().next().copied()
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut m = self.pins.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.epoch) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.epoch);
            }
        }
    }
}

/// The life of a state segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentState {
    /// On the free list.
    Free,
    /// Allocated: may hold live records.
    Active,
    /// Emptied by compaction; reusable once a checkpoint numbered `checkpoint_needed` or later
    /// is durable and no frozen view older than `epoch` is alive.
    Emptied {
        /// Checkpoint (by begin number) whose durable root releases it.
        checkpoint_needed: u64,
        /// The pin epoch it was emptied in.
        epoch: u64,
    },
}

/// What the table knows about one state segment.
#[derive(Clone, Copy, Debug)]
pub struct SegmentInfo {
    /// Its state.
    pub state: SegmentState,
    /// Generation of its current allocation.
    pub generation: u64,
    /// Bytes of records the index points at.
    pub live_bytes: u64,
    /// Bytes of its stream used.
    pub written_bytes: u64,
}

/// Every state segment's state, generation and accounting; the free list.
#[derive(Debug)]
pub struct SegmentTable {
    first: u32,
    infos: Vec<SegmentInfo>,
    free: BTreeSet<u32>,
    generation_next: u64,
    /// Begin number of the newest checkpoint whose root is durable.
    durable_checkpoint: u64,
    /// Begin number of the newest checkpoint begun.
    begun_checkpoint: u64,
    epoch: u64,
    pins: Pins,
}

impl SegmentTable {
    /// A table with every state segment free.
    pub fn new(first: u32, count: u32, generation_next: u64) -> SegmentTable {
        let info = SegmentInfo {
            state: SegmentState::Free,
            generation: 0,
            live_bytes: 0,
            written_bytes: 0,
        };
        SegmentTable {
            first,
            infos: vec![info; count as usize],
            free: (first..first + count).collect(),
            generation_next: generation_next.max(1),
            durable_checkpoint: 0,
            begun_checkpoint: 0,
            epoch: 0,
            pins: Pins::default(),
        }
    }

    /// The info of `segment`.
    pub fn info(&self, segment: u32) -> &SegmentInfo {
        &self.infos[(segment - self.first) as usize]
    }

    fn info_mut(&mut self, segment: u32) -> &mut SegmentInfo {
        &mut self.infos[(segment - self.first) as usize]
    }

    /// Next generation to allocate.
    pub fn generation_next(&self) -> u64 {
        self.generation_next
    }

    /// The frozen-view registry.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// The current pin epoch (a frozen view created now registers it).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Marks `segment` in use with `generation` (open: from the checkpoint).
    pub fn mark_active(&mut self, segment: u32, generation: u64, written_bytes: u64) {
        self.free.remove(&segment);
        let i = self.info_mut(segment);
        i.state = SegmentState::Active;
        i.generation = generation;
        i.written_bytes = i.written_bytes.max(written_bytes);
        self.generation_next = self.generation_next.max(generation + 1);
    }

    /// Allocates a free segment with a new generation; `None` unless more than `reserve`
    /// segments are free.
    pub fn allocate(&mut self, reserve: usize) -> Option<(u32, u64)> {
        self.reclaim();
        if self.free.len() <= reserve {
            return None;
        }
        let segment = self.free.pop_first()?;
        let generation = self.generation_next;
        self.generation_next += 1;
        *self.info_mut(segment) = SegmentInfo {
            state: SegmentState::Active,
            generation,
            live_bytes: 0,
            written_bytes: 0,
        };
        Some((segment, generation))
    }

    /// Returns reusable emptied segments to the free list.
    pub fn reclaim(&mut self) {
        let oldest_pin = self.pins.oldest();
        for (i, info) in self.infos.iter_mut().enumerate() {
            if let SegmentState::Emptied {
                checkpoint_needed,
                epoch,
            } = info.state
            {
                let unpinned = oldest_pin.is_none_or(|p| p >= epoch);
                if self.durable_checkpoint >= checkpoint_needed && unpinned {
                    info.state = SegmentState::Free;
                    info.written_bytes = 0;
                    self.free.insert(self.first + i as u32);
                }
            }
        }
    }

    /// Records that `segment` holds nothing live any more (compaction is done with it).
    pub fn empty(&mut self, segment: u32) {
        self.epoch += 1;
        let needed = self.begun_checkpoint + 1;
        let epoch = self.epoch;
        let i = self.info_mut(segment);
        debug_assert_eq!(i.live_bytes, 0, "emptying a segment with live bytes");
        i.state = SegmentState::Emptied {
            checkpoint_needed: needed,
            epoch,
        };
    }

    /// Frees `segment` at once (open: nothing can reference it).
    pub fn free_now(&mut self, segment: u32) {
        let i = self.info_mut(segment);
        i.state = SegmentState::Free;
        i.live_bytes = 0;
        i.written_bytes = 0;
        self.free.insert(segment);
    }

    /// A checkpoint begins; returns its number.
    pub fn checkpoint_begun(&mut self) -> u64 {
        self.begun_checkpoint += 1;
        self.begun_checkpoint
    }

    /// The root of checkpoint `number` is durable.
    pub fn checkpoint_durable(&mut self, number: u64) {
        self.durable_checkpoint = self.durable_checkpoint.max(number);
        self.reclaim();
    }

    /// Adds (or with a negative `delta`, removes) live bytes of `segment`.
    pub fn add_live(&mut self, segment: u32, delta: i64) {
        let i = self.info_mut(segment);
        let v = i.live_bytes as i64 + delta;
        debug_assert!(v >= 0, "live bytes of segment {segment} below zero");
        i.live_bytes = v.max(0) as u64;
    }

    /// Sets the stream bytes used in `segment`.
    pub fn set_written(&mut self, segment: u32, written_bytes: u64) {
        self.info_mut(segment).written_bytes = written_bytes;
    }

    /// Every segment not free: `(segment, info)`.
    pub fn in_use(&self) -> impl Iterator<Item = (u32, &SegmentInfo)> {
        self.infos
            .iter()
            .enumerate()
            .filter(|(_, i)| i.state != SegmentState::Free)
            .map(|(n, i)| (self.first + n as u32, i))
    }

    /// Free segments.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emptied_segment_waits_for_checkpoint_and_pins() {
        let mut t = SegmentTable::new(4, 3, 1);
        let (a, ga) = t.allocate(0).expect("a");
        let (b, gb) = t.allocate(0).expect("b");
        assert_eq!((a, b, ga, gb), (4, 5, 1, 2));
        let pin = t.pins().pin(t.epoch());
        let n = t.checkpoint_begun();
        t.empty(a);
        t.checkpoint_durable(n);
        assert_eq!(
            t.free_count(),
            1,
            "freed by a checkpoint begun before the compaction"
        );
        let m = t.checkpoint_begun();
        t.checkpoint_durable(m);
        assert_eq!(t.free_count(), 1, "freed under a frozen view");
        drop(pin);
        t.reclaim();
        assert_eq!(t.free_count(), 2);
        let (c, gc) = t.allocate(0).expect("c");
        assert_eq!((c, gc), (4, 3), "reused with a new generation");
    }
}

//! [`StateStore`]: regions, applying commands, reads, frozen regions and snapshot installs.
//! Checkpoints are in [`super::checkpoint`], compaction in [`super::compact`].

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::checkpoint::CheckpointState;
use super::command::{Command, CommandOutcome, Op, OpResult};
use super::compact::CompactCursor;
use super::index::{estimate_bytes, Key, RegionIndex};
use super::record;
use super::segments::{Pin, SegmentState, SegmentTable, StreamGeometry};
use super::session::Verdict;
use super::stream::{decode_checked, StateReader, StreamWriter};
use super::{InstallId, RegionState, SegmentStats, StateConfig, ValueLoc};
use crate::error::{EngineError, Result};
use crate::io::Io;
use crate::layout::{Geometry, Superblock};

/// A region's state and index.
#[derive(Clone, Debug)]
pub(crate) struct Region {
    pub(crate) state: RegionState,
    pub(crate) index: RegionIndex,
}

/// A snapshot install in progress: its values are written, its index is staged.
#[derive(Debug)]
pub(crate) struct Staging {
    pub(crate) state: RegionState,
    pub(crate) index: RegionIndex,
    last_key: Option<Key>,
}

/// Estimated checkpoint bytes per key (a 28-byte key with its location and length fields).
pub(crate) const CHECKPOINT_BYTES_PER_KEY_EST: u64 = 48;

/// Bytes a sequential scan reads at once.
pub(crate) const READ_AHEAD_BYTES: usize = 256 * 1024;

/// Blocks of one segment read ahead by a sequential scan.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    segment: u32,
    generation: u64,
    first_block: u32,
    data: Vec<u8>,
}

/// One command being applied: the region's index (changed in place), the live-byte changes
/// to make when it commits, and how to undo its index changes if it fails.
struct Batch {
    map: RegionIndex,
    live: Vec<(u32, i64)>,
    undo: Vec<(Key, Option<ValueLoc>)>,
}

impl Batch {
    fn insert(&mut self, key: &[u8], loc: ValueLoc) {
        let k = Key::new(key);
        let old = self.map.insert(k.clone(), loc);
        self.live.push((loc.segment, loc.len as i64));
        if let Some(o) = old {
            self.live.push((o.segment, -(o.len as i64)));
        }
        self.undo.push((k, old));
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(o) = self.map.remove(key) {
            self.live.push((o.segment, -(o.len as i64)));
            self.undo.push((Key::new(key), Some(o)));
        }
    }

    fn rollback(&mut self) {
        for (k, old) in self.undo.drain(..).rev() {
            match old {
                Some(loc) => self.map.insert(k, loc),
                None => self.map.remove(k.as_bytes()),
            };
        }
    }
}

/// Fewest state segments a store works with: the head being written, at least one kept free
/// for a checkpoint, and one for compaction to copy into.
pub const STATE_SEGMENT_COUNT_MIN: u32 = 3;

/// The state store of one device. See the module docs of [`super`].
pub struct StateStore {
    pub(crate) config: StateConfig,
    pub(crate) sg: StreamGeometry,
    pub(crate) writer: StreamWriter,
    pub(crate) reader: StateReader,
    pub(crate) table: SegmentTable,
    pub(crate) regions: BTreeMap<u64, Region>,
    pub(crate) ckpt: CheckpointState,
    pub(crate) compaction: Option<CompactCursor>,
    pub(crate) compaction_cache: ReadAhead,
    pub(crate) installs: BTreeMap<InstallId, Staging>,
    next_install: u64,
    scratch: Vec<u8>,
}

impl StateStore {
    /// Opens the state partition of the store described by `sb` (refused with
    /// [`EngineError::StateTooSmall`] below [`STATE_SEGMENT_COUNT_MIN`] segments): loads the newest valid
    /// checkpoint (or starts empty when there is none). `write_io` and `read_io` are two handles
    /// onto the device (the reader's is shared with [`StateStore::reader`]).
    pub fn open(
        write_io: Box<dyn Io>,
        read_io: Box<dyn Io>,
        sb: &Superblock,
        config: StateConfig,
    ) -> Result<StateStore> {
        config.validate()?;
        let sg = StreamGeometry {
            geometry: Geometry::of(sb),
            nonce: sb.format_nonce,
            first_segment: sb.log_segment_count,
        };
        if sb.segment_size_bytes > u32::MAX as u64 {
            return Err(EngineError::InvalidConfig {
                key: "segment_size",
                reason: "state segments must be smaller than 4 GiB".into(),
            });
        }
        if sg.segment_count() < STATE_SEGMENT_COUNT_MIN {
            return Err(EngineError::StateTooSmall {
                device: config.device_label.clone(),
                segment_count: sg.segment_count(),
                min_count: STATE_SEGMENT_COUNT_MIN,
            });
        }
        let label = config.device_label.clone();
        let reader = StateReader::new(read_io, sg, label.clone());
        let writer = StreamWriter::new(write_io, sg, label, config.write_buffer_bytes);
        let mut store = StateStore {
            config,
            sg,
            writer,
            reader,
            table: SegmentTable::new(sg.first_segment, sg.segment_count(), 1),
            regions: BTreeMap::new(),
            ckpt: CheckpointState::default(),
            compaction: None,
            compaction_cache: ReadAhead::default(),
            installs: BTreeMap::new(),
            next_install: 1,
            scratch: Vec::new(),
        };
        store.load()?;
        Ok(store)
    }

    /// Ids of the regions held.
    pub fn region_ids(&self) -> Vec<u64> {
        self.regions.keys().copied().collect()
    }

    /// A region's state.
    pub fn region_state(&self, region_id: u64) -> Option<RegionState> {
        self.regions.get(&region_id).map(|r| r.state.clone())
    }

    /// Number of keys of a region.
    pub fn key_count(&self, region_id: u64) -> Option<u64> {
        self.regions.get(&region_id).map(|r| r.index.len() as u64)
    }

    pub(crate) fn region_mut(&mut self, region_id: u64) -> Result<&mut Region> {
        self.regions
            .get_mut(&region_id)
            .ok_or(EngineError::StateRegionUnknown { region_id })
    }

    pub(crate) fn region(&self, region_id: u64) -> Result<&Region> {
        self.regions
            .get(&region_id)
            .ok_or(EngineError::StateRegionUnknown { region_id })
    }

    /// Adds a region with no data.
    pub fn create_region(&mut self, state: RegionState) -> Result<()> {
        let region_id = state.region_id;
        if self.regions.contains_key(&region_id) {
            return Err(EngineError::StateRegionExists { region_id });
        }
        let index = RegionIndex::new();
        self.regions.insert(region_id, Region { state, index });
        Ok(())
    }

    /// Removes a region and its data (space is reclaimed by compaction).
    pub fn remove_region(&mut self, region_id: u64) -> Result<()> {
        let r = self
            .regions
            .remove(&region_id)
            .ok_or(EngineError::StateRegionUnknown { region_id })?;
        self.release(&r.index);
        Ok(())
    }

    /// Subtracts every location of `index` from the live bytes.
    pub(crate) fn release(&mut self, index: &RegionIndex) {
        for loc in index.values() {
            self.table.add_live(loc.segment, -(loc.len as i64));
        }
    }

    /// Applies one command atomically at `index` (which must follow the applied index) and
    /// records the applied index and term with it. Ops apply in order, each seeing the ones
    /// before it; a failed compare-and-swap is reported and does not stop the batch.
    ///
    /// At most once: a command whose client's session ([`super::session`]) already holds its
    /// sequence or a later one is not applied (the index is, as a no-op) and answers the first
    /// time's results (`Ok`, same sequence) or
    /// [`CommandError::Duplicate`](super::CommandError::Duplicate). An applied command
    /// of a client (`client_id != 0`) is recorded in the region's session table.
    ///
    /// On an error (`Err` of the outer result: a full partition, an I/O error) nothing of the
    /// command, its index or its session is applied.
    pub fn apply(
        &mut self,
        region_id: u64,
        index: u64,
        term: u64,
        cmd: &Command,
    ) -> Result<CommandOutcome> {
        let r = self.region_mut(region_id)?;
        check_index(&r.state, index)?;
        if let Verdict::Answer(answer) = r.state.sessions.verdict(cmd.client_id, cmd.sequence) {
            r.state.applied_index = index;
            r.state.applied_term = term;
            return Ok(answer);
        }
        // Taken out (not cloned) so that nodes no frozen view shares are changed in place.
        let mut batch = Batch {
            map: std::mem::take(&mut r.index),
            live: Vec::new(),
            undo: Vec::new(),
        };
        let mut results = Vec::with_capacity(cmd.ops.len());
        let mut failed = None;
        for op in &cmd.ops {
            match self.apply_op(region_id, &mut batch, op) {
                Ok(res) => results.push(res),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_some() {
            batch.rollback();
        }
        let clients_max = self.config.session_clients_max;
        let r = self.region_mut(region_id)?;
        r.index = batch.map;
        if let Some(e) = failed {
            return Err(e);
        }
        r.state.applied_index = index;
        r.state.applied_term = term;
        let (client, sequence) = (cmd.client_id, cmd.sequence);
        r.state
            .sessions
            .record(client, sequence, index, &results, clients_max);
        for (segment, delta) in batch.live {
            self.table.add_live(segment, delta);
        }
        Ok(Ok(results))
    }

    /// A region's applied index and term.
    pub fn applied(&self, region_id: u64) -> Option<(u64, u64)> {
        self.regions
            .get(&region_id)
            .map(|r| (r.state.applied_index, r.state.applied_term))
    }

    fn apply_op(&mut self, region_id: u64, b: &mut Batch, op: &Op) -> Result<OpResult> {
        match op {
            Op::Put { key, value } => {
                let loc = self.append_value(region_id, key, value)?;
                b.insert(key, loc);
                Ok(OpResult::Done)
            }
            Op::Delete { key } => {
                b.remove(key);
                Ok(OpResult::Done)
            }
            Op::DeleteRange { start, end } => {
                if start < end {
                    let range = (Bound::Included(&start[..]), Bound::Excluded(&end[..]));
                    let doomed: Vec<Key> = b
                        .map
                        .range::<_, [u8]>(range)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        b.remove(k.as_bytes());
                    }
                }
                Ok(OpResult::Done)
            }
            Op::Cas { key, expected, new } => {
                let previous = match b.map.get(&key[..]) {
                    Some(loc) => Some(self.read_value(*loc, region_id, key)?),
                    None => None,
                };
                let succeeded = previous == *expected;
                if succeeded {
                    match new {
                        Some(v) => {
                            let loc = self.append_value(region_id, key, v)?;
                            b.insert(key, loc);
                        }
                        None => b.remove(key),
                    }
                }
                Ok(OpResult::Cas {
                    succeeded,
                    previous,
                })
            }
        }
    }

    /// Appends a value record to the write stream.
    pub(crate) fn append_value(
        &mut self,
        region_id: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<ValueLoc> {
        let len = record::value_len(key.len(), value.len()) as u64;
        self.ensure_room(len, false)?;
        let mut rec = std::mem::take(&mut self.scratch);
        rec.clear();
        record::encode_value(&mut rec, region_id, key, value);
        let loc = self.writer.append(&rec);
        self.scratch = rec;
        let loc = loc?;
        self.note_written();
        Ok(loc)
    }

    /// Records the head segment's stream length in the table.
    pub(crate) fn note_written(&mut self) {
        if let Some((segment, _, pos)) = self.writer.head() {
            self.table.set_written(segment, pos);
        }
    }

    /// Makes sure the head segment has room for a record of `len` bytes, moving to a new
    /// segment if not.
    /// Values leave enough free segments for a checkpoint (see
    /// [`StateStore::checkpoint_reserve_segments`]); checkpoint records (`for_checkpoint`) may
    /// use them, so a full partition can still checkpoint and release emptied segments.
    pub(crate) fn ensure_room(&mut self, len: u64, for_checkpoint: bool) -> Result<()> {
        let max = super::stream::record_area(&self.sg);
        if len > max {
            return Err(EngineError::StateRecordTooLarge {
                size_bytes: len,
                max_bytes: max,
            });
        }
        if self.writer.head().is_some() && self.writer.room() >= len {
            return Ok(());
        }
        let reserve = if for_checkpoint {
            0
        } else {
            self.checkpoint_reserve_segments()
        };
        let (segment, generation) = self.table.allocate(reserve).ok_or(EngineError::StateFull {
            segment_count: self.sg.segment_count(),
        })?;
        self.reader.set_generation(segment, generation);
        if let Some((old, end)) = self.writer.switch(segment, generation)? {
            self.table.set_written(old, end);
        }
        self.ckpt.on_new_segment(segment);
        Ok(())
    }

    /// Free segments kept for the next checkpoint: its estimated size (entries at about
    /// [`CHECKPOINT_BYTES_PER_KEY_EST`] bytes, plus region states and their sessions) in
    /// segments, plus one.
    pub(crate) fn checkpoint_reserve_segments(&self) -> usize {
        let keys: u64 = self.regions.values().map(|r| r.index.len() as u64).sum();
        let sessions: u64 = self
            .regions
            .values()
            .map(|r| r.state.sessions.encoded_len() as u64)
            .sum();
        let bytes =
            keys * CHECKPOINT_BYTES_PER_KEY_EST + self.regions.len() as u64 * 256 + sessions;
        bytes.div_ceil(super::stream::record_area(&self.sg)) as usize + 1
    }

    /// Advances the applied index of a region for an entry without data ops.
    pub fn set_applied(&mut self, region_id: u64, index: u64, term: u64) -> Result<()> {
        let r = self.region_mut(region_id)?;
        check_index(&r.state, index)?;
        r.state.applied_index = index;
        r.state.applied_term = term;
        Ok(())
    }

    /// Sets a region's configuration.
    pub fn set_conf_state(&mut self, region_id: u64, cs: raftlog::ConfState) -> Result<()> {
        self.region_mut(region_id)?.state.conf_state = cs;
        Ok(())
    }

    /// Sets a region's opaque metadata.
    pub fn set_meta(&mut self, region_id: u64, meta: Bytes) -> Result<()> {
        self.region_mut(region_id)?.state.meta = meta;
        Ok(())
    }

    /// Reads the value record at `loc`, from memory when it is not on the device yet.
    pub(crate) fn read_value(&self, loc: ValueLoc, region_id: u64, key: &[u8]) -> Result<Bytes> {
        let rec = self.read_stream(loc.segment, loc.offset as u64, loc.len as u64)?;
        decode_checked(
            &self.sg,
            &self.config.device_label,
            loc,
            Bytes::from(rec),
            region_id,
            key,
        )
    }

    /// Blocks `first..=last` of `segment`, payload areas concatenated (the block being filled
    /// gives only its filled part): buffered, in flight or on the device.
    pub(crate) fn read_blocks_any(&self, segment: u32, first: u32, last: u32) -> Result<Vec<u8>> {
        if (first..=last).all(|b| self.writer.mem_block(segment, b).is_none()) {
            return self.reader.read_blocks(segment, first, last);
        }
        let cap = self.sg.payload_capacity();
        let mut out = Vec::with_capacity((last - first + 1) as usize * cap);
        for b in first..=last {
            match self.writer.mem_block(segment, b) {
                Some(p) => out.extend_from_slice(p),
                None => out.extend_from_slice(&self.reader.read_blocks(segment, b, b)?),
            }
        }
        Ok(out)
    }

    /// Stream bytes `offset..offset + len` of `segment`: buffered, in flight or on the device.
    pub(crate) fn read_stream(&self, segment: u32, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (first, last) = self.sg.block_span(offset, len);
        let blocks = self.read_blocks_any(segment, first, last)?;
        self.slice_blocks(segment, first, &blocks, offset, len)
    }

    /// Stream bytes `offset..offset + len` out of `blocks` (read from block `first`).
    fn slice_blocks(
        &self,
        segment: u32,
        first: u32,
        blocks: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let cap = self.sg.payload_capacity() as u64;
        let at = offset - first as u64 * cap;
        if (blocks.len() as u64) < at + len {
            return Err(EngineError::Corrupt {
                what: "state record",
                offset: self.sg.block_offset(segment, first),
                detail: format!("stream bytes {offset}+{len} of segment {segment} not written"),
            });
        }
        Ok(blocks[at as usize..(at + len) as usize].to_vec())
    }

    /// [`StateStore::read_stream`] for sequential scans (checkpoint walk, compaction): reads
    /// [`READ_AHEAD_BYTES`] at a time into `ra` and serves later reads from there.
    pub(crate) fn read_ahead(
        &self,
        ra: &mut ReadAhead,
        segment: u32,
        generation: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let cap = self.sg.payload_capacity() as u64;
        let start = ra.first_block as u64 * cap;
        let hit = ra.segment == segment
            && ra.generation == generation
            && offset >= start
            && offset + len <= start + ra.data.len() as u64;
        if !hit {
            let (first, last) = self.sg.block_span(offset, len);
            let ahead = (READ_AHEAD_BYTES / self.sg.block_size()).max(1) as u32;
            let end = (first + ahead - 1)
                .max(last)
                .min(self.sg.blocks_per_segment() - 1);
            let data = match self.read_blocks_any(segment, first, end) {
                Ok(d) => d,
                // Ahead of the written part of the segment: read just what was asked.
                Err(_) if end > last => self.read_blocks_any(segment, first, last)?,
                Err(e) => return Err(e),
            };
            *ra = ReadAhead {
                segment,
                generation,
                first_block: first,
                data,
            };
        }
        self.slice_blocks(segment, ra.first_block, &ra.data, offset, len)
    }

    /// The value of `key` in a region.
    pub fn get(&self, region_id: u64, key: &[u8]) -> Result<Option<Bytes>> {
        let r = self.region(region_id)?;
        match r.index.get(key) {
            Some(loc) => Ok(Some(self.read_value(*loc, region_id, key)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries of a region from `start` (inclusive) to `end` (exclusive; `None`:
    /// to the end), in key order.
    pub fn scan(
        &self,
        region_id: u64,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let r = self.region(region_id)?;
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let found: Vec<(&Key, ValueLoc)> = r
            .index
            .range::<_, [u8]>((Bound::Included(start), hi))
            .take(limit)
            .map(|(k, loc)| (k, *loc))
            .collect();
        // Values near blocks still in the write buffer or in flight (see `in_memory`) are read
        // one by one, each block from memory or the device; the rest with a few coalesced
        // device reads, all in flight together.
        let on_device: Vec<(ValueLoc, &[u8])> = found
            .iter()
            .filter(|(_, loc)| !self.in_memory(*loc))
            .map(|(k, loc)| (*loc, k.as_bytes()))
            .collect();
        let mut read = self.reader.read_values(region_id, &on_device)?.into_iter();
        let mut out = Vec::with_capacity(found.len());
        for (k, loc) in found {
            let v = if self.in_memory(loc) {
                self.read_value(loc, region_id, k.as_bytes())?
            } else {
                read.next().ok_or(EngineError::StateBusy {
                    what: "a batched read returned fewer values than asked",
                })?
            };
            out.push((Bytes::copy_from_slice(k.as_bytes()), v));
        }
        Ok(out)
    }

    /// Whether the record at `loc` must be read on its own rather than by a coalesced device
    /// read: a block of it, or one a coalesced span may reach over after it (up to
    /// [`COALESCE_GAP_BLOCKS`](super::stream::COALESCE_GAP_BLOCKS)), is still in the writer's
    /// memory. Writes complete out of order, so an in-flight block can sit between two landed
    /// records; a span over it would read it before it lands. ([`StateStore::read_value`] takes
    /// each block from memory or the device.)
    pub(crate) fn in_memory(&self, loc: ValueLoc) -> bool {
        if !self.writer.holds_segment(loc.segment) {
            return false;
        }
        let (first, last) = self.sg.block_span(loc.offset as u64, loc.len as u64);
        let reach =
            (last + super::stream::COALESCE_GAP_BLOCKS).min(self.sg.blocks_per_segment() - 1);
        (first..=reach).any(|b| self.writer.mem_block(loc.segment, b).is_some())
    }

    /// A reader of value locations on the device (for snapshot builders).
    pub fn reader(&self) -> StateReader {
        self.reader.clone()
    }

    /// Space accounting of every segment in use.
    pub fn segment_stats(&self) -> Vec<SegmentStats> {
        self.table
            .in_use()
            .map(|(segment, i)| SegmentStats {
                segment,
                generation: i.generation,
                live_bytes: i.live_bytes,
                written_bytes: i.written_bytes,
                pinned: matches!(i.state, SegmentState::Emptied { .. }),
            })
            .collect()
    }

    /// Estimated memory of the index (all regions), for the benchmark.
    pub fn index_memory_bytes(&self) -> u64 {
        let (mut len, mut heap) = (0usize, 0usize);
        for r in self.regions.values() {
            len += r.index.len();
            heap += r.index.keys().map(Key::heap_bytes).sum::<usize>();
        }
        estimate_bytes(len, heap)
    }

    /// A frozen view of a region: its state and keys now, readable while the store goes on.
    /// Buffered values are written out first (a padded block at most) so the view reads the
    /// device only; the view keeps compaction from reusing the segments it reads until dropped.
    pub fn freeze(&mut self, region_id: u64) -> Result<FrozenRegion> {
        let r = self.region(region_id)?.clone();
        self.writer.pad_and_submit()?;
        self.note_written();
        self.writer.wait_all()?;
        let pin = self.table.pins().pin(self.table.epoch());
        Ok(FrozenRegion {
            state: r.state,
            index: r.index,
            reader: self.reader.clone(),
            _pin: pin,
        })
    }

    /// Starts installing a snapshot of a region (which replaces the region's data and state
    /// when finished).
    pub fn install_begin(&mut self, state: RegionState) -> Result<InstallId> {
        if self
            .installs
            .values()
            .any(|s| s.state.region_id == state.region_id)
        {
            return Err(EngineError::StateBusy {
                what: "an install of this region is in progress",
            });
        }
        let id = InstallId(self.next_install);
        self.next_install += 1;
        let staging = Staging {
            state,
            index: RegionIndex::new(),
            last_key: None,
        };
        self.installs.insert(id, staging);
        Ok(id)
    }

    /// Adds one entry to an install; keys must ascend.
    pub fn install_put(&mut self, id: InstallId, key: &[u8], value: &[u8]) -> Result<()> {
        let s = self
            .installs
            .get(&id)
            .ok_or(EngineError::UnknownInstall { install_id: id.0 })?;
        if s.last_key.as_ref().is_some_and(|k| k.as_bytes() >= key) {
            return Err(EngineError::InstallKeyOrder {
                region_id: s.state.region_id,
            });
        }
        let region_id = s.state.region_id;
        let loc = self.append_value(region_id, key, value)?;
        self.table.add_live(loc.segment, loc.len as i64);
        let s = self.installs.get_mut(&id).expect("checked above");
        let k = Key::new(key);
        s.index.insert(k.clone(), loc);
        s.last_key = Some(k);
        Ok(())
    }

    /// Switches the installed data in for the region and makes it durable with a checkpoint
    /// (finishing one in progress first). A crash before that checkpoint's root is durable
    /// leaves the old state.
    pub fn install_finish(&mut self, id: InstallId) -> Result<super::CheckpointInfo> {
        if self.ckpt.is_active() {
            self.checkpoint_run()?;
        }
        let s = self
            .installs
            .remove(&id)
            .ok_or(EngineError::UnknownInstall { install_id: id.0 })?;
        let region_id = s.state.region_id;
        if let Some(old) = self.regions.remove(&region_id) {
            self.release(&old.index);
        }
        let region = Region {
            state: s.state,
            index: s.index,
        };
        self.regions.insert(region_id, region);
        self.checkpoint()
    }

    /// Drops an install and its staged data.
    pub fn install_abort(&mut self, id: InstallId) {
        if let Some(s) = self.installs.remove(&id) {
            self.release(&s.index);
        }
    }
}

fn check_index(state: &RegionState, index: u64) -> Result<()> {
    if index <= state.applied_index {
        return Err(EngineError::StaleApply {
            region_id: state.region_id,
            index,
            applied_index: state.applied_index,
        });
    }
    Ok(())
}

/// A point-in-time view of one region (O(1) to take), readable from any thread. Keeps the
/// segments it may read from reuse until dropped.
pub struct FrozenRegion {
    state: RegionState,
    index: RegionIndex,
    reader: StateReader,
    _pin: Pin,
}

impl FrozenRegion {
    /// The region's state (applied index and term, configuration, metadata) at the freeze.
    pub fn state(&self) -> &RegionState {
        &self.state
    }

    /// Keys in the view.
    pub fn key_count(&self) -> u64 {
        self.index.len() as u64
    }

    /// Entries in key order after `after` (exclusive; `None`: from the first), until `max_bytes`
    /// of keys and values are gathered (at least one entry). Returns the entries and whether
    /// the view is exhausted.
    pub fn read_from(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool)> {
        let lo = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut it = self
            .index
            .range::<_, [u8]>((lo, Bound::Unbounded))
            .peekable();
        let mut picked: Vec<(ValueLoc, &[u8])> = Vec::new();
        let mut bytes = 0usize;
        while let Some((k, loc)) = it.peek() {
            let size = loc.len as usize - record::VALUE_OVERHEAD;
            if !picked.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            picked.push((**loc, k.as_bytes()));
            it.next();
        }
        let done = it.peek().is_none();
        // One batch of coalesced reads, all in flight together (a frozen view's values are all
        // on the device).
        let values = self.reader.read_values(self.state.region_id, &picked)?;
        let out = picked
            .iter()
            .zip(values)
            .map(|((_, k), v)| (Bytes::copy_from_slice(k), v))
            .collect();
        Ok((out, done))
    }
}

// A frozen region goes to the snapshot worker's thread; readers are shared between threads.
const _: () = {
    const fn send<T: Send>() {}
    const fn send_sync<T: Send + Sync>() {}
    send::<FrozenRegion>();
    send_sync::<StateReader>();
};

//! Checkpoints: the index and region states written into the state write stream in bounded
//! steps, made current by a state root; and loading the newest one at open.
//!
//! [`StateStore::checkpoint_begin`] freezes the regions (a clone of each index, O(regions), and
//! of each session table, O(clients)). Each [`StateStore::checkpoint_step`] appends checkpoint
//! records (region states first, then client sessions and `(key, location)` entries region by
//! region, then the segment table, then an end item) to the
//! same stream the values go to, so applies interleave freely. The last step pads and submits
//! the buffered blocks, waits for every write, flushes the device (covering every value the
//! frozen index names, all written before the flush), and then writes the root durably to the
//! copy the current root is not in. Until that root write completes the previous root is in
//! force: a crash at any point leaves the previous checkpoint.
//!
//! At open the newest valid root is followed: the stream is walked from the checkpoint's first
//! record (skipping values and padding, following links) until all of its records are read;
//! their bodies must match the root's length and CRC. Segments the checkpoint lists or the walk
//! passes through are in use; every other state segment is free, and writing resumes in a
//! fresh segment.

use bytes::Bytes;

use super::index::{Key, RegionIndex};
use super::record::{self, StateRoot};
use super::store::{ReadAhead, Region, StateStore};
use super::{CheckpointInfo, RegionState};
use crate::error::{EngineError, Result};
use crate::layout::le::{get_u32, get_u64};
use crate::layout::{STATE_ROOT_LEN, STATE_ROOT_OFFSETS};

/// Body item kinds (inside checkpoint records).
mod item {
    pub const REGION: u8 = 1;
    pub const ENTRIES: u8 = 2;
    pub const SEGMENT: u8 = 3;
    pub const END: u8 = 4;
    pub const SESSIONS: u8 = 5;
}

/// Largest checkpoint record body aimed for (a single item may exceed it).
const RECORD_BODY_TARGET: usize = 64 * 1024;
/// Entries per `ENTRIES` item at most.
const ENTRIES_PER_ITEM_MAX: usize = 1024;
/// Bytes of sessions per `SESSIONS` item at most (or one session, which is smaller than
/// 4 KiB plus 32 bytes): small beside the record body target.
const SESSIONS_ITEM_BYTES_MAX: usize = 8 * 1024;

/// Checkpoint bookkeeping of a store.
#[derive(Debug, Default)]
pub(crate) struct CheckpointState {
    /// Sequence of the newest durable root (0: none).
    pub(crate) root_sequence: u64,
    /// Copy holding it.
    pub(crate) root_copy: u32,
    /// Segments holding its records.
    pub(crate) durable_segments: Vec<u32>,
    pub(crate) active: Option<Active>,
}

#[derive(Debug)]
enum Phase {
    States,
    Sessions { region: usize, after: Option<u64> },
    Entries { region: usize, after: Option<Key> },
    Segments,
    End,
}

/// A checkpoint being written.
#[derive(Debug)]
pub(crate) struct Active {
    number: u64,
    sequence: u64,
    regions: Vec<Region>,
    phase: Phase,
    body: Vec<u8>,
    start: Option<(u32, u32, u64)>,
    body_bytes: u64,
    record_count: u32,
    crc: crc32fast::Hasher,
    /// Segments holding its records (or passed through between them).
    pub(crate) segments: Vec<u32>,
}

impl CheckpointState {
    /// Whether a checkpoint is being written.
    pub(crate) fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The write stream moved to `segment`.
    pub(crate) fn on_new_segment(&mut self, segment: u32) {
        if let Some(a) = &mut self.active {
            a.segments.push(segment);
        }
    }

    /// Whether `segment` holds records of the durable or the active checkpoint.
    pub(crate) fn holds(&self, segment: u32) -> bool {
        self.durable_segments.contains(&segment)
            || self
                .active
                .as_ref()
                .is_some_and(|a| a.segments.contains(&segment))
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_list(out: &mut Vec<u8>, ids: &[u64]) {
    put_u32(out, ids.len() as u32);
    for &id in ids {
        put_u64(out, id);
    }
}

fn encode_region(out: &mut Vec<u8>, s: &RegionState, key_count: u64) {
    out.push(item::REGION);
    put_u64(out, s.region_id);
    put_u64(out, s.applied_index);
    put_u64(out, s.applied_term);
    put_u64(out, key_count);
    let cs = &s.conf_state;
    out.push(cs.auto_leave as u8);
    for list in [
        &cs.voters,
        &cs.learners,
        &cs.voters_outgoing,
        &cs.learners_next,
    ] {
        put_list(out, list);
    }
    put_u32(out, s.meta.len() as u32);
    out.extend_from_slice(&s.meta);
}

impl StateStore {
    /// Sequence number of the checkpoint in force (0: none was ever written).
    pub fn checkpoint_sequence(&self) -> u64 {
        self.ckpt.root_sequence
    }

    /// Starts a checkpoint: freezes every region's state and index (O(regions)).
    pub fn checkpoint_begin(&mut self) -> Result<()> {
        if self.ckpt.is_active() {
            return Err(EngineError::StateBusy {
                what: "a checkpoint is in progress",
            });
        }
        let number = self.table.checkpoint_begun();
        let mut segments = Vec::new();
        if let Some((segment, _, _)) = self.writer.head() {
            segments.push(segment);
        }
        self.ckpt.active = Some(Active {
            number,
            sequence: self.ckpt.root_sequence + 1,
            regions: self.regions.values().cloned().collect(),
            phase: Phase::States,
            body: Vec::new(),
            start: None,
            body_bytes: 0,
            record_count: 0,
            crc: crc32fast::Hasher::new(),
            segments,
        });
        Ok(())
    }

    /// Writes about `budget_bytes` more of the checkpoint (at least one record); returns what
    /// it made durable once its root is written.
    pub fn checkpoint_step(&mut self, budget_bytes: u64) -> Result<Option<CheckpointInfo>> {
        let Some(mut a) = self.ckpt.active.take() else {
            return Err(EngineError::StateBusy {
                what: "no checkpoint in progress",
            });
        };
        let r = self.step_inner(&mut a, budget_bytes);
        let done = matches!(r, Ok(true));
        if done {
            return self.checkpoint_finish(a).map(Some);
        }
        self.ckpt.active = Some(a);
        r.map(|_| None)
    }

    /// A whole checkpoint (finishing one in progress first).
    pub fn checkpoint(&mut self) -> Result<CheckpointInfo> {
        if self.ckpt.is_active() {
            self.checkpoint_run()?;
        }
        self.checkpoint_begin()?;
        self.checkpoint_run()
    }

    /// Runs the active checkpoint to its end.
    pub(crate) fn checkpoint_run(&mut self) -> Result<CheckpointInfo> {
        loop {
            if let Some(info) = self.checkpoint_step(u64::MAX)? {
                return Ok(info);
            }
        }
    }

    /// Encodes items until `budget` bytes of records went out; `Ok(true)` once all have.
    fn step_inner(&mut self, a: &mut Active, budget: u64) -> Result<bool> {
        let mut written = 0u64;
        loop {
            match &mut a.phase {
                Phase::States => {
                    for i in 0..a.regions.len() {
                        let r = &a.regions[i];
                        encode_region(&mut a.body, &r.state, r.index.len() as u64);
                        if a.body.len() >= self.body_target() {
                            written += self.emit(a)?;
                        }
                    }
                    a.phase = Phase::Sessions {
                        region: 0,
                        after: None,
                    };
                }
                Phase::Sessions { region, after } => {
                    let Some(r) = a.regions.get(*region) else {
                        a.phase = Phase::Entries {
                            region: 0,
                            after: None,
                        };
                        continue;
                    };
                    match encode_sessions(&mut a.body, r, *after) {
                        Some(last) => *after = Some(last),
                        None => {
                            *region += 1;
                            *after = None;
                        }
                    }
                    if a.body.len() >= self.body_target() {
                        written += self.emit(a)?;
                    }
                }
                Phase::Entries { region, after } => {
                    let Some(r) = a.regions.get(*region) else {
                        a.phase = Phase::Segments;
                        continue;
                    };
                    let (last, more) = encode_entries(&mut a.body, r, after.as_ref());
                    match (last, more) {
                        (Some(k), true) => *after = Some(k),
                        _ => {
                            *region += 1;
                            *after = None;
                        }
                    }
                    if a.body.len() >= self.body_target() {
                        written += self.emit(a)?;
                    }
                }
                Phase::Segments => {
                    for (segment, info) in self.table.in_use() {
                        a.body.push(item::SEGMENT);
                        put_u32(&mut a.body, segment);
                        put_u64(&mut a.body, info.generation);
                        put_u64(&mut a.body, info.written_bytes);
                    }
                    a.phase = Phase::End;
                }
                Phase::End => {
                    a.body.push(item::END);
                    put_u32(&mut a.body, a.regions.len() as u32);
                    self.emit(a)?;
                    return Ok(true);
                }
            }
            if written >= budget.max(1) {
                return Ok(false);
            }
        }
    }

    fn body_target(&self) -> usize {
        RECORD_BODY_TARGET.min(self.sg.stream_capacity() as usize / 4)
    }

    /// Appends the pending body as one checkpoint record; returns its bytes.
    fn emit(&mut self, a: &mut Active) -> Result<u64> {
        if a.body.is_empty() {
            return Ok(0);
        }
        let len = (a.body.len() + record::CHECKPOINT_OVERHEAD) as u64;
        self.ensure_room(len, true)?;
        let (segment, generation, _) = self.writer.head().expect("ensure_room made a head");
        if a.segments.last() != Some(&segment) {
            a.segments.push(segment);
        }
        let mut rec = Vec::with_capacity(len as usize);
        record::encode_checkpoint(&mut rec, a.sequence, &a.body);
        let loc = self.writer.append(&rec)?;
        self.note_written();
        a.start.get_or_insert((loc.segment, loc.offset, generation));
        a.body_bytes += a.body.len() as u64;
        a.crc.update(&a.body);
        a.record_count += 1;
        a.body.clear();
        Ok(len)
    }

    fn checkpoint_finish(&mut self, a: Active) -> Result<CheckpointInfo> {
        self.writer.pad_and_submit()?;
        self.note_written();
        self.writer.flush_device()?;
        let (start_segment, start_offset, start_generation) =
            a.start.expect("a checkpoint has at least its end record");
        let root = StateRoot {
            sequence: a.sequence,
            generation_next: self.table.generation_next(),
            start_segment,
            start_offset,
            start_generation,
            body_bytes: a.body_bytes,
            record_count: a.record_count,
            body_crc: a.crc.clone().finalize(),
        };
        let copy = if self.ckpt.root_sequence == 0 {
            0
        } else {
            1 - self.ckpt.root_copy
        };
        let offset = STATE_ROOT_OFFSETS[copy as usize];
        let mut image = vec![0u8; STATE_ROOT_LEN];
        root.encode(copy, offset, self.sg.nonce, &mut image);
        self.writer.write_durable(offset, &image)?;
        self.ckpt.root_sequence = a.sequence;
        self.ckpt.root_copy = copy;
        self.ckpt.durable_segments = a.segments;
        self.table.checkpoint_durable(a.number);
        tracing::debug!(
            device = %self.config.device_label,
            sequence = a.sequence,
            body_bytes = a.body_bytes,
            regions = a.regions.len(),
            "state checkpoint durable"
        );
        Ok(CheckpointInfo {
            regions: a
                .regions
                .iter()
                .map(|r| (r.state.region_id, r.state.applied_index))
                .collect(),
            bytes: a.body_bytes,
        })
    }
}

/// Appends one `SESSIONS` item of region `r` with clients after `after` if any is left;
/// returns the last client written (`None`: none was left).
fn encode_sessions(out: &mut Vec<u8>, r: &Region, after: Option<u64>) -> Option<u64> {
    let at = out.len();
    out.push(item::SESSIONS);
    put_u64(out, r.state.region_id);
    put_u32(out, 0);
    let (count, last) = r
        .state
        .sessions
        .encode_from(out, after, SESSIONS_ITEM_BYTES_MAX);
    if count == 0 {
        out.truncate(at);
        return None;
    }
    out[at + 9..at + 13].copy_from_slice(&count.to_le_bytes());
    last
}

/// Appends one `ENTRIES` item of region `r` after key `after`; returns the last key written
/// and whether more may follow.
fn encode_entries(out: &mut Vec<u8>, r: &Region, after: Option<&Key>) -> (Option<Key>, bool) {
    use std::ops::Bound;
    let lo = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_bytes()));
    let mut it = r.index.range::<_, [u8]>((lo, Bound::Unbounded));
    let count_at = out.len() + 9;
    out.push(item::ENTRIES);
    put_u64(out, r.state.region_id);
    put_u32(out, 0);
    let mut count = 0u32;
    let mut last = None;
    for (k, loc) in it.by_ref() {
        put_u32(out, k.as_bytes().len() as u32);
        out.extend_from_slice(k.as_bytes());
        put_u32(out, loc.segment);
        put_u32(out, loc.offset);
        put_u32(out, loc.len);
        count += 1;
        last = Some(k.clone());
        if count as usize >= ENTRIES_PER_ITEM_MAX {
            break;
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    let more = count as usize == ENTRIES_PER_ITEM_MAX;
    (last, more)
}

/// What a checkpoint body holds.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) regions: Vec<Region>,
    pub(crate) segments: Vec<(u32, u64, u64)>,
}

/// Reads the fields of a checkpoint body; every length is checked.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        if self.b.len() - self.pos < n {
            return Err(format!("item truncated at body byte {}", self.pos));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(get_u32(self.take(4)?, 0))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(get_u64(self.take(8)?, 0))
    }
    fn list(&mut self) -> std::result::Result<Vec<u64>, String> {
        let n = self.u32()? as usize;
        if n > (self.b.len() - self.pos) / 8 {
            return Err(format!("list of {n} ids overruns the body"));
        }
        (0..n).map(|_| self.u64()).collect()
    }
}

/// Parses a checkpoint body.
pub(crate) fn decode_body(body: &[u8]) -> std::result::Result<Loaded, String> {
    let mut c = Cursor { b: body, pos: 0 };
    let mut out = Loaded::default();
    let mut by_id = std::collections::BTreeMap::new();
    loop {
        match c.u8()? {
            item::REGION => {
                let region_id = c.u64()?;
                let applied_index = c.u64()?;
                let applied_term = c.u64()?;
                let _key_count = c.u64()?;
                let auto_leave = c.u8()? != 0;
                let conf_state = raftlog::ConfState {
                    voters: c.list()?,
                    learners: c.list()?,
                    voters_outgoing: c.list()?,
                    learners_next: c.list()?,
                    auto_leave,
                };
                let n = c.u32()? as usize;
                let meta = Bytes::copy_from_slice(c.take(n)?);
                let state = RegionState {
                    region_id,
                    applied_index,
                    applied_term,
                    conf_state,
                    meta,
                    sessions: Default::default(),
                };
                by_id.insert(region_id, out.regions.len());
                out.regions.push(Region {
                    state,
                    index: RegionIndex::new(),
                });
            }
            item::ENTRIES => {
                let region_id = c.u64()?;
                let n = c.u32()?;
                let at = *by_id
                    .get(&region_id)
                    .ok_or(format!("entries of unknown region {region_id}"))?;
                for _ in 0..n {
                    let kl = c.u32()? as usize;
                    let key = Key::new(c.take(kl)?);
                    let loc = super::ValueLoc {
                        segment: c.u32()?,
                        offset: c.u32()?,
                        len: c.u32()?,
                    };
                    out.regions[at].index.insert(key, loc);
                }
            }
            item::SESSIONS => {
                let region_id = c.u64()?;
                let n = c.u32()?;
                let at = *by_id
                    .get(&region_id)
                    .ok_or(format!("sessions of unknown region {region_id}"))?;
                let used = out.regions[at]
                    .state
                    .sessions
                    .decode_into(&c.b[c.pos..], n)
                    .map_err(|e| format!("region {region_id}: {e}"))?;
                c.pos += used;
            }
            item::SEGMENT => {
                let s = c.u32()?;
                let g = c.u64()?;
                let w = c.u64()?;
                out.segments.push((s, g, w));
            }
            item::END => {
                let n = c.u32()? as usize;
                if n != out.regions.len() || c.pos != body.len() {
                    return Err("end item does not close the body".into());
                }
                return Ok(out);
            }
            k => return Err(format!("unknown checkpoint item {k}")),
        }
    }
}

/// A segment the checkpoint walk passed: `(segment, generation, stream end reached)`.
type Walked = (u32, u64, u64);

impl StateStore {
    /// Loads the newest valid checkpoint (open); an empty store when there is none.
    pub(crate) fn load(&mut self) -> Result<()> {
        let Some((copy, root)) = self.read_roots()? else {
            tracing::info!(device = %self.config.device_label, "no state root: empty state store");
            return Ok(());
        };
        let (body, walked) = self.walk(&root)?;
        let corrupt = |detail: String| EngineError::Corrupt {
            what: "state checkpoint",
            offset: STATE_ROOT_OFFSETS[copy as usize],
            detail,
        };
        if body.len() as u64 != root.body_bytes || crc32fast::hash(&body) != root.body_crc {
            return Err(corrupt(format!(
                "checkpoint {} bodies do not match the root's length and checksum",
                root.sequence
            )));
        }
        let loaded = decode_body(&body).map_err(corrupt)?;
        let sg = self.sg;
        self.table = super::segments::SegmentTable::new(
            sg.first_segment,
            sg.segment_count(),
            root.generation_next,
        );
        for &(segment, generation, written) in &loaded.segments {
            if !sg.is_state_segment(segment) {
                return Err(corrupt(format!(
                    "lists segment {segment} outside the state partition"
                )));
            }
            self.table.mark_active(segment, generation, written);
            self.reader.set_generation(segment, generation);
        }
        for &(segment, generation, end) in &walked {
            self.table.mark_active(segment, generation, end);
        }
        for r in loaded.regions {
            for loc in r.index.values() {
                if !sg.is_state_segment(loc.segment)
                    || self.table.info(loc.segment).state != super::segments::SegmentState::Active
                {
                    return Err(corrupt(format!(
                        "a key names segment {} not in use",
                        loc.segment
                    )));
                }
                self.table.add_live(loc.segment, loc.len as i64);
            }
            self.regions.insert(r.state.region_id, r);
        }
        let walked_segments: Vec<u32> = walked.iter().map(|w| w.0).collect();
        let unreferenced: Vec<u32> = self
            .table
            .in_use()
            .filter(|(s, i)| i.live_bytes == 0 && !walked_segments.contains(s))
            .map(|(s, _)| s)
            .collect();
        for s in unreferenced {
            self.table.free_now(s);
        }
        self.ckpt.root_sequence = root.sequence;
        self.ckpt.root_copy = copy;
        self.ckpt.durable_segments = walked_segments;
        tracing::info!(device = %self.config.device_label, sequence = root.sequence,
            regions = self.regions.len(), "state checkpoint loaded");
        Ok(())
    }

    /// The newest valid state root and its copy.
    fn read_roots(&mut self) -> Result<Option<(u32, StateRoot)>> {
        let len = STATE_ROOT_LEN.max(self.sg.block_size());
        let mut best: Option<(u32, StateRoot)> = None;
        for (copy, &offset) in STATE_ROOT_OFFSETS.iter().enumerate() {
            let image = self.reader.read_raw(offset, len)?;
            let root =
                StateRoot::decode(copy as u32, offset, self.sg.nonce, &image[..STATE_ROOT_LEN]);
            if let Some(r) = root {
                if best.is_none_or(|(_, b)| r.sequence > b.sequence) {
                    best = Some((copy as u32, r));
                }
            }
        }
        Ok(best)
    }

    /// Walks the stream from the checkpoint's first record and gathers its bodies; returns
    /// them and the segments passed `(segment, generation, stream end reached)`.
    fn walk(&mut self, root: &StateRoot) -> Result<(Vec<u8>, Vec<Walked>)> {
        let sg = self.sg;
        let cap = sg.payload_capacity() as u64;
        let stream_end = sg.stream_capacity();
        let corrupt = |segment: u32, pos: u64, detail: String| EngineError::Corrupt {
            what: "state checkpoint",
            offset: sg.block_offset(segment, (pos / cap) as u32),
            detail,
        };
        let (mut seg, mut gen, mut pos) = (
            root.start_segment,
            root.start_generation,
            root.start_offset as u64,
        );
        if !sg.is_state_segment(seg) {
            return Err(corrupt(
                sg.first_segment,
                0,
                format!("root names segment {seg}"),
            ));
        }
        self.reader.set_generation(seg, gen);
        let mut walked = vec![(seg, gen, pos)];
        let mut body = Vec::with_capacity(root.body_bytes as usize);
        let mut records = 0u32;
        let mut ra = ReadAhead::default();
        while records < root.record_count {
            if pos >= stream_end {
                return Err(corrupt(
                    seg,
                    pos.min(stream_end - 1),
                    "stream ends without a link".into(),
                ));
            }
            let peek_len = (record::HEADER_PEEK as u64).min(stream_end - pos);
            let head = self.read_ahead(&mut ra, seg, gen, pos, peek_len)?;
            let (kind, len) = record::peek(&head).map_err(|d| corrupt(seg, pos, d.to_string()))?;
            if kind == record::KIND_PADDING {
                pos = (pos / cap + 1) * cap;
                continue;
            }
            if pos + len > stream_end {
                return Err(corrupt(
                    seg,
                    pos,
                    format!("record of {len} bytes overruns the segment"),
                ));
            }
            match kind {
                record::KIND_LINK => {
                    let rec = self.read_ahead(&mut ra, seg, gen, pos, len)?;
                    let (next, next_gen) =
                        record::decode_link(&rec).map_err(|d| corrupt(seg, pos, d.to_string()))?;
                    if !sg.is_state_segment(next) {
                        return Err(corrupt(seg, pos, format!("link to segment {next}")));
                    }
                    if let Some(w) = walked.last_mut() {
                        w.2 = stream_end;
                    }
                    (seg, gen, pos) = (next, next_gen, 0);
                    self.reader.set_generation(seg, gen);
                    walked.push((seg, gen, 0));
                    continue;
                }
                record::KIND_CHECKPOINT => {
                    let rec = self.read_ahead(&mut ra, seg, gen, pos, len)?;
                    let (sequence, b) = record::decode_checkpoint(&rec)
                        .map_err(|d| corrupt(seg, pos, d.to_string()))?;
                    if sequence == root.sequence {
                        body.extend_from_slice(b);
                        records += 1;
                    }
                }
                _ => {}
            }
            pos += len;
            if let Some(w) = walked.last_mut() {
                w.2 = w.2.max(pos);
            }
        }
        Ok((body, walked))
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A small body with one item of each kind, built by hand to the documented layout.
    fn sample_body() -> Vec<u8> {
        let mut b = vec![item::REGION];
        for v in [7u64, 10, 2, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(0);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        for _ in 0..3 {
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        // One session: client 9, sequence 4, index 8, results [Done, Cas { false, "x" }].
        b.push(item::SESSIONS);
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for v in [9u64, 4, 8] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let results = [2, 0, 0, 0, 1, 1, 0, 0, 0, 2, 0, 1, 1, 0, 0, 0, b'x'];
        b.extend_from_slice(&(results.len() as u32).to_le_bytes());
        b.extend_from_slice(&results);
        b.push(item::ENTRIES);
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(b'k');
        for v in [3u32, 0, 30] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(item::SEGMENT);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(&4096u64.to_le_bytes());
        b.push(item::END);
        b.extend_from_slice(&1u32.to_le_bytes());
        b
    }

    #[test]
    fn the_sample_body_decodes() {
        let loaded = decode_body(&sample_body()).expect("valid");
        let s = loaded.regions[0].state.sessions.get(9).expect("session");
        assert_eq!((s.sequence, s.index), (4, 8));
        let previous = Some(Bytes::from_static(b"x"));
        let cas = crate::state::OpResult::Cas {
            succeeded: false,
            previous,
        };
        assert_eq!(s.results(), Some(vec![crate::state::OpResult::Done, cas]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn body_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_body(&bytes);
        }

        #[test]
        fn mutated_bodies_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<Option<usize>>(),
        ) {
            let mut b = sample_body();
            for (at, x) in flips {
                let i = at % b.len();
                b[i] ^= x;
            }
            if let Some(c) = cut {
                b.truncate(c % (b.len() + 1));
            }
            let _ = decode_body(&b);
        }
    }
}

//! Compaction: copying the live values of mostly-dead segments forward, in bounded steps.
//!
//! A victim is an in-use segment whose garbage ratio (`1 - live / written`) reaches
//! `compaction_garbage_ratio`, other than the write head and the segments holding the durable
//! or the active checkpoint's records. Each [`StateStore::compact_step`] reads at most
//! `compaction_step_bytes` of the victim's stream in order; a value record is copied to the
//! head only if its region's index (or a staged install) still points at exactly that location,
//! and the index is switched to the copy. The scan ends once the victim's live bytes reach zero;
//! the segment is then emptied, and reused only after a checkpoint begun later has a durable
//! root and no frozen region older than the emptying is alive (see [`super::segments`]).

use bytes::Bytes;

use super::index::Key;
use super::record;
use super::segments::SegmentState;
use super::store::{ReadAhead, StateStore};
use super::ValueLoc;
use crate::error::{EngineError, Result};

/// Where the compaction of one segment is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CompactCursor {
    segment: u32,
    generation: u64,
    pos: u64,
}

impl StateStore {
    /// One bounded compaction step. `Ok(false)` when no segment needs compaction.
    pub fn compact_step(&mut self) -> Result<bool> {
        let cursor = match self.compaction {
            Some(c) if self.table.info(c.segment).generation == c.generation => c,
            _ => match self.pick_victim() {
                Some(c) => c,
                None => return Ok(false),
            },
        };
        self.compaction = Some(cursor);
        let done = self.compact_some(cursor)?;
        if done {
            self.compaction = None;
            self.table.empty(cursor.segment);
            tracing::debug!(device = %self.config.device_label, segment = cursor.segment,
                "state segment compacted");
        }
        Ok(true)
    }

    fn pick_victim(&self) -> Option<CompactCursor> {
        let head = self.writer.head().map(|h| h.0);
        let ratio = self.config.compaction_garbage_ratio;
        self.table
            .in_use()
            .filter(|(s, i)| {
                i.state == SegmentState::Active
                    && Some(*s) != head
                    && i.written_bytes > 0
                    && !self.ckpt.holds(*s)
            })
            .map(|(s, i)| {
                let garbage = 1.0 - i.live_bytes as f64 / i.written_bytes as f64;
                (s, i.generation, garbage)
            })
            .filter(|&(_, _, g)| g >= ratio)
            .max_by(|a, b| a.2.total_cmp(&b.2).then(b.0.cmp(&a.0)))
            .map(|(segment, generation, _)| CompactCursor {
                segment,
                generation,
                pos: 0,
            })
    }

    /// Copies forward from `c` for up to one step; true once the segment holds nothing live.
    fn compact_some(&mut self, c: CompactCursor) -> Result<bool> {
        let mut ra = std::mem::take(&mut self.compaction_cache);
        let r = self.compact_scan(c, &mut ra);
        self.compaction_cache = ra;
        r
    }

    fn compact_scan(&mut self, mut c: CompactCursor, ra: &mut ReadAhead) -> Result<bool> {
        let cap = self.sg.payload_capacity() as u64;
        let end = self.sg.stream_capacity();
        let mut read = 0u64;
        while self.table.info(c.segment).live_bytes > 0 {
            if read >= self.config.compaction_step_bytes {
                self.compaction = Some(c);
                return Ok(false);
            }
            let corrupt = |detail: String| EngineError::Corrupt {
                what: "state segment",
                offset: self
                    .sg
                    .block_offset(c.segment, (c.pos.min(end - 1) / cap) as u32),
                detail: format!("compaction of segment {}: {detail}", c.segment),
            };
            if c.pos >= end {
                return Err(corrupt("live bytes remain past the stream end".into()));
            }
            let head = self.read_stream(
                c.segment,
                c.pos,
                (record::HEADER_PEEK as u64).min(end - c.pos),
            )?;
            let (kind, len) = record::peek(&head).map_err(|d| corrupt(d.to_string()))?;
            match kind {
                record::KIND_PADDING => {
                    let next = (c.pos / cap + 1) * cap;
                    read += next - c.pos;
                    c.pos = next;
                    continue;
                }
                record::KIND_LINK => return Err(corrupt("live bytes remain past the link".into())),
                record::KIND_VALUE => {
                    let loc = ValueLoc {
                        segment: c.segment,
                        offset: c.pos as u32,
                        len: len as u32,
                    };
                    let rec = self.read_ahead(ra, c.segment, c.generation, c.pos, len)?;
                    let v = record::decode_value(&Bytes::from(rec))
                        .map_err(|d| corrupt(d.to_string()))?;
                    self.move_if_live(loc, v.region_id, &v.key, &v.value)?;
                }
                _ => {}
            }
            c.pos += len;
            read += len;
        }
        Ok(true)
    }

    /// Copies the value at `loc` forward if an index (a region's or a staged install's) still
    /// points there, and switches that index to the copy.
    fn move_if_live(
        &mut self,
        loc: ValueLoc,
        region_id: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let in_region = self
            .regions
            .get(&region_id)
            .is_some_and(|r| r.index.get(key) == Some(&loc));
        let install = self
            .installs
            .iter()
            .find(|(_, s)| s.state.region_id == region_id && s.index.get(key) == Some(&loc))
            .map(|(id, _)| *id);
        if !in_region && install.is_none() {
            return Ok(());
        }
        let new = self.append_value(region_id, key, value)?;
        let map = match install {
            Some(id) => &mut self.installs.get_mut(&id).expect("found above").index,
            None => &mut self.regions.get_mut(&region_id).expect("found above").index,
        };
        map.insert(Key::new(key), new);
        self.table.add_live(new.segment, new.len as i64);
        self.table.add_live(loc.segment, -(loc.len as i64));
        Ok(())
    }
}

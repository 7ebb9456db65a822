//! Recovery: rebuild the index by scanning the log forward from the superblock's checkpoint.
//!
//! Each batch must be at the expected place (right after the previous one, or at the start of
//! the next segment when the writer moved on), carry the expected sequence number and chain
//! checksum, and verify block by block. Where that fails, the rest of the segment and the whole
//! next segment are examined:
//! - no valid block newer than the expected batch: the end of the log. Blocks of the expected
//!   batch itself are a torn tail (the last write, never acknowledged) and are discarded with a
//!   log line;
//! - only the next batch, flagged pipelined (written while the expected one was in flight, see
//!   the writer): both are a torn tail, neither acknowledged, discarded with a log line;
//! - any other valid block of a newer batch: the expected batch was acknowledged (the newer one
//!   was only written after it completed) and is damaged. That is corruption: it is reported with the
//!   regions and index ranges it cost, those regions are refused, and the scan resumes at the
//!   newer batch. Nothing is truncated silently.
//!
//! Limits: damage to the very last acknowledged batch, with nothing written after it (or only a
//! pipelined batch after it), cannot be told from a torn unacknowledged write, and is discarded
//! as a torn tail. The same holds for a trailing run of damaged batches: a misdirected last write
//! misses its own place and may land on the acknowledged batches before it, so the log can end
//! several batches early (every damaged block still fails its checksum; none is served). A
//! damaged stretch longer than the rest of a segment plus one segment ends the scan early.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{error, info, warn};

use super::index::{BatchAt, LogIndex, Refusal};
use super::record::{
    batch_field, decode_records, summarize, DecodedRecord, Record, RegionSpan,
    BATCH_FLAG_PIPELINED, BATCH_HEADER_LEN,
};
use super::writer::WritePos;
use super::DeviceSlot;
use crate::error::{EngineError, Result};
use crate::io::AlignedBuf;
use crate::layout::block::{payload, payload_capacity, verify, BlockHeader};
use crate::layout::segment::{Geometry, SegmentTable};
use crate::layout::{Superblock, MIB};

/// The discarded tail of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Device offset of the discarded batch.
    pub offset: u64,
    /// Its sequence number.
    pub sequence: u64,
    /// How many of its blocks verified.
    pub blocks_valid: u32,
    /// Why the batch was not accepted.
    pub detail: String,
}

/// Damage found before the tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Device offset where the expected batch was.
    pub offset: u64,
    /// Sequence number of the first lost batch.
    pub sequence: u64,
    /// Sequence number where the scan resumed (`None`: it could not).
    pub resumed_at: Option<u64>,
    /// What failed.
    pub detail: String,
    /// `(region, first index, last index)` ranges lost (`0, 0`: only state records of the
    /// region were lost). From the summary the next batch carries, plus gaps seen after.
    pub regions: Vec<(u64, u64, u64)>,
    /// Whether the lost batch's summary was found; if not, every region is refused, as the
    /// damage cannot be bounded.
    pub summary_known: bool,
}

/// What recovery found, and how fast it scanned.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Superblock copy used.
    pub superblock_copy: usize,
    /// Its sequence number.
    pub superblock_sequence: u64,
    /// Bytes read from the device.
    pub bytes_scanned: u64,
    /// Wall time of the scan.
    pub elapsed: Duration,
    /// Batches recovered.
    pub batches: u64,
    /// Records recovered.
    pub records: u64,
    /// Discarded torn tail, if any.
    pub torn_tail: Option<TornTail>,
    /// Damage before the tail.
    pub corruptions: Vec<Corruption>,
    /// Regions refused because of it.
    pub refused_regions: Vec<u64>,
    /// Every region is refused (damage that could not be bounded to named regions).
    pub all_regions_refused: bool,
    /// Sequence number the next batch gets.
    pub next_sequence: u64,
}

impl RecoveryReport {
    /// Scan rate in GB/s (10^9 bytes per second).
    pub fn scan_gb_per_s(&self) -> f64 {
        self.bytes_scanned as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// A batch read back and verified.
pub(crate) struct ScannedBatch {
    pub records: Vec<DecodedRecord>,
    pub prev_summary: Option<Vec<RegionSpan>>,
    pub blocks: u32,
    pub checksum: u32,
    pub prev_checksum: u32,
}

/// Why a batch was not at the expected place.
pub(crate) struct Miss {
    pub detail: String,
    pub blocks_valid: u32,
}

/// Reads verified blocks, through a read-ahead window.
pub(crate) struct BlockReader<'a> {
    pub dev: &'a mut DeviceSlot,
    pub geo: Geometry,
    pub nonce: u64,
    pub label: &'a str,
    pub bytes_read: u64,
    window: Option<(u64, AlignedBuf)>,
    /// A read of the window after the current one, in flight while the current one is scanned:
    /// `(offset, len, tag)`. Only when scanning (`prefetch`).
    next: Option<(u64, u64, u64)>,
    prefetch: bool,
}

/// Bytes read at once while scanning (bounded by the segment's end).
const READ_AHEAD_BYTES: u64 = 8 * MIB;

impl Drop for BlockReader<'_> {
    fn drop(&mut self) {
        // Never leave a read in flight for the writer to reap.
        if let Some((_, _, tag)) = self.next.take() {
            let _ = self.dev.finish_read(tag);
        }
    }
}

impl<'a> BlockReader<'a> {
    pub fn new(
        dev: &'a mut DeviceSlot,
        geo: Geometry,
        nonce: u64,
        label: &'a str,
    ) -> BlockReader<'a> {
        BlockReader {
            dev,
            geo,
            nonce,
            label,
            bytes_read: 0,
            window: None,
            next: None,
            prefetch: false,
        }
    }

    /// Reads ahead: while one window is scanned, the next one of the same segment is read.
    pub fn with_prefetch(mut self) -> Self {
        self.prefetch = true;
        self
    }

    fn io_err(&self) -> impl Fn(crate::io::IoError) -> EngineError + '_ {
        move |source| EngineError::Io {
            device: self.label.to_string(),
            source,
        }
    }

    /// The raw block at `offset`.
    pub fn raw(&mut self, offset: u64) -> Result<&[u8]> {
        let bs = self.geo.block_size as u64;
        let hit = self
            .window
            .as_ref()
            .is_some_and(|(s, b)| offset >= *s && offset + bs <= *s + b.len() as u64);
        if !hit {
            self.load(offset)?;
        }
        let (start, buf) = self.window.as_ref().expect("window filled by load");
        let at = (offset - start) as usize;
        Ok(&buf.as_slice()[at..at + bs as usize])
    }

    fn load(&mut self, offset: u64) -> Result<()> {
        let end = self.geo.segment_end(self.geo.segment_of(offset));
        let align = self.geo.block_size as usize;
        let buf = match self.next.take() {
            Some((at, len, tag)) if at == offset => {
                let buf = self.dev.finish_read(tag).map_err(self.io_err())?;
                self.bytes_read += len;
                buf
            }
            stale => {
                if let Some((_, _, tag)) = stale {
                    let _ = self.dev.finish_read(tag);
                }
                let len = READ_AHEAD_BYTES.min(end - offset);
                self.bytes_read += len;
                self.dev
                    .read(offset, len as usize, align)
                    .map_err(self.io_err())?
            }
        };
        let next_at = offset + buf.len() as u64;
        if self.prefetch && next_at < end {
            let len = READ_AHEAD_BYTES.min(end - next_at);
            let tag = self
                .dev
                .start_read(next_at, len as usize, align)
                .map_err(self.io_err())?;
            self.next = Some((next_at, len, tag));
        }
        self.window = Some((offset, buf));
        Ok(())
    }

    /// The header of the block at `offset`, verified.
    pub fn verified(&mut self, offset: u64) -> Result<std::result::Result<BlockHeader, String>> {
        let nonce = self.nonce;
        let raw = self.raw(offset)?;
        Ok(verify(raw, offset, nonce).map_err(|d| format!("block at {offset}: {d}")))
    }

    /// The block at `offset`, verified, with a copy of its payload.
    pub fn block(
        &mut self,
        offset: u64,
    ) -> Result<std::result::Result<(BlockHeader, Vec<u8>), String>> {
        Ok(match self.verified(offset)? {
            Ok(h) => Ok((h, payload(self.raw(offset)?, &h).to_vec())),
            Err(d) => Err(d),
        })
    }

    /// Reads the batch expected at `offset` with `sequence` (and chain value `prev`, if given).
    pub fn batch(
        &mut self,
        offset: u64,
        sequence: u64,
        prev: Option<u32>,
    ) -> Result<std::result::Result<ScannedBatch, Miss>> {
        let bs = self.geo.block_size as u64;
        let seg_end = self.geo.segment_end(self.geo.segment_of(offset));
        let miss = |detail: String, blocks_valid: u32| {
            Ok(Err(Miss {
                detail,
                blocks_valid,
            }))
        };
        let h0 = match self.verified(offset)? {
            Ok(h) => h,
            Err(d) => return miss(d, 0),
        };
        if h0.sequence != sequence || h0.block_index != 0 {
            return miss(
                format!(
                    "block at {offset} holds sequence {} block {}, expected {sequence} block 0",
                    h0.sequence, h0.block_index
                ),
                0,
            );
        }
        let n = h0.block_count;
        if offset + n as u64 * bs > seg_end {
            return miss(
                format!("batch at {offset} of {n} blocks crosses its segment's end"),
                0,
            );
        }
        let mut data = Vec::with_capacity(n as usize * payload_capacity(bs as usize));
        data.extend_from_slice(payload(self.raw(offset)?, &h0));
        let mut chain = crc32fast::Hasher::new();
        chain.update(&h0.checksum.to_le_bytes());
        for i in 1..n {
            let at = offset + i as u64 * bs;
            let h = match self.verified(at)? {
                Ok(h) => h,
                Err(d) => return miss(d, i),
            };
            if h.sequence != sequence || h.block_index != i || h.block_count != n {
                return miss(
                    format!(
                        "block at {at} belongs to sequence {} block {}",
                        h.sequence, h.block_index
                    ),
                    i,
                );
            }
            chain.update(&h.checksum.to_le_bytes());
            data.extend_from_slice(payload(self.raw(at)?, &h));
        }
        let payload = Bytes::from(data);
        let (header, records) = match decode_records(&payload) {
            Ok(x) => x,
            Err(e) => return miss(format!("batch at {offset}: {e}"), n),
        };
        if let Some(p) = prev.filter(|p| *p != header.prev_checksum) {
            return miss(
                format!(
                    "batch at {offset}: chain checksum {:#010x}, expected {p:#010x}",
                    header.prev_checksum
                ),
                n,
            );
        }
        Ok(Ok(ScannedBatch {
            records,
            prev_summary: header.prev_summary,
            blocks: n,
            checksum: chain.finalize(),
            prev_checksum: header.prev_checksum,
        }))
    }
}

/// What the scan rebuilt.
pub(crate) struct Recovered {
    pub index: LogIndex,
    pub pos: WritePos,
    pub report: RecoveryReport,
}

/// Scans the log of the store described by `sb` and rebuilds the index. The caller has flushed
/// the device once (nothing a crashed process wrote is trusted before that).
pub(crate) fn recover(
    dev: &mut DeviceSlot,
    sb: &Superblock,
    label: &str,
    cache_bytes_max: u64,
) -> Result<Recovered> {
    let started = Instant::now();
    let geo = Geometry::log_of(sb);
    let cp = sb.checkpoint;
    let mut scan = Scan {
        reader: BlockReader::new(dev, geo, sb.format_nonce, label).with_prefetch(),
        index: LogIndex::new(SegmentTable::new(geo, cp.segment), cache_bytes_max),
        pos: WritePos {
            segment: cp.segment,
            offset: cp.offset,
            sequence: cp.sequence,
            prev_checksum: cp.prev_checksum,
            prev_summary: None,
        },
        report: RecoveryReport {
            superblock_sequence: sb.sequence,
            ..Default::default()
        },
        gap_check: None,
    };
    scan.run()?;
    scan.refuse_damaged();
    let mut report = scan.report;
    report.bytes_scanned = scan.reader.bytes_read;
    report.elapsed = started.elapsed();
    report.next_sequence = scan.pos.sequence;
    info!(
        device = label,
        batches = report.batches,
        bytes_scanned = report.bytes_scanned,
        elapsed_ms = report.elapsed.as_millis() as u64,
        corruptions = report.corruptions.len(),
        "log recovered"
    );
    Ok(Recovered {
        index: scan.index,
        pos: scan.pos,
        report,
    })
}

struct GapCheck {
    corruption: usize,
    last_before: HashMap<u64, u64>,
    checked: HashSet<u64>,
}

struct Scan<'a> {
    reader: BlockReader<'a>,
    index: LogIndex,
    pos: WritePos,
    report: RecoveryReport,
    gap_check: Option<GapCheck>,
}

impl Scan<'_> {
    fn run(&mut self) -> Result<()> {
        let geo = self.reader.geo;
        loop {
            let seg_start = geo.segment_offset(self.pos.segment);
            let here = if self.pos.offset < geo.segment_end(self.pos.segment) {
                self.reader.batch(
                    self.pos.offset,
                    self.pos.sequence,
                    Some(self.pos.prev_checksum),
                )?
            } else {
                Err(Miss {
                    detail: "segment full".into(),
                    blocks_valid: 0,
                })
            };
            let miss = match here {
                Ok(b) => {
                    self.apply(b);
                    continue;
                }
                Err(m) => m,
            };
            let next = geo.next_segment(self.pos.segment);
            if self.pos.offset != seg_start && next != self.index.segments.durable_tail() {
                let there = self.reader.batch(
                    geo.segment_offset(next),
                    self.pos.sequence,
                    Some(self.pos.prev_checksum),
                )?;
                if let Ok(b) = there {
                    self.enter_segment(next)?;
                    self.apply(b);
                    continue;
                }
            }
            if !self.classify_end(miss)? {
                return Ok(());
            }
        }
    }

    fn enter_segment(&mut self, next: u32) -> Result<()> {
        if self.index.segments.advance_head() != Some(next) {
            return Err(EngineError::Corrupt {
                what: "log",
                offset: self.reader.geo.segment_offset(next),
                detail: "the log runs into its own tail".into(),
            });
        }
        self.pos.segment = next;
        self.pos.offset = self.reader.geo.segment_offset(next);
        Ok(())
    }

    fn apply(&mut self, b: ScannedBatch) {
        let bs = self.reader.geo.block_size as u64;
        let at = BatchAt {
            segment: self.pos.segment,
            offset: self.pos.offset,
            sequence: self.pos.sequence,
        };
        self.index
            .note_batch(at, b.prev_checksum, b.blocks as u64 * bs);
        for d in &b.records {
            self.check_gap(&d.record);
            self.index.apply(&d.record, &d.entry_spans, at, true);
        }
        self.report.batches += 1;
        self.report.records += b.records.len() as u64;
        self.pos.offset += b.blocks as u64 * bs;
        self.pos.sequence += 1;
        self.pos.prev_checksum = b.checksum;
        self.pos.prev_summary = summarize(b.records.iter().map(|d| &d.record));
    }

    /// After a corruption, the first record of each region tells whether entries were lost.
    fn check_gap(&mut self, record: &Record) {
        let Some(g) = self.gap_check.as_mut() else {
            return;
        };
        let region_id = record.region_id();
        if !g.checked.insert(region_id) {
            return;
        }
        if let Record::Entries { entries, .. } = record {
            let last = g.last_before.get(&region_id).copied().unwrap_or(0);
            if entries[0].index > last + 1 {
                self.report.corruptions[g.corruption].regions.push((
                    region_id,
                    last + 1,
                    entries[0].index - 1,
                ));
            }
        }
    }

    /// Decides what the failed position means. Returns whether the scan goes on (resumed after
    /// corruption).
    fn classify_end(&mut self, miss: Miss) -> Result<bool> {
        let geo = self.reader.geo;
        let bs = geo.block_size as u64;
        let seq = self.pos.sequence;
        let mut newer: Vec<(u64, BlockHeader)> = Vec::new();
        let mut same = 0u32;
        let mut windows = vec![(self.pos.offset, geo.segment_end(self.pos.segment))];
        let next = geo.next_segment(self.pos.segment);
        if next != self.index.segments.durable_tail() {
            windows.push((geo.segment_offset(next), geo.segment_end(next)));
        }
        for (start, end) in windows {
            let mut at = start;
            while at < end {
                match self.reader.verified(at)? {
                    Ok(h) if h.sequence == seq => same += 1,
                    Ok(h) if h.sequence > seq && h.block_index == 0 => newer.push((at, h)),
                    Ok(_) => {}
                    // A damaged block that still names the expected batch: evidence of a torn
                    // (or rotted) last write, reported as such.
                    Err(_) if self.names_sequence(at, seq)? => same += 1,
                    Err(_) => {}
                }
                at += bs;
            }
        }
        if newer.is_empty() {
            if same > 0 || miss.blocks_valid > 0 {
                self.discard_torn_tail(seq, same, miss, "last write, never acknowledged");
            }
            return Ok(false);
        }
        newer.sort_by_key(|(_, h)| h.sequence);
        if self.pipelined_tail(&newer, seq)? {
            let what = "the last two writes, in flight together, never acknowledged";
            self.discard_torn_tail(seq, same, miss, what);
            return Ok(false);
        }
        let corruption = Corruption {
            offset: self.pos.offset,
            sequence: seq,
            resumed_at: None,
            detail: miss.detail,
            regions: vec![],
            summary_known: false,
        };
        self.report.corruptions.push(corruption);
        let last_before = self
            .index
            .region_ids()
            .into_iter()
            .filter_map(|r| self.index.region(r).map(|x| (r, x.last_index())))
            .collect();
        self.gap_check = Some(GapCheck {
            corruption: self.report.corruptions.len() - 1,
            last_before,
            checked: HashSet::new(),
        });
        for (at, h) in newer {
            if let Ok(b) = self.reader.batch(at, h.sequence, None)? {
                self.report
                    .corruptions
                    .last_mut()
                    .expect("pushed above")
                    .resumed_at = Some(h.sequence);
                let seg = geo.segment_of(at);
                if seg != self.pos.segment {
                    self.enter_segment(seg)?;
                }
                if h.sequence == seq + 1 {
                    self.name_lost_regions(b.prev_summary.as_deref());
                }
                self.pos.offset = at;
                self.pos.sequence = h.sequence;
                self.apply(b);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Ends the scan at the failed batch `seq`, reported as a torn tail (`what` says why it was
    /// never acknowledged).
    fn discard_torn_tail(&mut self, seq: u64, blocks_valid: u32, miss: Miss, what: &str) {
        warn!(device = self.reader.label, offset = self.pos.offset, sequence = seq, detail = %miss.detail,
            "discarding torn tail of the log ({what})");
        self.report.torn_tail = Some(TornTail {
            offset: self.pos.offset,
            sequence: seq,
            blocks_valid,
            detail: miss.detail,
        });
    }

    /// Whether the only newer batch after the failed batch `seq` is batch `seq + 1` written while
    /// `seq` was still in flight ([`BATCH_FLAG_PIPELINED`]). The writer acknowledges it only
    /// after `seq`, and writes nothing further until `seq` is durable, so the two are the torn
    /// tail: neither was acknowledged.
    fn pipelined_tail(&mut self, newer: &[(u64, BlockHeader)], seq: u64) -> Result<bool> {
        let [(at, h)] = newer else {
            return Ok(false);
        };
        if h.sequence != seq + 1 {
            return Ok(false);
        }
        // The flags sit in the batch header at the start of the first block's payload (which
        // verified): read them there, so a second batch that is itself torn counts too.
        let first = payload(self.reader.raw(*at)?, h);
        if first.len() < BATCH_HEADER_LEN {
            return Ok(false);
        }
        let flags = crate::layout::le::get_u32(first, batch_field::FLAGS);
        Ok(flags & BATCH_FLAG_PIPELINED != 0)
    }

    /// Whether the (unverified) block at `at` carries the block magic and sequence `seq`.
    fn names_sequence(&mut self, at: u64, seq: u64) -> Result<bool> {
        use crate::layout::block::{field, BLOCK_MAGIC};
        let raw = self.reader.raw(at)?;
        Ok(raw[field::MAGIC..field::MAGIC + 4] == BLOCK_MAGIC
            && crate::layout::le::get_u64(raw, field::SEQUENCE) == seq)
    }

    /// The batch right after a lost one lists what the lost one held.
    fn name_lost_regions(&mut self, summary: Option<&[RegionSpan]>) {
        let Some(summary) = summary else { return };
        let c = self
            .report
            .corruptions
            .last_mut()
            .expect("pushed before resuming");
        c.summary_known = true;
        for s in summary {
            let (first, last) = if s.first_index == 0 {
                (0, 0)
            } else {
                (s.first_index, s.last_index)
            };
            c.regions.push((s.region_id, first, last));
        }
    }

    /// Marks the regions named by corruptions refused (every region when none can be named).
    fn refuse_damaged(&mut self) {
        for c in &self.report.corruptions {
            error!(device = self.reader.label, offset = c.offset, sequence = c.sequence, detail = %c.detail,
                regions = ?c.regions, "log corrupt before its tail; affected regions refused until repaired");
            let detail = format!("batch {} at offset {}: {}", c.sequence, c.offset, c.detail);
            let ranges: Vec<(u64, u64, u64)> = if !c.summary_known {
                let refusal = Refusal {
                    first_index: 0,
                    last_index: u64::MAX,
                    detail: detail.clone(),
                };
                self.index.refuse_all = Some(refusal);
                self.report.all_regions_refused = true;
                self.index
                    .region_ids()
                    .into_iter()
                    .map(|r| (r, 0, u64::MAX))
                    .collect()
            } else {
                c.regions.clone()
            };
            for (r, first_index, last_index) in ranges {
                self.index.region_mut(r).refused = Some(Refusal {
                    first_index,
                    last_index,
                    detail: detail.clone(),
                });
                if !self.report.refused_regions.contains(&r) {
                    self.report.refused_regions.push(r);
                }
            }
        }
    }
}

//! Batch and record encoding: the byte stream a log batch carries in its block payloads.
//!
//! A batch's payload is a 16-byte batch header followed by records, each an 8-byte record header
//! and a body. Entry data and context are stored raw, so decoding slices them out of the batch's
//! payload buffer without copying. Layout: `docs/FORMAT.md`, "Engine: log batches and records".

use bytes::Bytes;
use raftlog::{ConfState, Entry, EntryType, HardState};

use crate::layout::le::{get_u32, get_u64, put_u32};

/// Bytes of the fixed batch header at the start of a batch payload.
pub const BATCH_HEADER_LEN: usize = 20;
/// Bytes of one [`RegionSpan`] of the previous batch's summary.
pub const SPAN_LEN: usize = 24;
/// Most spans a summary lists; a batch with more regions writes [`SUMMARY_TOO_LONG`] instead.
pub const SUMMARY_SPANS_MAX: usize = 1024;
/// `summary_count` value meaning "the previous batch touched more than `SUMMARY_SPANS_MAX`
/// regions; no list".
pub const SUMMARY_TOO_LONG: u32 = u32::MAX;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 8;
/// Bytes of the fixed part of an entries record body (region, first index, count).
pub const ENTRIES_BODY_FIXED_LEN: usize = 20;
/// Bytes of the header of one entry inside an entries record (term, type, context and data
/// lengths).
pub const ENTRY_HEADER_LEN: usize = 17;

/// Byte offsets of the batch header fields.
pub mod batch_field {
    /// `u32` chain checksum of the previous batch.
    pub const PREV_CHECKSUM: usize = 0;
    /// `u32` number of records.
    pub const RECORD_COUNT: usize = 4;
    /// `u32` payload bytes of the batch, this header included.
    pub const PAYLOAD_LEN: usize = 8;
    /// `u32` flags (bit 0: checkpoint batch, bit 1: pipelined); other bits zero.
    pub const FLAGS: usize = 12;
    /// `u32` number of [`super::RegionSpan`]s that follow (the previous batch's summary).
    pub const SUMMARY_COUNT: usize = 16;
}

/// What one batch held for one region: the summary the *next* batch repeats, so that if this
/// batch is ever damaged, recovery can name the regions and index ranges lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RegionSpan {
    /// The region.
    pub region_id: u64,
    /// First entry index in the batch (0: no entries, only state records).
    pub first_index: u64,
    /// Last entry index in the batch (0: no entries).
    pub last_index: u64,
}

/// The summary of a batch holding `records` (`None` when longer than [`SUMMARY_SPANS_MAX`]).
/// One span per record, sorted by region and merged in place (one allocation: on the writer's
/// path for every batch, where a map's node allocations and probes cost more).
pub fn summarize<'a>(records: impl IntoIterator<Item = &'a Record>) -> Option<Vec<RegionSpan>> {
    let mut spans: Vec<RegionSpan> = records
        .into_iter()
        .map(|r| {
            let (first_index, last_index) = match r {
                Record::Entries { entries, .. } => {
                    (entries[0].index, entries[entries.len() - 1].index)
                }
                _ => (0, 0),
            };
            RegionSpan {
                region_id: r.region_id(),
                first_index,
                last_index,
            }
        })
        .collect();
    spans.sort_unstable_by_key(|s| s.region_id);
    spans.dedup_by(|next, kept| {
        if next.region_id != kept.region_id {
            return false;
        }
        if kept.first_index == 0 {
            (kept.first_index, kept.last_index) = (next.first_index, next.last_index);
        } else if next.first_index != 0 {
            kept.first_index = kept.first_index.min(next.first_index);
            kept.last_index = kept.last_index.max(next.last_index);
        }
        true
    });
    (spans.len() <= SUMMARY_SPANS_MAX).then_some(spans)
}

/// Encoded length of a summary.
pub fn summary_len(summary: Option<&[RegionSpan]>) -> usize {
    summary.map_or(0, |s| s.len() * SPAN_LEN)
}

/// Appends the spans of a summary.
pub fn put_summary(out: &mut impl ByteSink, summary: Option<&[RegionSpan]>) {
    for s in summary.unwrap_or(&[]) {
        let mut span = [0u8; SPAN_LEN];
        for (i, v) in [s.region_id, s.first_index, s.last_index]
            .into_iter()
            .enumerate()
        {
            span[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
        out.put(&span);
    }
}

/// Flag of a batch written to carry every region's latest state forward (a checkpoint).
pub const BATCH_FLAG_CHECKPOINT: u32 = 1;

/// Flag of a batch written while the batch before it was still in flight (see the writer's
/// module docs): if that batch is damaged and this one is the last, both are the torn tail.
pub const BATCH_FLAG_PIPELINED: u32 = 2;

/// Record kinds (the first byte of a record header).
pub mod kind {
    /// A run of consecutive entries of one region.
    pub const ENTRIES: u8 = 1;
    /// A region's hard state.
    pub const HARD_STATE: u8 = 2;
    /// A region's configuration.
    pub const CONF_STATE: u8 = 3;
    /// A region's log was compacted up to an index.
    pub const COMPACT: u8 = 4;
    /// Opaque region metadata (owned by the store layer).
    pub const REGION_META: u8 = 5;
    /// Everything the log holds of a region is discarded (its peer was destroyed).
    pub const CLEAN: u8 = 6;
}

/// One record of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Consecutive entries of one region, starting at `entries[0].index`. Entries at indexes
    /// already in the log replace them and everything after them (Raft's conflict truncation).
    Entries {
        /// The region.
        region_id: u64,
        /// The entries (consecutive indexes).
        entries: Vec<Entry>,
    },
    /// The region's hard state.
    HardState {
        /// The region.
        region_id: u64,
        /// The state.
        hard_state: HardState,
    },
    /// The region's configuration.
    ConfState {
        /// The region.
        region_id: u64,
        /// The configuration.
        conf_state: ConfState,
    },
    /// Entries up to and including `index` are discarded; `term` is the term at `index`. An
    /// `index` beyond the last entry empties the log (as after installing a snapshot).
    Compact {
        /// The region.
        region_id: u64,
        /// Last discarded index.
        index: u64,
        /// Its term.
        term: u64,
    },
    /// Opaque region metadata; the newest is kept.
    RegionMeta {
        /// The region.
        region_id: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Everything recorded of the region before this record is discarded: entries, hard state,
    /// configuration, compaction point and metadata. The region's log starts over empty (a
    /// stale peer replaced by a new peer of the same region on this store).
    Clean {
        /// The region.
        region_id: u64,
    },
}

impl Record {
    /// The region the record belongs to.
    pub fn region_id(&self) -> u64 {
        match self {
            Record::Entries { region_id, .. }
            | Record::HardState { region_id, .. }
            | Record::ConfState { region_id, .. }
            | Record::Compact { region_id, .. }
            | Record::RegionMeta { region_id, .. }
            | Record::Clean { region_id } => *region_id,
        }
    }

    /// The entries the record carries (0 for all but an entries record).
    pub fn entry_count(&self) -> usize {
        match self {
            Record::Entries { entries, .. } => entries.len(),
            _ => 0,
        }
    }

    /// Encoded size of the record, header included.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Record::Entries { entries, .. } => {
                ENTRIES_BODY_FIXED_LEN
                    + entries
                        .iter()
                        .map(|e| ENTRY_HEADER_LEN + e.context.len() + e.data.len())
                        .sum::<usize>()
            }
            Record::HardState { .. } => 32,
            Record::ConfState { conf_state: c, .. } => {
                8 + 1
                    + 16
                    + 8 * (c.voters.len()
                        + c.learners.len()
                        + c.voters_outgoing.len()
                        + c.learners_next.len())
            }
            Record::Compact { .. } => 24,
            Record::RegionMeta { data, .. } => 8 + data.len(),
            Record::Clean { .. } => 8,
        }
    }

    /// Appends the encoded record to `out` via `put`. For entries, `on_entry(index, pos)` is told
    /// the stream position of each entry's header (relative to the record's start).
    pub fn encode(&self, out: &mut impl ByteSink, mut on_entry: impl FnMut(u64, usize)) {
        let (k, body_len) = (self.kind(), self.body_len());
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0] = k;
        header[4..].copy_from_slice(&(body_len as u32).to_le_bytes());
        out.put(&header);
        match self {
            Record::Entries { region_id, entries } => {
                assert!(!entries.is_empty(), "empty entries record");
                let mut fixed = [0u8; ENTRIES_BODY_FIXED_LEN];
                fixed[..8].copy_from_slice(&region_id.to_le_bytes());
                fixed[8..16].copy_from_slice(&entries[0].index.to_le_bytes());
                fixed[16..].copy_from_slice(&(entries.len() as u32).to_le_bytes());
                out.put(&fixed);
                let mut pos = RECORD_HEADER_LEN + ENTRIES_BODY_FIXED_LEN;
                for (i, e) in entries.iter().enumerate() {
                    assert_eq!(
                        e.index,
                        entries[0].index + i as u64,
                        "entries record not consecutive"
                    );
                    on_entry(e.index, pos);
                    let mut header = [0u8; ENTRY_HEADER_LEN];
                    header[..8].copy_from_slice(&e.term.to_le_bytes());
                    header[8] = entry_type_code(e.entry_type);
                    header[9..13].copy_from_slice(&(e.context.len() as u32).to_le_bytes());
                    header[13..].copy_from_slice(&(e.data.len() as u32).to_le_bytes());
                    out.put(&header);
                    if !e.context.is_empty() {
                        out.put(&e.context);
                    }
                    out.put(&e.data);
                    pos += ENTRY_HEADER_LEN + e.context.len() + e.data.len();
                }
            }
            Record::HardState {
                region_id,
                hard_state: h,
            } => {
                for v in [*region_id, h.term, h.vote, h.commit] {
                    out.put(&v.to_le_bytes());
                }
            }
            Record::ConfState {
                region_id,
                conf_state: c,
            } => {
                out.put(&region_id.to_le_bytes());
                out.put(&[u8::from(c.auto_leave)]);
                for list in [&c.voters, &c.learners, &c.voters_outgoing, &c.learners_next] {
                    out.put(&(list.len() as u32).to_le_bytes());
                    for id in list.iter() {
                        out.put(&id.to_le_bytes());
                    }
                }
            }
            Record::Compact {
                region_id,
                index,
                term,
            } => {
                for v in [*region_id, *index, *term] {
                    out.put(&v.to_le_bytes());
                }
            }
            Record::RegionMeta { region_id, data } => {
                out.put(&region_id.to_le_bytes());
                out.put(data);
            }
            Record::Clean { region_id } => out.put(&region_id.to_le_bytes()),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Record::Entries { .. } => kind::ENTRIES,
            Record::HardState { .. } => kind::HARD_STATE,
            Record::ConfState { .. } => kind::CONF_STATE,
            Record::Compact { .. } => kind::COMPACT,
            Record::RegionMeta { .. } => kind::REGION_META,
            Record::Clean { .. } => kind::CLEAN,
        }
    }
}

/// Where encoded bytes go (a `Vec`, or the block payloads of an aligned write buffer).
pub trait ByteSink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl ByteSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn entry_type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type_of(code: u8) -> Option<EntryType> {
    match code {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

/// Encodes a batch header into the first [`BATCH_HEADER_LEN`] bytes of `out`.
pub fn put_batch_header(
    out: &mut [u8],
    prev_checksum: u32,
    record_count: u32,
    payload_len: u32,
    flags: u32,
    summary: Option<&[RegionSpan]>,
) {
    let count = summary.map_or(SUMMARY_TOO_LONG, |s| s.len() as u32);
    put_u32(out, batch_field::SUMMARY_COUNT, count);
    put_u32(out, batch_field::PREV_CHECKSUM, prev_checksum);
    put_u32(out, batch_field::RECORD_COUNT, record_count);
    put_u32(out, batch_field::PAYLOAD_LEN, payload_len);
    put_u32(out, batch_field::FLAGS, flags);
}

/// A decoded batch header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Summary of the previous batch (`None`: too long to list).
    pub prev_summary: Option<Vec<RegionSpan>>,
    /// Chain checksum of the batch before.
    pub prev_checksum: u32,
    /// Records in the batch.
    pub record_count: u32,
    /// Payload bytes, header included.
    pub payload_len: u32,
    /// Flags.
    pub flags: u32,
}

/// Why a payload did not decode (its blocks verified, so this is a writer bug or a forged batch).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed batch payload at byte {pos}: {what}")]
pub struct PayloadError {
    /// Byte position in the payload.
    pub pos: usize,
    /// What was wrong.
    pub what: &'static str,
}

/// Decodes the batch header at the start of `payload`.
pub fn batch_header(payload: &[u8]) -> Result<BatchHeader, PayloadError> {
    if payload.len() < BATCH_HEADER_LEN {
        return Err(PayloadError {
            pos: 0,
            what: "shorter than a batch header",
        });
    }
    let count = get_u32(payload, batch_field::SUMMARY_COUNT);
    let prev_summary = if count == SUMMARY_TOO_LONG {
        None
    } else {
        let n = count as usize;
        need(payload, BATCH_HEADER_LEN, n.saturating_mul(SPAN_LEN))?;
        let span = |i: usize| {
            let at = BATCH_HEADER_LEN + i * SPAN_LEN;
            RegionSpan {
                region_id: get_u64(payload, at),
                first_index: get_u64(payload, at + 8),
                last_index: get_u64(payload, at + 16),
            }
        };
        Some((0..n).map(span).collect())
    };
    Ok(BatchHeader {
        prev_summary,
        prev_checksum: get_u32(payload, batch_field::PREV_CHECKSUM),
        record_count: get_u32(payload, batch_field::RECORD_COUNT),
        payload_len: get_u32(payload, batch_field::PAYLOAD_LEN),
        flags: get_u32(payload, batch_field::FLAGS),
    })
}

/// A record decoded from a payload, with the payload position of each entry's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    /// The record (entry data sliced from the payload, not copied).
    pub record: Record,
    /// For an entries record: payload position of each entry header, and its encoded length.
    pub entry_spans: Vec<(u32, u32)>,
}

/// Decodes every record of a batch payload (`payload` starts with the batch header and is
/// exactly `payload_len` bytes).
pub fn decode_records(payload: &Bytes) -> Result<(BatchHeader, Vec<DecodedRecord>), PayloadError> {
    let header = batch_header(payload)?;
    if header.payload_len as usize != payload.len() {
        return Err(PayloadError {
            pos: batch_field::PAYLOAD_LEN,
            what: "payload length mismatch",
        });
    }
    let mut pos = BATCH_HEADER_LEN + summary_len(header.prev_summary.as_deref());
    let mut records = Vec::with_capacity(header.record_count as usize);
    for _ in 0..header.record_count {
        let (rec, next) = decode_record(payload, pos)?;
        records.push(rec);
        pos = next;
    }
    if pos != payload.len() {
        return Err(PayloadError {
            pos,
            what: "bytes after the last record",
        });
    }
    Ok((header, records))
}

fn need(payload: &[u8], pos: usize, len: usize) -> Result<(), PayloadError> {
    if pos.checked_add(len).is_none_or(|end| end > payload.len()) {
        return Err(PayloadError {
            pos,
            what: "truncated record",
        });
    }
    Ok(())
}

fn decode_record(p: &Bytes, pos: usize) -> Result<(DecodedRecord, usize), PayloadError> {
    need(p, pos, RECORD_HEADER_LEN)?;
    let k = p[pos];
    let body_len = get_u32(p, pos + 4) as usize;
    let body = pos + RECORD_HEADER_LEN;
    need(p, body, body_len)?;
    let end = body + body_len;
    let fixed = |len: usize| {
        if body_len == len {
            Ok(())
        } else {
            Err(PayloadError {
                pos,
                what: "bad record length",
            })
        }
    };
    let mut spans = Vec::new();
    let record = match k {
        kind::ENTRIES => decode_entries(p, body, end, &mut spans)?,
        kind::HARD_STATE => {
            fixed(32)?;
            let hard_state = HardState {
                term: get_u64(p, body + 8),
                vote: get_u64(p, body + 16),
                commit: get_u64(p, body + 24),
            };
            Record::HardState {
                region_id: get_u64(p, body),
                hard_state,
            }
        }
        kind::CONF_STATE => decode_conf_state(p, body, end)?,
        kind::COMPACT => {
            fixed(24)?;
            Record::Compact {
                region_id: get_u64(p, body),
                index: get_u64(p, body + 8),
                term: get_u64(p, body + 16),
            }
        }
        kind::REGION_META => {
            if body_len < 8 {
                return Err(PayloadError {
                    pos,
                    what: "bad record length",
                });
            }
            Record::RegionMeta {
                region_id: get_u64(p, body),
                data: p.slice(body + 8..end),
            }
        }
        kind::CLEAN => {
            fixed(8)?;
            Record::Clean {
                region_id: get_u64(p, body),
            }
        }
        _ => {
            return Err(PayloadError {
                pos,
                what: "unknown record kind",
            })
        }
    };
    Ok((
        DecodedRecord {
            record,
            entry_spans: spans,
        },
        end,
    ))
}

fn decode_entries(
    p: &Bytes,
    body: usize,
    end: usize,
    spans: &mut Vec<(u32, u32)>,
) -> Result<Record, PayloadError> {
    need(&p[..end], body, ENTRIES_BODY_FIXED_LEN)?;
    let region_id = get_u64(p, body);
    let first_index = get_u64(p, body + 8);
    let count = get_u32(p, body + 16) as usize;
    if count == 0 {
        return Err(PayloadError {
            pos: body,
            what: "empty entries record",
        });
    }
    let mut entries = Vec::with_capacity(count.min(end - body));
    let mut pos = body + ENTRIES_BODY_FIXED_LEN;
    for i in 0..count {
        let (entry, next) = decode_entry(p, pos, end, first_index + i as u64)?;
        spans.push((pos as u32, (next - pos) as u32));
        entries.push(entry);
        pos = next;
    }
    if pos != end {
        return Err(PayloadError {
            pos,
            what: "entries record length mismatch",
        });
    }
    Ok(Record::Entries { region_id, entries })
}

/// Decodes the entry whose header is at payload position `pos` (the record ends at `end`).
pub fn decode_entry(
    p: &Bytes,
    pos: usize,
    end: usize,
    index: u64,
) -> Result<(Entry, usize), PayloadError> {
    need(&p[..end], pos, ENTRY_HEADER_LEN)?;
    let term = get_u64(p, pos);
    let entry_type = entry_type_of(p[pos + 8]).ok_or(PayloadError {
        pos,
        what: "unknown entry type",
    })?;
    let context_len = get_u32(p, pos + 9) as usize;
    let data_len = get_u32(p, pos + 13) as usize;
    let ctx = pos + ENTRY_HEADER_LEN;
    need(&p[..end], ctx, context_len + data_len)?;
    let data_at = ctx + context_len;
    let entry = Entry {
        entry_type,
        term,
        index,
        context: p.slice(ctx..data_at),
        data: p.slice(data_at..data_at + data_len),
    };
    Ok((entry, data_at + data_len))
}

fn decode_conf_state(p: &[u8], body: usize, end: usize) -> Result<Record, PayloadError> {
    need(&p[..end], body, 9)?;
    let mut c = ConfState {
        auto_leave: p[body + 8] != 0,
        ..Default::default()
    };
    let mut pos = body + 9;
    for list in [
        &mut c.voters,
        &mut c.learners,
        &mut c.voters_outgoing,
        &mut c.learners_next,
    ] {
        need(&p[..end], pos, 4)?;
        let n = get_u32(p, pos) as usize;
        pos += 4;
        need(&p[..end], pos, n.saturating_mul(8))?;
        list.extend((0..n).map(|i| get_u64(p, pos + 8 * i)));
        pos += 8 * n;
    }
    if pos != end {
        return Err(PayloadError {
            pos,
            what: "conf state length mismatch",
        });
    }
    Ok(Record::ConfState {
        region_id: get_u64(p, body),
        conf_state: c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut e2 = Entry::new(3, 8, &b"second"[..]);
        e2.entry_type = EntryType::EntryConfChangeV2;
        e2.context = Bytes::from_static(b"ctx");
        vec![
            Record::Entries {
                region_id: 9,
                entries: vec![Entry::new(3, 7, &b"first"[..]), e2],
            },
            Record::HardState {
                region_id: 9,
                hard_state: HardState {
                    term: 3,
                    vote: 2,
                    commit: 7,
                },
            },
            Record::ConfState {
                region_id: 4,
                conf_state: ConfState {
                    voters: vec![1, 2],
                    learners_next: vec![5],
                    auto_leave: true,
                    ..Default::default()
                },
            },
            Record::Compact {
                region_id: 4,
                index: 100,
                term: 2,
            },
            Record::RegionMeta {
                region_id: 4,
                data: Bytes::from_static(b"meta"),
            },
            Record::Clean { region_id: 9 },
        ]
    }

    fn encode(records: &[Record]) -> Bytes {
        let summary = vec![RegionSpan {
            region_id: 3,
            first_index: 5,
            last_index: 9,
        }];
        let mut out = vec![0u8; BATCH_HEADER_LEN];
        put_summary(&mut out, Some(&summary));
        for r in records {
            r.encode(&mut out, |_, _| {});
        }
        let len = out.len() as u32;
        put_batch_header(
            &mut out,
            0xabcd,
            records.len() as u32,
            len,
            0,
            Some(&summary),
        );
        Bytes::from(out)
    }

    #[test]
    fn records_round_trip_with_entry_spans() {
        let recs = sample();
        let payload = encode(&recs);
        let (h, decoded) = decode_records(&payload).expect("decodes");
        assert_eq!(h.prev_checksum, 0xabcd);
        assert_eq!(
            h.prev_summary,
            Some(vec![RegionSpan {
                region_id: 3,
                first_index: 5,
                last_index: 9
            }])
        );
        let spans = summarize(&recs).expect("short");
        assert_eq!(
            spans[1],
            RegionSpan {
                region_id: 9,
                first_index: 7,
                last_index: 8
            }
        );
        assert_eq!(
            spans[0],
            RegionSpan {
                region_id: 4,
                first_index: 0,
                last_index: 0
            }
        );
        assert_eq!(
            decoded.iter().map(|d| d.record.clone()).collect::<Vec<_>>(),
            recs
        );
        for (i, &(pos, len)) in decoded[0].entry_spans.iter().enumerate() {
            let (e, next) =
                decode_entry(&payload, pos as usize, payload.len(), 7 + i as u64).expect("entry");
            assert_eq!(next - pos as usize, len as usize);
            assert_eq!(
                Record::Entries {
                    region_id: 9,
                    entries: vec![e.clone()]
                }
                .region_id(),
                9
            );
            if let Record::Entries { entries, .. } = &recs[0] {
                assert_eq!(e, entries[i]);
            }
        }
        assert_eq!(
            recs.iter().map(Record::encoded_len).sum::<usize>() + BATCH_HEADER_LEN + SPAN_LEN,
            payload.len()
        );
    }

    #[test]
    fn truncated_payloads_never_decode() {
        let payload = encode(&sample());
        for cut in 0..payload.len() {
            let mut short = payload[..cut].to_vec();
            if short.len() >= BATCH_HEADER_LEN {
                put_u32(&mut short, batch_field::PAYLOAD_LEN, cut as u32);
            }
            assert!(
                decode_records(&Bytes::from(short)).is_err(),
                "cut at {cut} decoded"
            );
        }
    }
}

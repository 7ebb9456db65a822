//! The log writer: a plain state machine over an [`Io`](crate::io::Io) (events in: appends,
//! compactions, device completions; actions out: device ops, acknowledgements), and a thread
//! wrapper for real devices.
//!
//! Call order: [`LogStore::append`] queues a batch and returns its [`Ticket`];
//! [`LogStore::poll`] submits the next device write when none is in flight (everything queued,
//! up to `batch_bytes_max`, becomes one on-disk batch), reaps completions, applies durable batches
//! to the index and returns the acknowledgements. A ticket is acknowledged only once its batch is
//! durable; acknowledgements come in ticket order. Encoding is one copy of each entry into the
//! block payloads and one checksum pass per block, into a buffer of the device's pool: a batch
//! larger than a pool slot takes adjacent slots ([`crate::io::BufPool::take_span`]), so it is
//! still a registered (fixed) buffer for `uring`; only one larger than a quarter of the pool falls
//! back to a kept standalone buffer. (A 64 x 4 KiB append, 266 KB, used to take the standalone
//! buffer, and the kernel pinned its pages on every write: 3.4% of the bench's samples.)
//!
//! Encoding and sealing are one pass: the batch header is known before the records are
//! encoded, so each block is sealed (header and checksum) the moment its payload is complete,
//! while it is still in the L1 cache, instead of a second pass over the whole batch after it
//! (which, after a real device write, found much of the 266 KB batch gone from the caches).
//! Of a 64 x 4 KiB write's CPU (`log_cpu -- 1 4096 64 2000 null`, device taken out), about 17
//! of 24 us are crc32fast (already on its VPCLMULQDQ path, about 8 bytes per cycle here: the
//! floor for checksumming every byte) and 4-5 us the copy. Fused, the write_sync figure went
//! (best of 6 alternating runs on a shared 2-core machine) from 26.3 to 23.8 us with warm
//! caches and from 35.8 to 30.2 us with cold ones (`cold`); 100 regions 31.8 to 31.3 and 56.8
//! to 50.5 us. In `basalt-bench --target=log --regions=1 --entry-size=4096
//! --entries-per-write=64` (3 alternating pairs of 3 s on a file) user CPU per write went from
//! 60-79 to 46-55 us.
//!
//! A durable batch is acknowledged before its records go into the index: they are put in when
//! the writer next waits for the device, or by the first reader before that (see
//! `Shared::defer`), so an appender waiting on each append no longer waits for the index work
//! too. With 64 x 4 KiB entries per write over 100 regions (`basalt-bench --target=log`, 3
//! alternating pairs of 3 s on a file) that took writes/s from 2,605-2,847 to 2,928-3,416.
//!
//! Per-record work between two writes is kept small: the batch's records are the first append's
//! vector (no copy, sized once), entry spans are one flat vector (not one per record), the gap
//! check updates the projected last indexes in place (undone if the append is refused) instead
//! of a quadratic scan, the refusal check is skipped while no region is refused, and the index
//! takes the records by value (see `index`). `cargo run --release -p engine --example log_cpu --
//! 100 256 64 20000` (CPU per 64-record write over 100 regions, device taken out): 47 us before,
//! 33 us after; the growing records vector alone was 11% of the samples.
//!
//! # Two writes in flight
//! While a batch is in flight, the batches queued behind it are encoded right after it (same
//! segment, next sequence, chained to its checksum) and written at once: a second write in
//! flight. Synced writes overlap on real devices (fio on this project's test machine: 3,150
//! synced 16 KiB writes/s with one job, 6,885 with two), so a burst larger than one batch does
//! not pay one device round per batch. Order is kept where it matters:
//! - the second batch is acknowledged (and applied to the index) only after the first one;
//! - it is durable on its own terms: with durable writes its write completes durable, and
//!   otherwise its own flush is issued after its write completed;
//! - a crash that keeps the second batch but not the first leaves a batch whose predecessor is
//!   missing: recovery stops at the first one (the chain of checksums), so the second one, never
//!   acknowledged, is discarded with it;
//! - only plain batches go second (no checkpoint, no segment change, no superblock write due):
//!   those wait until nothing is in flight, as before.
//!
//! A second write goes out when more is queued than one batch may hold (`batch_bytes_max`), or
//! when [`LogStore::poll`] is called with appends queued while a write is in flight. The writer
//! thread ([`super::thread`]) waits on the device while a write is in flight, and an append
//! arriving meanwhile wakes it (`LogStore::waker`), so the append goes out as the second
//! write at once instead of after the first completes. With 8 writers of one entry each over
//! 100 regions (`basalt-bench --target=log --numjobs=8 --entry-size=256`, 4 alternating pairs
//! on a loaded 2-core machine) that took 12.2k-25.1k entries/s against 3.5k-8.1k without: the
//! writers no longer split into two halves that take turns at the device. (An earlier
//! variant that waited a fixed 150 us for such appends measured no better in the cluster
//! benchmark, and was not kept.) Since then the writer thread gathers the appends of writers on
//! several threads before it writes (see [`super::thread`]): 8 such writers now fill one write
//! of 8 entries at a time, and the second write serves appends that arrive late.

use std::collections::VecDeque;
use std::sync::Arc;

use tracing::{debug, warn};

use super::index::BatchAt;
use super::record::{
    put_batch_header, put_summary, summarize, summary_len, ByteSink, Record, RegionSpan,
    BATCH_FLAG_CHECKPOINT, BATCH_FLAG_PIPELINED, BATCH_HEADER_LEN, ENTRY_HEADER_LEN,
};
use super::{DeferredBatch, LogBatch, LogConfig, RegionLog, SharedRef};
use crate::error::{EngineError, Result};
use crate::io::{AlignedBuf, Completion, IoError, IoKind, IoOp};
use crate::layout::block::{payload_capacity, seal, BLOCK_HEADER_LEN};
use crate::layout::{Checkpoint, Superblock, SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS};

/// Identifies one appended batch; acknowledged once durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// The outcome of one appended batch.
#[derive(Debug)]
pub struct Ack {
    /// The batch.
    pub ticket: Ticket,
    /// `Ok` once durable.
    pub result: Result<()>,
}

/// Where the next batch goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WritePos {
    pub segment: u32,
    pub offset: u64,
    pub sequence: u64,
    pub prev_checksum: u32,
    /// Summary of the previous batch, repeated in the next one.
    pub prev_summary: Option<Vec<RegionSpan>>,
}

struct Pending {
    ticket: Option<u64>,
    records: Vec<Record>,
    bytes: usize,
    flags: u32,
    /// A checkpoint's records are filled in when it is written; a checkpoint too large for one
    /// batch leaves its remaining records, filled, at the front of the queue.
    filled: bool,
}

struct BatchInFlight {
    tickets: Vec<u64>,
    records: Vec<Record>,
    /// Every entry's payload span, all records' in order (an entries record takes as many as
    /// it has entries, other records none).
    spans: Vec<(u32, u32)>,
    at: BatchAt,
    blocks: u32,
    checksum: u32,
    flags: u32,
    flushing: bool,
    summary: Option<Vec<RegionSpan>>,
}

enum InFlight {
    Batch(BatchInFlight),
    Superblock { sb: Superblock, flushing: bool },
}

/// The writer of one store's log, and the owner of its device. See the module docs.
pub struct LogStore {
    shared: SharedRef,
    config: LogConfig,
    superblock: Superblock,
    pos: WritePos,
    queue: VecDeque<Pending>,
    in_flight: Option<InFlight>,
    next_ticket: u64,
    next_tag: u64,
    /// Projected last index per region, including queued batches (to refuse gaps at append).
    projected_last: rustc_hash::FxHashMap<u64, u64>,
    /// `check_gaps`'s undo list (kept to reuse its allocation).
    gap_undo: Vec<(u64, Option<u64>)>,
    checkpoint_queued: bool,
    superblock_wanted: Option<Checkpoint>,
    latched: bool,
    acks: Vec<Ack>,
    /// A standalone write buffer kept for reuse by batches larger than a pool slot (a single
    /// append may exceed `batch_bytes_max`), so even those allocate nothing per write.
    spare: Option<AlignedBuf>,
    /// A batch written while `in_flight` is still in flight (see the module docs), with the tag
    /// of its pending device operation and whether it is already durable.
    second: Option<Second>,
    /// A waker was handed out: a blocking poll may be woken, and then returns early.
    woken_polls: bool,
}

/// The second batch in flight.
struct Second {
    batch: BatchInFlight,
    tag: u64,
    durable: bool,
}

impl LogStore {
    pub(crate) fn from_parts(
        shared: SharedRef,
        config: LogConfig,
        superblock: Superblock,
        pos: WritePos,
    ) -> LogStore {
        LogStore {
            shared,
            config,
            superblock,
            pos,
            queue: VecDeque::new(),
            in_flight: None,
            next_ticket: 1,
            next_tag: 1,
            projected_last: Default::default(),
            gap_undo: Vec::new(),
            checkpoint_queued: false,
            superblock_wanted: None,
            latched: false,
            acks: Vec::new(),
            spare: None,
            second: None,
            woken_polls: false,
        }
    }

    /// The handle serving `region_id`'s log to Raft.
    pub fn region_log(&self, region_id: u64) -> RegionLog {
        RegionLog::new(Arc::clone(&self.shared), region_id)
    }

    /// The superblock as last written.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Region ids the log holds anything for.
    pub fn region_ids(&self) -> Vec<u64> {
        self.shared.index().region_ids()
    }

    /// `(tail, head)` segments of the log.
    pub fn segment_extent(&self) -> (u32, u32) {
        let ix = self.shared.index();
        (ix.segments.tail(), ix.segments.head())
    }

    /// Where the next batch goes: `(segment, device offset, sequence number)`. Everything
    /// acknowledged lies before it.
    pub fn head_position(&self) -> (u32, u64, u64) {
        (self.pos.segment, self.pos.offset, self.pos.sequence)
    }

    /// Batches queued or in flight, not yet acknowledged.
    pub fn pending_count(&self) -> usize {
        self.queue.len()
            + usize::from(matches!(self.in_flight, Some(InFlight::Batch(_))))
            + self.second.as_ref().map_or(0, |s| s.batch.tickets.len())
    }

    /// Whether appended batches wait to be put on the device (the next [`Self::poll`] submits
    /// them).
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether nothing is queued or in flight.
    /// A device write (a batch's, or the superblock's) is in flight.
    pub(crate) fn has_write_in_flight(&self) -> bool {
        self.in_flight.is_some() || self.second.is_some()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty() && self.second.is_none()
    }

    pub(crate) fn shared(&self) -> &SharedRef {
        &self.shared
    }

    /// Polls block until completions again, as before [`LogStore::waker`] (the writer thread
    /// calls it when it hands the store back).
    pub(crate) fn no_more_wakes(&mut self) {
        // A wake still pending in the device only makes one later reap return early, which
        // `poll` then retries.
        self.woken_polls = false;
    }

    /// A handle that ends a blocking [`LogStore::poll`] early (`None` when the backend never
    /// blocks): a thread that queues appends while a write is in flight wakes the poller, which
    /// returns so its caller can append them, and the next poll sends them as the second write.
    pub(crate) fn waker(&mut self) -> Result<Option<crate::io::IoWaker>> {
        let waker = self
            .shared
            .device()
            .io
            .waker()
            .map_err(|source| EngineError::Io {
                device: self.shared.label.clone(),
                source,
            })?;
        // Only a backend with a waker can come back from a blocking reap empty-handed.
        self.woken_polls = waker.is_some();
        Ok(waker)
    }

    /// The device's completion eventfd (see [`crate::io::Io::completion_fd`]), for an owner
    /// that polls this store from an async runtime rather than blocking in [`Self::poll`].
    /// `None` when the backend completes inline.
    pub(crate) fn completion_fd(&mut self) -> Result<Option<std::os::fd::OwnedFd>> {
        self.shared
            .device()
            .io
            .completion_fd()
            .map_err(|source| EngineError::Io {
                device: self.shared.label.clone(),
                source,
            })
    }

    /// Bytes of entries held in the tail cache.
    pub fn cache_bytes(&self) -> u64 {
        self.shared.index().cache_bytes()
    }

    /// Queues `batch`; it is written with whatever else is queued by the next [`Self::poll`].
    /// Refuses a batch that could never fit a segment and entries that leave a gap in a region's
    /// log.
    pub fn append(&mut self, batch: LogBatch) -> Result<Ticket> {
        if self.latched {
            return Err(EngineError::Latched);
        }
        let bytes = batch.encoded_len();
        let max_bytes = self.segment_payload_max() - BATCH_HEADER_LEN;
        if bytes > max_bytes {
            return Err(EngineError::BatchTooLarge {
                size_bytes: bytes as u64,
                max_bytes: max_bytes as u64,
            });
        }
        self.check_refused(batch.records())?;
        self.check_gaps(batch.records())?;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push_back(Pending {
            ticket: Some(ticket),
            records: batch.into_records(),
            bytes,
            flags: 0,
            filled: true,
        });
        Ok(Ticket(ticket))
    }

    /// Payload bytes one segment holds.
    fn segment_payload_max(&self) -> usize {
        let bs = self.shared.geometry.block_size as usize;
        (self.shared.geometry.segment_size_bytes as usize / bs) * payload_capacity(bs)
    }

    fn check_refused(&self, records: &[Record]) -> Result<()> {
        // Deferred batches cannot refuse a region (only recovery does): no need to apply them
        // just to learn that none is.
        if !self.shared.index_without_deferred().any_refused() {
            return Ok(());
        }
        let ix = self.shared.index();
        for r in records {
            if let Some(f) = ix.refusal(r.region_id()) {
                return Err(super::region_log::refused_error(r.region_id(), f));
            }
        }
        Ok(())
    }

    /// Refuses entries that would leave a gap after a region's projected last index, and
    /// projects the records' effect (all or nothing: a refused batch changes nothing).
    fn check_gaps(&mut self, records: &[Record]) -> Result<()> {
        let mut undo = std::mem::take(&mut self.gap_undo);
        undo.clear();
        let mut result = Ok(());
        for r in records {
            let (region_id, new_last, first) = match r {
                Record::Entries { region_id, entries } => (
                    *region_id,
                    entries[entries.len() - 1].index,
                    Some(entries[0].index),
                ),
                Record::Compact {
                    region_id, index, ..
                } => (*region_id, *index, None),
                _ => continue,
            };
            let known = self.projected_last.get(&region_id).copied();
            let last = known.unwrap_or_else(|| self.durable_last(region_id));
            let projected = match first {
                Some(first) if first > last + 1 => {
                    result = Err(EngineError::AppendGap {
                        region_id,
                        index: first,
                        last_index: last,
                    });
                    break;
                }
                Some(_) => new_last,
                None => last.max(new_last),
            };
            undo.push((region_id, known));
            self.projected_last.insert(region_id, projected);
        }
        if result.is_err() {
            for &(region_id, known) in undo.iter().rev() {
                match known {
                    Some(last) => self.projected_last.insert(region_id, last),
                    None => self.projected_last.remove(&region_id),
                };
            }
        }
        self.gap_undo = undo;
        result
    }

    /// The last index of `region_id` in the index (durable batches only).
    fn durable_last(&self, region_id: u64) -> u64 {
        self.shared
            .index()
            .region(region_id)
            .map_or(0, |r| r.last_index())
    }

    /// Queues a compaction of `region_id`'s log up to and including `index` (clamped to the
    /// region's last index). Segments whose entries are all compacted are freed once the
    /// compaction is durable (after the regions' latest states are restated in a checkpoint
    /// batch, if some still live in them).
    pub fn compact_to(&mut self, region_id: u64, index: u64) -> Result<Ticket> {
        let (index, term) = {
            let ix = self.shared.index();
            let Some(r) = ix.region(region_id) else {
                return Err(EngineError::UnknownRegion { region_id });
            };
            let index = index.min(r.last_index());
            (index, r.term(index).unwrap_or(r.compacted_term))
        };
        // The index holds durable batches only: a batch still queued or in flight may replace
        // the entry at `index` (a snapshot recorded over a deposed leader's entries, say), and
        // the compaction must name the term the log will have there, not the replaced one.
        let term = self.pending_term(region_id, index).unwrap_or(term);
        let rec = Record::Compact {
            region_id,
            index,
            term,
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push_back(Pending {
            ticket: Some(ticket),
            bytes: rec.encoded_len(),
            records: vec![rec],
            flags: 0,
            filled: true,
        });
        Ok(Ticket(ticket))
    }

    /// The term `region_id`'s log will have at `index` once the batches not yet durable
    /// (the ones in flight, then the queue, in that order) are applied, if one of them decides
    /// it.
    fn pending_term(&self, region_id: u64, index: u64) -> Option<u64> {
        let in_flight = match &self.in_flight {
            Some(InFlight::Batch(b)) => b.records.as_slice(),
            _ => &[],
        };
        let records = in_flight
            .iter()
            .chain(self.second.iter().flat_map(|sec| sec.batch.records.iter()))
            .chain(self.queue.iter().flat_map(|p| p.records.iter()));
        let mut term = None;
        for r in records.filter(|r| r.region_id() == region_id) {
            match r {
                // A snapshot at or past `index` (past it, the compaction becomes a no-op).
                Record::Compact {
                    index: at, term: t, ..
                } if *at >= index => term = Some(*t),
                Record::Entries { entries, .. } => {
                    let first = entries.first().map_or(u64::MAX, |e| e.index);
                    if let Some(e) = index
                        .checked_sub(first)
                        .and_then(|i| entries.get(i as usize))
                    {
                        term = Some(e.term);
                    }
                }
                Record::Clean { .. } => term = None,
                _ => {}
            }
        }
        term
    }

    /// Drives the device: starts the next write if none is in flight, reaps completions and
    /// returns acknowledgements. With `wait`, blocks until at least one acknowledgement is ready
    /// or nothing is left to do.
    pub fn poll(&mut self, wait: bool) -> Result<Vec<Ack>> {
        let mut completions = Vec::new();
        loop {
            if let Err(e) = self.start_next() {
                self.latch_all(e);
            }
            if self.in_flight.is_none() || (!self.acks.is_empty() && !wait) {
                break;
            }
            let block = wait && self.acks.is_empty();
            if block {
                // About to wait for the device: earlier batches' records go into the index now.
                self.shared.apply_deferred();
            }
            {
                let mut dev = self.shared.device();
                completions.append(&mut dev.stash);
                if completions.is_empty() {
                    if let Err(e) = dev.io.reap(&mut completions, usize::from(block)) {
                        drop(dev);
                        self.latch_all(EngineError::Io {
                            device: self.shared.label.clone(),
                            source: e,
                        });
                        break;
                    }
                }
            }
            if completions.is_empty() {
                // A blocking reap that came back empty was woken (see `waker`).
                if block && !self.woken_polls {
                    continue;
                }
                break;
            }
            for c in completions.drain(..) {
                self.handle_completion(c);
            }
            if !wait && self.in_flight.is_some() {
                continue;
            }
        }
        Ok(std::mem::take(&mut self.acks))
    }

    /// Appends `batch` and waits until it is durable.
    pub fn write_sync(&mut self, batch: LogBatch) -> Result<()> {
        let t = self.append(batch)?;
        self.wait_for(t)
    }

    /// Waits until `ticket` is acknowledged; acknowledgements of other tickets are dropped.
    pub fn wait_for(&mut self, ticket: Ticket) -> Result<()> {
        loop {
            let acks = self.poll(true)?;
            if acks.is_empty() && self.is_idle() {
                return Err(EngineError::WriterStopped);
            }
            for a in acks {
                if a.ticket == ticket {
                    return a.result;
                }
            }
        }
    }

    fn latch_all(&mut self, first: EngineError) {
        warn!(device = %self.shared.label, error = %first, "log writer latched");
        self.latched = true;
        let mut first = Some(first);
        let mut tickets: Vec<u64> = Vec::new();
        if let Some(InFlight::Batch(b)) = self.in_flight.take() {
            tickets.extend(b.tickets);
        }
        if let Some(sec) = self.second.take() {
            tickets.extend(sec.batch.tickets);
        }
        tickets.extend(self.queue.drain(..).filter_map(|p| p.ticket));
        for t in tickets {
            let result = Err(first.take().unwrap_or(EngineError::Latched));
            self.acks.push(Ack {
                ticket: Ticket(t),
                result,
            });
        }
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn start_next(&mut self) -> Result<()> {
        if self.latched {
            return Ok(());
        }
        if self.in_flight.is_some() {
            return self.start_second();
        }
        if let Some(cp) = self.superblock_wanted.take() {
            return self.start_superblock(cp);
        }
        if self.queue.is_empty() {
            return Ok(());
        }
        self.start_batch()
    }

    fn start_superblock(&mut self, checkpoint: Checkpoint) -> Result<()> {
        let sb = Superblock {
            sequence: self.superblock.sequence + 1,
            checkpoint,
            ..self.superblock
        };
        let copy = self.superblock.next_copy();
        let align = self.shared.device().io.geometry().block_size as usize;
        let mut buf = AlignedBuf::new(SUPERBLOCK_LEN.max(align), align);
        sb.encode(copy, &mut buf.as_mut_slice()[..SUPERBLOCK_LEN]);
        let tag = self.tag();
        let op = IoOp::Write {
            tag,
            offset: SUPERBLOCK_OFFSETS[copy],
            buf,
            durable: self.config.durable_writes,
        };
        self.submit(op)?;
        self.in_flight = Some(InFlight::Superblock {
            sb,
            flushing: false,
        });
        Ok(())
    }

    fn submit(&mut self, op: IoOp) -> Result<()> {
        let mut dev = self.shared.device();
        let r = dev.io.submit(op).and_then(|_| dev.io.kick());
        r.map_err(|source| EngineError::Io {
            device: self.shared.label.clone(),
            source,
        })
    }

    /// Takes queued batches (at least one, then while they fit `batch_bytes_max`).
    fn take_group(&mut self, summary_bytes: usize) -> Vec<Pending> {
        let mut group = Vec::new();
        // `batch_bytes_max` counts device bytes: block headers and the summary take their share.
        let bs = self.shared.geometry.block_size as usize;
        let batch_payload_max =
            (self.config.batch_bytes_max as usize / bs).max(1) * payload_capacity(bs);
        let mut total = BATCH_HEADER_LEN + summary_bytes;
        let limit = batch_payload_max.min(self.segment_payload_max());
        while let Some(p) = self.queue.front() {
            if !group.is_empty() && (total + p.bytes > limit || p.flags != 0) {
                break;
            }
            total += p.bytes;
            let p = self.queue.pop_front().expect("front checked");
            let stop = p.flags != 0;
            group.push(p);
            if stop {
                break;
            }
        }
        group
    }

    /// Restates every region's state as it is now (every batch queued before the checkpoint is
    /// durable), keeping what does not fit one batch for the next one.
    fn fill_checkpoint(&mut self, p: &mut Pending) {
        if !p.filled {
            p.records = self.shared.index().latest_state_records();
            p.filled = true;
        }
        let limit = self.segment_payload_max() - BATCH_HEADER_LEN;
        let (mut bytes, mut keep) = (0, 0);
        for r in &p.records {
            if keep > 0 && bytes + r.encoded_len() > limit {
                break;
            }
            bytes += r.encoded_len();
            keep += 1;
        }
        if keep < p.records.len() {
            let rest = p.records.split_off(keep);
            let rest_bytes = rest.iter().map(Record::encoded_len).sum();
            let cont = Pending {
                ticket: None,
                records: rest,
                bytes: rest_bytes,
                flags: p.flags,
                filled: true,
            };
            self.queue.push_front(cont);
        }
        p.bytes = bytes;
    }

    fn start_batch(&mut self) -> Result<()> {
        let mut group = self.take_group(summary_len(self.pos.prev_summary.as_deref()));
        if group[0].flags & BATCH_FLAG_CHECKPOINT != 0 {
            self.fill_checkpoint(&mut group[0]);
        }
        let geo = self.shared.geometry;
        let bs = geo.block_size as usize;
        let cap = payload_capacity(bs);
        let records_len = group.iter().map(|p| p.bytes).sum::<usize>();
        let mut summary = self.pos.prev_summary.take();
        if BATCH_HEADER_LEN + summary_len(summary.as_deref()) + records_len
            > self.segment_payload_max()
        {
            summary = None; // no room: recovery then treats the previous batch's contents as unknown
        }
        let payload_len = BATCH_HEADER_LEN + summary_len(summary.as_deref()) + records_len;
        let blocks = payload_len.div_ceil(cap);
        let len_bytes = (blocks * bs) as u64;
        assert!(
            len_bytes <= geo.segment_size_bytes,
            "batch of {len_bytes} bytes exceeds a segment"
        );
        if self.pos.offset + len_bytes > geo.segment_end(self.pos.segment) {
            let advanced = self.shared.index_mut().segments.advance_head();
            let Some(next) = advanced else {
                // Fail this group and everything queued after it: later batches may continue the
                // entries of this one.
                let (segment_count, tail_segment) =
                    (geo.segment_count, self.shared.index().segments.tail());
                self.checkpoint_queued = false;
                let rest: Vec<Pending> = self.queue.drain(..).collect();
                for p in group.into_iter().chain(rest).filter_map(|p| p.ticket) {
                    let result = Err(EngineError::LogFull {
                        segment_count,
                        tail_segment,
                    });
                    self.acks.push(Ack {
                        ticket: Ticket(p),
                        result,
                    });
                }
                self.projected_last.clear();
                return Ok(());
            };
            self.pos.segment = next;
            self.pos.offset = geo.segment_offset(next);
        }
        let at = BatchAt {
            segment: self.pos.segment,
            offset: self.pos.offset,
            sequence: self.pos.sequence,
        };
        let shape = BatchShape {
            at,
            prev_checksum: self.pos.prev_checksum,
            payload_len,
            blocks,
        };
        let encoded = self.encode_group(group, summary, shape, 0);
        self.submit_encoded(encoded)
    }

    /// Encodes the queued batches that follow the batch in flight, right after it, into a
    /// sealed buffer (the second write, see the module docs). Only for plain batches that fit
    /// the current segment after the one in flight: anything else (checkpoints, a segment
    /// change, a superblock write due) waits for the ordinary path.
    fn encode_second(&mut self) -> Option<Encoded> {
        if self.latched || self.second.is_some() || self.superblock_wanted.is_some() {
            return None;
        }
        let Some(InFlight::Batch(b)) = &self.in_flight else {
            return None;
        };
        if !self.queue.front().is_some_and(|p| p.flags == 0 && p.filled) {
            return None;
        }
        let geo = self.shared.geometry;
        let bs = geo.block_size as usize;
        let at = BatchAt {
            segment: b.at.segment,
            offset: b.at.offset + u64::from(b.blocks) * bs as u64,
            sequence: b.at.sequence + 1,
        };
        let (prev_checksum, mut summary) = (b.checksum, b.summary.clone());
        let group = self.take_group(summary_len(summary.as_deref()));
        let records_len = group.iter().map(|p| p.bytes).sum::<usize>();
        if BATCH_HEADER_LEN + summary_len(summary.as_deref()) + records_len
            > self.segment_payload_max()
        {
            summary = None;
        }
        let payload_len = BATCH_HEADER_LEN + summary_len(summary.as_deref()) + records_len;
        let blocks = payload_len.div_ceil(payload_capacity(bs));
        if at.offset + (blocks * bs) as u64 > geo.segment_end(at.segment) {
            for p in group.into_iter().rev() {
                self.queue.push_front(p);
            }
            return None;
        }
        let shape = BatchShape {
            at,
            prev_checksum,
            payload_len,
            blocks,
        };
        Some(self.encode_group(group, summary, shape, BATCH_FLAG_PIPELINED))
    }

    /// Encodes `group` (with the previous batch's `summary`) into a write buffer and seals it.
    fn encode_group(
        &mut self,
        group: Vec<Pending>,
        summary: Option<Vec<RegionSpan>>,
        shape: BatchShape,
        extra_flags: u32,
    ) -> Encoded {
        let bs = self.shared.geometry.block_size as usize;
        let mut buf = self.take_buffer(shape.blocks * bs);
        let flags = group.iter().fold(extra_flags, |f, p| f | p.flags);
        let mut tickets = Vec::with_capacity(group.len());
        // Sized once: growing these one push at a time cost more than the index work per batch.
        let record_count = group.iter().map(|p| p.records.len()).sum::<usize>();
        let entry_count = group
            .iter()
            .flat_map(|p| &p.records)
            .map(Record::entry_count)
            .sum::<usize>();
        let mut records: Vec<Record> = Vec::new();
        let mut spans = Vec::with_capacity(entry_count);
        let ids = SealIds {
            block_size: bs,
            nonce: self.shared.nonce,
        };
        let checksum = {
            // Every field of the batch header is known before the records are encoded, so each
            // block is sealed as soon as its payload is complete, while it is still in cache.
            let mut header = [0u8; BATCH_HEADER_LEN];
            put_batch_header(
                &mut header,
                shape.prev_checksum,
                record_count as u32,
                shape.payload_len as u32,
                flags,
                summary.as_deref(),
            );
            let mut sink = BlockSink::new(buf.as_mut_slice(), &shape, ids);
            sink.put(&header);
            put_summary(&mut sink, summary.as_deref());
            for p in group {
                tickets.extend(p.ticket);
                for r in &p.records {
                    encode_record(&mut sink, r, &mut spans);
                }
                if records.is_empty() {
                    // The first append's vector becomes the batch's (no copy for a lone append).
                    records = p.records;
                    records.reserve(record_count - records.len());
                } else {
                    records.extend(p.records);
                }
            }
            sink.finish()
        };
        assert_eq!(records.len(), record_count, "record count in the header");
        Encoded {
            buf,
            tickets,
            records,
            spans,
            shape,
            checksum,
            flags,
            used_summary: summary,
        }
    }

    /// Submits an encoded batch; it becomes the batch in flight.
    fn submit_encoded(&mut self, mut e: Encoded) -> Result<()> {
        let at = e.shape.at;
        assert!(
            at.offset == self.pos.offset
                && at.sequence == self.pos.sequence
                && e.shape.prev_checksum == self.pos.prev_checksum,
            "batch encoded for another position"
        );
        self.pos.prev_summary = e.used_summary.take();
        let (batch, _, submitted) = self.write_encoded(e);
        self.in_flight = Some(InFlight::Batch(batch));
        // A failed submission latches the writer, which fails the tickets just put in flight.
        submitted
    }

    /// Writes the batches queued behind the one in flight as the second write in flight, if
    /// they qualify (see `encode_second` and the module docs).
    fn start_second(&mut self) -> Result<()> {
        let Some(e) = self.encode_second() else {
            return Ok(());
        };
        let (batch, tag, submitted) = self.write_encoded(e);
        self.second = Some(Second {
            batch,
            tag,
            durable: false,
        });
        // A failed submission latches the writer, which fails both batches in flight.
        submitted
    }

    /// Submits the write of an encoded batch: the batch to track in flight, the write's tag,
    /// and the submission's outcome.
    fn write_encoded(&mut self, e: Encoded) -> (BatchInFlight, u64, Result<()>) {
        let tag = self.tag();
        let submitted = self.submit(IoOp::Write {
            tag,
            offset: e.shape.at.offset,
            buf: e.buf,
            durable: self.config.durable_writes,
        });
        let batch = BatchInFlight {
            summary: summarize(&e.records),
            tickets: e.tickets,
            records: e.records,
            spans: e.spans,
            at: e.shape.at,
            blocks: e.shape.blocks as u32,
            checksum: e.checksum,
            flags: e.flags,
            flushing: false,
        };
        (batch, tag, submitted)
    }

    fn take_buffer(&mut self, len: usize) -> AlignedBuf {
        let align = self.shared.geometry.block_size as usize;
        let pooled = {
            let mut dev = self.shared.device();
            let pool = dev.io.pool();
            if pool.align() % align == 0 {
                // A batch larger than a slot takes adjacent slots: still a registered buffer.
                pool.take_span(len)
            } else {
                None
            }
        };
        let spare = self
            .spare
            .take_if(|b| b.capacity() >= len && b.align() % align == 0);
        let mut buf = pooled
            .or(spare)
            .unwrap_or_else(|| AlignedBuf::new(len, align));
        buf.set_len(len);
        buf
    }

    /// Takes back a buffer the device is done with: a pool slot returns to its pool, a
    /// standalone write buffer is kept for the next oversized batch.
    fn recycle_buffer(&mut self, buf: AlignedBuf, kind: IoKind) {
        let keep = kind == IoKind::Write
            && buf.pool_id().is_none()
            && buf.align() % self.shared.geometry.block_size as usize == 0
            && self
                .spare
                .as_ref()
                .is_none_or(|s| s.capacity() < buf.capacity());
        if keep {
            self.spare = Some(buf);
        } else {
            self.shared.device().io.pool().give(buf);
        }
    }

    fn handle_completion(&mut self, c: Completion) {
        if let Some(buf) = c.buf {
            self.recycle_buffer(buf, c.kind);
        }
        if c.tag & super::READ_TAG_BIT != 0 {
            return; // a cold read's, collected by its reader (never expected here)
        }
        if let Err(source) = c.result {
            self.fail_in_flight(source);
            return;
        }
        let is_second = self.second.as_ref().is_some_and(|sec| sec.tag == c.tag);
        let needs_flush = c.kind == IoKind::Write && !self.config.durable_writes;
        if needs_flush {
            let tag = self.tag();
            if let Err(e) = self.submit(IoOp::Flush { tag }) {
                self.latch_all(e);
                return;
            }
            if is_second {
                if let Some(sec) = &mut self.second {
                    sec.tag = tag;
                    sec.batch.flushing = true;
                }
                return;
            }
            match &mut self.in_flight {
                Some(InFlight::Batch(b)) => b.flushing = true,
                Some(InFlight::Superblock { flushing, .. }) => *flushing = true,
                None => {}
            }
            return;
        }
        if is_second {
            // Durable, but acknowledged only after the batch before it.
            if let Some(sec) = &mut self.second {
                sec.durable = true;
            }
            return;
        }
        match self.in_flight.take() {
            Some(InFlight::Batch(b)) => {
                self.batch_durable(b);
                if let Some(sec) = self.second.take() {
                    if sec.durable {
                        self.batch_durable(sec.batch);
                    } else {
                        self.in_flight = Some(InFlight::Batch(sec.batch));
                    }
                }
            }
            Some(InFlight::Superblock { sb, .. }) => {
                debug!(device = %self.shared.label, sequence = sb.sequence, tail = sb.checkpoint.segment, "superblock written");
                self.shared
                    .index_mut()
                    .segments
                    .set_durable_tail(sb.checkpoint.segment);
                self.superblock = sb;
            }
            None => {}
        }
    }

    fn fail_in_flight(&mut self, source: IoError) {
        self.latch_all(EngineError::Io {
            device: self.shared.label.clone(),
            source,
        });
    }

    fn batch_durable(&mut self, b: BatchInFlight) {
        let bs = self.shared.geometry.block_size as u64;
        self.shared
            .index_mut()
            .note_batch(b.at, self.pos.prev_checksum, b.blocks as u64 * bs);
        // The records go into the index when the writer next waits for the device (see
        // `Shared::defer`).
        self.shared.defer(DeferredBatch {
            records: b.records,
            spans: b.spans,
            at: b.at,
        });
        self.pos.offset += b.blocks as u64 * bs;
        self.pos.sequence += 1;
        self.pos.prev_checksum = b.checksum;
        self.pos.prev_summary = b.summary;
        let continued = self
            .queue
            .front()
            .is_some_and(|p| p.flags & BATCH_FLAG_CHECKPOINT != 0 && p.filled);
        if b.flags & BATCH_FLAG_CHECKPOINT != 0 && !continued {
            self.checkpoint_queued = false;
        }
        for t in b.tickets {
            self.acks.push(Ack {
                ticket: Ticket(t),
                result: Ok(()),
            });
        }
        if b.flags & BATCH_FLAG_CHECKPOINT != 0 {
            // A checkpoint's restated states are what frees the tail: in the index now, or
            // `free_segments` would queue another checkpoint instead.
            self.shared.apply_deferred();
        }
        self.free_segments();
    }

    /// Frees dead segments at the tail; queues a checkpoint batch when only restatable states
    /// pin the tail, and a superblock write when the tail moved.
    fn free_segments(&mut self) {
        // Right after a batch is durable: its records may still be deferred (see
        // `Shared::index_mut_without_deferred` for why that is safe here).
        let mut ix = self.shared.index_mut_without_deferred();
        let mut moved = false;
        while ix.segments.tail() != ix.segments.head() && ix.segment_is_dead(ix.segments.tail()) {
            ix.segments.free_tail();
            moved = true;
        }
        let tail = ix.segments.tail();
        if moved {
            let cp = ix.segments.usage(tail).first_batch;
            debug!(device = %self.shared.label, tail, "segments freed");
            self.superblock_wanted = cp.or(self.superblock_wanted);
        }
        if tail != ix.segments.head() && !self.checkpoint_queued && ix.segment_entries_dead(tail) {
            // Its records are filled in when it is written (see `start_batch`).
            self.queue.push_back(Pending {
                ticket: None,
                records: Vec::new(),
                bytes: 0,
                flags: BATCH_FLAG_CHECKPOINT,
                filled: false,
            });
            self.checkpoint_queued = true;
        }
    }
}

/// Where a batch goes and how big it is.
#[derive(Clone, Copy)]
struct BatchShape {
    at: BatchAt,
    prev_checksum: u32,
    payload_len: usize,
    blocks: usize,
}

/// What a block checksum binds besides the block: its size and the store's format nonce.
struct SealIds {
    block_size: usize,
    nonce: u64,
}

/// A batch encoded and sealed, ready to submit.
struct Encoded {
    buf: AlignedBuf,
    tickets: Vec<u64>,
    records: Vec<Record>,
    spans: Vec<(u32, u32)>,
    shape: BatchShape,
    checksum: u32,
    flags: u32,
    /// The previous batch's summary, as written into this one.
    used_summary: Option<Vec<RegionSpan>>,
}

/// Encodes `r` at the sink's position; appends each entry's payload position and length to
/// `spans`.
fn encode_record(sink: &mut BlockSink<'_>, r: &Record, spans: &mut Vec<(u32, u32)>) {
    let start = sink.stream_pos();
    let Record::Entries { entries, .. } = r else {
        r.encode(sink, |_, _| {});
        return;
    };
    let mut lens = entries
        .iter()
        .map(|e| (ENTRY_HEADER_LEN + e.context.len() + e.data.len()) as u32);
    r.encode(sink, |_, pos| {
        spans.push(((start + pos) as u32, lens.next().unwrap_or(0)));
    });
}

/// Writes a batch's byte stream into the payload areas of its consecutive blocks, and seals
/// each block (header and checksum) as soon as its payload is complete: the block is still in
/// the cache when its checksum reads it, and the batch takes one pass instead of an encoding
/// pass and a sealing pass. The chain checksum of the batch accumulates block by block.
struct BlockSink<'a> {
    buf: &'a mut [u8],
    block_size: usize,
    /// Payload bytes per block.
    cap: usize,
    /// Bytes of the stream put so far.
    pos: usize,
    /// Payload bytes in the block being filled (kept, so `put` divides nothing).
    at: usize,
    shape: BatchShape,
    nonce: u64,
    /// Blocks sealed so far (`0..sealed`); the block being filled is `sealed`.
    sealed: usize,
    chain: crc32fast::Hasher,
}

impl<'a> BlockSink<'a> {
    /// A sink over `buf`, which holds exactly `shape.blocks` blocks.
    fn new(buf: &'a mut [u8], shape: &BatchShape, ids: SealIds) -> BlockSink<'a> {
        let cap = payload_capacity(ids.block_size);
        assert_eq!(
            buf.len(),
            shape.blocks * ids.block_size,
            "write buffer size"
        );
        assert_eq!(
            shape.payload_len.div_ceil(cap),
            shape.blocks,
            "batch block count"
        );
        BlockSink {
            buf,
            block_size: ids.block_size,
            cap,
            pos: 0,
            at: 0,
            shape: *shape,
            nonce: ids.nonce,
            sealed: 0,
            chain: crc32fast::Hasher::new(),
        }
    }

    fn stream_pos(&self) -> usize {
        self.pos
    }

    /// Seals the next block, whose payload (`used` bytes) is in place.
    fn seal_next(&mut self, used: usize) {
        let (i, bs) = (self.sealed, self.block_size);
        let block = &mut self.buf[i * bs..(i + 1) * bs];
        // Only the last block has padding; a pool buffer's old contents must not leak into it.
        block[BLOCK_HEADER_LEN + used..].fill(0);
        let sum = seal(
            block,
            self.shape.at.offset + (i * bs) as u64,
            self.nonce,
            self.shape.at.sequence,
            i as u32,
            self.shape.blocks as u32,
            used as u32,
        );
        self.chain.update(&sum.to_le_bytes());
        self.sealed += 1;
    }

    /// Seals the last block; returns the batch's chain checksum. The stream must have been
    /// exactly the batch's payload.
    fn finish(mut self) -> u32 {
        assert_eq!(self.pos, self.shape.payload_len, "batch size estimate");
        if self.at > 0 {
            self.seal_next(self.at);
        }
        assert_eq!(self.sealed, self.shape.blocks, "every block sealed");
        self.chain.finalize()
    }
}

impl ByteSink for BlockSink<'_> {
    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = bytes.len().min(self.cap - self.at);
            let start = self.sealed * self.block_size + BLOCK_HEADER_LEN + self.at;
            self.buf[start..start + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.pos += n;
            self.at += n;
            if self.at == self.cap {
                self.seal_next(self.cap);
                self.at = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The block sink seals every block exactly once, as it completes: a stream that ends
    //! mid-block, one that ends exactly on a block boundary, and pieces that straddle blocks
    //! all give blocks that verify at their own offsets, carry the stream back in order, and
    //! chain to the checksum of the block checksums.

    use super::*;
    use crate::layout::block::{payload, verify};

    const BS: usize = 512;

    fn sink_batch(stream: &[u8], piece: usize) -> (Vec<u8>, BatchShape, u32) {
        let cap = payload_capacity(BS);
        let blocks = stream.len().div_ceil(cap);
        let shape = BatchShape {
            at: BatchAt {
                segment: 1,
                offset: 8 * BS as u64,
                sequence: 42,
            },
            prev_checksum: 7,
            payload_len: stream.len(),
            blocks,
        };
        // Stale bytes, as a reused pool buffer holds: padding must still come out zero.
        let mut buf = vec![0xa5u8; blocks * BS];
        let ids = SealIds {
            block_size: BS,
            nonce: 99,
        };
        let mut sink = BlockSink::new(&mut buf, &shape, ids);
        for chunk in stream.chunks(piece) {
            sink.put(chunk);
        }
        let chain = sink.finish();
        (buf, shape, chain)
    }

    #[test]
    fn every_block_is_sealed_once_at_its_own_offset() {
        let cap = payload_capacity(BS);
        for len in [1, cap - 1, cap, cap + 1, 3 * cap, 3 * cap + 17] {
            for piece in [1, 17, cap, 5000] {
                let stream: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let (buf, shape, chain) = sink_batch(&stream, piece);
                let mut back = Vec::new();
                let mut sums = crc32fast::Hasher::new();
                for (i, block) in buf.chunks(BS).enumerate() {
                    let offset = shape.at.offset + (i * BS) as u64;
                    let h = verify(block, offset, 99).expect("block verifies");
                    assert_eq!((h.sequence, h.block_index), (42, i as u32));
                    assert_eq!(h.block_count as usize, shape.blocks);
                    assert!(
                        verify(block, offset + BS as u64, 99).is_err(),
                        "offset bound"
                    );
                    let used = payload(block, &h);
                    assert!(block[BLOCK_HEADER_LEN + used.len()..]
                        .iter()
                        .all(|&b| b == 0));
                    back.extend_from_slice(used);
                    sums.update(&h.checksum.to_le_bytes());
                }
                assert_eq!(back, stream, "len {len} piece {piece}");
                assert_eq!(chain, sums.finalize(), "chain checksum");
            }
        }
    }

    #[test]
    #[should_panic(expected = "batch size estimate")]
    fn a_short_stream_is_refused() {
        let cap = payload_capacity(BS);
        let shape = BatchShape {
            at: BatchAt {
                segment: 1,
                offset: 0,
                sequence: 1,
            },
            prev_checksum: 0,
            payload_len: cap + 10,
            blocks: 2,
        };
        let mut buf = vec![0u8; 2 * BS];
        let ids = SealIds {
            block_size: BS,
            nonce: 1,
        };
        let mut sink = BlockSink::new(&mut buf, &shape, ids);
        sink.put(&[1u8; 10]);
        sink.finish();
    }
}

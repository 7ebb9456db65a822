//! The state write stream ([`StreamWriter`]) and the shared reader ([`StateReader`]).
//!
//! The writer appends records to the payload stream of its head segment, gathers whole blocks
//! in memory and submits them as non-durable writes of up to `write_buffer_bytes`. A partly
//! filled block stays in memory until [`StreamWriter::pad_and_submit`] (checkpoint, freeze,
//! segment switch) writes it padded; the stream then continues on the next block. Bytes still
//! buffered or in flight are served from memory ([`StreamWriter::mem_block`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::record::{self, LINK_LEN};

use super::segments::StreamGeometry;
use super::ValueLoc;
use crate::error::{EngineError, Result};
use crate::io::{run_one, AlignedBuf, Completion, Io, IoOp};

fn io_err(label: &str) -> impl Fn(crate::io::IoError) -> EngineError + '_ {
    move |source| EngineError::Io {
        device: label.to_string(),
        source,
    }
}

/// A buffer of `len` bytes for `io`: a pool slot when one fits, else a standalone buffer.
fn io_buf(io: &mut dyn Io, len: usize, align: usize) -> AlignedBuf {
    let pool = io.pool();
    if pool.slot_size_bytes() >= len {
        if let Some(mut b) = pool.take() {
            b.set_len(len);
            return b;
        }
    }
    AlignedBuf::new(len, align)
}

/// Writes in flight at most (bounds the memory holding their copies for reads).
const INFLIGHT_WRITES_MAX: usize = 8;

/// Bytes of verified block payloads the reader keeps for later reads. A written state block
/// never changes until its segment is reused under a new generation, so a cached payload is
/// served only while its segment's generation is the one it was read under. 32 MiB holds the
/// values of a few hundred thousand small keys: point reads of a hot working set stop paying a
/// direct-I/O device read each (on a virtual machine, also a VM exit each).
pub const READ_CACHE_BYTES_MAX: usize = 32 << 20;

/// A state block: (segment, block index).
type BlockId = (u32, u32);

/// Verified payloads of state blocks read from the device, by (segment, block), evicted oldest
/// first.
#[derive(Default)]
struct BlockCache {
    /// (segment, block) -> (generation read under, payload).
    blocks: HashMap<BlockId, (u64, Arc<[u8]>)>,
    order: VecDeque<BlockId>,
    bytes: usize,
}

impl BlockCache {
    fn get(&self, segment: u32, block: u32, generation: u64) -> Option<&[u8]> {
        match self.blocks.get(&(segment, block)) {
            Some((g, p)) if *g == generation => Some(p),
            _ => None,
        }
    }

    fn insert(&mut self, segment: u32, block: u32, generation: u64, payload: &[u8]) {
        if self.get(segment, block, generation).is_some() {
            return;
        }
        let old = self
            .blocks
            .insert((segment, block), (generation, Arc::from(payload)));
        self.bytes += payload.len();
        self.bytes -= old.map_or(0, |(_, p)| p.len());
        self.order.push_back((segment, block));
        while self.bytes > READ_CACHE_BYTES_MAX {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            if let Some((_, p)) = self.blocks.remove(&k) {
                self.bytes -= p.len();
            }
        }
    }
}

/// Stream bytes of a segment available to records other than its link: all blocks but the last.
pub fn record_area(sg: &StreamGeometry) -> u64 {
    sg.stream_capacity() - sg.payload_capacity() as u64
}

/// The segment being appended to.
#[derive(Debug)]
struct Head {
    segment: u32,
    generation: u64,
    /// Next stream offset. Invariant: `buf_block * cap + buf.len() == pos`.
    pos: u64,
    /// First block held in `buf`.
    buf_block: u32,
    /// Stream bytes from `buf_block` on, not yet submitted.
    buf: Vec<u8>,
}

#[derive(Debug)]
struct InFlight {
    segment: u32,
    first_block: u32,
    /// Payload areas of the blocks written (whole capacity each).
    payload: Vec<u8>,
}

/// Appends records to the state segments. See the module docs.
pub struct StreamWriter {
    io: Box<dyn Io>,
    sg: StreamGeometry,
    label: String,
    head: Option<Head>,
    inflight: BTreeMap<u64, InFlight>,
    next_tag: u64,
    write_buffer_bytes: usize,
    completions: Vec<Completion>,
    latched: bool,
}

impl StreamWriter {
    /// A writer on `io` with no head segment yet.
    pub fn new(
        io: Box<dyn Io>,
        sg: StreamGeometry,
        label: String,
        write_buffer_bytes: usize,
    ) -> StreamWriter {
        StreamWriter {
            io,
            sg,
            label,
            head: None,
            inflight: BTreeMap::new(),
            next_tag: 1,
            write_buffer_bytes,
            completions: Vec::new(),
            latched: false,
        }
    }

    /// The head segment, its generation and the next stream offset.
    pub fn head(&self) -> Option<(u32, u64, u64)> {
        self.head.as_ref().map(|h| (h.segment, h.generation, h.pos))
    }

    /// Bytes a record may still take in the head segment. The last block is kept for the
    /// link record (padding may skip to any block boundary, so the link's room must be a whole
    /// block).
    pub fn room(&self) -> u64 {
        match &self.head {
            Some(h) => record_area(&self.sg).saturating_sub(h.pos),
            None => 0,
        }
    }

    fn check(&self) -> Result<()> {
        if self.latched {
            return Err(EngineError::Latched);
        }
        Ok(())
    }

    /// Appends `rec` (which fits: see [`StreamWriter::room`]); returns its location.
    pub fn append(&mut self, rec: &[u8]) -> Result<ValueLoc> {
        self.check()?;
        let head = self.head.as_mut().expect("append needs a head segment");
        assert!(
            head.pos + rec.len() as u64 <= self.sg.stream_capacity(),
            "record overruns its segment"
        );
        let loc = ValueLoc {
            segment: head.segment,
            offset: head.pos as u32,
            len: rec.len() as u32,
        };
        head.buf.extend_from_slice(rec);
        head.pos += rec.len() as u64;
        let cap = self.sg.payload_capacity();
        if head.buf.len() >= self.write_buffer_bytes.max(cap) {
            let full = head.buf.len() / cap;
            self.submit_blocks(full)?;
            self.poll()?;
        }
        Ok(loc)
    }

    /// Ends the head segment with a link to `segment` (generation `generation`), writes what
    /// is buffered, and continues there. Returns the old head and its final stream length.
    pub fn switch(&mut self, segment: u32, generation: u64) -> Result<Option<(u32, u64)>> {
        self.check()?;
        let mut old = None;
        if self.head.is_some() {
            let mut link = Vec::with_capacity(LINK_LEN);
            record::encode_link(&mut link, segment, generation);
            self.append(&link)?;
            let end = self.pad_and_submit()?;
            old = self.head.as_ref().map(|h| (h.segment, end));
        }
        self.head = Some(Head {
            segment,
            generation,
            pos: 0,
            buf_block: 0,
            buf: Vec::new(),
        });
        Ok(old)
    }

    /// Pads the partly filled block and submits everything buffered; the stream continues on
    /// the next block. Returns the head's new stream offset.
    pub fn pad_and_submit(&mut self) -> Result<u64> {
        self.check()?;
        let cap = self.sg.payload_capacity();
        let Some(head) = self.head.as_mut() else {
            return Ok(0);
        };
        let used = head.buf.len();
        if used == 0 {
            return Ok(head.pos);
        }
        let blocks = used.div_ceil(cap);
        head.buf.resize(blocks * cap, 0);
        head.pos = head.buf_block as u64 * cap as u64 + (blocks * cap) as u64;
        let last_used = used - (blocks - 1) * cap;
        self.submit_blocks_with_last(blocks, last_used)?;
        Ok(self.head.as_ref().map_or(0, |h| h.pos))
    }

    fn submit_blocks(&mut self, blocks: usize) -> Result<()> {
        let cap = self.sg.payload_capacity();
        self.submit_blocks_with_last(blocks, cap)
    }

    /// Submits the first `blocks` buffered blocks; the last one has `last_used` bytes in use.
    fn submit_blocks_with_last(&mut self, blocks: usize, last_used: usize) -> Result<()> {
        let cap = self.sg.payload_capacity();
        let bs = self.sg.block_size();
        let head = self.head.as_mut().expect("submit needs a head segment");
        let rest = head.buf.split_off(blocks * cap);
        let payload = std::mem::replace(&mut head.buf, rest);
        let (segment, generation, first_block) = (head.segment, head.generation, head.buf_block);
        head.buf_block += blocks as u32;
        while self.inflight.len() >= INFLIGHT_WRITES_MAX
            || self.io.in_flight() >= self.io.queue_depth()
        {
            self.reap(1)?;
        }
        let mut buf = io_buf(self.io.as_mut(), blocks * bs, bs);
        for (i, chunk) in payload.chunks(cap).enumerate() {
            let b = &mut buf.as_mut_slice()[i * bs..(i + 1) * bs];
            b[crate::layout::BLOCK_HEADER_LEN..].copy_from_slice(chunk);
            let used = if i + 1 == blocks { last_used } else { cap };
            self.sg
                .seal(b, segment, generation, first_block + i as u32, used);
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let offset = self.sg.block_offset(segment, first_block);
        let op = IoOp::Write {
            tag,
            offset,
            buf,
            durable: false,
        };
        if let Err(e) = self.io.submit(op) {
            self.latched = true;
            return Err(io_err(&self.label)(e));
        }
        self.inflight.insert(
            tag,
            InFlight {
                segment,
                first_block,
                payload,
            },
        );
        Ok(())
    }

    fn reap(&mut self, min: usize) -> Result<()> {
        self.io
            .reap(&mut self.completions, min)
            .map_err(io_err(&self.label))?;
        let mut failed = None;
        for c in self.completions.drain(..) {
            if self.inflight.remove(&c.tag).is_none() {
                continue;
            }
            if let Err(e) = c.result {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            self.latched = true;
            return Err(io_err(&self.label)(e));
        }
        Ok(())
    }

    /// Collects finished writes without waiting.
    pub fn poll(&mut self) -> Result<()> {
        if self.inflight.is_empty() {
            return Ok(());
        }
        self.reap(0)
    }

    /// Waits until every submitted write has completed.
    pub fn wait_all(&mut self) -> Result<()> {
        while !self.inflight.is_empty() {
            self.reap(1)?;
        }
        self.check()
    }

    /// Makes every completed write durable (one device flush).
    pub fn flush_device(&mut self) -> Result<()> {
        self.wait_all()?;
        let tag = self.next_tag;
        self.next_tag += 1;
        let c = run_one(self.io.as_mut(), IoOp::Flush { tag }).map_err(io_err(&self.label));
        let c = c.and_then(|c| c.result.map_err(io_err(&self.label)));
        if c.is_err() {
            self.latched = true;
        }
        c.map(|_| ())
    }

    /// Writes `image` durably at `offset` (a state root) and waits for it.
    pub fn write_durable(&mut self, offset: u64, image: &[u8]) -> Result<()> {
        self.wait_all()?;
        let bs = self.sg.block_size();
        let mut buf = AlignedBuf::new(image.len().div_ceil(bs) * bs, bs);
        buf.as_mut_slice()[..image.len()].copy_from_slice(image);
        let tag = self.next_tag;
        self.next_tag += 1;
        let op = IoOp::Write {
            tag,
            offset,
            buf,
            durable: true,
        };
        let c = run_one(self.io.as_mut(), op).map_err(io_err(&self.label));
        let c = c.and_then(|c| c.result.map_err(io_err(&self.label)));
        if c.is_err() {
            self.latched = true;
        }
        c.map(|_| ())
    }

    /// Whether any block of `segment` is still buffered or in flight (a batched device read
    /// spanning blocks of such a segment could read a block that has not landed yet).
    pub fn holds_segment(&self, segment: u32) -> bool {
        self.head
            .as_ref()
            .is_some_and(|h| h.segment == segment && !h.buf.is_empty())
            || self.inflight.values().any(|f| f.segment == segment)
    }

    /// The payload area of block `block` of `segment` if it is still buffered or in flight
    /// (whole capacity, or the filled part for the block being filled).
    pub fn mem_block(&self, segment: u32, block: u32) -> Option<&[u8]> {
        let cap = self.sg.payload_capacity();
        if let Some(h) = &self.head {
            if h.segment == segment && block >= h.buf_block {
                let at = (block - h.buf_block) as usize * cap;
                if at < h.buf.len() {
                    return Some(&h.buf[at..(at + cap).min(h.buf.len())]);
                }
            }
        }
        self.inflight.values().find_map(|f| {
            let n = (f.payload.len() / cap) as u32;
            (f.segment == segment && (f.first_block..f.first_block + n).contains(&block)).then(
                || {
                    let at = (block - f.first_block) as usize * cap;
                    &f.payload[at..at + cap]
                },
            )
        })
    }
}

/// Reads state records from the device; cheap to clone, `Send + Sync` (the read device handle
/// sits behind a mutex). Verifies every block (checksum, magic, generation) it reads.
#[derive(Clone)]
pub struct StateReader {
    shared: Arc<Mutex<ReadShared>>,
}

struct ReadShared {
    io: Box<dyn Io>,
    sg: StreamGeometry,
    label: String,
    /// Generation of each state segment's current allocation (index: segment - first).
    generations: Vec<u64>,
    next_tag: u64,
    cache: BlockCache,
}

impl StateReader {
    /// A reader on `io`.
    pub fn new(io: Box<dyn Io>, sg: StreamGeometry, label: String) -> StateReader {
        let shared = ReadShared {
            io,
            sg,
            label,
            generations: vec![0; sg.segment_count() as usize],
            next_tag: 1,
            cache: BlockCache::default(),
        };
        StateReader {
            shared: Arc::new(Mutex::new(shared)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadShared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the generation of `segment`'s current allocation.
    pub fn set_generation(&self, segment: u32, generation: u64) {
        let mut s = self.lock();
        let i = (segment - s.sg.first_segment) as usize;
        s.generations[i] = generation;
    }

    /// Reads blocks `first..=last` of `segment` and returns their payload areas concatenated.
    pub fn read_blocks(&self, segment: u32, first: u32, last: u32) -> Result<Vec<u8>> {
        let mut s = self.lock();
        s.read_blocks(segment, first, last)
    }

    /// Reads stream bytes `offset..offset + len` of `segment` from the device.
    pub fn read_stream(&self, segment: u32, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut s = self.lock();
        let (first, last) = s.sg.block_span(offset, len);
        let cap = s.sg.payload_capacity() as u64;
        let blocks = s.read_blocks(segment, first, last)?;
        let at = (offset - first as u64 * cap) as usize;
        Ok(blocks[at..at + len as usize].to_vec())
    }

    /// Reads `len` raw bytes at device offset `offset` (block-aligned; no verification).
    pub fn read_raw(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut s = self.lock();
        let bs = s.sg.block_size();
        let buf = io_buf(s.io.as_mut(), len.div_ceil(bs) * bs, bs);
        let tag = s.next_tag;
        s.next_tag += 1;
        let label = s.label.clone();
        let c = run_one(s.io.as_mut(), IoOp::Read { tag, offset, buf }).map_err(io_err(&label))?;
        c.result.map_err(io_err(&label))?;
        match c.buf {
            Some(b) => Ok(b.as_slice()[..len].to_vec()),
            None => Err(EngineError::Io {
                device: label,
                source: crate::io::IoError::Injected("read buffer lost"),
            }),
        }
    }

    /// Reads the value record at `loc` and checks it belongs to `region_id` and `key`.
    pub fn read_value(&self, loc: ValueLoc, region_id: u64, key: &[u8]) -> Result<Bytes> {
        let mut s = self.lock();
        let (first, last) = s.sg.block_span(loc.offset as u64, loc.len as u64);
        let cap = s.sg.payload_capacity();
        let mut blocks = s.read_blocks(loc.segment, first, last)?;
        let at = loc.offset as usize - first as usize * cap;
        blocks.truncate(at + loc.len as usize);
        let rec = Bytes::from(blocks).slice(at..);
        decode_checked(&s.sg, &s.label, loc, rec, region_id, key)
    }
}

/// Blocks between two values that one coalesced read still spans (reading a few unwanted
/// blocks is cheaper than another round trip): 32 KiB at 4 KiB blocks.
pub(crate) const COALESCE_GAP_BLOCKS: u32 = 8;
/// Most blocks one coalesced read covers: 1 MiB at 4 KiB blocks.
const COALESCE_SPAN_BLOCKS: u32 = 256;

/// A run of blocks of one segment read with one device read, and the values it serves.
struct Span {
    segment: u32,
    first: u32,
    last: u32,
    /// Indexes into the caller's list of values.
    values: Vec<usize>,
}

/// Groups `locs` (any order) into spans of nearby blocks of the same segment.
fn coalesce(sg: &StreamGeometry, locs: &[ValueLoc]) -> Vec<Span> {
    let mut order: Vec<usize> = (0..locs.len()).collect();
    order.sort_unstable_by_key(|&i| (locs[i].segment, locs[i].offset));
    let mut spans: Vec<Span> = Vec::new();
    for i in order {
        let loc = locs[i];
        let (first, last) = sg.block_span(loc.offset as u64, loc.len as u64);
        if let Some(s) = spans.last_mut() {
            if s.segment == loc.segment
                && first <= s.last + COALESCE_GAP_BLOCKS
                && last.max(s.last) - s.first < COALESCE_SPAN_BLOCKS
            {
                s.last = s.last.max(last);
                s.values.push(i);
                continue;
            }
        }
        spans.push(Span {
            segment: loc.segment,
            first,
            last,
            values: vec![i],
        });
    }
    spans
}

impl StateReader {
    /// Reads the value records at `wanted` (location and key, all of region `region_id`) with
    /// few device reads: records in nearby blocks share one read, and the reads are all in
    /// flight at once (up to the handle's queue depth). Values come back in `wanted`'s order.
    pub fn read_values(&self, region_id: u64, wanted: &[(ValueLoc, &[u8])]) -> Result<Vec<Bytes>> {
        let mut s = self.lock();
        let locs: Vec<ValueLoc> = wanted.iter().map(|(l, _)| *l).collect();
        let spans = coalesce(&s.sg, &locs);
        let cap = s.sg.payload_capacity();
        let mut out = vec![Bytes::new(); wanted.len()];
        let mut next = 0;
        while next < spans.len() {
            let batch_end = spans.len().min(next + s.io.queue_depth().max(1));
            let payloads = s.read_spans(&spans[next..batch_end])?;
            for (span, payload) in spans[next..batch_end].iter().zip(payloads) {
                let payload = Bytes::from(payload);
                let base = span.first as usize * cap;
                for &i in &span.values {
                    let (loc, key) = wanted[i];
                    let at = loc.offset as usize - base;
                    let rec = payload.slice(at..at + loc.len as usize);
                    out[i] = decode_checked(&s.sg, &s.label, loc, rec, region_id, key)?;
                }
            }
            next = batch_end;
        }
        Ok(out)
    }
}

/// Decodes the value record `rec` read from `loc`, checking its region and key.
pub fn decode_checked(
    sg: &StreamGeometry,
    label: &str,
    loc: ValueLoc,
    rec: Bytes,
    region_id: u64,
    key: &[u8],
) -> Result<Bytes> {
    let corrupt = |detail: String| EngineError::Corrupt {
        what: "state record",
        offset: sg.block_offset(loc.segment, sg.block_span(loc.offset as u64, 1).0),
        detail: format!("{label}: {loc:?}: {detail}"),
    };
    let v = record::decode_value(&rec).map_err(|d| corrupt(d.to_string()))?;
    if v.region_id != region_id || v.key != key {
        return Err(corrupt(format!(
            "holds region {} key {:?}, expected region {region_id} key {:?}",
            v.region_id,
            v.key,
            Bytes::copy_from_slice(key)
        )));
    }
    Ok(v.value)
}

impl ReadShared {
    /// Reads every span at once (the caller keeps them within the queue depth) and returns
    /// their verified payload areas, in `spans`' order.
    fn read_spans(&mut self, spans: &[Span]) -> Result<Vec<Vec<u8>>> {
        let bs = self.sg.block_size();
        let label = self.label.clone();
        let base_tag = self.next_tag;
        self.next_tag += spans.len() as u64;
        for (i, span) in spans.iter().enumerate() {
            assert!(
                self.sg.is_state_segment(span.segment),
                "segment {} is not a state segment",
                span.segment
            );
            let n = (span.last - span.first + 1) as usize;
            let buf = io_buf(self.io.as_mut(), n * bs, bs);
            let offset = self.sg.block_offset(span.segment, span.first);
            self.io
                .submit(IoOp::Read {
                    tag: base_tag + i as u64,
                    offset,
                    buf,
                })
                .map_err(io_err(&label))?;
        }
        self.io.kick().map_err(io_err(&label))?;
        let mut bufs: Vec<Option<AlignedBuf>> = (0..spans.len()).map(|_| None).collect();
        let mut got = 0;
        let mut done = Vec::new();
        let mut first_error = None;
        while got < spans.len() {
            if self.io.in_flight() == 0 {
                return Err(EngineError::Io {
                    device: label,
                    source: crate::io::IoError::Injected("read completion lost"),
                });
            }
            self.io.reap(&mut done, 1).map_err(io_err(&label))?;
            for c in done.drain(..) {
                let Some(i) = c
                    .tag
                    .checked_sub(base_tag)
                    .filter(|&i| i < spans.len() as u64)
                else {
                    continue;
                };
                got += 1;
                match (c.result, c.buf) {
                    (Ok(_), Some(b)) => bufs[i as usize] = Some(b),
                    (Err(e), _) => {
                        first_error.get_or_insert(e);
                    }
                    (Ok(_), None) => {
                        first_error.get_or_insert(crate::io::IoError::Injected("read buffer lost"));
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(io_err(&label)(e));
        }
        let mut out = Vec::with_capacity(spans.len());
        for (span, buf) in spans.iter().zip(bufs) {
            let buf = buf.ok_or(EngineError::Io {
                device: label.clone(),
                source: crate::io::IoError::Injected("read buffer lost"),
            })?;
            out.push(self.verify_span(span.segment, span.first, buf.as_slice())?);
        }
        Ok(out)
    }

    /// Verifies the blocks read at block `first` of `segment` and returns their payload areas.
    fn verify_span(&self, segment: u32, first: u32, raw: &[u8]) -> Result<Vec<u8>> {
        let generation = self.generations[(segment - self.sg.first_segment) as usize];
        let bs = self.sg.block_size();
        let offset = self.sg.block_offset(segment, first);
        let mut out = Vec::with_capacity(raw.len() / bs * self.sg.payload_capacity());
        for (i, block) in raw.chunks_exact(bs).enumerate() {
            let payload = self
                .sg
                .verify(block, segment, generation, first + i as u32)
                .map_err(|detail| EngineError::Corrupt {
                    what: "state block",
                    offset: offset + (i * bs) as u64,
                    detail: format!("{}: {detail}", self.label),
                })?;
            out.extend_from_slice(payload);
        }
        Ok(out)
    }

    fn read_blocks(&mut self, segment: u32, first: u32, last: u32) -> Result<Vec<u8>> {
        assert!(
            self.sg.is_state_segment(segment),
            "segment {segment} is not a state segment"
        );
        let generation = self.generations[(segment - self.sg.first_segment) as usize];
        let bs = self.sg.block_size();
        let cap = self.sg.payload_capacity();
        let n = (last - first + 1) as usize;
        if (first..=last).all(|b| self.cache.get(segment, b, generation).is_some()) {
            let mut out = Vec::with_capacity(n * cap);
            for b in first..=last {
                out.extend_from_slice(self.cache.get(segment, b, generation).unwrap_or(&[]));
            }
            return Ok(out);
        }
        let offset = self.sg.block_offset(segment, first);
        let buf = io_buf(self.io.as_mut(), n * bs, bs);
        let tag = self.next_tag;
        self.next_tag += 1;
        let label = self.label.clone();
        let c =
            run_one(self.io.as_mut(), IoOp::Read { tag, offset, buf }).map_err(io_err(&label))?;
        c.result.map_err(io_err(&label))?;
        let buf = c.buf.ok_or(EngineError::Io {
            device: label.clone(),
            source: crate::io::IoError::Injected("read buffer lost"),
        })?;
        let mut out = Vec::with_capacity(n * cap);
        for i in 0..n {
            let block = &buf.as_slice()[i * bs..(i + 1) * bs];
            let index = first + i as u32;
            let payload = self
                .sg
                .verify(block, segment, generation, index)
                .map_err(|detail| EngineError::Corrupt {
                    what: "state block",
                    offset: offset + (i * bs) as u64,
                    detail: format!("{label}: {detail}"),
                })?;
            self.cache.insert(segment, index, generation, payload);
            out.extend_from_slice(payload);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_blocks_serve_only_their_generation_and_stay_bounded() {
        let mut c = BlockCache::default();
        c.insert(3, 7, 1, b"old");
        assert_eq!(c.get(3, 7, 1), Some(&b"old"[..]));
        assert_eq!(
            c.get(3, 7, 2),
            None,
            "a reused segment never serves the old payload"
        );
        c.insert(3, 7, 2, b"new!");
        assert_eq!(c.get(3, 7, 2), Some(&b"new!"[..]));
        assert_eq!(c.get(3, 7, 1), None);
        assert_eq!(c.bytes, 4);
        let block = vec![0u8; 4096];
        let n = READ_CACHE_BYTES_MAX / block.len() + 10;
        for b in 0..n as u32 {
            c.insert(5, b, 1, &block);
        }
        assert!(c.bytes <= READ_CACHE_BYTES_MAX);
        assert_eq!(c.get(5, 0, 1), None, "the oldest were evicted");
        assert!(c.get(5, n as u32 - 1, 1).is_some());
    }
}

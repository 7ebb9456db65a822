//! The append-only Raft log of a store: one log for every region, on the segment ring.
//!
//! A write is a [`LogBatch`] of records (entries of any number of regions, hard states,
//! configurations, region metadata). The writer ([`LogStore`]) groups everything queued since its
//! last device write into one on-disk batch: one write and one flush (group commit), with at most
//! two batches in flight (the second flagged as such), so that on recovery a damaged batch
//! followed by newer valid blocks is known to be corruption of acknowledged data unless the only
//! newer batch is that flagged second one (then both are the torn tail). Each batch starts on a
//! fresh block, carries a sequence number and the chain checksum of the batch before it.
//!
//! [`RegionLog`] serves one region's log to Raft through `raftlog::Storage`, from the in-memory
//! index and tail cache. Entries evicted from the cache are read back synchronously from the
//! device (the cold path; it takes the device lock, so it may wait for one write in flight).

pub mod index;
pub mod record;
pub mod recovery;
pub mod region_log;
pub mod thread;
pub mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use raftlog::{ConfState, Entry, HardState};

pub use index::{LogIndex, Refusal};
pub use record::Record;
pub use recovery::{Corruption, RecoveryReport, TornTail};
pub use region_log::RegionLog;
pub use thread::{AckCallback, LogWriterThread};
pub use writer::{Ack, LogStore, Ticket};

use crate::io::{AlignedBuf, Completion, Io, IoError, IoOp};
use crate::layout::{segment::Geometry, KIB, MIB};

/// Options of an open log. Validated by [`LogConfig::validate`].
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// How the device is named in errors and logs (its path).
    pub device_label: String,
    /// Bytes of tail entries kept in memory across all regions. Default 64 MiB: a few seconds of
    /// a busy store's appends, so followers catching up and the apply worker read from memory.
    pub cache_bytes_max: u64,
    /// Most bytes group-committed into one device write (a single larger batch is still written
    /// whole). Default 256 KiB: the slot size of the device's registered buffer pool, so a group
    /// commit never allocates; past that, bigger writes stop paying for themselves on NVMe and
    /// only add latency to the batch's first caller.
    pub batch_bytes_max: u64,
    /// Make each batch durable with the write itself (`Write { durable: true }`: the device
    /// layer picks `RWF_DSYNC` or a linked `fdatasync`, whichever it measured faster for the
    /// device kind) instead of a write followed by a separate flush. Default true: one round trip.
    pub durable_writes: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            device_label: "device".into(),
            cache_bytes_max: 64 * MIB,
            batch_bytes_max: 256 * KIB,
            durable_writes: true,
        }
    }
}

impl LogConfig {
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> crate::error::Result<()> {
        if self.batch_bytes_max < 4096 {
            return Err(crate::error::EngineError::InvalidConfig {
                key: "batch_bytes_max",
                reason: format!("{} is below 4096", self.batch_bytes_max),
            });
        }
        Ok(())
    }
}

/// One write: records of any number of regions, made durable together.
#[derive(Clone, Debug, Default)]
pub struct LogBatch {
    records: Vec<Record>,
}

impl LogBatch {
    /// An empty batch.
    pub fn new() -> LogBatch {
        LogBatch::default()
    }

    /// Appends consecutive entries of a region (they replace any entries at the same or higher
    /// indexes: Raft's conflict truncation). An empty list is ignored.
    pub fn add_entries(&mut self, region_id: u64, entries: Vec<Entry>) -> &mut Self {
        if !entries.is_empty() {
            self.records.push(Record::Entries { region_id, entries });
        }
        self
    }

    /// Records the region's hard state.
    pub fn set_hard_state(&mut self, region_id: u64, hard_state: HardState) -> &mut Self {
        self.records.push(Record::HardState {
            region_id,
            hard_state,
        });
        self
    }

    /// Records the region's configuration.
    pub fn set_conf_state(&mut self, region_id: u64, conf_state: ConfState) -> &mut Self {
        self.records.push(Record::ConfState {
            region_id,
            conf_state,
        });
        self
    }

    /// Records opaque region metadata.
    pub fn set_region_meta(&mut self, region_id: u64, data: Bytes) -> &mut Self {
        self.records.push(Record::RegionMeta { region_id, data });
        self
    }

    /// Discards everything the log holds of `region_id` (written before this record); the
    /// records after it start the region's log over (see [`Record::Clean`]).
    pub fn clean_region(&mut self, region_id: u64) -> &mut Self {
        self.records.push(Record::Clean { region_id });
        self
    }

    /// Records that the region's state now comes from a snapshot at (`index`, `term`): entries
    /// up to `index` are discarded, and if `index` is beyond the last entry the log is emptied
    /// and continues at `index + 1` (a `Compact` record; added for snapshot installs).
    pub fn set_snapshot(&mut self, region_id: u64, index: u64, term: u64) -> &mut Self {
        self.records.push(Record::Compact {
            region_id,
            index,
            term,
        });
        self
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Encoded size of the records.
    pub fn encoded_len(&self) -> usize {
        self.records.iter().map(Record::encoded_len).sum()
    }

    pub(crate) fn into_records(self) -> Vec<Record> {
        self.records
    }
}

/// Tags of cold reads have this bit set; the writer's never do.
pub(crate) const READ_TAG_BIT: u64 = 1 << 63;

/// The device, shared by the writer and cold readers.
pub(crate) struct DeviceSlot {
    pub io: Box<dyn Io>,
    /// Completions reaped by a cold reader that belong to the writer.
    pub stash: Vec<Completion>,
    next_read_tag: u64,
}

impl DeviceSlot {
    pub fn new(io: Box<dyn Io>) -> DeviceSlot {
        DeviceSlot {
            io,
            stash: Vec::new(),
            next_read_tag: READ_TAG_BIT,
        }
    }

    /// Reads `len` bytes at `offset`, waiting for them; other completions reaped meanwhile are
    /// kept for the writer.
    pub fn read(&mut self, offset: u64, len: usize, align: usize) -> Result<AlignedBuf, IoError> {
        let tag = self.start_read(offset, len, align)?;
        self.finish_read(tag)
    }

    /// Submits a read of `len` bytes at `offset`; [`Self::finish_read`] collects it.
    pub fn start_read(&mut self, offset: u64, len: usize, align: usize) -> Result<u64, IoError> {
        let tag = self.next_read_tag;
        self.next_read_tag = READ_TAG_BIT | (self.next_read_tag + 1);
        let buf = AlignedBuf::new(len, align);
        self.io.submit(IoOp::Read { tag, offset, buf })?;
        self.io.kick()?;
        Ok(tag)
    }

    /// Waits for the read `tag` started by [`Self::start_read`].
    pub fn finish_read(&mut self, tag: u64) -> Result<AlignedBuf, IoError> {
        let mut mine = self
            .stash
            .iter()
            .position(|c| c.tag == tag)
            .map(|i| self.stash.swap_remove(i));
        let mut out = Vec::new();
        while mine.is_none() {
            if self.io.in_flight() == 0 {
                return Err(IoError::Injected("read completion lost"));
            }
            self.io.reap(&mut out, 1)?;
            for c in out.drain(..) {
                if c.tag == tag {
                    mine = Some(c);
                } else {
                    self.stash.push(c);
                }
            }
        }
        let c = mine.expect("loop ends with the completion");
        c.result?;
        c.buf
            .ok_or(IoError::Injected("read completion without its buffer"))
    }
}

/// State shared by a [`LogStore`] and its [`RegionLog`]s.
pub(crate) struct Shared {
    pub label: String,
    pub nonce: u64,
    pub geometry: Geometry,
    pub device: Mutex<DeviceSlot>,
    pub index: RwLock<LogIndex>,
    /// Durable batches whose records are not in `index` yet, oldest first (see
    /// [`Shared::defer`]).
    pub deferred: Mutex<Vec<DeferredBatch>>,
    /// Whether `deferred` holds anything; changed only under its lock.
    pub has_deferred: AtomicBool,
}

/// The records of a durable batch, waiting to go into the index.
pub(crate) struct DeferredBatch {
    pub records: Vec<record::Record>,
    /// Every entry's payload span, all records' in order.
    pub spans: Vec<(u32, u32)>,
    pub at: index::BatchAt,
}

impl Shared {
    /// Queues a durable batch's records for the index. The writer acknowledges the batch
    /// without them and puts them in when it is about to wait for its next write anyway
    /// ([`Shared::apply_deferred`]), so an appender that waits for each append (a region's
    /// leader with nothing else to do, `basalt-bench --target=log` at one job) does not also
    /// wait for the index work: for 64 entries over 100 regions, tens of µs of cache misses.
    /// Every access to the index goes through [`Shared::index`] or [`Shared::index_mut`],
    /// which put the deferred records in first, so no reader ever sees the index behind an
    /// acknowledged batch.
    pub fn defer(&self, batch: DeferredBatch) {
        let mut d = self.deferred.lock().unwrap_or_else(PoisonError::into_inner);
        d.push(batch);
        self.has_deferred.store(true, Ordering::Release);
    }

    /// Puts every deferred batch's records into the index now.
    pub fn apply_deferred(&self) {
        if self.has_deferred.load(Ordering::Acquire) {
            drop(self.index_mut());
        }
    }

    fn apply_deferred_into(&self, ix: &mut LogIndex) {
        let batches = {
            let mut d = self.deferred.lock().unwrap_or_else(PoisonError::into_inner);
            self.has_deferred.store(false, Ordering::Release);
            std::mem::take(&mut *d)
        };
        for b in batches {
            let mut spans = b.spans.as_slice();
            for r in b.records {
                let (these, rest) = spans.split_at(r.entry_count());
                spans = rest;
                ix.apply_owned(r, these, b.at, true);
            }
        }
    }

    /// The index for reading as it is, deferred batches left out: only for what they cannot
    /// change (whether any region is refused: only recovery refuses).
    pub fn index_without_deferred(&self) -> RwLockReadGuard<'_, LogIndex> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The index for writing as it is, deferred batches left out: only where leaving them out
    /// errs on the safe side (freeing segments: a deferred batch's records live in the head
    /// segment, which is never freed, and can only make older entries dead, never live, so a
    /// segment found dead without them is dead with them too; one they would kill is freed on
    /// a later call).
    pub fn index_mut_without_deferred(&self) -> RwLockWriteGuard<'_, LogIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The device. A poisoned lock (a panic while holding it) still hands the device out: its
    /// state is the backend's, which latches itself on errors.
    pub fn device(&self) -> MutexGuard<'_, DeviceSlot> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The index for reading, with every deferred batch in it.
    pub fn index(&self) -> RwLockReadGuard<'_, LogIndex> {
        self.apply_deferred();
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The index for writing, with every deferred batch in it.
    pub fn index_mut(&self) -> RwLockWriteGuard<'_, LogIndex> {
        let mut ix = self.index.write().unwrap_or_else(PoisonError::into_inner);
        if self.has_deferred.load(Ordering::Acquire) {
            self.apply_deferred_into(&mut ix);
        }
        ix
    }
}

pub(crate) type SharedRef = Arc<Shared>;

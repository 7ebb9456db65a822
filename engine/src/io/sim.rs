//! The `sim` backend: a deterministic in-memory device with injected faults.
//!
//! Given the same seed and the same sequence of calls, a [`SimIo`] produces exactly the same
//! completions, the same disk contents and the same faults (its PRNG is a private splitmix64 and
//! every internal table is ordered).
//!
//! # Durability model
//! The disk is an array of sectors (one sector = the geometry's block size). Each sector has a
//! *durable* value (what survives power loss; all zeros until written) and possibly a newer
//! *volatile* value (in the device's write cache). A completed write makes its data visible to
//! reads but volatile; a completed `Flush` makes every volatile sector durable; a
//! `Write { durable: true }` makes its own sectors durable when it completes (and only those:
//! callers must not count on it flushing anything else).
//!
//! # Faults ([`FaultConfig`])
//! - latency: each op completes after a number of `reap` calls drawn from `latency_ops`, so
//!   completions come back out of submission order;
//! - torn writes: only a random strict prefix of the sectors lands; the op then reports success
//!   or `Injected("torn write")` per `torn_write_reports_error`;
//! - misdirected writes: the data lands at a different block-aligned offset (reported success);
//! - bit rot: a random bit of a stored sector flips (on demand with [`SimIo::rot`], or with
//!   `bit_rot_prob` per read, in one sector of the range read, before the data is returned);
//! - read errors: with `read_error_prob` per read, or always for sectors marked with
//!   [`SimIo::fail_reads_at`]; read errors do not latch;
//! - write and flush errors (`write_error_prob`, `flush_error_prob`): nothing lands, and the
//!   device latches failed like the real backends;
//! - power loss ([`SimIo::power_loss`]): volatile data is dropped or kept, per write, at random:
//!   all of it, none, a sector prefix, or a random subset of its sectors; in-flight writes may land
//!   a prefix. Durable data is never lost and no data is invented.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{
    check_op, run_inline, AlignedBuf, BufPool, Completion, Geometry, InlineOps, Io, IoError, IoOp,
};

/// Faults injected by a [`SimIo`]. Probabilities are per operation, in `[0, 1]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Completion delay in `reap` calls, drawn uniformly from `min..=max`.
    pub latency_ops: (u32, u32),
    /// Probability that a write lands only a strict prefix of its sectors.
    pub torn_write_prob: f64,
    /// A torn write reports `Err(Injected("torn write"))` (and latches) rather than success.
    pub torn_write_reports_error: bool,
    /// Probability, per read, that one sector in the range read rots (a bit flips) first.
    pub bit_rot_prob: f64,
    /// Probability that a write lands at a different block-aligned offset.
    pub misdirect_prob: f64,
    /// Probability that a read fails with `Injected("read error")`.
    pub read_error_prob: f64,
    /// Probability that a write fails with `Injected("write error")` (nothing lands).
    pub write_error_prob: f64,
    /// Probability that a flush fails with `Injected("flush error")` (nothing made durable).
    pub flush_error_prob: f64,
}

impl FaultConfig {
    /// No faults at all: a perfect device with zero latency.
    pub fn none() -> FaultConfig {
        FaultConfig::default()
    }
}

/// Counts of what the simulator did, for tests to check that faults really happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Writes that landed a strict prefix.
    pub torn_writes: u64,
    /// Writes that landed elsewhere.
    pub misdirected_writes: u64,
    /// Bit flips applied.
    pub rotted_sectors: u64,
    /// Reads failed.
    pub read_errors: u64,
    /// Writes failed.
    pub write_errors: u64,
    /// Flushes failed.
    pub flush_errors: u64,
    /// Power losses simulated.
    pub power_losses: u64,
    /// Volatile sectors that survived power losses.
    pub sectors_kept_at_power_loss: u64,
    /// Volatile sectors lost at power losses.
    pub sectors_dropped_at_power_loss: u64,
}

/// splitmix64: small, fast, good enough for fault schedules, and fully deterministic.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn chance(&mut self, prob: f64) -> bool {
        prob > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < prob
    }
}

/// The stored sectors.
#[derive(Debug, Default, Clone)]
struct Disk {
    durable: BTreeMap<u64, Box<[u8]>>,
    /// Newer-than-durable contents, with the sequence number of the write that put them there.
    volatile: BTreeMap<u64, (u64, Box<[u8]>)>,
    /// Sequence number of the last write landed (by any handle).
    write_seq: u64,
}

/// The disk shared by every handle ([`SimIo::share`]) onto one simulated device.
type SharedDisk = Arc<Mutex<Disk>>;

fn lock(disk: &SharedDisk) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Disk {
    fn put(&mut self, sector: u64, data: &[u8], seq: u64, durable: bool) {
        if durable {
            self.volatile.remove(&sector);
            self.durable.insert(sector, data.into());
        } else {
            self.volatile.insert(sector, (seq, data.into()));
        }
    }

    fn visible(&self, sector: u64) -> Option<&[u8]> {
        match self.volatile.get(&sector) {
            Some((_, data)) => Some(data),
            None => self.durable.get(&sector).map(|d| &d[..]),
        }
    }

    fn flush(&mut self) {
        for (sector, (_, data)) in std::mem::take(&mut self.volatile) {
            self.durable.insert(sector, data);
        }
    }
}

struct Pending {
    op: IoOp,
    delay: u32,
}

/// A simulated device. See the module docs.
pub struct SimIo {
    geometry: Geometry,
    faults: FaultConfig,
    rng: SplitMix64,
    pool: BufPool,
    queue_depth: usize,
    pending: VecDeque<Pending>,
    ready: VecDeque<Completion>,
    disk: SharedDisk,
    failing_read_sectors: BTreeSet<u64>,
    latched: bool,
    stats: SimStats,
}

/// Default pool of a simulated device: 32 slots of 64 blocks.
const SIM_POOL_SLOT_BLOCKS: usize = 64;
const SIM_POOL_SLOT_COUNT: usize = 32;

impl SimIo {
    /// A fresh zeroed device. Panics if the geometry is inconsistent (block size not a power of
    /// two, capacity not a multiple of it) or the pool cannot be mapped: test-only code.
    pub fn new(seed: u64, geometry: Geometry, faults: FaultConfig) -> SimIo {
        let block = geometry.block_size as usize;
        assert!(
            block.is_power_of_two(),
            "sim block size {block} is not a power of two"
        );
        assert_eq!(
            geometry.capacity_bytes % block as u64,
            0,
            "sim capacity not a block multiple"
        );
        let pool = BufPool::new(block * SIM_POOL_SLOT_BLOCKS, SIM_POOL_SLOT_COUNT, block)
            .expect("sim buffer pool (anonymous mapping) must be mappable");
        SimIo {
            geometry,
            faults,
            rng: SplitMix64(seed),
            pool,
            queue_depth: 128,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            disk: SharedDisk::default(),
            failing_read_sectors: BTreeSet::new(),
            latched: false,
            stats: SimStats::default(),
        }
    }

    /// Another handle onto the same simulated disk, as a second file descriptor (and ring) on
    /// one real device: its own queue, latch, fault settings, statistics and buffer pool, the
    /// same sectors and the same write cache, so a `Flush` through either handle makes every
    /// completed write durable, and [`SimIo::power_loss`] on any handle drops the volatile data
    /// of all of them (each handle loses only its own in-flight operations). The new handle's
    /// PRNG is derived from this handle's current state (deterministic).
    pub fn share(&self) -> SimIo {
        let seed = self.rng.0 ^ 0x5eed_5a4e_d15c_0001;
        let block = self.geometry.block_size as usize;
        let pool = BufPool::new(block * SIM_POOL_SLOT_BLOCKS, SIM_POOL_SLOT_COUNT, block)
            .expect("sim buffer pool (anonymous mapping) must be mappable");
        SimIo {
            geometry: self.geometry,
            faults: self.faults.clone(),
            rng: SplitMix64(seed),
            pool,
            queue_depth: self.queue_depth,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            disk: Arc::clone(&self.disk),
            failing_read_sectors: BTreeSet::new(),
            latched: false,
            stats: SimStats::default(),
        }
    }

    /// Replace the buffer pool (slot size and count).
    pub fn with_pool(mut self, slot_size_bytes: usize, slot_count: usize) -> SimIo {
        let block = self.geometry.block_size as usize;
        self.pool = BufPool::new(slot_size_bytes, slot_count, block).expect("sim buffer pool");
        self
    }

    /// Set the queue depth (default 128).
    pub fn with_queue_depth(mut self, queue_depth: usize) -> SimIo {
        self.queue_depth = queue_depth.max(1);
        self
    }

    /// The faults being injected.
    pub fn faults(&self) -> &FaultConfig {
        &self.faults
    }

    /// Change the faults injected from now on.
    pub fn set_faults(&mut self, faults: FaultConfig) {
        self.faults = faults;
    }

    /// What the simulator has done so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// True once a write or flush has failed (until `reopen`/`power_loss`).
    pub fn is_latched(&self) -> bool {
        self.latched
    }

    fn sector_size(&self) -> u64 {
        u64::from(self.geometry.block_size)
    }

    /// Flip one random bit of the stored sector holding `offset` (its durable copy, and its
    /// volatile copy if it has one).
    pub fn rot(&mut self, offset: u64) {
        let size = self.sector_size();
        let sector = offset / size;
        let bit = self.rng.below(size * 8) as usize;
        let zeros = || vec![0u8; size as usize].into_boxed_slice();
        let mut disk = lock(&self.disk);
        let durable = disk.durable.entry(sector).or_insert_with(zeros);
        durable[bit / 8] ^= 1 << (bit % 8);
        if let Some((_, data)) = disk.volatile.get_mut(&sector) {
            data[bit / 8] ^= 1 << (bit % 8);
        }
        self.stats.rotted_sectors += 1;
    }

    /// Make every read touching the sector holding `offset` fail, until `clear_read_failures`.
    pub fn fail_reads_at(&mut self, offset: u64) {
        self.failing_read_sectors
            .insert(offset / self.sector_size());
    }

    /// Forget every `fail_reads_at`.
    pub fn clear_read_failures(&mut self) {
        self.failing_read_sectors.clear();
    }

    /// The whole durable image (what a power loss right now would certainly keep), as bytes.
    pub fn snapshot_disk(&self) -> Vec<u8> {
        self.read_durable(0, self.geometry.capacity_bytes as usize)
    }

    /// Durable bytes at `offset..offset + len` (block-aligned).
    pub fn read_durable(&self, offset: u64, len: usize) -> Vec<u8> {
        self.read_with(offset, len, |disk, sector| {
            disk.durable.get(&sector).map(|d| &d[..])
        })
    }

    /// Bytes a read would return at `offset..offset + len` (block-aligned), with no faults.
    pub fn read_visible(&self, offset: u64, len: usize) -> Vec<u8> {
        self.read_with(offset, len, Disk::visible)
    }

    /// Number of sectors whose newest contents are not yet durable.
    pub fn volatile_sector_count(&self) -> usize {
        lock(&self.disk).volatile.len()
    }

    fn read_with(
        &self,
        offset: u64,
        len: usize,
        get: impl Fn(&Disk, u64) -> Option<&[u8]>,
    ) -> Vec<u8> {
        let size = self.sector_size() as usize;
        assert!(
            offset % size as u64 == 0 && len % size == 0,
            "unaligned sim inspection"
        );
        let mut out = vec![0u8; len];
        let disk = lock(&self.disk);
        for (i, chunk) in out.chunks_mut(size).enumerate() {
            if let Some(data) = get(&disk, offset / size as u64 + i as u64) {
                chunk.copy_from_slice(data);
            }
        }
        out
    }

    /// Simulate a power cut: every in-flight op is lost (no completion will come); in-flight
    /// writes may land a prefix; each volatile write is kept whole, dropped, or kept in part
    /// (a sector prefix or a random subset), at random; durable data is untouched. The device is
    /// usable afterwards (not latched), like a freshly powered-up one.
    pub fn power_loss(&mut self) {
        self.stats.power_losses += 1;
        for pending in std::mem::take(&mut self.pending) {
            if let IoOp::Write { offset, buf, .. } = pending.op {
                if self.rng.chance(0.5) {
                    let sectors = buf.len() as u64 / self.sector_size();
                    let keep = self.rng.below(sectors + 1);
                    self.land(offset, &buf, keep, false);
                }
            }
        }
        self.ready.clear();
        self.latched = false;
        let mut by_write: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut disk = lock(&self.disk);
        for (&sector, (seq, _)) in &disk.volatile {
            by_write.entry(*seq).or_default().push(sector);
        }
        for sectors in by_write.into_values() {
            let count = sectors.len() as u64;
            let keep_prefix = match self.rng.below(4) {
                0 => 0,
                1 => count,
                2 => self.rng.below(count + 1),
                _ => u64::MAX, // random subset
            };
            for (i, sector) in sectors.into_iter().enumerate() {
                let keep = if keep_prefix == u64::MAX {
                    self.rng.chance(0.5)
                } else {
                    (i as u64) < keep_prefix
                };
                let Some((_, data)) = disk.volatile.remove(&sector) else {
                    continue;
                };
                if keep {
                    disk.durable.insert(sector, data);
                    self.stats.sectors_kept_at_power_loss += 1;
                } else {
                    self.stats.sectors_dropped_at_power_loss += 1;
                }
            }
        }
    }

    /// Simulate a process restart without power loss: the device (and its write cache) keeps
    /// everything it has; in-flight writes land whole or not at all, at random; their completions
    /// are lost; the latch is cleared.
    pub fn reopen(mut self) -> SimIo {
        self.restart();
        self
    }

    /// In-place form of [`SimIo::reopen`].
    pub fn restart(&mut self) {
        for pending in std::mem::take(&mut self.pending) {
            if let IoOp::Write {
                offset,
                buf,
                durable,
                ..
            } = pending.op
            {
                if self.rng.chance(0.5) {
                    let sectors = buf.len() as u64 / self.sector_size();
                    self.land(offset, &buf, sectors, durable);
                }
            }
        }
        self.ready.clear();
        self.latched = false;
    }

    /// Store the first `sectors` sectors of `buf` at `offset`, as one write.
    fn land(&mut self, offset: u64, buf: &AlignedBuf, sectors: u64, durable: bool) {
        let size = self.sector_size() as usize;
        let mut disk = lock(&self.disk);
        disk.write_seq += 1;
        let seq = disk.write_seq;
        for (i, chunk) in buf
            .as_slice()
            .chunks(size)
            .take(sectors as usize)
            .enumerate()
        {
            disk.put(offset / size as u64 + i as u64, chunk, seq, durable);
        }
    }

    fn execute(&mut self, op: IoOp) -> Completion {
        let completion = run_inline(self, op);
        self.latched |= completion.latches();
        completion
    }

    fn execute_read(&mut self, offset: u64, buf: &mut AlignedBuf) -> Result<usize, IoError> {
        let size = self.sector_size();
        let first = offset / size;
        let count = buf.len() as u64 / size;
        let targeted = self
            .failing_read_sectors
            .range(first..first + count)
            .next()
            .is_some();
        if targeted || self.rng.chance(self.faults.read_error_prob) {
            self.stats.read_errors += 1;
            return Err(IoError::Injected("read error"));
        }
        if self.rng.chance(self.faults.bit_rot_prob) {
            let victim = first + self.rng.below(count);
            self.rot(victim * size);
        }
        let data = self.read_visible(offset, buf.len());
        buf.as_mut_slice().copy_from_slice(&data);
        Ok(buf.len())
    }

    fn execute_write(
        &mut self,
        offset: u64,
        buf: &AlignedBuf,
        durable: bool,
    ) -> Result<usize, IoError> {
        if self.rng.chance(self.faults.write_error_prob) {
            self.stats.write_errors += 1;
            return Err(IoError::Injected("write error"));
        }
        let size = self.sector_size();
        let sectors = buf.len() as u64 / size;
        let mut target = offset;
        if self.rng.chance(self.faults.misdirect_prob) {
            let slots = (self.geometry.capacity_bytes - buf.len() as u64) / size + 1;
            target = self.rng.below(slots) * size;
            if target == offset {
                target = if offset >= size {
                    offset - size
                } else {
                    offset + size
                };
            }
            if target + buf.len() as u64 > self.geometry.capacity_bytes {
                target = offset; // a device exactly one write long: nowhere else to go
            } else {
                self.stats.misdirected_writes += 1;
            }
        }
        if sectors > 0 && self.rng.chance(self.faults.torn_write_prob) {
            self.stats.torn_writes += 1;
            let keep = self.rng.below(sectors);
            if self.faults.torn_write_reports_error {
                self.land(target, buf, keep, false);
                return Err(IoError::Injected("torn write"));
            }
            self.land(target, buf, keep, durable);
            return Ok(buf.len());
        }
        self.land(target, buf, sectors, durable);
        Ok(buf.len())
    }

    /// One tick of simulated time: run every op whose delay is over, in submission order.
    fn tick(&mut self) {
        let mut remaining = self.pending.len();
        while remaining > 0 {
            remaining -= 1;
            let Some(mut pending) = self.pending.pop_front() else {
                break;
            };
            if pending.delay == 0 {
                let completion = self.execute(pending.op);
                self.ready.push_back(completion);
            } else {
                pending.delay -= 1;
                self.pending.push_back(pending);
            }
        }
    }
}

impl InlineOps for SimIo {
    fn read_at(&mut self, offset: u64, buf: &mut AlignedBuf) -> Result<usize, IoError> {
        self.execute_read(offset, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &AlignedBuf, durable: bool) -> Result<usize, IoError> {
        self.execute_write(offset, buf, durable)
    }

    fn flush_all(&mut self) -> Result<usize, IoError> {
        if self.rng.chance(self.faults.flush_error_prob) {
            self.stats.flush_errors += 1;
            return Err(IoError::Injected("flush error"));
        }
        lock(&self.disk).flush();
        Ok(0)
    }
}

impl Io for SimIo {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&mut self, op: IoOp) -> Result<(), IoError> {
        if self.latched {
            return Err(IoError::Latched);
        }
        if self.in_flight() >= self.queue_depth {
            return Err(IoError::QueueFull);
        }
        if let IoOp::Read { offset, buf, .. } | IoOp::Write { offset, buf, .. } = &op {
            check_op(self.geometry, *offset, buf)?;
        }
        let (min, max) = self.faults.latency_ops;
        let delay = if max > min {
            min + self.rng.below(u64::from(max - min) + 1) as u32
        } else {
            min
        };
        self.pending.push_back(Pending { op, delay });
        Ok(())
    }

    fn kick(&mut self) -> Result<(), IoError> {
        if self.latched {
            return Err(IoError::Latched);
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>, min_complete: usize) -> Result<usize, IoError> {
        let target = min_complete.min(self.in_flight());
        self.tick();
        while self.ready.len() < target {
            self.tick();
        }
        let count = self.ready.len();
        out.extend(self.ready.drain(..));
        Ok(count)
    }

    fn in_flight(&self) -> usize {
        self.pending.len() + self.ready.len()
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn pool(&mut self) -> &mut BufPool {
        &mut self.pool
    }

    fn backend_name(&self) -> &'static str {
        "sim"
    }
}

//! The state store: the region key spaces that committed Raft entries are applied to, on the
//! state segments of the store's device, with checkpoints, compaction and region snapshots.
//!
//! # Partition
//! The device's segments `log_segment_count..segment_count` belong to the state store; the log's
//! ring keeps `0..log_segment_count`. The log recovers its ring without an on-disk segment table,
//! which a dynamic allocator shared by both would need (segment links in the log): planned, not
//! now. Both use the same [`Geometry`](crate::layout::Geometry) and the same checksummed block
//! framing ([`crate::layout::block`]), state blocks with magic `BSST`.
//!
//! # Segments, generations, the write stream
//! State segments are allocated from a free list ([`segments`]). Each allocation draws a new
//! generation number, written as the `sequence` of every block of that segment; a read verifies
//! the block checksum (over contents, device offset and format nonce), the magic and that the
//! sequence is the segment's current generation, and then the record's own CRC and its region
//! and key, so a stale location never returns wrong data. Records (values, links to the next
//! segment, checkpoint records; [`record`]) are packed into the segment's *payload stream* (the
//! block payloads concatenated); a [`ValueLoc`] names a record's start in that stream. The
//! writer ([`stream`]) buffers whole blocks and submits non-durable writes; a partly filled
//! block is written (padded) only when a checkpoint or a freeze needs it on the device, and the
//! next record then starts on a fresh block, so a block a durable checkpoint may reference is
//! never rewritten. Values still buffered or in flight are read from memory.
//!
//! # Durability
//! Applied data is durable through the Raft log: after a crash the store opens at its last
//! checkpoint and the caller replays the log after each region's checkpointed applied index.
//! State writes are never flushed on their own; a checkpoint ([`checkpoint`]) flushes them
//! before it writes its root, and a crash at any point leaves the previous checkpoint in force.
//!
//! # Compaction
//! [`compact`] copies the live values of mostly-dead segments forward in bounded steps; a
//! segment emptied this way is reused only after a later checkpoint root is durable and no
//! [`FrozenRegion`] that could reference it is alive.
//!
//! # Splits
//! [`StateStore::split_region`] moves a parent region's keys from a split key on into a new
//! region at one of the parent's log indexes, rewriting the moved values under the new
//! region's id so that every record still names the region that owns it ([`split`]).
//!
//! # Sessions
//! Each region's [`RegionState::sessions`] remembers the last command of each client, so a
//! retried command is not applied twice ([`session`]).
//!
//! # Space
//! Values never take the last free segments the next checkpoint is estimated to need
//! (`StateStore::checkpoint_reserve_segments`): when the partition is full, applies fail with
//! [`StateFull`](crate::error::EngineError::StateFull) but compaction and a checkpoint still
//! run and give emptied segments back.
//!
//! # Index memory
//! About 64 bytes per key for keys of up to 22 bytes (stored inline), plus the key rounded up
//! to 8 bytes and 16 for longer keys ([`index`], measured by `tests/state_index_memory.rs`).
//!
//! Byte formats: `docs/FORMAT.md`, "State store".

pub mod checkpoint;
pub mod command;
pub mod compact;
pub mod index;
pub mod record;
pub mod segments;
pub mod session;
pub mod snapshot;
pub mod split;
pub mod storage;
pub mod store;
pub mod stream;
pub mod worker;

pub use command::{Command, CommandError, CommandOutcome, Op, OpResult};
pub use index::Key;
pub use session::{Session, SessionTable};
pub use split::SplitOutcome;
pub use store::{FrozenRegion, StateStore};
pub use stream::StateReader;

use bytes::Bytes;

/// Options of a [`StateStore`].
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// How the device is named in errors.
    pub device_label: String,
    /// Bytes of whole blocks gathered before one device write. Default 256 KiB: large writes for
    /// the device, little memory, and a checkpoint's flush has little to wait for.
    pub write_buffer_bytes: usize,
    /// A segment is compacted once this share of its written bytes is dead. Default 0.5: copying
    /// forward at most as many bytes as are reclaimed (write amplification <= 2).
    pub compaction_garbage_ratio: f64,
    /// Bytes of a segment's stream one compaction step reads (and at most copies). Default 1 MiB:
    /// a step takes about a millisecond on NVMe, so applies are never held up for long.
    pub compaction_step_bytes: u64,
    /// Clients whose last command each region remembers ([`session`]); beyond it the client
    /// with the oldest last command is evicted (and a late retry of its would apply again).
    /// Default 1024: a retry comes within seconds, when at most the clients active in those
    /// seconds have written since, and a full table costs about 40 bytes plus up to
    /// [`session::SESSION_RESULTS_BYTES_MAX`] per client in memory, checkpoints and snapshots.
    /// Must be equal on every store of a cluster: eviction is replicated state.
    pub session_clients_max: usize,
}

impl StateConfig {
    /// Defaults for the device named `device_label`.
    pub fn new(device_label: impl Into<String>) -> StateConfig {
        StateConfig {
            device_label: device_label.into(),
            write_buffer_bytes: 256 * 1024,
            compaction_garbage_ratio: 0.5,
            compaction_step_bytes: 1024 * 1024,
            session_clients_max: 1024,
        }
    }

    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> crate::error::Result<()> {
        let bad = |key: &'static str, reason: String| {
            Err(crate::error::EngineError::InvalidConfig { key, reason })
        };
        if self.write_buffer_bytes == 0 {
            return bad("write_buffer_bytes", "must be positive".into());
        }
        let ratio = self.compaction_garbage_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return bad(
                "compaction_garbage_ratio",
                format!("{ratio} is not in (0, 1]"),
            );
        }
        if self.compaction_step_bytes == 0 {
            return bad("compaction_step_bytes", "must be positive".into());
        }
        if self.session_clients_max == 0 {
            return bad("session_clients_max", "must be positive".into());
        }
        Ok(())
    }
}

/// Where a value record starts: `offset` bytes into the payload stream of state segment
/// `segment` (a device segment number), `len` bytes long (the whole record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueLoc {
    /// Device segment number (in the state partition).
    pub segment: u32,
    /// Byte offset of the record in the segment's payload stream.
    pub offset: u32,
    /// Bytes of the whole record.
    pub len: u32,
}

/// What the state store keeps about a region besides its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionState {
    /// The region.
    pub region_id: u64,
    /// Index of the last entry applied. Invariant: only grows, except by a snapshot install.
    pub applied_index: u64,
    /// Term of that entry.
    pub applied_term: u64,
    /// The configuration as of `applied_index`.
    pub conf_state: raftlog::ConfState,
    /// Opaque region metadata (key range, epoch: filled by the region layer).
    pub meta: Bytes,
    /// The clients' sessions: what makes commands apply at most once ([`session`]).
    pub sessions: SessionTable,
}

impl RegionState {
    /// A fresh region at index 0 with the given configuration.
    pub fn new(region_id: u64, conf_state: raftlog::ConfState) -> RegionState {
        RegionState {
            region_id,
            applied_index: 0,
            applied_term: 0,
            conf_state,
            meta: Bytes::new(),
            sessions: SessionTable::default(),
        }
    }
}

/// What a finished checkpoint made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Each region checkpointed with the applied index now durable in the state store: the log
    /// may be compacted up to it.
    pub regions: Vec<(u64, u64)>,
    /// Bytes of checkpoint records written.
    pub bytes: u64,
}

/// Space accounting of one state segment in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentStats {
    /// Device segment number.
    pub segment: u32,
    /// Generation of its current allocation.
    pub generation: u64,
    /// Bytes of records the live index still points at.
    pub live_bytes: u64,
    /// Bytes of its payload stream used (records and padding).
    pub written_bytes: u64,
    /// Emptied by compaction but not reusable yet (a checkpoint or a frozen region may still
    /// reference it).
    pub pinned: bool,
}

/// Handle of a snapshot install in progress ([`StateStore::install_begin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstallId(pub u64);

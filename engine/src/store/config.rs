//! Options of a store's raft loop.

use std::time::Duration;

use crate::error::{EngineError, Result};

/// How leaders serve linearizable reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// ReadIndex: one heartbeat round with a quorum per batch of reads. Safe under any clock.
    #[default]
    ReadIndex,
    /// Serve from the leader while its lease (check-quorum within an election timeout) holds:
    /// no round trip, but relies on bounded clock drift. Regions do not hibernate in this mode
    /// (a hibernating leader does not renew its lease).
    Lease,
}

/// Options of a store's raft loop. Validated by [`StoreConfig::validate`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This store's id (from the superblock).
    pub store_id: u64,
    /// Time between ticks. Default 100 ms: Raft's timers count ticks, and at this rate a
    /// store with 10,000 awake regions still spends little time ticking.
    pub tick_interval: Duration,
    /// Ticks without a leader before a follower campaigns. Default 10 (1 s at 100 ms): the
    /// election timeout etcd's operators know; long enough for a loaded disk's fsync.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats. Default 2 (200 ms): five heartbeats per election
    /// timeout, so one lost heartbeat never costs an election.
    pub heartbeat_ticks: usize,
    /// How reads are served. Default ReadIndex (safe without clock assumptions).
    pub read_mode: ReadMode,
    /// Let idle regions stop ticking. Default true: an idle store with thousands of regions
    /// costs nothing (ignored in lease read mode).
    pub hibernate: bool,
    /// Ticks a leader must be idle before asking its followers to hibernate. Default 20
    /// (two election timeouts).
    pub hibernate_idle_ticks: u32,
    /// Most bytes of entries in one append message. Default 1 MiB.
    pub max_size_per_msg: u64,
    /// Most append messages in flight to one follower. Default 256.
    pub max_inflight_msgs: usize,
    /// Proposals and reads waiting in one region before new ones get `Busy`. Default 4096.
    pub pending_requests_max: usize,
    /// Seed of the ids this store chooses (new regions and peers) and of election jitter.
    /// Default 0: derived from the store id and the clock at open.
    pub rng_seed: u64,
}

impl StoreConfig {
    /// Defaults for `store_id`.
    pub fn new(store_id: u64) -> StoreConfig {
        StoreConfig {
            store_id,
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            read_mode: ReadMode::ReadIndex,
            hibernate: true,
            hibernate_idle_ticks: 20,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pending_requests_max: 4096,
            rng_seed: 0,
        }
    }

    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &'static str, reason: String| Err(EngineError::InvalidConfig { key, reason });
        if self.store_id == 0 {
            return bad("store_id", "must be positive".into());
        }
        if self.tick_interval.is_zero() {
            return bad("tick_interval", "must be positive".into());
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks", "must be positive".into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return bad(
                "election_ticks",
                format!(
                    "{} must exceed heartbeat_ticks {}",
                    self.election_ticks, self.heartbeat_ticks
                ),
            );
        }
        if self.pending_requests_max == 0 {
            return bad("pending_requests_max", "must be positive".into());
        }
        Ok(())
    }
}

//! [`RegionStorage`]: the `raftlog::Storage` of one region — its log ([`RegionLog`]) plus
//! snapshots built asynchronously by the [`SnapshotWorker`](super::worker::SnapshotWorker).
//!
//! `snapshot(request_index)` never waits: if the latest built snapshot of the region is recent
//! enough it is returned at once (its `data` is the encoded [`SnapshotMeta`]; the chunks travel
//! separately); otherwise a build is requested (at most one per region at a time) and the answer
//! is `SnapshotTemporarilyUnavailable`, on which Raft retries later. A snapshot is recent enough
//! when its index is at least `request_index` and at least the log's compaction point (older
//! ones could not be followed by the entries the log still has).

use raftlog::{Entry, RaftState, Snapshot, SnapshotMetadata, Storage, StorageError};

use super::snapshot::SnapshotMeta;
use super::worker::SnapshotHandle;
use crate::log::RegionLog;

/// One region's Raft storage: its log and its snapshots. Cheap to clone.
#[derive(Clone)]
pub struct RegionStorage {
    log: RegionLog,
    snapshots: SnapshotHandle,
}

impl RegionStorage {
    /// The storage of `log`'s region, building snapshots through `snapshots`.
    pub fn new(log: RegionLog, snapshots: SnapshotHandle) -> RegionStorage {
        RegionStorage { log, snapshots }
    }

    /// The region.
    pub fn region_id(&self) -> u64 {
        self.log.region_id()
    }

    /// The log.
    pub fn log(&self) -> &RegionLog {
        &self.log
    }

    /// The snapshot handle.
    pub fn snapshots(&self) -> &SnapshotHandle {
        &self.snapshots
    }
}

/// The Raft form of a built snapshot.
fn raft_snapshot(meta: &SnapshotMeta, conf_state: &raftlog::ConfState) -> Snapshot {
    Snapshot {
        data: meta.encode(),
        metadata: SnapshotMetadata {
            conf_state: conf_state.clone(),
            index: meta.index,
            term: meta.term,
        },
    }
}

impl Storage for RegionStorage {
    fn initial_state(&self) -> raftlog::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raftlog::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size)
    }

    fn term(&self, idx: u64) -> raftlog::Result<u64> {
        self.log.term(idx)
    }

    fn first_index(&self) -> raftlog::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> raftlog::Result<u64> {
        self.log.last_index()
    }

    fn snapshot(&self, request_index: u64) -> raftlog::Result<Snapshot> {
        let region_id = self.log.region_id();
        let floor = request_index.max(self.log.first_index()?.saturating_sub(1));
        if let Some(b) = self.snapshots.built(region_id) {
            if b.meta.index >= floor {
                return Ok(raft_snapshot(&b.meta, &b.state.conf_state));
            }
        }
        // Not ready (or too old): ask for one, without waiting, and let Raft retry.
        self.snapshots.request_build(region_id);
        Err(StorageError::SnapshotTemporarilyUnavailable.into())
    }
}

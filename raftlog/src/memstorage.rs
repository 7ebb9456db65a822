//! [`MemStorage`]: an in-memory [`Storage`] for tests, examples and benchmarks.
//!
//! The log is a vector of entries after a **base**: the index and term of the entry just before
//! the first one kept (0/0 for a fresh log; the snapshot's position after `apply_snapshot`; the
//! last discarded entry after `compact`). So `term(first_index() - 1)` always answers, as the
//! trait requires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::errors::{Result, StorageError};
use crate::storage::{RaftState, Storage};
use crate::types::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

/// The state behind a [`MemStorage`] handle, reached through [`MemStorage::rl`] and
/// [`MemStorage::wl`].
#[derive(Debug, Default)]
pub struct MemStorageCore {
    raft_state: RaftState,
    /// Invariant: `entries[i].index == base_index + 1 + i`.
    entries: Vec<Entry>,
    /// Index of the entry just before `entries[0]`.
    base_index: u64,
    /// Term of the entry at `base_index`.
    base_term: u64,
    /// The last snapshot created or applied (empty if none).
    snapshot: Snapshot,
    /// The next `snapshot()` fails once with `SnapshotTemporarilyUnavailable` (atomic so that
    /// `snapshot(&self)` can clear it under the read lock).
    snapshot_unavailable_once: AtomicBool,
    /// While set, `entries()` fails with `LogTemporarilyUnavailable`.
    log_unavailable: bool,
}

impl MemStorageCore {
    /// Sets the hard state returned by `initial_state`.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.raft_state.hard_state = hs;
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.raft_state.hard_state
    }

    /// Mutable access to the stored hard state.
    pub fn mut_hard_state(&mut self) -> &mut HardState {
        &mut self.raft_state.hard_state
    }

    /// Sets the configuration returned by `initial_state`.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.raft_state.conf_state = cs;
    }

    /// Sets the hard state's commit index (tests use this to allow snapshots up to it).
    /// `Compacted`/`Unavailable` if `index` is not `first_index() - 1 ..= last_index()`.
    pub fn commit_to(&mut self, index: u64) -> Result<()> {
        self.check_known(index)?;
        self.raft_state.hard_state.commit = index;
        Ok(())
    }

    /// Appends `ents`, first truncating any stored entries at or after `ents[0].index`. Entries
    /// at or below the base (already compacted) are skipped: they are committed, so they match.
    ///
    /// # Panics
    /// If `ents` would leave a gap after `last_index()`, or its indexes are not consecutive: a
    /// programmer error (checked always: a silent hole would make `term()` lie).
    pub fn append(&mut self, ents: &[Entry]) -> Result<()> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        let last_index = self.last_index_inner();
        assert!(
            first.index <= last_index + 1,
            "appending entries from index {} would leave a gap after last index {last_index}",
            first.index
        );
        assert!(
            ents.windows(2).all(|w| w[1].index == w[0].index + 1),
            "entries to append are not contiguous"
        );
        let skip = (self.base_index + 1).saturating_sub(first.index);
        let Some(ents) = usize::try_from(skip)
            .ok()
            .and_then(|s| ents.get(s..))
            .filter(|e| !e.is_empty())
        else {
            return Ok(());
        };
        let keep = (ents[0].index - self.base_index - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Discards the entries before `compact_index`, so that `first_index()` becomes
    /// `compact_index` (a no-op if it already is at least that). `Unavailable` if
    /// `compact_index > last_index() + 1`. The caller must not compact past what it has applied.
    pub fn compact(&mut self, compact_index: u64) -> Result<()> {
        if compact_index <= self.base_index + 1 {
            return Ok(());
        }
        if compact_index > self.last_index_inner() + 1 {
            return Err(StorageError::Unavailable.into());
        }
        let drop_count = (compact_index - self.base_index - 1) as usize;
        self.base_term = self.entries[drop_count - 1].term;
        self.base_index = compact_index - 1;
        self.entries.drain(..drop_count);
        Ok(())
    }

    /// Replaces the log with `snapshot`: the entries are discarded, the base moves to the
    /// snapshot's position, the configuration becomes the snapshot's, and the hard state's commit
    /// (and term, if older) move up to it. `SnapshotOutOfDate` unless the snapshot is newer than
    /// both the log base and the snapshot already held.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let SnapshotMetadata { index, term, .. } = snapshot.metadata;
        if index <= self.base_index.max(self.snapshot.metadata.index) {
            return Err(StorageError::SnapshotOutOfDate.into());
        }
        self.entries.clear();
        self.base_index = index;
        self.base_term = term;
        let hs = &mut self.raft_state.hard_state;
        hs.commit = hs.commit.max(index);
        hs.term = hs.term.max(term);
        self.raft_state.conf_state = snapshot.metadata.conf_state.clone();
        self.snapshot = snapshot;
        Ok(())
    }

    /// Records a snapshot of the application state `data` at `index` (in the log, not compacted
    /// past), with `conf_state` or, if `None`, the current configuration; later `snapshot()` calls
    /// return it. The log is left as is (call [`MemStorageCore::compact`] separately).
    /// `SnapshotOutOfDate` if `index` is not newer than the snapshot held.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: Option<ConfState>,
        data: impl Into<Bytes>,
    ) -> Result<Snapshot> {
        if index <= self.snapshot.metadata.index {
            return Err(StorageError::SnapshotOutOfDate.into());
        }
        let term = self.term_inner(index)?;
        let conf_state = conf_state.unwrap_or_else(|| self.raft_state.conf_state.clone());
        self.snapshot = Snapshot {
            data: data.into(),
            metadata: SnapshotMetadata {
                conf_state,
                index,
                term,
            },
        };
        Ok(self.snapshot.clone())
    }

    /// The next `snapshot()` call fails once with `SnapshotTemporarilyUnavailable`.
    pub fn trigger_snapshot_unavailable(&mut self) {
        *self.snapshot_unavailable_once.get_mut() = true;
    }

    /// While `unavailable`, `entries()` fails with `LogTemporarilyUnavailable`.
    pub fn trigger_log_unavailable(&mut self, unavailable: bool) {
        self.log_unavailable = unavailable;
    }

    fn last_index_inner(&self) -> u64 {
        self.base_index + self.entries.len() as u64
    }

    /// `Ok` if `index` is the base or a stored entry.
    fn check_known(&self, index: u64) -> Result<()> {
        if index < self.base_index {
            return Err(StorageError::Compacted.into());
        }
        if index > self.last_index_inner() {
            return Err(StorageError::Unavailable.into());
        }
        Ok(())
    }

    fn term_inner(&self, index: u64) -> Result<u64> {
        self.check_known(index)?;
        if index == self.base_index {
            return Ok(self.base_term);
        }
        Ok(self.entries[(index - self.base_index - 1) as usize].term)
    }

    /// A snapshot at the commit index with empty data and the current configuration, for tests
    /// that compact without creating snapshots (as raft-rs's MemStorage does).
    fn snapshot_at_commit(&self, request_index: u64) -> Result<Snapshot> {
        let commit = self.raft_state.hard_state.commit;
        if commit < request_index.max(self.base_index) || commit == 0 {
            return Err(StorageError::SnapshotTemporarilyUnavailable.into());
        }
        let term = self.term_inner(commit)?;
        let conf_state = self.raft_state.conf_state.clone();
        Ok(Snapshot {
            data: Bytes::new(),
            metadata: SnapshotMetadata {
                conf_state,
                index: commit,
                term,
            },
        })
    }
}

impl Storage for MemStorageCore {
    fn initial_state(&self) -> Result<RaftState> {
        Ok(self.raft_state.clone())
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        assert!(low <= high, "entries: low {low} > high {high}");
        if self.log_unavailable {
            return Err(StorageError::LogTemporarilyUnavailable.into());
        }
        if low <= self.base_index {
            return Err(StorageError::Compacted.into());
        }
        if high > self.last_index_inner() + 1 {
            return Err(StorageError::Unavailable.into());
        }
        let lo = (low - self.base_index - 1) as usize;
        let hi = (high - self.base_index - 1) as usize;
        let ents = &self.entries[lo..hi];
        let count = match max_size {
            None => ents.len(),
            Some(max_size) => prefix_within(ents, max_size),
        };
        Ok(ents[..count].to_vec())
    }

    fn term(&self, idx: u64) -> Result<u64> {
        self.term_inner(idx)
    }

    fn first_index(&self) -> Result<u64> {
        Ok(self.base_index + 1)
    }

    fn last_index(&self) -> Result<u64> {
        Ok(self.last_index_inner())
    }

    /// The snapshot last created or applied, if it reaches `request_index` and the log base;
    /// otherwise one built at the commit index (empty data, current configuration); otherwise
    /// `SnapshotTemporarilyUnavailable`. Also that error, once, after
    /// [`MemStorageCore::trigger_snapshot_unavailable`].
    fn snapshot(&self, request_index: u64) -> Result<Snapshot> {
        if self
            .snapshot_unavailable_once
            .swap(false, Ordering::Relaxed)
        {
            return Err(StorageError::SnapshotTemporarilyUnavailable.into());
        }
        let held = &self.snapshot;
        if !held.is_empty() && held.metadata.index >= request_index.max(self.base_index) {
            return Ok(held.clone());
        }
        self.snapshot_at_commit(request_index)
    }
}

/// How many leading entries fit in `max_size` bytes (by [`Entry::size_bytes`]), at least one.
fn prefix_within(ents: &[Entry], max_size: u64) -> usize {
    let mut total = 0u64;
    for (i, e) in ents.iter().enumerate() {
        total = total.saturating_add(e.size_bytes());
        if total > max_size {
            return i.max(1);
        }
    }
    ents.len()
}

/// An in-memory [`Storage`]: a cloneable handle; clones share one [`MemStorageCore`].
///
/// Reads take the read lock, changes the write lock. The convenience methods lock for one call;
/// use [`MemStorage::wl`] to make several changes under one lock. A lock poisoned by a panicking
/// test thread is taken over as is (this is test storage; nothing is lost by going on).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    core: Arc<RwLock<MemStorageCore>>,
}

impl MemStorage {
    /// An empty storage: no entries, no configuration, zero hard state.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// An empty log with this configuration, so a node starts as a member of it.
    pub fn new_with_conf_state(conf_state: impl Into<ConfState>) -> MemStorage {
        let storage = MemStorage::new();
        storage.wl().set_conf_state(conf_state.into());
        storage
    }

    /// The read lock on the shared state.
    pub fn rl(&self) -> RwLockReadGuard<'_, MemStorageCore> {
        self.core.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The write lock on the shared state.
    pub fn wl(&self) -> RwLockWriteGuard<'_, MemStorageCore> {
        self.core.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// See [`MemStorageCore::append`].
    pub fn append(&self, ents: &[Entry]) -> Result<()> {
        self.wl().append(ents)
    }

    /// See [`MemStorageCore::set_hard_state`].
    pub fn set_hard_state(&self, hs: HardState) {
        self.wl().set_hard_state(hs)
    }

    /// See [`MemStorageCore::hard_state`].
    pub fn hard_state(&self) -> HardState {
        self.rl().hard_state()
    }

    /// See [`MemStorageCore::set_conf_state`].
    pub fn set_conf_state(&self, cs: ConfState) {
        self.wl().set_conf_state(cs)
    }

    /// See [`MemStorageCore::commit_to`].
    pub fn commit_to(&self, index: u64) -> Result<()> {
        self.wl().commit_to(index)
    }

    /// See [`MemStorageCore::apply_snapshot`].
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.wl().apply_snapshot(snapshot)
    }

    /// See [`MemStorageCore::compact`].
    pub fn compact(&self, compact_index: u64) -> Result<()> {
        self.wl().compact(compact_index)
    }

    /// See [`MemStorageCore::create_snapshot`].
    pub fn create_snapshot(
        &self,
        index: u64,
        conf_state: Option<ConfState>,
        data: impl Into<Bytes>,
    ) -> Result<Snapshot> {
        self.wl().create_snapshot(index, conf_state, data)
    }

    /// See [`MemStorageCore::trigger_snapshot_unavailable`].
    pub fn trigger_snapshot_unavailable(&self) {
        self.wl().trigger_snapshot_unavailable()
    }

    /// See [`MemStorageCore::trigger_log_unavailable`].
    pub fn trigger_log_unavailable(&self, unavailable: bool) {
        self.wl().trigger_log_unavailable(unavailable)
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState> {
        self.rl().initial_state()
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        self.rl().entries(low, high, max_size)
    }

    fn term(&self, idx: u64) -> Result<u64> {
        self.rl().term(idx)
    }

    fn first_index(&self) -> Result<u64> {
        self.rl().first_index()
    }

    fn last_index(&self) -> Result<u64> {
        self.rl().last_index()
    }

    fn snapshot(&self, request_index: u64) -> Result<Snapshot> {
        self.rl().snapshot(request_index)
    }
}

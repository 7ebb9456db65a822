//! The Raft log as the algorithm sees it: the application's stable [`Storage`] followed by the
//! in-memory [`Unstable`] tail, with the commit, persist and apply cursors.

#[cfg(test)]
mod tests;

use std::cmp;

use tracing::{debug, info};

use crate::errors::{Error, Result, StorageError};
use crate::storage::Storage;
use crate::types::{Entry, Snapshot};

pub use crate::log_unstable::Unstable;

/// Stable storage plus the unstable tail, and how far the log is committed, persisted and
/// applied.
///
/// Invariants: `applied <= committed`; `committed <= last_index()`. Storage errors other than
/// the log-bound ones (`Compacted`, `Unavailable`) and `LogTemporarilyUnavailable` are fatal
/// (see the [`Storage`] failure contract) and panic.
pub struct RaftLog<S: Storage> {
    /// Entries persisted by the application (all indexes below `unstable.offset`).
    pub store: S,
    /// Entries and snapshot not yet persisted.
    pub unstable: Unstable,
    /// Highest index known committed by a quorum.
    pub committed: u64,
    /// Highest index known durable: handed out in a `Ready` and acknowledged by the
    /// application. Invariant: `persisted < unstable.offset` (or the pending snapshot's index).
    pub persisted: u64,
    /// Highest index the application has applied. Invariant: `applied <= committed`.
    pub applied: u64,
    /// How far beyond `persisted` committed entries may be handed out for applying (0: apply
    /// only persisted entries).
    pub max_apply_unpersisted_log_limit: u64,
}

impl<S: Storage> std::fmt::Debug for RaftLog<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLog")
            .field("committed", &self.committed)
            .field("persisted", &self.persisted)
            .field("applied", &self.applied)
            .field("unstable_offset", &self.unstable.offset)
            .field("unstable_entries", &self.unstable.entries.len())
            .field(
                "pending_snapshot",
                &self.unstable.snapshot.as_ref().map(|s| s.metadata.index),
            )
            .finish()
    }
}

/// Panics on a storage failure: Raft cannot go on without its log.
fn fatal(op: &str, e: Error) -> ! {
    panic!("raft log: storage failure in {op}: {e}")
}

impl<S: Storage> RaftLog<S> {
    /// A log over `store`: everything in it is persisted, and its first index - 1 (the
    /// snapshot's) is committed and applied.
    pub fn new(store: S) -> RaftLog<S> {
        let first_index = store
            .first_index()
            .unwrap_or_else(|e| fatal("first_index", e));
        let last_index = store
            .last_index()
            .unwrap_or_else(|e| fatal("last_index", e));
        RaftLog {
            store,
            unstable: Unstable::new(last_index + 1),
            committed: first_index - 1,
            persisted: last_index,
            applied: first_index - 1,
            max_apply_unpersisted_log_limit: 0,
        }
    }

    /// The stable storage.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The stable storage, mutable.
    pub fn mut_store(&mut self) -> &mut S {
        &mut self.store
    }

    /// Index of the first available entry.
    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self
                .store
                .first_index()
                .unwrap_or_else(|e| fatal("first_index", e)),
        }
    }

    /// Index of the last entry.
    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self
                .store
                .last_index()
                .unwrap_or_else(|e| fatal("last_index", e)),
        }
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> u64 {
        let last = self.last_index();
        self.term(last).unwrap_or_else(|e| fatal("last_term", e))
    }

    /// Term of the entry at `idx`: `Ok(0)` outside `[first_index() - 1, last_index()]`;
    /// `Compacted` or `Unavailable` from storage are passed through.
    pub fn term(&self, idx: u64) -> Result<u64> {
        // Fast path: an unstable entry (the unstable offset is never below the first index, so
        // the bounds checks below would pass), without asking storage.
        if idx >= self.unstable.offset {
            if let Some(e) = self
                .unstable
                .entries
                .get((idx - self.unstable.offset) as usize)
            {
                return Ok(e.term);
            }
        }
        let dummy_index = self.first_index() - 1;
        if idx < dummy_index || idx > self.last_index() {
            return Ok(0);
        }
        if let Some(term) = self.unstable.maybe_term(idx) {
            return Ok(term);
        }
        match self.store.term(idx) {
            Ok(term) => Ok(term),
            Err(e @ Error::Store(StorageError::Compacted | StorageError::Unavailable)) => Err(e),
            Err(e) => fatal("term", e),
        }
    }

    /// Whether the entry at `idx` has term `term`.
    pub fn match_term(&self, idx: u64, term: u64) -> bool {
        self.term(idx).is_ok_and(|t| t == term)
    }

    /// The index of the first entry of `ents` that is new or conflicts (same index, other
    /// term) with the log; 0 when all of them are already in the log. `ents` must be
    /// contiguous.
    pub fn find_conflict(&self, ents: &[Entry]) -> u64 {
        for e in ents {
            if !self.match_term(e.index, e.term) {
                if e.index <= self.last_index() {
                    info!(
                        index = e.index,
                        term = e.term,
                        existing_term = self.term(e.index).ok(),
                        "found conflict"
                    );
                }
                return e.index;
            }
        }
        0
    }

    /// For a rejected append at (`index`, `term`): the highest index at or below `index` whose
    /// term is at most `term`, and that term (`None` if it could not be read, e.g. compacted).
    /// The leader can skip every entry above it, as none of them can match.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, Option<u64>) {
        if index > self.last_index() {
            debug!(
                index,
                last_index = self.last_index(),
                "find_conflict_by_term beyond the log"
            );
            return (index, None);
        }
        let dummy_index = self.first_index() - 1;
        let mut idx = index;
        loop {
            if idx < dummy_index {
                // Compacted: the term is unknown here.
                return (idx, None);
            }
            match self.term(idx) {
                Ok(t) if t > term => idx -= 1,
                Ok(t) => return (idx, Some(t)),
                Err(_) => return (idx, None),
            }
        }
    }

    /// A follower's append: if the entry at `idx` has term `term`, appends `ents` (truncating a
    /// conflicting suffix), commits up to `min(committed, idx + ents.len())`, and returns
    /// `(conflict index or 0, last new index)`. Returns `None` when the log does not match.
    ///
    /// # Panics
    /// If a conflict lies at or below the commit index: committed entries never change.
    pub fn maybe_append(
        &mut self,
        idx: u64,
        term: u64,
        committed: u64,
        ents: &[Entry],
    ) -> Option<(u64, u64)> {
        let (conflict, start) = self.append_conflict(idx, term, ents)?;
        if let Some(start) = start {
            self.append(&ents[start..]);
        }
        let last_new_index = idx + ents.len() as u64;
        self.commit_to(cmp::min(committed, last_new_index));
        Some((conflict, last_new_index))
    }

    /// [`RaftLog::maybe_append`] taking the entries by value: new entries are moved into the
    /// log instead of cloned (the follower's path for an incoming `MsgAppend`).
    pub fn maybe_append_vec(
        &mut self,
        idx: u64,
        term: u64,
        committed: u64,
        mut ents: Vec<Entry>,
    ) -> Option<(u64, u64)> {
        let (conflict, start) = self.append_conflict(idx, term, &ents)?;
        let last_new_index = idx + ents.len() as u64;
        if let Some(start) = start {
            ents.drain(..start);
            self.append_vec(ents);
        }
        self.commit_to(cmp::min(committed, last_new_index));
        Some((conflict, last_new_index))
    }

    /// For [`RaftLog::maybe_append`]: `None` if the log does not hold (`idx`, `term`); else the
    /// first conflicting index (0: none) and the position in `ents` to append from, if any.
    fn append_conflict(&self, idx: u64, term: u64, ents: &[Entry]) -> Option<(u64, Option<usize>)> {
        if !self.match_term(idx, term) {
            return None;
        }
        // Fast path: entries strictly after the last one conflict at once (the log has no term
        // for them), exactly as `find_conflict` would find.
        let conflict = match ents.first() {
            Some(e) if e.index > self.last_index() && e.term != 0 => e.index,
            _ => self.find_conflict(ents),
        };
        if conflict == 0 {
            return Some((0, None));
        }
        assert!(
            conflict > self.committed,
            "entry {conflict} conflicts with committed entry (committed {})",
            self.committed
        );
        Some((conflict, Some((conflict - (idx + 1)) as usize)))
    }

    /// Appends `ents` (replacing any entries from `ents[0].index` on) and returns the new last
    /// index. Entries replaced stop counting as persisted.
    ///
    /// # Panics
    /// If `ents` would overwrite a committed entry.
    pub fn append(&mut self, ents: &[Entry]) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        self.before_append(first.index);
        self.unstable.truncate_and_append(ents);
        self.last_index()
    }

    /// [`RaftLog::append`] taking the entries by value (moved, not cloned).
    pub fn append_vec(&mut self, ents: Vec<Entry>) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        self.before_append(first.index);
        self.unstable.truncate_and_append_vec(ents);
        self.last_index()
    }

    /// [`RaftLog::append`] of one entry, by value.
    pub fn append_one(&mut self, e: Entry) -> u64 {
        self.before_append(e.index);
        self.unstable.truncate_and_append_one(e);
        self.last_index()
    }

    /// Checks an append starting at `first_index` and forgets the persistence of what it
    /// replaces.
    fn before_append(&mut self, first_index: u64) {
        let after = first_index - 1;
        assert!(
            after >= self.committed,
            "append after {after} would overwrite committed {}",
            self.committed
        );
        if self.persisted > after {
            self.persisted = after;
        }
    }

    /// The unstable entries, to hand to the application for persisting.
    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    /// The pending unstable snapshot, if any.
    pub fn unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable.snapshot.as_ref()
    }

    /// Entries from `idx` to the end, at most `max_size` bytes (but at least one).
    pub fn entries(&self, idx: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        let last = self.last_index();
        if idx > last {
            return Ok(Vec::new());
        }
        self.slice(idx, last + 1, max_size)
    }

    /// Every entry in the log (retrying if compaction races with the read).
    pub fn all_entries(&self) -> Vec<Entry> {
        loop {
            match self.entries(self.first_index(), None) {
                Ok(ents) => return ents,
                Err(Error::Store(StorageError::Compacted)) => continue,
                Err(e) => fatal("all_entries", e),
            }
        }
    }

    /// Whether a candidate's log ending at (`last_index`, `term`) is at least as up to date as
    /// this one (§5.4.1 of the Raft paper).
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        let last_term = self.last_term();
        term > last_term || (term == last_term && last_index >= self.last_index())
    }

    /// The highest index that may be handed out for applying.
    fn apply_index_upper_bound(&self) -> u64 {
        cmp::min(
            self.committed,
            self.persisted
                .saturating_add(self.max_apply_unpersisted_log_limit),
        )
    }

    /// Committed entries after `since_idx` that may be applied, at most `max_size` bytes (at
    /// least one); `None` if there are none.
    pub fn next_entries_since(&self, since_idx: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        let offset = cmp::max(since_idx + 1, self.first_index());
        let high = self.apply_index_upper_bound() + 1;
        if high <= offset {
            return None;
        }
        match self.slice(offset, high, max_size) {
            Ok(ents) => Some(ents),
            Err(e) => fatal("next_entries", e),
        }
    }

    /// Committed, persisted (or within the unpersisted limit), unapplied entries.
    pub fn next_entries(&self, max_size: Option<u64>) -> Option<Vec<Entry>> {
        self.next_entries_since(self.applied, max_size)
    }

    /// Whether [`RaftLog::next_entries_since`] would return entries.
    pub fn has_next_entries_since(&self, since_idx: u64) -> bool {
        let offset = cmp::max(since_idx + 1, self.first_index());
        self.apply_index_upper_bound() + 1 > offset
    }

    /// Whether [`RaftLog::next_entries`] would return entries.
    pub fn has_next_entries(&self) -> bool {
        self.has_next_entries_since(self.applied)
    }

    /// The newest snapshot with index at least `request_index`: the pending unstable one if it
    /// qualifies, else the storage's.
    pub fn snapshot(&self, request_index: u64) -> Result<Snapshot> {
        if let Some(snap) = &self.unstable.snapshot {
            if snap.metadata.index >= request_index {
                return Ok(snap.clone());
            }
        }
        self.store.snapshot(request_index)
    }

    /// Commits up to `max_index` if that entry is of `term` (a leader commits only entries of
    /// its own term by counting, §5.4.2). Returns whether the commit index rose.
    pub fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        if max_index > self.committed && self.term(max_index).is_ok_and(|t| t == term) {
            debug!(index = max_index, term, "commit");
            self.commit_to(max_index);
            true
        } else {
            false
        }
    }

    /// Raises the commit index to `to_commit` (never lowers it).
    ///
    /// # Panics
    /// If `to_commit` is beyond the last index: the log would be corrupt or truncated.
    pub fn commit_to(&mut self, to_commit: u64) {
        if self.committed >= to_commit {
            return;
        }
        assert!(
            to_commit <= self.last_index(),
            "to_commit {to_commit} is out of range [last_index {}]",
            self.last_index()
        );
        self.committed = to_commit;
    }

    /// The application applied everything up to `idx`.
    ///
    /// # Panics
    /// If `idx` is beyond the commit index or below the applied index.
    pub fn applied_to(&mut self, idx: u64) {
        if idx == 0 {
            return;
        }
        assert!(
            self.applied <= idx && idx <= self.committed,
            "applied({idx}) is out of range [prev applied {}, committed {}]",
            self.applied,
            self.committed
        );
        self.applied = idx;
    }

    /// Unstable entries up to (`index`, `term`) were persisted: drop them from memory (ignored
    /// if that entry was overwritten since).
    pub fn stable_entries(&mut self, index: u64, term: u64) {
        self.unstable.stable_entries(index, term);
    }

    /// The pending snapshot at `index` was persisted: drop it from memory.
    pub fn stable_snap(&mut self, index: u64) {
        self.unstable.stable_snap(index);
    }

    /// Entries up to (`index`, `term`) are durable: raise `persisted` if the entry is still in
    /// stable storage with that term and was not replaced in the unstable tail since.
    pub fn maybe_persist(&mut self, index: u64, term: u64) -> bool {
        let first_update_index = match &self.unstable.snapshot {
            Some(s) => s.metadata.index,
            None => self.unstable.offset,
        };
        if index > self.persisted
            && index < first_update_index
            && self.store.term(index).is_ok_and(|t| t == term)
        {
            debug!(index, term, "persisted");
            self.persisted = index;
            true
        } else {
            false
        }
    }

    /// The snapshot at `index` is durable: raise `persisted` to it.
    ///
    /// # Panics
    /// If the snapshot is beyond the commit index, or entries after it were already unstable.
    pub fn maybe_persist_snap(&mut self, index: u64) -> bool {
        if index <= self.persisted {
            return false;
        }
        assert!(
            index <= self.committed,
            "snapshot {index} persisted beyond committed {}",
            self.committed
        );
        assert!(
            index < self.unstable.offset,
            "snapshot {index} persisted at or after the unstable offset {}",
            self.unstable.offset
        );
        self.persisted = index;
        true
    }

    /// Replaces the log with `snapshot` (pending persistence); commits up to it.
    ///
    /// # Panics
    /// If the snapshot is below the commit index.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        info!(
            index,
            term = snapshot.metadata.term,
            "restore log from snapshot"
        );
        assert!(
            index >= self.committed,
            "snapshot {index} is below committed {}",
            self.committed
        );
        // Entries after the snapshot index were thrown away: they are no longer durable.
        if self.persisted > index {
            self.persisted = index;
        }
        self.committed = index;
        self.unstable.restore(snapshot);
    }

    /// Whether a snapshot is waiting to be persisted.
    pub fn has_pending_snapshot(&self) -> bool {
        self.unstable
            .snapshot
            .as_ref()
            .is_some_and(|s| !s.is_empty())
    }

    /// `(committed, term of the committed entry)`.
    pub fn commit_info(&self) -> (u64, u64) {
        let term = self
            .term(self.committed)
            .unwrap_or_else(|e| fatal("commit_info", e));
        (self.committed, term)
    }

    /// Entries in `[low, high)`, from storage then the unstable tail, at most `max_size` bytes
    /// but at least one. `Compacted` if `low` is below the first index;
    /// `LogTemporarilyUnavailable` passed through from storage.
    ///
    /// # Panics
    /// If `high` is beyond `last_index() + 1` or `low > high`.
    pub fn slice(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        self.check_bounds(low, high)?;
        if low == high {
            return Ok(Vec::new());
        }
        let offset = self.unstable.offset;
        let mut ents = Vec::new();
        if low < offset {
            let stable_high = cmp::min(high, offset);
            match self.store.entries(low, stable_high, max_size) {
                Ok(stored) => ents = stored,
                Err(
                    e @ Error::Store(
                        StorageError::Compacted | StorageError::LogTemporarilyUnavailable,
                    ),
                ) => return Err(e),
                Err(Error::Store(StorageError::Unavailable)) => {
                    panic!("entries [{low}, {stable_high}) unavailable from storage")
                }
                Err(e) => fatal("entries", e),
            }
            // Storage stopped early at the size limit: nothing more fits.
            if (ents.len() as u64) < stable_high - low {
                return Ok(ents);
            }
        }
        if high > offset {
            let unstable = self.unstable.slice(cmp::max(low, offset), high);
            ents.extend_from_slice(unstable);
        }
        limit_size(&mut ents, max_size);
        Ok(ents)
    }

    fn check_bounds(&self, low: u64, high: u64) -> Result<()> {
        assert!(low <= high, "invalid slice [{low}, {high})");
        let first = self.first_index();
        if low < first {
            return Err(Error::Store(StorageError::Compacted));
        }
        let upper = self.last_index() + 1;
        assert!(
            high <= upper,
            "slice [{low}, {high}) out of bounds [{first}, {upper})"
        );
        Ok(())
    }
}

/// Truncates `ents` to the longest prefix within `max_size` bytes, keeping at least one entry.
pub(crate) fn limit_size(ents: &mut Vec<Entry>, max_size: Option<u64>) {
    let Some(max) = max_size else { return };
    let mut size = 0;
    let keep = ents
        .iter()
        .take_while(|e| {
            size += e.size_bytes();
            size <= max
        })
        .count();
    ents.truncate(keep.max(1));
}

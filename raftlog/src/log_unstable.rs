//! The tail of the log not yet persisted by the application: entries (and possibly a
//! snapshot) that Raft holds in memory until a `Ready` hands them out and the application
//! reports them durable.

#[cfg(test)]
mod tests;

use tracing::debug;

use crate::types::{Entry, Snapshot};

/// Unpersisted log state: an incoming snapshot, and the entries after the stable log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unstable {
    /// A snapshot received from the leader, not yet persisted.
    pub snapshot: Option<Snapshot>,
    /// Unpersisted entries. Invariant: `entries[i].index == offset + i`.
    pub entries: Vec<Entry>,
    /// Index of `entries[0]` (or where the next entry will go when empty).
    pub offset: u64,
    /// Sum of [`Entry::size_bytes`] over `entries`.
    pub entries_size: u64,
}

impl Unstable {
    /// An empty unstable log whose first entry will be `offset`.
    pub fn new(offset: u64) -> Unstable {
        Unstable {
            snapshot: None,
            entries: Vec::new(),
            offset,
            entries_size: 0,
        }
    }

    /// The first index, if a snapshot is pending (otherwise the stable log knows it).
    pub fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.metadata.index + 1)
    }

    /// The last index, if there are unstable entries or a pending snapshot.
    pub fn maybe_last_index(&self) -> Option<u64> {
        match self.entries.len() {
            0 => self.snapshot.as_ref().map(|s| s.metadata.index),
            n => Some(self.offset + n as u64 - 1),
        }
    }

    /// The term of `idx`, if the unstable part knows it.
    pub fn maybe_term(&self, idx: u64) -> Option<u64> {
        if idx < self.offset {
            let meta = &self.snapshot.as_ref()?.metadata;
            return (meta.index == idx).then_some(meta.term);
        }
        let last = self.maybe_last_index()?;
        if idx > last {
            return None;
        }
        Some(self.entries[(idx - self.offset) as usize].term)
    }

    /// Entries up to `index` (of term `term`) are durable: drop them from memory. Ignored when
    /// the entry at `index` is no longer of `term` (a new leader overwrote it after the `Ready`
    /// was handed out: the newer entries still need persisting) or is not unstable.
    pub fn stable_entries(&mut self, index: u64, term: u64) {
        if self.maybe_term(index) != Some(term) || index < self.offset {
            debug!(
                index,
                term,
                offset = self.offset,
                "ignore stale stable_entries"
            );
            return;
        }
        let n = (index + 1 - self.offset) as usize;
        let freed: u64 = self.entries[..n].iter().map(Entry::size_bytes).sum();
        self.entries.drain(..n);
        self.entries_size -= freed;
        self.offset = index + 1;
        self.assert_size();
    }

    /// The snapshot at `index` is durable: drop it.
    pub fn stable_snap(&mut self, index: u64) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.metadata.index == index)
        {
            self.snapshot = None;
        }
    }

    /// Replaces everything with `snap`: the log now starts after it.
    pub fn restore(&mut self, snap: Snapshot) {
        self.entries.clear();
        self.entries_size = 0;
        self.offset = snap.metadata.index + 1;
        self.snapshot = Some(snap);
    }

    /// Appends `ents`, first truncating any entries at or after `ents[0].index`.
    ///
    /// # Panics
    /// If `ents` would leave a gap after the last entry (a programmer error).
    pub fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        self.truncate_from(first.index);
        self.entries_size += ents.iter().map(Entry::size_bytes).sum::<u64>();
        self.entries.extend_from_slice(ents);
        self.assert_size();
    }

    /// [`Unstable::truncate_and_append`] taking the entries by value: when nothing unstable is
    /// left, `ents` becomes the unstable vector without copying.
    pub fn truncate_and_append_vec(&mut self, mut ents: Vec<Entry>) {
        let Some(first) = ents.first() else { return };
        self.truncate_from(first.index);
        self.entries_size += ents.iter().map(Entry::size_bytes).sum::<u64>();
        if self.entries.is_empty() {
            self.entries = ents;
        } else {
            self.entries.append(&mut ents);
        }
        self.assert_size();
    }

    /// [`Unstable::truncate_and_append`] of one entry, by value.
    pub fn truncate_and_append_one(&mut self, e: Entry) {
        self.truncate_from(e.index);
        self.entries_size += e.size_bytes();
        self.entries.push(e);
        self.assert_size();
    }

    /// Drops the entries at or after `after` before an append starting there.
    ///
    /// # Panics
    /// If `after` would leave a gap after the last entry (a programmer error).
    fn truncate_from(&mut self, after: u64) {
        let end = self.offset + self.entries.len() as u64;
        if after == end {
            // The common case: a pure append.
            return;
        }
        if after < end {
            if after <= self.offset {
                // Everything unstable is replaced; the log restarts at `after`.
                debug!(offset = after, "replace unstable entries");
                self.offset = after;
                self.entries.clear();
                self.entries_size = 0;
            } else {
                debug!(truncate_to = after, "truncate unstable entries");
                let keep = (after - self.offset) as usize;
                let freed: u64 = self.entries[keep..].iter().map(Entry::size_bytes).sum();
                self.entries.truncate(keep);
                self.entries_size -= freed;
            }
        } else {
            assert_eq!(
                after,
                end,
                "unstable append at {after} leaves a gap after {}",
                end.wrapping_sub(1)
            );
        }
    }

    /// The unstable entries in `[lo, hi)`.
    ///
    /// # Panics
    /// If the range is not within the unstable entries.
    pub fn slice(&self, lo: u64, hi: u64) -> &[Entry] {
        let upper = self.offset + self.entries.len() as u64;
        assert!(lo <= hi, "invalid unstable slice [{lo}, {hi})");
        assert!(
            self.offset <= lo && hi <= upper,
            "unstable slice [{lo}, {hi}) out of bounds [{}, {upper})",
            self.offset
        );
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
    }

    fn assert_size(&self) {
        debug_assert_eq!(
            self.entries_size,
            self.entries.iter().map(Entry::size_bytes).sum::<u64>()
        );
        debug_assert!(self
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == self.offset + i as u64));
    }
}

//! Region splits: at a log index of the parent, every key from the split key on leaves the
//! parent for a new child region.
//!
//! # Design: moved values are rewritten under the child's id
//! Every value record names the region it was written for, and reads and compaction check it
//! (a misdirected or stale location never returns another region's data; compaction copies a
//! record forward only if the region it names still points at it). A split keeps that rule
//! whole by *rewriting* each moved value as a new record of the child (read in batches through
//! [`StateReader::read_values`](super::StateReader::read_values), a few coalesced device reads
//! per batch; values still in the write buffer come from memory). The parent's old records
//! become garbage, reclaimed by compaction like any overwritten value.
//!
//! The alternative, keeping the old records and letting a region also own the records of its
//! ancestors (an owner lineage), makes a split O(moved keys) instead of O(moved bytes), but
//! every reader and compaction would then have to resolve which live region owns a record
//! named after a split (or merged, or removed) ancestor, and the lineage would have to be
//! checkpointed and handed along with snapshots. Splits are rare; rewriting costs the bytes of
//! half a region once, so it is the simpler safe choice.
//!
//! # Atomicity and replay
//! The rewrite is staged in an index of its own; the parent changes only once every moved
//! value is rewritten. A failure before that (a full partition, an I/O error) releases the
//! staged records and leaves the parent as it was. The parent's applied index, term and
//! metadata, its shrunken index and the child are switched in together, and a checkpoint
//! clones every region at one instant, so a checkpoint holds either the parent before the split
//! (and no child) or both halves after it. A crash before a checkpoint that includes the split
//! therefore reopens at the parent before it, and replaying the parent's log repeats the split
//! with the same result. A split at or below the parent's applied index is a replay and does
//! nothing ([`SplitOutcome::AlreadyApplied`]).
//!
//! If the child already exists (its snapshot was installed before the parent applied the
//! split), the child's data is newer than the parent's copy: the parent's keys from the split
//! key on are dropped instead of moved.

use std::ops::Bound;

use bytes::Bytes;

use super::index::{Key, RegionIndex};
use super::store::Region;
use super::{RegionState, StateStore, ValueLoc};
use crate::error::{EngineError, Result};

/// Bytes of value records one rewrite batch reads at most (bounds the memory of a split).
const MOVE_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Keys one rewrite batch reads at most.
const MOVE_BATCH_KEYS: usize = 4096;

/// What [`StateStore::split_region`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitOutcome {
    /// The keys from the split key on were rewritten under the new child region.
    Moved {
        /// Keys moved.
        keys: u64,
        /// Bytes of value records written for them.
        bytes: u64,
    },
    /// The child existed already (installed from a snapshot): the parent's keys from the split
    /// key on were dropped.
    ChildExisted {
        /// Keys dropped from the parent.
        dropped_keys: u64,
    },
    /// The split's index is at or below the parent's applied index (a replay): nothing changed.
    AlreadyApplied,
}

impl StateStore {
    /// Splits region `parent` at its log index `index` (term `term`): every key `>= split_key`
    /// moves to the new region `child.region_id`, created with `child`'s applied index, term,
    /// configuration and metadata and a copy of the parent's client sessions (`child.sessions`
    /// is replaced: a retry of a command the parent applied must be refused by both halves);
    /// the parent's applied index and term become `index`/`term` and its metadata
    /// `parent_meta`, atomically with the move. If the child already exists
    /// the parent's keys `>= split_key` are dropped instead. A replay (`index <=` the parent's
    /// applied index) does nothing. On an error nothing changed. Cost: the moved values are
    /// rewritten (see the module docs of [`super::split`]).
    pub fn split_region(
        &mut self,
        parent: u64,
        index: u64,
        term: u64,
        split_key: &[u8],
        child: RegionState,
        parent_meta: Bytes,
    ) -> Result<SplitOutcome> {
        let p = self.region(parent)?;
        if index <= p.state.applied_index {
            return Ok(SplitOutcome::AlreadyApplied);
        }
        if child.region_id == parent {
            return Err(EngineError::StateRegionExists { region_id: parent });
        }
        let range = (Bound::Included(split_key), Bound::Unbounded);
        let moved: Vec<(Key, ValueLoc)> = p
            .index
            .range::<_, [u8]>(range)
            .map(|(k, loc)| (k.clone(), *loc))
            .collect();
        let child_id = child.region_id;
        let parent_sessions = p.state.sessions.clone();
        let outcome = if self.regions.contains_key(&child_id) {
            SplitOutcome::ChildExisted {
                dropped_keys: moved.len() as u64,
            }
        } else {
            let index = self.rewrite(parent, child_id, &moved)?;
            let bytes = index.values().map(|l| l.len as u64).sum();
            let keys = index.len() as u64;
            let mut child = child;
            child.sessions = parent_sessions;
            self.regions.insert(
                child_id,
                Region {
                    state: child,
                    index,
                },
            );
            SplitOutcome::Moved { keys, bytes }
        };
        let p = self.region_mut(parent)?;
        for (k, _) in &moved {
            p.index.remove(k.as_bytes());
        }
        p.state.applied_index = index;
        p.state.applied_term = term;
        p.state.meta = parent_meta;
        for (_, loc) in &moved {
            self.table.add_live(loc.segment, -(loc.len as i64));
        }
        tracing::debug!(device = %self.config.device_label, region = parent, child = child_id,
            index, ?outcome, "region split");
        Ok(outcome)
    }

    /// Rewrites the values of `moved` (keys of `parent`) as records of `child_id`; returns
    /// their new index. On an error the records written are released and nothing refers to
    /// them.
    fn rewrite(
        &mut self,
        parent: u64,
        child_id: u64,
        moved: &[(Key, ValueLoc)],
    ) -> Result<RegionIndex> {
        let mut index = RegionIndex::new();
        let mut rest = moved;
        while !rest.is_empty() {
            let n = batch_len(rest);
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            if let Err(e) = self.rewrite_batch(parent, child_id, batch, &mut index) {
                self.release(&index);
                return Err(e);
            }
        }
        Ok(index)
    }

    fn rewrite_batch(
        &mut self,
        parent: u64,
        child_id: u64,
        batch: &[(Key, ValueLoc)],
        index: &mut RegionIndex,
    ) -> Result<()> {
        let values = self.read_batch(parent, batch)?;
        for ((k, _), v) in batch.iter().zip(values) {
            let loc = self.append_value(child_id, k.as_bytes(), &v)?;
            self.table.add_live(loc.segment, loc.len as i64);
            index.insert(k.clone(), loc);
        }
        Ok(())
    }

    /// The values of `batch` (all of `region_id`), in its order: the ones still in the
    /// writer's memory one by one, the rest with one batched read.
    fn read_batch(&self, region_id: u64, batch: &[(Key, ValueLoc)]) -> Result<Vec<Bytes>> {
        let on_device: Vec<(ValueLoc, &[u8])> = batch
            .iter()
            .filter(|(_, loc)| !self.in_memory(*loc))
            .map(|(k, loc)| (*loc, k.as_bytes()))
            .collect();
        let mut read = self.reader.read_values(region_id, &on_device)?.into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for (k, loc) in batch {
            let v = if self.in_memory(*loc) {
                self.read_value(*loc, region_id, k.as_bytes())?
            } else {
                read.next().ok_or(EngineError::StateBusy {
                    what: "a batched read returned fewer values than asked",
                })?
            };
            out.push(v);
        }
        Ok(out)
    }
}

/// How many of `rest`'s first entries make one batch (at least one).
fn batch_len(rest: &[(Key, ValueLoc)]) -> usize {
    let mut bytes = 0u64;
    let mut n = 0;
    for (_, loc) in rest.iter().take(MOVE_BATCH_KEYS) {
        if n > 0 && bytes + loc.len as u64 > MOVE_BATCH_BYTES {
            break;
        }
        bytes += loc.len as u64;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{format, FormatOptions};
    use crate::io::sim::{FaultConfig, SimIo};
    use crate::io::Geometry;
    use crate::layout::{KIB, MIB};
    use crate::state::{Command, Op, StateConfig};

    fn store() -> StateStore {
        let geo = Geometry {
            block_size: 4096,
            capacity_bytes: MIB + 18 * 64 * KIB,
        };
        let mut sim = SimIo::new(3, geo, FaultConfig::none());
        let mut opts = FormatOptions::new("sim");
        opts.block_size = 4096;
        opts.segment_size_bytes = 64 * KIB;
        opts.log_segment_count = Some(2);
        let sb = format(&mut sim, &opts).expect("format");
        let (w, r) = (Box::new(sim.share()), Box::new(sim.share()));
        StateStore::open(w, r, &sb, StateConfig::new("sim")).expect("open")
    }

    /// A moved value's old record still names the parent and its new one the child, so a
    /// location handed to the wrong region (misdirected, or stale from before the split) is
    /// refused by the read's region check instead of returning data.
    #[test]
    fn old_and_new_locations_are_refused_for_the_wrong_region() {
        let mut s = store();
        s.create_region(RegionState::new(1, raftlog::ConfState::default()))
            .unwrap();
        let put = |k: &str| Op::Put {
            key: Bytes::from(k.to_string()),
            value: Bytes::from(vec![7u8; 500]),
        };
        let cmd = Command {
            client_id: 1,
            sequence: 1,
            ops: vec![put("a"), put("n"), put("z")],
        };
        s.apply(1, 1, 1, &cmd).unwrap().unwrap();
        s.checkpoint().unwrap();
        let old = *s.regions[&1].index.get(&b"n"[..]).unwrap();
        let child = RegionState::new(2, raftlog::ConfState::default());
        let out = s.split_region(1, 2, 1, b"m", child, Bytes::new()).unwrap();
        assert_eq!(
            out,
            SplitOutcome::Moved {
                keys: 2,
                bytes: 2 * 525
            }
        );
        s.checkpoint().unwrap();
        let new = *s.regions[&2].index.get(&b"n"[..]).unwrap();
        assert_ne!(old, new);
        let reader = s.reader();
        assert_eq!(reader.read_value(new, 2, b"n").unwrap().len(), 500);
        for (loc, region) in [(old, 2), (new, 1)] {
            let r = reader.read_value(loc, region, b"n");
            assert!(matches!(r, Err(EngineError::Corrupt { .. })), "{r:?}");
        }
        assert_eq!(s.get(1, b"n").unwrap(), None);
        assert_eq!(s.get(2, b"n").unwrap().unwrap().len(), 500);
    }
}

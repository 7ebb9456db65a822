//! [`RegionLog`]: one region's view of the shared log, implementing `raftlog::Storage`.
//!
//! Reads are served from the in-memory index; entries still in the tail cache never touch the
//! device. Older entries are read back synchronously from their blocks (verified against the
//! block checksums and the batch's sequence number, so a location whose segment was freed and
//! reused meanwhile answers `Compacted`, never wrong data).

use bytes::Bytes;
use raftlog::{Entry, RaftState, Snapshot, Storage, StorageError};

use super::index::{EntryLoc, Refusal};
use super::record::{decode_entry, ENTRY_HEADER_LEN};
use super::recovery::BlockReader;
use super::SharedRef;
use crate::error::EngineError;
use crate::layout::block::payload_capacity;

/// The Raft log of one region. Cheap to clone; all clones see the same log.
#[derive(Clone)]
pub struct RegionLog {
    shared: SharedRef,
    region_id: u64,
}

pub(crate) fn refused_error(region_id: u64, f: &Refusal) -> EngineError {
    EngineError::RegionRefused {
        region_id,
        first_index: f.first_index,
        last_index: f.last_index,
        detail: f.detail.clone(),
    }
}

fn storage_err(e: EngineError) -> raftlog::Error {
    raftlog::Error::Store(StorageError::Other(e.to_string()))
}

impl RegionLog {
    pub(crate) fn new(shared: SharedRef, region_id: u64) -> RegionLog {
        RegionLog { shared, region_id }
    }

    /// The region.
    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    /// The refusal, if recovery found this region's log damaged.
    pub fn refusal(&self) -> Option<Refusal> {
        self.shared.index().refusal(self.region_id).cloned()
    }

    /// The latest region metadata recorded.
    pub fn region_meta(&self) -> Option<Bytes> {
        self.shared
            .index()
            .region(self.region_id)
            .and_then(|r| r.meta.clone())
    }

    fn check(&self) -> raftlog::Result<()> {
        match self.refusal() {
            Some(f) => Err(storage_err(refused_error(self.region_id, &f))),
            None => Ok(()),
        }
    }

    /// Reads entries at `locs` (consecutive, starting at `first_index`) from the device.
    fn read_cold(&self, first_index: u64, locs: &[EntryLoc]) -> Result<Vec<Entry>, raftlog::Error> {
        let geo = self.shared.geometry;
        let bs = geo.block_size as u64;
        let cap = payload_capacity(bs as usize) as u64;
        let mut out = Vec::with_capacity(locs.len());
        let mut dev = self.shared.device();
        let mut reader = BlockReader::new(&mut dev, geo, self.shared.nonce, &self.shared.label);
        let mut i = 0;
        while i < locs.len() {
            // A run of entries of the same batch is read with one span of blocks.
            let batch = locs[i].batch_offset;
            let mut j = i;
            while j + 1 < locs.len() && locs[j + 1].batch_offset == batch {
                j += 1;
            }
            let start = locs[i].payload_pos as u64;
            let end = (locs[j].payload_pos + locs[j].encoded_len) as u64;
            let mut data = Vec::with_capacity((end - start) as usize);
            for b in start / cap..end.div_ceil(cap) {
                let (h, p) = match reader.block(batch + b * bs).map_err(storage_err)? {
                    Ok(x) => x,
                    Err(_) => return Err(StorageError::Compacted.into()),
                };
                if h.sequence != locs[i].sequence || h.block_index as u64 != b {
                    return Err(StorageError::Compacted.into());
                }
                let lo = start.saturating_sub(b * cap).min(p.len() as u64) as usize;
                let hi = (end - b * cap).min(p.len() as u64) as usize;
                data.extend_from_slice(&p[lo..hi]);
            }
            let data = Bytes::from(data);
            for (k, loc) in locs[i..=j].iter().enumerate() {
                let pos = (loc.payload_pos as u64 - start) as usize;
                let index = first_index + (i + k) as u64;
                let (e, _) = decode_entry(&data, pos, data.len(), index).map_err(|e| {
                    storage_err(EngineError::Corrupt {
                        what: "log entry",
                        offset: batch,
                        detail: e.to_string(),
                    })
                })?;
                out.push(e);
            }
            i = j + 1;
        }
        Ok(out)
    }
}

/// The end of `low..high` holding at most `max` bytes (by `Entry::size_bytes`, which the encoded
/// length gives exactly), but at least one entry.
fn size_limited_end(
    locs: &std::collections::VecDeque<EntryLoc>,
    first_index: u64,
    low: u64,
    high: u64,
    max: u64,
) -> u64 {
    let mut total = 0u64;
    for index in low..high {
        let loc = &locs[(index - first_index) as usize];
        total +=
            u64::from(loc.encoded_len) - ENTRY_HEADER_LEN as u64 + raftlog::ENTRY_OVERHEAD_BYTES;
        if total > max && index > low {
            return index;
        }
    }
    high
}

impl Storage for RegionLog {
    fn initial_state(&self) -> raftlog::Result<RaftState> {
        self.check()?;
        let ix = self.shared.index();
        Ok(ix
            .region(self.region_id)
            .map_or_else(RaftState::default, |r| RaftState {
                hard_state: r.hard_state,
                conf_state: r.conf_state.clone(),
            }))
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raftlog::Result<Vec<Entry>> {
        self.check()?;
        let (mut out, cold_locs, cold_first) = {
            let ix = self.shared.index();
            let Some(r) = ix.region(self.region_id) else {
                return if low >= high {
                    Ok(Vec::new())
                } else {
                    Err(StorageError::Unavailable.into())
                };
            };
            if low < r.first_index {
                return Err(StorageError::Compacted.into());
            }
            if high > r.last_index() + 1 {
                return Err(StorageError::Unavailable.into());
            }
            let high = match max_size {
                Some(max) => size_limited_end(&r.locs, r.first_index, low, high, max),
                None => high,
            };
            let cache_first = r.cache_first_index();
            let cold_end = high.min(cache_first).max(low);
            let cold: Vec<EntryLoc> = r
                .locs
                .range((low - r.first_index) as usize..(cold_end - r.first_index) as usize)
                .copied()
                .collect();
            let mut hot = Vec::new();
            let from = low.max(cache_first);
            if from < high {
                hot.extend(
                    r.cache
                        .range((from - cache_first) as usize..(high - cache_first) as usize)
                        .cloned(),
                );
            }
            (hot, cold, low)
        };
        if !cold_locs.is_empty() {
            let mut cold = self.read_cold(cold_first, &cold_locs)?;
            cold.append(&mut out);
            out = cold;
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raftlog::Result<u64> {
        self.check()?;
        let ix = self.shared.index();
        let Some(r) = ix.region(self.region_id) else {
            return if idx == 0 {
                Ok(0)
            } else {
                Err(StorageError::Unavailable.into())
            };
        };
        if idx + 1 < r.first_index {
            return Err(StorageError::Compacted.into());
        }
        r.term(idx).ok_or_else(|| StorageError::Unavailable.into())
    }

    fn first_index(&self) -> raftlog::Result<u64> {
        self.check()?;
        Ok(self
            .shared
            .index()
            .region(self.region_id)
            .map_or(1, |r| r.first_index))
    }

    fn last_index(&self) -> raftlog::Result<u64> {
        self.check()?;
        Ok(self
            .shared
            .index()
            .region(self.region_id)
            .map_or(0, |r| r.last_index()))
    }

    /// Snapshots are built by the snapshot worker (a later issue); until one exists the log
    /// answers `SnapshotTemporarilyUnavailable`, which makes Raft retry later.
    fn snapshot(&self, _request_index: u64) -> raftlog::Result<Snapshot> {
        self.check()?;
        Err(StorageError::SnapshotTemporarilyUnavailable.into())
    }
}

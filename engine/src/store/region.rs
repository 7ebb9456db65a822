//! Regions: a key range `[start_key, end_key)` replicated by one Raft group, its epoch and its
//! peers. The encoded form is drawn in `docs/FORMAT.md` ("Region metadata"); it is stored in the
//! log (`LogBatch::set_region_meta`), in the state store (`RegionState::meta`) and so travels in
//! snapshots, and is sent to clients.

use bytes::{Bytes, BytesMut};

use super::wire::{put_bytes, put_u32, put_u64, Cursor};
use super::WireError;

/// Version byte of the region-metadata encoding.
pub const REGION_META_VERSION: u8 = 1;

/// Whether a peer votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// Counts in quorums.
    Voter,
    /// Receives the log but does not vote.
    Learner,
}

/// One replica of a region: the Raft node id (`peer_id`, unique in the cluster) and the store
/// holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Raft node id, unique across the cluster.
    pub peer_id: u64,
    /// The store the peer lives on.
    pub store_id: u64,
    /// Voter or learner.
    pub role: PeerRole,
}

/// A region's epoch. `conf_version` grows with every membership change, `version` with every
/// split; a request carrying an older epoch is refused with `EpochNotMatch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch {
    /// Bumped by each applied membership change.
    pub conf_version: u64,
    /// Bumped by each applied split.
    pub version: u64,
}

/// Everything a store and a client need to know about a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionMeta {
    /// The region id, unique in the cluster.
    pub region_id: u64,
    /// First key of the range (inclusive). Empty: the start of the key space.
    pub start_key: Bytes,
    /// End of the range (exclusive). Empty: the end of the key space.
    pub end_key: Bytes,
    /// The epoch.
    pub epoch: Epoch,
    /// The peers, voters and learners.
    pub peers: Vec<Peer>,
}

impl RegionMeta {
    /// Whether `key` falls in `[start_key, end_key)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_ref() && (self.end_key.is_empty() || key < self.end_key.as_ref())
    }

    /// Whether the range `[start, end)` (`end` empty: unbounded) lies inside the region.
    pub fn contains_range(&self, start: &[u8], end: &[u8]) -> bool {
        if !self.contains(start) {
            return false;
        }
        match (self.end_key.is_empty(), end.is_empty()) {
            (true, _) => true,
            (false, true) => false,
            (false, false) => end <= self.end_key.as_ref(),
        }
    }

    /// Whether the two regions' key ranges share a key.
    pub fn overlaps(&self, other: &RegionMeta) -> bool {
        let below = |end: &Bytes, start: &Bytes| !end.is_empty() && end.as_ref() <= start.as_ref();
        !below(&self.end_key, &other.start_key) && !below(&other.end_key, &self.start_key)
    }

    /// The peer with `peer_id`.
    pub fn peer(&self, peer_id: u64) -> Option<&Peer> {
        self.peers.iter().find(|p| p.peer_id == peer_id)
    }

    /// This region's peer on `store_id`.
    pub fn peer_on_store(&self, store_id: u64) -> Option<&Peer> {
        self.peers.iter().find(|p| p.store_id == store_id)
    }

    /// The encoded form (see `docs/FORMAT.md`), ending with a crc32 of what precedes it.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(
            64 + self.start_key.len() + self.end_key.len() + 17 * self.peers.len(),
        );
        out.extend_from_slice(&[REGION_META_VERSION]);
        put_u64(&mut out, self.region_id);
        put_bytes(&mut out, &self.start_key);
        put_bytes(&mut out, &self.end_key);
        put_u64(&mut out, self.epoch.conf_version);
        put_u64(&mut out, self.epoch.version);
        put_u32(&mut out, self.peers.len() as u32);
        for p in &self.peers {
            put_u64(&mut out, p.peer_id);
            put_u64(&mut out, p.store_id);
            out.extend_from_slice(&[match p.role {
                PeerRole::Voter => 0,
                PeerRole::Learner => 1,
            }]);
        }
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out.freeze()
    }

    /// Decodes [`encode`](Self::encode)'s output; never panics.
    pub fn decode(b: &Bytes) -> Result<RegionMeta, WireError> {
        let body = checked_body(b)?;
        let mut c = Cursor::new(&body);
        let version = c.u8()?;
        if version != REGION_META_VERSION {
            return Err(WireError::UnknownVersion { version });
        }
        let region_id = c.u64()?;
        let start_key = c.bytes()?;
        let end_key = c.bytes()?;
        let epoch = Epoch {
            conf_version: c.u64()?,
            version: c.u64()?,
        };
        let count = c.u32()? as usize;
        if count > c.remaining() / 17 {
            return Err(WireError::Count { count });
        }
        let mut peers = Vec::with_capacity(count);
        for _ in 0..count {
            let peer_id = c.u64()?;
            let store_id = c.u64()?;
            let role = match c.u8()? {
                0 => PeerRole::Voter,
                1 => PeerRole::Learner,
                tag => {
                    return Err(WireError::UnknownTag {
                        what: "peer role",
                        tag,
                    })
                }
            };
            peers.push(Peer {
                peer_id,
                store_id,
                role,
            });
        }
        c.finish()?;
        Ok(RegionMeta {
            region_id,
            start_key,
            end_key,
            epoch,
            peers,
        })
    }
}

/// The regions of a new cluster: one per range between `split_keys` (ascending), each with a
/// voter on every store of `store_ids`. Ids are deterministic, so every store bootstraps the
/// same regions on its own: region ids `1..=n`, peer ids `region_id << 20 | store_id` (store
/// ids must stay below 2^20).
pub fn initial_regions(store_ids: &[u64], split_keys: &[Bytes]) -> Vec<RegionMeta> {
    let n = split_keys.len() + 1;
    (0..n)
        .map(|i| {
            let region_id = i as u64 + 1;
            RegionMeta {
                region_id,
                start_key: if i == 0 {
                    Bytes::new()
                } else {
                    split_keys[i - 1].clone()
                },
                end_key: split_keys.get(i).cloned().unwrap_or_default(),
                epoch: Epoch {
                    conf_version: 1,
                    version: 1,
                },
                peers: store_ids
                    .iter()
                    .map(|s| Peer {
                        peer_id: (region_id << 20) | s,
                        store_id: *s,
                        role: PeerRole::Voter,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Splits off and checks the trailing crc32; returns the body it covers.
pub(crate) fn checked_body(b: &Bytes) -> Result<Bytes, WireError> {
    if b.len() < 4 {
        return Err(WireError::Truncated {
            offset: b.len(),
            needed: 4 - b.len(),
        });
    }
    let split = b.len() - 4;
    let stored = u32::from_le_bytes([b[split], b[split + 1], b[split + 2], b[split + 3]]);
    let actual = crc32fast::hash(&b[..split]);
    if stored != actual {
        return Err(WireError::Checksum {
            expected: stored,
            actual,
        });
    }
    Ok(b.slice(..split))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> RegionMeta {
        RegionMeta {
            region_id: 7,
            start_key: Bytes::from_static(b"b"),
            end_key: Bytes::from_static(b"m"),
            epoch: Epoch {
                conf_version: 3,
                version: 2,
            },
            peers: vec![
                Peer {
                    peer_id: 70,
                    store_id: 1,
                    role: PeerRole::Voter,
                },
                Peer {
                    peer_id: 71,
                    store_id: 2,
                    role: PeerRole::Learner,
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_ranges() {
        let m = sample();
        assert_eq!(RegionMeta::decode(&m.encode()).unwrap(), m);
        assert!(m.contains(b"b") && m.contains(b"lzz") && !m.contains(b"m") && !m.contains(b"a"));
        assert!(
            m.contains_range(b"c", b"m")
                && !m.contains_range(b"c", b"")
                && !m.contains_range(b"c", b"n")
        );
    }

    #[test]
    fn overlaps_is_symmetric_and_treats_empty_end_as_unbounded() {
        let r = |a: &'static str, b: &'static str| RegionMeta {
            start_key: Bytes::from_static(a.as_bytes()),
            end_key: Bytes::from_static(b.as_bytes()),
            ..sample()
        };
        let cases = [
            (r("a", "c"), r("b", "d"), true),
            (r("a", "c"), r("c", "d"), false),
            (r("a", ""), r("x", "y"), true),
            (r("", "b"), r("b", ""), false),
            (r("", ""), r("m", "n"), true),
            (r("d", "e"), r("a", "b"), false),
        ];
        for (x, y, want) in cases {
            assert_eq!(x.overlaps(&y), want, "{x:?} {y:?}");
            assert_eq!(y.overlaps(&x), want, "{y:?} {x:?}");
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let enc = sample().encode();
        for i in 0..enc.len() * 8 {
            let mut v = enc.to_vec();
            v[i / 8] ^= 1 << (i % 8);
            assert!(RegionMeta::decode(&Bytes::from(v)).is_err(), "bit {i}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RegionMeta::decode(&Bytes::from(data));
        }
    }
}

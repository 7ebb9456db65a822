//! The region cache: which region holds a key, its epoch, its peers, which store leads it,
//! and at which node address each store is served.
//!
//! Entries are keyed by start key and never overlap. Newer knowledge replaces older: a region
//! description is taken unless the cache already holds a newer epoch for any part of its
//! range (a split bumps `version`, a membership change `conf_version`). The cache is only a
//! hint: every request carries the epoch it was routed with, and the node refuses a stale one
//! with the current regions, which are fed back here.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::Bytes;
use transport::proto::{Epoch, PeerInfo, RegionInfo};

/// A region as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CachedRegion {
    pub region_id: u64,
    pub start: Bytes,
    /// Exclusive; empty: the end of the key space.
    pub end: Bytes,
    pub epoch: Epoch,
    pub peers: Vec<PeerInfo>,
    /// The store believed to lead the region, if any.
    pub leader_store: Option<u64>,
}

impl CachedRegion {
    fn from_info(info: &RegionInfo) -> CachedRegion {
        CachedRegion {
            region_id: info.region_id,
            start: info.start.clone(),
            end: info.end.clone(),
            epoch: info.epoch,
            peers: info.peers.clone(),
            leader_store: info.leader.map(|p| p.store_id),
        }
    }

    /// Whether `key` is in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && (self.end.is_empty() || key < self.end.as_ref())
    }

    fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        let starts_before_other_ends = end.is_empty() || self.start.as_ref() < end;
        let other_starts_before_end = self.end.is_empty() || start < self.end.as_ref();
        starts_before_other_ends && other_starts_before_end
    }

    fn has_store(&self, store_id: u64) -> bool {
        self.peers.iter().any(|p| p.store_id == store_id)
    }
}

/// Whether epoch `a` is older than `b` in any component.
fn older(a: Epoch, b: Epoch) -> bool {
    a.version < b.version || a.conf_version < b.conf_version
}

/// Where to send a request for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub region_id: u64,
    pub epoch: Epoch,
    pub start: Bytes,
    pub end: Bytes,
    /// The leader's store.
    pub store_id: u64,
    /// The node serving that store.
    pub addr: SocketAddr,
}

/// What the cache knows about the region of a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No cached region holds the key.
    Unknown,
    /// The region is known but not its leader (or not the leader store's address).
    NoLeader { region_id: u64 },
    /// Ready to send.
    Route(Route),
}

/// The cache itself; callers wrap it in a lock and never hold the lock across an await.
#[derive(Debug, Default)]
pub(crate) struct RegionCache {
    by_start: BTreeMap<Bytes, CachedRegion>,
    starts: HashMap<u64, Bytes>,
    stores: HashMap<u64, SocketAddr>,
    /// Stores whose node left a request unanswered past its deadline, and since when: not
    /// routed to until their node answers a status again (see [`RegionCache::suspect`]).
    silent: HashMap<u64, Instant>,
}

/// How long a silent store stays out of routing if nothing is heard of it: a safety net, as
/// a refresh asks every node and one that answers is trusted again at once.
const SILENT_FOR_MAX: Duration = Duration::from_secs(10);

impl RegionCache {
    /// The cached region holding `key`.
    pub fn region_of(&self, key: &[u8]) -> Option<&CachedRegion> {
        let upto = (Bound::Unbounded, Bound::Included(key));
        let (_, r) = self.by_start.range::<[u8], _>(upto).next_back()?;
        r.contains(key).then_some(r)
    }

    /// The cached region with this id.
    pub fn region(&self, region_id: u64) -> Option<&CachedRegion> {
        self.starts
            .get(&region_id)
            .and_then(|s| self.by_start.get(s))
    }

    /// Where to send a request for `key`.
    pub fn lookup(&self, key: &[u8]) -> Lookup {
        let Some(r) = self.region_of(key) else {
            return Lookup::Unknown;
        };
        let leader = r
            .leader_store
            .filter(|s| !self.is_silent(*s))
            .and_then(|s| self.stores.get(&s).map(|a| (s, *a)));
        match leader {
            Some((store_id, addr)) => Lookup::Route(Route {
                region_id: r.region_id,
                epoch: r.epoch,
                start: r.start.clone(),
                end: r.end.clone(),
                store_id,
                addr,
            }),
            None => Lookup::NoLeader {
                region_id: r.region_id,
            },
        }
    }

    /// Takes a region description unless the cache knows a newer epoch for part of its range.
    /// A description without a leader keeps the leader already cached for the same region if
    /// that store still has a peer. Returns whether it was taken.
    pub fn insert(&mut self, info: &RegionInfo) -> bool {
        let overlapping: Vec<u64> = self
            .by_start
            .values()
            .filter(|r| r.overlaps(&info.start, &info.end) || r.region_id == info.region_id)
            .map(|r| r.region_id)
            .collect();
        let mut new = CachedRegion::from_info(info);
        for id in &overlapping {
            let Some(old) = self.region(*id) else {
                continue;
            };
            let stale = if old.region_id == info.region_id {
                older(info.epoch, old.epoch)
            } else {
                old.epoch.version > info.epoch.version
            };
            if stale {
                return false;
            }
            if old.region_id == info.region_id && new.leader_store.is_none() {
                new.leader_store = old.leader_store.filter(|s| new.has_store(*s));
            }
        }
        for id in overlapping {
            self.remove(id);
        }
        self.starts.insert(new.region_id, new.start.clone());
        self.by_start.insert(new.start.clone(), new);
        true
    }

    /// Records (or forgets, with `None`) the leader of a region.
    pub fn set_leader(&mut self, region_id: u64, store_id: Option<u64>) {
        if let Some(r) = self
            .starts
            .get(&region_id)
            .and_then(|s| self.by_start.get_mut(s))
        {
            r.leader_store = store_id.filter(|s| r.has_store(*s));
        }
    }

    /// Forgets a region.
    pub fn remove(&mut self, region_id: u64) {
        if let Some(start) = self.starts.remove(&region_id) {
            self.by_start.remove(&start);
        }
    }

    /// Records the node address serving a store.
    pub fn set_store_addr(&mut self, store_id: u64, addr: SocketAddr) {
        self.stores.insert(store_id, addr);
    }

    /// Takes `store_id` out of routing: its node left a request unanswered until the call's
    /// deadline. A killed node closes no connection, and the other nodes go on naming it the
    /// leader until they elect another (an election timeout or more), so without this every
    /// call meanwhile would wait out its deadline on it. Regions it leads look leaderless,
    /// and calls poll the nodes for the new leader instead.
    pub fn suspect(&mut self, store_id: u64) {
        self.silent.entry(store_id).or_insert_with(Instant::now);
    }

    /// The node serving `store_id` answered: route to it again.
    pub fn heard_from(&mut self, store_id: u64) {
        self.silent.remove(&store_id);
    }

    fn is_silent(&self, store_id: u64) -> bool {
        self.silent
            .get(&store_id)
            .is_some_and(|since| since.elapsed() < SILENT_FOR_MAX)
    }

    /// Every node address known.
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.stores.values().copied().collect();
        v.sort();
        v.dedup();
        v
    }

    /// Number of cached regions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_start.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(store_id: u64) -> PeerInfo {
        PeerInfo {
            peer_id: store_id * 10,
            store_id,
            learner: false,
        }
    }

    fn region(id: u64, start: &str, end: &str, version: u64, leader: Option<u64>) -> RegionInfo {
        RegionInfo {
            region_id: id,
            start: Bytes::copy_from_slice(start.as_bytes()),
            end: Bytes::copy_from_slice(end.as_bytes()),
            epoch: Epoch {
                conf_version: 1,
                version,
            },
            peers: vec![peer(1), peer(2), peer(3)],
            leader: leader.map(peer),
        }
    }

    fn cache_with_stores() -> RegionCache {
        let mut c = RegionCache::default();
        for s in 1..=3u16 {
            c.set_store_addr(u64::from(s), ([127, 0, 0, 1], 7000 + s).into());
        }
        c
    }

    #[test]
    fn lookup_finds_the_range_holding_the_key() {
        let mut c = cache_with_stores();
        assert!(c.insert(&region(1, "", "m", 2, Some(1))));
        assert!(c.insert(&region(2, "m", "t", 2, Some(2))));
        assert!(c.insert(&region(3, "t", "", 2, None)));
        let id = |k: &str| c.region_of(k.as_bytes()).map(|r| r.region_id);
        assert_eq!(id(""), Some(1));
        assert_eq!(id("a"), Some(1));
        assert_eq!(id("l\u{7f}"), Some(1));
        assert_eq!(id("m"), Some(2));
        assert_eq!(id("s"), Some(2));
        assert_eq!(id("t"), Some(3));
        assert_eq!(id("zzzz"), Some(3));
        match c.lookup(b"n") {
            Lookup::Route(r) => {
                assert_eq!((r.region_id, r.store_id), (2, 2));
                assert_eq!(r.addr, ([127, 0, 0, 1], 7002).into());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.lookup(b"x"), Lookup::NoLeader { region_id: 3 });
    }

    #[test]
    fn a_silent_store_is_not_routed_to_until_its_node_answers() {
        let mut c = cache_with_stores();
        c.insert(&region(1, "", "m", 2, Some(1)));
        c.insert(&region(2, "m", "", 2, Some(2)));
        c.suspect(1);
        assert_eq!(c.lookup(b"a"), Lookup::NoLeader { region_id: 1 });
        assert!(matches!(c.lookup(b"n"), Lookup::Route(r) if r.store_id == 2));
        // The other nodes still name it leader (no election yet): still not routed to.
        c.insert(&region(1, "", "m", 2, Some(1)));
        assert_eq!(c.lookup(b"a"), Lookup::NoLeader { region_id: 1 });
        // A new leader elected elsewhere is routed to at once.
        c.set_leader(1, Some(3));
        assert!(matches!(c.lookup(b"a"), Lookup::Route(r) if r.store_id == 3));
        // The silent node answered again: it may lead again.
        c.set_leader(1, Some(1));
        assert_eq!(c.lookup(b"a"), Lookup::NoLeader { region_id: 1 });
        c.heard_from(1);
        assert!(matches!(c.lookup(b"a"), Lookup::Route(r) if r.store_id == 1));
    }

    #[test]
    fn gaps_and_unknown_stores_are_not_routed() {
        let mut c = RegionCache::default();
        c.insert(&region(2, "m", "t", 2, Some(2)));
        assert_eq!(c.lookup(b"a"), Lookup::Unknown);
        assert_eq!(c.lookup(b"u"), Lookup::Unknown);
        // The leader's store has no known address yet.
        assert_eq!(c.lookup(b"n"), Lookup::NoLeader { region_id: 2 });
        c.set_store_addr(2, ([127, 0, 0, 1], 1).into());
        assert!(matches!(c.lookup(b"n"), Lookup::Route(_)));
    }

    #[test]
    fn a_split_replaces_the_parent_and_stale_news_is_ignored() {
        let mut c = cache_with_stores();
        c.insert(&region(1, "", "", 1, Some(1)));
        // The split's two halves (version bumped) replace the parent.
        assert!(c.insert(&region(1, "", "m", 2, None)));
        assert!(c.insert(&region(7, "m", "", 2, Some(3))));
        assert_eq!(c.len(), 2);
        // The leader of region 1 survives a description without one.
        assert_eq!(c.region(1).and_then(|r| r.leader_store), Some(1));
        // A late answer describing the unsplit parent is older: ignored.
        assert!(!c.insert(&region(1, "", "", 1, Some(2))));
        assert_eq!(c.region_of(b"z").map(|r| r.region_id), Some(7));
        assert_eq!(c.region(1).map(|r| r.end.clone()), Some(Bytes::from("m")));
    }

    #[test]
    fn invalidation_forgets_regions_and_leaders() {
        let mut c = cache_with_stores();
        c.insert(&region(1, "", "m", 2, Some(1)));
        c.insert(&region(2, "m", "", 2, Some(2)));
        c.set_leader(1, None);
        assert_eq!(c.lookup(b"a"), Lookup::NoLeader { region_id: 1 });
        c.set_leader(1, Some(3));
        assert!(matches!(c.lookup(b"a"), Lookup::Route(r) if r.store_id == 3));
        // A store without a peer in the region is no leader.
        c.set_leader(1, Some(9));
        assert_eq!(c.lookup(b"a"), Lookup::NoLeader { region_id: 1 });
        c.remove(2);
        assert_eq!(c.lookup(b"n"), Lookup::Unknown);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_membership_change_of_the_same_region_replaces_it() {
        let mut c = cache_with_stores();
        c.insert(&region(1, "", "", 2, Some(1)));
        let mut changed = region(1, "", "", 2, None);
        changed.epoch.conf_version = 2;
        changed.peers = vec![peer(2), peer(3)];
        assert!(c.insert(&changed));
        // Store 1 left the region: its leadership is forgotten.
        assert_eq!(c.lookup(b"k"), Lookup::NoLeader { region_id: 1 });
        let mut old = region(1, "", "", 2, Some(1));
        old.epoch.conf_version = 1;
        assert!(!c.insert(&old));
    }
}

//! The leader's bookkeeping of the group: the active configuration, each peer's replication
//! [`Progress`], and the votes of an election in progress.

mod inflights;
mod progress;
mod state;
#[cfg(test)]
mod tests;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;

pub use inflights::Inflights;
pub use progress::Progress;
pub use state::ProgressState;

use crate::confchange::{MapChange, MapChangeType};
use crate::quorum::{AckedIndexer, JointConfig, VoteResult};
use crate::types::ConfState;

/// Map from peer id to its progress. Hashing is deterministic (fixed keys) so that iteration
/// order, and with it the order of outgoing messages, is the same on every run with the same
/// inputs: raftlog promises determinism for seeded simulation.
pub type ProgressMap = HashMap<u64, Progress, BuildHasherDefault<DefaultHasher>>;

/// Up to this many peers, [`ProgressTracker::get`] scans the map instead of hashing the id:
/// cheaper for the small groups Raft runs, and the map (with its iteration order) is unchanged.
const SCAN_LEN_MAX: usize = 8;

/// A group membership: voters (possibly joint) and learners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    /// The voters, incoming and (while joint) outgoing.
    pub voters: JointConfig,
    /// Peers that receive the log but do not vote. Invariant: disjoint from both voter halves.
    pub learners: BTreeSet<u64>,
    /// Outgoing voters being demoted: they become learners when the joint state is left.
    /// Invariant: a subset of `voters.outgoing`, disjoint from `learners`.
    pub learners_next: BTreeSet<u64>,
    /// Leave the joint state automatically once it is committed.
    pub auto_leave: bool,
}

impl Configuration {
    /// A simple configuration of these voters and learners.
    pub fn new(voters: BTreeSet<u64>, learners: BTreeSet<u64>) -> Configuration {
        Configuration {
            voters: JointConfig::new(voters),
            learners,
            ..Default::default()
        }
    }

    /// The configuration as a [`ConfState`] (ids in ascending order).
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }
}

impl AckedIndexer for ProgressMap {
    fn acked_index(&self, voter: u64) -> Option<u64> {
        if self.len() <= SCAN_LEN_MAX {
            return self
                .iter()
                .find(|(p, _)| **p == voter)
                .map(|(_, pr)| pr.matched);
        }
        self.get(&voter).map(|p| p.matched)
    }
}

/// The configuration, every peer's progress and the current election's votes.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    // Invariant: holds a progress for every voter and learner of `conf`, and nothing else.
    progress: ProgressMap,
    conf: Configuration,
    votes: HashMap<u64, bool>,
    max_inflight_msgs: usize,
    max_inflight_bytes: u64,
}

impl ProgressTracker {
    /// An empty tracker; new peers get an inflight window of `max_inflight_msgs` messages and
    /// `max_inflight_bytes` bytes (0: no byte cap).
    pub fn new(max_inflight_msgs: usize, max_inflight_bytes: u64) -> ProgressTracker {
        assert!(max_inflight_msgs > 0, "max_inflight_msgs must be positive");
        ProgressTracker {
            progress: ProgressMap::default(),
            conf: Configuration::default(),
            votes: HashMap::new(),
            max_inflight_msgs,
            max_inflight_bytes,
        }
    }

    /// The active configuration.
    pub fn conf(&self) -> &Configuration {
        &self.conf
    }

    /// The active configuration as a [`ConfState`].
    pub fn conf_state(&self) -> ConfState {
        self.conf.to_conf_state()
    }

    /// Whether the group is one voter (not joint): it commits and wins elections alone.
    pub fn is_singleton(&self) -> bool {
        self.conf.voters.is_singleton()
    }

    /// The progress of peer `id`.
    pub fn get(&self, id: u64) -> Option<&Progress> {
        if self.progress.len() <= SCAN_LEN_MAX {
            return self
                .progress
                .iter()
                .find(|(p, _)| **p == id)
                .map(|(_, pr)| pr);
        }
        self.progress.get(&id)
    }

    /// The progress of peer `id`, mutable.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Progress> {
        if self.progress.len() <= SCAN_LEN_MAX {
            return self
                .progress
                .iter_mut()
                .find(|(p, _)| **p == id)
                .map(|(_, pr)| pr);
        }
        self.progress.get_mut(&id)
    }

    /// Every peer's progress (voters and learners), in a deterministic order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Progress)> {
        self.progress.iter()
    }

    /// Every peer's progress, mutable, in a deterministic order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Progress)> {
        self.progress.iter_mut()
    }

    /// The progress map.
    pub fn progress(&self) -> &ProgressMap {
        &self.progress
    }

    /// The highest index a (joint) quorum of voters has matched.
    pub fn committed(&self) -> u64 {
        self.conf.voters.committed_index(&self.progress)
    }

    /// Whether a quorum of voters was active since the last call, counting `perspective_of`
    /// (the leader) as active. Then marks every peer but the leader inactive for the next round.
    pub fn quorum_recently_active(&mut self, perspective_of: u64) -> bool {
        let progress = &self.progress;
        let result = self.conf.voters.vote_result(|id| {
            progress
                .get(&id)
                .map(|p| id == perspective_of || p.recent_active)
        });
        for (id, pr) in self.progress.iter_mut() {
            pr.recent_active = *id == perspective_of;
        }
        result == VoteResult::Won
    }

    /// Whether the peers in `potential_quorum` make a (joint) quorum.
    pub fn has_quorum(&self, potential_quorum: &HashSet<u64>) -> bool {
        self.conf
            .voters
            .vote_result(|id| Some(potential_quorum.contains(&id)))
            == VoteResult::Won
    }

    /// Records `id`'s vote, unless it already voted in this election.
    pub fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// Counts the voters' votes: `(granted, rejected, result)`. Votes of non-voters are ignored.
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let (mut granted, mut rejected) = (0, 0);
        self.conf
            .voters
            .for_each_id(|id| match self.votes.get(&id) {
                Some(true) => granted += 1,
                Some(false) => rejected += 1,
                None => {}
            });
        let result = self
            .conf
            .voters
            .vote_result(|id| self.votes.get(&id).copied());
        (granted, rejected, result)
    }

    /// Forgets the votes of the last election.
    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Installs `conf` (produced by [`crate::confchange::Changer`] together with `changes`):
    /// added peers start probing at `next_idx`, marked recently active so a fresh peer does not
    /// make the leader step down at once; removed peers are dropped.
    pub fn apply_conf(&mut self, conf: Configuration, changes: MapChange, next_idx: u64) {
        for (id, change) in changes {
            match change {
                MapChangeType::Add => {
                    let mut pr =
                        Progress::new(next_idx, self.max_inflight_msgs, self.max_inflight_bytes);
                    pr.recent_active = true;
                    self.progress.insert(id, pr);
                }
                MapChangeType::Remove => {
                    self.progress.remove(&id);
                }
            }
        }
        self.conf = conf;
        self.assert_progress_matches_conf();
    }

    fn assert_progress_matches_conf(&self) {
        let mut members = 0;
        self.conf.voters.for_each_id(|id| {
            assert!(
                self.progress.contains_key(&id),
                "voter {id} has no progress"
            );
            members += 1;
        });
        for id in &self.conf.learners {
            assert!(
                self.progress.contains_key(id),
                "learner {id} has no progress"
            );
            members += 1;
        }
        assert_eq!(
            members,
            self.progress.len(),
            "progress kept for peers outside the configuration"
        );
    }

    /// Removes every peer and the configuration (before rebuilding it from a snapshot).
    pub fn clear(&mut self) {
        self.progress.clear();
        self.conf = Configuration::default();
        self.votes.clear();
    }

    /// All voters, both halves.
    pub fn voter_ids(&self) -> BTreeSet<u64> {
        self.conf.voters.ids()
    }

    /// The learners (not counting outgoing voters that will become learners).
    pub fn learner_ids(&self) -> &BTreeSet<u64> {
        &self.conf.learners
    }

    /// Every peer with a progress, voters and learners.
    pub fn all_ids(&self) -> BTreeSet<u64> {
        self.progress.keys().copied().collect()
    }

    /// Whether `id` is a voter (either half).
    pub fn is_voter(&self, id: u64) -> bool {
        self.conf.voters.contains(id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: u64) -> bool {
        self.conf.learners.contains(&id)
    }

    /// Changes the inflight caps of every peer, present and future.
    pub fn set_inflight_caps(&mut self, count: usize, bytes: u64) {
        self.max_inflight_msgs = count;
        self.max_inflight_bytes = bytes;
        for pr in self.progress.values_mut() {
            pr.ins.set_cap(count, bytes);
        }
    }

    /// The inflight caps new peers get: `(messages, bytes)`.
    pub fn inflight_caps(&self) -> (usize, u64) {
        (self.max_inflight_msgs, self.max_inflight_bytes)
    }
}

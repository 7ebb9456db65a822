//! A single configuration of voters that decides by simple majority.

use std::collections::btree_set::{BTreeSet, Iter};
use std::ops::Deref;

use super::{AckedIndexer, VoteResult};

/// Voter counts up to this size compute [`MajorityConfig::committed_index`] in a stack buffer,
/// without allocating (the call happens on every append response).
const STACK_VOTERS_MAX: usize = 16;

/// A set of voters; a decision needs more than half of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    voters: BTreeSet<u64>,
}

impl MajorityConfig {
    /// A configuration of these voters.
    pub fn new(voters: BTreeSet<u64>) -> MajorityConfig {
        MajorityConfig { voters }
    }

    /// The voters, sorted.
    pub fn ids(&self) -> &BTreeSet<u64> {
        &self.voters
    }

    /// Mutable access to the voters (used by the conf-change machinery).
    pub(crate) fn ids_mut(&mut self) -> &mut BTreeSet<u64> {
        &mut self.voters
    }

    /// Whether `id` is a voter.
    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    /// Number of voters.
    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// Whether there are no voters.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// The voters in ascending order.
    pub fn iter(&self) -> Iter<'_, u64> {
        self.voters.iter()
    }

    /// Number of voters that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The highest index acknowledged by a majority of the voters. Voters `l` knows nothing
    /// about count as having acknowledged index 0. An empty configuration returns `u64::MAX`, so
    /// that in a joint configuration the other half alone decides.
    pub fn committed_index(&self, l: &impl AckedIndexer) -> u64 {
        let n = self.voters.len();
        if n == 0 {
            return u64::MAX;
        }
        if n <= STACK_VOTERS_MAX {
            let mut buf = [0u64; STACK_VOTERS_MAX];
            self.committed_in(&mut buf[..n], l)
        } else {
            let mut buf = vec![0u64; n];
            self.committed_in(&mut buf, l)
        }
    }

    /// Fills `buf` (one slot per voter) with acked indexes and picks the majority's minimum.
    fn committed_in(&self, buf: &mut [u64], l: &impl AckedIndexer) -> u64 {
        debug_assert_eq!(buf.len(), self.voters.len());
        for (slot, id) in buf.iter_mut().zip(self.voters.iter()) {
            *slot = l.acked_index(*id).unwrap_or(0);
        }
        // Sorted descending, the quorum-th value is acknowledged by exactly a quorum of voters
        // (those at or before it), and no higher value is.
        buf.sort_unstable_by(|a, b| b.cmp(a));
        buf[self.quorum() - 1]
    }

    /// The election result given each voter's vote: `Some(true)` granted, `Some(false)`
    /// rejected, `None` not yet known. An empty configuration wins (by convention, so a joint
    /// configuration with an empty outgoing half is decided by the incoming half).
    pub fn vote_result(&self, check: impl Fn(u64) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0usize, 0usize);
        for id in &self.voters {
            match check(*id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let q = self.quorum();
        if granted >= q {
            VoteResult::Won
        } else if granted + missing >= q {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

impl Deref for MajorityConfig {
    type Target = BTreeSet<u64>;

    fn deref(&self) -> &BTreeSet<u64> {
        &self.voters
    }
}

impl From<BTreeSet<u64>> for MajorityConfig {
    fn from(voters: BTreeSet<u64>) -> MajorityConfig {
        MajorityConfig::new(voters)
    }
}

impl FromIterator<u64> for MajorityConfig {
    fn from_iter<T: IntoIterator<Item = u64>>(iter: T) -> MajorityConfig {
        MajorityConfig::new(iter.into_iter().collect())
    }
}

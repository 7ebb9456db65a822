//! The pair of configurations in force during joint consensus.

use std::collections::BTreeSet;

use super::{AckedIndexer, MajorityConfig, VoteResult};

/// Incoming and outgoing voter sets. Outside joint consensus `outgoing` is empty and only
/// `incoming` counts; while joint, every decision needs a majority of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    /// The configuration being moved to (or the only one).
    pub incoming: MajorityConfig,
    /// The configuration being left; empty when not joint.
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// A non-joint configuration of these voters.
    pub fn new(voters: BTreeSet<u64>) -> JointConfig {
        JointConfig {
            incoming: MajorityConfig::new(voters),
            outgoing: MajorityConfig::default(),
        }
    }

    /// A joint configuration of `incoming` and `outgoing`.
    pub fn new_joint(incoming: BTreeSet<u64>, outgoing: BTreeSet<u64>) -> JointConfig {
        JointConfig {
            incoming: MajorityConfig::new(incoming),
            outgoing: MajorityConfig::new(outgoing),
        }
    }

    /// Whether the configuration is joint (has an outgoing half).
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// The highest index acknowledged by a majority of both halves.
    pub fn committed_index(&self, l: &impl AckedIndexer) -> u64 {
        let i = self.incoming.committed_index(l);
        let o = self.outgoing.committed_index(l);
        i.min(o)
    }

    /// The election result: won only if both halves won, lost if either lost.
    pub fn vote_result(&self, check: impl Fn(u64) -> Option<bool>) -> VoteResult {
        let i = self.incoming.vote_result(&check);
        let o = self.outgoing.vote_result(&check);
        match (i, o) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether `id` is a voter of either half.
    pub fn contains(&self, id: u64) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// All voters of both halves.
    pub fn ids(&self) -> BTreeSet<u64> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    /// Calls `f` once for every voter of either half, in ascending order, without allocating.
    pub fn for_each_id(&self, mut f: impl FnMut(u64)) {
        let mut inc = self.incoming.iter().peekable();
        let mut out = self.outgoing.iter().peekable();
        loop {
            let next = match (inc.peek(), out.peek()) {
                (Some(&&a), Some(&&b)) if a == b => {
                    inc.next();
                    out.next();
                    a
                }
                (Some(&&a), Some(&&b)) if a < b => {
                    inc.next();
                    a
                }
                (_, Some(&&b)) => {
                    out.next();
                    b
                }
                (Some(&&a), None) => {
                    inc.next();
                    a
                }
                (None, None) => return,
            };
            f(next);
        }
    }

    /// Whether this is a single voter, not joint: that voter alone decides.
    pub fn is_singleton(&self) -> bool {
        self.outgoing.is_empty() && self.incoming.len() == 1
    }

    /// Removes every voter of both halves.
    pub fn clear(&mut self) {
        self.incoming.ids_mut().clear();
        self.outgoing.ids_mut().clear();
    }
}

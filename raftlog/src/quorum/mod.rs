//! Quorum rules: which sets of peers can commit an index or win an election.
//!
//! A [`MajorityConfig`] is one set of voters deciding by simple majority; a [`JointConfig`] is the
//! pair of configurations in force during joint consensus, where a decision needs a majority of
//! *both*. Neither knows about messages or progress: callers hand in acknowledged indexes
//! ([`AckedIndexer`]) or votes (a closure), which keeps the rules testable as plain data tables.

mod joint;
mod majority;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::BuildHasher;

pub use joint::JointConfig;
pub use majority::MajorityConfig;

/// The outcome of an election (or any yes/no poll) so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoteResult {
    /// Neither a winning nor a losing quorum yet: some votes are still missing.
    Pending,
    /// Enough rejections that a winning quorum is no longer possible.
    Lost,
    /// A quorum granted the vote.
    Won,
}

/// Looks up the highest log index a voter is known to have durably stored.
pub trait AckedIndexer {
    /// The acknowledged index of `voter`, or `None` when nothing is known about it.
    fn acked_index(&self, voter: u64) -> Option<u64>;
}

impl<H: BuildHasher> AckedIndexer for HashMap<u64, u64, H> {
    fn acked_index(&self, voter: u64) -> Option<u64> {
        self.get(&voter).copied()
    }
}

//! What a node reports about itself: its role ([`SoftState`]), read results ([`ReadState`])
//! and the full [`Status`].

use crate::tracker::ProgressTracker;
use crate::types::HardState;

/// The role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum StateRole {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Campaigning in a real election (the term was bumped).
    Candidate,
    /// Campaigning in a pre-vote round (the term is unchanged).
    PreCandidate,
    /// The leader.
    Leader,
}

/// The volatile state of a node, reported in a `Ready` when it changes. Not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SoftState {
    /// The known leader (0: none).
    pub leader_id: u64,
    /// This node's role.
    pub raft_state: StateRole,
}

/// The answer to a [`crate::RawNode::read_index`] request: once the application has applied up
/// to `index`, a read issued with `request_ctx` is linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReadState {
    /// The commit index at the time leadership was confirmed.
    pub index: u64,
    /// The request's context, as given to `read_index`.
    pub request_ctx: Vec<u8>,
}

/// A snapshot of a node's state, for monitoring and tests.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The node's id.
    pub id: u64,
    /// Term, vote and commit.
    pub hs: HardState,
    /// Leader and role.
    pub ss: SoftState,
    /// The applied index.
    pub applied: u64,
    /// The per-peer replication progress; only on the leader.
    pub progress: Option<ProgressTracker>,
}

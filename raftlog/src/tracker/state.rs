//! The replication state of one follower, as the leader sees it.

use std::fmt;

/// How the leader replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ProgressState {
    /// The follower's log position is unknown: send one append per heartbeat interval and wait
    /// for the answer to find where the logs match.
    #[default]
    Probe,
    /// The logs match up to `matched`: stream appends optimistically, within the inflight window.
    Replicate,
    /// The follower is behind the leader's first index: a snapshot is being sent; send nothing
    /// else until it is applied or fails.
    Snapshot,
}

impl fmt::Display for ProgressState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ProgressState::Probe => "StateProbe",
            ProgressState::Replicate => "StateReplicate",
            ProgressState::Snapshot => "StateSnapshot",
        };
        f.write_str(s)
    }
}

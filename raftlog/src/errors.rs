//! The typed errors of raftlog.

use thiserror::Error;

/// Errors a [`crate::Storage`] implementation returns. Raft reacts to each differently; see the
/// trait's failure contract.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// The requested index is below the first index: it was compacted away.
    #[error("log entries requested are compacted away")]
    Compacted,
    /// The requested index is above the last index.
    #[error("log entries requested are unavailable")]
    Unavailable,
    /// The requested snapshot is older than the one the storage holds.
    #[error("snapshot is out of date")]
    SnapshotOutOfDate,
    /// A snapshot is being built; ask again later (Raft retries on a later tick).
    #[error("snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Entries are being fetched asynchronously; Raft retries when told they are ready.
    #[error("log entries are temporarily unavailable")]
    LogTemporarilyUnavailable,
    /// The storage failed (an I/O error, corruption); Raft cannot go on with this node.
    #[error("storage failure: {0}")]
    Other(String),
}

/// Errors of the Raft API.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A storage error.
    #[error(transparent)]
    Store(#[from] StorageError),
    /// The proposal was dropped (no leader known, leadership transfer in progress, the
    /// uncommitted-size limit reached, or a pending conf change).
    #[error("proposal dropped")]
    ProposalDropped,
    /// A message addressed to the wrong node, or stepping a local-only message type.
    #[error("raft: cannot step raft local message")]
    StepLocalMsg,
    /// A response from a peer this node has no progress for.
    #[error("raft: cannot step as peer not found")]
    StepPeerNotFound,
    /// The configuration is invalid; the text names the field.
    #[error("invalid config: {0}")]
    ConfigInvalid(String),
    /// A conf change is not valid against the configuration it would apply to.
    #[error("invalid conf change: {0}")]
    ConfChangeError(String),
    /// Decoding failed.
    #[error(transparent)]
    Decode(#[from] crate::codec::DecodeError),
    /// A snapshot request was not sent: this node is the leader, knows no leader, or already
    /// has a request pending.
    #[error("raft: request snapshot dropped")]
    RequestSnapshotDropped,
    /// The request needs a leader and this node is not one.
    #[error("not leader")]
    NotLeader,
}

/// Result with raftlog's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

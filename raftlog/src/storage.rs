//! The [`Storage`] trait the application implements, and [`MemStorage`], an in-memory one for
//! tests and examples.
//!
//! # Failure contract
//! Raft calls storage only from `RawNode` methods. `Compacted` and `Unavailable` describe the log's
//! bounds and are handled (a follower behind `first_index` is sent a snapshot).
//! `SnapshotTemporarilyUnavailable` makes the leader retry the snapshot later.
//! `LogTemporarilyUnavailable` makes Raft wait until the application tells it the entries are
//! ready. Any other error is a storage failure: Raft panics, as it cannot make progress without
//! its log, and the application must restart the node after repairing the device.

use crate::errors::{Result, StorageError};
use crate::types::{ConfState, Entry, HardState, Snapshot};

/// What a node restores on start: its hard state and its configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    /// The persisted hard state.
    pub hard_state: HardState,
    /// The configuration as of the last applied conf change (or snapshot).
    pub conf_state: ConfState,
}

impl RaftState {
    /// A state from its parts.
    pub fn new(hard_state: HardState, conf_state: ConfState) -> RaftState {
        RaftState {
            hard_state,
            conf_state,
        }
    }

    /// Whether the node has never been initialised (no configuration).
    pub fn initialized(&self) -> bool {
        self.conf_state != ConfState::default()
    }
}

/// The log storage of one Raft node, implemented by the application.
///
/// Invariants the implementation keeps: `first_index() <= last_index() + 1`; `term(first_index()
/// - 1)` answers (the term of the last compacted entry or the snapshot); entries are contiguous.
pub trait Storage {
    /// The persisted hard state and configuration, read once at start.
    fn initial_state(&self) -> Result<RaftState>;

    /// Entries in `[low, high)`, at most `max_size` bytes in total (by [`Entry::size_bytes`]) but
    /// always at least one entry when any exists in range. `Compacted` if `low` is below
    /// `first_index()`, `Unavailable` if `high` is above `last_index() + 1`.
    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>>;

    /// Term of the entry at `idx`, for `first_index() - 1 <= idx <= last_index()`.
    fn term(&self, idx: u64) -> Result<u64>;

    /// Index of the first entry still available (the snapshot's index + 1).
    fn first_index(&self) -> Result<u64>;

    /// Index of the last entry in the log.
    fn last_index(&self) -> Result<u64>;

    /// The most recent snapshot, with index at least `request_index` (0: any).
    /// `SnapshotTemporarilyUnavailable` while one is being built.
    fn snapshot(&self, request_index: u64) -> Result<Snapshot>;
}

pub use crate::memstorage::MemStorage;

/// Shorthand for the storage error type in implementations.
pub type StorageResult<T> = std::result::Result<T, StorageError>;

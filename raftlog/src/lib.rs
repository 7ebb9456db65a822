//! raftlog: the Raft consensus algorithm as a library with no I/O of its own.
//!
//! The application implements [`Storage`], drives a [`RawNode`] with `tick`, `propose`,
//! `propose_conf_change` and `step`, and handles each [`Ready`]. raftlog never opens a file or
//! socket, never reads a clock and never draws hidden randomness: time comes from `tick()`, the
//! RNG seed from [`Config`]. That makes it deterministic, so whole clusters can be simulated.
#![warn(missing_docs)]

pub mod codec;
mod errors;
mod memstorage;
pub mod storage;
pub mod types;

pub use codec::DecodeError;
pub use errors::{Error, Result, StorageError};
pub use storage::{MemStorage, RaftState, Storage};
pub use types::*;

//! raftlog: the Raft consensus algorithm as a library with no I/O of its own.
//!
//! The application implements [`Storage`], drives a [`RawNode`] with `tick`, `propose`,
//! `propose_conf_change` and `step`, and handles each [`Ready`]. raftlog never opens a file or
//! socket, never reads a clock and never draws hidden randomness: time comes from `tick()`, the
//! RNG seed from [`Config`]. That makes it deterministic, so whole clusters can be simulated.
//!
//! # The Ready loop
//!
//! Each [`Ready`] is handled in seven steps (the leader may send its appends before persisting
//! them, as in §10.2.1 of the Raft thesis):
//!
//! ```
//! use raftlog::{Config, ConfState, EntryType, MemStorage, RawNode, StateRole};
//!
//! # fn main() -> raftlog::Result<()> {
//! // A one-voter group over in-memory storage.
//! let store = MemStorage::new_with_conf_state(ConfState::from_voters(vec![1]));
//! let mut node = RawNode::new(&Config { rng_seed: 42, ..Config::new(1) }, store.clone())?;
//! node.campaign()?;
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..10 {
//!     if node.raft.state == StateRole::Leader && !proposed {
//!         node.propose(vec![], b"put x=1".to_vec())?;
//!         proposed = true;
//!     }
//!     if !node.has_ready() {
//!         node.tick();
//!         continue;
//!     }
//!     let mut rd = node.ready();
//!     // 1. Persist the changed hard state (term, vote, commit); the soft state is volatile.
//!     if let Some(hs) = rd.hs() {
//!         store.set_hard_state(*hs);
//!     }
//!     // 2. A leader sends `messages` at once, before its own write (a real node hands them
//!     //    to its transport here).
//!     let _send_now = rd.take_messages();
//!     // 3. Install a snapshot, if any.
//!     if !rd.snapshot().is_empty() {
//!         store.apply_snapshot(rd.snapshot().clone())?;
//!     }
//!     // 4. Append the entries to the log.
//!     store.append(rd.entries())?;
//!     // 5. Once durable, send `persisted_messages` (votes, append responses). With async
//!     //    writes: `advance_append_async(rd)` now and `on_persist_ready(number)` later.
//!     let _send_after_sync = rd.take_persisted_messages();
//!     // 6. Apply the committed entries (conf changes through `apply_conf_change`).
//!     for e in rd.take_committed_entries() {
//!         if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
//!             applied.push(e.data.to_vec());
//!         }
//!     }
//!     // 7. Advance; what followed from the write (here the commit of our own entries) comes
//!     //    back in a LightReady, handled the same way.
//!     let mut light = node.advance(rd);
//!     if let Some(commit) = light.commit_index() {
//!         store.wl().mut_hard_state().commit = commit;
//!     }
//!     let _send = light.take_messages();
//!     for e in light.take_committed_entries() {
//!         if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
//!             applied.push(e.data.to_vec());
//!         }
//!     }
//!     node.advance_apply();
//! }
//! assert_eq!(applied, vec![b"put x=1".to_vec()]);
//! # Ok(())
//! # }
//! ```
//!
//! # Where raftlog goes beyond etcd raft and raft-rs
//! - A leader removed (or demoted) by an applied conf change steps down; a proposal that would
//!   remove the current leader is refused ("transfer leadership first"), which avoids the
//!   two-voter hazard.
//! - Conf changes are validated when proposed, against the latest configuration in the log
//!   (only one may be pending), not silently turned into no-ops.
//! - Flow control by bytes in flight ([`Config::max_inflight_bytes`]) as well as by count.
//! - ReadIndex requests reaching a new leader before its first commit in its term are queued
//!   until that commit, not dropped; a request retried with a pending context gets a fresh
//!   index, never the stale one.
//! - Entries handed out for persisting stay in memory until `on_persist_ready`, so storage
//!   need not serve entries that are not yet durable.
//! - With [`Config::batch_append`], a leader's [`RawNode::propose`] costs one append to its
//!   log: the `MsgAppend`s to the peers are built once per [`Ready`], each carrying every entry
//!   proposed since the last one (still in `Ready::messages`, sendable before persisting).
//! - A snapshot taken before a node was added still installs on it.
//! - No hidden randomness ([`Config::rng_seed`]) and no mandatory logger (`tracing` only).
#![warn(missing_docs)]

pub mod codec;
pub mod confchange;
mod config;
mod errors;
mod log_unstable;
mod memstorage;
pub mod quorum;
mod raft;
pub mod raft_log;
mod raw_node;
mod read_only;
mod rng;
mod status;
pub mod storage;
pub mod tracker;
pub mod types;

pub use codec::DecodeError;
pub use config::{Config, ReadOnlyOption};
pub use errors::{Error, Result, StorageError};
pub use memstorage::MemStorageCore;
pub use raft::{Raft, CAMPAIGN_TRANSFER};
pub use raw_node::{LightReady, RawNode, Ready, SnapshotStatus};
pub use status::{ReadState, SoftState, StateRole, Status};
pub use storage::{MemStorage, RaftState, Storage};
pub use types::*;

//! The store layer: regions, the Raft messages between stores, and the raft loop that drives
//! every region peer of a store.
//!
//! The loop is a plain state machine ([`StoreLoop`]: events in, actions out) so the same code
//! runs under the real threads ([`Store`]) and under a deterministic simulator.

pub mod api;
pub mod config;
pub mod msg;
mod peer;
pub mod raft_loop;
pub mod region;
pub mod runtime;
mod wire;

pub use config::{ReadMode, StoreConfig};
pub use raft_loop::{LogSink, PeerOrigin, StoreLoop};
pub use runtime::{prepare, Found, Store, StoreOptions};

pub use api::{
    AdminRequest, ClientRequest, ClientResponse, IncomingSnapshot, PeerChange, RegionInfo, Reply,
    RequestError, SnapshotReceipt, StoreEvent, StoreRouter, StoreStatus, Transport,
};
pub use msg::{
    decode_peer_list, encode_peer_list, EntryPayload, MessageKind, RaftMessage, SplitRequest,
};
pub use region::{initial_regions, Epoch, Peer, PeerRole, RegionMeta};

/// Why a store-layer structure (region metadata, message or entry envelope) did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended early.
    #[error("truncated at offset {offset}: {needed} more bytes needed")]
    Truncated {
        /// Where.
        offset: usize,
        /// How many more bytes.
        needed: usize,
    },
    /// Bytes left after the structure.
    #[error("{remaining} trailing bytes")]
    TrailingBytes {
        /// How many.
        remaining: usize,
    },
    /// A version this build does not read.
    #[error("unknown version {version}")]
    UnknownVersion {
        /// The version byte.
        version: u8,
    },
    /// A tag with no meaning.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which field.
        what: &'static str,
        /// The tag.
        tag: u8,
    },
    /// A count larger than the input could hold.
    #[error("count {count} exceeds the input")]
    Count {
        /// The count.
        count: usize,
    },
    /// The stored crc32 does not match.
    #[error("checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    Checksum {
        /// Stored.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The embedded Raft message did not decode.
    #[error("raft message: {0}")]
    Raft(raftlog::DecodeError),
}

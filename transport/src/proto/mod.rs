//! The client protocol: what a client asks a node and what it answers. Plain data with its own
//! versioned codec (byte layout in `docs/FORMAT.md`, "Client protocol"); no engine types, so the
//! client SDK builds without the engine. Decoding never panics.
//!
//! A request travels in a `ClientRequest` frame on a bidirectional stream of its own, prefixed
//! by the target store id ([`encode_request_frame_body`]); the answer comes back in one
//! `ClientResponse` frame on the same stream.

use bytes::Bytes;

/// Version byte of an encoded [`Request`] or [`Response`].
pub const PROTO_VERSION: u8 = 1;

/// A region's epoch as the client knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Epoch {
    /// Bumped by each membership change.
    pub conf_version: u64,
    /// Bumped by each split.
    pub version: u64,
}

/// One operation of a [`Request::Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Remove every key in `[start, end)`.
    DeleteRange {
        /// First key removed.
        start: Bytes,
        /// First key kept.
        end: Bytes,
    },
    /// Compare-and-swap (see [`Request::Cas`]).
    Cas {
        /// The key.
        key: Bytes,
        /// The value required (`None`: absent).
        expected: Option<Bytes>,
        /// The value written on success (`None`: delete).
        new: Option<Bytes>,
    },
}

/// A replicated administrative change of a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// Add a peer on `store_id` (a learner when `learner`).
    AddPeer {
        /// The store.
        store_id: u64,
        /// Add as a learner.
        learner: bool,
    },
    /// Make a learner a voter.
    PromoteLearner {
        /// The learner.
        peer_id: u64,
    },
    /// Remove a peer.
    RemovePeer {
        /// The peer.
        peer_id: u64,
    },
    /// Hand leadership to a voter.
    TransferLeader {
        /// The voter.
        peer_id: u64,
    },
    /// Split the region at `split_key`.
    Split {
        /// First key of the new right-hand region.
        split_key: Bytes,
    },
    /// Several membership changes at once, through a joint configuration.
    ChangePeers {
        /// The changes, at least one.
        changes: Vec<PeerChangeOp>,
    },
}

/// One change of a [`AdminOp::ChangePeers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerChangeOp {
    /// Add a voter on the store.
    AddVoter {
        /// The store.
        store_id: u64,
    },
    /// Add a learner on the store.
    AddLearner {
        /// The store.
        store_id: u64,
    },
    /// Remove the peer.
    Remove {
        /// The peer.
        peer_id: u64,
    },
}

/// Identifies a write for at-most-once application: a retry carries the same pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WriteId {
    /// The client, unique in the cluster (random at client start).
    pub client_id: u64,
    /// Increases with every new write of the client.
    pub sequence: u64,
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read one key.
    Get {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// The key.
        key: Bytes,
    },
    /// Write one key.
    Put {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// Identifies the write.
        id: WriteId,
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove one key.
    Delete {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// Identifies the write.
        id: WriteId,
        /// The key.
        key: Bytes,
    },
    /// If `key`'s value equals `expected` (`None`: absent), set it to `new` (`None`: delete).
    Cas {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// Identifies the write.
        id: WriteId,
        /// The key.
        key: Bytes,
        /// The value required.
        expected: Option<Bytes>,
        /// The value written on success.
        new: Option<Bytes>,
    },
    /// Several writes applied atomically, in order.
    Batch {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// Identifies the write.
        id: WriteId,
        /// The operations.
        ops: Vec<BatchOp>,
    },
    /// Read the keys of `[start, end)` (`end` empty: to the region's end), at most `limit`.
    Scan {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// First key.
        start: Bytes,
        /// End key (exclusive).
        end: Bytes,
        /// Most rows.
        limit: u32,
    },
    /// The regions the store has peers of.
    Regions,
    /// The store's status.
    Status,
    /// A replicated administrative change (sent to the region's leader).
    Admin {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// The change.
        op: AdminOp,
    },
}

/// A region peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// Raft node id, unique in the cluster.
    pub peer_id: u64,
    /// The store holding it.
    pub store_id: u64,
    /// A learner (does not vote).
    pub learner: bool,
}

/// A region as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// The region.
    pub region_id: u64,
    /// First key (inclusive; empty: the start of the key space).
    pub start: Bytes,
    /// End key (exclusive; empty: the end of the key space).
    pub end: Bytes,
    /// The epoch.
    pub epoch: Epoch,
    /// The peers.
    pub peers: Vec<PeerInfo>,
    /// The leader, if known.
    pub leader: Option<PeerInfo>,
}

/// One region of a store's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionStatus {
    /// The region.
    pub info: RegionInfo,
    /// This store's peer of the region.
    pub peer_id: u64,
    /// Whether this store's peer leads.
    pub is_leader: bool,
    /// The peer's term.
    pub term: u64,
    /// The peer's commit index.
    pub commit_index: u64,
    /// The peer's applied index.
    pub applied_index: u64,
    /// Whether the region hibernates.
    pub hibernating: bool,
}

/// A store's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    /// The store.
    pub store_id: u64,
    /// Its regions.
    pub regions: Vec<RegionStatus>,
}

/// The result of one write operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// A put, delete or delete-range was applied.
    Done,
    /// A compare-and-swap.
    Cas {
        /// Whether the comparison held.
        succeeded: bool,
        /// The value found before (`None`: absent).
        previous: Option<Bytes>,
    },
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// This store's peer does not lead the region.
    #[error("region {region_id}: not leader (leader: {leader:?})")]
    NotLeader {
        /// The region.
        region_id: u64,
        /// The leader if known.
        leader: Option<PeerInfo>,
    },
    /// The epoch is stale: here are the current regions.
    #[error("epoch not match")]
    EpochNotMatch {
        /// The regions as they are now.
        regions: Vec<RegionInfo>,
    },
    /// The store has no peer of the region.
    #[error("region {region_id} not found")]
    RegionNotFound {
        /// The region.
        region_id: u64,
    },
    /// The key is outside the region.
    #[error("key outside region {region_id}")]
    KeyNotInRegion {
        /// The region.
        region_id: u64,
    },
    /// The proposal was dropped; retry with the same write id.
    #[error("proposal dropped: {reason}")]
    ProposalDropped {
        /// Why.
        reason: String,
    },
    /// Too busy; retry later.
    #[error("busy: {reason}")]
    Busy {
        /// Why.
        reason: String,
    },
    /// The request is invalid.
    #[error("bad request: {reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
    /// The store is stopping.
    #[error("stopping")]
    Stopping,
    /// The store failed.
    #[error("store failed: {reason}")]
    StoreFailed {
        /// Why.
        reason: String,
    },
    /// The node cannot serve the request (no such store, no service yet).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The write's id `(client_id, sequence)` was applied before and its result is no longer
    /// kept (the region already applied a later sequence of the client, or the result was too
    /// large to keep): it was not applied again. Not retryable; to a client retrying the same
    /// id it means "applied earlier, outcome not known".
    #[error("client {client_id} sequence {sequence} already applied (last {last})")]
    AlreadyApplied {
        /// The write's client.
        client_id: u64,
        /// The write's sequence.
        sequence: u64,
        /// The client's last sequence applied by the region.
        last: u64,
    },
}

impl ResponseError {
    /// Whether the client should refresh its region cache and retry.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ResponseError::BadRequest { .. }
                | ResponseError::StoreFailed { .. }
                | ResponseError::AlreadyApplied { .. }
        )
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A write was applied; one result per op.
    Written(Vec<OpResult>),
    /// The value of a get.
    Value(Option<Bytes>),
    /// The rows of a scan, in key order.
    Rows(Vec<(Bytes, Bytes)>),
    /// An admin change was applied or started.
    AdminDone,
    /// The store's regions.
    Regions(Vec<RegionInfo>),
    /// The store's status.
    Status(StoreStatus),
    /// The request failed.
    Error(ResponseError),
}

mod codec;

pub use codec::{
    decode_call_frame_body, decode_reply_frame_body, decode_request_frame_body,
    encode_call_frame_body, encode_reply_frame_body, encode_request_frame_body,
};

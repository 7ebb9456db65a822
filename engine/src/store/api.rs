//! What the outside world hands a store and gets back: client requests and their answers, the
//! [`Transport`] the store sends through, and the [`StoreRouter`] everything posts events with.

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use super::msg::RaftMessage;
use super::region::{Epoch, Peer, RegionMeta};
use super::wake::LoopWake;
use crate::state::worker::BuiltSnapshot;
use crate::state::{Command, OpResult};

/// A client request for one region of the store.
#[derive(Clone, Debug)]
pub enum ClientRequest {
    /// Propose a command; answered once it is applied.
    Write {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// The command (its `client_id`/`sequence` make retries apply at most once).
        command: Command,
    },
    /// Read one key, linearizably (ReadIndex, or the lease in lease mode).
    Get {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// The key.
        key: Bytes,
    },
    /// Read keys in `[start, end)` (`end` empty: to the region's end), at most `limit`.
    Scan {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// First key.
        start: Bytes,
        /// End key (exclusive); empty for the region's end.
        end: Bytes,
        /// Most rows returned.
        limit: u32,
    },
    /// A replicated administrative change of the region (sent to its leader).
    Admin {
        /// The region.
        region_id: u64,
        /// The client's epoch of the region.
        epoch: Epoch,
        /// The change.
        request: AdminRequest,
    },
    /// Every region this store has a peer of, with leader hints.
    Regions,
    /// The store's status (for `basalt-ctl status`).
    Status,
}

/// A replicated administrative change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// Add a peer on `store_id` (a voter, or a learner when `learner`).
    AddPeer {
        /// The store to add the peer on.
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
    /// Several membership changes at once, through joint consensus.
    ChangePeers(Vec<PeerChange>),
    /// Hand leadership to a voter.
    TransferLeader {
        /// The voter.
        peer_id: u64,
    },
    /// Split the region at `split_key` (the new region takes `[split_key, end)`).
    Split {
        /// First key of the new region.
        split_key: Bytes,
    },
}

/// One membership change of a joint change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerChange {
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

/// A region as a client or operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// The region's metadata as this store knows it.
    pub meta: RegionMeta,
    /// The leader, if this store knows it.
    pub leader: Option<Peer>,
    /// This store's peer of the region.
    pub peer_id: u64,
    /// Whether this store's peer leads.
    pub is_leader: bool,
    /// This peer's Raft term.
    pub term: u64,
    /// This peer's commit index.
    pub commit_index: u64,
    /// This peer's applied index.
    pub applied_index: u64,
    /// Whether the region is hibernating (not ticking).
    pub hibernating: bool,
}

/// A store's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    /// The store.
    pub store_id: u64,
    /// Its regions.
    pub regions: Vec<RegionInfo>,
}

/// The answer to a [`ClientRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResponse {
    /// A write was applied; one result per op.
    Written(Vec<OpResult>),
    /// The value of a get.
    Value(Option<Bytes>),
    /// The rows of a scan, in key order.
    Rows(Vec<(Bytes, Bytes)>),
    /// An admin change was applied (splits, membership) or started (leader transfer).
    AdminDone,
    /// The store's regions.
    Regions(Vec<RegionInfo>),
    /// The store's status.
    Status(StoreStatus),
}

/// Why a request failed. `is_retryable` tells the client whether to refresh and retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// This peer does not lead the region; `leader` is the leader if known.
    #[error("region {region_id}: not leader (leader: {leader:?})")]
    NotLeader {
        /// The region.
        region_id: u64,
        /// The leader, if known.
        leader: Option<Peer>,
    },
    /// The request's epoch is stale, or its key is outside the region: here are the current
    /// regions (the region and, after a split, its new sibling).
    #[error("epoch not match: current regions {regions:?}")]
    EpochNotMatch {
        /// The regions as they are now.
        regions: Vec<RegionMeta>,
    },
    /// The store has no peer of the region.
    #[error("region {region_id} not found on this store")]
    RegionNotFound {
        /// The region.
        region_id: u64,
    },
    /// The key is not in the region's range.
    #[error("key outside region {region_id}")]
    KeyNotInRegion {
        /// The region.
        region_id: u64,
    },
    /// The proposal was dropped (leader change, log truncated, or superseded): the command may
    /// or may not have been applied; retry with the same client id and sequence.
    #[error("proposal dropped: {reason}")]
    ProposalDropped {
        /// Why.
        reason: String,
    },
    /// Too many requests in flight; retry later.
    #[error("store busy: {reason}")]
    Busy {
        /// Why.
        reason: String,
    },
    /// The request is not valid (say, removing a peer that is not in the region).
    #[error("bad request: {reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
    /// The command's (client id, sequence) was already applied and its results are no longer
    /// kept (an older sequence than the client's last, or results too large to keep): it was
    /// not applied again. Not retryable.
    #[error(
        "client {client_id} sequence {sequence} already applied (last applied sequence {last})"
    )]
    AlreadyApplied {
        /// The client.
        client_id: u64,
        /// The command's sequence.
        sequence: u64,
        /// The client's last applied sequence.
        last: u64,
    },
    /// The store is stopping.
    #[error("store stopping")]
    Stopping,
    /// The store failed (device error); not retryable on this store.
    #[error("store failed: {reason}")]
    StoreFailed {
        /// Why.
        reason: String,
    },
}

impl RequestError {
    /// Whether the client should refresh its region cache and retry.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RequestError::NotLeader { .. }
                | RequestError::EpochNotMatch { .. }
                | RequestError::RegionNotFound { .. }
                | RequestError::KeyNotInRegion { .. }
                | RequestError::ProposalDropped { .. }
                | RequestError::Busy { .. }
                | RequestError::Stopping
        )
    }
}

/// Where a request's answer goes. Called exactly once, from the store's threads; must not block.
pub type Reply = Box<dyn FnOnce(Result<ClientResponse, RequestError>) + Send>;

/// What the receiving store says about an incoming snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotReceipt {
    /// Chunk `next_chunk_no - 1` was refused (corrupt): resend from `next_chunk_no`.
    ResumeFrom {
        /// The next chunk wanted.
        next_chunk_no: u32,
    },
    /// Installed and durable.
    Installed,
    /// Not wanted or failed; the sender reports the snapshot as failed to Raft.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// An incoming snapshot: the `MsgSnapshot` envelope, the chunk stream (bounded: the transport
/// waits when it is full, which is the back-pressure), and where receipts go back.
pub struct IncomingSnapshot {
    /// The `MsgSnapshot` (its `snapshot.data` is the encoded `SnapshotMeta`).
    pub message: RaftMessage,
    /// The chunks, in order from chunk 0 (or from a resume point).
    pub chunks: Receiver<Bytes>,
    /// Receipts back to the sender; the last one is `Installed` or `Rejected`.
    pub receipts: Sender<SnapshotReceipt>,
}

/// How a store sends to other stores. Implemented by the QUIC transport and by the simulator.
/// Nothing here may block: implementations queue and return.
pub trait Transport: Send + Sync + 'static {
    /// Queue messages for `to_store` (all addressed to peers on that store).
    fn send(&self, to_store: u64, msgs: Vec<RaftMessage>);
    /// Stream a built snapshot to `to_store`; report the outcome with
    /// [`StoreRouter::report_snapshot`].
    fn send_snapshot(&self, to_store: u64, message: RaftMessage, snapshot: Arc<BuiltSnapshot>);
}

/// Everything that reaches a store's raft loop.
pub enum StoreEvent {
    /// Raft messages from another store.
    Raft(Vec<RaftMessage>),
    /// A snapshot stream from another store.
    Snapshot(Box<IncomingSnapshot>),
    /// A client request.
    Request(ClientRequest, Reply),
    /// The transport could not reach a store.
    Unreachable {
        /// The store.
        store_id: u64,
    },
    /// A snapshot this store sent finished.
    SnapshotSent {
        /// The region.
        region_id: u64,
        /// The receiving peer.
        to_peer_id: u64,
        /// Whether it was installed.
        ok: bool,
    },
    /// A log batch is durable (or failed).
    LogDone {
        /// The batch's sequence number.
        batch_no: u64,
        /// Ok, or the failure text (the store then stops serving).
        result: Result<(), String>,
    },
    /// Stop: final checkpoint, then the loop exits.
    Stop,
    /// Stop at once, as a killed process would: no answers to waiting requests, no final
    /// checkpoint (tests of crash recovery).
    Halt,
}

/// A cloneable handle that posts events to a store's raft loop. Posting never blocks: when the
/// loop's queue is full the event is refused (requests get `Busy`, messages are dropped, which
/// Raft tolerates).
#[derive(Clone)]
pub struct StoreRouter {
    pub(crate) store_id: u64,
    pub(crate) tx: Sender<StoreEvent>,
    /// Woken after every post (a loop driven as a task waits on it, see [`LoopWake`]).
    pub(crate) wake: Arc<LoopWake>,
}

impl StoreRouter {
    /// A router posting into `tx` (the loop holds the receiver and blocks on it).
    pub fn new(store_id: u64, tx: Sender<StoreEvent>) -> StoreRouter {
        StoreRouter::with_wake(store_id, tx, LoopWake::new())
    }

    /// A router posting into `tx` and waking `wake` after each post.
    pub fn with_wake(store_id: u64, tx: Sender<StoreEvent>, wake: Arc<LoopWake>) -> StoreRouter {
        StoreRouter { store_id, tx, wake }
    }

    fn post(&self, ev: StoreEvent) -> Result<(), crossbeam_channel::TrySendError<StoreEvent>> {
        let r = self.tx.try_send(ev);
        self.wake.wake();
        r
    }

    /// The store this router posts to.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// Delivers Raft messages from another store.
    pub fn deliver(&self, msgs: Vec<RaftMessage>) {
        let _ = self.post(StoreEvent::Raft(msgs));
    }

    /// Delivers an incoming snapshot stream. If the loop cannot take it, it is rejected.
    pub fn deliver_snapshot(&self, snapshot: IncomingSnapshot) {
        if let Err(e) = self.post(StoreEvent::Snapshot(Box::new(snapshot))) {
            if let StoreEvent::Snapshot(s) = e.into_inner() {
                let _ = s.receipts.send(SnapshotReceipt::Rejected {
                    reason: "store busy".into(),
                });
            }
        }
    }

    /// Submits a client request; `reply` is always called.
    pub fn submit(&self, request: ClientRequest, reply: Reply) {
        if let Err(e) = self.post(StoreEvent::Request(request, reply)) {
            let stopped = e.is_disconnected();
            if let StoreEvent::Request(_, reply) = e.into_inner() {
                reply(Err(if stopped {
                    RequestError::Stopping
                } else {
                    RequestError::Busy {
                        reason: "store queue full".into(),
                    }
                }));
            }
        }
    }

    /// Reports that `store_id` could not be reached.
    pub fn report_unreachable(&self, store_id: u64) {
        let _ = self.post(StoreEvent::Unreachable { store_id });
    }

    /// Reports the outcome of a snapshot sent with [`Transport::send_snapshot`].
    pub fn report_snapshot(&self, region_id: u64, to_peer_id: u64, ok: bool) {
        let _ = self.post(StoreEvent::SnapshotSent {
            region_id,
            to_peer_id,
            ok,
        });
    }

    /// Asks the loop to stop (final checkpoint first).
    pub fn stop(&self) {
        let _ = self.tx.send(StoreEvent::Stop);
        self.wake.wake();
    }

    /// Stops the loop as a crash would (no final checkpoint).
    pub(crate) fn halt(&self) {
        let _ = self.tx.send(StoreEvent::Halt);
        self.wake.wake();
    }
}

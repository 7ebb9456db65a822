//! One region peer inside the raft loop: its `RawNode`, its region metadata, and the client
//! requests waiting on it.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use raftlog::{HardState, Ready, StateRole};

use super::api::{ClientRequest, Reply, RequestError, SnapshotReceipt};
use super::region::{Peer, RegionMeta};
use crate::state::snapshot::SnapshotMeta;
use crate::state::storage::RegionStorage;

/// What a proposal was for: decides how it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProposalKind {
    /// A client command: answered with its results once applied.
    Write,
    /// A membership change: answered once committed and in effect in the loop.
    ConfChange,
    /// A split: answered once committed and in effect in the loop.
    Split,
}

/// A proposal waiting to be committed (once committed, a write waits in the apply worker's
/// task as a [`crate::state::worker::Responder`]).
pub(crate) struct Proposal {
    pub index: u64,
    pub term: u64,
    pub kind: ProposalKind,
    pub reply: Reply,
    pub started: Instant,
}

/// A linearizable read waiting for its read index to be confirmed, then applied.
pub(crate) struct PendingRead {
    pub ctx: u64,
    pub request: ClientRequest,
    pub reply: Reply,
}

/// A received snapshot being installed: the Ready that carried it is held until the install is
/// durable (no other Ready of the peer is taken meanwhile).
pub(crate) struct Installing {
    pub ready: Ready,
    pub meta: SnapshotMeta,
    pub region_meta: RegionMeta,
    pub receipts: crossbeam_channel::Sender<SnapshotReceipt>,
}

/// Hibernation state of a peer.
#[derive(Default)]
pub(crate) struct Hibernation {
    /// Consecutive idle ticks (leader).
    pub idle_ticks: u32,
    /// The leader asked its followers to hibernate in this term.
    pub requested_term: Option<u64>,
    /// Followers that agreed.
    pub acks: HashSet<u64>,
}

pub(crate) struct PeerState {
    pub node: raftlog::RawNode<RegionStorage>,
    pub meta: RegionMeta,
    /// This store's peer of the region.
    pub me: Peer,
    /// False for a peer created by a message, waiting for its first snapshot.
    pub initialized: bool,
    /// A split child found at open whose parent has not yet replayed the split into the state
    /// store: its committed entries wait.
    pub awaiting_state: bool,
    /// Waiting for commit, in index order.
    pub proposals: VecDeque<Proposal>,
    /// Reads waiting for their read index.
    pub reads: Vec<PendingRead>,
    /// Reads whose index is known, waiting until it is dispatched to the apply worker.
    pub reads_ready: VecDeque<(u64, PendingRead)>,
    /// Index of the last committed entry handed to the apply worker.
    pub dispatched_index: u64,
    /// Index the apply worker last reported applied.
    pub applied_index: u64,
    /// A snapshot stepped into Raft, waiting for the Ready that carries it.
    pub incoming: Option<(super::api::IncomingSnapshot, RegionMeta)>,
    pub installing: Option<Installing>,
    pub hibernation: Hibernation,
    pub hibernating: bool,
    /// Peers heard from that are not (yet) in `meta`: an uninitialized peer answers its leader
    /// before it knows the region's membership.
    pub heard: std::collections::HashMap<u64, Peer>,
    /// The role at the last soft state seen.
    pub role: StateRole,
    /// Tells this peer object apart from an earlier or later one of the same region on this
    /// store (a replaced stale or uninitialized peer): a Ready's durability reaches only the
    /// raft node that produced it.
    pub incarnation: u64,
    /// Set when the peer was removed while a snapshot install was running: it is destroyed
    /// (with this metadata recorded) when the install ends, so the state store never sees an
    /// install into a region already removed.
    pub pending_destroy: Option<RegionMeta>,
    /// The newest hard state put in a log batch. A Ready whose hard state differs only in its
    /// commit index is not written by itself (see `StoreLoop::log_hard_state`).
    pub hs_logged: HardState,
    /// The commit index a leader last spread with a heartbeat of its own (see
    /// `StoreLoop::handle_tick`).
    pub commit_pinged: u64,
}

impl PeerState {
    pub fn region_id(&self) -> u64 {
        self.meta.region_id
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn leader(&self) -> Option<Peer> {
        let id = self.node.raft.leader_id;
        if id == 0 {
            return None;
        }
        self.meta.peer(id).copied()
    }

    pub fn not_leader(&self) -> RequestError {
        RequestError::NotLeader {
            region_id: self.region_id(),
            leader: self.leader(),
        }
    }

    pub fn pending_count(&self) -> usize {
        self.proposals.len() + self.reads.len() + self.reads_ready.len()
    }

    /// Fails every request waiting on this peer (leadership lost, peer removed, store stopping).
    pub fn fail_pending(&mut self, proposals: RequestError, reads: RequestError) {
        for p in self.proposals.drain(..) {
            (p.reply)(Err(proposals.clone()));
        }
        for r in self.reads.drain(..) {
            (r.reply)(Err(reads.clone()));
        }
        for (_, r) in self.reads_ready.drain(..) {
            (r.reply)(Err(reads.clone()));
        }
    }

    /// Whether the leader has nothing in flight: no requests, every peer matched, everything
    /// committed and applied.
    pub fn is_quiet_leader(&self) -> bool {
        let raft = &self.node.raft;
        let last = raft.raft_log.last_index();
        self.pending_count() == 0
            && self.installing.is_none()
            && raft.lead_transferee.is_none()
            && raft.raft_log.committed == last
            && self.dispatched_index == last
            && self.applied_index == last
            && raft.prs().iter().all(|(_, p)| p.matched == last)
            && raft.prs().conf().voters.outgoing.is_empty()
    }

    /// Keys of a write's ops, for the range check.
    pub fn command_in_range(&self, cmd: &crate::state::Command) -> bool {
        use crate::state::Op;
        cmd.ops.iter().all(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => {
                self.meta.contains(key)
            }
            Op::DeleteRange { start, end } => {
                self.meta.contains_range(start, end) || (start >= end && self.meta.contains(start))
            }
        })
    }
}

/// Ids chosen by this store (new regions and peers): 62 random bits with bit 62 set, so they
/// never collide with bootstrap ids (below 2^40) and stay positive as signed integers.
pub(crate) struct IdGen(u64);

impl IdGen {
    pub fn new(seed: u64) -> IdGen {
        IdGen(seed | 1)
    }

    pub fn next_id(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 2) | (1 << 62)
    }
}

//! The data types Raft exchanges and persists: entries, messages, hard state, configurations,
//! snapshots and conf changes. Plain structs with public fields (no protobuf); their binary form
//! is in [`crate::codec`] and `docs/FORMAT.md`.

use bytes::Bytes;

/// What an [`Entry`]'s `data` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum EntryType {
    /// An application command (or empty: the no-op a new leader appends).
    #[default]
    EntryNormal,
    /// An encoded [`ConfChange`].
    EntryConfChange,
    /// An encoded [`ConfChangeV2`].
    EntryConfChangeV2,
}

/// One Raft log entry.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Entry {
    /// What `data` holds.
    pub entry_type: EntryType,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// Position in the log; the first entry of a log is index 1.
    pub index: u64,
    /// The command (or an encoded conf change).
    pub data: Bytes,
    /// Opaque application context carried with the entry.
    pub context: Bytes,
}

impl Clone for Entry {
    /// A field-by-field clone, except that an empty `data` or `context` becomes a fresh empty
    /// [`Bytes`] (equal, and cheaper than a call through the original's vtable). Entries are
    /// cloned several times on the replication path, and most carry no context.
    fn clone(&self) -> Entry {
        Entry {
            entry_type: self.entry_type,
            term: self.term,
            index: self.index,
            data: clone_bytes(&self.data),
            context: clone_bytes(&self.context),
        }
    }
}

fn clone_bytes(b: &Bytes) -> Bytes {
    if b.is_empty() {
        Bytes::new()
    } else {
        b.clone()
    }
}

impl Entry {
    /// A normal entry at (`term`, `index`) carrying `data`.
    pub fn new(term: u64, index: u64, data: impl Into<Bytes>) -> Entry {
        Entry {
            entry_type: EntryType::EntryNormal,
            term,
            index,
            data: data.into(),
            context: Bytes::new(),
        }
    }

    /// Bytes this entry counts for in size-limited batches (payload plus a fixed header estimate).
    pub fn size_bytes(&self) -> u64 {
        (self.data.len() + self.context.len()) as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// Bytes of payload this entry adds to the uncommitted log (`max_uncommitted_size`).
    pub fn payload_size_bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

/// Fixed per-entry overhead used when estimating sizes for batching limits.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// The message kinds of the Raft protocol, as in etcd raft and raft-rs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MessageType {
    /// Local: start an election.
    #[default]
    MsgHup,
    /// Local: the leader should broadcast heartbeats.
    MsgBeat,
    /// Local or forwarded: propose entries.
    MsgPropose,
    /// Leader → follower: append entries.
    MsgAppend,
    /// Follower → leader: result of an append.
    MsgAppendResponse,
    /// Candidate → all: request a vote.
    MsgRequestVote,
    /// Answer to a vote request.
    MsgRequestVoteResponse,
    /// Leader → follower: install a snapshot.
    MsgSnapshot,
    /// Leader → follower: heartbeat.
    MsgHeartbeat,
    /// Follower → leader: heartbeat answer.
    MsgHeartbeatResponse,
    /// Local: a peer is unreachable.
    MsgUnreachable,
    /// Local: the outcome of sending a snapshot.
    MsgSnapStatus,
    /// Local: the leader should check it still has a quorum.
    MsgCheckQuorum,
    /// Ask the leader to transfer leadership.
    MsgTransferLeader,
    /// Leader → transferee: campaign now, ignoring the lease.
    MsgTimeoutNow,
    /// Request a read index.
    MsgReadIndex,
    /// Answer to a read-index request.
    MsgReadIndexResp,
    /// Pre-candidate → all: would you vote for me?
    MsgRequestPreVote,
    /// Answer to a pre-vote request.
    MsgRequestPreVoteResponse,
}

impl MessageType {
    /// Whether the message never leaves the node (it is stepped locally only).
    pub fn is_local(self) -> bool {
        matches!(
            self,
            MessageType::MsgHup
                | MessageType::MsgBeat
                | MessageType::MsgUnreachable
                | MessageType::MsgSnapStatus
                | MessageType::MsgCheckQuorum
        )
    }

    /// Whether the message answers a request.
    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageType::MsgAppendResponse
                | MessageType::MsgRequestVoteResponse
                | MessageType::MsgHeartbeatResponse
                | MessageType::MsgUnreachable
                | MessageType::MsgRequestPreVoteResponse
                | MessageType::MsgReadIndexResp
        )
    }

    /// The answer type of a vote or pre-vote request.
    ///
    /// # Panics
    /// On any other type: a programmer error.
    pub fn vote_response(self) -> MessageType {
        match self {
            MessageType::MsgRequestVote => MessageType::MsgRequestVoteResponse,
            MessageType::MsgRequestPreVote => MessageType::MsgRequestPreVoteResponse,
            other => panic!("{other:?} is not a vote request"),
        }
    }
}

/// A Raft message between peers (or a local input).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Message {
    /// The kind of message.
    pub msg_type: MessageType,
    /// Receiving peer id.
    pub to: u64,
    /// Sending peer id.
    pub from: u64,
    /// Sender's term (0 for local messages).
    pub term: u64,
    /// Term of the entry at `index` (appends: of the entry preceding `entries`; votes: of the
    /// candidate's last entry).
    pub log_term: u64,
    /// Log position the message refers to.
    pub index: u64,
    /// Entries to append (or to propose).
    pub entries: Vec<Entry>,
    /// Leader's commit index.
    pub commit: u64,
    /// Term of the entry at `commit` (lets a follower advance commit safely on a heartbeat).
    pub commit_term: u64,
    /// The snapshot of a `MsgSnapshot`.
    pub snapshot: Option<Snapshot>,
    /// A follower asks for a snapshot at or after this index (0: none).
    pub request_snapshot: u64,
    /// Whether the request was rejected.
    pub reject: bool,
    /// On a rejected append: the follower's hint of where the logs may match.
    pub reject_hint: u64,
    /// Opaque context (read-index request contexts, campaign kinds).
    pub context: Bytes,
    /// Candidate priority for elections (higher wins ties).
    pub priority: i64,
}

/// The state every peer must persist before answering messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Peer voted for in `term` (0: none).
    pub vote: u64,
    /// Highest index known committed.
    pub commit: u64,
}

impl HardState {
    /// Whether this is the all-zero hard state of a fresh node.
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// A group membership, possibly joint (during a joint-consensus change).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfState {
    /// Voters of the incoming (or only) configuration.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// Voters of the outgoing configuration while joint; empty otherwise.
    pub voters_outgoing: Vec<u64>,
    /// Voters of the outgoing config that become learners once the joint state is left.
    pub learners_next: Vec<u64>,
    /// Leave the joint state automatically once it is committed.
    pub auto_leave: bool,
}

impl ConfState {
    /// A simple (non-joint) configuration of these voters.
    pub fn from_voters(voters: impl Into<Vec<u64>>) -> ConfState {
        ConfState {
            voters: voters.into(),
            ..Default::default()
        }
    }

    /// A configuration of these voters and learners.
    pub fn from_voters_learners(
        voters: impl Into<Vec<u64>>,
        learners: impl Into<Vec<u64>>,
    ) -> ConfState {
        ConfState {
            voters: voters.into(),
            learners: learners.into(),
            ..Default::default()
        }
    }
}

impl From<(Vec<u64>, Vec<u64>)> for ConfState {
    fn from((voters, learners): (Vec<u64>, Vec<u64>)) -> ConfState {
        ConfState::from_voters_learners(voters, learners)
    }
}

/// Where a snapshot stands in the log, and the configuration at that point.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMetadata {
    /// The configuration at `index`.
    pub conf_state: ConfState,
    /// Index of the last entry the snapshot includes.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
}

/// A snapshot of the application state machine at a log position.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Opaque application state (for Basalt: a snapshot descriptor; chunks stream separately).
    pub data: Bytes,
    /// Position and configuration.
    pub metadata: SnapshotMetadata,
}

impl Snapshot {
    /// Whether this is the empty snapshot (index 0).
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }

    /// The snapshot's metadata.
    pub fn get_metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }
}

/// The kind of a single membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ConfChangeType {
    /// Add (or promote to) a voter.
    #[default]
    AddNode,
    /// Remove a peer.
    RemoveNode,
    /// Add (or demote to) a learner.
    AddLearnerNode,
}

/// A single-step membership change (the V1 API).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfChange {
    /// What to do.
    pub change_type: ConfChangeType,
    /// To which peer.
    pub node_id: u64,
    /// Opaque application context.
    pub context: Bytes,
    /// Application-assigned id (unused by Raft).
    pub id: u64,
}

/// One change of a [`ConfChangeV2`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ConfChangeSingle {
    /// What to do.
    pub change_type: ConfChangeType,
    /// To which peer.
    pub node_id: u64,
}

/// How a [`ConfChangeV2`] moves through joint consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ConfChangeTransition {
    /// Use a single step when possible (one voter change), otherwise a joint configuration that
    /// is left automatically.
    #[default]
    Auto,
    /// Always joint; left automatically once committed.
    Implicit,
    /// Always joint; the application leaves it with an empty `ConfChangeV2`.
    Explicit,
}

/// A membership change of any number of peers (the V2 API). An empty `changes` list leaves a
/// joint configuration.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfChangeV2 {
    /// How to transition.
    pub transition: ConfChangeTransition,
    /// The changes.
    pub changes: Vec<ConfChangeSingle>,
    /// Opaque application context.
    pub context: Bytes,
}

impl ConfChangeV2 {
    /// Whether this change leaves a joint configuration (no changes, and not itself joint).
    pub fn leave_joint(&self) -> bool {
        self.transition == ConfChangeTransition::Auto && self.changes.is_empty()
    }

    /// Whether this change must use joint consensus, and if so whether the joint state is left
    /// automatically: `(use_joint, auto_leave)`.
    pub fn enter_joint(&self) -> Option<bool> {
        if self.transition != ConfChangeTransition::Auto || self.changes.len() > 1 {
            let auto_leave = match self.transition {
                ConfChangeTransition::Auto | ConfChangeTransition::Implicit => true,
                ConfChangeTransition::Explicit => false,
            };
            Some(auto_leave)
        } else {
            None
        }
    }
}

impl From<ConfChange> for ConfChangeV2 {
    fn from(cc: ConfChange) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle {
                change_type: cc.change_type,
                node_id: cc.node_id,
            }],
            context: cc.context,
        }
    }
}

/// Either kind of conf change, for [`crate::RawNode::propose_conf_change`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChangeI {
    /// A V1 change: proposed as an `EntryConfChange`.
    V1(ConfChange),
    /// A V2 change: proposed as an `EntryConfChangeV2`.
    V2(ConfChangeV2),
}

impl From<ConfChange> for ConfChangeI {
    fn from(cc: ConfChange) -> Self {
        ConfChangeI::V1(cc)
    }
}

impl From<ConfChangeV2> for ConfChangeI {
    fn from(cc: ConfChangeV2) -> Self {
        ConfChangeI::V2(cc)
    }
}

impl ConfChangeI {
    /// The change as V2 (a V1 change converted).
    pub fn as_v2(&self) -> ConfChangeV2 {
        match self {
            ConfChangeI::V1(cc) => cc.clone().into(),
            ConfChangeI::V2(cc) => cc.clone(),
        }
    }
}

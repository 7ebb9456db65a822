//! [`RawNode`]: the application's handle on one Raft node, and the [`Ready`] batches of work it
//! hands out.
//!
//! Call order: feed inputs (`tick`, `step`, `propose`, ...); when `has_ready()`, take `ready()`,
//! handle it (see the crate docs for the seven steps), then `advance(ready)` — or, with
//! asynchronous persistence, `advance_append_async(ready)` at once and
//! `on_persist_ready(number)` when its writes are durable. Readies must be advanced in the
//! order they were produced.

use std::collections::VecDeque;

use crate::config::Config;
use crate::errors::{Error, Result};
use crate::raft::Raft;
use crate::status::{ReadState, SoftState, StateRole, Status};
use crate::storage::Storage;
use crate::types::{
    ConfChange, ConfChangeI, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
    MessageType, Snapshot,
};

/// The outcome of sending a snapshot, reported with [`RawNode::report_snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The follower received and applied it.
    Finish,
    /// Sending failed; the leader will probe and retry.
    Failure,
}

/// What one `Ready` asked to persist, kept until the application reports it durable.
#[derive(Clone, Debug, Default)]
struct ReadyRecord {
    number: u64,
    // (index, term) of the last entry handed out.
    last_entry: Option<(u64, u64)>,
    // (index, term) of the snapshot handed out.
    snapshot: Option<(u64, u64)>,
}

/// A batch of work for the application; see the crate docs for how to handle it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ready {
    number: u64,
    ss: Option<SoftState>,
    hs: Option<HardState>,
    read_states: Vec<ReadState>,
    entries: Vec<Entry>,
    snapshot: Snapshot,
    committed_entries: Vec<Entry>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    must_sync: bool,
}

impl Ready {
    /// This Ready's sequence number (for [`RawNode::on_persist_ready`]).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The new soft state, if it changed. Not persisted.
    pub fn ss(&self) -> Option<&SoftState> {
        self.ss.as_ref()
    }

    /// The new hard state, if it changed: persist it (step 1).
    pub fn hs(&self) -> Option<&HardState> {
        self.hs.as_ref()
    }

    /// ReadIndex results: serve each read once applied up to its index.
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    /// Takes the read states.
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    /// Entries to append to the log (step 4); durable before `persisted_messages` are sent.
    pub fn entries(&self) -> &Vec<Entry> {
        &self.entries
    }

    /// Takes the entries.
    pub fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    /// A snapshot to install (step 3); empty if none.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Takes the snapshot.
    pub fn take_snapshot(&mut self) -> Snapshot {
        std::mem::take(&mut self.snapshot)
    }

    /// Committed entries to apply to the state machine (step 6).
    pub fn committed_entries(&self) -> &Vec<Entry> {
        &self.committed_entries
    }

    /// Takes the committed entries.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }

    /// Messages that may be sent at once, before this Ready is persisted (step 2: the
    /// leader's appends and heartbeats, thesis §10.2.1).
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Takes the messages.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// Messages to send only once this Ready's hard state, entries and snapshot are durable
    /// (step 5: votes, append responses).
    pub fn persisted_messages(&self) -> &[Message] {
        &self.persisted_messages
    }

    /// Takes the persisted messages.
    pub fn take_persisted_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.persisted_messages)
    }

    /// Whether the hard state (term or vote), entries or snapshot must be synced to disk
    /// before the persisted messages go out; false when only the commit index changed.
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }
}

/// What is left to do after [`RawNode::advance`] or [`RawNode::advance_append`]: commits and
/// messages produced by the persistence just acknowledged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LightReady {
    commit_index: Option<u64>,
    committed_entries: Vec<Entry>,
    messages: Vec<Message>,
}

impl LightReady {
    /// The new commit index, if it changed (persist it with the hard state when convenient).
    pub fn commit_index(&self) -> Option<u64> {
        self.commit_index
    }

    /// Committed entries to apply.
    pub fn committed_entries(&self) -> &Vec<Entry> {
        &self.committed_entries
    }

    /// Takes the committed entries.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }

    /// Messages to send.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Takes the messages.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }
}

/// The application's handle on one Raft node (no threads, no I/O: see the crate docs).
pub struct RawNode<S: Storage> {
    /// The Raft state machine (public for introspection).
    pub raft: Raft<S>,
    prev_ss: SoftState,
    prev_hs: HardState,
    // Number of the last Ready handed out.
    max_number: u64,
    // Readies handed out and not yet reported durable, oldest first.
    records: VecDeque<ReadyRecord>,
    // Highest index handed out as a committed entry.
    commit_since_index: u64,
    // (index, term) of the last unstable entry handed out for persisting. Entries stay in the
    // unstable tail until reported durable, so storage need not serve them before that.
    handed_entry: Option<(u64, u64)>,
    // Index of the unstable snapshot handed out (0: none).
    handed_snapshot: u64,
    max_committed_size_per_ready: u64,
}

impl<S: Storage> RawNode<S> {
    /// A node configured by `config` over `store` (which holds its restored state).
    pub fn new(config: &Config, store: S) -> Result<RawNode<S>> {
        let raft = Raft::new(config, store)?;
        let prev_hs = raft.hard_state();
        let prev_ss = raft.soft_state();
        let commit_since_index = raft.raft_log.applied;
        Ok(RawNode {
            raft,
            prev_ss,
            prev_hs,
            max_number: 0,
            records: VecDeque::new(),
            commit_since_index,
            handed_entry: None,
            handed_snapshot: 0,
            max_committed_size_per_ready: config.max_committed_size_per_ready,
        })
    }

    /// Advances the logical clock one tick. Returns whether there is probably work to do.
    pub fn tick(&mut self) -> bool {
        self.raft.tick()
    }

    /// The highest index up to which the log the application was given (entries reported
    /// durable, or handed out in a `Ready` for persisting) agrees with the Raft log. An
    /// application that persists a hard state outside the `Ready` that reported it (for
    /// example a commit index it wrote later, with other records) must cap its commit here: a
    /// follower's commit index may cover entries not handed out yet, and the log it recovers
    /// from may still hold conflicting entries at those indexes.
    pub fn handed_index(&self) -> u64 {
        let log = &self.raft.raft_log;
        let mut index = log.persisted;
        if let Some((i, t)) = self.handed_entry {
            if log.match_term(i, t) {
                index = index.max(i);
            }
        }
        if self.handed_snapshot > 0
            && log
                .unstable
                .snapshot
                .as_ref()
                .is_some_and(|s| s.metadata.index == self.handed_snapshot)
        {
            index = index.max(self.handed_snapshot);
        }
        index
    }

    /// A leader sends a heartbeat to every peer now (it carries the commit index each peer can
    /// take); anyone else does nothing. With [`crate::Config::skip_bcast_commit`], this is how
    /// an application spreads a new commit index sooner than the next heartbeat.
    pub fn ping(&mut self) {
        if self.raft.state == crate::StateRole::Leader {
            self.raft.bcast_heartbeat();
        }
    }

    /// Campaigns to become leader now.
    pub fn campaign(&mut self) -> Result<()> {
        self.raft.step(Message {
            msg_type: MessageType::MsgHup,
            ..Default::default()
        })
    }

    /// Proposes `data` (with `context`) to be appended to the log. `ProposalDropped` if there is
    /// no leader, a leadership transfer is under way, or the uncommitted limit is reached.
    ///
    /// On a leader with [`Config::batch_append`], the entry is only appended here: the appends
    /// carrying it to the peers are built when the next [`Ready`] (or [`LightReady`]) is, one
    /// per peer for all the entries proposed since, and are in its `messages()`.
    pub fn propose(&mut self, context: Vec<u8>, data: Vec<u8>) -> Result<()> {
        let e = Entry {
            data: data.into(),
            context: context.into(),
            ..Default::default()
        };
        if self.raft.state == StateRole::Leader {
            // What stepping the `MsgPropose` below does on a leader, without the message.
            return self.raft.propose_normal_entry(e);
        }
        self.raft.step(Message {
            msg_type: MessageType::MsgPropose,
            from: self.raft.id,
            entries: vec![e],
            ..Default::default()
        })
    }

    /// Proposes a membership change. On the leader it is validated against the latest
    /// configuration: an invalid change, one while another is pending, or one removing the
    /// leader itself (transfer leadership first) is refused with `ConfChangeError`.
    pub fn propose_conf_change(
        &mut self,
        context: Vec<u8>,
        cc: impl Into<ConfChangeI>,
    ) -> Result<()> {
        let (entry_type, data) = match cc.into() {
            ConfChangeI::V1(cc) => (EntryType::EntryConfChange, cc.encode_to_vec()),
            ConfChangeI::V2(cc) => (EntryType::EntryConfChangeV2, cc.encode_to_vec()),
        };
        let e = Entry {
            entry_type,
            data: data.into(),
            context: context.into(),
            ..Default::default()
        };
        self.raft.step(Message {
            msg_type: MessageType::MsgPropose,
            from: self.raft.id,
            entries: vec![e],
            ..Default::default()
        })
    }

    /// Steps a message received from a peer. Local message types are refused
    /// (`StepLocalMsg`), as are responses from unknown peers (`StepPeerNotFound`).
    pub fn step(&mut self, m: Message) -> Result<()> {
        if m.msg_type.is_local() {
            return Err(Error::StepLocalMsg);
        }
        if self.raft.prs().get(m.from).is_none() && m.msg_type.is_response() {
            return Err(Error::StepPeerNotFound);
        }
        self.raft.step(m)
    }

    /// Applies a committed membership change; returns the new configuration (persist it).
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        self.raft.apply_conf_change(cc)
    }

    /// [`RawNode::apply_conf_change`] for a V1 change.
    pub fn apply_conf_change_v1(&mut self, cc: &ConfChange) -> Result<ConfState> {
        self.raft.apply_conf_change(&cc.clone().into())
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leader(&mut self, to: u64) {
        let m = Message {
            msg_type: MessageType::MsgTransferLeader,
            from: to,
            ..Default::default()
        };
        let _ = self.raft.step(m);
    }

    /// Requests a read index; the answer comes as a [`ReadState`] carrying `ctx` in a later
    /// Ready. Reusing a pending `ctx` replaces the earlier request.
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        let e = Entry {
            data: ctx.into(),
            ..Default::default()
        };
        let m = Message {
            msg_type: MessageType::MsgReadIndex,
            entries: vec![e],
            ..Default::default()
        };
        let _ = self.raft.step(m);
    }

    /// The node's status; the leader includes every peer's progress.
    pub fn status(&self) -> Status {
        Status {
            id: self.raft.id,
            hs: self.raft.hard_state(),
            ss: self.raft.soft_state(),
            applied: self.raft.raft_log.applied,
            progress: (self.raft.state == StateRole::Leader).then(|| self.raft.prs().clone()),
        }
    }

    /// Tells the leader that `id` could not be reached (its appends were likely lost).
    pub fn report_unreachable(&mut self, id: u64) {
        let _ = self.raft.step(Message {
            msg_type: MessageType::MsgUnreachable,
            from: id,
            ..Default::default()
        });
    }

    /// Tells the leader how sending a snapshot to `id` ended.
    pub fn report_snapshot(&mut self, id: u64, status: SnapshotStatus) {
        let reject = status == SnapshotStatus::Failure;
        let _ = self.raft.step(Message {
            msg_type: MessageType::MsgSnapStatus,
            from: id,
            reject,
            ..Default::default()
        });
    }

    /// Follower: asks the leader for a snapshot at or after `request_index`.
    pub fn request_snapshot(&mut self, request_index: u64) -> Result<()> {
        self.raft.request_snapshot(request_index)
    }

    /// The storage.
    pub fn store(&self) -> &S {
        self.raft.raft_log.store()
    }

    /// The storage, mutable.
    pub fn mut_store(&mut self) -> &mut S {
        self.raft.raft_log.mut_store()
    }

    /// Whether to skip broadcasting appends that only spread a new commit index.
    pub fn skip_bcast_commit(&mut self, skip: bool) {
        self.raft.skip_bcast_commit = skip;
    }

    /// Sets this node's election priority.
    pub fn set_priority(&mut self, priority: i64) {
        self.raft.set_priority(priority);
    }
}

impl<S: Storage> RawNode<S> {
    /// Whether [`RawNode::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        raft.soft_state() != self.prev_ss
            || raft.hard_state() != self.prev_hs
            || !raft.read_states.is_empty()
            || !raft.msgs.is_empty()
            || raft.appends_pending
            || !raft.msgs_after_persist.is_empty()
            || !self.unhanded_entries().is_empty()
            || self.unhanded_snapshot().is_some()
            || raft
                .raft_log
                .has_next_entries_since(self.commit_since_index)
    }

    /// The next batch of work. Each Ready must be passed to [`RawNode::advance`],
    /// [`RawNode::advance_append`] or [`RawNode::advance_append_async`] before the next call.
    pub fn ready(&mut self) -> Ready {
        self.raft.flush_pending_appends();
        self.max_number += 1;
        let number = self.max_number;
        let mut rd = Ready {
            number,
            ..Default::default()
        };
        let mut rec = ReadyRecord {
            number,
            ..Default::default()
        };
        let ss = self.raft.soft_state();
        if ss != self.prev_ss {
            rd.ss = Some(ss);
            self.prev_ss = ss;
        }
        let hs = self.raft.hard_state();
        if hs != self.prev_hs {
            rd.must_sync |= hs.term != self.prev_hs.term || hs.vote != self.prev_hs.vote;
            rd.hs = Some(hs);
            self.prev_hs = hs;
        }
        if let Some(snap) = self.unhanded_snapshot() {
            let (index, term) = (snap.metadata.index, snap.metadata.term);
            rd.snapshot = snap.clone();
            rec.snapshot = Some((index, term));
            rd.must_sync = true;
            self.handed_snapshot = index;
            // Entries up to the snapshot are applied by installing it.
            self.commit_since_index = self.commit_since_index.max(index);
        }
        rd.entries = self.unhanded_entries().to_vec();
        if let Some(e) = rd.entries.last() {
            rec.last_entry = Some((e.index, e.term));
            self.handed_entry = rec.last_entry;
            rd.must_sync = true;
        }
        rd.committed_entries = self.take_committed_entries();
        rd.read_states = std::mem::take(&mut self.raft.read_states);
        rd.messages = take_keeping_capacity(&mut self.raft.msgs);
        rd.persisted_messages = take_keeping_capacity(&mut self.raft.msgs_after_persist);
        self.records.push_back(rec);
        rd
    }

    /// The unstable entries not yet handed out: those after the last handed one, or all of
    /// them if that entry was overwritten since (a conflicting append or a snapshot).
    fn unhanded_entries(&self) -> &[Entry] {
        let ents = self.raft.raft_log.unstable_entries();
        let Some((index, term)) = self.handed_entry else {
            return ents;
        };
        let Some(first) = ents.first() else {
            return ents;
        };
        if index < first.index || !self.raft.raft_log.match_term(index, term) {
            return ents;
        }
        let skip = ((index + 1 - first.index) as usize).min(ents.len());
        &ents[skip..]
    }

    fn unhanded_snapshot(&self) -> Option<&Snapshot> {
        self.raft
            .raft_log
            .unstable_snapshot()
            .filter(|s| s.metadata.index != self.handed_snapshot)
    }

    fn take_committed_entries(&mut self) -> Vec<Entry> {
        let max = Some(self.max_committed_size_per_ready);
        let Some(ents) = self
            .raft
            .raft_log
            .next_entries_since(self.commit_since_index, max)
        else {
            return Vec::new();
        };
        if let Some(last) = ents.last() {
            self.commit_since_index = last.index;
        }
        self.raft.reduce_uncommitted_size(&ents);
        ents
    }

    /// Handles a Ready synchronously: its writes are durable and its committed entries will be
    /// applied. Returns what followed from that; apply its committed entries, send its
    /// messages, then call [`RawNode::advance_apply`].
    pub fn advance(&mut self, rd: Ready) -> LightReady {
        let applied = self.commit_since_index;
        let light = self.advance_append(rd);
        self.advance_apply_to(applied);
        light
    }

    /// Like [`RawNode::advance`] but does not mark committed entries applied: call
    /// [`RawNode::advance_apply`] once they are.
    pub fn advance_append(&mut self, rd: Ready) -> LightReady {
        let number = rd.number;
        self.advance_append_async(rd);
        self.on_persist_ready(number);
        self.gen_light_ready()
    }

    /// The writes of `rd` were submitted and will become durable later; call
    /// [`RawNode::on_persist_ready`] with its number then. Until that call raftlog serves the
    /// entries from memory: storage need not return them yet.
    pub fn advance_append_async(&mut self, rd: Ready) {
        assert!(
            self.records.iter().any(|r| r.number == rd.number),
            "advance of unknown or already persisted Ready {}",
            rd.number
        );
    }

    /// Every Ready up to `number` is durable and readable through [`Storage`]: entries count
    /// as persisted (the leader's own toward commit), and their persisted messages may be
    /// sent.
    pub fn on_persist_ready(&mut self, number: u64) {
        let (mut last, mut snap) = (None, None);
        while let Some(rec) = self.records.front() {
            if rec.number > number {
                break;
            }
            let rec = self.records.pop_front().expect("front exists");
            snap = rec.snapshot.or(snap);
            last = rec.last_entry.or(last);
        }
        if let Some((index, _)) = snap {
            self.raft.on_persist_snap(index);
        }
        if let Some((index, term)) = last {
            self.raft.on_persist_entries(index, term);
        }
    }

    fn gen_light_ready(&mut self) -> LightReady {
        self.raft.flush_pending_appends();
        let mut light = LightReady::default();
        let commit = self.raft.raft_log.committed;
        if commit != self.prev_hs.commit {
            light.commit_index = Some(commit);
            self.prev_hs.commit = commit;
        }
        light.committed_entries = self.take_committed_entries();
        light.messages = std::mem::take(&mut self.raft.msgs);
        light
    }

    /// Every committed entry handed out so far is applied.
    pub fn advance_apply(&mut self) {
        let applied = self.commit_since_index;
        self.advance_apply_to(applied);
    }

    /// Entries up to `applied` are applied.
    pub fn advance_apply_to(&mut self, applied: u64) {
        self.raft.commit_apply(applied);
    }
}

/// Takes the queued messages, leaving a queue sized for as many (the next Ready usually has
/// about as many, and growing a vector of large messages one doubling at a time is costly).
fn take_keeping_capacity(msgs: &mut Vec<Message>) -> Vec<Message> {
    let len = msgs.len();
    std::mem::replace(msgs, Vec::with_capacity(len))
}

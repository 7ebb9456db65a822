//! The Raft state machine of one node: [`Raft`].
//!
//! [`Raft::step`] is a dispatcher: it settles the term of an incoming message (mod.rs), then
//! hands it to the role's handler: [`leader`], [`candidate`] or [`follower`]. Elections live in
//! [`election`], log replication in [`replication`], ReadIndex in [`read`], membership in
//! [`conf`], leadership transfer in [`transfer`].

mod candidate;
mod conf;
mod election;
mod follower;
mod leader;
mod read;
mod replication;
mod transfer;

use std::collections::VecDeque;

use crate::confchange;
use crate::config::Config;
use crate::errors::Result;
use crate::raft_log::RaftLog;
use crate::read_only::ReadOnly;
use crate::rng::Rng;
use crate::status::{ReadState, SoftState, StateRole};
use crate::storage::Storage;
use crate::tracker::{ProgressState, ProgressTracker};
use crate::types::{HardState, Message, MessageType};

/// The context of a `MsgRequestVote` sent because of a leadership transfer: it overrides the
/// voters' leader lease.
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

/// The most ReadIndex requests a new leader queues before its first commit in its term.
const PENDING_READ_INDEX_MAX: usize = 4096;

/// One Raft node: its persistent and volatile state, its log and (as leader) its view of the
/// followers. Driven through [`crate::RawNode`]; fields are public for introspection.
pub struct Raft<S: Storage> {
    /// This node's id.
    pub id: u64,
    /// The current term.
    pub term: u64,
    /// Who this node voted for in `term` (0: nobody).
    pub vote: u64,
    /// The current role.
    pub state: StateRole,
    /// The known leader of `term` (0: none).
    pub leader_id: u64,
    /// The log.
    pub raft_log: RaftLog<S>,
    /// The peer leadership is being transferred to, if any (leader only).
    pub lead_transferee: Option<u64>,
    /// Index of the last conf change in the log as far as this leader knows; a new conf change
    /// is refused until `applied` reaches it.
    pub pending_conf_index: u64,
    /// Answers to ReadIndex requests, handed out in the next `Ready`.
    pub read_states: Vec<ReadState>,
    /// Messages that may be sent at once (the leader's appends, heartbeats, ...).
    pub msgs: Vec<Message>,
    /// Messages to send only after the state and entries of the next `Ready` are persisted
    /// (votes, append responses, anything a follower sends).
    pub msgs_after_persist: Vec<Message>,
    /// Ticks since the last election timeout reset.
    pub election_elapsed: usize,
    /// Ticks since the last heartbeat (leader).
    pub heartbeat_elapsed: usize,
    /// See [`Config::check_quorum`].
    pub check_quorum: bool,
    /// See [`Config::pre_vote`].
    pub pre_vote: bool,
    /// See [`Config::skip_bcast_commit`].
    pub skip_bcast_commit: bool,
    /// See [`Config::batch_append`].
    pub batch_append: bool,
    /// Leader with `batch_append`: entries proposed through [`crate::RawNode::propose`] since
    /// the last [`Raft::flush_pending_appends`] have not been offered to the peers yet.
    pub appends_pending: bool,
    /// See [`Config::priority`].
    pub priority: i64,
    /// Heartbeat interval in ticks.
    pub heartbeat_timeout: usize,
    /// Election timeout in ticks (the base; see `randomized_election_timeout`).
    pub election_timeout: usize,
    /// See [`Config::max_size_per_msg`].
    pub max_msg_size: u64,
    /// See [`Config::max_uncommitted_size`].
    pub max_uncommitted_size: u64,
    /// Payload bytes appended by this leader and not yet committed.
    pub uncommitted_size: u64,
    /// Whether this node may campaign (it is a voter).
    pub promotable: bool,
    /// A snapshot this follower asked for (0: none).
    pub pending_request_snapshot: u64,
    /// Ticks left in which this follower campaigns for a leadership transfer it could not
    /// start yet (0: none; see [`Raft::commit_apply`]).
    pub(crate) transfer_campaign_ticks: usize,
    pub(crate) read_only: ReadOnly,
    prs: ProgressTracker,
    randomized_election_timeout: usize,
    min_election_timeout: usize,
    max_election_timeout: usize,
    max_inflight_msgs: usize,
    max_inflight_bytes: u64,
    rng: Rng,
    // ReadIndex requests that reached this leader before it committed an entry of its term.
    pending_read_index: VecDeque<Message>,
}

impl<S: Storage> Raft<S> {
    /// A node restored from `store` (hard state, configuration, log) and configured by `c`.
    pub fn new(c: &Config, store: S) -> Result<Raft<S>> {
        c.validate()?;
        let rs = store.initial_state()?;
        let mut raft_log = RaftLog::new(store);
        raft_log.max_apply_unpersisted_log_limit = c.max_apply_unpersisted_log_limit;
        let mut prs = ProgressTracker::new(c.max_inflight_msgs, c.max_inflight_bytes);
        confchange::restore(&mut prs, raft_log.last_index() + 1, &rs.conf_state)?;
        let mut r = Raft {
            id: c.id,
            term: 0,
            vote: 0,
            state: StateRole::Follower,
            leader_id: 0,
            raft_log,
            lead_transferee: None,
            pending_conf_index: 0,
            read_states: Vec::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            check_quorum: c.check_quorum,
            pre_vote: c.pre_vote,
            skip_bcast_commit: c.skip_bcast_commit,
            batch_append: c.batch_append,
            appends_pending: false,
            priority: c.priority,
            heartbeat_timeout: c.heartbeat_tick,
            election_timeout: c.election_tick,
            max_msg_size: c.max_size_per_msg,
            max_uncommitted_size: c.max_uncommitted_size,
            uncommitted_size: 0,
            promotable: false,
            pending_request_snapshot: 0,
            transfer_campaign_ticks: 0,
            read_only: ReadOnly::new(c.read_only_option),
            prs,
            randomized_election_timeout: 0,
            min_election_timeout: c.min_election_tick(),
            max_election_timeout: c.max_election_tick(),
            max_inflight_msgs: c.max_inflight_msgs,
            max_inflight_bytes: c.max_inflight_bytes,
            rng: Rng::new(c.rng_seed, c.id),
            pending_read_index: VecDeque::new(),
        };
        r.promotable = r.prs.conf().voters.contains(r.id);
        if !rs.hard_state.is_empty() {
            r.load_state(&rs.hard_state);
        }
        if c.applied > 0 {
            r.commit_apply(c.applied);
        }
        let term = r.term;
        r.become_follower(term, 0);
        tracing::info!(
            id = r.id,
            term = r.term,
            commit = r.raft_log.committed,
            "raft node started"
        );
        Ok(r)
    }

    fn load_state(&mut self, hs: &HardState) {
        let last = self.raft_log.last_index();
        assert!(
            hs.commit >= self.raft_log.committed && hs.commit <= last,
            "hard state commit {} out of range [{}, {}]",
            hs.commit,
            self.raft_log.committed,
            last
        );
        self.raft_log.committed = hs.commit;
        self.term = hs.term;
        self.vote = hs.vote;
    }

    /// The replication progress of every peer (meaningful on the leader).
    pub fn prs(&self) -> &ProgressTracker {
        &self.prs
    }

    /// Mutable access to the progress tracker.
    pub fn mut_prs(&mut self) -> &mut ProgressTracker {
        &mut self.prs
    }

    /// The volatile state.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            raft_state: self.state,
        }
    }

    /// The state to persist.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.raft_log.committed,
        }
    }

    /// The current randomized election timeout in ticks.
    pub fn randomized_election_timeout(&self) -> usize {
        self.randomized_election_timeout
    }

    /// Whether this node is a learner.
    pub fn is_learner(&self) -> bool {
        self.prs.conf().learners.contains(&self.id)
    }

    /// Queues `m` for sending, stamping `from` and (except for votes, proposals and read
    /// requests, whose term is set by the caller or absent) the current term.
    pub(crate) fn send(&mut self, mut m: Message) {
        use MessageType::*;
        m.from = self.id;
        match m.msg_type {
            MsgRequestVote
            | MsgRequestPreVote
            | MsgRequestVoteResponse
            | MsgRequestPreVoteResponse => {
                assert_ne!(m.term, 0, "vote message {:?} without a term", m.msg_type);
            }
            MsgPropose | MsgReadIndex => m.term = 0,
            _ => m.term = self.term,
        }
        let immediate = self.state == StateRole::Leader
            && matches!(
                m.msg_type,
                MsgAppend | MsgHeartbeat | MsgSnapshot | MsgTimeoutNow | MsgReadIndexResp
            );
        if immediate {
            self.msgs.push(m);
        } else {
            self.msgs_after_persist.push(m);
        }
    }

    /// Advances the logical clock by one tick. Returns whether it produced work (messages or a
    /// role change).
    pub fn tick(&mut self) -> bool {
        let before = (
            self.msgs.len(),
            self.msgs_after_persist.len(),
            self.state,
            self.term,
        );
        if self.state == StateRole::Leader {
            self.tick_heartbeat();
        } else {
            self.tick_election();
        }
        before
            != (
                self.msgs.len(),
                self.msgs_after_persist.len(),
                self.state,
                self.term,
            )
    }

    fn tick_election(&mut self) {
        self.transfer_campaign_ticks = self.transfer_campaign_ticks.saturating_sub(1);
        self.election_elapsed += 1;
        if self.promotable && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            let m = Message {
                msg_type: MessageType::MsgHup,
                from: self.id,
                ..Default::default()
            };
            let _ = self.step(m);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            if self.check_quorum {
                let m = Message {
                    msg_type: MessageType::MsgCheckQuorum,
                    from: self.id,
                    ..Default::default()
                };
                let _ = self.step(m);
            }
            if self.state == StateRole::Leader && self.lead_transferee.is_some() {
                self.abort_leader_transfer();
            }
        }
        if self.state != StateRole::Leader {
            return;
        }
        if self.heartbeat_elapsed >= self.heartbeat_timeout {
            self.heartbeat_elapsed = 0;
            let m = Message {
                msg_type: MessageType::MsgBeat,
                from: self.id,
                ..Default::default()
            };
            let _ = self.step(m);
        }
    }

    /// Processes one message: settles its term, then dispatches by type and role.
    pub fn step(&mut self, m: Message) -> Result<()> {
        if !self.step_term(&m) {
            return Ok(());
        }
        match m.msg_type {
            MessageType::MsgHup => {
                self.hup(false);
                Ok(())
            }
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                self.handle_vote_request(m);
                Ok(())
            }
            _ => match self.state {
                StateRole::Leader => self.step_leader(m),
                StateRole::Candidate | StateRole::PreCandidate => self.step_candidate(m),
                StateRole::Follower => self.step_follower(m),
            },
        }
    }

    /// Compares the message's term with ours: adopts a higher term (unless a lease or pre-vote
    /// rule says otherwise) and answers or drops stale messages. Returns whether to go on.
    fn step_term(&mut self, m: &Message) -> bool {
        use MessageType::*;
        if m.term == 0 || m.term == self.term {
            return true;
        }
        if m.term > self.term {
            if matches!(m.msg_type, MsgRequestVote | MsgRequestPreVote) {
                let forced = m.context.as_ref() == CAMPAIGN_TRANSFER;
                let in_lease = self.check_quorum
                    && self.leader_id != 0
                    && self.election_elapsed < self.election_timeout;
                if !forced && in_lease {
                    tracing::debug!(
                        id = self.id,
                        term = self.term,
                        from = m.from,
                        "vote ignored: leader lease"
                    );
                    return false;
                }
            }
            let keep_term = m.msg_type == MsgRequestPreVote
                || (m.msg_type == MsgRequestPreVoteResponse && !m.reject);
            if !keep_term {
                let leader = if matches!(m.msg_type, MsgAppend | MsgHeartbeat | MsgSnapshot) {
                    m.from
                } else {
                    0
                };
                self.become_follower(m.term, leader);
            }
            return true;
        }
        // A stale message. Tell a deposed leader about the newer term so it steps down (with
        // check-quorum or pre-vote, a partitioned node's term may lag and it must be told).
        if (self.check_quorum || self.pre_vote) && matches!(m.msg_type, MsgHeartbeat | MsgAppend) {
            self.send(Message {
                to: m.from,
                msg_type: MsgAppendResponse,
                ..Default::default()
            });
        } else if m.msg_type == MsgRequestPreVote {
            let term = self.term;
            self.send(Message {
                to: m.from,
                msg_type: MsgRequestPreVoteResponse,
                term,
                reject: true,
                ..Default::default()
            });
        }
        false
    }

    /// Starts a new term (or keeps the current one) with every volatile field reset.
    pub(crate) fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = 0;
        }
        self.leader_id = 0;
        self.appends_pending = false;
        self.reset_randomized_election_timeout();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.transfer_campaign_ticks = 0;
        self.abort_leader_transfer();
        self.prs.reset_votes();
        self.pending_conf_index = 0;
        self.uncommitted_size = 0;
        self.read_only = ReadOnly::new(self.read_only.option);
        self.pending_read_index.clear();
        let (last, persisted, id) = (self.raft_log.last_index(), self.raft_log.persisted, self.id);
        for (pid, pr) in self.prs.iter_mut() {
            pr.reset_state(ProgressState::Probe);
            pr.matched = if *pid == id { persisted } else { 0 };
            pr.next_idx = last + 1;
            pr.pending_request_snapshot = 0;
            pr.recent_active = false;
            pr.committed_index = 0;
        }
    }

    pub(crate) fn reset_randomized_election_timeout(&mut self) {
        self.randomized_election_timeout = self
            .rng
            .gen_range(self.min_election_timeout, self.max_election_timeout);
    }

    /// Becomes a follower of `leader` (0: unknown) in `term`.
    pub fn become_follower(&mut self, term: u64, leader: u64) {
        let pending = self.pending_request_snapshot;
        self.reset(term);
        self.leader_id = leader;
        self.state = StateRole::Follower;
        self.pending_request_snapshot = pending;
        tracing::debug!(id = self.id, term, leader, "became follower");
    }

    /// Whether the entry at the commit index is of the current term (a new leader must commit
    /// one before it may serve reads).
    pub(crate) fn committed_entry_in_current_term(&self) -> bool {
        self.raft_log.term(self.raft_log.committed).unwrap_or(0) == self.term
    }

    /// The application applied everything up to `applied`.
    ///
    /// A follower that was asked to campaign for a leadership transfer (`MsgTimeoutNow`) while
    /// it could not (a committed conf change not yet applied here, such as the removal of
    /// another peer, or its own promotion from learner not yet applied or not yet known
    /// committed) campaigns once it can, if that is at most an election timeout later and the
    /// term has not changed: the leader keeps the transfer open (and refuses proposals) that
    /// long. etcd and raft-rs drop such a request, and the transfer then lapses: an operator
    /// who transfers leadership right after a membership change saw nothing happen.
    pub fn commit_apply(&mut self, applied: u64) {
        let old_applied = self.raft_log.applied;
        self.raft_log.applied_to(applied);
        self.maybe_auto_leave_joint(old_applied, applied);
        if self.transfer_campaign_ticks > 0
            && self.state == StateRole::Follower
            && self.promotable
            && !self.has_unapplied_conf_change()
        {
            self.transfer_campaign_ticks = 0;
            tracing::info!(
                id = self.id,
                term = self.term,
                applied,
                "conf changes applied: campaigning for the transfer asked earlier"
            );
            self.hup(true);
        }
    }

    /// Entries up to (`index`, `term`) are durable (and in storage).
    pub fn on_persist_entries(&mut self, index: u64, term: u64) {
        self.raft_log.stable_entries(index, term);
        if !self.raft_log.maybe_persist(index, term) || self.state != StateRole::Leader {
            return;
        }
        let id = self.id;
        let raised = self
            .prs
            .get_mut(id)
            .is_some_and(|pr| pr.maybe_update(index));
        if raised && self.maybe_commit() && self.should_bcast_commit() {
            self.bcast_commit();
        }
    }

    /// The snapshot at `index` is durable.
    pub fn on_persist_snap(&mut self, index: u64) {
        self.raft_log.stable_snap(index);
        self.raft_log.maybe_persist_snap(index);
    }

    /// Sets the election priority.
    pub fn set_priority(&mut self, priority: i64) {
        self.priority = priority;
    }
}

#[cfg(test)]
mod tests;

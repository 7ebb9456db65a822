//! The leader's message handling: proposals, append and heartbeat responses, snapshot status,
//! unreachable peers and the check-quorum round.

use super::Raft;
use crate::errors::{Error, Result};
use crate::storage::Storage;
use crate::tracker::ProgressState;
use crate::types::{EntryType, Message, MessageType};

impl<S: Storage> Raft<S> {
    pub(crate) fn step_leader(&mut self, m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::MsgBeat => {
                self.bcast_heartbeat();
                return Ok(());
            }
            MessageType::MsgCheckQuorum => {
                let id = self.id;
                if !self.mut_prs().quorum_recently_active(id) {
                    tracing::warn!(
                        id,
                        term = self.term,
                        "stepping down: no quorum heard within the election timeout"
                    );
                    let term = self.term;
                    self.become_follower(term, 0);
                }
                return Ok(());
            }
            MessageType::MsgPropose => return self.handle_propose(m),
            MessageType::MsgReadIndex => {
                self.handle_read_index(m);
                return Ok(());
            }
            MessageType::MsgTransferLeader => {
                self.handle_transfer_leader(m);
                return Ok(());
            }
            _ => {}
        }
        if self.prs().get(m.from).is_none() {
            tracing::debug!(id = self.id, from = m.from, msg = ?m.msg_type, "message from unknown peer ignored");
            return Ok(());
        }
        match m.msg_type {
            MessageType::MsgAppendResponse => self.handle_append_response(m),
            MessageType::MsgHeartbeatResponse => self.handle_heartbeat_response(m),
            MessageType::MsgSnapStatus => self.handle_snapshot_status(m),
            MessageType::MsgUnreachable => {
                if let Some(pr) = self.mut_prs().get_mut(m.from) {
                    // Appends were probably lost: probe again rather than stream blindly.
                    if pr.state == ProgressState::Replicate {
                        pr.become_probe();
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A normal entry proposed through [`crate::RawNode::propose`] on the leader: what stepping
    /// a `MsgPropose` carrying it does, without building the message. With `batch_append`, the
    /// entry is only appended; the peers are offered every new entry at once by
    /// [`Raft::flush_pending_appends`] when the next `Ready` is built.
    pub(crate) fn propose_normal_entry(&mut self, e: crate::types::Entry) -> Result<()> {
        debug_assert!(self.state == crate::status::StateRole::Leader);
        debug_assert!(e.entry_type == EntryType::EntryNormal);
        self.check_proposal_accepted()?;
        if !self.append_one_entry(e) {
            return Err(Error::ProposalDropped);
        }
        if self.batch_append {
            self.appends_pending = true;
        } else {
            self.bcast_append();
        }
        Ok(())
    }

    /// Sends every peer what it lacks of the entries proposed since the last flush (as many
    /// appends as its flow control allows), once per `Ready` instead of once per proposal.
    pub fn flush_pending_appends(&mut self) {
        if !std::mem::take(&mut self.appends_pending)
            || self.state != crate::status::StateRole::Leader
        {
            return;
        }
        let peers = self.other_peer_ids();
        for to in peers {
            while self.maybe_send_append(to, false) {}
        }
    }

    fn handle_propose(&mut self, m: Message) -> Result<()> {
        if m.entries.is_empty() {
            return Err(Error::ProposalDropped);
        }
        self.check_proposal_accepted()?;
        self.handle_propose_entries(m)
    }

    /// Whether this leader takes proposals now: not when it was removed from the
    /// configuration or while leadership is being transferred.
    fn check_proposal_accepted(&self) -> Result<()> {
        if self.prs().get(self.id).is_none() {
            // Removed from the configuration: it must not append to the log.
            return Err(Error::ProposalDropped);
        }
        if let Some(to) = self.lead_transferee {
            tracing::debug!(
                id = self.id,
                to,
                "proposal dropped: leadership transfer in progress"
            );
            return Err(Error::ProposalDropped);
        }
        Ok(())
    }

    fn handle_propose_entries(&mut self, m: Message) -> Result<()> {
        let mut conf_changes = 0;
        for e in &m.entries {
            if e.entry_type != EntryType::EntryNormal {
                self.check_conf_change_proposal(e)?;
                conf_changes += 1;
            }
        }
        if conf_changes > 1 {
            return Err(Error::ConfChangeError(
                "only one conf change may be proposed at a time".into(),
            ));
        }
        let count = m.entries.len();
        if !self.append_entry(m.entries) {
            return Err(Error::ProposalDropped);
        }
        if conf_changes == 1 {
            self.pending_conf_index = self.raft_log.last_index();
        }
        self.bcast_new_entries(count);
        Ok(())
    }

    fn handle_append_response(&mut self, m: Message) {
        let from = m.from;
        let last_index = self.raft_log.last_index();
        let Some(pr) = self.mut_prs().get_mut(from) else {
            return;
        };
        pr.recent_active = true;
        pr.update_committed(m.commit);
        if m.reject {
            self.handle_append_reject(m);
            return;
        }
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            // The follower installed the snapshot (or caught up past it): stream from there.
            ProgressState::Snapshot if pr.maybe_snapshot_abort() => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.ins.free_to(m.index),
        }
        let caught_up = pr.matched == last_index;
        let mut sent = false;
        if self.maybe_commit() {
            if self.should_bcast_commit() {
                // Reaches `from` unless it has more appends in flight, whose acks will.
                self.bcast_commit();
                sent = true;
            }
        } else if old_paused {
            sent = self.maybe_send_append(from, true);
        }
        // Keep the pipe full while the window allows.
        while self.maybe_send_append(from, false) {
            sent = true;
        }
        if !sent && self.should_bcast_commit() {
            self.maybe_send_commit(from);
        }
        if self.lead_transferee == Some(from) && caught_up {
            tracing::info!(
                id = self.id,
                to = from,
                "transferee caught up; sending MsgTimeoutNow"
            );
            self.send_timeout_now(from);
        }
    }

    fn handle_append_reject(&mut self, m: Message) {
        let from = m.from;
        // The follower told us the last index where its log may match and that entry's term;
        // skip every leader entry of a higher term in one step (fast backtracking).
        let mut next_probe = m.reject_hint;
        if m.log_term > 0 {
            next_probe = self
                .raft_log
                .find_conflict_by_term(m.reject_hint, m.log_term)
                .0;
        }
        let id = self.id;
        let Some(pr) = self.mut_prs().get_mut(from) else {
            return;
        };
        if pr.maybe_decr_to(m.index, next_probe, m.request_snapshot) {
            tracing::debug!(
                id,
                from,
                rejected = m.index,
                next_probe,
                "append rejected; backing off"
            );
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.send_append(from);
        }
    }

    fn handle_heartbeat_response(&mut self, m: Message) {
        let from = m.from;
        let last_index = self.raft_log.last_index();
        let Some(pr) = self.mut_prs().get_mut(from) else {
            return;
        };
        pr.update_committed(m.commit);
        pr.resume_after_heartbeat();
        // A lagging peer (or one whose snapshot could not be built yet) is retried here.
        if pr.matched < last_index || pr.pending_request_snapshot != 0 {
            self.send_append(from);
        }
        if !m.context.is_empty() {
            self.handle_read_ack(from, &m.context);
        }
    }

    fn handle_snapshot_status(&mut self, m: Message) {
        let Some(pr) = self.mut_prs().get_mut(m.from) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if m.reject {
            pr.snapshot_failure();
            pr.become_probe();
        } else {
            pr.become_probe();
            // Wait for the follower's append response before probing further.
            pr.probe_sent = true;
        }
        tracing::debug!(
            id = self.id,
            to = m.from,
            failed = m.reject,
            "snapshot status"
        );
    }
}

//! Elections: campaigning (with an optional pre-vote round), granting votes, counting them,
//! and the role transitions to candidate and leader.

use bytes::Bytes;

use super::{Raft, CAMPAIGN_TRANSFER};
use crate::quorum::VoteResult;
use crate::status::StateRole;
use crate::storage::Storage;
use crate::types::{Entry, EntryType, Message, MessageType};

/// Why a node campaigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CampaignKind {
    /// A pre-vote round: asks whether peers would vote, without bumping the term.
    PreElection,
    /// A normal election.
    Election,
    /// An election forced by a leadership transfer (overrides the voters' lease).
    Transfer,
}

impl<S: Storage> Raft<S> {
    /// Starts an election (local `MsgHup`, or `MsgTimeoutNow` when `transfer`).
    pub(crate) fn hup(&mut self, transfer: bool) {
        if self.state == StateRole::Leader {
            return;
        }
        if !self.promotable {
            tracing::debug!(id = self.id, "not campaigning: not a voter");
            return;
        }
        if self.has_unapplied_conf_change() {
            tracing::warn!(
                id = self.id,
                term = self.term,
                "not campaigning: conf changes committed but not applied"
            );
            return;
        }
        let kind = if transfer {
            CampaignKind::Transfer
        } else if self.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        };
        self.campaign(kind);
    }

    pub(crate) fn has_unapplied_conf_change(&self) -> bool {
        // Entries below the first index are covered by the snapshot, whose configuration is
        // already installed.
        let lo = (self.raft_log.applied + 1).max(self.raft_log.first_index());
        let hi = self.raft_log.committed + 1;
        if lo >= hi {
            return false;
        }
        match self.raft_log.slice(lo, hi, None) {
            Ok(ents) => ents.iter().any(|e| e.entry_type != EntryType::EntryNormal),
            Err(e) => panic!("unexpected error reading unapplied entries [{lo}, {hi}): {e}"),
        }
    }

    /// Campaigns: becomes (pre-)candidate, votes for itself and asks every other voter.
    pub(crate) fn campaign(&mut self, kind: CampaignKind) {
        let (vote_msg, term) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            (MessageType::MsgRequestPreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::MsgRequestVote, self.term)
        };
        let id = self.id;
        if self.poll(id, vote_msg.vote_response(), true) == VoteResult::Won {
            // A single-voter group wins at once.
            if kind == CampaignKind::PreElection {
                self.campaign(CampaignKind::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let context = if kind == CampaignKind::Transfer {
            Bytes::from_static(CAMPAIGN_TRANSFER)
        } else {
            Bytes::new()
        };
        let (index, log_term) = (self.raft_log.last_index(), self.raft_log.last_term());
        let (commit, commit_term) = self.raft_log.commit_info();
        let voters: Vec<u64> = self
            .prs()
            .conf()
            .voters
            .ids()
            .into_iter()
            .filter(|v| *v != id)
            .collect();
        for to in voters {
            self.send(Message {
                msg_type: vote_msg,
                to,
                term,
                index,
                log_term,
                commit,
                commit_term,
                context: context.clone(),
                priority: self.priority,
                ..Default::default()
            });
        }
    }

    /// Records a vote and returns the tally's outcome.
    pub(crate) fn poll(&mut self, from: u64, t: MessageType, granted: bool) -> VoteResult {
        self.mut_prs().record_vote(from, granted);
        let (gr, rj, res) = self.mut_prs().tally_votes();
        tracing::debug!(
            id = self.id,
            term = self.term,
            from,
            ?t,
            granted,
            gr,
            rj,
            ?res,
            "vote tallied"
        );
        res
    }

    /// Answers a vote or pre-vote request (the term was settled by `step`).
    pub(crate) fn handle_vote_request(&mut self, m: Message) {
        let can_vote = self.vote == m.from
            || (self.vote == 0 && self.leader_id == 0)
            || (m.msg_type == MessageType::MsgRequestPreVote && m.term > self.term);
        let up_to_date = self.raft_log.is_up_to_date(m.index, m.log_term);
        // With equally long logs, do not help a lower-priority candidate win.
        let priority_ok = m.index > self.raft_log.last_index() || self.priority <= m.priority;
        let resp_type = m.msg_type.vote_response();
        if can_vote && up_to_date && priority_ok {
            // A pre-vote answer carries the candidate's future term, so it counts there.
            self.send(Message {
                to: m.from,
                msg_type: resp_type,
                term: m.term,
                ..Default::default()
            });
            if m.msg_type == MessageType::MsgRequestVote {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            let term = self.term;
            self.send(Message {
                to: m.from,
                msg_type: resp_type,
                term,
                reject: true,
                ..Default::default()
            });
        }
    }

    /// Becomes a candidate: bumps the term and votes for itself.
    pub fn become_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "a leader cannot become candidate directly"
        );
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.state = StateRole::Candidate;
        tracing::info!(id = self.id, term, "became candidate");
    }

    /// Becomes a pre-candidate: the term and vote stay as they are.
    pub fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Leader,
            "a leader cannot become pre-candidate directly"
        );
        self.state = StateRole::PreCandidate;
        self.mut_prs().reset_votes();
        self.leader_id = 0;
        tracing::info!(id = self.id, term = self.term, "became pre-candidate");
    }

    /// Becomes leader of the current term and appends the empty entry that commits the log.
    pub fn become_leader(&mut self) {
        assert_ne!(
            self.state,
            StateRole::Follower,
            "a follower cannot become leader directly"
        );
        let term = self.term;
        self.reset(term);
        self.leader_id = self.id;
        self.state = StateRole::Leader;
        let id = self.id;
        if let Some(pr) = self.mut_prs().get_mut(id) {
            pr.become_replicate();
            pr.recent_active = true;
        }
        // Conf changes in the uncommitted tail may still apply: refuse new ones until then.
        self.pending_conf_index = self.raft_log.last_index();
        let noop = Entry {
            entry_type: EntryType::EntryNormal,
            term,
            index: 0,
            ..Default::default()
        };
        if !self.append_entry(vec![noop]) {
            panic!("the empty entry of a new leader cannot exceed the uncommitted limit");
        }
        tracing::info!(id, term, "became leader");
    }
}

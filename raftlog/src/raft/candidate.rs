//! The (pre-)candidate's message handling: counting votes, and yielding to a leader.

use super::election::CampaignKind;
use super::Raft;
use crate::errors::{Error, Result};
use crate::quorum::VoteResult;
use crate::status::StateRole;
use crate::storage::Storage;
use crate::types::{Message, MessageType};

impl<S: Storage> Raft<S> {
    pub(crate) fn step_candidate(&mut self, m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::MsgPropose => {
                tracing::debug!(
                    id = self.id,
                    term = self.term,
                    "proposal dropped: no leader"
                );
                return Err(Error::ProposalDropped);
            }
            // A message of the current term from a leader: it won this term.
            MessageType::MsgAppend => {
                self.become_follower(m.term, m.from);
                self.handle_append_entries(m);
            }
            MessageType::MsgHeartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m);
            }
            MessageType::MsgSnapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m);
            }
            MessageType::MsgRequestPreVoteResponse | MessageType::MsgRequestVoteResponse => {
                self.handle_vote_response(m);
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_vote_response(&mut self, m: Message) {
        // Only answers to this round's kind of request count.
        let expected = match self.state {
            StateRole::PreCandidate => MessageType::MsgRequestPreVoteResponse,
            _ => MessageType::MsgRequestVoteResponse,
        };
        if m.msg_type != expected {
            return;
        }
        match self.poll(m.from, m.msg_type, !m.reject) {
            VoteResult::Won => {
                if self.state == StateRole::PreCandidate {
                    self.campaign(CampaignKind::Election);
                } else {
                    self.become_leader();
                    self.bcast_append();
                }
            }
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, 0);
            }
            VoteResult::Pending => {}
        }
    }
}

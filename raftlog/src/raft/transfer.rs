//! Leadership transfer: the leader brings the transferee's log up to date, then tells it to
//! campaign at once (`MsgTimeoutNow`); the transfer is abandoned after an election timeout.

use super::Raft;
use crate::storage::Storage;
use crate::types::{Message, MessageType};

impl<S: Storage> Raft<S> {
    pub(crate) fn handle_transfer_leader(&mut self, m: Message) {
        let transferee = m.from;
        if !self.prs().conf().voters.contains(transferee) {
            tracing::debug!(id = self.id, transferee, "transfer ignored: not a voter");
            return;
        }
        if let Some(current) = self.lead_transferee {
            if current == transferee {
                return;
            }
            self.abort_leader_transfer();
        }
        if transferee == self.id {
            return;
        }
        // The transfer must finish within one election timeout.
        self.election_elapsed = 0;
        self.lead_transferee = Some(transferee);
        let caught_up = self
            .prs()
            .get(transferee)
            .is_some_and(|pr| pr.matched == self.raft_log.last_index());
        tracing::info!(
            id = self.id,
            term = self.term,
            transferee,
            caught_up,
            "transferring leadership"
        );
        if caught_up {
            self.send_timeout_now(transferee);
        } else {
            self.send_append(transferee);
        }
    }

    pub(crate) fn send_timeout_now(&mut self, to: u64) {
        self.send(Message {
            msg_type: MessageType::MsgTimeoutNow,
            to,
            ..Default::default()
        });
    }

    /// Gives up a leadership transfer in progress (proposals are accepted again).
    pub fn abort_leader_transfer(&mut self) {
        self.lead_transferee = None;
    }
}

//! The follower's message handling: entries, heartbeats and snapshots from the leader, and
//! forwarding of proposals, transfer and read requests to it.

use super::{Raft, StateRole};
use crate::errors::{Error, Result};
use crate::status::ReadState;
use crate::storage::Storage;
use crate::types::{Message, MessageType};

impl<S: Storage> Raft<S> {
    pub(crate) fn step_follower(&mut self, mut m: Message) -> Result<()> {
        match m.msg_type {
            MessageType::MsgPropose => {
                if self.leader_id == 0 {
                    tracing::debug!(
                        id = self.id,
                        term = self.term,
                        "proposal dropped: no leader"
                    );
                    return Err(Error::ProposalDropped);
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::MsgAppend => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append_entries(m);
            }
            MessageType::MsgHeartbeat => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(m);
            }
            MessageType::MsgSnapshot => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m);
            }
            MessageType::MsgTransferLeader => {
                if self.leader_id == 0 {
                    tracing::debug!(id = self.id, "transfer request dropped: no leader");
                    return Ok(());
                }
                // `from` names the transferee; keep it and forward the request as is.
                m.to = self.leader_id;
                m.term = self.term;
                self.msgs_after_persist.push(m);
            }
            MessageType::MsgTimeoutNow => {
                tracing::info!(
                    id = self.id,
                    term = self.term,
                    from = m.from,
                    "MsgTimeoutNow: campaigning for transfer"
                );
                self.hup(true);
                if self.state == StateRole::Follower {
                    // Refused: not a voter yet, or a conf change is not applied yet. Campaign
                    // once both hold (see `Raft::commit_apply`).
                    self.transfer_campaign_ticks = self.election_timeout;
                }
            }
            MessageType::MsgReadIndex => {
                if self.leader_id == 0 {
                    tracing::debug!(id = self.id, "read index dropped: no leader");
                    return Ok(());
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::MsgReadIndexResp => {
                if m.entries.len() != 1 {
                    tracing::warn!(
                        id = self.id,
                        n = m.entries.len(),
                        "malformed MsgReadIndexResp ignored"
                    );
                    return Ok(());
                }
                let request_ctx = m.entries[0].data.to_vec();
                self.read_states.push(ReadState {
                    index: m.index,
                    request_ctx,
                });
            }
            _ => {}
        }
        Ok(())
    }
}

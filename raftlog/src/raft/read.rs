//! ReadIndex on the leader: Safe reads confirmed by a heartbeat quorum, lease-based reads
//! answered at once, and the queue of requests that arrive before the leader's first commit in
//! its term (queued, not dropped: the commit index is only known to be current after it).

use super::{Raft, PENDING_READ_INDEX_MAX};
use crate::config::ReadOnlyOption;
use crate::status::ReadState;
use crate::storage::Storage;
use crate::types::{Message, MessageType};

impl<S: Storage> Raft<S> {
    pub(crate) fn handle_read_index(&mut self, m: Message) {
        if m.entries.len() != 1 {
            tracing::warn!(
                id = self.id,
                n = m.entries.len(),
                "malformed MsgReadIndex ignored"
            );
            return;
        }
        if !self.committed_entry_in_current_term() {
            if self.pending_read_index.len() >= PENDING_READ_INDEX_MAX {
                tracing::warn!(
                    id = self.id,
                    "read index dropped: too many queued before the first commit"
                );
                return;
            }
            self.pending_read_index.push_back(m);
            return;
        }
        let index = self.raft_log.committed;
        if self.prs().is_singleton() {
            self.respond_read_index(m, index);
            return;
        }
        match self.read_only.option {
            ReadOnlyOption::Safe => {
                let ctx = m.entries[0].data.to_vec();
                let id = self.id;
                self.read_only.add_request(ctx.clone(), index, m, id);
                self.bcast_heartbeat_with_ctx(Some(ctx));
            }
            ReadOnlyOption::LeaseBased => self.respond_read_index(m, index),
        }
    }

    /// A heartbeat carrying `ctx` was acknowledged by `from`: answer every read it confirms.
    pub(crate) fn handle_read_ack(&mut self, from: u64, ctx: &[u8]) {
        if self.read_only.option != ReadOnlyOption::Safe {
            return;
        }
        let Some(acks) = self.read_only.recv_ack(from, ctx) else {
            return;
        };
        let acks = acks.clone();
        if !self.prs().has_quorum(&acks) {
            return;
        }
        for rs in self.read_only.advance(ctx) {
            self.respond_read_index(rs.req, rs.index);
        }
    }

    fn respond_read_index(&mut self, req: Message, index: u64) {
        if req.from == 0 || req.from == self.id {
            let request_ctx = req
                .entries
                .first()
                .map(|e| e.data.to_vec())
                .unwrap_or_default();
            self.read_states.push(ReadState { index, request_ctx });
        } else {
            self.send(Message {
                msg_type: MessageType::MsgReadIndexResp,
                to: req.from,
                index,
                entries: req.entries,
                ..Default::default()
            });
        }
    }

    /// After a commit: the first commit of the term releases the queued ReadIndex requests.
    pub(crate) fn release_pending_read_index(&mut self) {
        if self.pending_read_index.is_empty() || !self.committed_entry_in_current_term() {
            return;
        }
        let queued: Vec<Message> = self.pending_read_index.drain(..).collect();
        for m in queued {
            self.handle_read_index(m);
        }
    }
}

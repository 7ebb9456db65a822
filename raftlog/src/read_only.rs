//! The leader's queue of ReadIndex requests waiting for a heartbeat quorum
//! ([`crate::ReadOnlyOption::Safe`]).
//!
//! Requests are answered in arrival order: a quorum acknowledging the heartbeat of a later
//! request also confirms every earlier one. A request retried with a context that is still
//! pending is moved to the back with the current commit index, so the retry never receives
//! the index recorded before it was sent (which could predate writes the client saw commit).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::config::ReadOnlyOption;
use crate::types::Message;

/// One pending read: the request, the commit index when it arrived, and who has acknowledged
/// the heartbeat carrying its context.
#[derive(Clone, Debug)]
pub(crate) struct ReadIndexStatus {
    /// The `MsgReadIndex` (its `entries[0].data` is the context; `from` the requester).
    pub req: Message,
    /// The leader's commit index when the request was accepted.
    pub index: u64,
    /// Peers (the leader included) that acknowledged a heartbeat with this context.
    pub acks: HashSet<u64>,
}

/// Pending ReadIndex requests of a leader.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadOnly {
    /// How reads are served.
    pub option: ReadOnlyOption,
    pending: HashMap<Vec<u8>, ReadIndexStatus>,
    // Invariant: holds exactly the keys of `pending`, in arrival order.
    queue: VecDeque<Vec<u8>>,
}

impl ReadOnly {
    /// An empty queue serving reads per `option`.
    pub(crate) fn new(option: ReadOnlyOption) -> ReadOnly {
        ReadOnly {
            option,
            pending: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// Queues request `req` (context `ctx`) at commit index `index`, acknowledged by `self_id`.
    /// A pending request with the same context is replaced and moved to the back.
    pub(crate) fn add_request(&mut self, ctx: Vec<u8>, index: u64, req: Message, self_id: u64) {
        if self.pending.remove(&ctx).is_some() {
            self.queue.retain(|c| *c != ctx);
        }
        let acks = HashSet::from([self_id]);
        self.pending
            .insert(ctx.clone(), ReadIndexStatus { req, index, acks });
        self.queue.push_back(ctx);
        debug_assert_eq!(self.pending.len(), self.queue.len());
    }

    /// Records `id`'s acknowledgement of the heartbeat with `ctx`; returns the acks so far, or
    /// `None` if no such request is pending.
    pub(crate) fn recv_ack(&mut self, id: u64, ctx: &[u8]) -> Option<&HashSet<u64>> {
        let status = self.pending.get_mut(ctx)?;
        status.acks.insert(id);
        Some(&status.acks)
    }

    /// Removes and returns the request with `ctx` and every request queued before it.
    pub(crate) fn advance(&mut self, ctx: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_slice() == ctx) else {
            return Vec::new();
        };
        let done: Vec<ReadIndexStatus> = self
            .queue
            .drain(..=pos)
            .filter_map(|c| self.pending.remove(&c))
            .collect();
        debug_assert_eq!(self.pending.len(), self.queue.len());
        done
    }

    /// The context of the newest pending request (heartbeats carry it), if any.
    pub(crate) fn last_pending_request_ctx(&self) -> Option<Vec<u8>> {
        self.queue.back().cloned()
    }

    /// Number of pending requests.
    #[cfg(test)]
    pub(crate) fn pending_read_count(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ctx: &[u8]) -> Message {
        let mut m = Message::default();
        m.entries.push(crate::types::Entry::new(0, 0, ctx.to_vec()));
        m
    }

    #[test]
    fn advance_releases_everything_up_to_the_acknowledged_request() {
        let mut ro = ReadOnly::new(ReadOnlyOption::Safe);
        ro.add_request(b"a".to_vec(), 5, req(b"a"), 1);
        ro.add_request(b"b".to_vec(), 6, req(b"b"), 1);
        ro.add_request(b"c".to_vec(), 7, req(b"c"), 1);
        assert_eq!(ro.recv_ack(2, b"b").map(|a| a.len()), Some(2));
        let done: Vec<u64> = ro.advance(b"b").iter().map(|s| s.index).collect();
        assert_eq!(done, vec![5, 6]);
        assert_eq!(ro.pending_read_count(), 1);
        assert!(ro.recv_ack(2, b"a").is_none());
    }

    #[test]
    fn retried_context_gets_the_new_index_and_moves_back() {
        let mut ro = ReadOnly::new(ReadOnlyOption::Safe);
        ro.add_request(b"a".to_vec(), 5, req(b"a"), 1);
        ro.add_request(b"b".to_vec(), 6, req(b"b"), 1);
        ro.add_request(b"a".to_vec(), 9, req(b"a"), 1);
        assert_eq!(ro.last_pending_request_ctx(), Some(b"a".to_vec()));
        let done: Vec<u64> = ro.advance(b"a").iter().map(|s| s.index).collect();
        assert_eq!(
            done,
            vec![6, 9],
            "the retry must not be answered with the stale index 5"
        );
    }
}

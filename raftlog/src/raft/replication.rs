//! Log replication: the leader's appends, heartbeats and snapshots, flow-controlled per peer by
//! its progress state; and the follower's handling of them.

use super::Raft;
use crate::confchange;
use crate::errors::{Error, StorageError};
use crate::status::StateRole;
use crate::storage::Storage;
use crate::tracker::{ProgressState, ProgressTracker};
use crate::types::{Entry, EntryType, Message, MessageType, Snapshot};

impl<S: Storage> Raft<S> {
    /// Appends `ents` (index and term assigned here) to the leader's log. Returns false, and
    /// appends nothing, if they would exceed the uncommitted-size limit.
    pub(crate) fn append_entry(&mut self, mut ents: Vec<Entry>) -> bool {
        if ents.len() == 1 {
            let e = ents.pop().expect("one entry");
            return self.append_one_entry(e);
        }
        let last = self.raft_log.last_index();
        for (i, e) in ents.iter_mut().enumerate() {
            e.term = self.term;
            e.index = last + 1 + i as u64;
        }
        if !self.increase_uncommitted_size(&ents) {
            tracing::debug!(
                id = self.id,
                uncommitted = self.uncommitted_size,
                "proposal dropped: uncommitted size limit"
            );
            return false;
        }
        self.raft_log.append_vec(ents);
        // The leader's own progress advances when the entries are persisted (on_persist_entries).
        true
    }

    /// [`Raft::append_entry`] of a single entry.
    pub(crate) fn append_one_entry(&mut self, mut e: Entry) -> bool {
        e.term = self.term;
        e.index = self.raft_log.last_index() + 1;
        if !self.increase_uncommitted_size(std::slice::from_ref(&e)) {
            tracing::debug!(
                id = self.id,
                uncommitted = self.uncommitted_size,
                "proposal dropped: uncommitted size limit"
            );
            return false;
        }
        self.raft_log.append_one(e);
        true
    }

    fn increase_uncommitted_size(&mut self, ents: &[Entry]) -> bool {
        let size = normal_payload_bytes(ents);
        // An empty log tail always accepts one batch, so a single large proposal is not stuck.
        if size > 0
            && self.uncommitted_size > 0
            && self.uncommitted_size + size > self.max_uncommitted_size
        {
            return false;
        }
        self.uncommitted_size += size;
        true
    }

    /// Committed entries were handed to the application: they no longer count as uncommitted.
    pub fn reduce_uncommitted_size(&mut self, ents: &[Entry]) {
        if self.state != StateRole::Leader {
            return;
        }
        let size = normal_payload_bytes(ents);
        self.uncommitted_size = self.uncommitted_size.saturating_sub(size);
    }

    /// Advances the commit index to what a quorum has matched (current-term entries only).
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mci = self.prs().committed();
        if !self.raft_log.maybe_commit(mci, self.term) {
            return false;
        }
        self.release_pending_read_index();
        true
    }

    pub(crate) fn should_bcast_commit(&self) -> bool {
        !self.skip_bcast_commit || self.pending_conf_index > self.raft_log.applied
    }

    /// Ids of every tracked peer but this node, in the tracker's deterministic order.
    pub(crate) fn other_peer_ids(&self) -> Vec<u64> {
        let id = self.id;
        self.prs()
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| *p != id)
            .collect()
    }

    /// Sends appends (or snapshots) to every peer that is not paused.
    pub(crate) fn bcast_append(&mut self) {
        let peers = self.other_peer_ids();
        for to in peers {
            self.send_append(to);
        }
    }

    /// [`Raft::bcast_append`] after the leader appended `count` new entries at the end of its
    /// log. With `batch_append`, a replicating peer whose queued `MsgAppend` ends right before
    /// them gets them added to that message in one pass over the progress map (no lookups, no
    /// intermediate copies); what [`Raft::maybe_send_append`] would have sent, exactly. Any
    /// other peer takes the general path.
    pub(crate) fn bcast_new_entries(&mut self, count: usize) {
        if !self.batch_append {
            self.bcast_append();
            return;
        }
        let ents = self.raft_log.unstable_entries();
        let new = &ents[ents.len().saturating_sub(count)..];
        let (Some(first), Some(last)) = (new.first(), new.last()) else {
            self.bcast_append();
            return;
        };
        let (first_index, last_index) = (first.index, last.index);
        let bytes: u64 = new.iter().map(Entry::size_bytes).sum();
        // `maybe_send_append` cuts a message at `max_msg_size` (never below one entry).
        let fits = new.len() == 1 || bytes <= self.max_msg_size;
        let commit = self.raft_log.committed;
        let mut slow: Vec<u64> = Vec::new();
        for (&to, pr) in self.prs.iter_mut() {
            if to == self.id {
                continue;
            }
            let fast = fits
                && pr.state == ProgressState::Replicate
                && pr.next_idx == first_index
                && pr.pending_request_snapshot == 0
                && !pr.is_paused();
            let queued = fast
                .then(|| queued_append_ending_at(&mut self.msgs, to, first_index - 1))
                .flatten();
            match queued {
                Some(m) => {
                    m.entries.extend_from_slice(new);
                    m.commit = commit;
                    pr.update_state_bytes(last_index, bytes);
                }
                None => slow.push(to),
            }
        }
        for to in slow {
            self.send_append(to);
        }
    }

    /// Spreads a new commit index. A follower with appends in flight is skipped: its next
    /// acknowledgement brings it the commit ([`Raft::maybe_send_commit`]), so a silent follower
    /// never receives more than its inflight window of appends.
    pub(crate) fn bcast_commit(&mut self) {
        let id = self.id;
        let peers: Vec<u64> = self
            .prs()
            .iter()
            .filter(|(p, pr)| {
                **p != id && !(pr.state == ProgressState::Replicate && pr.ins.count() > 0)
            })
            .map(|(p, _)| *p)
            .collect();
        for to in peers {
            self.send_append(to);
        }
    }

    /// Sends `to` an empty append carrying the commit index if it reported an older commit
    /// than it can now learn (never loops: the answer reports the raised commit).
    pub(crate) fn maybe_send_commit(&mut self, to: u64) {
        let committed = self.raft_log.committed;
        let Some(pr) = self.prs().get(to) else { return };
        if pr.committed_index < pr.matched.min(committed) {
            self.maybe_send_append(to, true);
        }
    }

    /// Sends `to` an append (an empty one if there is nothing new, to probe or spread commit).
    pub(crate) fn send_append(&mut self, to: u64) {
        self.maybe_send_append(to, true);
    }

    /// Sends `to` what it lacks, unless its progress is paused. With `send_if_empty` false, an
    /// append with no entries is not sent. Returns whether a message was sent.
    pub(crate) fn maybe_send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs().get(to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_idx;
        if pr.pending_request_snapshot != 0 {
            return self.send_snapshot(to);
        }
        let term = self.raft_log.term(next - 1);
        let ents = self.raft_log.entries(next, Some(self.max_msg_size));
        match (term, ents) {
            (Ok(log_term), Ok(ents)) => {
                if ents.is_empty() && !send_if_empty {
                    return false;
                }
                self.send_entries(to, next - 1, log_term, ents);
                true
            }
            (_, Err(Error::Store(StorageError::LogTemporarilyUnavailable))) => false,
            (Err(Error::Store(StorageError::LogTemporarilyUnavailable)), _) => false,
            _ => self.send_snapshot(to),
        }
    }

    fn send_entries(&mut self, to: u64, index: u64, log_term: u64, ents: Vec<Entry>) {
        let bytes: u64 = ents.iter().map(Entry::size_bytes).sum();
        let last = ents.last().map(|e| e.index);
        let commit = self.raft_log.committed;
        if let Some(pr) = self.mut_prs().get_mut(to) {
            if let Some(last) = last {
                pr.update_state_bytes(last, bytes);
            }
        }
        if self.batch_append && self.try_batch(to, index, commit, &ents) {
            return;
        }
        self.send(Message {
            msg_type: MessageType::MsgAppend,
            to,
            index,
            log_term,
            entries: ents,
            commit,
            ..Default::default()
        });
    }

    /// Extends a queued append to `to` that ends right before `index`.
    fn try_batch(&mut self, to: u64, index: u64, commit: u64, ents: &[Entry]) -> bool {
        match queued_append_ending_at(&mut self.msgs, to, index) {
            Some(m) => {
                m.entries.extend_from_slice(ents);
                m.commit = commit;
                true
            }
            None => false,
        }
    }

    /// Sends `to` a snapshot. Returns false, leaving the progress probing so a later heartbeat
    /// response retries, when the peer is not known to be alive or storage is still building
    /// the snapshot.
    fn send_snapshot(&mut self, to: u64) -> bool {
        let Some(pr) = self.prs().get(to) else {
            return false;
        };
        if !pr.recent_active {
            tracing::debug!(
                id = self.id,
                to,
                "snapshot not sent: peer not recently active"
            );
            return false;
        }
        let request = pr.pending_request_snapshot;
        let snap = match self.raft_log.snapshot(request) {
            Ok(s) => s,
            Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {
                tracing::debug!(
                    id = self.id,
                    to,
                    "snapshot temporarily unavailable; retry later"
                );
                return false;
            }
            Err(e) => panic!("raft {}: failed to get a snapshot for {to}: {e}", self.id),
        };
        assert!(
            !snap.is_empty(),
            "storage returned an empty snapshot for peer {to}"
        );
        let sindex = snap.metadata.index;
        if let Some(pr) = self.mut_prs().get_mut(to) {
            pr.become_snapshot(sindex);
            pr.pending_request_snapshot = 0;
        }
        tracing::debug!(id = self.id, to, sindex, "sending snapshot");
        self.send(Message {
            msg_type: MessageType::MsgSnapshot,
            to,
            snapshot: Some(snap),
            ..Default::default()
        });
        true
    }

    /// Sends `to` a heartbeat carrying `ctx` (a pending ReadIndex context).
    pub(crate) fn send_heartbeat(&mut self, to: u64, ctx: Option<Vec<u8>>) {
        let Some(pr) = self.prs().get(to) else { return };
        // Never tell a follower of a commit beyond what it is known to hold.
        let commit = pr.matched.min(self.raft_log.committed);
        let context = ctx.map(Into::into).unwrap_or_default();
        self.send(Message {
            msg_type: MessageType::MsgHeartbeat,
            to,
            commit,
            context,
            ..Default::default()
        });
    }

    /// Heartbeats every peer, with the newest pending ReadIndex context.
    pub(crate) fn bcast_heartbeat(&mut self) {
        let ctx = self.read_only.last_pending_request_ctx();
        self.bcast_heartbeat_with_ctx(ctx);
    }

    pub(crate) fn bcast_heartbeat_with_ctx(&mut self, ctx: Option<Vec<u8>>) {
        let peers = self.other_peer_ids();
        for to in peers {
            self.send_heartbeat(to, ctx.clone());
        }
    }

    /// Follower: an append from the leader.
    pub(crate) fn handle_append_entries(&mut self, mut m: Message) {
        if self.pending_request_snapshot != 0 {
            self.send_request_snapshot();
            return;
        }
        let committed = self.raft_log.committed;
        let mut resp = Message {
            to: m.from,
            msg_type: MessageType::MsgAppendResponse,
            ..Default::default()
        };
        if m.index < committed {
            resp.index = committed;
            resp.commit = committed;
            self.send(resp);
            return;
        }
        let ents = std::mem::take(&mut m.entries);
        match self
            .raft_log
            .maybe_append_vec(m.index, m.log_term, m.commit, ents)
        {
            Some((_, last_new)) => resp.index = last_new,
            None => {
                // Find where the logs may match: the last index with a term at most the
                // leader's term at `m.index`, so the leader can skip a whole term per round.
                let hint = m.index.min(self.raft_log.last_index());
                let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(hint, m.log_term);
                tracing::debug!(
                    id = self.id,
                    index = m.index,
                    log_term = m.log_term,
                    hint_index,
                    "append rejected"
                );
                resp.index = m.index;
                resp.reject = true;
                resp.reject_hint = hint_index;
                resp.log_term = hint_term.unwrap_or(0);
            }
        }
        resp.commit = self.raft_log.committed;
        self.send(resp);
    }

    /// Follower: a heartbeat from the leader.
    pub(crate) fn handle_heartbeat(&mut self, m: Message) {
        self.raft_log.commit_to(m.commit);
        if self.pending_request_snapshot != 0 {
            self.send_request_snapshot();
            return;
        }
        let commit = self.raft_log.committed;
        self.send(Message {
            to: m.from,
            msg_type: MessageType::MsgHeartbeatResponse,
            context: m.context,
            commit,
            ..Default::default()
        });
    }

    /// Follower: a snapshot from the leader.
    pub(crate) fn handle_snapshot(&mut self, m: Message) {
        let snap = m.snapshot.unwrap_or_default();
        let (sindex, sterm) = (snap.metadata.index, snap.metadata.term);
        let index = if self.restore(snap) {
            tracing::info!(id = self.id, sindex, sterm, "restored snapshot");
            self.raft_log.last_index()
        } else {
            self.raft_log.committed
        };
        self.send(Message {
            to: m.from,
            msg_type: MessageType::MsgAppendResponse,
            index,
            ..Default::default()
        });
    }

    /// Installs `snap` as the log's base (its configuration too). Returns false if the snapshot
    /// is stale or matches the log (then only the commit moves).
    pub fn restore(&mut self, snap: Snapshot) -> bool {
        let meta = &snap.metadata;
        if meta.index <= self.raft_log.committed {
            return false;
        }
        // A snapshot taken before this node was added does not list it; it is still the right
        // base (the leader only sends to peers of its configuration), and the entry adding the
        // node follows it in the log. Such a node simply cannot campaign until then.
        let cs = meta.conf_state.clone();
        if self.pending_request_snapshot == 0 && self.raft_log.match_term(meta.index, meta.term) {
            // The log already holds the snapshot's last entry: just fast-forward the commit.
            self.raft_log.commit_to(meta.index);
            return false;
        }
        self.raft_log.restore(snap);
        let mut prs = ProgressTracker::new(self.max_inflight_msgs, self.max_inflight_bytes);
        if let Err(e) = confchange::restore(&mut prs, self.raft_log.last_index() + 1, &cs) {
            panic!("raft {}: invalid configuration in snapshot: {e}", self.id);
        }
        self.prs = prs;
        self.promotable = self.prs.conf().voters.contains(self.id);
        self.pending_request_snapshot = 0;
        true
    }

    /// Follower: asks the leader for a snapshot at or after `request_index`.
    pub fn request_snapshot(&mut self, request_index: u64) -> crate::Result<()> {
        if self.state == StateRole::Leader
            || self.leader_id == 0
            || self.pending_request_snapshot != 0
        {
            return Err(Error::RequestSnapshotDropped);
        }
        self.pending_request_snapshot = request_index.max(1);
        self.send_request_snapshot();
        Ok(())
    }

    /// Follower: asks the leader for a snapshot (see [`crate::RawNode::request_snapshot`]).
    pub(crate) fn send_request_snapshot(&mut self) {
        let (last, to) = (self.raft_log.last_index(), self.leader_id);
        let log_term = self.raft_log.last_term();
        self.send(Message {
            to,
            msg_type: MessageType::MsgAppendResponse,
            index: last,
            reject: true,
            reject_hint: last,
            log_term,
            request_snapshot: self.pending_request_snapshot,
            commit: self.raft_log.committed,
            ..Default::default()
        });
    }
}

/// Payload bytes of the normal entries in `ents`: conf changes (small, and the leader must be
/// able to leave a joint configuration) do not count towards `max_uncommitted_size`.
fn normal_payload_bytes(ents: &[Entry]) -> u64 {
    ents.iter()
        .filter(|e| e.entry_type == EntryType::EntryNormal)
        .map(Entry::payload_size_bytes)
        .sum()
}

/// The last `MsgAppend` queued to `to`, if it carries entries and ends at `index` (so entries
/// from `index + 1` on can be added to it).
fn queued_append_ending_at(msgs: &mut [Message], to: u64, index: u64) -> Option<&mut Message> {
    let m = msgs
        .iter_mut()
        .rev()
        .find(|m| m.to == to && m.msg_type == MessageType::MsgAppend)?;
    (!m.entries.is_empty() && m.index + m.entries.len() as u64 == index).then_some(m)
}

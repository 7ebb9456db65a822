//! What the leader knows about one follower's log, and how it moves between the probe,
//! replicate and snapshot states.

use super::{Inflights, ProgressState};

/// The leader's view of one peer (voter or learner).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub matched: u64,
    /// Next index to send. Invariant: `matched < next_idx`.
    pub next_idx: u64,
    /// The replication state.
    pub state: ProgressState,
    /// In [`ProgressState::Snapshot`]: the index of the snapshot being sent (0: none).
    pub pending_snapshot: u64,
    /// The follower asked for a snapshot at or after this index (0: none).
    pub pending_request_snapshot: u64,
    /// Whether the peer was heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In [`ProgressState::Probe`]: an append was sent and no answer came yet; pause until the
    /// next heartbeat.
    pub probe_sent: bool,
    /// The appends in flight (used in [`ProgressState::Replicate`]).
    pub ins: Inflights,
    /// The commit index the peer is known to have.
    pub committed_index: u64,
}

impl Progress {
    /// A peer in the probe state, next index `next_idx`, with an inflight window of
    /// `ins_cap_count` messages and `ins_cap_bytes` bytes (0: no byte cap).
    pub fn new(next_idx: u64, ins_cap_count: usize, ins_cap_bytes: u64) -> Progress {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            pending_request_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            ins: Inflights::new(ins_cap_count, ins_cap_bytes),
            committed_index: 0,
        }
    }

    /// Enters `state`, clearing the per-state bookkeeping.
    pub fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.ins.reset();
    }

    /// Goes back to probing from just after `matched` (or after the snapshot that was pending,
    /// which the follower is assumed to have if it was sent).
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_idx = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_idx = self.matched + 1;
        }
    }

    /// Starts streaming appends from just after `matched`.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    /// Starts sending the snapshot at `snapshot_idx`.
    pub fn become_snapshot(&mut self, snapshot_idx: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_idx;
    }

    /// The snapshot could not be sent: forget it, so the next probe does not assume it arrived.
    pub fn snapshot_failure(&mut self) {
        self.pending_snapshot = 0;
    }

    /// Whether a snapshot in progress is no longer needed (the follower caught up past it).
    pub fn maybe_snapshot_abort(&self) -> bool {
        self.state == ProgressState::Snapshot && self.matched >= self.pending_snapshot
    }

    /// The follower acknowledged index `n`. Returns whether `matched` rose (a stale or duplicate
    /// acknowledgement returns false). Also unpauses a probe.
    pub fn maybe_update(&mut self, n: u64) -> bool {
        let raised = self.matched < n;
        if raised {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next_idx = self.next_idx.max(n + 1);
        raised
    }

    /// Records that the peer knows commit index `ci` (never lowers it).
    pub fn update_committed(&mut self, ci: u64) {
        self.committed_index = self.committed_index.max(ci);
    }

    /// Appends up to `n` were sent: the next append starts at `n + 1`.
    pub fn optimistic_update(&mut self, n: u64) {
        self.next_idx = n + 1;
    }

    /// The follower rejected an append at `rejected`, hinting that its log may match up to
    /// `match_hint`; or it asks for a snapshot (`request_snapshot` > 0). Returns false if the
    /// rejection is stale (answers an append the leader has since moved past) and was ignored.
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64, request_snapshot: u64) -> bool {
        if self.state == ProgressState::Replicate {
            // Appends up to `matched` are known good: a rejection at or below it is stale,
            // unless it is a snapshot request.
            if rejected < self.matched || (rejected == self.matched && request_snapshot == 0) {
                return false;
            }
            if request_snapshot == 0 {
                self.next_idx = self.matched + 1;
            } else {
                self.pending_request_snapshot = request_snapshot;
            }
            return true;
        }
        // Probing sends one append at a time from `next_idx`: any rejection not of
        // `next_idx - 1` answers an older probe. Snapshot requests are never stale.
        if request_snapshot == 0 && self.next_idx.checked_sub(1) != Some(rejected) {
            return false;
        }
        if request_snapshot == 0 {
            self.next_idx = rejected.min(match_hint + 1).max(self.matched + 1).max(1);
        } else if self.pending_request_snapshot == 0 {
            self.pending_request_snapshot = request_snapshot;
        }
        self.probe_sent = false;
        true
    }

    /// Whether the leader should hold back appends to this peer for now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.ins.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// An append ending at `last` was sent, with no byte accounting (counts 0 bytes towards the
    /// byte cap). Prefer [`Progress::update_state_bytes`] to get byte flow control.
    pub fn update_state(&mut self, last: u64) {
        self.update_state_bytes(last, 0);
    }

    /// An append ending at `last`, carrying `bytes` bytes of entries (by
    /// [`crate::Entry::size_bytes`]), was sent: replicate records it in flight and moves
    /// `next_idx` past it; probe pauses until the answer.
    ///
    /// # Panics
    /// In the snapshot state (nothing may be sent), or if the inflight window is full.
    pub fn update_state_bytes(&mut self, last: u64, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                self.optimistic_update(last);
                self.ins.add(last, bytes);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {
                panic!("append sent to a peer in the snapshot state (last index {last})")
            }
        }
    }

    /// A heartbeat or append response arrived: the peer is alive; in replicate state a full
    /// window frees one slot so a lost response cannot stall the stream forever.
    pub fn resume_after_heartbeat(&mut self) {
        self.recent_active = true;
        self.probe_sent = false;
        if self.state == ProgressState::Replicate && self.ins.full() {
            self.ins.free_first_one();
        }
    }
}

//! Membership changes: validating a proposed change against the latest configuration,
//! applying a committed one, leaving a joint configuration automatically, and stepping down
//! when the leader itself is no longer a voter.

use super::Raft;
use crate::confchange::{Changer, MapChange};
use crate::errors::{Error, Result};
use crate::status::StateRole;
use crate::storage::Storage;
use crate::tracker::Configuration;
use crate::types::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType};

impl<S: Storage> Raft<S> {
    /// Decodes the conf change an entry carries (V1 converted to V2).
    pub(crate) fn decode_conf_change(e: &Entry) -> Result<ConfChangeV2> {
        match e.entry_type {
            EntryType::EntryConfChange => Ok(ConfChange::decode(&e.data)?.into()),
            EntryType::EntryConfChangeV2 => Ok(ConfChangeV2::decode(&e.data)?),
            EntryType::EntryNormal => Err(Error::ConfChangeError("not a conf change entry".into())),
        }
    }

    /// The configuration `cc` would produce from the current one.
    fn changed_config(&self, cc: &ConfChangeV2) -> Result<(Configuration, MapChange)> {
        let changer = Changer::new(self.prs());
        if cc.leave_joint() {
            changer.leave_joint()
        } else if let Some(auto_leave) = cc.enter_joint() {
            changer.enter_joint(auto_leave, &cc.changes)
        } else {
            changer.simple(&cc.changes)
        }
    }

    /// Leader: refuses a proposed conf change that is not valid against the latest
    /// configuration in the log, or that would remove this leader.
    ///
    /// Only one conf change may be pending (appended but not applied): so when a new one is
    /// accepted, the applied configuration *is* the last one in the log, and validating against
    /// it is validating against the log's latest configuration.
    pub(crate) fn check_conf_change_proposal(&self, e: &Entry) -> Result<()> {
        if self.pending_conf_index > self.raft_log.applied {
            return Err(Error::ConfChangeError(format!(
                "a conf change is pending at index {} (applied {}); wait until it is applied",
                self.pending_conf_index, self.raft_log.applied
            )));
        }
        let cc = Self::decode_conf_change(e)?;
        let (cfg, _) = self.changed_config(&cc)?;
        if !cc.leave_joint() && !cfg.voters.incoming.contains(self.id) {
            return Err(Error::ConfChangeError(format!(
                "the change removes or demotes the leader {}; transfer leadership first",
                self.id
            )));
        }
        Ok(())
    }

    /// Applies a committed conf change and returns the new configuration.
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        let (cfg, changes) = self.changed_config(cc)?;
        let next = self.raft_log.last_index() + 1;
        self.mut_prs().apply_conf(cfg, changes, next);
        Ok(self.post_conf_change())
    }

    fn post_conf_change(&mut self) -> ConfState {
        let cs = self.prs().conf_state();
        let is_voter = self.prs().conf().voters.contains(self.id);
        self.promotable = is_voter;
        if self.state == StateRole::Leader && !is_voter {
            // Removed (or demoted) while leading: stop, so the remaining voters elect a leader.
            tracing::warn!(
                id = self.id,
                term = self.term,
                "leader no longer a voter; stepping down"
            );
            let term = self.term;
            self.become_follower(term, 0);
            return cs;
        }
        if self.state != StateRole::Leader || cs.voters.is_empty() {
            return cs;
        }
        if let Some(t) = self.lead_transferee {
            if !self.prs().conf().voters.contains(t) {
                self.abort_leader_transfer();
            }
        }
        // The quorum changed: the commit index may move, and new peers need appends.
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            let peers = self.other_peer_ids();
            for to in peers {
                self.maybe_send_append(to, false);
            }
        }
        cs
    }

    /// Leader: once a joint configuration that leaves itself automatically is applied,
    /// propose the empty change that leaves it.
    pub(crate) fn maybe_auto_leave_joint(&mut self, old_applied: u64, applied: u64) {
        let auto_leave = self.prs().conf().auto_leave;
        let crossed = old_applied <= self.pending_conf_index && applied >= self.pending_conf_index;
        if self.state != StateRole::Leader || !auto_leave || !crossed {
            return;
        }
        let data = ConfChangeV2::default().encode_to_vec();
        let e = Entry {
            entry_type: EntryType::EntryConfChangeV2,
            data: data.into(),
            ..Default::default()
        };
        if !self.append_entry(vec![e]) {
            panic!("an empty leave-joint entry cannot exceed the uncommitted limit");
        }
        self.pending_conf_index = self.raft_log.last_index();
        tracing::info!(
            id = self.id,
            index = self.pending_conf_index,
            "proposed leaving the joint configuration"
        );
        self.bcast_append();
    }
}

//! Validates conf changes and computes the configuration they lead to.

use tracing::debug;

use super::{MapChange, MapChangeType};
use crate::errors::{Error, Result};
use crate::tracker::{Configuration, ProgressTracker};
use crate::types::{ConfChangeSingle, ConfChangeType};

/// Computes configurations from the tracker's current one. It never changes the tracker: the
/// caller installs the result with [`ProgressTracker::apply_conf`].
///
/// The rules are etcd's: a simple change alters at most one voter; anything larger goes through
/// a joint configuration (enter, then leave); a configuration never loses all its voters; voters
/// and learners stay disjoint; an outgoing voter demoted to learner waits in `learners_next`
/// until the joint state is left, so it keeps voting in the outgoing half.
pub struct Changer<'a> {
    tracker: &'a ProgressTracker,
}

/// The configuration being built, and which peers have (or will have) a progress.
struct Draft<'a> {
    cfg: Configuration,
    tracker: &'a ProgressTracker,
    changes: MapChange,
}

impl Draft<'_> {
    /// Whether `id` has a progress once the changes so far are applied.
    fn has_progress(&self, id: u64) -> bool {
        match self.changes.iter().rev().find(|(c, _)| *c == id) {
            Some((_, t)) => *t == MapChangeType::Add,
            None => self.tracker.get(id).is_some(),
        }
    }

    fn apply(&mut self, ccs: &[ConfChangeSingle]) -> Result<()> {
        for cc in ccs {
            if cc.node_id == 0 {
                // etcd compatibility: a change of node 0 is a no-op.
                continue;
            }
            match cc.change_type {
                ConfChangeType::AddNode => self.make_voter(cc.node_id),
                ConfChangeType::AddLearnerNode => self.make_learner(cc.node_id),
                ConfChangeType::RemoveNode => self.remove(cc.node_id),
            }
        }
        if self.cfg.voters.incoming.is_empty() {
            return Err(conf_err("removed all voters".to_string()));
        }
        Ok(())
    }

    fn make_voter(&mut self, id: u64) {
        if !self.has_progress(id) {
            self.cfg.voters.incoming.ids_mut().insert(id);
            self.changes.push((id, MapChangeType::Add));
            return;
        }
        self.cfg.learners.remove(&id);
        self.cfg.learners_next.remove(&id);
        self.cfg.voters.incoming.ids_mut().insert(id);
    }

    fn make_learner(&mut self, id: u64) {
        if !self.has_progress(id) {
            self.cfg.learners.insert(id);
            self.changes.push((id, MapChangeType::Add));
            return;
        }
        if self.cfg.learners.contains(&id) {
            return;
        }
        self.cfg.voters.incoming.ids_mut().remove(&id);
        // An outgoing voter still votes until the joint state is left.
        if self.cfg.voters.outgoing.contains(id) {
            self.cfg.learners_next.insert(id);
        } else {
            self.cfg.learners.insert(id);
        }
    }

    fn remove(&mut self, id: u64) {
        if !self.has_progress(id) {
            return;
        }
        self.cfg.voters.incoming.ids_mut().remove(&id);
        self.cfg.learners.remove(&id);
        self.cfg.learners_next.remove(&id);
        // An outgoing voter keeps its progress until the joint state is left.
        if !self.cfg.voters.outgoing.contains(id) {
            self.changes.push((id, MapChangeType::Remove));
        }
    }

    fn check(&self) -> Result<()> {
        check_invariants(&self.cfg, |id| self.has_progress(id))
    }
}

/// Checks the structural invariants of `cfg`, with `has_progress` telling which peers will
/// have a progress.
pub(super) fn check_invariants(
    cfg: &Configuration,
    has_progress: impl Fn(u64) -> bool,
) -> Result<()> {
    let voters = cfg.voters.ids();
    for id in voters.iter().chain(&cfg.learners).chain(&cfg.learners_next) {
        if !has_progress(*id) {
            return Err(conf_err(format!("no progress for {id}")));
        }
    }
    for id in &cfg.learners_next {
        if !cfg.voters.outgoing.contains(*id) {
            return Err(conf_err(format!(
                "{id} is in learners_next, but not in outgoing voters"
            )));
        }
        if cfg.learners.contains(id) {
            return Err(conf_err(format!(
                "{id} is in learners_next and in learners"
            )));
        }
    }
    for id in &cfg.learners {
        if cfg.voters.contains(*id) {
            return Err(conf_err(format!("{id} is a learner and a voter")));
        }
    }
    if !cfg.voters.is_joint() {
        if !cfg.learners_next.is_empty() {
            return Err(conf_err(
                "learners_next must be empty when not joint".to_string(),
            ));
        }
        if cfg.auto_leave {
            return Err(conf_err(
                "auto_leave must be false when not joint".to_string(),
            ));
        }
    }
    Ok(())
}

fn conf_err(msg: String) -> Error {
    Error::ConfChangeError(msg)
}

impl<'a> Changer<'a> {
    /// A changer working from `tracker`'s configuration.
    pub fn new(tracker: &'a ProgressTracker) -> Changer<'a> {
        Changer { tracker }
    }

    /// Enters a joint configuration: the current voters become the outgoing half and `ccs`
    /// applied to them the incoming half. `auto_leave` makes Raft leave the joint state on its
    /// own once the change is committed.
    pub fn enter_joint(
        &self,
        auto_leave: bool,
        ccs: &[ConfChangeSingle],
    ) -> Result<(Configuration, MapChange)> {
        let mut draft = self.draft()?;
        if draft.cfg.voters.is_joint() {
            return Err(conf_err("configuration is already joint".to_string()));
        }
        if draft.cfg.voters.incoming.is_empty() {
            // A joint config with an empty outgoing half would be indistinguishable from a
            // simple one.
            return Err(conf_err(
                "can't make a zero-voter configuration joint".to_string(),
            ));
        }
        draft.cfg.voters.outgoing = draft.cfg.voters.incoming.clone();
        draft.apply(ccs)?;
        draft.cfg.auto_leave = auto_leave;
        draft.check()?;
        debug!(changes = ccs.len(), auto_leave, "enter joint configuration");
        Ok((draft.cfg, draft.changes))
    }

    /// Leaves the joint configuration: the incoming half alone remains; outgoing voters not in
    /// it are removed, or become learners if they were demoted.
    pub fn leave_joint(&self) -> Result<(Configuration, MapChange)> {
        let mut draft = self.draft()?;
        if !draft.cfg.voters.is_joint() {
            return Err(conf_err(
                "can't leave a non-joint configuration".to_string(),
            ));
        }
        let learners_next = std::mem::take(&mut draft.cfg.learners_next);
        draft.cfg.learners.extend(learners_next);
        let outgoing = std::mem::take(draft.cfg.voters.outgoing.ids_mut());
        for id in outgoing {
            if !draft.cfg.voters.incoming.contains(id) && !draft.cfg.learners.contains(&id) {
                draft.changes.push((id, MapChangeType::Remove));
            }
        }
        draft.cfg.auto_leave = false;
        draft.check()?;
        debug!("leave joint configuration");
        Ok((draft.cfg, draft.changes))
    }

    /// A single-step change: at most one voter added or removed (learners are free). Not
    /// allowed while joint.
    pub fn simple(&self, ccs: &[ConfChangeSingle]) -> Result<(Configuration, MapChange)> {
        let mut draft = self.draft()?;
        if draft.cfg.voters.is_joint() {
            return Err(conf_err(
                "can't apply a simple conf change in a joint configuration".to_string(),
            ));
        }
        draft.apply(ccs)?;
        let before = self.tracker.conf().voters.incoming.ids();
        let after = draft.cfg.voters.incoming.ids();
        let changed = before.symmetric_difference(after).count();
        if changed > 1 {
            return Err(conf_err(format!(
                "{changed} voters changed without entering a joint configuration (at most one may)"
            )));
        }
        draft.check()?;
        Ok((draft.cfg, draft.changes))
    }

    /// A copy of the current configuration, after checking its invariants.
    fn draft(&self) -> Result<Draft<'a>> {
        let cfg = self.tracker.conf().clone();
        check_invariants(&cfg, |id| self.tracker.get(id).is_some())?;
        Ok(Draft {
            cfg,
            tracker: self.tracker,
            changes: MapChange::new(),
        })
    }
}

//! Rebuilds a configuration (joint included) from a [`ConfState`].

use super::Changer;
use crate::errors::{Error, Result};
use crate::tracker::ProgressTracker;
use crate::types::{ConfChangeSingle, ConfChangeType};
use crate::ConfState;

/// Clears `tracker` and rebuilds `cs` in it by replaying conf changes through [`Changer`]:
/// single steps building the outgoing voters, then (if joint) entering the joint configuration
/// with the changes that yield the incoming voters and learners. Every peer's progress starts
/// at `next_idx`.
///
/// Returns an error if `cs` is not a valid configuration (learners that are voters, demoted
/// learners that are not outgoing voters, ...).
pub fn restore(tracker: &mut ProgressTracker, next_idx: u64, cs: &ConfState) -> Result<()> {
    tracker.clear();
    let (outgoing, incoming) = to_changes(cs);
    if outgoing.is_empty() {
        for cc in &incoming {
            let (cfg, changes) = Changer::new(tracker).simple(std::slice::from_ref(cc))?;
            tracker.apply_conf(cfg, changes, next_idx);
        }
    } else {
        for cc in &outgoing {
            let (cfg, changes) = Changer::new(tracker).simple(std::slice::from_ref(cc))?;
            tracker.apply_conf(cfg, changes, next_idx);
        }
        let (cfg, changes) = Changer::new(tracker).enter_joint(cs.auto_leave, &incoming)?;
        tracker.apply_conf(cfg, changes, next_idx);
    }
    // The replay silently repairs some malformed states (a demoted learner that was not an
    // outgoing voter becomes a plain learner); refuse them instead of running with a
    // configuration other than the one persisted.
    let rebuilt = tracker.conf_state();
    if normalized(&rebuilt) != normalized(cs) {
        return Err(Error::ConfChangeError(format!(
            "conf state {cs:?} is not a valid configuration (it rebuilds as {rebuilt:?})"
        )));
    }
    Ok(())
}

/// `cs` with every id list sorted and deduplicated.
fn normalized(cs: &ConfState) -> ConfState {
    let norm = |ids: &[u64]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    ConfState {
        voters: norm(&cs.voters),
        learners: norm(&cs.learners),
        voters_outgoing: norm(&cs.voters_outgoing),
        learners_next: norm(&cs.learners_next),
        auto_leave: cs.auto_leave,
    }
}

/// The changes that rebuild `cs` from nothing: `(outgoing, incoming)`. `outgoing` adds the
/// outgoing voters one by one; `incoming` then removes them all and adds the incoming voters,
/// the learners and the demoted learners (which the joint change turns into `learners_next`).
fn to_changes(cs: &ConfState) -> (Vec<ConfChangeSingle>, Vec<ConfChangeSingle>) {
    let single = |change_type, node_id| ConfChangeSingle {
        change_type,
        node_id,
    };
    let outgoing: Vec<_> = cs
        .voters_outgoing
        .iter()
        .map(|&id| single(ConfChangeType::AddNode, id))
        .collect();
    let incoming = cs
        .voters_outgoing
        .iter()
        .map(|&id| single(ConfChangeType::RemoveNode, id))
        .chain(
            cs.voters
                .iter()
                .map(|&id| single(ConfChangeType::AddNode, id)),
        )
        .chain(
            cs.learners
                .iter()
                .map(|&id| single(ConfChangeType::AddLearnerNode, id)),
        )
        .chain(
            cs.learners_next
                .iter()
                .map(|&id| single(ConfChangeType::AddLearnerNode, id)),
        )
        .collect();
    (outgoing, incoming)
}

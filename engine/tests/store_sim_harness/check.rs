//! Client histories of single registers and their checks.
//!
//! Every written value is unique, and nothing deletes a key, so a register's history is
//! checked without a search:
//! - no phantom: an observed value was written by an op invoked before the observation
//!   returned; an absent key is never observed after a write to it completed;
//! - no stale read: an observation that starts after write `w2` completed never returns the
//!   value of a write `w1` that completed before `w2` was invoked;
//! - no new-old inversion: of two observations in real-time order, the later never returns a
//!   value whose write completed before the write of the value the earlier one returned began;
//! - compare-and-swap chains: two successful CASes never replace the same value.
//!
//! Observations are reads (`Get`), and the `previous` value CASes report. A write whose outcome
//! is unknown (dropped proposal, timeout, crash) may take effect at any time after its
//! invocation, or never.

use std::collections::BTreeMap;

use bytes::Bytes;

/// What a client did.
#[derive(Clone, Debug)]
pub enum Kind {
    Put {
        value: Bytes,
    },
    Cas {
        expected: Option<Bytes>,
        new: Bytes,
        /// `Some((succeeded, previous))` when answered.
        outcome: Option<(bool, Option<Bytes>)>,
    },
    Get {
        /// `Some(value)` when answered.
        value: Option<Option<Bytes>>,
    },
}

/// One operation of the history.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: u64,
    pub key: Bytes,
    pub kind: Kind,
    pub invoked_ms: u64,
    /// `None`: no definite answer (the write may or may not have taken effect).
    pub returned_ms: Option<u64>,
}

struct Write {
    invoked_ms: u64,
    returned_ms: Option<u64>,
    definite: bool,
}

struct Observation<'a> {
    value: Option<&'a Bytes>,
    invoked_ms: u64,
    returned_ms: u64,
    what: String,
}

/// Checks the history of every key; returns the violations found.
pub fn check_history(ops: &[Op]) -> Vec<String> {
    let mut by_key: BTreeMap<&Bytes, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut errors = Vec::new();
    for (key, ops) in by_key {
        check_key(key, &ops, &mut errors);
    }
    errors
}

fn check_key(key: &Bytes, ops: &[&Op], errors: &mut Vec<String>) {
    let mut writes: BTreeMap<&Bytes, Write> = BTreeMap::new();
    let mut obs: Vec<Observation> = Vec::new();
    let mut cas_prev: BTreeMap<Option<&Bytes>, u64> = BTreeMap::new();
    for op in ops {
        match &op.kind {
            Kind::Put { value } => {
                writes.insert(
                    value,
                    Write {
                        invoked_ms: op.invoked_ms,
                        returned_ms: op.returned_ms,
                        definite: op.returned_ms.is_some(),
                    },
                );
            }
            Kind::Cas { new, outcome, .. } => {
                let maybe = match outcome {
                    None => true,
                    Some((ok, _)) => *ok,
                };
                if maybe {
                    writes.insert(
                        new,
                        Write {
                            invoked_ms: op.invoked_ms,
                            returned_ms: op.returned_ms,
                            definite: outcome.is_some(),
                        },
                    );
                }
                if let (Some((ok, prev)), Some(ret)) = (outcome, op.returned_ms) {
                    obs.push(Observation {
                        value: prev.as_ref(),
                        invoked_ms: op.invoked_ms,
                        returned_ms: ret,
                        what: format!("cas(client {}, new {:?})", op.client, new),
                    });
                    if *ok {
                        *cas_prev.entry(prev.as_ref()).or_default() += 1;
                    }
                }
            }
            Kind::Get { value } => {
                if let (Some(v), Some(ret)) = (value, op.returned_ms) {
                    obs.push(Observation {
                        value: v.as_ref(),
                        invoked_ms: op.invoked_ms,
                        returned_ms: ret,
                        what: format!("get(client {})", op.client),
                    });
                }
            }
        }
    }
    for (prev, n) in &cas_prev {
        if *n > 1 {
            errors.push(format!(
                "key {key:?}: {n} successful CASes replaced the same value {prev:?}"
            ));
        }
    }
    // A value observed at `t` had been written by `t`: each value is written once, so its
    // write took effect no later than its first observation (a retried write that applied
    // twice shows up as a value older than one written after it).
    let mut first_seen: BTreeMap<&Bytes, u64> = BTreeMap::new();
    for o in &obs {
        if let Some(v) = o.value {
            let e = first_seen.entry(v).or_insert(o.returned_ms);
            *e = (*e).min(o.returned_ms);
        }
    }
    for (v, w) in writes.iter_mut() {
        if let Some(&t) = first_seen.get(*v) {
            let done = if w.definite { w.returned_ms } else { None };
            w.returned_ms = Some(done.map_or(t, |r| r.min(t)));
            w.definite = true;
        }
    }
    let done_before = |w: &Write, t: u64| w.definite && w.returned_ms.is_some_and(|r| r < t);
    for o in &obs {
        match o.value {
            None => {
                if let Some((v, _)) = writes.iter().find(|(_, w)| done_before(w, o.invoked_ms)) {
                    errors.push(format!(
                        "key {key:?}: {} [{}..{}] found the key absent after the write of {v:?} completed",
                        o.what, o.invoked_ms, o.returned_ms
                    ));
                }
            }
            Some(v) => {
                let Some(w1) = writes.get(v) else {
                    errors.push(format!(
                        "key {key:?}: {} returned {v:?}, which no op wrote",
                        o.what
                    ));
                    continue;
                };
                if w1.invoked_ms > o.returned_ms {
                    errors.push(format!(
                        "key {key:?}: {} [{}..{}] returned {v:?} before its write was invoked at {}",
                        o.what, o.invoked_ms, o.returned_ms, w1.invoked_ms
                    ));
                }
                let Some(w1_ret) = w1.returned_ms.filter(|_| w1.definite) else {
                    continue;
                };
                for (v2, w2) in &writes {
                    if *v2 != v && w1_ret < w2.invoked_ms && done_before(w2, o.invoked_ms) {
                        errors.push(format!(
                            "key {key:?}: stale {} [{}..{}] returned {v:?} (written by {}..{}) after {v2:?} was written ({}..{:?})",
                            o.what, o.invoked_ms, o.returned_ms, w1.invoked_ms, w1_ret, w2.invoked_ms, w2.returned_ms
                        ));
                    }
                }
            }
        }
    }
    for a in &obs {
        for b in &obs {
            if a.returned_ms >= b.invoked_ms {
                continue;
            }
            let (Some(va), Some(vb)) = (a.value, b.value) else {
                continue;
            };
            let (Some(wa), Some(wb)) = (writes.get(va), writes.get(vb)) else {
                continue;
            };
            if wb.definite && wb.returned_ms.is_some_and(|r| r < wa.invoked_ms) {
                errors.push(format!(
                    "key {key:?}: {} [{}..{}] saw {va:?}, then {} [{}..{}] saw the older {vb:?}",
                    a.what, a.invoked_ms, a.returned_ms, b.what, b.invoked_ms, b.returned_ms
                ));
            }
        }
    }
}

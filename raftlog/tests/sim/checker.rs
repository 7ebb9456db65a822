//! The safety checker of the simulation: it is fed observations (roles, log entries handed out
//! for persistence, commit indexes, applies, read answers) and records every violation of Raft's
//! safety properties. It knows nothing about `RawNode`, so tests can feed it fabricated
//! histories to prove it catches bugs.

use std::collections::{HashMap, HashSet};

use raftlog::{Entry, EntryType};

/// What the checker has learned so far, and the violations found.
#[derive(Default)]
pub struct Checker {
    /// term -> the one node seen leading it.
    leaders: HashMap<u64, u64>,
    /// (index, term) -> (term of the entry before it, 0 when unknown; hash of its content).
    log_entries: HashMap<(u64, u64), (u64, u64)>,
    /// index -> term of the entry committed there (0: not known yet).
    committed_terms: Vec<u64>,
    /// index -> state-machine digest after applying it (0: nobody applied it yet).
    applied_digests: Vec<u64>,
    /// The highest index applied anywhere: every write up to it has been acknowledged.
    pub max_applied: u64,
    /// read context -> the least index a linearizable answer may carry.
    reads: HashMap<Vec<u8>, u64>,
    /// (node, term) pairs whose leader log was checked for completeness.
    leaders_checked: HashSet<(u64, u64)>,
    /// Read answers that were checked.
    pub reads_answered: u64,
    /// Every violation, in the order found.
    pub violations: Vec<String>,
}

/// A content hash of an entry (its type, data and context), never 0.
pub fn entry_hash(e: &Entry) -> u64 {
    let kind = match e.entry_type {
        EntryType::EntryNormal => 1,
        EntryType::EntryConfChange => 2,
        EntryType::EntryConfChangeV2 => 3,
    };
    let mut h = fnv(0xcbf2_9ce4_8422_2325 ^ kind, &e.data);
    h = fnv(h, &e.context);
    h | 1
}

/// The state-machine digest after applying `e` on top of `digest`, never 0.
pub fn chain_digest(digest: u64, e: &Entry) -> u64 {
    let mut h = fnv(digest, &e.index.to_le_bytes());
    h = fnv(h, &e.term.to_le_bytes());
    fnv(h, &entry_hash(e).to_le_bytes()) | 1
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn slot(v: &mut Vec<u64>, index: u64) -> &mut u64 {
    let i = index as usize;
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    &mut v[i]
}

impl Checker {
    /// Whether no violation was found.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The highest index known committed.
    pub fn committed_max(&self) -> u64 {
        self.committed_terms.len().saturating_sub(1) as u64
    }

    /// Node `id` is in `term`, and leads it when `leader`. Election safety: one leader a term.
    pub fn observe_role(&mut self, id: u64, term: u64, leader: bool) {
        if !leader {
            return;
        }
        let first = *self.leaders.entry(term).or_insert(id);
        if first != id {
            self.violations.push(format!(
                "election safety: nodes {first} and {id} both lead term {term}"
            ));
        }
    }

    /// Node `id` hands out `entries` for persistence; `prev_term` is the term of the entry
    /// before the first one (None: unknown, e.g. compacted). Log matching: an (index, term)
    /// pair names one entry with one predecessor, in every log.
    pub fn observe_entries(&mut self, id: u64, prev_term: Option<u64>, entries: &[Entry]) {
        let mut prev = prev_term;
        for e in entries {
            let content = entry_hash(e);
            let seen = self
                .log_entries
                .entry((e.index, e.term))
                .or_insert((prev.unwrap_or(0), content));
            if seen.1 != content {
                self.violations.push(format!(
                    "log matching: node {id} has a different entry at index {} term {}",
                    e.index, e.term
                ));
            }
            match prev {
                Some(p) if seen.0 == 0 => seen.0 = p,
                Some(p) if seen.0 != p => self.violations.push(format!(
                    "log matching: node {id} has entry {}@{} after term {p}, another log after term {}",
                    e.index, e.term, seen.0
                )),
                _ => {}
            }
            prev = Some(e.term);
        }
    }

    /// Node `id` knows index `index` (of term `term`) is committed.
    pub fn observe_commit(&mut self, id: u64, index: u64, term: u64) {
        let t = slot(&mut self.committed_terms, index);
        if *t == 0 {
            *t = term;
        } else if *t != term {
            let first = *t;
            self.violations.push(format!(
                "commit safety: node {id} committed term {term} at index {index}, another node term {first}"
            ));
        }
    }

    /// Leader completeness: the leader `id` of `term` must hold every entry known committed.
    /// `term_at(i)` answers the term of its entry `i` (0: compacted or absent).
    pub fn check_leader(
        &mut self,
        id: u64,
        term: u64,
        first_index: u64,
        last_index: u64,
        term_at: impl Fn(u64) -> u64,
    ) {
        if !self.leaders_checked.insert((id, term)) {
            return;
        }
        for i in first_index.max(1)..=self.committed_max() {
            let want = self.committed_terms[i as usize];
            if want == 0 {
                continue;
            }
            let have = if i > last_index { 0 } else { term_at(i) };
            if have != want {
                self.violations.push(format!(
                    "leader completeness: node {id}, leader of term {term}, has term {have} at committed index {i} (committed term {want}, its last index {last_index})"
                ));
                return;
            }
        }
    }

    /// Node `id` applied up to `index`, its state machine now has `digest`. State-machine
    /// safety: everybody's digest at an index is the same.
    pub fn observe_apply(&mut self, id: u64, index: u64, digest: u64) {
        let d = slot(&mut self.applied_digests, index);
        if *d == 0 {
            *d = digest;
        } else if *d != digest {
            self.violations.push(format!(
                "state machine safety: node {id} applied a different history at index {index}"
            ));
        }
        self.max_applied = self.max_applied.max(index);
    }

    /// A read with context `ctx` is issued now: every write acknowledged so far must be visible.
    pub fn read_issued(&mut self, ctx: Vec<u8>) {
        self.reads.insert(ctx, self.max_applied);
    }

    /// Node `id` got the answer `index` for the read `ctx`.
    pub fn read_answered(&mut self, id: u64, ctx: &[u8], index: u64) {
        let Some(&least) = self.reads.get(ctx) else {
            self.violations.push(format!(
                "read index: node {id} got an answer for an unknown request {ctx:?}"
            ));
            return;
        };
        self.reads_answered += 1;
        if index < least {
            self.violations.push(format!(
                "linearizability: node {id} read at index {index}, but index {least} was acknowledged before the read was issued"
            ));
        }
    }
}

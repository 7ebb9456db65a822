//! Client sessions: at-most-once application of client commands.
//!
//! Every region keeps a [`SessionTable`] in its [`RegionState`](super::RegionState): for each
//! client id, the sequence number of the last command of that client the region applied, the
//! log index it was applied at and (when small enough) its results. [`StateStore::apply`]
//! consults it before applying a command with a non-zero `client_id`:
//! - `sequence > last` (or an unknown client): applied, and the entry is replaced;
//! - `sequence == last`: a retry of the command already applied: not applied again; answered
//!   with the results of the first time (`Ok(results)`), or with [`CommandError::Duplicate`]
//!   when they were too large to keep (see [`SESSION_RESULTS_BYTES_MAX`]);
//! - `sequence < last`: refused with [`CommandError::Duplicate`] (it may or may not have been
//!   applied before; the client has moved past it).
//!
//! In both refused cases the entry's index is still applied (as a no-op). Client id 0 means "no
//! session": such commands always apply and are not recorded.
//!
//! # Determinism
//! The table is replicated state: it changes only when an entry is applied, depends only on the
//! entries and [`StateConfig::session_clients_max`](super::StateConfig::session_clients_max)
//! (which must be equal on every store of a cluster), and is carried in checkpoints, snapshots
//! and, on a split, copied to the child. When a new client would exceed the bound, the client
//! whose last command has the lowest log index is evicted (ties, which one region's log cannot
//! produce, go to the lower client id), so every replica evicts the same one. An evicted
//! client's late retry is applied again: the bound trades that (rare) case for bounded memory.
//!
//! Results are kept in their encoded form (byte layout in `docs/FORMAT.md`, "Session"), which
//! is also what checkpoints and snapshots carry, and decoded only when a retry asks for them.
//!
//! [`StateStore::apply`]: super::StateStore::apply

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes};

use super::command::{CommandError, OpResult};

/// Encoded results larger than this are not kept (a retry then gets
/// [`CommandError::Duplicate`]). 4 KiB: every result of typical commands (puts, small CASes)
/// fits, and a full table of 1024 clients stays around 4 MiB per region in memory and in the
/// first chunk of a snapshot (under the transport's 16 MiB frame cap).
pub const SESSION_RESULTS_BYTES_MAX: usize = 4096;

/// Results of one command kept at most (a longer batch's results are not kept); bounds what a
/// decoder may be asked to allocate from a run-length encoding.
pub const SESSION_RESULTS_LEN_MAX: u32 = 65_536;

/// Bytes of an encoded session before its results: client id, sequence, index, results length.
pub const SESSION_HEADER_LEN: usize = 28;

/// `results_len` of a session whose results were not kept.
const RESULTS_NOT_KEPT: u32 = u32::MAX;

/// Result item kinds.
mod item {
    /// A run of `OpResult::Done`: `u32` run length (>= 1).
    pub const DONE_RUN: u8 = 1;
    /// An `OpResult::Cas`: `u8` succeeded, `u8` has previous, [`u32` len, previous].
    pub const CAS: u8 = 2;
}

/// What a region remembers of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Sequence number of the client's last applied command.
    pub sequence: u64,
    /// Log index it was applied at.
    pub index: u64,
    /// Its results, encoded; `None` if they were too large to keep.
    results: Option<Bytes>,
}

impl Session {
    fn encoded_len(&self) -> usize {
        SESSION_HEADER_LEN + self.results.as_ref().map_or(0, Bytes::len)
    }

    /// The results of the command, if they were kept.
    pub fn results(&self) -> Option<Vec<OpResult>> {
        self.results.as_ref().map(|b| {
            decode_results(b).expect("kept results were encoded or validated when they came in")
        })
    }
}

/// The sessions of one region: client id → [`Session`]. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTable {
    clients: BTreeMap<u64, Session>,
    /// `(index, client id)` of every session, for eviction in index order.
    /// Invariant: holds exactly one pair per entry of `clients`.
    by_index: BTreeSet<(u64, u64)>,
    /// Bytes of the encoded form of every session. Invariant: the sum of `encoded_len` of
    /// the sessions in `clients`.
    bytes: usize,
}

/// What a session says about a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Apply it.
    Apply,
    /// Do not apply it; answer this.
    Answer(std::result::Result<Vec<OpResult>, CommandError>),
}

impl SessionTable {
    /// Clients held.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is held.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The session of `client_id`.
    pub fn get(&self, client_id: u64) -> Option<&Session> {
        self.clients.get(&client_id)
    }

    /// Sessions in client id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.clients.iter().map(|(c, s)| (*c, s))
    }

    /// Whether the command `(client_id, sequence)` is to be applied.
    pub(crate) fn verdict(&self, client_id: u64, sequence: u64) -> Verdict {
        if client_id == 0 {
            return Verdict::Apply;
        }
        let Some(s) = self.clients.get(&client_id) else {
            return Verdict::Apply;
        };
        let refused = CommandError::Duplicate {
            client_id,
            sequence,
            last: s.sequence,
        };
        if sequence > s.sequence {
            Verdict::Apply
        } else if sequence == s.sequence {
            Verdict::Answer(s.results().ok_or(refused))
        } else {
            Verdict::Answer(Err(refused))
        }
    }

    /// Records that `(client_id, sequence)` was applied at `index` with `results`, evicting the
    /// client with the lowest index while `clients_max` would be exceeded. Client 0 is not
    /// recorded.
    pub fn record(
        &mut self,
        client_id: u64,
        sequence: u64,
        index: u64,
        results: &[OpResult],
        clients_max: usize,
    ) {
        if client_id == 0 {
            return;
        }
        if !self.clients.contains_key(&client_id) {
            while self.clients.len() >= clients_max.max(1) {
                let Some((_, evicted)) = self.by_index.pop_first() else {
                    break;
                };
                if let Some(old) = self.clients.remove(&evicted) {
                    self.bytes -= old.encoded_len();
                }
            }
        }
        let session = Session {
            sequence,
            index,
            results: encode_results(results),
        };
        self.insert(client_id, session);
    }

    /// Inserts or replaces a session as it is (decoding; no eviction).
    fn insert(&mut self, client_id: u64, session: Session) {
        // Remove the old entry first: it may share the new one's (index, client) key.
        if let Some(old) = self.clients.remove(&client_id) {
            self.by_index.remove(&(old.index, client_id));
            self.bytes -= old.encoded_len();
        }
        self.bytes += session.encoded_len();
        self.by_index.insert((session.index, client_id));
        self.clients.insert(client_id, session);
        debug_assert_eq!(self.by_index.len(), self.clients.len());
    }

    /// Appends the encoded sessions of clients after `after` (all: `None`) until `max_bytes`
    /// are written (at least one session, if any is left); returns how many and the last client
    /// written.
    pub(crate) fn encode_from(
        &self,
        out: &mut Vec<u8>,
        after: Option<u64>,
        max_bytes: usize,
    ) -> (u32, Option<u64>) {
        use std::ops::Bound;
        let lo = after.map_or(Bound::Unbounded, Bound::Excluded);
        let start = out.len();
        let mut count = 0u32;
        let mut last = None;
        for (&client_id, s) in self.clients.range((lo, Bound::Unbounded)) {
            let len = s.encoded_len();
            if count > 0 && out.len() - start + len > max_bytes {
                break;
            }
            encode_session(out, client_id, s);
            count += 1;
            last = Some(client_id);
        }
        (count, last)
    }

    /// Decodes `count` encoded sessions from the front of `b` into the table; returns the bytes
    /// read. Never panics; allocates only what the bytes present can hold.
    pub(crate) fn decode_into(
        &mut self,
        b: &[u8],
        count: u32,
    ) -> std::result::Result<usize, SessionFormatError> {
        if count as usize > b.len() / SESSION_HEADER_LEN {
            return Err(SessionFormatError(
                "session count overruns the bytes present",
            ));
        }
        let mut pos = 0;
        for _ in 0..count {
            let (client_id, session, used) = decode_session(&b[pos..])?;
            self.insert(client_id, session);
            pos += used;
        }
        Ok(pos)
    }

    /// Bytes of the encoded form of every session (O(1)).
    pub(crate) fn encoded_len(&self) -> usize {
        debug_assert_eq!(
            self.bytes,
            self.clients
                .values()
                .map(Session::encoded_len)
                .sum::<usize>()
        );
        self.bytes
    }
}

/// Why encoded sessions are not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad session encoding: {0}")]
pub struct SessionFormatError(pub &'static str);

fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], SessionFormatError> {
    if b.len() - *pos < n {
        return Err(SessionFormatError("truncated"));
    }
    let s = &b[*pos..*pos + n];
    *pos += n;
    Ok(s)
}

fn u32_at(b: &[u8], pos: &mut usize) -> Result<u32, SessionFormatError> {
    let mut a = [0u8; 4];
    a.copy_from_slice(take(b, pos, 4)?);
    Ok(u32::from_le_bytes(a))
}

fn u64_at(b: &[u8], pos: &mut usize) -> Result<u64, SessionFormatError> {
    let mut a = [0u8; 8];
    a.copy_from_slice(take(b, pos, 8)?);
    Ok(u64::from_le_bytes(a))
}

fn encode_session(out: &mut Vec<u8>, client_id: u64, s: &Session) {
    out.put_u64_le(client_id);
    out.put_u64_le(s.sequence);
    out.put_u64_le(s.index);
    match &s.results {
        Some(r) => {
            out.put_u32_le(r.len() as u32);
            out.put_slice(r);
        }
        None => out.put_u32_le(RESULTS_NOT_KEPT),
    }
}

fn decode_session(b: &[u8]) -> Result<(u64, Session, usize), SessionFormatError> {
    let mut pos = 0;
    let client_id = u64_at(b, &mut pos)?;
    if client_id == 0 {
        return Err(SessionFormatError("client id 0 has no session"));
    }
    let sequence = u64_at(b, &mut pos)?;
    let index = u64_at(b, &mut pos)?;
    let len = u32_at(b, &mut pos)?;
    let results = match len {
        RESULTS_NOT_KEPT => None,
        n if n as usize > SESSION_RESULTS_BYTES_MAX => {
            return Err(SessionFormatError("results longer than the maximum kept"))
        }
        n => {
            let r = take(b, &mut pos, n as usize)?;
            decode_results(r)?;
            Some(Bytes::copy_from_slice(r))
        }
    };
    let session = Session {
        sequence,
        index,
        results,
    };
    Ok((client_id, session, pos))
}

/// The encoded results, or `None` if they exceed [`SESSION_RESULTS_BYTES_MAX`] or
/// [`SESSION_RESULTS_LEN_MAX`].
fn encode_results(results: &[OpResult]) -> Option<Bytes> {
    if results.len() > SESSION_RESULTS_LEN_MAX as usize {
        return None;
    }
    let mut out = Vec::new();
    out.put_u32_le(results.len() as u32);
    let mut i = 0;
    while i < results.len() {
        match &results[i] {
            OpResult::Done => {
                let run = results[i..]
                    .iter()
                    .take_while(|r| **r == OpResult::Done)
                    .count();
                out.put_u8(item::DONE_RUN);
                out.put_u32_le(run as u32);
                i += run;
            }
            OpResult::Cas {
                succeeded,
                previous,
            } => {
                out.put_u8(item::CAS);
                out.put_u8(u8::from(*succeeded));
                out.put_u8(u8::from(previous.is_some()));
                if let Some(p) = previous {
                    if p.len() > SESSION_RESULTS_BYTES_MAX {
                        return None;
                    }
                    out.put_u32_le(p.len() as u32);
                    out.put_slice(p);
                }
                i += 1;
            }
        }
        if out.len() > SESSION_RESULTS_BYTES_MAX {
            return None;
        }
    }
    Some(Bytes::from(out))
}

/// Decodes encoded results; never panics, allocates at most [`SESSION_RESULTS_LEN_MAX`]
/// results.
pub(crate) fn decode_results(b: &[u8]) -> Result<Vec<OpResult>, SessionFormatError> {
    let mut pos = 0;
    let count = u32_at(b, &mut pos)?;
    if count > SESSION_RESULTS_LEN_MAX {
        return Err(SessionFormatError("more results than a session keeps"));
    }
    let mut out = Vec::with_capacity(count as usize);
    while pos < b.len() {
        match take(b, &mut pos, 1)?[0] {
            item::DONE_RUN => {
                let run = u32_at(b, &mut pos)?;
                if run == 0 || run as usize > count as usize - out.len() {
                    return Err(SessionFormatError("done run does not fit the count"));
                }
                out.resize(out.len() + run as usize, OpResult::Done);
            }
            item::CAS => {
                if out.len() == count as usize {
                    return Err(SessionFormatError("more results than counted"));
                }
                let flags = take(b, &mut pos, 2)?;
                let (succeeded, has_previous) = match (flags[0], flags[1]) {
                    (s @ 0..=1, p @ 0..=1) => (s == 1, p == 1),
                    _ => return Err(SessionFormatError("CAS flag not 0 or 1")),
                };
                let previous = match has_previous {
                    true => {
                        let n = u32_at(b, &mut pos)? as usize;
                        Some(Bytes::copy_from_slice(take(b, &mut pos, n)?))
                    }
                    false => None,
                };
                out.push(OpResult::Cas {
                    succeeded,
                    previous,
                });
            }
            _ => return Err(SessionFormatError("unknown result kind")),
        }
    }
    if out.len() != count as usize {
        return Err(SessionFormatError("fewer results than counted"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn replacing_a_session_at_the_same_index_keeps_the_table_consistent() {
        let mut t = SessionTable::default();
        t.record(7, 1, 5, &[OpResult::Done], 4);
        t.record(7, 2, 5, &[OpResult::Done], 4);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(7).map(|s| s.sequence), Some(2));
        // Eviction still finds the client by its index.
        for c in 8..12 {
            t.record(c, 1, 6 + c, &[OpResult::Done], 4);
        }
        assert_eq!(t.len(), 4);
        assert!(t.get(7).is_none(), "the oldest client was evicted");
    }

    fn cas(ok: bool, prev: Option<&'static [u8]>) -> OpResult {
        OpResult::Cas {
            succeeded: ok,
            previous: prev.map(Bytes::from_static),
        }
    }

    #[test]
    fn verdicts_follow_the_sequence() {
        let mut t = SessionTable::default();
        let first = vec![OpResult::Done, cas(true, Some(b"old")), OpResult::Done];
        assert_eq!(t.verdict(7, 5), Verdict::Apply);
        t.record(7, 5, 10, &first, 8);
        assert_eq!(t.verdict(7, 5), Verdict::Answer(Ok(first)));
        let dup = CommandError::Duplicate {
            client_id: 7,
            sequence: 4,
            last: 5,
        };
        assert_eq!(t.verdict(7, 4), Verdict::Answer(Err(dup)));
        assert_eq!(t.verdict(7, 6), Verdict::Apply);
        assert_eq!(t.verdict(8, 1), Verdict::Apply);
        t.record(0, 1, 11, &[], 8);
        assert_eq!((t.len(), t.verdict(0, 1)), (1, Verdict::Apply));
    }

    #[test]
    fn large_results_are_not_kept_but_still_refuse_the_retry() {
        let mut t = SessionTable::default();
        let big: &'static [u8] = &[9u8; SESSION_RESULTS_BYTES_MAX];
        t.record(3, 1, 1, &[cas(false, Some(big))], 8);
        let dup = CommandError::Duplicate {
            client_id: 3,
            sequence: 1,
            last: 1,
        };
        assert_eq!(t.verdict(3, 1), Verdict::Answer(Err(dup)));
        let many = vec![OpResult::Done; 10_000];
        t.record(3, 2, 2, &many, 8);
        assert_eq!(t.verdict(3, 2), Verdict::Answer(Ok(many)));
    }

    #[test]
    fn eviction_takes_the_lowest_index() {
        let mut t = SessionTable::default();
        for (client, index) in [(1, 30), (2, 10), (3, 20)] {
            t.record(client, 1, index, &[], 3);
        }
        t.record(1, 2, 40, &[], 3); // an update never evicts
        assert_eq!(t.len(), 3);
        t.record(4, 1, 50, &[], 3);
        let held: Vec<u64> = t.iter().map(|(c, _)| c).collect();
        assert_eq!(held, vec![1, 3, 4]);
        t.record(5, 1, 60, &[], 3);
        let held: Vec<u64> = t.iter().map(|(c, _)| c).collect();
        assert_eq!(held, vec![1, 4, 5]);
    }

    #[test]
    fn tables_round_trip() {
        let mut t = SessionTable::default();
        t.record(1, 9, 3, &[OpResult::Done, cas(false, None)], 8);
        t.record(2, 4, 5, &[cas(true, Some(b""))], 8);
        t.record(3, 1, 6, &[cas(false, Some(&[1u8; 5000]))], 8);
        let mut b = Vec::new();
        assert_eq!(t.encode_from(&mut b, None, usize::MAX), (3, Some(3)));
        assert_eq!(b.len(), t.encoded_len());
        let mut back = SessionTable::default();
        assert_eq!(back.decode_into(&b, 3), Ok(b.len()));
        assert_eq!(back, t);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                count in 0u32..8) {
            let _ = decode_results(&bytes);
            let _ = SessionTable::default().decode_into(&bytes, count);
        }

        #[test]
        fn mutated_tables_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<Option<usize>>(),
        ) {
            let mut t = SessionTable::default();
            t.record(1, 9, 3, &[OpResult::Done, cas(false, None)], 8);
            t.record(2, 4, 5, &[cas(true, Some(b"abc"))], 8);
            let mut b = Vec::new();
            t.encode_from(&mut b, None, usize::MAX);
            for (at, x) in flips {
                let i = at % b.len();
                b[i] ^= x;
            }
            if let Some(c) = cut {
                b.truncate(c % (b.len() + 1));
            }
            let mut back = SessionTable::default();
            if back.decode_into(&b, 2).is_ok() {
                // Whatever decoded answers retries without panicking.
                for (c, s) in back.iter() {
                    let _ = (back.verdict(c, s.sequence), s.results());
                }
            }
        }

        #[test]
        fn results_round_trip(rs in proptest::collection::vec(
            prop_oneof![
                Just(OpResult::Done),
                (any::<bool>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)))
                    .prop_map(|(s, p)| OpResult::Cas { succeeded: s, previous: p.map(Bytes::from) }),
            ], 0..40)) {
            let enc = encode_results(&rs).expect("small");
            prop_assert_eq!(decode_results(&enc).expect("valid"), rs);
        }
    }
}

//! Region snapshots: the chunk stream a snapshot travels as, its descriptor, the builder that
//! cuts a frozen region into chunks and the receiver that verifies and installs them.
//!
//! A snapshot is a point-in-time view of one region ([`FrozenRegion`]): its keys and values in
//! key order plus its [`RegionState`] (applied index and term, conf state, metadata). It travels
//! as a stream of chunks (byte layout in `docs/FORMAT.md`, "Snapshot chunk"), each carrying the
//! snapshot's identity, its number and a CRC32 over itself, so a receiver verifies every chunk
//! as it arrives, detects gaps, duplicates and corruption, and asks the sender to resume after
//! the last chunk it accepted. The first chunk carries the region state and the total key count;
//! the last one a CRC32 over the bodies of the whole stream.
//!
//! Raft itself only carries a [`SnapshotMeta`] (in `raftlog::Snapshot::data`): a small
//! descriptor naming the snapshot, whose chunks go on their own stream.
//!
//! [`SnapshotBuilder`] is deterministic: the same frozen view and chunk size give the same bytes,
//! so `resume_after(n)` continues exactly where a receiver stopped. [`SnapshotReceiver`] feeds an
//! [`InstallTarget`] (the state store) with the verified entries; the target switches the region
//! in atomically at `install_finish`, so a crash or an abort before that leaves the old state.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use raftlog::ConfState;

use super::command::{FieldReader, Truncated};
use super::session::{SessionFormatError, SessionTable};
use crate::error::EngineError;
use crate::state::{CheckpointInfo, FrozenRegion, InstallId, RegionState, StateStore};

/// Magic of a snapshot chunk.
pub const CHUNK_MAGIC: [u8; 4] = *b"BSNC";
/// Version of the chunk and descriptor formats this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;
/// Bytes of a chunk header.
pub const CHUNK_HEADER_LEN: usize = 56;
/// Offset of the chunk CRC in the header (it covers the header before it and the body).
const CHUNK_CRC_OFFSET: usize = 52;
/// Bytes of an encoded [`SnapshotMeta`].
pub const SNAPSHOT_META_LEN: usize = 64;
/// The smallest chunk size a builder accepts: a header, a region state with a few peers and some
/// room for entries.
pub const CHUNK_BYTES_MIN: usize = 1024;
/// Chunk flag: the first chunk (carries the region state).
const FLAG_FIRST: u8 = 1;
/// Chunk flag: the last chunk (carries the stream checksum).
const FLAG_LAST: u8 = 2;
/// Bytes of framing per entry (key length and value length).
const ENTRY_FRAMING_LEN: usize = 8;
/// Most peers in one list of an encoded conf state (bounds allocation while decoding).
const CONF_LIST_LEN_MAX: u32 = 4096;

/// Why a snapshot chunk, descriptor or stream was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Fewer bytes than the fixed part.
    #[error("{what} of {len} bytes is shorter than its {min}-byte header")]
    TooShort {
        /// Chunk or descriptor.
        what: &'static str,
        /// Bytes given.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Not a snapshot chunk.
    #[error("bad chunk magic {found:?}")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// Written by an unknown format version.
    #[error("snapshot format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version found.
        found: u8,
        /// Version understood.
        supported: u8,
    },
    /// A reserved field or flag bit is set.
    #[error("{what}: reserved bits set")]
    Reserved {
        /// Where.
        what: &'static str,
    },
    /// The header's body length disagrees with the bytes present.
    #[error("chunk body length {stated} but {actual} bytes follow the header")]
    BodyLength {
        /// The header's value.
        stated: u32,
        /// Bytes present.
        actual: usize,
    },
    /// A CRC does not match: the bytes were damaged.
    #[error("{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Chunk, descriptor or stream.
        what: &'static str,
        /// The stored value.
        stored: u32,
        /// The value computed.
        computed: u32,
    },
    /// A field runs past the end of the body.
    #[error("chunk truncated: {what} at body byte {offset} needs {needed} bytes")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Its offset in the chunk body.
        offset: usize,
        /// Bytes it needs.
        needed: u64,
    },
    /// A count cannot fit the bytes present.
    #[error("{what} count {count} cannot fit in {bytes} bytes")]
    Count {
        /// What is counted.
        what: &'static str,
        /// The claimed count.
        count: u64,
        /// The bytes present.
        bytes: usize,
    },
    /// Bytes left after the last field.
    #[error("{count} bytes after the end of the chunk body")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The chunk belongs to another snapshot, or disagrees with the descriptor.
    #[error("chunk {field} is {found}, the snapshot's is {expected}")]
    WrongSnapshot {
        /// The field that differs.
        field: &'static str,
        /// The snapshot's value.
        expected: u64,
        /// The chunk's value.
        found: u64,
    },
    /// A chunk already accepted arrived again.
    #[error("duplicate chunk {chunk_no} (expecting {expected})")]
    Duplicate {
        /// The chunk's number.
        chunk_no: u32,
        /// The next number expected.
        expected: u32,
    },
    /// Chunks are missing before this one.
    #[error("chunk {chunk_no} arrived while chunk {expected} is missing")]
    Gap {
        /// The chunk's number.
        chunk_no: u32,
        /// The next number expected.
        expected: u32,
    },
    /// Keys are not strictly ascending across the stream (a sender bug).
    #[error("chunk {chunk_no}: keys are not strictly ascending")]
    KeyOrder {
        /// The chunk.
        chunk_no: u32,
    },
    /// The stream's totals disagree with what it announced.
    #[error("snapshot {what}: announced {expected}, found {found}")]
    Totals {
        /// Keys, bytes or chunks.
        what: &'static str,
        /// Announced.
        expected: u64,
        /// Counted.
        found: u64,
    },
    /// The first chunk's client sessions do not decode.
    #[error(transparent)]
    Sessions(#[from] SessionFormatError),
    /// The receiver already finished or failed.
    #[error("the snapshot receiver is closed")]
    Closed,
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] EngineError),
}

impl SnapshotError {
    /// Whether the install was abandoned. Other errors refuse one chunk and leave the receiver
    /// waiting for [`SnapshotReceiver::next_chunk_no`] (the sender resumes after the last chunk
    /// accepted).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SnapshotError::KeyOrder { .. }
                | SnapshotError::Totals { .. }
                | SnapshotError::Closed
                | SnapshotError::Store(_)
        ) || matches!(self, SnapshotError::Checksum { what, .. } if *what == "stream")
    }
}

impl From<Truncated> for SnapshotError {
    fn from(t: Truncated) -> SnapshotError {
        SnapshotError::Truncated {
            what: t.what,
            offset: t.offset,
            needed: t.needed,
        }
    }
}

/// The snapshot descriptor Raft carries in `Snapshot::data` (64 bytes, `docs/FORMAT.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    /// The region.
    pub region_id: u64,
    /// Applied index the snapshot holds the state at.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Identifies this build among the store's snapshots (chunks carry it).
    pub snapshot_id: u64,
    /// Bytes of all chunks together.
    pub total_bytes: u64,
    /// Keys in the snapshot.
    pub key_count: u64,
    /// Chunks in the stream.
    pub chunk_count: u32,
}

impl SnapshotMeta {
    /// The 64-byte binary form.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(SNAPSHOT_META_LEN);
        b.put_u8(SNAPSHOT_FORMAT_VERSION);
        b.put_bytes(0, 3);
        b.put_u32_le(self.chunk_count);
        for v in [
            self.region_id,
            self.index,
            self.term,
            self.snapshot_id,
            self.total_bytes,
            self.key_count,
        ] {
            b.put_u64_le(v);
        }
        b.put_u32_le(0);
        let crc = crc32fast::hash(&b);
        b.put_u32_le(crc);
        debug_assert_eq!(b.len(), SNAPSHOT_META_LEN);
        b.freeze()
    }

    /// Parses the binary form.
    pub fn decode(b: &[u8]) -> Result<SnapshotMeta, SnapshotError> {
        if b.len() != SNAPSHOT_META_LEN {
            return Err(SnapshotError::TooShort {
                what: "snapshot descriptor",
                len: b.len(),
                min: SNAPSHOT_META_LEN,
            });
        }
        let stored = le_u32(&b[60..64]);
        let computed = crc32fast::hash(&b[..60]);
        if stored != computed {
            return Err(SnapshotError::Checksum {
                what: "snapshot descriptor",
                stored,
                computed,
            });
        }
        if b[0] != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: b[0],
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        if b[1..4] != [0; 3] || b[56..60] != [0; 4] {
            return Err(SnapshotError::Reserved {
                what: "snapshot descriptor",
            });
        }
        let u = |at: usize| le_u64(&b[at..at + 8]);
        Ok(SnapshotMeta {
            chunk_count: le_u32(&b[4..8]),
            region_id: u(8),
            index: u(16),
            term: u(24),
            snapshot_id: u(32),
            total_bytes: u(40),
            key_count: u(48),
        })
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The fixed header of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The region.
    pub region_id: u64,
    /// The snapshot's index.
    pub index: u64,
    /// The snapshot's term.
    pub term: u64,
    /// The snapshot's id.
    pub snapshot_id: u64,
    /// Position in the stream, from 0.
    pub chunk_no: u32,
    /// Entries in this chunk.
    pub key_count: u32,
    /// Whether this is the first chunk (it carries the region state).
    pub first: bool,
    /// Whether this is the last chunk (it carries the stream checksum).
    pub last: bool,
}

/// A decoded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The header.
    pub header: ChunkHeader,
    /// First chunk only: the region state and the snapshot's total key count.
    pub state: Option<(RegionState, u64)>,
    /// Keys and values, ascending by key.
    pub entries: Vec<(Bytes, Bytes)>,
    /// Last chunk only: CRC32 over the bodies of every chunk (the last one without this field).
    pub stream_checksum: Option<u32>,
}

/// Encodes the first chunk's region state and total key count.
fn encode_state(out: &mut BytesMut, state: &RegionState, total_keys: u64) {
    out.put_u64_le(total_keys);
    let cs = &state.conf_state;
    out.put_u8(u8::from(cs.auto_leave));
    for list in [
        &cs.voters,
        &cs.learners,
        &cs.voters_outgoing,
        &cs.learners_next,
    ] {
        out.put_u32_le(u32::try_from(list.len()).expect("fewer than 2^32 peers"));
        for id in list {
            out.put_u64_le(*id);
        }
    }
    out.put_u32_le(u32::try_from(state.meta.len()).expect("region metadata under 4 GiB"));
    out.put_slice(&state.meta);
    let mut sessions = Vec::with_capacity(state.sessions.encoded_len());
    let (count, _) = state.sessions.encode_from(&mut sessions, None, usize::MAX);
    out.put_u32_le(count);
    out.put_slice(&sessions);
}

fn encoded_state_len(state: &RegionState) -> usize {
    let cs = &state.conf_state;
    let peers = cs.voters.len() + cs.learners.len() + cs.voters_outgoing.len();
    8 + 1
        + 16
        + 8 * (peers + cs.learners_next.len())
        + 4
        + state.meta.len()
        + 4
        + state.sessions.encoded_len()
}

fn decode_state(r: &mut FieldReader, h: &ChunkHeader) -> Result<(RegionState, u64), SnapshotError> {
    let total_keys = r.u64("total key count")?;
    let auto_leave = match r.u8("auto leave")? {
        0 => false,
        1 => true,
        _ => return Err(SnapshotError::Reserved { what: "auto leave" }),
    };
    let mut lists: [Vec<u64>; 4] = Default::default();
    for list in &mut lists {
        let n = r.u32("peer count")?;
        if n > CONF_LIST_LEN_MAX || n as usize * 8 > r.remaining() {
            return Err(SnapshotError::Count {
                what: "peer",
                count: u64::from(n),
                bytes: r.remaining(),
            });
        }
        for _ in 0..n {
            list.push(r.u64("peer id")?);
        }
    }
    let [voters, learners, voters_outgoing, learners_next] = lists;
    let meta = r.bytes("region metadata")?;
    let session_count = r.u32("session count")?;
    let mut sessions = SessionTable::default();
    let used = sessions.decode_into(r.rest(), session_count)?;
    r.skip(used);
    let state = RegionState {
        region_id: h.region_id,
        applied_index: h.index,
        applied_term: h.term,
        conf_state: ConfState {
            voters,
            learners,
            voters_outgoing,
            learners_next,
            auto_leave,
        },
        meta,
        sessions,
    };
    Ok((state, total_keys))
}

/// Writes the header in front of `body` and returns the whole chunk.
fn seal_chunk(h: &ChunkHeader, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(CHUNK_HEADER_LEN + body.len());
    out.put_slice(&CHUNK_MAGIC);
    out.put_u8(SNAPSHOT_FORMAT_VERSION);
    let mut flags = 0;
    if h.first {
        flags |= FLAG_FIRST;
    }
    if h.last {
        flags |= FLAG_LAST;
    }
    out.put_u8(flags);
    out.put_u16_le(0);
    for v in [h.region_id, h.index, h.term, h.snapshot_id] {
        out.put_u64_le(v);
    }
    out.put_u32_le(h.chunk_no);
    out.put_u32_le(h.key_count);
    out.put_u32_le(u32::try_from(body.len()).expect("a chunk body is under 4 GiB"));
    debug_assert_eq!(out.len(), CHUNK_CRC_OFFSET);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out);
    crc.update(body);
    out.put_u32_le(crc.finalize());
    out.put_slice(body);
    out.freeze()
}

impl Chunk {
    /// The binary form (used by tests and tools; the builder encodes without this struct).
    pub fn encode(&self) -> Bytes {
        let mut body = BytesMut::new();
        if let Some((state, total)) = &self.state {
            encode_state(&mut body, state, *total);
        }
        for (k, v) in &self.entries {
            put_entry(&mut body, k, v);
        }
        if let Some(c) = self.stream_checksum {
            body.put_u32_le(c);
        }
        seal_chunk(&self.header, &body)
    }

    /// Verifies the header and CRC of a chunk, returning the header and the body.
    pub fn verify(b: &Bytes) -> Result<(ChunkHeader, Bytes), SnapshotError> {
        if b.len() < CHUNK_HEADER_LEN {
            return Err(SnapshotError::TooShort {
                what: "chunk",
                len: b.len(),
                min: CHUNK_HEADER_LEN,
            });
        }
        let stated = le_u32(&b[48..52]);
        let actual = b.len() - CHUNK_HEADER_LEN;
        if stated as usize != actual {
            return Err(SnapshotError::BodyLength { stated, actual });
        }
        let stored = le_u32(&b[CHUNK_CRC_OFFSET..CHUNK_HEADER_LEN]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&b[..CHUNK_CRC_OFFSET]);
        crc.update(&b[CHUNK_HEADER_LEN..]);
        let computed = crc.finalize();
        if stored != computed {
            return Err(SnapshotError::Checksum {
                what: "chunk",
                stored,
                computed,
            });
        }
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&b[..4]);
        if magic != CHUNK_MAGIC {
            return Err(SnapshotError::BadMagic { found: magic });
        }
        if b[4] != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: b[4],
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let flags = b[5];
        if flags & !(FLAG_FIRST | FLAG_LAST) != 0 || b[6..8] != [0, 0] {
            return Err(SnapshotError::Reserved {
                what: "chunk header",
            });
        }
        let u = |at: usize| le_u64(&b[at..at + 8]);
        let header = ChunkHeader {
            region_id: u(8),
            index: u(16),
            term: u(24),
            snapshot_id: u(32),
            chunk_no: le_u32(&b[40..44]),
            key_count: le_u32(&b[44..48]),
            first: flags & FLAG_FIRST != 0,
            last: flags & FLAG_LAST != 0,
        };
        if header.first != (header.chunk_no == 0) {
            return Err(SnapshotError::Reserved {
                what: "first-chunk flag",
            });
        }
        Ok((header, b.slice(CHUNK_HEADER_LEN..)))
    }

    /// Parses and verifies a chunk. Never panics; allocates only after checking counts against
    /// the bytes present.
    pub fn decode(b: &Bytes) -> Result<Chunk, SnapshotError> {
        let (header, body) = Chunk::verify(b)?;
        let mut r = FieldReader::new(body, 0);
        let state = match header.first {
            true => Some(decode_state(&mut r, &header)?),
            false => None,
        };
        let tail = if header.last { 4 } else { 0 };
        let entry_bytes = r.remaining().saturating_sub(tail);
        if header.key_count as usize * ENTRY_FRAMING_LEN > entry_bytes {
            return Err(SnapshotError::Count {
                what: "key",
                count: u64::from(header.key_count),
                bytes: entry_bytes,
            });
        }
        let mut entries = Vec::with_capacity(header.key_count as usize);
        for _ in 0..header.key_count {
            let k = r.bytes("key")?;
            let v = r.bytes("value")?;
            entries.push((k, v));
        }
        let stream_checksum = match header.last {
            true => Some(r.u32("stream checksum")?),
            false => None,
        };
        if r.remaining() != 0 {
            return Err(SnapshotError::TrailingBytes {
                count: r.remaining(),
            });
        }
        Ok(Chunk {
            header,
            state,
            entries,
            stream_checksum,
        })
    }
}

fn put_entry(out: &mut BytesMut, k: &[u8], v: &[u8]) {
    out.put_u32_le(u32::try_from(k.len()).expect("a key is under 4 GiB"));
    out.put_slice(k);
    out.put_u32_le(u32::try_from(v.len()).expect("a value is under 4 GiB"));
    out.put_slice(v);
}

/// What a snapshot is built from: a point-in-time view of one region. Implemented by
/// [`FrozenRegion`]; tests use in-memory views.
pub trait SnapshotSource {
    /// The region state at the view's point in time.
    fn state(&self) -> &RegionState;
    /// Keys in the view.
    fn key_count(&self) -> u64;
    /// Entries in key order after `after` (exclusive; `None`: from the first), up to about
    /// `max_bytes` of keys and values (at least one entry if any is left); `true` once the
    /// last entry was returned.
    fn read_from(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> crate::error::Result<(Vec<(Bytes, Bytes)>, bool)>;
}

impl SnapshotSource for FrozenRegion {
    fn state(&self) -> &RegionState {
        FrozenRegion::state(self)
    }
    fn key_count(&self) -> u64 {
        FrozenRegion::key_count(self)
    }
    fn read_from(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> crate::error::Result<(Vec<(Bytes, Bytes)>, bool)> {
        FrozenRegion::read_from(self, after, max_bytes)
    }
}

/// The builder's position after a chunk: enough to resume right after it.
#[derive(Clone)]
struct Mark {
    last_key: Option<Bytes>,
    stream_crc: crc32fast::Hasher,
    bytes: u64,
    keys: u64,
    /// Whether the chunk was the last.
    finished: bool,
}

/// Cuts a [`SnapshotSource`] into chunks of at most `chunk_bytes_max` bytes (a chunk holds at
/// least one entry, so a single larger entry makes a larger chunk). Deterministic: chunk
/// boundaries depend only on the view's contents and the chunk size.
pub struct SnapshotBuilder<S: SnapshotSource = FrozenRegion> {
    source: S,
    snapshot_id: u64,
    chunk_bytes_max: usize,
    next_chunk_no: u32,
    /// Last key read from the source.
    cursor: Option<Bytes>,
    /// Entries read from the source but not yet put in a chunk.
    pending: VecDeque<(Bytes, Bytes)>,
    source_done: bool,
    finished: bool,
    /// `marks[n]`: the position after chunk `n`.
    marks: Vec<Mark>,
    pos: Mark,
}

impl<S: SnapshotSource> SnapshotBuilder<S> {
    /// A builder of snapshot `snapshot_id` over `source`.
    ///
    /// # Panics
    /// If `chunk_bytes_max` is below [`CHUNK_BYTES_MIN`] (a configuration validated earlier).
    pub fn new(source: S, snapshot_id: u64, chunk_bytes_max: usize) -> SnapshotBuilder<S> {
        assert!(chunk_bytes_max >= CHUNK_BYTES_MIN, "chunk size validated");
        SnapshotBuilder {
            source,
            snapshot_id,
            chunk_bytes_max,
            next_chunk_no: 0,
            cursor: None,
            pending: VecDeque::new(),
            source_done: false,
            finished: false,
            marks: Vec::new(),
            pos: Mark {
                last_key: None,
                stream_crc: crc32fast::Hasher::new(),
                bytes: 0,
                keys: 0,
                finished: false,
            },
        }
    }

    /// The region state the snapshot holds.
    pub fn state(&self) -> &RegionState {
        self.source.state()
    }

    /// The number of the chunk [`Self::next_chunk`] returns next.
    pub fn next_chunk_no(&self) -> u32 {
        self.next_chunk_no
    }

    /// The descriptor, once the last chunk was produced.
    pub fn meta(&self) -> Option<SnapshotMeta> {
        let s = self.source.state();
        self.finished.then_some(SnapshotMeta {
            region_id: s.region_id,
            index: s.applied_index,
            term: s.applied_term,
            snapshot_id: self.snapshot_id,
            total_bytes: self.pos.bytes,
            key_count: self.pos.keys,
            chunk_count: self.next_chunk_no,
        })
    }

    /// Positions the builder so the next chunk is `chunk_no + 1`: at once if it produced that
    /// chunk before, otherwise by producing (and dropping) the chunks up to it.
    pub fn resume_after(&mut self, chunk_no: u32) -> Result<(), SnapshotError> {
        if let Some(m) = self.marks.get(chunk_no as usize).cloned() {
            self.pos = m;
            self.cursor = self.pos.last_key.clone();
            self.pending.clear();
            self.source_done = false;
            self.finished = self.pos.finished;
            self.next_chunk_no = chunk_no + 1;
            return Ok(());
        }
        while self.next_chunk_no <= chunk_no {
            if self.next_chunk()?.is_none() {
                return Err(SnapshotError::Totals {
                    what: "chunks",
                    expected: u64::from(chunk_no) + 1,
                    found: u64::from(self.next_chunk_no),
                });
            }
        }
        Ok(())
    }

    /// Positions the builder at the first chunk.
    pub fn rewind(&mut self) {
        self.pos = Mark {
            last_key: None,
            stream_crc: crc32fast::Hasher::new(),
            bytes: 0,
            keys: 0,
            finished: false,
        };
        self.cursor = None;
        self.pending.clear();
        self.source_done = false;
        self.finished = false;
        self.next_chunk_no = 0;
    }

    fn refill(&mut self) -> Result<(), SnapshotError> {
        let (entries, done) = self
            .source
            .read_from(self.cursor.as_deref(), self.chunk_bytes_max)?;
        if let Some((k, _)) = entries.last() {
            self.cursor = Some(k.clone());
        }
        // An empty answer that is not "done" would loop forever: treat it as the end; the key
        // count check below then reports the short view.
        self.source_done = done || entries.is_empty();
        self.pending.extend(entries);
        Ok(())
    }

    /// The next chunk, or `None` after the last.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, SnapshotError> {
        if self.finished {
            return Ok(None);
        }
        let first = self.next_chunk_no == 0;
        let mut body = BytesMut::new();
        let mut budget = self.chunk_bytes_max - CHUNK_HEADER_LEN - 4;
        if first {
            let total = self.source.key_count();
            encode_state(&mut body, self.source.state(), total);
            budget = budget.saturating_sub(encoded_state_len(self.source.state()));
        }
        let mut count = 0u32;
        loop {
            if self.pending.is_empty() && !self.source_done {
                self.refill()?;
            }
            let Some((k, v)) = self.pending.front() else {
                break;
            };
            let len = ENTRY_FRAMING_LEN + k.len() + v.len();
            if count > 0 && len > budget {
                break;
            }
            put_entry(&mut body, k, v);
            budget = budget.saturating_sub(len);
            count += 1;
            if let Some((k, _)) = self.pending.pop_front() {
                self.pos.last_key = Some(k);
            }
        }
        let last = self.pending.is_empty() && self.source_done;
        self.pos.stream_crc.update(&body);
        self.pos.keys += u64::from(count);
        if last {
            let expected = self.source.key_count();
            if self.pos.keys != expected {
                return Err(SnapshotError::Totals {
                    what: "keys",
                    expected,
                    found: self.pos.keys,
                });
            }
            body.put_u32_le(self.pos.stream_crc.clone().finalize());
        }
        let s = self.source.state();
        let header = ChunkHeader {
            region_id: s.region_id,
            index: s.applied_index,
            term: s.applied_term,
            snapshot_id: self.snapshot_id,
            chunk_no: self.next_chunk_no,
            key_count: count,
            first,
            last,
        };
        let chunk = seal_chunk(&header, &body);
        self.pos.bytes += chunk.len() as u64;
        self.pos.finished = last;
        if self.marks.len() == self.next_chunk_no as usize {
            self.marks.push(self.pos.clone());
        }
        self.next_chunk_no += 1;
        self.finished = last;
        Ok(Some(chunk))
    }
}

/// Where a snapshot is installed: the state store, or an in-memory model in tests. The target
/// switches the region in atomically at `install_finish`; until then the old state stands.
pub trait InstallTarget {
    /// Handle of an install in progress.
    type Install: Copy;
    /// Begins installing `state` (with no keys yet).
    fn install_begin(&mut self, state: RegionState) -> crate::error::Result<Self::Install>;
    /// Adds a key; keys arrive strictly ascending.
    fn install_put(
        &mut self,
        id: Self::Install,
        key: &[u8],
        value: &[u8],
    ) -> crate::error::Result<()>;
    /// Switches the region to the installed state, durably.
    fn install_finish(&mut self, id: Self::Install) -> crate::error::Result<CheckpointInfo>;
    /// Drops the install; the old state stands.
    fn install_abort(&mut self, id: Self::Install);
}

impl InstallTarget for StateStore {
    type Install = InstallId;
    fn install_begin(&mut self, state: RegionState) -> crate::error::Result<InstallId> {
        StateStore::install_begin(self, state)
    }
    fn install_put(&mut self, id: InstallId, key: &[u8], value: &[u8]) -> crate::error::Result<()> {
        StateStore::install_put(self, id, key, value)
    }
    fn install_finish(&mut self, id: InstallId) -> crate::error::Result<CheckpointInfo> {
        StateStore::install_finish(self, id)
    }
    fn install_abort(&mut self, id: InstallId) {
        StateStore::install_abort(self, id)
    }
}

/// What [`SnapshotReceiver::receive`] did with a chunk.
#[derive(Debug)]
pub enum ReceiveProgress {
    /// Accepted; the stream continues with this chunk number.
    More {
        /// The next chunk expected.
        next_chunk_no: u32,
    },
    /// The last chunk was accepted and the snapshot is installed.
    Installed(CheckpointInfo),
}

/// Verifies a chunk stream against its [`SnapshotMeta`] and installs it into an
/// [`InstallTarget`]. A refused chunk leaves the receiver waiting for
/// [`Self::next_chunk_no`]; a fatal error ([`SnapshotError::is_fatal`]) aborts the install.
/// The owner calls [`Self::abort`] if it gives up on the stream.
pub struct SnapshotReceiver<I: Copy> {
    meta: SnapshotMeta,
    next_chunk_no: u32,
    install: Option<I>,
    stream_crc: crc32fast::Hasher,
    keys: u64,
    bytes: u64,
    total_keys: u64,
    last_key: Option<Bytes>,
    closed: bool,
}

impl<I: Copy> SnapshotReceiver<I> {
    /// A receiver for the snapshot `meta` describes.
    pub fn new(meta: SnapshotMeta) -> SnapshotReceiver<I> {
        SnapshotReceiver {
            meta,
            next_chunk_no: 0,
            install: None,
            stream_crc: crc32fast::Hasher::new(),
            keys: 0,
            bytes: 0,
            total_keys: 0,
            last_key: None,
            closed: false,
        }
    }

    /// The descriptor.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The chunk expected next (a sender resumes after `next_chunk_no - 1`).
    pub fn next_chunk_no(&self) -> u32 {
        self.next_chunk_no
    }

    /// Whether the receiver finished or failed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Drops the install in progress, if any; the old state stands.
    pub fn abort<T: InstallTarget<Install = I>>(&mut self, target: &mut T) {
        if let Some(id) = self.install.take() {
            target.install_abort(id);
        }
        self.closed = true;
    }

    fn check_header(&self, h: &ChunkHeader) -> Result<(), SnapshotError> {
        let m = &self.meta;
        for (field, expected, found) in [
            ("region", m.region_id, h.region_id),
            ("index", m.index, h.index),
            ("term", m.term, h.term),
            ("snapshot id", m.snapshot_id, h.snapshot_id),
        ] {
            if expected != found {
                return Err(SnapshotError::WrongSnapshot {
                    field,
                    expected,
                    found,
                });
            }
        }
        let (chunk_no, expected) = (h.chunk_no, self.next_chunk_no);
        if chunk_no < expected {
            return Err(SnapshotError::Duplicate { chunk_no, expected });
        }
        if chunk_no > expected {
            return Err(SnapshotError::Gap { chunk_no, expected });
        }
        Ok(())
    }

    /// Verifies `bytes` as the next chunk and installs its entries.
    pub fn receive<T: InstallTarget<Install = I>>(
        &mut self,
        target: &mut T,
        bytes: &Bytes,
    ) -> Result<ReceiveProgress, SnapshotError> {
        if self.closed {
            return Err(SnapshotError::Closed);
        }
        let chunk = Chunk::decode(bytes)?;
        self.check_header(&chunk.header)?;
        match self.accept(target, bytes, chunk) {
            Ok(p) => Ok(p),
            Err(e) => {
                self.abort(target);
                Err(e)
            }
        }
    }

    fn accept<T: InstallTarget<Install = I>>(
        &mut self,
        target: &mut T,
        bytes: &Bytes,
        chunk: Chunk,
    ) -> Result<ReceiveProgress, SnapshotError> {
        let h = chunk.header;
        if let Some((state, total_keys)) = chunk.state {
            if total_keys != self.meta.key_count {
                return Err(SnapshotError::Totals {
                    what: "keys",
                    expected: self.meta.key_count,
                    found: total_keys,
                });
            }
            self.total_keys = total_keys;
            self.install = Some(target.install_begin(state)?);
        }
        let id = self.install.ok_or(SnapshotError::Closed)?;
        for (k, v) in &chunk.entries {
            if self.last_key.as_ref().is_some_and(|last| last >= k) {
                return Err(SnapshotError::KeyOrder {
                    chunk_no: h.chunk_no,
                });
            }
            target.install_put(id, k, v)?;
            self.last_key = Some(k.clone());
        }
        let body_end = bytes.len() - if h.last { 4 } else { 0 };
        self.stream_crc.update(&bytes[CHUNK_HEADER_LEN..body_end]);
        self.keys += u64::from(h.key_count);
        self.bytes += bytes.len() as u64;
        self.next_chunk_no += 1;
        let Some(stored) = chunk.stream_checksum else {
            return Ok(ReceiveProgress::More {
                next_chunk_no: self.next_chunk_no,
            });
        };
        let computed = self.stream_crc.clone().finalize();
        if stored != computed {
            return Err(SnapshotError::Checksum {
                what: "stream",
                stored,
                computed,
            });
        }
        for (what, expected, found) in [
            ("keys", self.total_keys, self.keys),
            ("bytes", self.meta.total_bytes, self.bytes),
            (
                "chunks",
                u64::from(self.meta.chunk_count),
                u64::from(self.next_chunk_no),
            ),
        ] {
            if expected != found {
                return Err(SnapshotError::Totals {
                    what,
                    expected,
                    found,
                });
            }
        }
        self.install = None;
        self.closed = true;
        Ok(ReceiveProgress::Installed(target.install_finish(id)?))
    }
}

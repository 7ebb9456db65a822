//! [`Command`]: what the `data` of a normal Raft entry holds — a client's atomic batch of
//! [`Op`]s — and its binary form (version 1, in `docs/FORMAT.md`, "State command").
//!
//! Decoding never panics and never allocates from a length it has not checked against the bytes
//! actually present: entry data comes from the log (checksummed) but also from the network
//! (proposals), so [`Command::decode`] treats its input as hostile.
//!
//! # Batch semantics
//! The ops of one command apply atomically, in order, each against the state as modified by the
//! ops before it in the same command. A failed compare-and-swap does not abort the batch: it is
//! reported as [`OpResult::Cas`] with `succeeded: false` (and the value it found), and the ops
//! after it still apply. A client that wants "all or nothing" on a condition sends the CAS alone.

use bytes::{BufMut, Bytes, BytesMut};

/// The version byte this build writes and reads.
pub const COMMAND_VERSION: u8 = 1;

/// Bytes before the first op: version, reserved, op count, client id, sequence.
pub const COMMAND_HEADER_LEN: usize = 24;

/// Bytes of the checksum trailer.
pub const COMMAND_TRAILER_LEN: usize = 4;

/// The smallest encoded op (a `Delete` of an empty key: kind + key length).
const OP_LEN_MIN: usize = 5;

mod kind {
    pub const PUT: u8 = 1;
    pub const DELETE: u8 = 2;
    pub const DELETE_RANGE: u8 = 3;
    pub const CAS: u8 = 4;
}

/// `Cas` flag: an expected value follows (absent: the key must not exist).
const CAS_HAS_EXPECTED: u8 = 1;
/// `Cas` flag: a new value follows (absent: delete the key on success).
const CAS_HAS_NEW: u8 = 2;

/// One operation of a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key` (no-op if absent).
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Remove every key in `start..end` (end exclusive; empty when `start >= end`).
    DeleteRange {
        /// First key removed.
        start: Bytes,
        /// First key kept.
        end: Bytes,
    },
    /// If the current value of `key` equals `expected` (`None`: the key is absent), set it to
    /// `new` (`None`: delete it). Reports the outcome and the value found.
    Cas {
        /// The key.
        key: Bytes,
        /// The value required (`None`: required absent).
        expected: Option<Bytes>,
        /// The value written on success (`None`: delete).
        new: Option<Bytes>,
    },
}

/// A client's atomic batch of ops, as carried by a normal Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Command {
    /// The client that proposed it (0: internal).
    pub client_id: u64,
    /// The client's sequence number: the store applies a command of a client at most once,
    /// and none older than the client's last applied one (see [`super::session`]).
    pub sequence: u64,
    /// The ops, applied atomically and in order (see the module docs).
    pub ops: Vec<Op>,
}

/// The outcome of one [`Op`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// A put, delete or delete-range was applied.
    Done,
    /// A compare-and-swap.
    Cas {
        /// Whether the comparison held and `new` was written.
        succeeded: bool,
        /// The value found before the op (`None`: absent).
        previous: Option<Bytes>,
    },
}

/// Why bytes are not a valid [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Shorter than header plus trailer.
    #[error("command of {len} bytes is shorter than the {min} bytes of header and checksum")]
    TooShort {
        /// Bytes given.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The checksum trailer does not match.
    #[error("command checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The trailer's value.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// Written by an unknown format version.
    #[error("command format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version found.
        found: u8,
        /// Version understood.
        supported: u8,
    },
    /// A reserved header byte is not zero.
    #[error("command reserved header bytes are not zero")]
    Reserved,
    /// The op count cannot fit the bytes present.
    #[error("command claims {count} ops in {bytes} bytes")]
    OpCount {
        /// Claimed ops.
        count: u32,
        /// Bytes of ops present.
        bytes: usize,
    },
    /// A field runs past the end of the ops.
    #[error("command truncated: {what} at byte {offset} needs {needed} bytes")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Its byte offset in the command.
        offset: usize,
        /// Bytes it needs.
        needed: u64,
    },
    /// An unknown op kind.
    #[error("unknown op kind {kind} at byte {offset}")]
    UnknownOp {
        /// The kind byte.
        kind: u8,
        /// Its offset.
        offset: usize,
    },
    /// Unknown CAS flag bits.
    #[error("unknown CAS flags {flags:#04x} at byte {offset}")]
    CasFlags {
        /// The flags byte.
        flags: u8,
        /// Its offset.
        offset: usize,
    },
    /// Bytes left after the last op.
    #[error("{count} bytes after the last op")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// Not applied: the client's session already holds this sequence or a later one
    /// ([`super::session`]). `sequence == last`: the command was applied once and its results
    /// were too large to keep; `sequence < last`: an old command the client has moved past
    /// (it may or may not have been applied). Either way the entry was applied as a no-op.
    #[error("client {client_id}: sequence {sequence} is not after the last applied {last}")]
    Duplicate {
        /// The client.
        client_id: u64,
        /// The command's sequence.
        sequence: u64,
        /// The last sequence of the client the region applied.
        last: u64,
    },
}

/// What applying a command gave: one result per op, or why it was not applied (it did not
/// decode, or it repeats an applied one: [`CommandError::Duplicate`]).
pub type CommandOutcome = std::result::Result<Vec<OpResult>, CommandError>;

impl Op {
    fn encoded_len(&self) -> usize {
        let field = |b: &Bytes| 4 + b.len();
        1 + match self {
            Op::Put { key, value } => field(key) + field(value),
            Op::Delete { key } => field(key),
            Op::DeleteRange { start, end } => field(start) + field(end),
            Op::Cas { key, expected, new } => {
                1 + field(key) + expected.as_ref().map_or(0, field) + new.as_ref().map_or(0, field)
            }
        }
    }

    fn encode_into(&self, out: &mut BytesMut) {
        let field = |out: &mut BytesMut, b: &Bytes| {
            let len = u32::try_from(b.len()).expect("a key or value is shorter than 4 GiB");
            out.put_u32_le(len);
            out.put_slice(b);
        };
        match self {
            Op::Put { key, value } => {
                out.put_u8(kind::PUT);
                field(out, key);
                field(out, value);
            }
            Op::Delete { key } => {
                out.put_u8(kind::DELETE);
                field(out, key);
            }
            Op::DeleteRange { start, end } => {
                out.put_u8(kind::DELETE_RANGE);
                field(out, start);
                field(out, end);
            }
            Op::Cas { key, expected, new } => {
                out.put_u8(kind::CAS);
                let mut flags = 0;
                if expected.is_some() {
                    flags |= CAS_HAS_EXPECTED;
                }
                if new.is_some() {
                    flags |= CAS_HAS_NEW;
                }
                out.put_u8(flags);
                field(out, key);
                for b in [expected, new].into_iter().flatten() {
                    field(out, b);
                }
            }
        }
    }

    /// The key this op names (for a range: its start).
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
            Op::DeleteRange { start, .. } => start,
        }
    }
}

impl Command {
    /// Bytes of the encoded form.
    pub fn encoded_len(&self) -> usize {
        COMMAND_HEADER_LEN
            + self.ops.iter().map(Op::encoded_len).sum::<usize>()
            + COMMAND_TRAILER_LEN
    }

    /// The binary form (version [`COMMAND_VERSION`]).
    ///
    /// # Panics
    /// If a key or value is 4 GiB or longer, or there are 2^32 ops or more (programmer errors:
    /// the proposal path caps sizes far below).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        out.put_u8(COMMAND_VERSION);
        out.put_bytes(0, 3);
        out.put_u32_le(u32::try_from(self.ops.len()).expect("fewer than 2^32 ops"));
        out.put_u64_le(self.client_id);
        out.put_u64_le(self.sequence);
        for op in &self.ops {
            op.encode_into(&mut out);
        }
        let crc = crc32fast::hash(&out);
        out.put_u32_le(crc);
        debug_assert_eq!(out.len(), self.encoded_len());
        out.freeze()
    }

    /// Parses the binary form; keys and values share `b`'s buffer (no copies).
    pub fn decode(b: &Bytes) -> Result<Command, CommandError> {
        let min = COMMAND_HEADER_LEN + COMMAND_TRAILER_LEN;
        if b.len() < min {
            return Err(CommandError::TooShort { len: b.len(), min });
        }
        let body_end = b.len() - COMMAND_TRAILER_LEN;
        let stored = u32::from_le_bytes(trailer(b));
        let computed = crc32fast::hash(&b[..body_end]);
        if stored != computed {
            return Err(CommandError::Checksum { stored, computed });
        }
        if b[0] != COMMAND_VERSION {
            return Err(CommandError::UnsupportedVersion {
                found: b[0],
                supported: COMMAND_VERSION,
            });
        }
        if b[1..4] != [0, 0, 0] {
            return Err(CommandError::Reserved);
        }
        let mut r = FieldReader::new(b.slice(..body_end), 4);
        let count = r.u32("op count")?;
        let client_id = r.u64("client id")?;
        let sequence = r.u64("sequence")?;
        let ops_bytes = r.remaining();
        if (count as usize).saturating_mul(OP_LEN_MIN) > ops_bytes {
            return Err(CommandError::OpCount {
                count,
                bytes: ops_bytes,
            });
        }
        let mut ops = Vec::with_capacity(count as usize);
        for _ in 0..count {
            ops.push(decode_op(&mut r)?);
        }
        if r.remaining() != 0 {
            return Err(CommandError::TrailingBytes {
                count: r.remaining(),
            });
        }
        Ok(Command {
            client_id,
            sequence,
            ops,
        })
    }
}

fn trailer(b: &[u8]) -> [u8; 4] {
    let mut t = [0u8; 4];
    t.copy_from_slice(&b[b.len() - 4..]);
    t
}

fn decode_op(r: &mut FieldReader) -> Result<Op, CommandError> {
    let at = r.offset();
    let k = r.u8("op kind")?;
    Ok(match k {
        kind::PUT => Op::Put {
            key: r.bytes("put key")?,
            value: r.bytes("put value")?,
        },
        kind::DELETE => Op::Delete {
            key: r.bytes("delete key")?,
        },
        kind::DELETE_RANGE => Op::DeleteRange {
            start: r.bytes("range start")?,
            end: r.bytes("range end")?,
        },
        kind::CAS => {
            let flags_at = r.offset();
            let flags = r.u8("cas flags")?;
            if flags & !(CAS_HAS_EXPECTED | CAS_HAS_NEW) != 0 {
                return Err(CommandError::CasFlags {
                    flags,
                    offset: flags_at,
                });
            }
            let key = r.bytes("cas key")?;
            let expected = match flags & CAS_HAS_EXPECTED {
                0 => None,
                _ => Some(r.bytes("cas expected")?),
            };
            let new = match flags & CAS_HAS_NEW {
                0 => None,
                _ => Some(r.bytes("cas new")?),
            };
            Op::Cas { key, expected, new }
        }
        kind => return Err(CommandError::UnknownOp { kind, offset: at }),
    })
}

/// A field that runs past the end of its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Truncated {
    pub what: &'static str,
    pub offset: usize,
    pub needed: u64,
}

impl From<Truncated> for CommandError {
    fn from(t: Truncated) -> CommandError {
        CommandError::Truncated {
            what: t.what,
            offset: t.offset,
            needed: t.needed,
        }
    }
}

/// Reads little-endian fields from a buffer, checking every length against what is present.
/// Shared by the command and snapshot chunk decoders.
pub(crate) struct FieldReader {
    buf: Bytes,
    pos: usize,
    /// Offset of `buf[0]` in the whole structure, for error messages.
    base: usize,
}

impl FieldReader {
    /// Reads `buf` from byte `base` on (offsets in errors count from `buf[0]`).
    pub(crate) fn new(buf: Bytes, base: usize) -> FieldReader {
        let buf = buf.slice(base.min(buf.len())..);
        FieldReader { buf, pos: 0, base }
    }

    /// The offset of the next field in the enclosing structure.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, what: &'static str, n: u64) -> Result<&[u8], Truncated> {
        if n > self.remaining() as u64 {
            return Err(Truncated {
                what,
                offset: self.offset(),
                needed: n,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// The bytes left, unread.
    pub(crate) fn rest(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Skips `n` bytes (at most the bytes left).
    pub(crate) fn skip(&mut self, n: usize) {
        self.pos += n.min(self.remaining());
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Truncated> {
        Ok(self.take(what, 1)?[0])
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Truncated> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(what, 4)?);
        Ok(u32::from_le_bytes(a))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, Truncated> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(what, 8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A `u32` length and that many bytes, sharing the buffer.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<Bytes, Truncated> {
        let len = self.u32(what)?;
        if u64::from(len) > self.remaining() as u64 {
            return Err(Truncated {
                what,
                offset: self.offset(),
                needed: u64::from(len),
            });
        }
        let s = self.buf.slice(self.pos..self.pos + len as usize);
        self.pos += len as usize;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Command {
        Command {
            client_id: 7,
            sequence: 42,
            ops: vec![
                Op::Put {
                    key: Bytes::from_static(b"a"),
                    value: Bytes::from_static(b"1"),
                },
                Op::Delete {
                    key: Bytes::from_static(b"b"),
                },
                Op::DeleteRange {
                    start: Bytes::from_static(b"c"),
                    end: Bytes::from_static(b"d"),
                },
                Op::Cas {
                    key: Bytes::from_static(b"e"),
                    expected: None,
                    new: Some(Bytes::from_static(b"2")),
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let c = sample();
        let b = c.encode();
        assert_eq!(b.len(), c.encoded_len());
        assert_eq!(b[0], COMMAND_VERSION);
        assert_eq!(&b[4..8], &4u32.to_le_bytes());
        assert_eq!(&b[8..16], &7u64.to_le_bytes());
        assert_eq!(&b[16..24], &42u64.to_le_bytes());
        assert_eq!(b[24], kind::PUT);
        assert_eq!(Command::decode(&b), Ok(c));
    }

    #[test]
    fn rejects_bad_version_after_valid_checksum() {
        let mut v = sample().encode().to_vec();
        v[0] = 2;
        let n = v.len() - 4;
        let crc = crc32fast::hash(&v[..n]);
        v[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Command::decode(&Bytes::from(v)),
            Err(CommandError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn huge_op_count_is_rejected_before_allocating() {
        let mut v = Command::default().encode().to_vec();
        v[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let n = v.len() - 4;
        let crc = crc32fast::hash(&v[..n]);
        v[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Command::decode(&Bytes::from(v)),
            Err(CommandError::OpCount { .. })
        ));
    }
}

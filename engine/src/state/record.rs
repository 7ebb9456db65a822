//! The records of a state segment's payload stream and the state root (format version 2; byte
//! diagrams in `docs/FORMAT.md`, "State store").
//!
//! Every record opens with a kind byte and three zero bytes and closes with a CRC-32 over all of
//! its bytes before the CRC. Kind 0 is padding: the rest of the block is unused. Decoders never
//! panic and never trust a length they have not checked.

use bytes::Bytes;

use crate::layout::le::{get_u32, get_u64, put_u32, put_u64};

/// Kind byte of padding (the rest of the block is unused).
pub const KIND_PADDING: u8 = 0;
/// Kind byte of a value record.
pub const KIND_VALUE: u8 = 1;
/// Kind byte of a link record.
pub const KIND_LINK: u8 = 2;
/// Kind byte of a checkpoint record.
pub const KIND_CHECKPOINT: u8 = 3;

/// Bytes of a value record around its key and value.
pub const VALUE_OVERHEAD: usize = 24;
/// Bytes of a link record.
pub const LINK_LEN: usize = 20;
/// Bytes of a checkpoint record around its body.
pub const CHECKPOINT_OVERHEAD: usize = 20;
/// Bytes a reader needs to learn any record's length.
pub const HEADER_PEEK: usize = 16;

/// Why record bytes do not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordDefect {
    /// Unknown kind byte or non-zero reserved bytes.
    Kind(u8),
    /// Fewer bytes than the record claims.
    Truncated,
    /// The CRC does not match.
    Checksum,
    /// A record of another kind than expected.
    Unexpected(u8),
}

impl std::fmt::Display for RecordDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordDefect::Kind(k) => write!(f, "unknown record kind {k}"),
            RecordDefect::Truncated => write!(f, "truncated record"),
            RecordDefect::Checksum => write!(f, "record checksum mismatch"),
            RecordDefect::Unexpected(k) => write!(f, "unexpected record kind {k}"),
        }
    }
}

fn seal(out: &mut Vec<u8>, start: usize) {
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Bytes of the value record for a key and value of these lengths.
pub fn value_len(key_len: usize, value_len: usize) -> usize {
    VALUE_OVERHEAD + key_len + value_len
}

/// Appends a value record.
pub fn encode_value(out: &mut Vec<u8>, region_id: u64, key: &[u8], value: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[KIND_VALUE, 0, 0, 0]);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&region_id.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    seal(out, start);
}

/// Appends a link record: the stream continues at offset 0 of `segment`, generation `generation`.
pub fn encode_link(out: &mut Vec<u8>, segment: u32, generation: u64) {
    let start = out.len();
    out.extend_from_slice(&[KIND_LINK, 0, 0, 0]);
    out.extend_from_slice(&segment.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    seal(out, start);
}

/// Appends a checkpoint record carrying `body` for the checkpoint of root sequence `sequence`.
pub fn encode_checkpoint(out: &mut Vec<u8>, sequence: u64, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[KIND_CHECKPOINT, 0, 0, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(body);
    seal(out, start);
}

/// The kind and total length of the record whose first bytes are `head` (at least
/// [`HEADER_PEEK`] bytes, or all that is left of the segment). Padding has length 0.
pub fn peek(head: &[u8]) -> Result<(u8, u64), RecordDefect> {
    let kind = *head.first().ok_or(RecordDefect::Truncated)?;
    if kind == KIND_PADDING {
        return Ok((kind, 0));
    }
    if head.len() < HEADER_PEEK {
        return Err(RecordDefect::Truncated);
    }
    if head[1..4] != [0, 0, 0] {
        return Err(RecordDefect::Kind(kind));
    }
    let len = match kind {
        KIND_VALUE => {
            VALUE_OVERHEAD as u64 + u64::from(get_u32(head, 4)) + u64::from(get_u32(head, 8))
        }
        KIND_LINK => LINK_LEN as u64,
        KIND_CHECKPOINT => CHECKPOINT_OVERHEAD as u64 + u64::from(get_u32(head, 4)),
        k => return Err(RecordDefect::Kind(k)),
    };
    Ok((kind, len))
}

/// Checks the length and CRC of a whole record; returns its kind.
fn check(rec: &[u8]) -> Result<u8, RecordDefect> {
    let (kind, len) = peek(rec)?;
    if kind == KIND_PADDING || len != rec.len() as u64 {
        return Err(RecordDefect::Truncated);
    }
    let body = rec.len() - 4;
    if crc32fast::hash(&rec[..body]) != get_u32(rec, body) {
        return Err(RecordDefect::Checksum);
    }
    Ok(kind)
}

/// A decoded value record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueRecord {
    /// Its region.
    pub region_id: u64,
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
}

/// Decodes a whole value record (keys and values share `rec`'s buffer).
pub fn decode_value(rec: &Bytes) -> Result<ValueRecord, RecordDefect> {
    let kind = check(rec)?;
    if kind != KIND_VALUE {
        return Err(RecordDefect::Unexpected(kind));
    }
    let k = get_u32(rec, 4) as usize;
    let v = get_u32(rec, 8) as usize;
    Ok(ValueRecord {
        region_id: get_u64(rec, 12),
        key: rec.slice(20..20 + k),
        value: rec.slice(20 + k..20 + k + v),
    })
}

/// Decodes a whole link record: `(segment, generation)`.
pub fn decode_link(rec: &[u8]) -> Result<(u32, u64), RecordDefect> {
    let kind = check(rec)?;
    if kind != KIND_LINK {
        return Err(RecordDefect::Unexpected(kind));
    }
    Ok((get_u32(rec, 4), get_u64(rec, 8)))
}

/// Decodes a whole checkpoint record: `(root sequence, body)`.
pub fn decode_checkpoint(rec: &[u8]) -> Result<(u64, &[u8]), RecordDefect> {
    let kind = check(rec)?;
    if kind != KIND_CHECKPOINT {
        return Err(RecordDefect::Unexpected(kind));
    }
    Ok((get_u64(rec, 8), &rec[16..rec.len() - 4]))
}

/// The 4 magic bytes of a state root.
pub const ROOT_MAGIC: [u8; 4] = *b"BSRT";
/// The state format version this build writes. It reads this one and every older one
/// ([`STATE_FORMAT_VERSION_MIN`]..=this): version 1 differs only in having no `SESSIONS`
/// checkpoint items (its regions open with empty session tables).
pub const STATE_FORMAT_VERSION: u32 = 2;
/// The oldest state format version this build reads.
pub const STATE_FORMAT_VERSION_MIN: u32 = 1;

/// Byte offsets of the state root fields.
pub mod root_field {
    /// `u32` CRC-32 over bytes `4..STATE_ROOT_LEN`, the root's device offset and the nonce.
    pub const CHECKSUM: usize = 0;
    /// `[u8; 4]` magic `BSRT`.
    pub const MAGIC: usize = 4;
    /// `u32` state format version.
    pub const VERSION: usize = 8;
    /// `u32` which copy (0 or 1).
    pub const COPY: usize = 12;
    /// `u64` root sequence (newest valid wins).
    pub const SEQUENCE: usize = 16;
    /// `u64` next segment generation to allocate.
    pub const GENERATION_NEXT: usize = 24;
    /// `u32` segment of the checkpoint's first record.
    pub const START_SEGMENT: usize = 32;
    /// `u32` its offset in that segment's payload stream.
    pub const START_OFFSET: usize = 36;
    /// `u64` generation of that segment.
    pub const START_GENERATION: usize = 40;
    /// `u64` bytes of checkpoint record bodies.
    pub const BODY_BYTES: usize = 48;
    /// `u32` checkpoint records.
    pub const RECORD_COUNT: usize = 56;
    /// `u32` CRC-32 of the bodies concatenated.
    pub const BODY_CRC: usize = 60;
    /// Bytes used; the rest of the root is zero.
    pub const END: usize = 64;
}

/// The state root: where the newest durable checkpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRoot {
    /// Root sequence: each checkpoint's root has the next one.
    pub sequence: u64,
    /// Next segment generation to allocate.
    pub generation_next: u64,
    /// Segment of the checkpoint's first record.
    pub start_segment: u32,
    /// Offset of that record in the segment's payload stream.
    pub start_offset: u32,
    /// Generation of `start_segment`.
    pub start_generation: u64,
    /// Bytes of checkpoint bodies.
    pub body_bytes: u64,
    /// Checkpoint records.
    pub record_count: u32,
    /// CRC-32 over the bodies, concatenated in stream order.
    pub body_crc: u32,
}

fn root_checksum(image: &[u8], offset: u64, nonce: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&image[root_field::MAGIC..]);
    h.update(&offset.to_le_bytes());
    h.update(&nonce.to_le_bytes());
    h.finalize()
}

impl StateRoot {
    /// Encodes the root as copy `copy` at device offset `offset` into `out` (zeroed first).
    pub fn encode(&self, copy: u32, offset: u64, nonce: u64, out: &mut [u8]) {
        use root_field as f;
        out.fill(0);
        out[f::MAGIC..f::MAGIC + 4].copy_from_slice(&ROOT_MAGIC);
        put_u32(out, f::VERSION, STATE_FORMAT_VERSION);
        put_u32(out, f::COPY, copy);
        put_u64(out, f::SEQUENCE, self.sequence);
        put_u64(out, f::GENERATION_NEXT, self.generation_next);
        put_u32(out, f::START_SEGMENT, self.start_segment);
        put_u32(out, f::START_OFFSET, self.start_offset);
        put_u64(out, f::START_GENERATION, self.start_generation);
        put_u64(out, f::BODY_BYTES, self.body_bytes);
        put_u32(out, f::RECORD_COUNT, self.record_count);
        put_u32(out, f::BODY_CRC, self.body_crc);
        let sum = root_checksum(out, offset, nonce);
        put_u32(out, f::CHECKSUM, sum);
    }

    /// Decodes copy `copy` read from `offset`; `None` unless magic, checksum, version and copy
    /// number all hold (a torn or never-written root is simply not valid).
    pub fn decode(copy: u32, offset: u64, nonce: u64, image: &[u8]) -> Option<StateRoot> {
        use root_field as f;
        if image.len() < f::END || image[f::MAGIC..f::MAGIC + 4] != ROOT_MAGIC {
            return None;
        }
        if get_u32(image, f::CHECKSUM) != root_checksum(image, offset, nonce)
            || !(STATE_FORMAT_VERSION_MIN..=STATE_FORMAT_VERSION)
                .contains(&get_u32(image, f::VERSION))
            || get_u32(image, f::COPY) != copy
        {
            return None;
        }
        Some(StateRoot {
            sequence: get_u64(image, f::SEQUENCE),
            generation_next: get_u64(image, f::GENERATION_NEXT),
            start_segment: get_u32(image, f::START_SEGMENT),
            start_offset: get_u32(image, f::START_OFFSET),
            start_generation: get_u64(image, f::START_GENERATION),
            body_bytes: get_u64(image, f::BODY_BYTES),
            record_count: get_u32(image, f::RECORD_COUNT),
            body_crc: get_u32(image, f::BODY_CRC),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_flips() {
        let mut out = Vec::new();
        encode_value(&mut out, 9, b"key", b"value");
        let at = out.len();
        encode_link(&mut out, 7, 42);
        let ck = out.len();
        encode_checkpoint(&mut out, 3, b"body");
        let v = Bytes::copy_from_slice(&out[..at]);
        assert_eq!(peek(&v), Ok((KIND_VALUE, value_len(3, 5) as u64)));
        let d = decode_value(&v).expect("value");
        assert_eq!(
            (d.region_id, &d.key[..], &d.value[..]),
            (9, &b"key"[..], &b"value"[..])
        );
        assert_eq!(decode_link(&out[at..ck]), Ok((7, 42)));
        assert_eq!(decode_checkpoint(&out[ck..]), Ok((3, &b"body"[..])));
        for i in 0..v.len() {
            let mut bad = v.to_vec();
            bad[i] ^= 0x10;
            assert!(decode_value(&Bytes::from(bad)).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn root_checks_offset_copy_and_nonce() {
        let r = StateRoot {
            sequence: 5,
            generation_next: 10,
            start_segment: 3,
            start_offset: 4096,
            start_generation: 8,
            body_bytes: 100,
            record_count: 2,
            body_crc: 77,
        };
        let mut img = vec![0u8; 4096];
        r.encode(1, 65536, 9, &mut img);
        assert_eq!(StateRoot::decode(1, 65536, 9, &img), Some(r));
        assert_eq!(StateRoot::decode(0, 65536, 9, &img), None);
        assert_eq!(StateRoot::decode(1, 0, 9, &img), None);
        assert_eq!(StateRoot::decode(1, 65536, 8, &img), None);
    }
}

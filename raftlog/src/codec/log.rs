//! Bodies of the log-side types: entries, hard state, configurations and snapshots.

use super::reader::Reader;
use super::sealed::Body;
use super::varint::{bytes_len, put_bytes, put_u64s, put_uvarint, u64s_len, uvarint_len, Head};
use super::DecodeError;
use crate::types::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};

/// Smallest entry body: type tag, term, index, and two empty byte strings.
pub const ENTRY_BODY_LEN_MIN: usize = 5;

fn entry_type_tag(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type_from_tag(tag: u8) -> Option<EntryType> {
    match tag {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

impl Body for Entry {
    #[inline]
    fn body_len(&self) -> usize {
        1 + uvarint_len(self.term)
            + uvarint_len(self.index)
            + bytes_len(&self.data)
            + bytes_len(&self.context)
    }

    #[inline]
    fn encode_body(&self, out: &mut Vec<u8>) {
        // Type, term, index and data length: at most 1 + 3 × 10 bytes.
        let mut head = Head::<31>::new();
        head.u8(entry_type_tag(self.entry_type));
        head.uvarint(self.term);
        head.uvarint(self.index);
        head.uvarint(self.data.len() as u64);
        head.flush_into(out);
        out.extend_from_slice(&self.data);
        put_bytes(out, &self.context);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Entry {
            entry_type: r.tag("entry type", entry_type_from_tag)?,
            term: r.uvarint()?,
            index: r.uvarint()?,
            data: r.bytes("entry data")?,
            context: r.bytes("entry context")?,
        })
    }
}

impl Body for HardState {
    fn body_len(&self) -> usize {
        uvarint_len(self.term) + uvarint_len(self.vote) + uvarint_len(self.commit)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.term);
        put_uvarint(out, self.vote);
        put_uvarint(out, self.commit);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(HardState {
            term: r.uvarint()?,
            vote: r.uvarint()?,
            commit: r.uvarint()?,
        })
    }
}

impl Body for ConfState {
    fn body_len(&self) -> usize {
        u64s_len(&self.voters)
            + u64s_len(&self.learners)
            + u64s_len(&self.voters_outgoing)
            + u64s_len(&self.learners_next)
            + 1
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_u64s(out, &self.voters);
        put_u64s(out, &self.learners);
        put_u64s(out, &self.voters_outgoing);
        put_u64s(out, &self.learners_next);
        out.push(u8::from(self.auto_leave));
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConfState {
            voters: r.u64s("voters")?,
            learners: r.u64s("learners")?,
            voters_outgoing: r.u64s("voters_outgoing")?,
            learners_next: r.u64s("learners_next")?,
            auto_leave: r.bool("auto_leave")?,
        })
    }
}

impl Body for SnapshotMetadata {
    fn body_len(&self) -> usize {
        uvarint_len(self.index) + uvarint_len(self.term) + self.conf_state.body_len()
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.index);
        put_uvarint(out, self.term);
        self.conf_state.encode_body(out);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SnapshotMetadata {
            index: r.uvarint()?,
            term: r.uvarint()?,
            conf_state: ConfState::decode_body(r)?,
        })
    }
}

impl Body for Snapshot {
    fn body_len(&self) -> usize {
        self.metadata.body_len() + bytes_len(&self.data)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        self.metadata.encode_body(out);
        put_bytes(out, &self.data);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Snapshot {
            metadata: SnapshotMetadata::decode_body(r)?,
            data: r.bytes("snapshot data")?,
        })
    }
}

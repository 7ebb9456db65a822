//! Bodies of the membership-change types.

use super::reader::Reader;
use super::sealed::Body;
use super::varint::{bytes_len, put_bytes, put_uvarint, uvarint_len};
use super::DecodeError;
use crate::types::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
};

/// Smallest `ConfChangeSingle` body: type tag and node id.
const SINGLE_BODY_LEN_MIN: usize = 2;

fn change_type_tag(t: ConfChangeType) -> u8 {
    match t {
        ConfChangeType::AddNode => 0,
        ConfChangeType::RemoveNode => 1,
        ConfChangeType::AddLearnerNode => 2,
    }
}

fn change_type_from_tag(tag: u8) -> Option<ConfChangeType> {
    match tag {
        0 => Some(ConfChangeType::AddNode),
        1 => Some(ConfChangeType::RemoveNode),
        2 => Some(ConfChangeType::AddLearnerNode),
        _ => None,
    }
}

fn transition_tag(t: ConfChangeTransition) -> u8 {
    match t {
        ConfChangeTransition::Auto => 0,
        ConfChangeTransition::Implicit => 1,
        ConfChangeTransition::Explicit => 2,
    }
}

fn transition_from_tag(tag: u8) -> Option<ConfChangeTransition> {
    match tag {
        0 => Some(ConfChangeTransition::Auto),
        1 => Some(ConfChangeTransition::Implicit),
        2 => Some(ConfChangeTransition::Explicit),
        _ => None,
    }
}

impl Body for ConfChangeSingle {
    fn body_len(&self) -> usize {
        1 + uvarint_len(self.node_id)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(change_type_tag(self.change_type));
        put_uvarint(out, self.node_id);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConfChangeSingle {
            change_type: r.tag("conf change type", change_type_from_tag)?,
            node_id: r.uvarint()?,
        })
    }
}

impl Body for ConfChange {
    fn body_len(&self) -> usize {
        1 + uvarint_len(self.node_id) + uvarint_len(self.id) + bytes_len(&self.context)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(change_type_tag(self.change_type));
        put_uvarint(out, self.node_id);
        put_uvarint(out, self.id);
        put_bytes(out, &self.context);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConfChange {
            change_type: r.tag("conf change type", change_type_from_tag)?,
            node_id: r.uvarint()?,
            id: r.uvarint()?,
            context: r.bytes("conf change context")?,
        })
    }
}

impl Body for ConfChangeV2 {
    fn body_len(&self) -> usize {
        1 + uvarint_len(self.changes.len() as u64)
            + self.changes.iter().map(Body::body_len).sum::<usize>()
            + bytes_len(&self.context)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(transition_tag(self.transition));
        put_uvarint(out, self.changes.len() as u64);
        for change in &self.changes {
            change.encode_body(out);
        }
        put_bytes(out, &self.context);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let transition = r.tag("conf change transition", transition_from_tag)?;
        let count = r.len_prefix("conf changes", SINGLE_BODY_LEN_MIN)?;
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            changes.push(ConfChangeSingle::decode_body(r)?);
        }
        Ok(ConfChangeV2 {
            transition,
            changes,
            context: r.bytes("conf change context")?,
        })
    }
}

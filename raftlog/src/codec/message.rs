//! Body of [`Message`]: the wire form of every Raft message.

use super::log::ENTRY_BODY_LEN_MIN;
use super::reader::Reader;
use super::sealed::Body;
use super::varint::{bytes_len, put_bytes, put_uvarint, uvarint_len, zigzag, Head};
use super::DecodeError;
use crate::types::{Entry, Message, MessageType, Snapshot};

/// Flag bit: `reject` is true.
const FLAG_REJECT: u8 = 0b01;
/// Flag bit: a snapshot body follows the entries.
const FLAG_SNAPSHOT: u8 = 0b10;

/// Wire tags of the message types (the numbering of etcd raft's `MessageType`).
const MESSAGE_TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

fn message_type_tag(t: MessageType) -> u8 {
    match t {
        MessageType::MsgHup => 0,
        MessageType::MsgBeat => 1,
        MessageType::MsgPropose => 2,
        MessageType::MsgAppend => 3,
        MessageType::MsgAppendResponse => 4,
        MessageType::MsgRequestVote => 5,
        MessageType::MsgRequestVoteResponse => 6,
        MessageType::MsgSnapshot => 7,
        MessageType::MsgHeartbeat => 8,
        MessageType::MsgHeartbeatResponse => 9,
        MessageType::MsgUnreachable => 10,
        MessageType::MsgSnapStatus => 11,
        MessageType::MsgCheckQuorum => 12,
        MessageType::MsgTransferLeader => 13,
        MessageType::MsgTimeoutNow => 14,
        MessageType::MsgReadIndex => 15,
        MessageType::MsgReadIndexResp => 16,
        MessageType::MsgRequestPreVote => 17,
        MessageType::MsgRequestPreVoteResponse => 18,
    }
}

fn message_type_from_tag(tag: u8) -> Option<MessageType> {
    MESSAGE_TYPES.get(usize::from(tag)).copied()
}

fn message_flags(m: &Message) -> u8 {
    let mut flags = 0;
    if m.reject {
        flags |= FLAG_REJECT;
    }
    if m.snapshot.is_some() {
        flags |= FLAG_SNAPSHOT;
    }
    flags
}

/// The varint fields, in wire order (fields 3–12).
#[inline]
fn message_scalars(m: &Message) -> [u64; 10] {
    [
        m.to,
        m.from,
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.commit_term,
        m.request_snapshot,
        m.reject_hint,
        zigzag(m.priority),
    ]
}

impl Body for Message {
    fn body_len(&self) -> usize {
        2 + message_scalars(self)
            .iter()
            .map(|&v| uvarint_len(v))
            .sum::<usize>()
            + bytes_len(&self.context)
            + uvarint_len(self.entries.len() as u64)
            + self.entries.iter().map(Body::body_len).sum::<usize>()
            + self.snapshot.as_ref().map_or(0, Body::body_len)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        // Type, flags and ten varints: at most 2 + 10 × 10 bytes.
        let mut head = Head::<102>::new();
        head.u8(message_type_tag(self.msg_type));
        head.u8(message_flags(self));
        for v in message_scalars(self) {
            head.uvarint(v);
        }
        head.flush_into(out);
        put_bytes(out, &self.context);
        put_uvarint(out, self.entries.len() as u64);
        for entry in &self.entries {
            entry.encode_body(out);
        }
        if let Some(snapshot) = &self.snapshot {
            snapshot.encode_body(out);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let msg_type = r.tag("message type", message_type_from_tag)?;
        let flags = r.tag("message flags", |f| {
            (f & !(FLAG_REJECT | FLAG_SNAPSHOT) == 0).then_some(f)
        })?;
        let mut m = Message {
            msg_type,
            reject: flags & FLAG_REJECT != 0,
            to: r.uvarint()?,
            from: r.uvarint()?,
            term: r.uvarint()?,
            log_term: r.uvarint()?,
            index: r.uvarint()?,
            commit: r.uvarint()?,
            commit_term: r.uvarint()?,
            request_snapshot: r.uvarint()?,
            reject_hint: r.uvarint()?,
            priority: r.ivarint()?,
            context: r.bytes("message context")?,
            ..Message::default()
        };
        let count = r.len_prefix("message entries", ENTRY_BODY_LEN_MIN)?;
        m.entries.reserve_exact(count);
        for _ in 0..count {
            m.entries.push(Entry::decode_body(r)?);
        }
        if flags & FLAG_SNAPSHOT != 0 {
            m.snapshot = Some(Snapshot::decode_body(r)?);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_table_and_match_agree_for_every_type() {
        for (tag, t) in MESSAGE_TYPES.iter().enumerate() {
            assert_eq!(usize::from(message_type_tag(*t)), tag);
            assert_eq!(message_type_from_tag(tag as u8), Some(*t));
        }
        assert_eq!(message_type_from_tag(MESSAGE_TYPES.len() as u8), None);
    }
}

//! The envelope of a Raft message between stores, and the envelope of a region's log entries.
//! Both byte layouts are drawn in `docs/FORMAT.md` ("Raft message envelope", "Entry envelope").
//!
//! A message envelope is not checksummed by itself: it only travels inside a transport frame,
//! which is. An entry envelope is stored in log blocks (checksummed); the command or admin
//! payload inside carries its own crc32 as well.

use bytes::{Bytes, BytesMut};
use raftlog::Message;

use super::region::{checked_body, Epoch, Peer, PeerRole};
use super::wire::{put_bytes, put_u32, put_u64, Cursor};
use super::WireError;

/// Version byte of the message envelope.
pub const RAFT_MESSAGE_VERSION: u8 = 1;

/// What a [`RaftMessage`] carries besides plain Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MessageKind {
    /// A Raft message for the region's peer.
    #[default]
    Raft,
    /// The leader asks its followers to hibernate (stop ticking) at `msg.term` / `msg.commit`.
    HibernateRequest,
    /// A follower agrees to hibernate.
    HibernateAck,
    /// Store-level liveness ping (`region_id` 0): hibernating followers wake when their
    /// leader's store falls silent.
    StoreHeartbeat,
    /// A member tells a peer it was removed from the region (at the envelope's conf
    /// version): a removed peer may never see its removal committed. The leader sends it when
    /// the removal applies; any member sends it when a peer of an older configuration that its
    /// own no longer has talks to it.
    PeerRemoved,
}

/// A Raft message addressed to one region peer on another store.
#[derive(Clone, Debug, PartialEq)]
pub struct RaftMessage {
    /// What the message is.
    pub kind: MessageKind,
    /// The region.
    pub region_id: u64,
    /// The sending peer.
    pub from: Peer,
    /// The receiving peer.
    pub to: Peer,
    /// The sender's epoch of the region.
    pub epoch: Epoch,
    /// The Raft message itself.
    pub msg: Message,
}

fn put_peer(out: &mut BytesMut, p: &Peer) {
    put_u64(out, p.peer_id);
    put_u64(out, p.store_id);
    out.extend_from_slice(&[match p.role {
        PeerRole::Voter => 0,
        PeerRole::Learner => 1,
    }]);
}

fn read_peer(c: &mut Cursor<'_>) -> Result<Peer, WireError> {
    let peer_id = c.u64()?;
    let store_id = c.u64()?;
    let role = match c.u8()? {
        0 => PeerRole::Voter,
        1 => PeerRole::Learner,
        tag => {
            return Err(WireError::UnknownTag {
                what: "peer role",
                tag,
            })
        }
    };
    Ok(Peer {
        peer_id,
        store_id,
        role,
    })
}

impl RaftMessage {
    /// Appends the encoded envelope to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        let kind = match self.kind {
            MessageKind::Raft => 0,
            MessageKind::HibernateRequest => 1,
            MessageKind::HibernateAck => 2,
            MessageKind::StoreHeartbeat => 3,
            MessageKind::PeerRemoved => 4,
        };
        out.extend_from_slice(&[RAFT_MESSAGE_VERSION, kind]);
        put_u64(out, self.region_id);
        put_peer(out, &self.from);
        put_peer(out, &self.to);
        put_u64(out, self.epoch.conf_version);
        put_u64(out, self.epoch.version);
        let mut body = Vec::with_capacity(self.msg.encoded_len());
        self.msg.encode_into(&mut body);
        put_bytes(out, &body);
    }

    /// The encoded envelope.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Decodes one envelope; entry payloads are zero-copy slices of `b`. Never panics.
    pub fn decode(b: &Bytes) -> Result<RaftMessage, WireError> {
        let mut c = Cursor::new(b);
        let version = c.u8()?;
        if version != RAFT_MESSAGE_VERSION {
            return Err(WireError::UnknownVersion { version });
        }
        let kind = match c.u8()? {
            0 => MessageKind::Raft,
            1 => MessageKind::HibernateRequest,
            2 => MessageKind::HibernateAck,
            3 => MessageKind::StoreHeartbeat,
            4 => MessageKind::PeerRemoved,
            tag => {
                return Err(WireError::UnknownTag {
                    what: "message kind",
                    tag,
                })
            }
        };
        let region_id = c.u64()?;
        let from = read_peer(&mut c)?;
        let to = read_peer(&mut c)?;
        let epoch = Epoch {
            conf_version: c.u64()?,
            version: c.u64()?,
        };
        let body = c.bytes()?;
        c.finish()?;
        let msg = Message::decode_bytes(&body).map_err(WireError::Raft)?;
        Ok(RaftMessage {
            kind,
            region_id,
            from,
            to,
            epoch,
            msg,
        })
    }
}

/// Version byte of the entry envelope.
pub const ENTRY_ENVELOPE_VERSION: u8 = 1;

/// What a normal log entry of a region carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// A client command (`state::Command` encoding), proposed at epoch version `epoch_version`.
    /// It is applied only if the region's version is still `epoch_version` when the entry is
    /// applied; otherwise a split moved keys away in between and the entry is a no-op.
    Command {
        /// The region's epoch version when the command was proposed.
        epoch_version: u64,
        /// The encoded command.
        command: Bytes,
    },
    /// Split the region at `split_key`: keys from it on move to the new region.
    Split(SplitRequest),
}

/// A replicated split: the new right-hand region's id and its peers' ids (one per store of the
/// parent's peers, same roles), chosen by the proposing leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitRequest {
    /// The region's epoch version when the split was proposed (stale splits are no-ops).
    pub epoch_version: u64,
    /// First key of the new region.
    pub split_key: Bytes,
    /// The new region's id.
    pub new_region_id: u64,
    /// `(parent peer id, new peer id)` for every parent peer.
    pub new_peer_ids: Vec<(u64, u64)>,
}

const KIND_COMMAND: u8 = 1;
const KIND_SPLIT: u8 = 2;

impl EntryPayload {
    /// The encoded envelope.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[ENTRY_ENVELOPE_VERSION]);
        match self {
            EntryPayload::Command {
                epoch_version,
                command,
            } => {
                out.extend_from_slice(&[KIND_COMMAND]);
                put_u64(&mut out, *epoch_version);
                out.extend_from_slice(command);
            }
            EntryPayload::Split(s) => {
                out.extend_from_slice(&[KIND_SPLIT]);
                put_u64(&mut out, s.epoch_version);
                put_bytes(&mut out, &s.split_key);
                put_u64(&mut out, s.new_region_id);
                put_u32(&mut out, s.new_peer_ids.len() as u32);
                for (old, new) in &s.new_peer_ids {
                    put_u64(&mut out, *old);
                    put_u64(&mut out, *new);
                }
                let crc = crc32fast::hash(&out[2 + 8..]);
                put_u32(&mut out, crc);
            }
        }
        out.freeze()
    }

    /// Decodes an envelope; the command bytes are a zero-copy slice. Never panics.
    pub fn decode(b: &Bytes) -> Result<EntryPayload, WireError> {
        let mut c = Cursor::new(b);
        let version = c.u8()?;
        if version != ENTRY_ENVELOPE_VERSION {
            return Err(WireError::UnknownVersion { version });
        }
        let kind = c.u8()?;
        let epoch_version = c.u64()?;
        match kind {
            KIND_COMMAND => Ok(EntryPayload::Command {
                epoch_version,
                command: c.rest(),
            }),
            KIND_SPLIT => {
                let body = checked_body(&c.rest())?;
                let mut c = Cursor::new(&body);
                let split_key = c.bytes()?;
                let new_region_id = c.u64()?;
                let count = c.u32()? as usize;
                if count > c.remaining() / 16 {
                    return Err(WireError::Count { count });
                }
                let mut new_peer_ids = Vec::with_capacity(count);
                for _ in 0..count {
                    new_peer_ids.push((c.u64()?, c.u64()?));
                }
                c.finish()?;
                Ok(EntryPayload::Split(SplitRequest {
                    epoch_version,
                    split_key,
                    new_region_id,
                    new_peer_ids,
                }))
            }
            tag => Err(WireError::UnknownTag {
                what: "entry kind",
                tag,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use raftlog::{Entry, MessageType};

    #[test]
    fn message_round_trip() {
        let msg = Message {
            msg_type: MessageType::MsgAppend,
            to: 2,
            from: 1,
            term: 4,
            entries: vec![Entry {
                term: 4,
                index: 9,
                data: Bytes::from_static(b"hello"),
                ..Default::default()
            }],
            ..Default::default()
        };
        let m = RaftMessage {
            kind: MessageKind::HibernateAck,
            region_id: 3,
            from: Peer {
                peer_id: 1,
                store_id: 10,
                role: PeerRole::Voter,
            },
            to: Peer {
                peer_id: 2,
                store_id: 20,
                role: PeerRole::Learner,
            },
            epoch: Epoch {
                conf_version: 1,
                version: 5,
            },
            msg,
        };
        assert_eq!(RaftMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn split_round_trip_and_checksum() {
        let p = EntryPayload::Split(SplitRequest {
            epoch_version: 2,
            split_key: Bytes::from_static(b"k"),
            new_region_id: 99,
            new_peer_ids: vec![(1, 11), (2, 12)],
        });
        let enc = p.encode();
        assert_eq!(EntryPayload::decode(&enc).unwrap(), p);
        for i in 10 * 8..enc.len() * 8 {
            let mut v = enc.to_vec();
            v[i / 8] ^= 1 << (i % 8);
            assert!(EntryPayload::decode(&Bytes::from(v)).is_err(), "bit {i}");
        }
        let c = EntryPayload::Command {
            epoch_version: 7,
            command: Bytes::from_static(b"cmd"),
        };
        assert_eq!(EntryPayload::decode(&c.encode()).unwrap(), c);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let b = Bytes::from(data);
            let _ = RaftMessage::decode(&b);
            let _ = EntryPayload::decode(&b);
        }
    }
}

/// Version byte of a conf change's peer list (`ConfChangeV2::context`).
pub const PEER_LIST_VERSION: u8 = 1;

/// Encodes the peers a conf change adds (so every replica learns their stores), with a crc32.
pub fn encode_peer_list(peers: &[Peer]) -> Bytes {
    let mut out = BytesMut::with_capacity(9 + 17 * peers.len());
    out.extend_from_slice(&[PEER_LIST_VERSION]);
    put_u32(&mut out, peers.len() as u32);
    for p in peers {
        put_peer(&mut out, p);
    }
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    out.freeze()
}

/// Decodes [`encode_peer_list`]'s output; never panics.
pub fn decode_peer_list(b: &Bytes) -> Result<Vec<Peer>, WireError> {
    let body = checked_body(b)?;
    let mut c = Cursor::new(&body);
    let version = c.u8()?;
    if version != PEER_LIST_VERSION {
        return Err(WireError::UnknownVersion { version });
    }
    let count = c.u32()? as usize;
    if count > c.remaining() / 17 {
        return Err(WireError::Count { count });
    }
    let mut peers = Vec::with_capacity(count);
    for _ in 0..count {
        peers.push(read_peer(&mut c)?);
    }
    c.finish()?;
    Ok(peers)
}

#[cfg(test)]
mod peer_list_tests {
    use super::*;

    #[test]
    fn peer_list_round_trip() {
        let peers = vec![Peer {
            peer_id: 5,
            store_id: 6,
            role: PeerRole::Learner,
        }];
        assert_eq!(decode_peer_list(&encode_peer_list(&peers)).unwrap(), peers);
        let mut v = encode_peer_list(&peers).to_vec();
        v[3] ^= 1;
        assert!(decode_peer_list(&Bytes::from(v)).is_err());
    }
}

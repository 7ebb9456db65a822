//! Proves the codec roundtrips every type exactly, and that no byte string can make a decoder
//! panic or over-allocate: proptest generates arbitrary values (roundtrip, both decode paths),
//! arbitrary byte strings (10k per decoder) and mutated valid encodings (flips, overwrites,
//! truncations, insertions). Any string that does decode must re-encode to the same bytes
//! (the encoding is canonical), and each `DecodeError` variant is provoked by a hand-made input.

use bytes::Bytes;
use proptest::prelude::*;
use raftlog::codec::Codec;
use raftlog::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    DecodeError, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};

// ---------- strategies ----------

/// Mostly small numbers (one- and two-byte varints), sometimes anything.
fn num() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..300u64, 1 => any::<u64>()]
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![3 => prop::collection::vec(any::<u8>(), 0..8), 1 => prop::collection::vec(any::<u8>(), 0..300)]
        .prop_map(Bytes::from)
}

fn ids() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(num(), 0..5)
}

fn entry_type() -> impl Strategy<Value = EntryType> {
    prop::sample::select(vec![
        EntryType::EntryNormal,
        EntryType::EntryConfChange,
        EntryType::EntryConfChangeV2,
    ])
}

fn entry() -> impl Strategy<Value = Entry> {
    (entry_type(), num(), num(), payload(), payload()).prop_map(
        |(entry_type, term, index, data, context)| Entry {
            entry_type,
            term,
            index,
            data,
            context,
        },
    )
}

fn hard_state() -> impl Strategy<Value = HardState> {
    (num(), num(), num()).prop_map(|(term, vote, commit)| HardState { term, vote, commit })
}

fn conf_state() -> impl Strategy<Value = ConfState> {
    (ids(), ids(), ids(), ids(), any::<bool>()).prop_map(
        |(voters, learners, voters_outgoing, learners_next, auto_leave)| ConfState {
            voters,
            learners,
            voters_outgoing,
            learners_next,
            auto_leave,
        },
    )
}

fn snapshot_metadata() -> impl Strategy<Value = SnapshotMetadata> {
    (conf_state(), num(), num()).prop_map(|(conf_state, index, term)| SnapshotMetadata {
        conf_state,
        index,
        term,
    })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (payload(), snapshot_metadata()).prop_map(|(data, metadata)| Snapshot { data, metadata })
}

fn message_type() -> impl Strategy<Value = MessageType> {
    use MessageType::*;
    prop::sample::select(vec![
        MsgHup,
        MsgBeat,
        MsgPropose,
        MsgAppend,
        MsgAppendResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgSnapshot,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgUnreachable,
        MsgSnapStatus,
        MsgCheckQuorum,
        MsgTransferLeader,
        MsgTimeoutNow,
        MsgReadIndex,
        MsgReadIndexResp,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
    ])
}

fn message() -> impl Strategy<Value = Message> {
    let header = (
        message_type(),
        num(),
        num(),
        num(),
        num(),
        num(),
        num(),
        num(),
    );
    let tail = (
        prop::collection::vec(entry(), 0..4),
        prop::option::of(snapshot()),
        num(),
        any::<bool>(),
        num(),
        payload(),
        prop_oneof![-3..3i64, any::<i64>()],
    );
    (header, tail).prop_map(
        |(
            (msg_type, to, from, term, log_term, index, commit, commit_term),
            (entries, snapshot, request_snapshot, reject, reject_hint, context, priority),
        )| Message {
            msg_type,
            to,
            from,
            term,
            log_term,
            index,
            entries,
            commit,
            commit_term,
            snapshot,
            request_snapshot,
            reject,
            reject_hint,
            context,
            priority,
        },
    )
}

fn change_type() -> impl Strategy<Value = ConfChangeType> {
    prop::sample::select(vec![
        ConfChangeType::AddNode,
        ConfChangeType::RemoveNode,
        ConfChangeType::AddLearnerNode,
    ])
}

fn conf_change() -> impl Strategy<Value = ConfChange> {
    (change_type(), num(), payload(), num()).prop_map(|(change_type, node_id, context, id)| {
        ConfChange {
            change_type,
            node_id,
            context,
            id,
        }
    })
}

fn conf_change_single() -> impl Strategy<Value = ConfChangeSingle> {
    (change_type(), num()).prop_map(|(change_type, node_id)| ConfChangeSingle {
        change_type,
        node_id,
    })
}

fn conf_change_v2() -> impl Strategy<Value = ConfChangeV2> {
    let transition = prop::sample::select(vec![
        ConfChangeTransition::Auto,
        ConfChangeTransition::Implicit,
        ConfChangeTransition::Explicit,
    ]);
    (
        transition,
        prop::collection::vec(conf_change_single(), 0..5),
        payload(),
    )
        .prop_map(|(transition, changes, context)| ConfChangeV2 {
            transition,
            changes,
            context,
        })
}

// ---------- checks ----------

/// Roundtrip through both decode paths; `encoded_len` exact; `encode_into` appends.
fn check_roundtrip<T: Codec + PartialEq + std::fmt::Debug>(value: &T) -> Result<(), TestCaseError> {
    let encoded = value.encode_to_vec();
    prop_assert_eq!(encoded.len(), value.encoded_len());
    let mut appended = vec![0xEE, 0xFF];
    value.encode_into(&mut appended);
    prop_assert_eq!(&appended[..2], &[0xEE, 0xFF]);
    prop_assert_eq!(&appended[2..], &encoded[..]);
    prop_assert_eq!(&T::decode(&encoded)?, value);
    prop_assert_eq!(&T::decode_bytes(&Bytes::from(encoded))?, value);
    Ok(())
}

/// Decoding `input` must not panic; if it succeeds, re-encoding gives back `input` exactly.
fn check_canonical<T: Codec + PartialEq + std::fmt::Debug>(
    input: &[u8],
) -> Result<bool, TestCaseError> {
    let copied = T::decode(input);
    let sliced = T::decode_bytes(&Bytes::copy_from_slice(input));
    prop_assert_eq!(&copied, &sliced, "the two decode paths disagree");
    match copied {
        Ok(value) => {
            prop_assert_eq!(
                value.encode_to_vec(),
                input,
                "accepted a non-canonical encoding"
            );
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// Every decoder on the same input.
fn check_all_decoders(input: &[u8]) -> Result<(), TestCaseError> {
    check_canonical::<Entry>(input)?;
    check_canonical::<HardState>(input)?;
    check_canonical::<ConfState>(input)?;
    check_canonical::<SnapshotMetadata>(input)?;
    check_canonical::<Snapshot>(input)?;
    check_canonical::<Message>(input)?;
    check_canonical::<ConfChange>(input)?;
    check_canonical::<ConfChangeSingle>(input)?;
    check_canonical::<ConfChangeV2>(input)?;
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Overwrite { at: usize, byte: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len();
    match *m {
        Mutation::Flip { at, bit } => bytes[at % len] ^= 1 << bit,
        Mutation::Overwrite { at, byte } => bytes[at % len] = byte,
        Mutation::Truncate { at } => bytes.truncate(at % len),
        Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
    }
    bytes
}

/// Mutates a valid encoding of `value`: no panic, canonical if accepted, and a strict prefix
/// never decodes (the format is prefix-free).
fn check_mutations<T: Codec + PartialEq + std::fmt::Debug>(
    value: &T,
    ms: &[Mutation],
) -> Result<(), TestCaseError> {
    let valid = value.encode_to_vec();
    for m in ms {
        let mutated = apply(valid.clone(), m);
        let accepted = check_canonical::<T>(&mutated)?;
        if let Mutation::Truncate { .. } = m {
            prop_assert!(!accepted, "a strict prefix of a valid encoding decoded");
        }
    }
    Ok(())
}

// ---------- properties ----------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn entry_roundtrips(v in entry()) { check_roundtrip(&v)?; }
    #[test]
    fn hard_state_roundtrips(v in hard_state()) { check_roundtrip(&v)?; }
    #[test]
    fn conf_state_roundtrips(v in conf_state()) { check_roundtrip(&v)?; }
    #[test]
    fn snapshot_metadata_roundtrips(v in snapshot_metadata()) { check_roundtrip(&v)?; }
    #[test]
    fn snapshot_roundtrips(v in snapshot()) { check_roundtrip(&v)?; }
    #[test]
    fn message_roundtrips(v in message()) { check_roundtrip(&v)?; }
    #[test]
    fn conf_change_roundtrips(v in conf_change()) { check_roundtrip(&v)?; }
    #[test]
    fn conf_change_single_roundtrips(v in conf_change_single()) { check_roundtrip(&v)?; }
    #[test]
    fn conf_change_v2_roundtrips(v in conf_change_v2()) { check_roundtrip(&v)?; }

    #[test]
    fn mutated_messages_never_panic(v in message(), ms in prop::collection::vec(mutation(), 1..16)) {
        check_mutations(&v, &ms)?;
    }
    #[test]
    fn mutated_entries_never_panic(v in entry(), ms in prop::collection::vec(mutation(), 1..16)) {
        check_mutations(&v, &ms)?;
    }
    #[test]
    fn mutated_conf_changes_never_panic(
        v1 in conf_change(), v2 in conf_change_v2(), cs in conf_state(),
        ms in prop::collection::vec(mutation(), 1..16),
    ) {
        check_mutations(&v1, &ms)?;
        check_mutations(&v2, &ms)?;
        check_mutations(&cs, &ms)?;
        check_mutations(&HardState { term: v1.node_id, vote: v1.id, commit: 7 }, &ms)?;
    }
}

proptest! {
    // 10k arbitrary inputs, each given to all nine decoders.
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // Mostly past the version check, so the bodies get exercised.
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|mut v| { v.insert(0, 1); v }),
            prop::collection::vec(prop_oneof![0..4u8, Just(0x80), Just(0xff), any::<u8>()], 0..64)
                .prop_map(|mut v| { v.insert(0, 1); v }),
        ]
    ) {
        check_all_decoders(&input)?;
    }
}

// ---------- each error, provoked ----------

#[test]
fn empty_input_is_truncated() {
    assert_eq!(
        Entry::decode(&[]),
        Err(DecodeError::Truncated {
            offset: 0,
            needed: 1
        })
    );
}

#[test]
fn unknown_version_is_rejected() {
    let mut bytes = HardState::default().encode_to_vec();
    bytes[0] = 2;
    assert_eq!(
        HardState::decode(&bytes),
        Err(DecodeError::UnknownVersion { version: 2 })
    );
}

#[test]
fn unknown_tags_are_rejected() {
    assert!(matches!(
        Entry::decode(&[1, 3, 0, 0, 0, 0]),
        Err(DecodeError::UnknownTag {
            what: "entry type",
            tag: 3,
            offset: 1
        })
    ));
    assert!(matches!(
        Message::decode(&[1, 19]),
        Err(DecodeError::UnknownTag {
            what: "message type",
            tag: 19,
            ..
        })
    ));
    assert!(matches!(
        Message::decode(&[1, 0, 4]),
        Err(DecodeError::UnknownTag {
            what: "message flags",
            tag: 4,
            ..
        })
    ));
    let mut cs = ConfState::default().encode_to_vec();
    *cs.last_mut().unwrap() = 2;
    assert!(matches!(
        ConfState::decode(&cs),
        Err(DecodeError::UnknownTag {
            what: "auto_leave",
            tag: 2,
            ..
        })
    ));
    assert!(matches!(
        ConfChangeV2::decode(&[1, 3, 0, 0]),
        Err(DecodeError::UnknownTag { tag: 3, .. })
    ));
}

#[test]
fn varints_must_fit_u64_and_be_minimal() {
    let max = HardState {
        term: u64::MAX,
        vote: 0,
        commit: 0,
    };
    let mut bytes = max.encode_to_vec();
    assert_eq!(
        bytes[1..11],
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
    );
    assert_eq!(HardState::decode(&bytes), Ok(max));
    bytes[10] = 0x02; // 2^64: one bit too many
    assert_eq!(
        HardState::decode(&bytes),
        Err(DecodeError::VarintOverflow { offset: 1 })
    );
    bytes[10] = 0x81; // an eleventh byte announced
    assert_eq!(
        HardState::decode(&bytes),
        Err(DecodeError::VarintOverflow { offset: 1 })
    );
    // 0 written as two bytes.
    assert_eq!(
        HardState::decode(&[1, 0x80, 0x00, 0, 0]),
        Err(DecodeError::NonCanonicalVarint { offset: 1 })
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = Entry::new(1, 1, &b"x"[..]).encode_to_vec();
    let end = bytes.len();
    bytes.push(0);
    assert_eq!(
        Entry::decode(&bytes),
        Err(DecodeError::TrailingBytes {
            offset: end,
            remaining: 1
        })
    );
}

#[test]
fn huge_length_prefixes_fail_before_allocating() {
    // Entry data claiming u64::MAX bytes.
    let mut bytes = vec![1, 0, 1, 1];
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(matches!(
        Entry::decode(&bytes),
        Err(DecodeError::LengthOverflow {
            what: "entry data",
            len: u64::MAX,
            offset: 4,
            remaining: 0
        })
    ));
    // A message claiming 2^40 entries in 10 bytes: rejected by count × minimum entry size.
    let mut msg = Message::default().encode_to_vec();
    msg.truncate(msg.len() - 1); // drop the entry count (0)
    msg.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    msg.extend_from_slice(&[0; 10]);
    assert!(matches!(
        Message::decode(&msg),
        Err(DecodeError::LengthOverflow {
            what: "message entries",
            len: 0x100_0000_0000,
            remaining: 10,
            ..
        })
    ));
    // Two entries need at least 10 bytes; 9 are not enough even though each count fits.
    let mut two = Message::default().encode_to_vec();
    *two.last_mut().unwrap() = 2;
    two.extend_from_slice(&[0; 9]);
    assert!(matches!(
        Message::decode(&two),
        Err(DecodeError::LengthOverflow {
            len: 2,
            remaining: 9,
            ..
        })
    ));
}

#[test]
fn decode_bytes_slices_payloads_without_copying() {
    let msg = Message {
        msg_type: MessageType::MsgAppend,
        entries: vec![
            Entry::new(2, 7, vec![7u8; 256]),
            Entry::new(2, 8, vec![8u8; 256]),
        ],
        ..Message::default()
    };
    let input = Bytes::from(msg.encode_to_vec());
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    let decoded = Message::decode_bytes(&input).unwrap();
    assert_eq!(decoded, msg);
    for e in &decoded.entries {
        assert!(
            range.contains(&(e.data.as_ptr() as usize)),
            "entry data was copied"
        );
    }
    let copied = Message::decode(&input).unwrap();
    assert!(
        !range.contains(&(copied.entries[0].data.as_ptr() as usize)),
        "decode(&[u8]) must own its data"
    );
}

#[test]
fn none_and_empty_snapshot_are_distinct() {
    let without = Message::default();
    let with = Message {
        snapshot: Some(Snapshot::default()),
        ..Message::default()
    };
    assert_ne!(without.encode_to_vec(), with.encode_to_vec());
    assert_eq!(Message::decode(&with.encode_to_vec()), Ok(with));
}

//! Proves the wire decoders are total and faithful: `Frame::decode`, `Request::decode`,
//! `Response::decode` and the request frame body never panic on arbitrary bytes (proptest),
//! every generated request and response round-trips, and a frame survives only unchanged.

use bytes::Bytes;
use proptest::prelude::*;
use transport::frame::{Frame, FrameKind};
use transport::proto::*;

fn bytes_s() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn opt_bytes() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(bytes_s())
}

fn epoch() -> impl Strategy<Value = Epoch> {
    (any::<u64>(), any::<u64>()).prop_map(|(conf_version, version)| Epoch {
        conf_version,
        version,
    })
}

fn write_id() -> impl Strategy<Value = WriteId> {
    (any::<u64>(), any::<u64>()).prop_map(|(client_id, sequence)| WriteId {
        client_id,
        sequence,
    })
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    prop_oneof![
        (bytes_s(), bytes_s()).prop_map(|(key, value)| BatchOp::Put { key, value }),
        bytes_s().prop_map(|key| BatchOp::Delete { key }),
        (bytes_s(), bytes_s()).prop_map(|(start, end)| BatchOp::DeleteRange { start, end }),
        (bytes_s(), opt_bytes(), opt_bytes()).prop_map(|(key, expected, new)| BatchOp::Cas {
            key,
            expected,
            new
        }),
    ]
}

fn peer_change() -> impl Strategy<Value = PeerChangeOp> {
    prop_oneof![
        any::<u64>().prop_map(|store_id| PeerChangeOp::AddVoter { store_id }),
        any::<u64>().prop_map(|store_id| PeerChangeOp::AddLearner { store_id }),
        any::<u64>().prop_map(|peer_id| PeerChangeOp::Remove { peer_id }),
    ]
}

fn admin_op() -> impl Strategy<Value = AdminOp> {
    prop_oneof![
        (any::<u64>(), any::<bool>())
            .prop_map(|(store_id, learner)| AdminOp::AddPeer { store_id, learner }),
        any::<u64>().prop_map(|peer_id| AdminOp::PromoteLearner { peer_id }),
        any::<u64>().prop_map(|peer_id| AdminOp::RemovePeer { peer_id }),
        any::<u64>().prop_map(|peer_id| AdminOp::TransferLeader { peer_id }),
        bytes_s().prop_map(|split_key| AdminOp::Split { split_key }),
        proptest::collection::vec(peer_change(), 0..4)
            .prop_map(|changes| AdminOp::ChangePeers { changes }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u64>(), epoch(), bytes_s()).prop_map(|(region_id, epoch, key)| Request::Get {
            region_id,
            epoch,
            key
        }),
        (any::<u64>(), epoch(), write_id(), bytes_s(), bytes_s()).prop_map(
            |(region_id, epoch, id, key, value)| Request::Put {
                region_id,
                epoch,
                id,
                key,
                value
            }
        ),
        (any::<u64>(), epoch(), write_id(), bytes_s()).prop_map(|(region_id, epoch, id, key)| {
            Request::Delete {
                region_id,
                epoch,
                id,
                key,
            }
        }),
        (
            any::<u64>(),
            epoch(),
            write_id(),
            bytes_s(),
            opt_bytes(),
            opt_bytes()
        )
            .prop_map(|(region_id, epoch, id, key, expected, new)| Request::Cas {
                region_id,
                epoch,
                id,
                key,
                expected,
                new
            }),
        (
            any::<u64>(),
            epoch(),
            write_id(),
            proptest::collection::vec(batch_op(), 0..5)
        )
            .prop_map(|(region_id, epoch, id, ops)| Request::Batch {
                region_id,
                epoch,
                id,
                ops
            }),
        (any::<u64>(), epoch(), bytes_s(), bytes_s(), any::<u32>()).prop_map(
            |(region_id, epoch, start, end, limit)| Request::Scan {
                region_id,
                epoch,
                start,
                end,
                limit
            }
        ),
        Just(Request::Regions),
        Just(Request::Status),
        (any::<u64>(), epoch(), admin_op()).prop_map(|(region_id, epoch, op)| Request::Admin {
            region_id,
            epoch,
            op
        }),
    ]
}

fn peer() -> impl Strategy<Value = PeerInfo> {
    (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(peer_id, store_id, learner)| PeerInfo {
        peer_id,
        store_id,
        learner,
    })
}

fn region() -> impl Strategy<Value = RegionInfo> {
    (
        any::<u64>(),
        bytes_s(),
        bytes_s(),
        epoch(),
        proptest::collection::vec(peer(), 0..4),
        proptest::option::of(peer()),
    )
        .prop_map(|(region_id, start, end, epoch, peers, leader)| RegionInfo {
            region_id,
            start,
            end,
            epoch,
            peers,
            leader,
        })
}

fn text() -> impl Strategy<Value = String> {
    "[a-z ]{0,12}"
}

fn response_error() -> impl Strategy<Value = ResponseError> {
    prop_oneof![
        (any::<u64>(), proptest::option::of(peer()))
            .prop_map(|(region_id, leader)| ResponseError::NotLeader { region_id, leader }),
        proptest::collection::vec(region(), 0..3)
            .prop_map(|regions| ResponseError::EpochNotMatch { regions }),
        any::<u64>().prop_map(|region_id| ResponseError::RegionNotFound { region_id }),
        any::<u64>().prop_map(|region_id| ResponseError::KeyNotInRegion { region_id }),
        text().prop_map(|reason| ResponseError::ProposalDropped { reason }),
        text().prop_map(|reason| ResponseError::Busy { reason }),
        text().prop_map(|reason| ResponseError::BadRequest { reason }),
        Just(ResponseError::Stopping),
        text().prop_map(|reason| ResponseError::StoreFailed { reason }),
        text().prop_map(|reason| ResponseError::Unavailable { reason }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(client_id, sequence, last)| {
            ResponseError::AlreadyApplied {
                client_id,
                sequence,
                last,
            }
        }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let op_result = prop_oneof![
        Just(OpResult::Done),
        (any::<bool>(), opt_bytes()).prop_map(|(succeeded, previous)| OpResult::Cas {
            succeeded,
            previous
        }),
    ];
    let region_status = (
        region(),
        any::<u64>(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(info, peer_id, is_leader, term, commit_index, applied_index, hibernating)| {
                RegionStatus {
                    info,
                    peer_id,
                    is_leader,
                    term,
                    commit_index,
                    applied_index,
                    hibernating,
                }
            },
        );
    prop_oneof![
        proptest::collection::vec(op_result, 0..4).prop_map(Response::Written),
        opt_bytes().prop_map(Response::Value),
        proptest::collection::vec((bytes_s(), bytes_s()), 0..4).prop_map(Response::Rows),
        Just(Response::AdminDone),
        proptest::collection::vec(region(), 0..3).prop_map(Response::Regions),
        (any::<u64>(), proptest::collection::vec(region_status, 0..3))
            .prop_map(|(store_id, regions)| Response::Status(StoreStatus { store_id, regions })),
        response_error().prop_map(Response::Error),
    ]
}

proptest! {
    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let b = Bytes::from(data);
        let _ = Frame::decode(&b, 1 << 20);
        let _ = Request::decode(&b);
        let _ = Response::decode(&b);
        let _ = decode_request_frame_body(&b);
        let _ = decode_call_frame_body(&b);
        let _ = decode_reply_frame_body(&b);
    }

    #[test]
    fn calls_and_replies_round_trip(
        call_id in any::<u64>(),
        store_id in any::<u64>(),
        req in request(),
        resp in response(),
    ) {
        let call = encode_call_frame_body(call_id, store_id, &req);
        prop_assert_eq!(decode_call_frame_body(&call).unwrap(), (call_id, store_id, req));
        for cut in 0..call.len() {
            prop_assert!(decode_call_frame_body(&call.slice(..cut)).is_err());
        }
        let mut reply = bytes::BytesMut::new();
        encode_reply_frame_body(&mut reply, call_id, &resp);
        let reply = reply.freeze();
        prop_assert_eq!(decode_reply_frame_body(&reply).unwrap(), (call_id, resp));
        for cut in 0..reply.len() {
            prop_assert!(decode_reply_frame_body(&reply.slice(..cut)).is_err());
        }
    }

    #[test]
    fn requests_round_trip(store_id in any::<u64>(), req in request()) {
        prop_assert_eq!(&Request::decode(&req.encode()).unwrap(), &req);
        let body = encode_request_frame_body(store_id, &req);
        prop_assert_eq!(decode_request_frame_body(&body).unwrap(), (store_id, req.clone()));
        // Every strict prefix is refused, never misread.
        let enc = req.encode();
        for cut in 0..enc.len() {
            prop_assert!(Request::decode(&enc.slice(..cut)).is_err());
        }
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let enc = resp.encode();
        prop_assert_eq!(&Response::decode(&enc).unwrap(), &resp);
        for cut in 0..enc.len() {
            prop_assert!(Response::decode(&enc.slice(..cut)).is_err());
        }
    }

    #[test]
    fn frames_survive_only_unchanged(body in proptest::collection::vec(any::<u8>(), 0..300), flip in any::<usize>()) {
        let f = Frame::new(FrameKind::RaftBatch, Bytes::from(body));
        let enc = f.encode();
        prop_assert_eq!(Frame::decode(&enc, 1 << 20).unwrap(), (f, enc.len()));
        let mut damaged = enc.to_vec();
        let bit = flip % (damaged.len() * 8);
        damaged[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Frame::decode(&Bytes::from(damaged), 1 << 20).is_err());
    }
}

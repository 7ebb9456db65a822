//! The byte encoding of [`Request`] and [`Response`] (drawn in `docs/FORMAT.md`, "Client
//! protocol"): a version byte, a tag byte, then the fields in order, little-endian, byte strings
//! with a `u32` length, optional ones behind a presence byte. Counts are checked against the
//! input before anything is allocated; decoding never panics.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::wire::{
    put_bool, put_bytes, put_opt_bytes, put_u32, put_u64, put_u8, DecodeError, Reader,
};

const REQ_GET: u8 = 1;
const REQ_PUT: u8 = 2;
const REQ_DELETE: u8 = 3;
const REQ_CAS: u8 = 4;
const REQ_BATCH: u8 = 5;
const REQ_SCAN: u8 = 6;
const REQ_REGIONS: u8 = 7;
const REQ_STATUS: u8 = 8;
const REQ_ADMIN: u8 = 9;

const RESP_WRITTEN: u8 = 1;
const RESP_VALUE: u8 = 2;
const RESP_ROWS: u8 = 3;
const RESP_ADMIN_DONE: u8 = 4;
const RESP_REGIONS: u8 = 5;
const RESP_STATUS: u8 = 6;
const RESP_ERROR: u8 = 7;

/// Bytes of the smallest encoded peer, region and region status (bounds decoded counts).
const PEER_LEN: usize = 17;
const REGION_LEN_MIN: usize = 8 + 4 + 4 + 16 + 4 + 1;
const REGION_STATUS_LEN_MIN: usize = REGION_LEN_MIN + 8 + 1 + 8 * 3 + 1;

fn put_region_head(out: &mut BytesMut, region_id: u64, epoch: &Epoch) {
    put_u64(out, region_id);
    put_u64(out, epoch.conf_version);
    put_u64(out, epoch.version);
}

fn put_write_head(out: &mut BytesMut, region_id: u64, epoch: &Epoch, id: &WriteId) {
    put_region_head(out, region_id, epoch);
    put_u64(out, id.client_id);
    put_u64(out, id.sequence);
}

fn read_epoch(r: &mut Reader<'_>) -> Result<Epoch, DecodeError> {
    Ok(Epoch {
        conf_version: r.u64()?,
        version: r.u64()?,
    })
}

fn read_write_id(r: &mut Reader<'_>) -> Result<WriteId, DecodeError> {
    Ok(WriteId {
        client_id: r.u64()?,
        sequence: r.u64()?,
    })
}

fn put_batch_op(out: &mut BytesMut, op: &BatchOp) {
    match op {
        BatchOp::Put { key, value } => {
            put_u8(out, 1);
            put_bytes(out, key);
            put_bytes(out, value);
        }
        BatchOp::Delete { key } => {
            put_u8(out, 2);
            put_bytes(out, key);
        }
        BatchOp::DeleteRange { start, end } => {
            put_u8(out, 3);
            put_bytes(out, start);
            put_bytes(out, end);
        }
        BatchOp::Cas { key, expected, new } => {
            put_u8(out, 4);
            put_bytes(out, key);
            put_opt_bytes(out, expected.as_ref());
            put_opt_bytes(out, new.as_ref());
        }
    }
}

fn read_batch_op(r: &mut Reader<'_>) -> Result<BatchOp, DecodeError> {
    Ok(match r.u8()? {
        1 => BatchOp::Put {
            key: r.bytes()?,
            value: r.bytes()?,
        },
        2 => BatchOp::Delete { key: r.bytes()? },
        3 => BatchOp::DeleteRange {
            start: r.bytes()?,
            end: r.bytes()?,
        },
        4 => BatchOp::Cas {
            key: r.bytes()?,
            expected: r.opt_bytes("cas expected")?,
            new: r.opt_bytes("cas new")?,
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "batch op",
                tag,
            })
        }
    })
}

fn put_admin_op(out: &mut BytesMut, op: &AdminOp) {
    match op {
        AdminOp::AddPeer { store_id, learner } => {
            put_u8(out, 1);
            put_u64(out, *store_id);
            put_bool(out, *learner);
        }
        AdminOp::PromoteLearner { peer_id } => {
            put_u8(out, 2);
            put_u64(out, *peer_id);
        }
        AdminOp::RemovePeer { peer_id } => {
            put_u8(out, 3);
            put_u64(out, *peer_id);
        }
        AdminOp::TransferLeader { peer_id } => {
            put_u8(out, 4);
            put_u64(out, *peer_id);
        }
        AdminOp::Split { split_key } => {
            put_u8(out, 5);
            put_bytes(out, split_key);
        }
        AdminOp::ChangePeers { changes } => {
            put_u8(out, 6);
            put_u32(out, changes.len() as u32);
            for c in changes {
                let (tag, id) = match *c {
                    PeerChangeOp::AddVoter { store_id } => (1, store_id),
                    PeerChangeOp::AddLearner { store_id } => (2, store_id),
                    PeerChangeOp::Remove { peer_id } => (3, peer_id),
                };
                put_u8(out, tag);
                put_u64(out, id);
            }
        }
    }
}

fn read_admin_op(r: &mut Reader<'_>) -> Result<AdminOp, DecodeError> {
    Ok(match r.u8()? {
        1 => AdminOp::AddPeer {
            store_id: r.u64()?,
            learner: r.bool("learner")?,
        },
        2 => AdminOp::PromoteLearner { peer_id: r.u64()? },
        3 => AdminOp::RemovePeer { peer_id: r.u64()? },
        4 => AdminOp::TransferLeader { peer_id: r.u64()? },
        5 => AdminOp::Split {
            split_key: r.bytes()?,
        },
        6 => {
            let count = r.count("peer change", 9)?;
            let mut changes = Vec::with_capacity(count);
            for _ in 0..count {
                let tag = r.u8()?;
                let id = r.u64()?;
                changes.push(match tag {
                    1 => PeerChangeOp::AddVoter { store_id: id },
                    2 => PeerChangeOp::AddLearner { store_id: id },
                    3 => PeerChangeOp::Remove { peer_id: id },
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "peer change",
                            tag,
                        })
                    }
                });
            }
            AdminOp::ChangePeers { changes }
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "admin op",
                tag,
            })
        }
    })
}

impl Request {
    /// Appends the encoded request to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        put_u8(out, PROTO_VERSION);
        match self {
            Request::Get {
                region_id,
                epoch,
                key,
            } => {
                put_u8(out, REQ_GET);
                put_region_head(out, *region_id, epoch);
                put_bytes(out, key);
            }
            Request::Put {
                region_id,
                epoch,
                id,
                key,
                value,
            } => {
                put_u8(out, REQ_PUT);
                put_write_head(out, *region_id, epoch, id);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Request::Delete {
                region_id,
                epoch,
                id,
                key,
            } => {
                put_u8(out, REQ_DELETE);
                put_write_head(out, *region_id, epoch, id);
                put_bytes(out, key);
            }
            Request::Cas {
                region_id,
                epoch,
                id,
                key,
                expected,
                new,
            } => {
                put_u8(out, REQ_CAS);
                put_write_head(out, *region_id, epoch, id);
                put_bytes(out, key);
                put_opt_bytes(out, expected.as_ref());
                put_opt_bytes(out, new.as_ref());
            }
            Request::Batch {
                region_id,
                epoch,
                id,
                ops,
            } => {
                put_u8(out, REQ_BATCH);
                put_write_head(out, *region_id, epoch, id);
                put_u32(out, ops.len() as u32);
                for op in ops {
                    put_batch_op(out, op);
                }
            }
            Request::Scan {
                region_id,
                epoch,
                start,
                end,
                limit,
            } => {
                put_u8(out, REQ_SCAN);
                put_region_head(out, *region_id, epoch);
                put_bytes(out, start);
                put_bytes(out, end);
                put_u32(out, *limit);
            }
            Request::Regions => put_u8(out, REQ_REGIONS),
            Request::Status => put_u8(out, REQ_STATUS),
            Request::Admin {
                region_id,
                epoch,
                op,
            } => {
                put_u8(out, REQ_ADMIN);
                put_region_head(out, *region_id, epoch);
                put_admin_op(out, op);
            }
        }
    }

    /// The encoded request.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Decodes an encoded request; byte strings are zero-copy slices of `b`. Never panics.
    pub fn decode(b: &Bytes) -> Result<Request, DecodeError> {
        let mut r = Reader::new(b);
        let req = Self::read(&mut r)?;
        r.finish()?;
        Ok(req)
    }

    fn read(r: &mut Reader<'_>) -> Result<Request, DecodeError> {
        let version = r.u8()?;
        if version != PROTO_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "request",
                version,
            });
        }
        let tag = r.u8()?;
        if tag == REQ_REGIONS {
            return Ok(Request::Regions);
        }
        if tag == REQ_STATUS {
            return Ok(Request::Status);
        }
        let region_id = r.u64()?;
        let epoch = read_epoch(r)?;
        Ok(match tag {
            REQ_GET => Request::Get {
                region_id,
                epoch,
                key: r.bytes()?,
            },
            REQ_PUT => Request::Put {
                region_id,
                epoch,
                id: read_write_id(r)?,
                key: r.bytes()?,
                value: r.bytes()?,
            },
            REQ_DELETE => Request::Delete {
                region_id,
                epoch,
                id: read_write_id(r)?,
                key: r.bytes()?,
            },
            REQ_CAS => Request::Cas {
                region_id,
                epoch,
                id: read_write_id(r)?,
                key: r.bytes()?,
                expected: r.opt_bytes("cas expected")?,
                new: r.opt_bytes("cas new")?,
            },
            REQ_BATCH => {
                let id = read_write_id(r)?;
                let count = r.count("batch op", 5)?;
                let mut ops = Vec::with_capacity(count);
                for _ in 0..count {
                    ops.push(read_batch_op(r)?);
                }
                Request::Batch {
                    region_id,
                    epoch,
                    id,
                    ops,
                }
            }
            REQ_SCAN => Request::Scan {
                region_id,
                epoch,
                start: r.bytes()?,
                end: r.bytes()?,
                limit: r.u32()?,
            },
            REQ_ADMIN => Request::Admin {
                region_id,
                epoch,
                op: read_admin_op(r)?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "request",
                    tag,
                })
            }
        })
    }
}

/// The body of a `ClientRequest` frame: the target store id (0: any store of the node), then
/// the encoded request.
pub fn encode_request_frame_body(store_id: u64, req: &Request) -> Bytes {
    let mut out = BytesMut::new();
    put_u64(&mut out, store_id);
    req.encode_into(&mut out);
    out.freeze()
}

/// Decodes [`encode_request_frame_body`]'s output. Never panics.
pub fn decode_request_frame_body(b: &Bytes) -> Result<(u64, Request), DecodeError> {
    let mut r = Reader::new(b);
    let store_id = r.u64()?;
    let req = Request::read(&mut r)?;
    r.finish()?;
    Ok((store_id, req))
}

/// The body of a `ClientCall` frame: the call id, then what [`encode_request_frame_body`]
/// writes.
pub fn encode_call_frame_body(call_id: u64, store_id: u64, req: &Request) -> Bytes {
    let mut out = BytesMut::new();
    put_u64(&mut out, call_id);
    put_u64(&mut out, store_id);
    req.encode_into(&mut out);
    out.freeze()
}

/// Decodes [`encode_call_frame_body`]'s output into (call id, store id, request). Never panics.
pub fn decode_call_frame_body(b: &Bytes) -> Result<(u64, u64, Request), DecodeError> {
    let mut r = Reader::new(b);
    let call_id = r.u64()?;
    let store_id = r.u64()?;
    let req = Request::read(&mut r)?;
    r.finish()?;
    Ok((call_id, store_id, req))
}

/// Appends the body of a `ClientReply` frame to `out`: the call id, then the encoded response.
pub fn encode_reply_frame_body(out: &mut BytesMut, call_id: u64, resp: &Response) {
    put_u64(out, call_id);
    resp.encode_into(out);
}

/// Decodes a `ClientReply` frame body into (call id, response). Never panics.
pub fn decode_reply_frame_body(b: &Bytes) -> Result<(u64, Response), DecodeError> {
    let mut r = Reader::new(b);
    let call_id = r.u64()?;
    Ok((call_id, Response::decode(&b.slice(8..))?))
}

fn put_peer(out: &mut BytesMut, p: &PeerInfo) {
    put_u64(out, p.peer_id);
    put_u64(out, p.store_id);
    put_bool(out, p.learner);
}

fn read_peer(r: &mut Reader<'_>) -> Result<PeerInfo, DecodeError> {
    Ok(PeerInfo {
        peer_id: r.u64()?,
        store_id: r.u64()?,
        learner: r.bool("learner")?,
    })
}

fn put_opt_peer(out: &mut BytesMut, p: Option<&PeerInfo>) {
    match p {
        None => put_u8(out, 0),
        Some(p) => {
            put_u8(out, 1);
            put_peer(out, p);
        }
    }
}

fn read_opt_peer(r: &mut Reader<'_>) -> Result<Option<PeerInfo>, DecodeError> {
    if r.bool("leader presence")? {
        Ok(Some(read_peer(r)?))
    } else {
        Ok(None)
    }
}

fn put_region(out: &mut BytesMut, g: &RegionInfo) {
    put_u64(out, g.region_id);
    put_bytes(out, &g.start);
    put_bytes(out, &g.end);
    put_u64(out, g.epoch.conf_version);
    put_u64(out, g.epoch.version);
    put_u32(out, g.peers.len() as u32);
    for p in &g.peers {
        put_peer(out, p);
    }
    put_opt_peer(out, g.leader.as_ref());
}

fn read_region(r: &mut Reader<'_>) -> Result<RegionInfo, DecodeError> {
    let region_id = r.u64()?;
    let start = r.bytes()?;
    let end = r.bytes()?;
    let epoch = read_epoch(r)?;
    let count = r.count("peer", PEER_LEN)?;
    let mut peers = Vec::with_capacity(count);
    for _ in 0..count {
        peers.push(read_peer(r)?);
    }
    let leader = read_opt_peer(r)?;
    Ok(RegionInfo {
        region_id,
        start,
        end,
        epoch,
        peers,
        leader,
    })
}

fn put_regions(out: &mut BytesMut, v: &[RegionInfo]) {
    put_u32(out, v.len() as u32);
    for g in v {
        put_region(out, g);
    }
}

fn read_regions(r: &mut Reader<'_>) -> Result<Vec<RegionInfo>, DecodeError> {
    let count = r.count("region", REGION_LEN_MIN)?;
    let mut v = Vec::with_capacity(count);
    for _ in 0..count {
        v.push(read_region(r)?);
    }
    Ok(v)
}

fn put_status(out: &mut BytesMut, s: &StoreStatus) {
    put_u64(out, s.store_id);
    put_u32(out, s.regions.len() as u32);
    for g in &s.regions {
        put_region(out, &g.info);
        put_u64(out, g.peer_id);
        put_bool(out, g.is_leader);
        put_u64(out, g.term);
        put_u64(out, g.commit_index);
        put_u64(out, g.applied_index);
        put_bool(out, g.hibernating);
    }
}

fn read_status(r: &mut Reader<'_>) -> Result<StoreStatus, DecodeError> {
    let store_id = r.u64()?;
    let count = r.count("region status", REGION_STATUS_LEN_MIN)?;
    let mut regions = Vec::with_capacity(count);
    for _ in 0..count {
        regions.push(RegionStatus {
            info: read_region(r)?,
            peer_id: r.u64()?,
            is_leader: r.bool("is_leader")?,
            term: r.u64()?,
            commit_index: r.u64()?,
            applied_index: r.u64()?,
            hibernating: r.bool("hibernating")?,
        });
    }
    Ok(StoreStatus { store_id, regions })
}

fn put_text(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Reasons are diagnostic text: invalid UTF-8 is replaced, not refused.
fn read_text(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    Ok(String::from_utf8_lossy(&r.bytes()?).into_owned())
}

fn put_error(out: &mut BytesMut, e: &ResponseError) {
    match e {
        ResponseError::NotLeader { region_id, leader } => {
            put_u8(out, 1);
            put_u64(out, *region_id);
            put_opt_peer(out, leader.as_ref());
        }
        ResponseError::EpochNotMatch { regions } => {
            put_u8(out, 2);
            put_regions(out, regions);
        }
        ResponseError::RegionNotFound { region_id } => {
            put_u8(out, 3);
            put_u64(out, *region_id);
        }
        ResponseError::KeyNotInRegion { region_id } => {
            put_u8(out, 4);
            put_u64(out, *region_id);
        }
        ResponseError::ProposalDropped { reason } => {
            put_u8(out, 5);
            put_text(out, reason);
        }
        ResponseError::Busy { reason } => {
            put_u8(out, 6);
            put_text(out, reason);
        }
        ResponseError::BadRequest { reason } => {
            put_u8(out, 7);
            put_text(out, reason);
        }
        ResponseError::Stopping => put_u8(out, 8),
        ResponseError::StoreFailed { reason } => {
            put_u8(out, 9);
            put_text(out, reason);
        }
        ResponseError::Unavailable { reason } => {
            put_u8(out, 10);
            put_text(out, reason);
        }
        ResponseError::AlreadyApplied {
            client_id,
            sequence,
            last,
        } => {
            put_u8(out, 11);
            put_u64(out, *client_id);
            put_u64(out, *sequence);
            put_u64(out, *last);
        }
    }
}

fn read_error(r: &mut Reader<'_>) -> Result<ResponseError, DecodeError> {
    Ok(match r.u8()? {
        1 => ResponseError::NotLeader {
            region_id: r.u64()?,
            leader: read_opt_peer(r)?,
        },
        2 => ResponseError::EpochNotMatch {
            regions: read_regions(r)?,
        },
        3 => ResponseError::RegionNotFound {
            region_id: r.u64()?,
        },
        4 => ResponseError::KeyNotInRegion {
            region_id: r.u64()?,
        },
        5 => ResponseError::ProposalDropped {
            reason: read_text(r)?,
        },
        6 => ResponseError::Busy {
            reason: read_text(r)?,
        },
        7 => ResponseError::BadRequest {
            reason: read_text(r)?,
        },
        8 => ResponseError::Stopping,
        9 => ResponseError::StoreFailed {
            reason: read_text(r)?,
        },
        10 => ResponseError::Unavailable {
            reason: read_text(r)?,
        },
        11 => ResponseError::AlreadyApplied {
            client_id: r.u64()?,
            sequence: r.u64()?,
            last: r.u64()?,
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "response error",
                tag,
            })
        }
    })
}

fn put_op_result(out: &mut BytesMut, o: &OpResult) {
    match o {
        OpResult::Done => put_u8(out, 0),
        OpResult::Cas {
            succeeded,
            previous,
        } => {
            put_u8(out, 1);
            put_bool(out, *succeeded);
            put_opt_bytes(out, previous.as_ref());
        }
    }
}

fn read_op_result(r: &mut Reader<'_>) -> Result<OpResult, DecodeError> {
    Ok(match r.u8()? {
        0 => OpResult::Done,
        1 => OpResult::Cas {
            succeeded: r.bool("cas succeeded")?,
            previous: r.opt_bytes("cas previous")?,
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "op result",
                tag,
            })
        }
    })
}

impl Response {
    /// Appends the encoded response to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        put_u8(out, PROTO_VERSION);
        match self {
            Response::Written(v) => {
                put_u8(out, RESP_WRITTEN);
                put_u32(out, v.len() as u32);
                for o in v {
                    put_op_result(out, o);
                }
            }
            Response::Value(v) => {
                put_u8(out, RESP_VALUE);
                put_opt_bytes(out, v.as_ref());
            }
            Response::Rows(rows) => {
                put_u8(out, RESP_ROWS);
                put_u32(out, rows.len() as u32);
                for (k, v) in rows {
                    put_bytes(out, k);
                    put_bytes(out, v);
                }
            }
            Response::AdminDone => put_u8(out, RESP_ADMIN_DONE),
            Response::Regions(v) => {
                put_u8(out, RESP_REGIONS);
                put_regions(out, v);
            }
            Response::Status(s) => {
                put_u8(out, RESP_STATUS);
                put_status(out, s);
            }
            Response::Error(e) => {
                put_u8(out, RESP_ERROR);
                put_error(out, e);
            }
        }
    }

    /// The encoded response.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Decodes an encoded response; byte strings are zero-copy slices of `b`. Never panics.
    pub fn decode(b: &Bytes) -> Result<Response, DecodeError> {
        let mut r = Reader::new(b);
        let version = r.u8()?;
        if version != PROTO_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "response",
                version,
            });
        }
        let resp = match r.u8()? {
            RESP_WRITTEN => {
                let count = r.count("op result", 1)?;
                let mut v = Vec::with_capacity(count);
                for _ in 0..count {
                    v.push(read_op_result(&mut r)?);
                }
                Response::Written(v)
            }
            RESP_VALUE => Response::Value(r.opt_bytes("value presence")?),
            RESP_ROWS => {
                let count = r.count("row", 8)?;
                let mut rows = Vec::with_capacity(count);
                for _ in 0..count {
                    rows.push((r.bytes()?, r.bytes()?));
                }
                Response::Rows(rows)
            }
            RESP_ADMIN_DONE => Response::AdminDone,
            RESP_REGIONS => Response::Regions(read_regions(&mut r)?),
            RESP_STATUS => Response::Status(read_status(&mut r)?),
            RESP_ERROR => Response::Error(read_error(&mut r)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "response",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(resp)
    }
}

//! The node's [`ClientService`]: client-protocol requests become store requests and the answers
//! go back in protocol form. Store 0 means "any store of this node": `Regions` and `Status`
//! gather every local store's answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use engine::state::{Command, Op, OpResult};
use engine::store::{
    AdminRequest, ClientRequest, ClientResponse, Epoch, Peer, PeerChange, PeerRole,
    RegionInfo as StoreRegion, RegionMeta, RequestError, StoreRouter,
};
use transport::proto::{self, Request, Response, ResponseError};
use transport::server::ResponseSender;
use transport::ClientService;

/// Routes client requests to this node's stores.
pub struct NodeService {
    stores: BTreeMap<u64, StoreRouter>,
}

impl NodeService {
    /// A service over the node's stores.
    pub fn new(stores: BTreeMap<u64, StoreRouter>) -> NodeService {
        NodeService { stores }
    }
}

fn epoch(e: proto::Epoch) -> Epoch {
    Epoch {
        conf_version: e.conf_version,
        version: e.version,
    }
}

fn peer_info(p: &Peer) -> proto::PeerInfo {
    proto::PeerInfo {
        peer_id: p.peer_id,
        store_id: p.store_id,
        learner: p.role == PeerRole::Learner,
    }
}

fn region_info(m: &RegionMeta, leader: Option<&Peer>) -> proto::RegionInfo {
    proto::RegionInfo {
        region_id: m.region_id,
        start: m.start_key.clone(),
        end: m.end_key.clone(),
        epoch: proto::Epoch {
            conf_version: m.epoch.conf_version,
            version: m.epoch.version,
        },
        peers: m.peers.iter().map(peer_info).collect(),
        leader: leader.map(peer_info),
    }
}

fn region_status(r: &StoreRegion) -> proto::RegionStatus {
    proto::RegionStatus {
        info: region_info(&r.meta, r.leader.as_ref()),
        peer_id: r.peer_id,
        is_leader: r.is_leader,
        term: r.term,
        commit_index: r.commit_index,
        applied_index: r.applied_index,
        hibernating: r.hibernating,
    }
}

fn op_result(r: &OpResult) -> proto::OpResult {
    match r {
        OpResult::Done => proto::OpResult::Done,
        OpResult::Cas {
            succeeded,
            previous,
        } => proto::OpResult::Cas {
            succeeded: *succeeded,
            previous: previous.clone(),
        },
    }
}

fn batch_op(op: proto::BatchOp) -> Op {
    match op {
        proto::BatchOp::Put { key, value } => Op::Put { key, value },
        proto::BatchOp::Delete { key } => Op::Delete { key },
        proto::BatchOp::DeleteRange { start, end } => Op::DeleteRange { start, end },
        proto::BatchOp::Cas { key, expected, new } => Op::Cas { key, expected, new },
    }
}

/// The protocol form of a store error.
pub fn response_error(e: RequestError) -> ResponseError {
    match e {
        RequestError::NotLeader { region_id, leader } => ResponseError::NotLeader {
            region_id,
            leader: leader.as_ref().map(peer_info),
        },
        RequestError::EpochNotMatch { regions } => ResponseError::EpochNotMatch {
            regions: regions.iter().map(|m| region_info(m, None)).collect(),
        },
        RequestError::RegionNotFound { region_id } => ResponseError::RegionNotFound { region_id },
        RequestError::KeyNotInRegion { region_id } => ResponseError::KeyNotInRegion { region_id },
        RequestError::ProposalDropped { reason } => ResponseError::ProposalDropped { reason },
        RequestError::Busy { reason } => ResponseError::Busy { reason },
        RequestError::BadRequest { reason } => ResponseError::BadRequest { reason },
        RequestError::Stopping => ResponseError::Stopping,
        RequestError::StoreFailed { reason } => ResponseError::StoreFailed { reason },
        RequestError::AlreadyApplied {
            client_id,
            sequence,
            last,
        } => ResponseError::AlreadyApplied {
            client_id,
            sequence,
            last,
        },
        other => ResponseError::Unavailable {
            reason: other.to_string(),
        },
    }
}

fn response(r: Result<ClientResponse, RequestError>) -> Response {
    match r {
        Ok(ClientResponse::Written(v)) => Response::Written(v.iter().map(op_result).collect()),
        Ok(ClientResponse::Value(v)) => Response::Value(v),
        Ok(ClientResponse::Rows(rows)) => Response::Rows(rows),
        Ok(ClientResponse::AdminDone) => Response::AdminDone,
        Ok(ClientResponse::Regions(rs)) => Response::Regions(
            rs.iter()
                .map(|r| region_info(&r.meta, r.leader.as_ref()))
                .collect(),
        ),
        Ok(ClientResponse::Status(s)) => Response::Status(proto::StoreStatus {
            store_id: s.store_id,
            regions: s.regions.iter().map(region_status).collect(),
        }),
        Err(e) => Response::Error(response_error(e)),
    }
}

/// The store request for a protocol request (`None` for node-wide requests).
fn store_request(req: Request) -> Option<ClientRequest> {
    let write = |region_id, e, id: proto::WriteId, ops| ClientRequest::Write {
        region_id,
        epoch: epoch(e),
        command: Command {
            client_id: id.client_id,
            sequence: id.sequence,
            ops,
        },
    };
    Some(match req {
        Request::Get {
            region_id,
            epoch: e,
            key,
        } => ClientRequest::Get {
            region_id,
            epoch: epoch(e),
            key,
        },
        Request::Put {
            region_id,
            epoch: e,
            id,
            key,
            value,
        } => write(region_id, e, id, vec![Op::Put { key, value }]),
        Request::Delete {
            region_id,
            epoch: e,
            id,
            key,
        } => write(region_id, e, id, vec![Op::Delete { key }]),
        Request::Cas {
            region_id,
            epoch: e,
            id,
            key,
            expected,
            new,
        } => write(region_id, e, id, vec![Op::Cas { key, expected, new }]),
        Request::Batch {
            region_id,
            epoch: e,
            id,
            ops,
        } => write(region_id, e, id, ops.into_iter().map(batch_op).collect()),
        Request::Scan {
            region_id,
            epoch: e,
            start,
            end,
            limit,
        } => ClientRequest::Scan {
            region_id,
            epoch: epoch(e),
            start,
            end,
            limit,
        },
        Request::Admin {
            region_id,
            epoch: e,
            op,
        } => ClientRequest::Admin {
            region_id,
            epoch: epoch(e),
            request: match op {
                proto::AdminOp::AddPeer { store_id, learner } => {
                    AdminRequest::AddPeer { store_id, learner }
                }
                proto::AdminOp::PromoteLearner { peer_id } => {
                    AdminRequest::PromoteLearner { peer_id }
                }
                proto::AdminOp::RemovePeer { peer_id } => AdminRequest::RemovePeer { peer_id },
                proto::AdminOp::TransferLeader { peer_id } => {
                    AdminRequest::TransferLeader { peer_id }
                }
                proto::AdminOp::Split { split_key } => AdminRequest::Split { split_key },
                proto::AdminOp::ChangePeers { changes } => AdminRequest::ChangePeers(
                    changes
                        .into_iter()
                        .map(|c| match c {
                            proto::PeerChangeOp::AddVoter { store_id } => {
                                PeerChange::AddVoter { store_id }
                            }
                            proto::PeerChangeOp::AddLearner { store_id } => {
                                PeerChange::AddLearner { store_id }
                            }
                            proto::PeerChangeOp::Remove { peer_id } => {
                                PeerChange::Remove { peer_id }
                            }
                        })
                        .collect(),
                ),
            },
        },
        Request::Regions | Request::Status => return None,
    })
}

/// Gathers one answer per store, then replies once.
struct Gather {
    left: usize,
    regions: Vec<proto::RegionInfo>,
    statuses: Vec<proto::StoreStatus>,
    reply: Option<ResponseSender>,
    status: bool,
}

impl Gather {
    fn add(&mut self, r: Result<ClientResponse, RequestError>) {
        match response(r) {
            Response::Regions(rs) => self.regions.extend(rs),
            Response::Status(s) => self.statuses.push(s),
            _ => {}
        }
        self.left -= 1;
        if self.left == 0 {
            if let Some(reply) = self.reply.take() {
                if self.status {
                    // Several stores: one status per store, joined into the first's list.
                    let mut it = std::mem::take(&mut self.statuses).into_iter();
                    let mut first = it.next().unwrap_or(proto::StoreStatus {
                        store_id: 0,
                        regions: Vec::new(),
                    });
                    for s in it {
                        first.regions.extend(s.regions);
                    }
                    reply(Response::Status(first));
                } else {
                    reply(Response::Regions(std::mem::take(&mut self.regions)));
                }
            }
        }
    }
}

impl ClientService for NodeService {
    fn call(&self, store_id: u64, request: Request, reply: ResponseSender) {
        let node_wide = matches!(request, Request::Regions | Request::Status);
        if node_wide && (store_id == 0 || self.stores.len() == 1) {
            let status = matches!(request, Request::Status);
            let targets: Vec<&StoreRouter> = if store_id == 0 {
                self.stores.values().collect()
            } else {
                self.stores.get(&store_id).into_iter().collect()
            };
            if targets.is_empty() {
                return reply(Response::Error(ResponseError::Unavailable {
                    reason: format!("no store {store_id} on this node"),
                }));
            }
            let g = Arc::new(Mutex::new(Gather {
                left: targets.len(),
                regions: Vec::new(),
                statuses: Vec::new(),
                reply: Some(reply),
                status,
            }));
            for r in targets {
                let g = Arc::clone(&g);
                let req = if status {
                    ClientRequest::Status
                } else {
                    ClientRequest::Regions
                };
                r.submit(
                    req,
                    Box::new(move |res| {
                        if let Ok(mut g) = g.lock() {
                            g.add(res);
                        }
                    }),
                );
            }
            return;
        }
        let router = if store_id == 0 {
            // Any store: the one holding the region, else the first.
            self.stores.values().next()
        } else {
            self.stores.get(&store_id)
        };
        let Some(router) = router else {
            return reply(Response::Error(ResponseError::Unavailable {
                reason: format!("no store {store_id} on this node"),
            }));
        };
        match store_request(request) {
            Some(req) => router.submit(req, Box::new(move |r| reply(response(r)))),
            None => reply(Response::Error(ResponseError::BadRequest {
                reason: "node-wide request sent to one store".into(),
            })),
        }
    }
}

//! Proves the client protocol end to end over real QUIC: a `ClientConnection` call reaches the
//! node's `ClientService` with the store id and request intact and returns its answer; a node
//! without a service answers `Unavailable`; a dropped reply answers `Unavailable`; a frame
//! larger than the node's cap, or one whose checksum fails, cuts the connection before the
//! service sees anything; calls sharing a connection's call stream and answered in reverse
//! order each get their own answer.
#![cfg(feature = "server")]

mod fixture;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fixture::*;
use transport::frame::{Frame, FrameKind};
use transport::proto::*;
use transport::server::ResponseSender;
use transport::{ClientConnection, ClientService, TransportConfig, TransportError};

/// Answers from a fixed table and records what it was asked.
#[derive(Default)]
struct Echo {
    calls: Mutex<Vec<(u64, Request)>>,
    count: AtomicUsize,
}

impl ClientService for Echo {
    fn call(&self, store_id: u64, request: Request, reply: ResponseSender) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.calls.lock().unwrap().push((store_id, request.clone()));
        let resp = match request {
            Request::Get { key, .. } => Response::Value(Some(key)),
            Request::Put { .. } => Response::Written(vec![OpResult::Done]),
            Request::Cas { expected, .. } => Response::Written(vec![OpResult::Cas {
                succeeded: false,
                previous: expected,
            }]),
            Request::Scan { region_id, .. } => Response::Error(ResponseError::NotLeader {
                region_id,
                leader: Some(PeerInfo {
                    peer_id: 5,
                    store_id: 2,
                    learner: false,
                }),
            }),
            Request::Delete { .. } => return drop(reply),
            _ => Response::AdminDone,
        };
        reply(resp);
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn calls_round_trip_through_the_service() {
    let certs = pki("cluster", &["n1"], &["ctl"]);
    let n = node(&tls(&certs, "n1"), TransportConfig::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = n.local_addr().unwrap();
    let client_tls = tls(&certs, "ctl");
    rt.block_on(async {
        let c = ClientConnection::connect(addr, &client_tls).await.unwrap();
        let r = c.call(0, &Request::Status, CALL_TIMEOUT).await.unwrap();
        assert!(
            matches!(r, Response::Error(ResponseError::Unavailable { .. })),
            "{r:?}"
        );
    });
    let echo = Arc::new(Echo::default());
    n.set_client_service(echo.clone());
    rt.block_on(async {
        let c = ClientConnection::connect(addr, &client_tls).await.unwrap();
        let epoch = Epoch { conf_version: 2, version: 3 };
        let get = Request::Get { region_id: 9, epoch, key: Bytes::from_static(b"k1") };
        assert_eq!(
            c.call(4, &get, CALL_TIMEOUT).await.unwrap(),
            Response::Value(Some(Bytes::from_static(b"k1")))
        );
        let cas = Request::Cas {
            region_id: 9,
            epoch,
            id: WriteId { client_id: 77, sequence: 12 },
            key: Bytes::from_static(b"k"),
            expected: Some(Bytes::from_static(b"old")),
            new: None,
        };
        assert_eq!(
            c.call(4, &cas, CALL_TIMEOUT).await.unwrap(),
            Response::Written(vec![OpResult::Cas {
                succeeded: false,
                previous: Some(Bytes::from_static(b"old"))
            }])
        );
        let scan = Request::Scan { region_id: 9, epoch, start: Bytes::new(), end: Bytes::new(), limit: 10 };
        let r = c.call(4, &scan, CALL_TIMEOUT).await.unwrap();
        assert!(matches!(r, Response::Error(ResponseError::NotLeader { region_id: 9, leader: Some(p) }) if p.peer_id == 5));
        let del = Request::Delete { region_id: 9, epoch, id: WriteId::default(), key: Bytes::new() };
        let r = c.call(4, &del, CALL_TIMEOUT).await.unwrap();
        assert!(matches!(r, Response::Error(ResponseError::Unavailable { .. })), "{r:?}");
        // Concurrent calls on one connection, each on its own stream.
        let c = Arc::new(c);
        let mut calls = Vec::new();
        for i in 0..50u32 {
            let c = Arc::clone(&c);
            calls.push(tokio::spawn(async move {
                let key = Bytes::from(format!("key{i}"));
                let req = Request::Get { region_id: 1, epoch, key: key.clone() };
                (c.call(1, &req, CALL_TIMEOUT).await.unwrap(), key)
            }));
        }
        for call in calls {
            let (resp, key) = call.await.unwrap();
            assert_eq!(resp, Response::Value(Some(key)));
        }
        c.close();
    });
    let calls = echo.calls.lock().unwrap();
    assert_eq!(calls.len(), 54);
    assert_eq!(calls[1].0, 4);
    assert!(
        matches!(&calls[1].1, Request::Cas { id, .. } if id.client_id == 77 && id.sequence == 12)
    );
    drop(calls);
    n.shutdown();
}

#[test]
fn oversize_frame_cuts_the_connection() {
    let certs = pki("cluster", &["n1"], &["ctl"]);
    let config = TransportConfig {
        frame_bytes_max: 4096,
        ..TransportConfig::default()
    };
    let n = node(&tls(&certs, "n1"), config);
    let echo = Arc::new(Echo::default());
    n.set_client_service(echo.clone());
    let addr = n.local_addr().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = ClientConnection::connect(addr, &tls(&certs, "ctl"))
            .await
            .unwrap();
        // A request just under the cap is served.
        let key = Bytes::from(vec![b'k'; 3000]);
        let ok = Request::Get {
            region_id: 1,
            epoch: Epoch::default(),
            key: key.clone(),
        };
        assert_eq!(
            c.call(1, &ok, CALL_TIMEOUT).await.unwrap(),
            Response::Value(Some(key))
        );
        // One over it: the node closes the connection without calling the service.
        let big = Request::Get {
            region_id: 1,
            epoch: Epoch::default(),
            key: Bytes::from(vec![0u8; 5000]),
        };
        let frame =
            Frame::new(FrameKind::ClientRequest, encode_request_frame_body(1, &big)).encode();
        let err = c.send_raw(frame).await.unwrap_err();
        match err {
            TransportError::Read(quinn::ReadError::ConnectionLost(
                quinn::ConnectionError::ApplicationClosed(a),
            )) if a.error_code == transport::CLOSE_PROTOCOL_ERROR => {}
            other => panic!("expected a protocol-error close, got {other:?}"),
        }
        assert!(c.is_closed());
        let again = c.call(1, &ok, CALL_TIMEOUT).await;
        assert!(again.is_err());
    });
    assert_eq!(
        echo.count.load(Ordering::SeqCst),
        1,
        "only the first request reached the service"
    );
    n.shutdown();
}

#[test]
fn corrupt_frame_cuts_the_connection() {
    let certs = pki("cluster", &["n1"], &["ctl"]);
    let n = node(&tls(&certs, "n1"), TransportConfig::default());
    let echo = Arc::new(Echo::default());
    n.set_client_service(echo.clone());
    let addr = n.local_addr().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = ClientConnection::connect(addr, &tls(&certs, "ctl"))
            .await
            .unwrap();
        let req = Request::Get {
            region_id: 1,
            epoch: Epoch::default(),
            key: Bytes::from_static(b"key"),
        };
        let mut frame = Frame::new(FrameKind::ClientRequest, encode_request_frame_body(1, &req))
            .encode()
            .to_vec();
        let last = frame.len() - 1;
        frame[last] ^= 0x40;
        assert!(c.send_raw(Bytes::from(frame)).await.is_err());
        assert!(c.is_closed());
    });
    assert_eq!(
        echo.count.load(Ordering::SeqCst),
        0,
        "the damaged request never reached the service"
    );
    n.shutdown();
}

/// Holds every Get until `hold` of them are waiting, then answers them newest first.
struct Reverser {
    hold: usize,
    held: Mutex<Vec<(Bytes, ResponseSender)>>,
}

impl ClientService for Reverser {
    fn call(&self, _store_id: u64, request: Request, reply: ResponseSender) {
        let Request::Get { key, .. } = request else {
            return reply(Response::AdminDone);
        };
        let mut held = self.held.lock().unwrap();
        held.push((key, reply));
        if held.len() == self.hold {
            while let Some((key, reply)) = held.pop() {
                reply(Response::Value(Some(key)));
            }
        }
    }
}

#[test]
fn concurrent_calls_answered_out_of_order_reach_their_callers() {
    const CALLS: usize = 40;
    let certs = pki("cluster", &["n1"], &["ctl"]);
    let n = node(&tls(&certs, "n1"), TransportConfig::default());
    n.set_client_service(Arc::new(Reverser {
        hold: CALLS,
        held: Mutex::new(Vec::new()),
    }));
    let addr = n.local_addr().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Arc::new(
            ClientConnection::connect(addr, &tls(&certs, "ctl"))
                .await
                .unwrap(),
        );
        let tasks: Vec<_> = (0..CALLS)
            .map(|i| {
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let key = Bytes::from(format!("key-{i}"));
                    let req = Request::Get {
                        region_id: 1,
                        epoch: Epoch::default(),
                        key: key.clone(),
                    };
                    (key, c.call(1, &req, CALL_TIMEOUT).await.unwrap())
                })
            })
            .collect();
        for t in tasks {
            let (key, answer) = t.await.unwrap();
            assert_eq!(answer, Response::Value(Some(key)));
        }
        assert!(!c.is_closed());
    });
    n.shutdown();
}

//! Proves mutual TLS is enforced: a client presenting no certificate, a client and a peer
//! presenting certificates of another CA are all refused during the handshake; the node's
//! service and stores receive nothing (their call counter and channels stay empty), while a
//! client of the right CA is served by the same node; a client certificate (clientAuth only)
//! sending peer traffic is cut off.
#![cfg(feature = "server")]

mod fixture;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::store::{StoreEvent, Transport};
use fixture::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use transport::proto::{Request, Response};
use transport::server::ResponseSender;
use transport::{ClientConnection, ClientService, TransportConfig};

#[derive(Default)]
struct Counter(AtomicUsize);

impl ClientService for Counter {
    fn call(&self, _store_id: u64, _request: Request, reply: ResponseSender) {
        self.0.fetch_add(1, Ordering::SeqCst);
        reply(Response::AdminDone);
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A raw quinn client trusting the cluster CA but presenting no certificate.
async fn call_without_cert(ca_pem: &[u8], addr: std::net::SocketAddr) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![transport::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let Ok(conn) = ep.connect(addr, "127.0.0.1").unwrap().await else {
        return false;
    };
    // TLS 1.3: the client may finish first; the server's refusal then closes the connection.
    let attempt = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let body = transport::proto::encode_request_frame_body(0, &Request::Status);
        let frame = transport::frame::Frame::new(transport::frame::FrameKind::ClientRequest, body);
        send.write_all(&frame.encode()).await.ok()?;
        send.finish().ok()?;
        transport::frame::read_frame(&mut recv, 1 << 20)
            .await
            .ok()?
    };
    tokio::time::timeout(CALL_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let certs = pki("cluster", &["n1"], &["good"]);
    let foreign = pki("other-cluster", &["n1"], &["evil"]);
    let n = node(&tls(&certs, "n1"), TransportConfig::default());
    let counter = Arc::new(Counter::default());
    n.set_client_service(counter.clone());
    let addr = n.local_addr().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ca_pem = std::fs::read(certs.path().join("ca.pem")).unwrap();
        assert!(
            !call_without_cert(&ca_pem, addr).await,
            "a client without a certificate was served"
        );
        // A certificate from another CA (the client trusts our CA, so only its own cert is wrong).
        let evil = transport::TlsConfig::from_files(
            &certs.path().join("ca.pem"),
            &foreign.path().join("evil.pem"),
            &foreign.path().join("evil.key"),
        )
        .unwrap();
        let served = match ClientConnection::connect(addr, &evil).await {
            Err(_) => false,
            Ok(c) => c.call(0, &Request::Status, CALL_TIMEOUT).await.is_ok(),
        };
        assert!(!served, "a client of another CA was served");
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            0,
            "nothing reached the service"
        );
        // The right CA's client is served by the same node.
        let good = ClientConnection::connect(addr, &tls(&certs, "good"))
            .await
            .unwrap();
        assert_eq!(
            good.call(0, &Request::Status, CALL_TIMEOUT).await.unwrap(),
            Response::AdminDone
        );
    });
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    n.shutdown();
}

#[test]
fn peer_of_another_ca_delivers_nothing() {
    let certs = pki("cluster", &["b"], &[]);
    let foreign = pki("other-cluster", &["a"], &[]);
    // `a` trusts b's CA (so it would accept b's certificate) but presents another CA's.
    let a_tls = transport::TlsConfig::from_files(
        &certs.path().join("ca.pem"),
        &foreign.path().join("a.pem"),
        &foreign.path().join("a.key"),
    )
    .unwrap();
    let config = TransportConfig {
        connect_timeout: Duration::from_millis(500),
        ..TransportConfig::default()
    };
    let a = node(&a_tls, config.clone());
    let b = node(&tls(&certs, "b"), config);
    let (ra, rx_a) = store(1);
    let (rb, rx_b) = store(2);
    a.register_store(1, ra);
    b.register_store(2, rb);
    a.add_store(2, b.local_addr().unwrap());
    a.transport().send(2, vec![raft_msg(7, 1, 2, 1)]);
    loop {
        match rx_a
            .recv_timeout(HANG_GUARD)
            .expect("the sender learns the store is unreachable")
        {
            StoreEvent::Unreachable { store_id: 2 } => break,
            _ => continue,
        }
    }
    assert!(
        rx_b.try_recv().is_err(),
        "nothing was delivered to the store"
    );
    a.shutdown();
    b.shutdown();
    assert!(
        rx_b.try_recv().is_err(),
        "nothing was delivered to the store"
    );
}

#[test]
fn client_certificate_cannot_send_peer_traffic() {
    let certs = pki("cluster", &["n1"], &["ctl"]);
    let n = node(&tls(&certs, "n1"), TransportConfig::default());
    let (r, rx) = store(2);
    n.register_store(2, r);
    let addr = n.local_addr().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = ClientConnection::connect(addr, &tls(&certs, "ctl"))
            .await
            .unwrap();
        let header = transport::frame::Frame::new(
            transport::frame::FrameKind::SnapshotHeader,
            raft_msg(7, 1, 2, 5).encode(),
        );
        assert!(c.send_raw(header.encode()).await.is_err());
        assert!(c.is_closed(), "the node cut the connection");
    });
    n.shutdown();
    assert!(rx.try_recv().is_err(), "nothing was delivered to the store");
}

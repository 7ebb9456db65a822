//! The client SDK against real in-process nodes over QUIC (cluster_harness): every call works,
//! including scans across regions and a split made behind the client's back (its cache goes
//! stale and is corrected by the nodes' answers); writers keep going through the loss of the
//! leader and every acknowledged write reads back; each error is typed (TLS refused, bad
//! argument, timeout on an unreachable node or a cluster without quorum) within its deadline.

mod cluster_harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{CasOutcome, Client, ClientConfig, ClientError, ClientTlsConfig};
use cluster_harness::{make_certs, QuicCluster, T};
use transport::proto::{AdminOp, Request, Response, ResponseError, WriteId};

fn key(i: u32) -> Bytes {
    Bytes::from(format!("k{i:05}"))
}

fn val(i: u32, round: u32) -> Bytes {
    Bytes::from(format!("value-{i}-{round}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn addrs(c: &QuicCluster) -> Vec<SocketAddr> {
    (1..=c.nodes.len()).map(|i| c.addr(i)).collect()
}

fn tls(c: &QuicCluster) -> ClientTlsConfig {
    ClientTlsConfig::from_dir(&c.certs_dir(), "admin").expect("client tls")
}

fn keys_of(rows: &[(Bytes, Bytes)]) -> Vec<Bytes> {
    rows.iter().map(|(k, _)| k.clone()).collect()
}

/// Keys `range` of `key`, without those in `gone`.
fn expected_keys(range: std::ops::Range<u32>, gone: &[u32]) -> Vec<Bytes> {
    range.filter(|i| !gone.contains(i)).map(key).collect()
}

#[test]
fn every_call_works_across_regions_and_a_split_behind_the_clients_back() {
    let c = QuicCluster::start(3, 3);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(&addrs(&c), tls(&c)))
        .expect("connect");
    rt.block_on(async {
        for i in 0..60 {
            client.put(key(i), val(i, 0)).await.expect("put");
        }
        for i in 0..60 {
            assert_eq!(client.get(key(i)).await.expect("get"), Some(val(i, 0)));
        }
        assert_eq!(client.get("absent").await.expect("get"), None);
        client.delete(key(7)).await.expect("delete");
        client
            .delete("absent")
            .await
            .expect("delete of an absent key");
        assert_eq!(client.get(key(7)).await.expect("get"), None);

        let cas = |expected: Option<&'static str>, new: Option<&'static str>| {
            let client = client.clone();
            async move {
                client
                    .compare_and_swap("cas", expected.map(Bytes::from), new.map(Bytes::from))
                    .await
                    .expect("cas")
            }
        };
        let outcome = |succeeded, previous: Option<&'static str>| CasOutcome {
            succeeded,
            previous: previous.map(Bytes::from),
        };
        assert_eq!(cas(None, Some("1")).await, outcome(true, None));
        assert_eq!(cas(Some("1"), Some("2")).await, outcome(true, Some("1")));
        assert_eq!(cas(Some("1"), Some("3")).await, outcome(false, Some("2")));
        assert_eq!(cas(None, Some("4")).await, outcome(false, Some("2")));
        assert_eq!(
            client.get("cas").await.expect("get").as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(cas(Some("2"), None).await, outcome(true, Some("2")));
        assert_eq!(client.get("cas").await.expect("get"), None);

        let all = client.scan("k", "l", 1000).await.expect("scan");
        assert_eq!(keys_of(&all), expected_keys(0..60, &[7]));
        assert_eq!(all[0].1, val(0, 0));
        let first = client.scan("", "", 5).await.expect("scan");
        assert_eq!(keys_of(&first), expected_keys(0..5, &[]));
        assert!(client
            .scan(key(3), key(3), 10)
            .await
            .expect("scan")
            .is_empty());
        let leader = client.leader_of(&key(1)).await.expect("leader_of");
        assert!(leader.is_some_and(|a| addrs(&c).contains(&a)), "{leader:?}");
    });

    // Split the region with another connection: the client's cache still holds one region.
    assert_eq!(
        c.admin(&key(30), AdminOp::Split { split_key: key(30) }),
        Ok(Response::AdminDone)
    );
    rt.block_on(async {
        client
            .put(key(40), val(40, 1))
            .await
            .expect("put right of the split");
        client
            .put(key(10), val(10, 1))
            .await
            .expect("put left of the split");
        assert_eq!(client.get(key(40)).await.expect("get"), Some(val(40, 1)));
        assert_eq!(client.get(key(10)).await.expect("get"), Some(val(10, 1)));
        assert_eq!(client.get(key(31)).await.expect("get"), Some(val(31, 0)));
        // Scans cross the boundary in key order and stop at the limit or the end.
        let all = client.scan("", "", 1000).await.expect("scan");
        assert_eq!(keys_of(&all), expected_keys(0..60, &[7]));
        let across = client.scan(key(25), "", 8).await.expect("scan");
        assert_eq!(keys_of(&across), expected_keys(25..33, &[]));
        let bounded = client.scan(key(28), key(33), 100).await.expect("scan");
        assert_eq!(keys_of(&bounded), expected_keys(28..33, &[]));
        assert_eq!(bounded[2].0, key(30));
        // A client paging by 7 rows sees the same rows.
        let mut cfg = ClientConfig::new(addrs(&c), tls(&c));
        cfg.scan_rows_per_request_max = 7;
        let paging = Client::connect_with(cfg).await.expect("connect");
        let paged = paging.scan("", "", 1000).await.expect("scan");
        assert_eq!(paged, all);
        let paged = paging.scan(key(20), key(45), 23).await.expect("scan");
        assert_eq!(keys_of(&paged), expected_keys(20..43, &[]));
        paging.close().await;
        let left = client.leader_of(&key(1)).await.expect("leader_of");
        let right = client.leader_of(&key(40)).await.expect("leader_of");
        assert!(left.is_some() && right.is_some());
    });
    let regions = c.status(1).expect("status").regions;
    assert_eq!(regions.len(), 2, "{regions:?}");

    // The nodes refuse an older write id of a session as already applied (the SDK's lanes
    // never send one; this checks the protocol's mapping).
    let (i, r) = c.leader_of(&key(1), T).expect("leader");
    let store = r
        .info
        .peers
        .iter()
        .find(|p| p.peer_id == r.peer_id)
        .map(|p| p.store_id);
    let put = |sequence| Request::Put {
        region_id: r.info.region_id,
        epoch: r.info.epoch,
        id: WriteId {
            client_id: 0xa11ce,
            sequence,
        },
        key: key(1),
        value: val(1, 9),
    };
    let store = store.expect("leader's store");
    assert!(matches!(
        c.call(i, store, &put(2)),
        Ok(Response::Written(_))
    ));
    assert!(
        matches!(
            c.call(i, store, &put(1)),
            Ok(Response::Error(ResponseError::AlreadyApplied {
                client_id: 0xa11ce,
                sequence: 1,
                last: 2
            }))
        ),
        "an older sequence was not refused"
    );

    rt.block_on(async {
        assert!(matches!(
            client.scan("a", "b", 0).await,
            Err(ClientError::BadArgument { .. })
        ));
        assert!(matches!(
            client.scan("b", "a", 10).await,
            Err(ClientError::BadArgument { .. })
        ));
        let other = client.clone();
        client.close().await;
        assert!(matches!(other.get(key(1)).await, Err(ClientError::Closed)));
        assert!(matches!(
            other.put(key(1), "x").await,
            Err(ClientError::Closed)
        ));
    });
}

#[test]
fn writers_go_on_through_a_leader_crash_and_lose_no_acknowledged_write() {
    let mut c = QuicCluster::start(3, 3);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(&addrs(&c), tls(&c)))
        .expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop, acked_total) =
                (client.clone(), Arc::clone(&stop), Arc::clone(&acked_total));
            rt.spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), Vec::new());
                let mut i = 0u32;
                while !stop.load(Ordering::Acquire) {
                    let k = Bytes::from(format!("w{w}-{i:06}"));
                    let v = Bytes::from(format!("value-{w}-{i}"));
                    match client.put(k.clone(), v.clone()).await {
                        Ok(()) => {
                            acked.push((k, v));
                            acked_total.fetch_add(1, Ordering::AcqRel);
                        }
                        Err(e) => {
                            eprintln!("writer {w}: put {i}: {e}");
                            failed.push(e);
                        }
                    }
                    i += 1;
                }
                (acked, failed)
            })
        })
        .collect();
    let wait_for = |n: u64, what: &str| {
        let deadline = Instant::now() + T;
        while acked_total.load(Ordering::Acquire) < n {
            assert!(
                Instant::now() < deadline,
                "{what}: only {acked_total:?} acked"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(40, "before the crash");
    let (old, _) = c.leader_of(b"w", T).expect("leader");
    c.kill_node(old);
    let at_kill = acked_total.load(Ordering::Acquire);
    wait_for(at_kill + 80, "after the crash");
    stop.store(true, Ordering::Release);
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for w in writers {
        let (a, f) = rt.block_on(w).expect("writer");
        acked.extend(a);
        failed.extend(f);
    }
    // A write may time out while the cluster fails over (its outcome is then unknown), but
    // no other error is acceptable: not a refused write id, not attempts run out.
    assert!(
        failed
            .iter()
            .all(|e| matches!(e, ClientError::Timeout { .. })),
        "{failed:?}"
    );
    let new = c.leader_of(b"w", T).expect("a new leader").0;
    assert_ne!(new, old);
    eprintln!(
        "{} writes acknowledged ({} after killing node {old}), {} failed",
        acked.len(),
        acked.len() as u64 - at_kill,
        failed.len()
    );
    rt.block_on(async {
        for (k, v) in &acked {
            assert_eq!(
                client.get(k.clone()).await.expect("get"),
                Some(v.clone()),
                "{k:?}"
            );
        }
        let rows = client.scan("w", "x", 100_000).await.expect("scan");
        assert!(rows.len() >= acked.len());
        assert!(
            rows.windows(2).all(|p| p[0].0 < p[1].0),
            "scan out of order"
        );
    });
}

#[test]
fn errors_are_typed_and_calls_end_by_their_deadline() {
    let rt = runtime();
    let mut c = QuicCluster::start(3, 3);
    let good = tls(&c);
    let connect = |cfg: ClientConfig| rt.block_on(Client::connect_with(cfg));

    let no_endpoints = ClientConfig::new(Vec::new(), good.clone());
    assert!(matches!(
        connect(no_endpoints),
        Err(ClientError::BadArgument { .. })
    ));

    // A client of another CA, and a client whose certificate another CA signed.
    let rogue = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    make_certs(rogue.path(), 1);
    let foreign = ClientTlsConfig::from_dir(rogue.path(), "admin").expect("tls");
    let r = connect(ClientConfig::new(addrs(&c), foreign));
    assert!(matches!(r, Err(ClientError::TlsRefused { .. })), "{r:?}");
    let certs = c.certs_dir();
    let mixed = ClientTlsConfig::from_files(
        &certs.join("ca.pem"),
        &rogue.path().join("admin.pem"),
        &rogue.path().join("admin.key"),
    )
    .expect("tls");
    let r = connect(ClientConfig::new(vec![c.addr(1)], mixed));
    assert!(matches!(r, Err(ClientError::TlsRefused { .. })), "{r:?}");

    // Nothing listens at the endpoint: the connect's deadline ends it.
    let nowhere: SocketAddr = ([127, 0, 0, 1], cluster_harness::free_ports(1)[0]).into();
    let mut cfg = ClientConfig::new(vec![nowhere], good.clone());
    cfg.call_timeout = Duration::from_secs(1);
    let t0 = Instant::now();
    let r = connect(cfg);
    assert!(matches!(r, Err(ClientError::Timeout { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // A cluster that lost its quorum: calls time out by their deadline (attempts do not run
    // out first).
    let mut cfg = ClientConfig::new(addrs(&c), good);
    cfg.max_attempts = 10_000;
    let client = connect(cfg).expect("connect");
    rt.block_on(client.put("before", "quorum")).expect("put");
    let (leader, _) = c.leader_of(b"before", T).expect("leader");
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    c.stop_node(leader);
    c.stop_node(follower);
    let quick = client.with_timeout(Duration::from_millis(500));
    for _ in 0..2 {
        let t0 = Instant::now();
        let r = rt.block_on(quick.put("during", "no quorum"));
        assert!(matches!(r, Err(ClientError::Timeout { .. })), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let t0 = Instant::now();
        let r = rt.block_on(quick.get("before"));
        assert!(matches!(r, Err(ClientError::Timeout { .. })), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
    // Every node stopped.
    c.stop_all();
    let t0 = Instant::now();
    let r = rt.block_on(quick.get("before"));
    assert!(matches!(r, Err(ClientError::Timeout { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

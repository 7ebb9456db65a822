//! Real nodes over real QUIC on 127.0.0.1 in one process (file-backed stores, mutual TLS):
//! three nodes replicate, survive the loss of their leader without losing an acknowledged
//! write, and a killed node restarts and catches up from its log; five nodes take a learner by
//! snapshot, promote it, remove a peer, move leadership and split a region; a peer or client
//! whose certificate another CA signed is refused. The three-node case runs twice: with each
//! store's loop on its node's one network thread, and on a thread of its own. A store file
//! created too small for the state store is refused with the size that would do, and removed.

mod cluster_harness;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_harness::{make_certs, QuicCluster, T};
use transport::proto::{AdminOp, PeerChangeOp, Request, Response};
use transport::{ClientConnection, ClientTlsConfig};

fn key(i: u32) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

fn val(i: u32, round: u32) -> Vec<u8> {
    format!("value-{i}-{round}").into_bytes()
}

/// Each store's loop runs on its node's one network thread (`NodeTransport::drive_store`).
#[test]
fn three_nodes_replicate_fail_over_and_catch_up() {
    replicate_fail_over_and_catch_up(1);
}

/// Each store's loop has a thread of its own beside a two-thread network runtime.
#[test]
fn three_nodes_replicate_fail_over_and_catch_up_loop_on_own_thread() {
    replicate_fail_over_and_catch_up(2);
}

fn replicate_fail_over_and_catch_up(net_threads: usize) {
    let mut c = QuicCluster::start_with_net_threads(3, 3, net_threads);
    for i in 0..30 {
        c.put(&key(i), &val(i, 0));
    }
    for i in 0..30 {
        assert_eq!(c.get(&key(i)).as_deref(), Some(val(i, 0).as_slice()));
    }
    assert!(c.wait_applied(b"k", T));
    let (old, _) = c.leader_of(b"k", T).expect("leader");
    c.kill_node(old);
    let t0 = Instant::now();
    let (new, _) = c.leader_of(b"k", T).expect("a new leader");
    eprintln!("failover: node {old} -> node {new} in {:?}", t0.elapsed());
    assert_ne!(new, old);
    for i in 30..40 {
        c.put(&key(i), &val(i, 1));
    }
    for i in 0..40 {
        let want = if i < 30 { val(i, 0) } else { val(i, 1) };
        assert_eq!(c.get(&key(i)).as_deref(), Some(want.as_slice()), "key {i}");
    }
    // The killed node restarts from its log and catches up; then it leads and serves all.
    c.restart_node(old);
    assert!(c.wait_applied(b"k", T), "restarted node caught up");
    let st = c.status(old).expect("status");
    let r = st
        .regions
        .iter()
        .find(|r| r.info.region_id == 1)
        .expect("region 1");
    let peer_id = r.peer_id;
    c.admin(b"k", AdminOp::TransferLeader { peer_id })
        .expect("transfer");
    let deadline = Instant::now() + T;
    while c.leader_of(b"k", T).map(|(i, _)| i) != Some(old) {
        assert!(Instant::now() < deadline, "node {old} leads again");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..40 {
        let want = if i < 30 { val(i, 0) } else { val(i, 1) };
        assert_eq!(
            c.get(&key(i)).as_deref(),
            Some(want.as_slice()),
            "key {i} via node {old}"
        );
    }
    c.stop_all();
}

#[test]
fn five_nodes_learner_promote_remove_transfer_split() {
    let mut c = QuicCluster::start(5, 4);
    let big = vec![b'x'; 1024];
    for i in 0..200 {
        c.put(&key(i), &big);
    }
    // Node 5 joins as a learner; its empty peer is caught up by a snapshot.
    let (_, before) = c.leader_of(b"k", T).expect("leader");
    assert!(
        before.info.peers.iter().all(|p| p.store_id != 5),
        "{:?}",
        before.info.peers
    );
    assert_eq!(
        c.admin(
            b"k",
            AdminOp::AddPeer {
                store_id: 5,
                learner: true
            }
        ),
        Ok(Response::AdminDone)
    );
    assert!(c.wait_applied(b"k", T), "learner caught up");
    let st5 = c.status(5).expect("node 5 status");
    let r5 = st5
        .regions
        .iter()
        .find(|r| r.info.region_id == 1)
        .expect("node 5 has region 1");
    let me = r5
        .info
        .peers
        .iter()
        .find(|p| p.store_id == 5)
        .copied()
        .expect("peer on 5");
    assert!(me.learner);
    c.admin(
        b"k",
        AdminOp::PromoteLearner {
            peer_id: me.peer_id,
        },
    )
    .expect("promote");
    // Remove a voter that is not the leader and not node 5.
    let (leader, info) = c.leader_of(b"k", T).expect("leader");
    assert!(info
        .info
        .peers
        .iter()
        .any(|p| p.peer_id == me.peer_id && !p.learner));
    let victim = info
        .info
        .peers
        .iter()
        .find(|p| p.store_id as usize != leader && p.store_id != 5)
        .copied()
        .expect("a follower");
    c.admin(
        b"k",
        AdminOp::RemovePeer {
            peer_id: victim.peer_id,
        },
    )
    .expect("remove");
    let deadline = Instant::now() + T;
    while c
        .status(victim.store_id as usize)
        .is_some_and(|s| s.regions.iter().any(|r| r.info.region_id == 1))
    {
        assert!(Instant::now() < deadline, "removed peer destroyed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Leadership moves to node 5, which serves every write made before it joined.
    c.admin(
        b"k",
        AdminOp::TransferLeader {
            peer_id: me.peer_id,
        },
    )
    .expect("transfer");
    let deadline = Instant::now() + T;
    while c.leader_of(b"k", T).map(|(i, _)| i) != Some(5) {
        assert!(Instant::now() < deadline, "node 5 leads");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in (0..200).step_by(17) {
        assert_eq!(c.get(&key(i)).as_deref(), Some(big.as_slice()), "key {i}");
    }
    // Split, then both halves take writes and serve reads.
    c.admin(
        b"k",
        AdminOp::Split {
            split_key: Bytes::from(key(100)),
        },
    )
    .expect("split");
    let (_, left) = c.leader_of(&key(0), T).expect("left leader");
    let (_, right) = c.leader_of(&key(150), T).expect("right leader");
    assert_ne!(left.info.region_id, right.info.region_id);
    assert_eq!(right.info.start.as_ref(), key(100).as_slice());
    for i in [3u32, 99, 100, 199] {
        c.put(&key(i), &val(i, 2));
    }
    for i in [3u32, 99, 100, 199] {
        assert_eq!(c.get(&key(i)).as_deref(), Some(val(i, 2).as_slice()));
    }
    assert_eq!(c.get(&key(150)).as_deref(), Some(big.as_slice()));
    // A joint change of the right half: the store removed above comes back as a voter (its
    // old peer is a tombstone there) while a follower voter leaves, in one step.
    let (leader, right) = c.leader_of(&key(150), T).expect("right leader");
    let leaving = right
        .info
        .peers
        .iter()
        .find(|p| p.store_id as usize != leader && !p.learner)
        .copied()
        .expect("a follower voter");
    c.admin(
        &key(150),
        AdminOp::ChangePeers {
            changes: vec![
                PeerChangeOp::AddVoter {
                    store_id: victim.store_id,
                },
                PeerChangeOp::Remove {
                    peer_id: leaving.peer_id,
                },
            ],
        },
    )
    .expect("joint change");
    assert!(c.wait_applied(&key(150), T), "returning store caught up");
    let back = c.status(victim.store_id as usize).expect("status");
    let r = back
        .regions
        .iter()
        .find(|r| r.info.region_id == right.info.region_id)
        .expect("the returning store has the right half");
    assert!(r
        .info
        .peers
        .iter()
        .all(|p| p.peer_id != leaving.peer_id && !p.learner));
    c.put(&key(150), &val(150, 3));
    assert_eq!(c.get(&key(150)).as_deref(), Some(val(150, 3).as_slice()));
    c.stop_all();
}

#[test]
fn peers_and_clients_with_another_ca_are_refused() {
    let mut c = QuicCluster::start(3, 3);
    c.put(b"k1", b"v1");
    // A client whose certificate another CA signed.
    let rogue = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    make_certs(rogue.path(), 3);
    let tls = ClientTlsConfig::from_dir(rogue.path(), "admin").unwrap();
    let addr = c.addr(1);
    let r = c.rt.block_on(async move {
        match ClientConnection::connect(addr, &tls).await {
            Ok(conn) => conn
                .call(0, &Request::Status, Duration::from_secs(5))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    });
    assert!(r.is_err(), "a client of another CA was served");
    // A node of another CA claiming store 3's place: its messages never reach the cluster,
    // and it never learns a leader.
    let mut cfg = c.cfgs[2].clone();
    let ports = cluster_harness::free_ports(1);
    cfg.listen_addr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    cfg.tls.ca_cert = rogue.path().join("ca.pem");
    cfg.tls.node_cert = rogue.path().join("node3.pem");
    cfg.tls.node_key = rogue.path().join("node3.key");
    cfg.stores[0].device = rogue.path().join("rogue.img");
    let before = c.leader_of(b"k1", T).expect("leader").1;
    let rogue_node = tools::node::Node::start(&cfg).expect("rogue starts");
    std::thread::sleep(Duration::from_secs(2));
    let after = c.leader_of(b"k1", T).expect("leader").1;
    assert_eq!(
        before.term, after.term,
        "the rogue node disturbed the cluster"
    );
    c.put(b"k2", b"v2");
    assert_eq!(c.get(b"k1").as_deref(), Some(&b"v1"[..]));
    rogue_node.stop().expect("rogue stops");
    c.stop_all();
}

#[test]
fn a_store_file_too_small_for_the_state_store_is_refused_and_removed() {
    use std::net::SocketAddr;
    use tools::config::{ClusterMember, Config, NodeConfigBuilder};
    use tools::node::{Node, NodeError};
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    make_certs(&dir.path().join("certs"), 1);
    let addr = SocketAddr::from(([127, 0, 0, 1], cluster_harness::free_ports(1)[0]));
    let text = NodeConfigBuilder::new(1, addr, "node1.img")
        .create_size_bytes(256 << 20) // 3 segments of 64 MiB: all of them the log's
        .members([ClusterMember {
            store_id: 1,
            node_id: None,
            addr,
            bootstrap: true,
        }])
        .to_toml()
        .expect("config text");
    let cfg = Config::from_toml_str(&text, dir.path()).expect("config");
    match Node::start(&cfg) {
        Err(NodeError::StoreFileTooSmall {
            state_segments,
            min_segments,
            min_mib,
            ..
        }) => {
            assert_eq!((state_segments, min_segments), (0, 3));
            assert!((320..=330).contains(&min_mib), "{min_mib} MiB");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a 256 MiB store file was accepted"),
    }
    assert!(
        !dir.path().join("node1.img").exists(),
        "the refused file is removed, so a retry with a larger create-size formats afresh"
    );
}

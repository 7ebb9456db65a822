//! Proves Raft messages cross real QUIC between two nodes on 127.0.0.1: many `send` calls are
//! delivered in order to the store named in each message's `to`, through routers whose channels
//! the test reads; a store whose node does not answer is reported unreachable to the sender;
//! a node that comes up later is reached after the link reconnects. The first test runs one node
//! on a current-thread runtime (one network thread) and the other on a work-stealing one.
#![cfg(feature = "server")]

mod fixture;

use engine::store::{StoreEvent, Transport};
use fixture::*;
use transport::TransportConfig;

#[test]
fn messages_are_delivered_in_order_to_their_store() {
    let pki = pki("cluster", &["a", "b"], &[]);
    // `a` on a current-thread runtime (one network thread), `b` on a work-stealing one.
    let one_thread = TransportConfig {
        runtime_threads: 1,
        ..TransportConfig::default()
    };
    let a = node(&tls(&pki, "a"), one_thread);
    let b = node(&tls(&pki, "b"), TransportConfig::default());
    let (ra, _rx_a) = store(1);
    let (rb2, rx_b2) = store(2);
    let (rb3, rx_b3) = store(3);
    a.register_store(1, ra);
    b.register_store(2, rb2);
    b.register_store(3, rb3);
    for n in [&a, &b] {
        n.add_store(2, b.local_addr().unwrap());
        n.add_store(3, b.local_addr().unwrap());
        n.add_store(1, a.local_addr().unwrap());
    }
    let t = a.transport();
    let count = 500u64;
    for i in 1..=count {
        t.send(2, vec![raft_msg(7, 1, 2, i)]);
        if i % 10 == 0 {
            t.send(3, vec![raft_msg(8, 1, 3, i), raft_msg(8, 1, 3, i + 1)]);
        }
    }
    let got2 = collect_raft(&rx_b2, count as usize);
    let want2: Vec<_> = (1..=count).map(|i| raft_msg(7, 1, 2, i)).collect();
    assert_eq!(got2, want2);
    let got3 = collect_raft(&rx_b3, 2 * count as usize / 10);
    assert!(got3.iter().all(|m| m.to.store_id == 3 && m.region_id == 8));
    assert_eq!(got3[0], raft_msg(8, 1, 3, 10));
    // And back: b's store 2 answers a's store 1 over b's own link.
    let (_, rx_a) = (0, _rx_a);
    b.transport().send(1, vec![raft_msg(7, 2, 1, 42)]);
    assert_eq!(collect_raft(&rx_a, 1), vec![raft_msg(7, 2, 1, 42)]);
    a.shutdown();
    b.shutdown();
}

#[test]
fn unreachable_store_is_reported_then_reached_after_it_starts() {
    let pki = pki("cluster", &["a", "b"], &[]);
    let config = TransportConfig {
        reconnect_delay_min: std::time::Duration::from_millis(20),
        reconnect_delay_max: std::time::Duration::from_millis(100),
        connect_timeout: std::time::Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let a = node(&tls(&pki, "a"), config.clone());
    let (ra, rx_a) = store(1);
    a.register_store(1, ra);
    // Reserve a port, then free it: nothing listens there.
    let b_addr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    a.add_store(2, b_addr);
    a.transport().send(2, vec![raft_msg(7, 1, 2, 1)]);
    loop {
        match rx_a.recv_timeout(HANG_GUARD).expect("unreachable reported") {
            StoreEvent::Unreachable { store_id } => {
                assert_eq!(store_id, 2);
                break;
            }
            _ => continue,
        }
    }
    // Start b on that port; a's link reconnects and later messages arrive.
    let b = transport::NodeTransport::bind(b_addr, &tls(&pki, "b"), config).unwrap();
    let (rb, rx_b) = store(2);
    b.register_store(2, rb);
    let t = a.transport();
    let mut i = 2;
    let got = loop {
        t.send(2, vec![raft_msg(7, 1, 2, i)]);
        if let Ok(StoreEvent::Raft(m)) = rx_b.recv_timeout(std::time::Duration::from_millis(200)) {
            break m;
        }
        i += 1;
        assert!(i < 200, "never reconnected");
    };
    assert_eq!(got[0].to.store_id, 2);
    a.shutdown();
    b.shutdown();
}

#[test]
fn batches_split_under_a_small_frame_cap_and_oversize_messages_are_dropped() {
    let pki = pki("cluster", &["a", "b"], &[]);
    let config = TransportConfig {
        frame_bytes_max: 1024,
        ..TransportConfig::default()
    };
    let a = node(&tls(&pki, "a"), config.clone());
    let b = node(&tls(&pki, "b"), config);
    let (rb, rx_b) = store(2);
    b.register_store(2, rb);
    a.add_store(2, b.local_addr().unwrap());
    let big = |i: u64| {
        let mut m = raft_msg(7, 1, 2, i);
        m.msg.entries[0].data = bytes::Bytes::from(vec![i as u8; 300]);
        m
    };
    let mut too_big = raft_msg(7, 1, 2, 999);
    too_big.msg.entries[0].data = bytes::Bytes::from(vec![0u8; 2000]);
    let mut msgs: Vec<_> = (1..=40).map(big).collect();
    msgs.insert(20, too_big);
    a.transport().send(2, msgs);
    let got = collect_raft(&rx_b, 40);
    let want: Vec<_> = (1..=40).map(big).collect();
    assert_eq!(got, want, "all but the oversize message arrive, in order");
    a.shutdown();
    b.shutdown();
}

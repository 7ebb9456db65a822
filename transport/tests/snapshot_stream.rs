//! Proves snapshot streams over real QUIC: a real `BuiltSnapshot` (chunks cut by the engine's
//! `SnapshotBuilder` from an in-memory region) reaches the receiving store chunk by chunk; when
//! the test's installer refuses a chunk with `ResumeFrom`, the sender rewinds and every chunk
//! ends up accepted in order, byte for byte, and `Installed` is reported to the sending store as
//! ok; a `Rejected` receipt, a dropped install and an unknown store are reported as failures.
#![cfg(feature = "server")]

mod fixture;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Receiver;
use engine::state::snapshot::{SnapshotBuilder, SnapshotSource};
use engine::state::worker::BuiltSnapshot;
use engine::state::RegionState;
use engine::store::{IncomingSnapshot, SnapshotReceipt, StoreEvent, Transport};
use fixture::*;
use transport::{NodeTransport, TransportConfig};

struct MapSource {
    state: RegionState,
    rows: BTreeMap<Bytes, Bytes>,
}

impl SnapshotSource for MapSource {
    fn state(&self) -> &RegionState {
        &self.state
    }
    fn key_count(&self) -> u64 {
        self.rows.len() as u64
    }
    fn read_from(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> engine::error::Result<(Vec<(Bytes, Bytes)>, bool)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let iter = self
            .rows
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_ref() > a));
        let mut rest = iter.peekable();
        while let Some((k, v)) = rest.next() {
            out.push((k.clone(), v.clone()));
            bytes += k.len() + v.len();
            if bytes >= max_bytes {
                return Ok((out, rest.peek().is_none()));
            }
        }
        Ok((out, true))
    }
}

/// A snapshot of region 7 with 60 rows of ~200 bytes, in 1 KiB chunks.
fn built_snapshot() -> Arc<BuiltSnapshot> {
    let mut state = RegionState::new(7, raftlog::ConfState::default());
    state.applied_index = 40;
    state.applied_term = 3;
    let rows = (0..60u32)
        .map(|i| {
            (
                Bytes::from(format!("key{i:04}")),
                Bytes::from(vec![i as u8; 200]),
            )
        })
        .collect();
    let mut b = SnapshotBuilder::new(
        MapSource {
            state: state.clone(),
            rows,
        },
        5,
        1024,
    );
    let mut chunks = Vec::new();
    while let Some(c) = b.next_chunk().unwrap() {
        chunks.push(c);
    }
    let meta = b.meta().unwrap();
    assert!(
        meta.chunk_count >= 8,
        "enough chunks to resume in the middle"
    );
    Arc::new(BuiltSnapshot::from_chunks(meta, state, chunks))
}

struct Pair {
    a: NodeTransport,
    b: NodeTransport,
    rx_a: Receiver<StoreEvent>,
    rx_b: Receiver<StoreEvent>,
    _certs: tempfile::TempDir,
}

fn pair() -> Pair {
    let certs = pki("cluster", &["a", "b"], &[]);
    let a = node(&tls(&certs, "a"), TransportConfig::default());
    let b = node(&tls(&certs, "b"), TransportConfig::default());
    let (ra, rx_a) = store(1);
    let (rb, rx_b) = store(2);
    a.register_store(1, ra);
    b.register_store(2, rb);
    a.add_store(2, b.local_addr().unwrap());
    a.add_store(9, b.local_addr().unwrap());
    Pair {
        a,
        b,
        rx_a,
        rx_b,
        _certs: certs,
    }
}

fn incoming(rx: &Receiver<StoreEvent>) -> IncomingSnapshot {
    loop {
        if let StoreEvent::Snapshot(s) = rx.recv_timeout(HANG_GUARD).expect("snapshot arrives") {
            return *s;
        }
    }
}

/// Waits for the sending store's report; returns `(region, to_peer, ok)`.
fn report(rx: &Receiver<StoreEvent>) -> (u64, u64, bool) {
    loop {
        if let StoreEvent::SnapshotSent {
            region_id,
            to_peer_id,
            ok,
        } = rx
            .recv_timeout(HANG_GUARD)
            .expect("snapshot outcome reported")
        {
            return (region_id, to_peer_id, ok);
        }
    }
}

#[test]
fn chunks_arrive_in_order_and_resume_after_a_refusal() {
    let p = pair();
    let snap = built_snapshot();
    let msg = raft_msg(7, 1, 2, 41);
    p.a.transport()
        .send_snapshot(2, msg.clone(), Arc::clone(&snap));
    let inc = incoming(&p.rx_b);
    assert_eq!(inc.message, msg);
    let count = snap.meta.chunk_count;
    let mut accepted = Vec::new();
    let mut refused_once = false;
    let mut deliveries = 0;
    while accepted.len() < count as usize {
        let data = inc.chunks.recv_timeout(HANG_GUARD).expect("chunk arrives");
        deliveries += 1;
        let expected = accepted.len() as u32;
        if data != snap.chunk(expected).unwrap() || (expected == 3 && !refused_once) {
            refused_once |= expected == 3;
            inc.receipts
                .send(SnapshotReceipt::ResumeFrom {
                    next_chunk_no: expected,
                })
                .unwrap();
            continue;
        }
        accepted.push(data);
    }
    inc.receipts.send(SnapshotReceipt::Installed).unwrap();
    assert!(refused_once);
    assert!(deliveries > count, "chunk 3 came twice");
    for (n, c) in accepted.iter().enumerate() {
        assert_eq!(c, &snap.chunk(n as u32).unwrap());
    }
    assert_eq!(report(&p.rx_a), (7, 20, true));
    p.a.shutdown();
    p.b.shutdown();
}

#[test]
fn rejected_dropped_and_misaddressed_snapshots_report_failure() {
    let p = pair();
    let snap = built_snapshot();
    let t = p.a.transport();
    // Rejected by the store after the first chunk.
    t.send_snapshot(2, raft_msg(7, 1, 2, 41), Arc::clone(&snap));
    let inc = incoming(&p.rx_b);
    inc.chunks.recv_timeout(HANG_GUARD).unwrap();
    inc.receipts
        .send(SnapshotReceipt::Rejected {
            reason: "test".into(),
        })
        .unwrap();
    assert_eq!(report(&p.rx_a), (7, 20, false));
    // Dropped by the store without a receipt.
    t.send_snapshot(2, raft_msg(8, 1, 2, 41), Arc::clone(&snap));
    drop(incoming(&p.rx_b));
    assert_eq!(report(&p.rx_a), (8, 20, false));
    // Addressed to a store the receiving node does not have.
    t.send_snapshot(9, raft_msg(9, 1, 9, 41), Arc::clone(&snap));
    assert_eq!(report(&p.rx_a), (9, 90, false));
    p.a.shutdown();
    p.b.shutdown();
}

#[test]
fn a_slow_installer_holds_the_sender() {
    // Back-pressure: while the installer reads nothing, at most the channel's capacity of chunks
    // is handed to the store, and the stream completes once it reads again.
    let p = pair();
    let snap = built_snapshot();
    p.a.transport()
        .send_snapshot(2, raft_msg(7, 1, 2, 41), Arc::clone(&snap));
    let inc = incoming(&p.rx_b);
    let first = inc.chunks.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(first, snap.chunk(0).unwrap());
    // Wait until the buffer is full; it never holds more than its capacity.
    while inc.chunks.len() < 4 {
        std::thread::yield_now();
    }
    assert_eq!(inc.chunks.capacity(), Some(4));
    for n in 1..snap.meta.chunk_count {
        assert_eq!(
            inc.chunks.recv_timeout(HANG_GUARD).unwrap(),
            snap.chunk(n).unwrap()
        );
    }
    inc.receipts.send(SnapshotReceipt::Installed).unwrap();
    assert_eq!(report(&p.rx_a), (7, 20, true));
    p.a.shutdown();
    p.b.shutdown();
}

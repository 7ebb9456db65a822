//! A cluster of real stores (file-backed devices, io_uring, real threads) joined by an
//! in-process network, for the store layer's tests. The QUIC transport's cluster tests live in
//! `tools/tests/`; this network only moves the same envelopes between routers in memory, and can
//! cut a store off.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded};
use engine::format::{format, FormatOptions};
use engine::state::worker::BuiltSnapshot;
use engine::state::{Command, Op};
use engine::store::{
    AdminRequest, ClientRequest, ClientResponse, Epoch, IncomingSnapshot, Peer, PeerRole,
    RaftMessage, RegionInfo, RegionMeta, RequestError, SnapshotReceipt, Store, StoreOptions,
    StoreRouter, Transport,
};

/// The in-process network: routers by store id; cut-off stores neither send nor receive.
#[derive(Default)]
pub struct LocalNet {
    routers: Mutex<HashMap<u64, StoreRouter>>,
    down: Mutex<HashSet<u64>>,
}

/// One store's view of the network.
pub struct LocalTransport {
    net: Arc<LocalNet>,
    me: u64,
}

impl LocalNet {
    fn router(&self, store: u64) -> Option<StoreRouter> {
        if self.down.lock().unwrap().contains(&store) {
            return None;
        }
        self.routers.lock().unwrap().get(&store).cloned()
    }
}

impl Transport for LocalTransport {
    fn send(&self, to_store: u64, msgs: Vec<RaftMessage>) {
        if self.net.down.lock().unwrap().contains(&self.me) {
            return;
        }
        match self.net.router(to_store) {
            Some(r) => r.deliver(msgs),
            None => {
                if let Some(me) = self.net.router(self.me) {
                    me.report_unreachable(to_store);
                }
            }
        }
    }

    fn send_snapshot(&self, to_store: u64, message: RaftMessage, snapshot: Arc<BuiltSnapshot>) {
        let net = Arc::clone(&self.net);
        let me = self.me;
        std::thread::spawn(move || {
            let region_id = message.region_id;
            let to_peer = message.to.peer_id;
            let ok = stream_snapshot(&net, to_store, message, &snapshot);
            if let Some(r) = net.router(me) {
                r.report_snapshot(region_id, to_peer, ok);
            }
        });
    }
}

fn stream_snapshot(net: &LocalNet, to: u64, message: RaftMessage, snap: &BuiltSnapshot) -> bool {
    let Some(router) = net.router(to) else {
        return false;
    };
    let (tx, rx) = bounded::<Bytes>(4);
    let (rtx, rrx) = unbounded();
    router.deliver_snapshot(IncomingSnapshot {
        message,
        chunks: rx,
        receipts: rtx,
    });
    let mut next = 0u32;
    loop {
        while next < snap.meta.chunk_count {
            let Ok(chunk) = snap.chunk(next) else {
                return false;
            };
            if tx.send_timeout(chunk, Duration::from_secs(10)).is_err() {
                break;
            }
            next += 1;
        }
        match rrx.recv_timeout(Duration::from_secs(30)) {
            Ok(SnapshotReceipt::Installed) => return true,
            Ok(SnapshotReceipt::ResumeFrom { next_chunk_no }) => next = next_chunk_no,
            _ => return false,
        }
    }
}

/// A store's device file and id.
pub struct StoreSlot {
    pub store_id: u64,
    pub path: PathBuf,
    pub store: Option<Store>,
}

/// A cluster of stores on files in a temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub net: Arc<LocalNet>,
    pub slots: Vec<StoreSlot>,
    pub initial: Vec<RegionMeta>,
    client_seq: u64,
}

pub const DEVICE_BYTES: u64 = 96 << 20;

/// Formats a file device for `store_id` (1 MiB segments, so compaction and rings turn over).
pub fn format_file(path: &std::path::Path, store_id: u64) {
    let opts = engine::device::OpenOptions {
        create_size_bytes: Some(DEVICE_BYTES),
        ..Default::default()
    };
    let (mut io, _) = engine::device::open(path, &opts).expect("open device");
    let mut f = FormatOptions::new(path.display().to_string());
    f.store_id = Some(store_id);
    f.cluster_id = Some(7);
    f.segment_size_bytes = 1 << 20;
    format(io.as_mut(), &f).expect("format");
}

/// The regions of a new cluster: `count` regions over the stores, split at one-byte keys.
pub fn initial_regions(stores: &[u64], count: u64) -> Vec<RegionMeta> {
    (1..=count)
        .map(|r| {
            let bound = |i: u64| {
                if i == 0 || i == count {
                    Bytes::new()
                } else {
                    Bytes::from(vec![(256 * i / count) as u8])
                }
            };
            RegionMeta {
                region_id: r,
                start_key: bound(r - 1),
                end_key: bound(r),
                epoch: Epoch {
                    conf_version: 1,
                    version: 1,
                },
                peers: stores
                    .iter()
                    .map(|s| Peer {
                        peer_id: (r << 20) | s,
                        store_id: *s,
                        role: PeerRole::Voter,
                    })
                    .collect(),
            }
        })
        .collect()
}

pub fn options(path: &std::path::Path) -> StoreOptions {
    let mut o = StoreOptions::new(path);
    o.store.tick_interval = Duration::from_millis(20);
    o.store.election_ticks = 10;
    o.store.heartbeat_ticks = 2;
    o.store.hibernate_idle_ticks = 10;
    o.log.cache_bytes_max = 8 << 20;
    o.snapshot.chunk_bytes_max = 64 << 10;
    o
}

impl Cluster {
    /// `n` stores, with `regions` initial regions on the first `members` of them.
    pub fn start(n: u64, members: u64, regions: u64) -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("BASALT_LOG"))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let ids: Vec<u64> = (1..=members).collect();
        let initial = initial_regions(&ids, regions);
        let mut c = Cluster {
            dir,
            net: Arc::new(LocalNet::default()),
            slots: Vec::new(),
            initial,
            client_seq: 0,
        };
        for s in 1..=n {
            let path = c.dir.path().join(format!("store{s}.img"));
            format_file(&path, s);
            c.slots.push(StoreSlot {
                store_id: s,
                path,
                store: None,
            });
        }
        for s in 1..=n {
            c.start_store(s);
        }
        c
    }

    pub fn start_store(&mut self, s: u64) {
        let slot = &self.slots[(s - 1) as usize];
        let t = Arc::new(LocalTransport {
            net: Arc::clone(&self.net),
            me: s,
        });
        let store = Store::open(options(&slot.path), t, &self.initial).expect("open store");
        self.net.routers.lock().unwrap().insert(s, store.router());
        self.net.down.lock().unwrap().remove(&s);
        self.slots[(s - 1) as usize].store = Some(store);
    }

    /// Stops a store cleanly (final checkpoint).
    pub fn stop_store(&mut self, s: u64) {
        self.net.routers.lock().unwrap().remove(&s);
        if let Some(st) = self.slots[(s - 1) as usize].store.take() {
            st.stop().expect("stop");
        }
    }

    /// Kills a store as a crash would (no final checkpoint): it restarts from its last
    /// checkpoint and its log.
    pub fn crash_store(&mut self, s: u64) {
        self.net.routers.lock().unwrap().remove(&s);
        if let Some(st) = self.slots[(s - 1) as usize].store.take() {
            st.crash();
        }
    }

    /// Cuts a store off the network (it keeps running).
    pub fn isolate(&self, s: u64) {
        self.net.down.lock().unwrap().insert(s);
    }

    pub fn heal(&self, s: u64) {
        self.net.down.lock().unwrap().remove(&s);
    }

    pub fn router(&self, s: u64) -> StoreRouter {
        self.slots[(s - 1) as usize]
            .store
            .as_ref()
            .expect("running")
            .router()
    }

    pub fn running(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|s| s.store.is_some() && !self.net.down.lock().unwrap().contains(&s.store_id))
            .map(|s| s.store_id)
            .collect()
    }

    pub fn call(&self, s: u64, req: ClientRequest) -> Result<ClientResponse, RequestError> {
        let (tx, rx) = bounded(1);
        self.router(s).submit(
            req,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or(Err(RequestError::Busy {
                reason: "test timeout".into(),
            }))
    }

    pub fn regions(&self, s: u64) -> Vec<RegionInfo> {
        match self.call(s, ClientRequest::Regions) {
            Ok(ClientResponse::Regions(r)) => r,
            other => panic!("regions: {other:?}"),
        }
    }

    /// The leader of the region holding `key`, waiting up to `timeout` for one.
    pub fn leader_of(&self, key: &[u8], timeout: Duration) -> Option<(u64, RegionInfo)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for s in self.running() {
                for r in self.regions(s) {
                    if r.is_leader && r.meta.contains(key) {
                        return Some((s, r));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Writes through the leader, retrying retryable errors until `timeout`.
    pub fn write(
        &mut self,
        ops: Vec<Op>,
        timeout: Duration,
    ) -> Result<ClientResponse, RequestError> {
        self.client_seq += 1;
        let seq = self.client_seq;
        self.write_as(1, seq, ops, timeout)
    }

    /// Writes `ops` as client `client_id`'s command `sequence`, retrying retryable errors.
    pub fn write_as(
        &mut self,
        client_id: u64,
        sequence: u64,
        ops: Vec<Op>,
        timeout: Duration,
    ) -> Result<ClientResponse, RequestError> {
        let key = match &ops[0] {
            Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key.clone(),
            Op::DeleteRange { start, .. } => start.clone(),
        };
        let cmd = Command {
            client_id,
            sequence,
            ops,
        };
        let deadline = Instant::now() + timeout;
        let mut last = RequestError::Busy {
            reason: "no leader".into(),
        };
        while Instant::now() < deadline {
            let Some((s, r)) = self.leader_of(&key, deadline - Instant::now()) else {
                break;
            };
            match self.call(
                s,
                ClientRequest::Write {
                    region_id: r.meta.region_id,
                    epoch: r.meta.epoch,
                    command: cmd.clone(),
                },
            ) {
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_retryable() => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let r = self.write(
            vec![Op::Put {
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
            }],
            Duration::from_secs(20),
        );
        assert!(r.is_ok(), "put {key:?}: {r:?}");
    }

    /// A linearizable get through the leader.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let Some((s, r)) = self.leader_of(key, deadline - Instant::now()) else {
                break;
            };
            match self.call(
                s,
                ClientRequest::Get {
                    region_id: r.meta.region_id,
                    epoch: r.meta.epoch,
                    key: Bytes::copy_from_slice(key),
                },
            ) {
                Ok(ClientResponse::Value(v)) => return v,
                Err(e) if e.is_retryable() => std::thread::sleep(Duration::from_millis(20)),
                other => panic!("get {key:?}: {other:?}"),
            }
        }
        panic!("get {key:?}: no answer");
    }

    pub fn admin(&self, key: &[u8], request: AdminRequest) -> Result<ClientResponse, RequestError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = RequestError::Busy {
            reason: "no leader".into(),
        };
        while Instant::now() < deadline {
            let Some((s, r)) = self.leader_of(key, deadline - Instant::now()) else {
                break;
            };
            match self.call(
                s,
                ClientRequest::Admin {
                    region_id: r.meta.region_id,
                    epoch: r.meta.epoch,
                    request: request.clone(),
                },
            ) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Waits until every running store with a peer of the region holding `key` has applied up
    /// to the leader's commit index.
    pub fn wait_applied(&self, key: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((_, l)) = self.leader_of(key, Duration::from_secs(1)) {
                let all = l.meta.peers.iter().all(|p| {
                    if !self.running().contains(&p.store_id) {
                        return true;
                    }
                    self.regions(p.store_id).iter().any(|r| {
                        r.meta.region_id == l.meta.region_id && r.applied_index >= l.commit_index
                    })
                });
                if all {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn stop_all(&mut self) {
        for s in 1..=self.slots.len() as u64 {
            self.stop_store(s);
        }
    }
}

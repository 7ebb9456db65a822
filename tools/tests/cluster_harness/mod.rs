//! Real Basalt nodes in one process: each with its own QUIC endpoint on 127.0.0.1, mutual TLS
//! from a generated CA, and a file-backed store; a client over the client protocol.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tools::config::{ClusterMember, Config, NodeConfigBuilder};
use tools::node::Node;
use transport::certs::{write_cert_dir, NodeCertSpec};
use transport::proto::{self, AdminOp, Request, Response, ResponseError, WriteId};
use transport::{ClientConnection, ClientTlsConfig};

pub const T: Duration = Duration::from_secs(30);

/// Free UDP ports on 127.0.0.1 (bound and released; the nodes bind them right after).
pub fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

/// Writes `basalt certs`'s files for `nodes` nodes and an `admin` client into `dir`.
pub fn make_certs(dir: &Path, nodes: usize) {
    let specs: Vec<NodeCertSpec> = (1..=nodes)
        .map(|i| NodeCertSpec {
            name: format!("node{i}"),
            sans: vec!["127.0.0.1".into(), "localhost".into()],
        })
        .collect();
    write_cert_dir(dir, "test-ca", &specs, &["admin".to_string()]).expect("certs");
}

/// The config text of node `i` (1-based) of `n`, the first `bootstrap` of them forming the
/// initial regions. One network thread per node, as `basalt demo` has on a 2-core machine:
/// each store's loop runs on it (`NodeTransport::drive_store`).
pub fn config_text(i: usize, ports: &[u16], bootstrap: usize, tick_ms: u64) -> String {
    config_text_threads(i, ports, bootstrap, tick_ms, 1)
}

/// [`config_text`] with `net_threads` network threads per node; with more than one, each
/// store's loop has a thread of its own.
pub fn config_text_threads(
    i: usize,
    ports: &[u16],
    bootstrap: usize,
    tick_ms: u64,
    net_threads: usize,
) -> String {
    let addr = |j: usize| SocketAddr::from(([127, 0, 0, 1], ports[j - 1]));
    NodeConfigBuilder::new(i as u64, addr(i), format!("node{i}.img"))
        .metrics_addr(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
        .create_size_bytes(512 << 20)
        .members((1..=ports.len()).map(|j| ClusterMember {
            store_id: j as u64,
            node_id: None,
            addr: addr(j),
            bootstrap: j <= bootstrap,
        }))
        .raft_timing(Duration::from_millis(tick_ms), 10, 2)
        .net_threads(net_threads)
        .to_toml()
        .expect("config text")
}

pub struct QuicCluster {
    pub dir: tempfile::TempDir,
    pub cfgs: Vec<Config>,
    pub nodes: Vec<Option<Node>>,
    pub rt: tokio::runtime::Runtime,
    tls: ClientTlsConfig,
    client_id: u64,
    seq: u64,
}

impl QuicCluster {
    pub fn start(n: usize, bootstrap: usize) -> QuicCluster {
        QuicCluster::start_with_net_threads(n, bootstrap, 1)
    }

    /// [`QuicCluster::start`] with `net_threads` network threads per node.
    pub fn start_with_net_threads(n: usize, bootstrap: usize, net_threads: usize) -> QuicCluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("BASALT_LOG"))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        make_certs(&dir.path().join("certs"), n);
        let ports = free_ports(n);
        let cfgs: Vec<Config> = (1..=n)
            .map(|i| {
                let text = config_text_threads(i, &ports, bootstrap, 20, net_threads);
                Config::from_toml_str(&text, dir.path()).expect("config")
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let tls = ClientTlsConfig::from_dir(&dir.path().join("certs"), "admin").expect("tls");
        let mut c = QuicCluster {
            dir,
            cfgs,
            nodes: Vec::new(),
            rt,
            tls,
            client_id: 0x5eed,
            seq: 0,
        };
        for i in 1..=n {
            let node = Node::start(&c.cfgs[i - 1]).expect("node start");
            c.nodes.push(Some(node));
        }
        c
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.cfgs[i - 1].listen_addr
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn running(&self) -> Vec<usize> {
        (1..=self.nodes.len())
            .filter(|i| self.nodes[i - 1].is_some())
            .collect()
    }

    pub fn stop_node(&mut self, i: usize) {
        if let Some(n) = self.nodes[i - 1].take() {
            n.stop().expect("stop");
        }
    }

    /// Stops a node without its final checkpoint: only its durable log survives.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(n) = self.nodes[i - 1].take() {
            n.abort();
        }
    }

    pub fn restart_node(&mut self, i: usize) {
        let node = Node::start(&self.cfgs[i - 1]).expect("node restart");
        self.nodes[i - 1] = Some(node);
    }

    /// One request to node `i` (store 0: any of its stores).
    pub fn call(&self, i: usize, store: u64, req: &Request) -> Result<Response, String> {
        let addr = self.addr(i);
        let tls = self.tls.clone();
        let req = req.clone();
        self.rt.block_on(async move {
            let conn = ClientConnection::connect(addr, &tls)
                .await
                .map_err(|e| e.to_string())?;
            let r = conn
                .call(store, &req, Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string());
            conn.close();
            r
        })
    }

    pub fn status(&self, i: usize) -> Option<proto::StoreStatus> {
        match self.call(i, 0, &Request::Status) {
            Ok(Response::Status(s)) => Some(s),
            _ => None,
        }
    }

    /// The node leading the region that holds `key`.
    pub fn leader_of(&self, key: &[u8], timeout: Duration) -> Option<(usize, proto::RegionStatus)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for i in self.running() {
                if let Some(s) = self.status(i) {
                    for r in s.regions {
                        let inside = key >= r.info.start.as_ref()
                            && (r.info.end.is_empty() || key < r.info.end.as_ref());
                        if r.is_leader && inside {
                            return Some((i, r));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn retry<F>(&self, key: &[u8], mut f: F) -> Result<Response, ResponseError>
    where
        F: FnMut(&proto::RegionStatus) -> Request,
    {
        let deadline = Instant::now() + T;
        let mut last = ResponseError::Unavailable {
            reason: "no leader".into(),
        };
        while Instant::now() < deadline {
            let Some((i, r)) = self.leader_of(key, deadline - Instant::now()) else {
                break;
            };
            let store = r
                .info
                .peers
                .iter()
                .find(|p| p.peer_id == r.peer_id)
                .map(|p| p.store_id)
                .unwrap_or(0);
            match self.call(i, store, &f(&r)) {
                Ok(Response::Error(e)) if e.is_retryable() => {
                    eprintln!("retrying after {e}");
                    last = e
                }
                Ok(Response::Error(e)) => return Err(e),
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    eprintln!("retrying after {e}");
                    last = ResponseError::Unavailable { reason: e };
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(last)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.seq += 1;
        let id = WriteId {
            client_id: self.client_id,
            sequence: self.seq,
        };
        let (k, v) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
        let r = self.retry(key, |r| Request::Put {
            region_id: r.info.region_id,
            epoch: r.info.epoch,
            id,
            key: k.clone(),
            value: v.clone(),
        });
        assert!(matches!(r, Ok(Response::Written(_))), "put {key:?}: {r:?}");
    }

    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let k = Bytes::copy_from_slice(key);
        match self.retry(key, |r| Request::Get {
            region_id: r.info.region_id,
            epoch: r.info.epoch,
            key: k.clone(),
        }) {
            Ok(Response::Value(v)) => v,
            other => panic!("get {key:?}: {other:?}"),
        }
    }

    pub fn admin(&self, key: &[u8], op: AdminOp) -> Result<Response, ResponseError> {
        self.retry(key, |r| Request::Admin {
            region_id: r.info.region_id,
            epoch: r.info.epoch,
            op: op.clone(),
        })
    }

    /// Waits until every running node with a peer of `key`'s region applied the leader's commit.
    pub fn wait_applied(&self, key: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((_, l)) = self.leader_of(key, Duration::from_secs(2)) {
                let all = l.info.peers.iter().all(|p| {
                    let i = p.store_id as usize;
                    if !self.running().contains(&i) {
                        return true;
                    }
                    self.status(i).is_some_and(|s| {
                        s.regions.iter().any(|r| {
                            r.info.region_id == l.info.region_id
                                && r.applied_index >= l.commit_index
                        })
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
        for i in 1..=self.nodes.len() {
            self.stop_node(i);
        }
    }
}

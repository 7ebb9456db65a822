//! Writes a one-store node config file, for programs that set up nodes themselves (the demo,
//! benchmarks, test clusters). The text is the serialized form of the very structs the parser
//! reads, so a key can never be spelled differently here; a key left unset is left out of the
//! file and takes the parser's default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{raw, ClusterMember, ConfigError, ReadMode, TlsConfig, GIB, KIB, MIB, TIB};

/// The network threads [`NodeConfigBuilder::colocated`] gives each of `nodes` nodes sharing this
/// machine: its cores split between them, at least one.
pub fn colocated_net_threads(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1)).max(1)
}

/// The config file of one node with one store; [`NodeConfigBuilder::to_toml`] renders it.
///
/// ```
/// # use tools::config::NodeConfigBuilder;
/// let addr = "127.0.0.1:20160".parse().unwrap();
/// let text = NodeConfigBuilder::new(1, addr, "store1.img")
///     .create_size_bytes(1 << 30)
///     .one_store_per_node(&[addr], true)
///     .to_toml()
///     .unwrap();
/// assert!(text.contains("create-size = \"1GiB\""));
/// ```
#[derive(Debug, Clone)]
pub struct NodeConfigBuilder {
    node_id: u64,
    listen_addr: SocketAddr,
    /// `None`: key left out (default address); `Some(None)`: `"off"`.
    metrics_addr: Option<Option<SocketAddr>>,
    device: PathBuf,
    create_size_bytes: Option<u64>,
    tls: TlsConfig,
    members: Vec<ClusterMember>,
    initial_regions: Option<u32>,
    /// Tick interval, election ticks, heartbeat ticks.
    raft_timing: Option<(Duration, u32, u32)>,
    read_mode: Option<ReadMode>,
    net_threads: Option<usize>,
}

impl NodeConfigBuilder {
    /// Node `node_id` listening on `listen_addr`, holding store `node_id` on `device` (absolute,
    /// or relative to the config file's directory), which must exist unless
    /// [`create_size_bytes`](Self::create_size_bytes) is set. TLS files default to the layout of
    /// `basalt certs`: `certs/ca.pem`, `certs/node{node_id}.pem`, `certs/node{node_id}.key`.
    pub fn new(node_id: u64, listen_addr: SocketAddr, device: impl Into<PathBuf>) -> Self {
        let certs = Path::new("certs");
        NodeConfigBuilder {
            node_id,
            listen_addr,
            metrics_addr: None,
            device: device.into(),
            create_size_bytes: None,
            tls: TlsConfig {
                ca_cert: certs.join("ca.pem"),
                node_cert: certs.join(format!("node{node_id}.pem")),
                node_key: certs.join(format!("node{node_id}.key")),
            },
            members: Vec::new(),
            initial_regions: None,
            raft_timing: None,
            read_mode: None,
            net_threads: None,
        }
    }

    /// `metrics-addr`: `Some` address (port 0 picks a free one), or `None` for `"off"`.
    pub fn metrics_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// `create-size`: `basalt start` creates (or extends) the device file to this size.
    pub fn create_size_bytes(mut self, bytes: u64) -> Self {
        self.create_size_bytes = Some(bytes);
        self
    }

    /// Appends one bootstrapping `initial-cluster` entry per node: store `j` on node `j`
    /// (1-based) at `addrs[j - 1]`; `node-id` is written only when `with_node_ids`.
    pub fn one_store_per_node(self, addrs: &[SocketAddr], with_node_ids: bool) -> Self {
        let members = (1..).zip(addrs).map(|(j, &addr)| ClusterMember {
            store_id: j,
            node_id: with_node_ids.then_some(j),
            addr,
            bootstrap: true,
        });
        self.members(members)
    }

    /// Appends `initial-cluster` entries, in order.
    pub fn members(mut self, members: impl IntoIterator<Item = ClusterMember>) -> Self {
        self.members.extend(members);
        self
    }

    /// `cluster.initial-regions`.
    pub fn initial_regions(mut self, regions: u32) -> Self {
        self.initial_regions = Some(regions);
        self
    }

    /// `raft.tick-interval`, `raft.election-ticks` and `raft.heartbeat-ticks`.
    pub fn raft_timing(
        mut self,
        tick_interval: Duration,
        election_ticks: u32,
        heartbeat_ticks: u32,
    ) -> Self {
        self.raft_timing = Some((tick_interval, election_ticks, heartbeat_ticks));
        self
    }

    /// `raft.read-mode`.
    pub fn read_mode(mut self, mode: ReadMode) -> Self {
        self.read_mode = Some(mode);
        self
    }

    /// `limits.net-threads`.
    pub fn net_threads(mut self, threads: usize) -> Self {
        self.net_threads = Some(threads);
        self
    }

    /// `limits.net-threads` for a node sharing this machine with `nodes - 1` others (the demo,
    /// benchmarks, test clusters): the machine's cores split between the nodes, at least one.
    ///
    /// The default of 2 is for a node with a machine of its own. Three nodes with two network
    /// threads each on two cores hand packets between more threads than there are cores, and
    /// every hand-off is a context switch (about a third of the CPU in a profile of
    /// `cluster_bench latency` at 64 puts in flight). One thread per node, side by side with
    /// two (`cluster_bench latency --net-threads 1|2`, five alternating pairs on a loaded
    /// 2-core machine): linearizable reads 27.3k-40.2k/s against 25.6k-30.0k/s, puts with 64
    /// in flight 18.3k-27.9k/s against 14.6k-25.4k/s.
    pub fn colocated(self, nodes: usize) -> Self {
        self.net_threads(colocated_net_threads(nodes))
    }

    /// The TOML text. Refuses a path that is not UTF-8 (TOML strings are) and an integer TOML
    /// cannot hold; values are not validated here: [`super::Config::load`] does that.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let file = self.to_raw()?;
        toml::to_string(&file).map_err(|e| ConfigError::Render {
            message: e.to_string(),
        })
    }

    /// `[tls]` files other than the default layout.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    fn to_raw(&self) -> Result<raw::File, ConfigError> {
        Ok(raw::File {
            node_id: self.node_id,
            listen_addr: Some(self.listen_addr.to_string()),
            metrics_addr: self
                .metrics_addr
                .map(|a| a.map_or_else(|| "off".to_string(), |a| a.to_string())),
            stores: vec![raw::Store {
                store_id: self.node_id,
                device: path_text("stores[0].device", &self.device)?,
                create_size: self
                    .create_size_bytes
                    .map(|b| raw::Size::Text(size_text(b))),
                backend: None,
            }],
            tls: raw::Tls {
                ca_cert: path_text("tls.ca-cert", &self.tls.ca_cert)?,
                node_cert: path_text("tls.node-cert", &self.tls.node_cert)?,
                node_key: path_text("tls.node-key", &self.tls.node_key)?,
            },
            cluster: raw::Cluster {
                initial_cluster: self.members.iter().map(member).collect(),
                initial_regions: self.initial_regions.map(i64::from),
            },
            raft: self.raft(),
            limits: self.net_threads.map(|n| raw::Limits {
                net_threads: Some(i64::try_from(n).unwrap_or(i64::MAX)),
                ..raw::Limits::default()
            }),
        })
    }

    fn raft(&self) -> Option<raw::Raft> {
        if self.raft_timing.is_none() && self.read_mode.is_none() {
            return None;
        }
        let timing = self.raft_timing;
        Some(raw::Raft {
            tick_interval: timing.map(|t| humantime::format_duration(t.0).to_string()),
            election_ticks: timing.map(|t| i64::from(t.1)),
            heartbeat_ticks: timing.map(|t| i64::from(t.2)),
            read_mode: self.read_mode,
            hibernate: None,
        })
    }
}

fn member(m: &ClusterMember) -> raw::Member {
    raw::Member {
        store_id: m.store_id,
        node_id: m.node_id,
        addr: m.addr.to_string(),
        bootstrap: (!m.bootstrap).then_some(false),
    }
}

fn path_text(key: &str, path: &Path) -> Result<String, ConfigError> {
    match path.to_str() {
        Some(s) => Ok(s.to_string()),
        None => Err(super::invalid(
            key,
            path.display(),
            "not valid UTF-8 (TOML strings are)",
        )),
    }
}

/// `bytes` in the largest binary unit that divides it exactly (`"1GiB"`, `"1536MiB"`, `"7"`).
fn size_text(bytes: u64) -> String {
    let units = [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    match units.iter().find(|(u, _)| bytes != 0 && bytes % u == 0) {
        Some((u, name)) => format!("{}{name}", bytes / u),
        None => bytes.to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! The builder against the parser `basalt start` uses (`Config::load`): every option
    //! rendered, written to a file, loaded back and compared field by field; and a bare builder
    //! loads with the parser's defaults.
    use super::*;
    use crate::config::{Config, LimitsConfig, RaftConfig};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn load(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).expect("write");
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (dir, cfg)
    }

    fn member(store_id: u64, node_id: Option<u64>, bootstrap: bool) -> ClusterMember {
        let port = 7000 + store_id as u16;
        ClusterMember {
            store_id,
            node_id,
            addr: addr(port),
            bootstrap,
        }
    }

    #[test]
    fn every_option_loads_back_with_the_parser() {
        let tls = TlsConfig {
            ca_cert: "/etc/basalt/my \"ca\".pem".into(),
            node_cert: "certs dir/n\\2.pem".into(),
            node_key: "k'ey.pem".into(),
        };
        let members = [member(1, None, true), member(2, Some(2), true)];
        let text = NodeConfigBuilder::new(2, addr(7002), "dev \"s\" 2.img")
            .metrics_addr(Some(addr(0)))
            .create_size_bytes(1536 * MIB)
            .tls(tls)
            .members(members)
            .members([member(3, Some(3), false)])
            .initial_regions(4)
            .raft_timing(Duration::from_millis(1500), 12, 3)
            .read_mode(ReadMode::Lease)
            .net_threads(5)
            .to_toml()
            .expect("render");
        let (dir, cfg) = load(&text);
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.listen_addr, addr(7002));
        assert_eq!(cfg.metrics_addr, Some(addr(0)));
        assert_eq!(cfg.stores.len(), 1);
        let store = &cfg.stores[0];
        assert_eq!(store.store_id, 2);
        assert_eq!(store.device, dir.path().join("dev \"s\" 2.img"));
        assert_eq!(store.create_size_bytes, Some(1536 * MIB));
        assert_eq!(store.backend, engine::device::Backend::Auto);
        assert_eq!(cfg.tls.ca_cert, Path::new("/etc/basalt/my \"ca\".pem"));
        assert_eq!(cfg.tls.node_cert, dir.path().join("certs dir/n\\2.pem"));
        assert_eq!(cfg.tls.node_key, dir.path().join("k'ey.pem"));
        let expected = vec![
            member(1, None, true),
            member(2, Some(2), true),
            member(3, Some(3), false),
        ];
        assert_eq!(cfg.cluster.initial_cluster, expected);
        assert_eq!(cfg.cluster.initial_regions, 4);
        let raft = RaftConfig {
            tick_interval: Duration::from_millis(1500),
            election_ticks: 12,
            heartbeat_ticks: 3,
            read_mode: ReadMode::Lease,
            ..RaftConfig::default()
        };
        assert_eq!(cfg.raft, raft);
        let limits = LimitsConfig {
            net_threads: 5,
            ..LimitsConfig::default()
        };
        assert_eq!(cfg.limits, limits);
    }

    #[test]
    fn unset_options_take_the_parser_defaults() {
        let text = NodeConfigBuilder::new(1, addr(7001), "store1.img")
            .one_store_per_node(&[addr(7001), addr(7002)], false)
            .to_toml()
            .expect("render");
        for key in [
            "metrics-addr",
            "create-size",
            "bootstrap",
            "[raft]",
            "[limits]",
        ] {
            assert!(!text.contains(key), "{key} written:\n{text}");
        }
        let (dir, cfg) = load(&text);
        assert_eq!(cfg.metrics_addr, Some(addr(20180)));
        assert_eq!(cfg.stores[0].store_id, 1);
        assert_eq!(cfg.stores[0].create_size_bytes, None);
        assert_eq!(cfg.tls.ca_cert, dir.path().join("certs/ca.pem"));
        assert_eq!(cfg.tls.node_cert, dir.path().join("certs/node1.pem"));
        assert_eq!(cfg.tls.node_key, dir.path().join("certs/node1.key"));
        let members = vec![member(1, None, true), member(2, None, true)];
        assert_eq!(cfg.cluster.initial_cluster, members);
        assert_eq!(cfg.cluster.initial_regions, 1);
        assert_eq!(cfg.raft, RaftConfig::default());
        assert_eq!(cfg.limits, LimitsConfig::default());
        let off = NodeConfigBuilder::new(1, addr(7001), "store1.img")
            .metrics_addr(None)
            .members([member(1, Some(1), true)]);
        let (_dir, cfg) = load(&off.to_toml().expect("render"));
        assert_eq!(cfg.metrics_addr, None);
    }

    #[test]
    fn sizes_use_the_largest_exact_unit() {
        assert_eq!(size_text(GIB), "1GiB");
        assert_eq!(size_text(1536 * MIB), "1536MiB");
        assert_eq!(size_text(4 * KIB + 1), "4097");
        assert_eq!(size_text(0), "0");
    }
}

//! The `basalt start` configuration file: TOML with kebab-case keys, read once, typed and
//! validated at load. A bad value is refused with an error naming its key; nothing is clamped or
//! rewritten behind a warning. `deploy/basalt.example.toml` shows every key with its default.
//!
//! Relative paths (`stores[].device`, the `[tls]` files) are taken relative to the directory of
//! the config file, so a cluster directory can be moved as a whole.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod builder;

pub use builder::{colocated_net_threads, NodeConfigBuilder};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// Default QUIC address (Raft and clients): 20160, the port TiKV operators already open for a
/// Raft KV store's peer traffic; loopback so an unconfigured node is not exposed.
pub const LISTEN_ADDR_DEFAULT: &str = "127.0.0.1:20160";
/// Default `/metrics` address: 20180, next to the QUIC port; loopback so metrics are not public
/// unless the operator says so.
pub const METRICS_ADDR_DEFAULT: &str = "127.0.0.1:20180";

/// Why a configuration was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML parser refused the text: a syntax error, a value of the wrong type, an unknown or a
    /// missing key. `key` is the dotted key at the error's position, best effort.
    #[error("config key `{key}`: {message}")]
    Parse {
        /// The key (`raft.tick-interval`), or the table for a missing key.
        key: String,
        /// The parser's message with line and column.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("config key `{key}` = {value}: {reason}")]
    Invalid {
        /// The key (`stores[1].store-id`, `raft.election-ticks`).
        key: String,
        /// The value as written (or computed, for cross-key checks).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`NodeConfigBuilder`] could not write a value as TOML (an integer above `i64::MAX`).
    #[error("cannot write the config as TOML: {message}")]
    Render {
        /// The TOML writer's message.
        message: String,
    },
}

impl ConfigError {
    /// The key the error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } | ConfigError::Render { .. } => None,
            ConfigError::Parse { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
        }
    }
}

fn invalid(key: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `node-id`: this node's id, non-zero. Required: there is no safe default for an identity.
    pub node_id: u64,
    /// `listen-addr`: QUIC address for Raft and clients. Default [`LISTEN_ADDR_DEFAULT`].
    pub listen_addr: SocketAddr,
    /// `metrics-addr`: HTTP address of `/metrics`; `"off"` disables it. Default
    /// [`METRICS_ADDR_DEFAULT`]: metrics are cheap and an operator expects them.
    pub metrics_addr: Option<SocketAddr>,
    /// `[[stores]]`: one store per device, at least one.
    pub stores: Vec<StoreConfig>,
    /// `[tls]`: required, mutual TLS is always on.
    pub tls: TlsConfig,
    /// `[cluster]`: required.
    pub cluster: ClusterConfig,
    /// `[raft]`: all keys have defaults.
    pub raft: RaftConfig,
    /// `[limits]`: all keys have defaults.
    pub limits: LimitsConfig,
}

/// One `[[stores]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// `store-id`: non-zero, unique in the cluster. Required.
    pub store_id: u64,
    /// `device`: a block device or a regular file (absolute, or relative to the config file).
    pub device: PathBuf,
    /// `create-size` (`"4GiB"` or a byte count): regular files only, create/extend to this size
    /// (never shrinks). Default none: the file must exist, so a typo never creates a new store.
    pub create_size_bytes: Option<u64>,
    /// `backend`: `auto` | `uring` | `sync`. Default `auto`: io_uring where the kernel allows it.
    pub backend: engine::device::Backend,
}

/// `[tls]`: PEM files, relative to the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `ca-cert`: the cluster CA every peer and client certificate must chain to.
    pub ca_cert: PathBuf,
    /// `node-cert`: this node's certificate.
    pub node_cert: PathBuf,
    /// `node-key`: this node's private key.
    pub node_key: PathBuf,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `initial-cluster`: every store of the cluster at bootstrap with its node's QUIC address.
    /// Every local store must be listed. Only read when the stores are new.
    pub initial_cluster: Vec<ClusterMember>,
    /// `initial-regions`: regions to bootstrap, 1..=256. Default 1: split later where load is.
    /// N > 1 pre-splits the key space at the one-byte keys `floor(i * 256 / N)` for `i` in
    /// `1..N` (see [`ClusterConfig::initial_split_keys`]), even for uniformly random keys.
    pub initial_regions: u32,
}

/// One `initial-cluster` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// `store-id`.
    pub store_id: u64,
    /// `node-id`, optional: when given it is checked against the node hosting the store.
    pub node_id: Option<u64>,
    /// `addr`: the QUIC address of the node hosting the store (`IP:port`; host names are not
    /// resolved, so membership never depends on the resolver at start-up).
    pub addr: SocketAddr,
    /// `bootstrap`, default true: the store holds a peer of every initial region. False for a
    /// store that joins later (`basalt-ctl add-peer`): it is listed only so every node knows
    /// its address.
    pub bootstrap: bool,
}

impl ClusterConfig {
    /// The `initial_regions - 1` split keys, each one byte, strictly increasing.
    pub fn initial_split_keys(&self) -> Vec<Vec<u8>> {
        let n = u64::from(self.initial_regions);
        (1..n).map(|i| vec![(i * 256 / n) as u8]).collect()
    }
}

/// How linearizable reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// ReadIndex: one heartbeat round per read batch; safe with any clock.
    ReadIndex,
    /// Leader lease: no round trip, relies on bounded clock drift within an election timeout.
    Lease,
}

/// `[raft]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// `tick-interval` (humantime, `"100ms"`). Default 100 ms: fast failover without waking
    /// 10,000 regions too often (idle ones hibernate anyway).
    pub tick_interval: Duration,
    /// `election-ticks`. Default 10: one second at 100 ms, the election timeout etcd operators
    /// know. Must exceed `heartbeat-ticks`.
    pub election_ticks: u32,
    /// `heartbeat-ticks`. Default 2: 200 ms, five heartbeats per election timeout so one or two
    /// lost heartbeats never cause an election.
    pub heartbeat_ticks: u32,
    /// `read-mode`: `read-index` | `lease`. Default `read-index`: correct without clock
    /// assumptions.
    pub read_mode: ReadMode,
    /// `hibernate`. Default true: idle regions stop ticking so a store with many regions idles
    /// cheaply.
    pub hibernate: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `frame-bytes-max`: largest transport frame accepted; a peer sending more is cut off.
    /// 64 KiB..=4 GiB - 1 (the frame length is 32 bits). Default 16 MiB: several full 1 MiB
    /// append messages batched, small enough to bound a connection's buffer.
    pub frame_bytes_max: u64,
    /// `request-queue-max`: client requests queued per store before `Busy` is answered. Default
    /// 4096: seconds of work at typical rates, a few MiB of memory.
    pub request_queue_max: usize,
    /// `snapshot-chunk-bytes`: snapshot chunk size. Default 1 MiB: big enough to stream at disk
    /// speed, small enough to resume cheaply. At least the engine's chunk minimum and at most
    /// `frame-bytes-max - 4 KiB` (the frame and chunk headers must fit).
    pub snapshot_chunk_bytes: u64,
    /// `net-threads`: threads of the node's network runtime (QUIC, client requests). 1..=64.
    /// Default 2. Nodes sharing a small machine (the demo, a local test cluster) do better with
    /// 1: fewer threads to wake per message, less time switching between them. With 1, each
    /// store's raft loop runs on that thread as well (`NodeTransport::drive_store`); with more,
    /// each store's loop has a thread of its own.
    pub net_threads: usize,
}

/// Room kept in a frame beside one snapshot chunk.
const FRAME_OVERHEAD_BYTES: u64 = 4 * KIB;

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            read_mode: ReadMode::ReadIndex,
            hibernate: true,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            frame_bytes_max: 16 * MIB,
            request_queue_max: 4096,
            snapshot_chunk_bytes: MIB,
            net_threads: 2,
        }
    }
}

mod raw {
    //! The file as written: strings for values we parse ourselves (so errors name the key).
    //! `Serialize` lets [`super::NodeConfigBuilder`] write the same keys; `None` is left out.
    use serde::{Deserialize, Serialize};

    /// A size: a byte count or a string with a binary unit.
    #[derive(Debug, Deserialize, Serialize)]
    #[serde(untagged)]
    pub enum Size {
        Bytes(u64),
        Text(String),
    }

    #[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum Backend {
        #[default]
        Auto,
        Uring,
        Sync,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct File {
        pub node_id: u64,
        pub listen_addr: Option<String>,
        pub metrics_addr: Option<String>,
        pub stores: Vec<Store>,
        pub tls: Tls,
        pub cluster: Cluster,
        pub raft: Option<Raft>,
        pub limits: Option<Limits>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct Store {
        pub store_id: u64,
        pub device: String,
        pub create_size: Option<Size>,
        pub backend: Option<Backend>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct Tls {
        pub ca_cert: String,
        pub node_cert: String,
        pub node_key: String,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct Cluster {
        pub initial_cluster: Vec<Member>,
        pub initial_regions: Option<i64>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct Member {
        pub store_id: u64,
        pub node_id: Option<u64>,
        pub addr: String,
        pub bootstrap: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct Raft {
        pub tick_interval: Option<String>,
        pub election_ticks: Option<i64>,
        pub heartbeat_ticks: Option<i64>,
        pub read_mode: Option<super::ReadMode>,
        pub hibernate: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub struct Limits {
        pub frame_bytes_max: Option<Size>,
        pub request_queue_max: Option<i64>,
        pub snapshot_chunk_bytes: Option<Size>,
        pub net_threads: Option<i64>,
    }
}

impl Config {
    /// Reads and validates the file at `path`; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Config::from_toml_str(&text, base_dir)
    }

    /// Parses and validates `text`; relative paths are resolved against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let file: raw::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            key: e.span().map(|s| key_at(text, s.start)).unwrap_or_default(),
            message: e.to_string(),
        })?;
        if file.node_id == 0 {
            return Err(invalid("node-id", 0, "must be non-zero"));
        }
        let listen_addr = parse_addr(
            "listen-addr",
            file.listen_addr.as_deref().unwrap_or(LISTEN_ADDR_DEFAULT),
        )?;
        let metrics_addr = match file.metrics_addr.as_deref() {
            Some("off") => None,
            other => Some(parse_addr(
                "metrics-addr",
                other.unwrap_or(METRICS_ADDR_DEFAULT),
            )?),
        };
        let stores = stores(file.stores, base_dir)?;
        let tls = TlsConfig {
            ca_cert: resolve(base_dir, "tls.ca-cert", &file.tls.ca_cert)?,
            node_cert: resolve(base_dir, "tls.node-cert", &file.tls.node_cert)?,
            node_key: resolve(base_dir, "tls.node-key", &file.tls.node_key)?,
        };
        let cluster = cluster(file.cluster)?;
        check_membership(file.node_id, &stores, &cluster)?;
        Ok(Config {
            node_id: file.node_id,
            listen_addr,
            metrics_addr,
            stores,
            tls,
            cluster,
            raft: raft(file.raft.unwrap_or_default())?,
            limits: limits(file.limits.unwrap_or_default())?,
        })
    }
}

/// The dotted key of the TOML line holding byte `offset`, prefixed with the table header above
/// it (`raft.tick-interval`, `stores.device`); the header alone for a header line.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let header = |l: &str| {
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    };
    if let Some(h) = header(line) {
        return h;
    }
    let key = line.split('=').next().unwrap_or("").trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| header(l.trim()));
    match table {
        Some(t) if !key.is_empty() => format!("{t}.{key}"),
        Some(t) => t,
        None => key.to_string(),
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e| {
        invalid(
            key,
            format!("{value:?}"),
            format!("not an IP:port address ({e})"),
        )
    })
}

fn resolve(base_dir: &Path, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(invalid(key, "\"\"", "must not be empty"));
    }
    let p = Path::new(value);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    })
}

/// Parses `"4GiB"`, `"512 MiB"`, `"1048576"`, `"16B"` (binary units only: `KB`/`GB` are
/// ambiguous and refused).
fn parse_size(key: &str, value: raw::Size) -> Result<u64, ConfigError> {
    let text = match value {
        raw::Size::Bytes(n) => return Ok(n),
        raw::Size::Text(t) => t,
    };
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let bad = |reason: &str| invalid(key, format!("{text:?}"), reason);
    let n: u64 = num
        .parse()
        .map_err(|_| bad("expected a size like \"4GiB\""))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "TiB" => TIB,
        _ => return Err(bad("unit must be one of B, KiB, MiB, GiB, TiB")),
    };
    n.checked_mul(mult).ok_or_else(|| bad("too large"))
}

fn positive(key: &str, v: i64, max: u64) -> Result<u64, ConfigError> {
    match u64::try_from(v) {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ => Err(invalid(key, v, format!("must be in 1..={max}"))),
    }
}

fn stores(raw: Vec<raw::Store>, base_dir: &Path) -> Result<Vec<StoreConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("stores", "[]", "at least one store is required"));
    }
    let mut ids = HashSet::new();
    let mut devices = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("stores[{i}].{k}");
        if s.store_id == 0 {
            return Err(invalid(key("store-id"), 0, "must be non-zero"));
        }
        if !ids.insert(s.store_id) {
            return Err(invalid(key("store-id"), s.store_id, "duplicate store id"));
        }
        let device = resolve(base_dir, &key("device"), &s.device)?;
        if !devices.insert(device.clone()) {
            return Err(invalid(
                key("device"),
                device.display(),
                "device used twice",
            ));
        }
        let create_size_bytes = s
            .create_size
            .map(|v| parse_size(&key("create-size"), v))
            .transpose()?;
        if create_size_bytes == Some(0) {
            return Err(invalid(key("create-size"), 0, "must be positive"));
        }
        let backend = match s.backend.unwrap_or_default() {
            raw::Backend::Auto => engine::device::Backend::Auto,
            raw::Backend::Uring => engine::device::Backend::Uring,
            raw::Backend::Sync => engine::device::Backend::Sync,
        };
        out.push(StoreConfig {
            store_id: s.store_id,
            device,
            create_size_bytes,
            backend,
        });
    }
    Ok(out)
}

fn cluster(raw: raw::Cluster) -> Result<ClusterConfig, ConfigError> {
    let key = "cluster.initial-cluster";
    if raw.initial_cluster.is_empty() {
        return Err(invalid(key, "[]", "lists no store"));
    }
    let mut ids = HashSet::new();
    let mut members = Vec::with_capacity(raw.initial_cluster.len());
    for (i, m) in raw.initial_cluster.into_iter().enumerate() {
        if m.store_id == 0 || !ids.insert(m.store_id) {
            return Err(invalid(
                format!("{key}[{i}].store-id"),
                m.store_id,
                "must be non-zero and unique",
            ));
        }
        if m.node_id == Some(0) {
            return Err(invalid(
                format!("{key}[{i}].node-id"),
                0,
                "must be non-zero",
            ));
        }
        members.push(ClusterMember {
            store_id: m.store_id,
            node_id: m.node_id,
            addr: parse_addr(&format!("{key}[{i}].addr"), &m.addr)?,
            bootstrap: m.bootstrap.unwrap_or(true),
        });
    }
    check_addr_owners(&members)?;
    let initial_regions = match raw.initial_regions {
        None => 1,
        Some(v) => positive("cluster.initial-regions", v, 256)? as u32,
    };
    Ok(ClusterConfig {
        initial_cluster: members,
        initial_regions,
    })
}

/// Members at one address are one node: their stated node ids must agree.
fn check_addr_owners(members: &[ClusterMember]) -> Result<(), ConfigError> {
    let mut owner: HashMap<SocketAddr, u64> = HashMap::new();
    for (i, m) in members.iter().enumerate() {
        let Some(node) = m.node_id else { continue };
        if let Some(&other) = owner.get(&m.addr) {
            if other != node {
                return Err(invalid(
                    format!("cluster.initial-cluster[{i}].node-id"),
                    node,
                    format!("address {} already belongs to node {other}", m.addr),
                ));
            }
        }
        owner.insert(m.addr, node);
    }
    Ok(())
}

/// Local stores are all in `initial-cluster`, at one address, under this node's id; and every
/// member naming this node is a local store.
fn check_membership(
    node_id: u64,
    stores: &[StoreConfig],
    cluster: &ClusterConfig,
) -> Result<(), ConfigError> {
    let key = "cluster.initial-cluster";
    let mut local_addr: Option<SocketAddr> = None;
    for (i, s) in stores.iter().enumerate() {
        let found = cluster
            .initial_cluster
            .iter()
            .enumerate()
            .find(|(_, m)| m.store_id == s.store_id);
        let Some((j, m)) = found else {
            return Err(invalid(
                format!("stores[{i}].store-id"),
                s.store_id,
                format!("missing from {key}"),
            ));
        };
        if let Some(other) = m.node_id.filter(|&n| n != node_id) {
            return Err(invalid(
                format!("{key}[{j}].node-id"),
                other,
                format!("store {} is local to node {node_id}", s.store_id),
            ));
        }
        if local_addr.is_some_and(|a| a != m.addr) {
            return Err(invalid(
                format!("{key}[{j}].addr"),
                m.addr,
                format!("stores of node {node_id} listed at two addresses"),
            ));
        }
        local_addr = Some(m.addr);
    }
    for (j, m) in cluster.initial_cluster.iter().enumerate() {
        let local = stores.iter().any(|s| s.store_id == m.store_id);
        if m.node_id == Some(node_id) && !local {
            return Err(invalid(
                format!("{key}[{j}].store-id"),
                m.store_id,
                "listed under this node but not in [[stores]]",
            ));
        }
        if !local && Some(m.addr) == local_addr {
            return Err(invalid(
                format!("{key}[{j}].store-id"),
                m.store_id,
                "at this node's address but not in [[stores]]",
            ));
        }
    }
    Ok(())
}

fn raft(raw: raw::Raft) -> Result<RaftConfig, ConfigError> {
    let d = RaftConfig::default();
    let tick_interval = match raw.tick_interval {
        None => d.tick_interval,
        Some(t) => humantime::parse_duration(&t).map_err(|e| {
            invalid(
                "raft.tick-interval",
                format!("{t:?}"),
                format!("not a duration ({e})"),
            )
        })?,
    };
    if tick_interval.is_zero() {
        return Err(invalid("raft.tick-interval", "0", "must be positive"));
    }
    let ticks = |key: &str, v: Option<i64>, default: u32| match v {
        None => Ok(default),
        Some(v) => positive(key, v, u64::from(u32::MAX)).map(|n| n as u32),
    };
    let election_ticks = ticks("raft.election-ticks", raw.election_ticks, d.election_ticks)?;
    let heartbeat_ticks = ticks(
        "raft.heartbeat-ticks",
        raw.heartbeat_ticks,
        d.heartbeat_ticks,
    )?;
    if election_ticks <= heartbeat_ticks {
        return Err(invalid(
            "raft.election-ticks",
            election_ticks,
            format!("must exceed raft.heartbeat-ticks ({heartbeat_ticks})"),
        ));
    }
    Ok(RaftConfig {
        tick_interval,
        election_ticks,
        heartbeat_ticks,
        read_mode: raw.read_mode.unwrap_or(d.read_mode),
        hibernate: raw.hibernate.unwrap_or(d.hibernate),
    })
}

fn limits(raw: raw::Limits) -> Result<LimitsConfig, ConfigError> {
    let d = LimitsConfig::default();
    let frame_bytes_max = match raw.frame_bytes_max {
        None => d.frame_bytes_max,
        Some(v) => parse_size("limits.frame-bytes-max", v)?,
    };
    if !(64 * KIB..=u64::from(u32::MAX)).contains(&frame_bytes_max) {
        return Err(invalid(
            "limits.frame-bytes-max",
            frame_bytes_max,
            "must be in 64KiB..=4GiB-1 (frame lengths are 32 bits)",
        ));
    }
    let request_queue_max = match raw.request_queue_max {
        None => d.request_queue_max,
        Some(v) => positive("limits.request-queue-max", v, 1 << 24)? as usize,
    };
    let snapshot_chunk_bytes = match raw.snapshot_chunk_bytes {
        None => d.snapshot_chunk_bytes,
        Some(v) => parse_size("limits.snapshot-chunk-bytes", v)?,
    };
    let chunk_min = engine::state::snapshot::CHUNK_BYTES_MIN as u64;
    let chunk_max = frame_bytes_max - FRAME_OVERHEAD_BYTES;
    if !(chunk_min..=chunk_max).contains(&snapshot_chunk_bytes) {
        return Err(invalid(
            "limits.snapshot-chunk-bytes",
            snapshot_chunk_bytes,
            format!("must be in {chunk_min}..={chunk_max} (frame-bytes-max minus 4 KiB)"),
        ));
    }
    let net_threads = match raw.net_threads {
        None => d.net_threads,
        Some(v) => positive("limits.net-threads", v, 64)? as usize,
    };
    Ok(LimitsConfig {
        frame_bytes_max,
        request_queue_max,
        snapshot_chunk_bytes,
        net_threads,
    })
}

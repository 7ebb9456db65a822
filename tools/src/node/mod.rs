//! The Basalt node: one QUIC endpoint, one store per device, the client service and the
//! metrics endpoint, assembled from a [`Config`]. `basalt start` runs one; the in-process
//! cluster tests run several.

mod service;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use engine::device::OpenOptions;
use engine::format::{format, FormatOptions};
use engine::metrics::{render_prometheus_all, StoreMetrics};
use engine::store::{initial_regions, ReadMode, RegionMeta, Store, StoreOptions};
use tracing::info;
use transport::{NodeTransport, TlsConfig, TransportConfig};

use crate::config::{self, Config};
use crate::metrics_http::MetricsServer;
pub use service::{response_error, NodeService};

/// Why a node could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport (TLS files, binding the address).
    #[error("transport: {0}")]
    Transport(#[from] transport::TransportError),
    /// A store (device, format, recovery).
    #[error("store {store_id} ({device}): {source}")]
    Store {
        /// The store.
        store_id: u64,
        /// Its device.
        device: String,
        /// What failed.
        source: engine::error::EngineError,
    },
    /// The device holds a different store than the config says.
    #[error("{device}: holds store {found}, but the config says store {expected}")]
    WrongStore {
        /// The device.
        device: String,
        /// The config's store id.
        expected: u64,
        /// The superblock's.
        found: u64,
    },
    /// A store file created at `create-size` would leave the state store too few segments.
    #[error(
        "{device}: create-size {size_bytes} bytes leaves the state store {state_segments} \
         segments, it needs at least {min_segments}; use at least {min_mib} MiB"
    )]
    StoreFileTooSmall {
        /// The device file (removed again).
        device: String,
        /// The `create-size` asked for.
        size_bytes: u64,
        /// Segments the state store got.
        state_segments: u32,
        /// Segments it needs.
        min_segments: u32,
        /// The smallest `create-size` that works with the same segment size, in MiB.
        min_mib: u64,
    },
    /// The metrics endpoint.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// A running node. [`Node::stop`] stops it cleanly (each store writes a final checkpoint).
pub struct Node {
    node_id: u64,
    transport: Option<NodeTransport>,
    stores: Vec<Store>,
    metrics: Option<MetricsServer>,
}

/// The regions a new cluster bootstraps with, from the config.
pub fn bootstrap_regions(cfg: &Config) -> Vec<RegionMeta> {
    let stores: Vec<u64> = cfg
        .cluster
        .initial_cluster
        .iter()
        .filter(|m| m.bootstrap)
        .map(|m| m.store_id)
        .collect();
    let keys: Vec<Bytes> = cfg
        .cluster
        .initial_split_keys()
        .into_iter()
        .map(Bytes::from)
        .collect();
    initial_regions(&stores, &keys)
}

fn store_options(cfg: &Config, s: &config::StoreConfig) -> StoreOptions {
    let mut o = StoreOptions::new(&s.device);
    o.open.backend = s.backend;
    o.store.tick_interval = cfg.raft.tick_interval;
    o.store.election_ticks = cfg.raft.election_ticks as usize;
    o.store.heartbeat_ticks = cfg.raft.heartbeat_ticks as usize;
    o.store.read_mode = match cfg.raft.read_mode {
        config::ReadMode::ReadIndex => ReadMode::ReadIndex,
        config::ReadMode::Lease => ReadMode::Lease,
    };
    o.store.hibernate = cfg.raft.hibernate;
    o.store.pending_requests_max = cfg.limits.request_queue_max;
    o.snapshot.chunk_bytes_max = cfg.limits.snapshot_chunk_bytes as usize;
    o
}

/// Creates and formats a file device that does not exist yet (`create-size` set).
fn prepare_device(s: &config::StoreConfig, cluster_id: u128) -> Result<(), NodeError> {
    let Some(size) = s.create_size_bytes else {
        return Ok(());
    };
    if s.device.exists() {
        return Ok(());
    }
    let err = |source| NodeError::Store {
        store_id: s.store_id,
        device: s.device.display().to_string(),
        source,
    };
    let opts = OpenOptions {
        create_size_bytes: Some(size),
        backend: s.backend,
        ..OpenOptions::default()
    };
    let (mut io, _) = engine::device::open(&s.device, &opts).map_err(|e| err(e.into()))?;
    let mut f = FormatOptions::new(s.device.display().to_string());
    f.store_id = Some(s.store_id);
    f.cluster_id = Some(cluster_id);
    let sb = format(io.as_mut(), &f).map_err(err)?;
    check_state_room(s, size, &sb)?;
    info!(store_id = s.store_id, device = %s.device.display(), size, "created and formatted the device");
    Ok(())
}

/// Refuses (and removes) a store file just created too small for the state store: formatting
/// accepts it (a device for the log alone is valid), but the store would only fail to open.
fn check_state_room(
    s: &config::StoreConfig,
    size: u64,
    sb: &engine::layout::superblock::Superblock,
) -> Result<(), NodeError> {
    let min_segments = engine::state::store::STATE_SEGMENT_COUNT_MIN;
    let state_segments = sb.segment_count - sb.log_segment_count;
    if state_segments >= min_segments {
        return Ok(());
    }
    let _ = std::fs::remove_file(&s.device);
    // The log keeps its minimum of segments; the state store needs its own beside them.
    let segments = engine::layout::SEGMENT_COUNT_MIN + u64::from(min_segments);
    let min_bytes = sb.data_start_offset + segments * sb.segment_size_bytes;
    Err(NodeError::StoreFileTooSmall {
        device: s.device.display().to_string(),
        size_bytes: size,
        state_segments,
        min_segments,
        min_mib: min_bytes.div_ceil(1 << 20),
    })
}

/// The cluster id new file devices are formatted with: derived from the initial cluster, so
/// every node of one config agrees without coordination.
fn cluster_id_of(cfg: &Config) -> u128 {
    let mut h = crc32fast::Hasher::new();
    for m in &cfg.cluster.initial_cluster {
        h.update(&m.store_id.to_le_bytes());
        h.update(m.addr.to_string().as_bytes());
    }
    u128::from(h.finalize()) | (1 << 64)
}

impl Node {
    /// Starts a node as `cfg` describes: binds QUIC, opens (and bootstraps, if new) every
    /// store, serves clients and metrics.
    pub fn start(cfg: &Config) -> Result<Node, NodeError> {
        let tls = TlsConfig::from_files(&cfg.tls.ca_cert, &cfg.tls.node_cert, &cfg.tls.node_key)?;
        let tcfg = TransportConfig {
            frame_bytes_max: u32::try_from(cfg.limits.frame_bytes_max).unwrap_or(u32::MAX),
            runtime_threads: cfg.limits.net_threads,
            ..TransportConfig::default()
        };
        let net = NodeTransport::bind(cfg.listen_addr, &tls, tcfg)?;
        for m in &cfg.cluster.initial_cluster {
            net.add_store(m.store_id, m.addr);
        }
        let regions = bootstrap_regions(cfg);
        let cluster_id = cluster_id_of(cfg);
        let mut stores = Vec::new();
        let mut routers = BTreeMap::new();
        // With one network thread, each store's loop runs on it (see `NodeTransport::drive_store`).
        let driven = cfg.limits.net_threads == 1;
        for s in &cfg.stores {
            prepare_device(s, cluster_id)?;
            let transport = Arc::new(net.transport());
            let opened = if driven {
                Store::open_driven(store_options(cfg, s), transport, &regions)
                    .map(|(store, driver)| (store, Some(driver)))
            } else {
                Store::open(store_options(cfg, s), transport, &regions).map(|store| (store, None))
            };
            let (store, driver) = opened.map_err(|source| NodeError::Store {
                store_id: s.store_id,
                device: s.device.display().to_string(),
                source,
            })?;
            if store.store_id() != s.store_id {
                let found = store.store_id();
                drop(driver);
                let _ = store.stop();
                return Err(NodeError::WrongStore {
                    device: s.device.display().to_string(),
                    expected: s.store_id,
                    found,
                });
            }
            net.register_store(store.store_id(), store.router());
            if let Some(driver) = driver {
                net.drive_store(driver);
            }
            routers.insert(store.store_id(), store.router());
            stores.push(store);
        }
        net.set_client_service(Arc::new(NodeService::new(routers)));
        let metrics = match cfg.metrics_addr {
            Some(addr) => {
                let ms: Vec<(u64, Arc<StoreMetrics>)> =
                    stores.iter().map(|s| (s.store_id(), s.metrics())).collect();
                let render = move || {
                    let mut out = String::new();
                    let refs: Vec<(u64, &StoreMetrics)> =
                        ms.iter().map(|(id, m)| (*id, m.as_ref())).collect();
                    render_prometheus_all(&refs, &mut out);
                    out
                };
                Some(
                    MetricsServer::start(addr, render)
                        .map_err(|source| NodeError::Metrics { addr, source })?,
                )
            }
            None => None,
        };
        info!(node_id = cfg.node_id, listen = %cfg.listen_addr, stores = stores.len(), "node started");
        Ok(Node {
            node_id: cfg.node_id,
            transport: Some(net),
            stores,
            metrics,
        })
    }

    /// The node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The QUIC address the node listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.transport.as_ref().and_then(|t| t.local_addr().ok())
    }

    /// The metrics endpoint's address, if serving.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.local_addr())
    }

    /// The node's store ids.
    pub fn store_ids(&self) -> Vec<u64> {
        self.stores.iter().map(|s| s.store_id()).collect()
    }

    /// Each store's metrics.
    pub fn metrics(&self) -> Vec<(u64, Arc<StoreMetrics>)> {
        self.stores
            .iter()
            .map(|s| (s.store_id(), s.metrics()))
            .collect()
    }

    /// Stops the node: stores first (each answers what is in flight and writes a final
    /// checkpoint), then the network.
    pub fn stop(mut self) -> Result<(), NodeError> {
        let mut first_err = None;
        for s in self.stores.drain(..) {
            let id = s.store_id();
            if let Err(source) = s.stop() {
                first_err.get_or_insert(NodeError::Store {
                    store_id: id,
                    device: String::new(),
                    source,
                });
            }
        }
        if let Some(m) = self.metrics.take() {
            m.stop();
        }
        if let Some(t) = self.transport.take() {
            t.shutdown();
        }
        info!(node_id = self.node_id, "node stopped");
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Kills the node as a crash would: the network goes first, then every store stops
    /// without its final checkpoint (what survives is each store's last checkpoint and log).
    pub fn abort(mut self) {
        if let Some(t) = self.transport.take() {
            t.shutdown();
        }
        for s in self.stores.drain(..) {
            s.crash();
        }
        if let Some(m) = self.metrics.take() {
            m.stop();
        }
    }
}

/// Reads a config file.
pub fn load_config(path: &Path) -> Result<Config, config::ConfigError> {
    Config::load(path)
}

//! A local cluster of `basalt start` child processes on 127.0.0.1: certificates, one config and
//! one store per node in a directory, each node's output appended to `node<i>.log` there. The
//! nodes are real processes, so one can be killed with SIGKILL and started again from the same
//! config. Dropping a [`LocalCluster`] stops every node still running (SIGTERM, then SIGKILL
//! after [`STOP_TIMEOUT`]) unless [`LocalCluster::detach`] was called.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use transport::certs::{write_cert_dir, NodeCertSpec};
use transport::proto::{Request, Response, StoreStatus};
use transport::{ClientConnection, ClientTlsConfig};

use crate::config::{ConfigError, NodeConfigBuilder};

/// How long a node may take to stop after SIGTERM (its final checkpoint included) before it
/// is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The name of the client certificate issued beside the nodes'.
pub const CLIENT_CERT_NAME: &str = "admin";

/// Where a node's store lives.
#[derive(Clone, Debug)]
pub enum StoreDevice {
    /// A sparse file `store<i>.img` in the cluster directory, created and formatted by
    /// `basalt start` at this size.
    File {
        /// The file's size.
        create_size_bytes: u64,
    },
    /// A block device (or file) already formatted with `basalt format` and the node's store id.
    Formatted(PathBuf),
}

/// What to build.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The directory for certificates, configs, devices and logs (created if missing).
    pub dir: PathBuf,
    /// The `basalt` executable to run as `basalt start --config ...`.
    pub binary: PathBuf,
    /// One device per node; node `i` (1-based) holds store `i`.
    pub devices: Vec<StoreDevice>,
    /// `initial-regions`.
    pub initial_regions: u32,
    /// `tick-interval`, `election-ticks`, `heartbeat-ticks`; `None`: the config defaults.
    pub raft: Option<(Duration, u32, u32)>,
}

/// Running (or stopped) `basalt start` children; see the module docs.
pub struct LocalCluster {
    dir: PathBuf,
    binary: PathBuf,
    quic: Vec<SocketAddr>,
    metrics: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
    detached: bool,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.detached {
            if let Err(e) = self.stop_all() {
                tracing::warn!(error = %e, "stopping the local cluster");
            }
        }
    }
}

/// The lowest ephemeral port (`ip_local_port_range`); node ports are picked below it, so a
/// client socket bound to port 0 never takes the port of a node that is down for a restart.
fn ephemeral_port_min() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Free loopback ports below the ephemeral range: UDP for QUIC, TCP for metrics (bound
/// together, released together; the nodes bind them right after).
fn free_addrs(n: usize) -> anyhow::Result<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let hi = ephemeral_port_min().max(12_000);
    let lo = hi - 10_000;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for _ in 0..10_000 {
        if udp.len() == n && tcp.len() == n {
            break;
        }
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let port = lo + (seed >> 8) as u16 % (hi - lo);
        if udp.len() < n {
            if let Ok(s) = UdpSocket::bind(("127.0.0.1", port)) {
                udp.push(s);
                continue;
            }
        }
        if tcp.len() < n {
            if let Ok(s) = TcpListener::bind(("127.0.0.1", port)) {
                tcp.push(s);
            }
        }
    }
    if udp.len() < n || tcp.len() < n {
        bail!("no free ports in {lo}..{hi} on 127.0.0.1");
    }
    let quic = udp
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    let metrics = tcp
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    Ok((quic, metrics))
}

impl LocalCluster {
    /// Writes certificates (a CA, `node<i>`, and the client `admin`) and one config per node
    /// into `spec.dir`. Starts nothing.
    pub fn create(spec: &ClusterSpec) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let n = spec.devices.len();
        let (quic, metrics) = free_addrs(n)?;
        let nodes: Vec<NodeCertSpec> = (1..=n)
            .map(|i| NodeCertSpec {
                name: format!("node{i}"),
                sans: vec!["127.0.0.1".into(), "localhost".into()],
            })
            .collect();
        let certs = spec.dir.join("certs");
        write_cert_dir(&certs, "basalt-demo-ca", &nodes, &[CLIENT_CERT_NAME.into()])
            .with_context(|| format!("writing certificates to {}", certs.display()))?;
        let c = LocalCluster {
            dir: spec.dir.clone(),
            binary: spec.binary.clone(),
            quic,
            metrics,
            children: (0..n).map(|_| None).collect(),
            detached: false,
        };
        for i in 1..=n {
            let path = c.config_path(i);
            std::fs::write(&path, c.config_text(spec, i)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(c)
    }

    fn config_text(&self, spec: &ClusterSpec, i: usize) -> Result<String, ConfigError> {
        let builder = match &spec.devices[i - 1] {
            StoreDevice::File { create_size_bytes } => {
                NodeConfigBuilder::new(i as u64, self.quic[i - 1], format!("store{i}.img"))
                    .create_size_bytes(*create_size_bytes)
            }
            StoreDevice::Formatted(path) => {
                NodeConfigBuilder::new(i as u64, self.quic[i - 1], path)
            }
        };
        let builder = builder
            .metrics_addr(Some(self.metrics[i - 1]))
            .one_store_per_node(&self.quic, true)
            .colocated(self.quic.len())
            .initial_regions(spec.initial_regions);
        match spec.raft {
            Some((tick, election, heartbeat)) => builder.raft_timing(tick, election, heartbeat),
            None => builder,
        }
        .to_toml()
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.quic.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.quic.is_empty()
    }

    /// Every node's QUIC address, node 1 first.
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.quic
    }

    /// Every node's metrics address, node 1 first.
    pub fn metrics_addrs(&self) -> &[SocketAddr] {
        &self.metrics
    }

    /// The node (1-based) listening on `addr`.
    pub fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.quic.iter().position(|a| *a == addr).map(|i| i + 1)
    }

    /// The certificates directory.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// The client identity issued with the cluster.
    pub fn client_tls(&self) -> anyhow::Result<ClientTlsConfig> {
        ClientTlsConfig::from_dir(&self.certs_dir(), CLIENT_CERT_NAME)
            .with_context(|| format!("loading {}", self.certs_dir().display()))
    }

    /// Node `i`'s config file.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}.toml"))
    }

    /// Node `i`'s log file (stdout and stderr of every run, appended).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}.log"))
    }

    /// Node `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i - 1].as_ref().map(Child::id)
    }

    /// Starts node `i` (1-based) as a child process.
    pub fn start(&mut self, i: usize) -> anyhow::Result<u32> {
        if self.children[i - 1].is_some() {
            bail!("node{i} is already running");
        }
        let log_path = self.log_path(i);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&self.binary)
            .env("NO_COLOR", "1")
            .arg("-v")
            .arg("start")
            .arg("--config")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} start", self.binary.display()))?;
        let pid = child.id();
        tracing::debug!(node = i, pid, "node started");
        self.children[i - 1] = Some(child);
        Ok(pid)
    }

    /// Starts every node not running.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 1..=self.len() {
            if self.children[i - 1].is_none() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Kills node `i` with SIGKILL (a crash: no final checkpoint) and reaps it.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let mut child = self.children[i - 1]
            .take()
            .ok_or_else(|| anyhow!("node{i} is not running"))?;
        child.kill().with_context(|| format!("SIGKILL node{i}"))?;
        child.wait().with_context(|| format!("reaping node{i}"))?;
        Ok(())
    }

    /// An error naming the first node that exited while it should be running, with its log.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for i in 1..=self.len() {
            if let Some(c) = self.children[i - 1].as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.children[i - 1] = None;
                    bail!(
                        "node{i} exited unexpectedly ({status}); its log: {}",
                        self.log_path(i).display()
                    );
                }
            }
        }
        Ok(())
    }

    /// SIGTERMs every running node and waits for each to exit (SIGKILL after
    /// [`STOP_TIMEOUT`]); returns `(node, status)` of each. An error if a node had to be killed.
    pub fn stop_all(&mut self) -> anyhow::Result<Vec<(usize, ExitStatus)>> {
        for child in self.children.iter().flatten() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut out = Vec::new();
        let mut killed = Vec::new();
        for (i, slot) in self.children.iter_mut().enumerate() {
            let Some(child) = slot.as_mut() else {
                continue;
            };
            let status = loop {
                if let Some(s) = child.try_wait()? {
                    break s;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    killed.push(i + 1);
                    break child.wait()?;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            *slot = None;
            out.push((i + 1, status));
        }
        if !killed.is_empty() {
            bail!(
                "nodes {killed:?} did not stop within {STOP_TIMEOUT:?} of SIGTERM and were killed"
            );
        }
        Ok(out)
    }

    /// Leaves the running nodes running after `self` is dropped (for `basalt demo --keep`).
    pub fn detach(mut self) -> Vec<(usize, u32)> {
        self.detached = true;
        (1..=self.len())
            .filter_map(|i| self.pid(i).map(|p| (i, p)))
            .collect()
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        file_tail(&self.log_path(i), lines)
    }
}

/// The last `lines` lines of the text file at `path` (empty if it cannot be read).
pub fn file_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One `Status` request to the node at `addr`.
pub async fn node_status(
    addr: SocketAddr,
    tls: &ClientTlsConfig,
    timeout: Duration,
) -> anyhow::Result<StoreStatus> {
    let conn = tokio::time::timeout(timeout, ClientConnection::connect(addr, tls))
        .await
        .map_err(|_| anyhow!("connecting to {addr} timed out"))??;
    let answer = conn.call(0, &Request::Status, timeout).await;
    conn.close();
    match answer? {
        Response::Status(s) => Ok(s),
        other => bail!("{addr} answered Status with {other:?}"),
    }
}

/// What every node of a cluster reports, by node (1-based), `None` for a node that did not
/// answer.
pub async fn cluster_status(
    endpoints: &[SocketAddr],
    tls: &ClientTlsConfig,
    timeout: Duration,
) -> Vec<Option<StoreStatus>> {
    let mut out = Vec::new();
    for addr in endpoints {
        out.push(node_status(*addr, tls, timeout).await.ok());
    }
    out
}

/// Whether `statuses` show every region of `regions_expected` with exactly one leader among
/// the answering nodes, and `nodes_expected` nodes answering.
pub fn healthy(
    statuses: &[Option<StoreStatus>],
    nodes_expected: usize,
    regions_expected: usize,
) -> bool {
    let up: Vec<&StoreStatus> = statuses.iter().flatten().collect();
    if up.len() < nodes_expected {
        return false;
    }
    let mut leaders = std::collections::BTreeMap::<u64, usize>::new();
    for s in &up {
        for r in &s.regions {
            *leaders.entry(r.info.region_id).or_default() += usize::from(r.is_leader);
        }
    }
    leaders.len() == regions_expected && leaders.values().all(|n| *n == 1)
}

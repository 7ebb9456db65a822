//! cluster_bench: a 3-node Basalt cluster in one process, real QUIC with mutual TLS on
//! 127.0.0.1, file-backed stores.
//!
//! 1. `latency`: commit latency of puts with 1 in flight (p50/p90/p99/max), then writes/s and
//!    linearizable reads/s with 64 in flight. For the 1-in-flight phase it also prints the CPU
//!    each put cost, by thread kind (the three nodes' threads of a kind together, the client's
//!    runtime, the main thread), and how many times threads were scheduled in per put: on a
//!    2-vCPU machine running three nodes, thread hand-offs, not Raft, are most of a put.
//! 2. `failover`: the leader is killed (`Node::abort`) K times; time from the kill until a put
//!    succeeds through the new leader, and until the restarted node caught up.
//! 3. `idle`: three stores with 10,000 regions each (one peer per store); CPU per store before
//!    and after the regions hibernate.
//!
//! Run: `cargo run --release -p benches --bin cluster_bench -- <latency|failover|idle> [--json]`.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use engine::metrics::HistogramSnapshot;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tools::config::{colocated_net_threads, Config, NodeConfigBuilder, ReadMode};
use tools::node::{Node, NodeService};
use transport::certs::{write_cert_dir, NodeCertSpec};
use transport::proto::{Epoch, Request, Response, StoreStatus, WriteId};
use transport::{ClientConnection, ClientTlsConfig};

const NODES: usize = 3;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "Basalt 3-node cluster benchmarks on loopback")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Print one JSON object instead of the table.
    #[arg(long, global = true)]
    json: bool,
    /// Directory for the devices and certificates (default: a temporary directory).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Commit latency (1 in flight), throughput (64 in flight), linearizable reads.
    Latency(LatencyOptions),
    /// Leader failover time.
    Failover {
        /// Kills.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// CPU of idle stores with many regions.
    Idle {
        /// Regions (each with a peer on all three stores).
        #[arg(long, default_value_t = 10_000)]
        regions: u64,
        /// Longest wait for every region to hibernate.
        #[arg(long, default_value_t = 45)]
        hibernate_wait_s: u64,
        /// Idle measurement window once hibernated.
        #[arg(long, default_value_t = 30)]
        idle_s: u64,
        /// Window measured right after start (before hibernation).
        #[arg(long, default_value_t = 5)]
        early_s: u64,
    },
}

/// The working directory: a given path or a temporary directory removed at the end.
struct WorkDir {
    _tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl WorkDir {
    fn new(dir: Option<&Path>) -> WorkDir {
        match dir {
            Some(p) => {
                let path = p.join(format!("cluster-bench-{}", std::process::id()));
                std::fs::create_dir_all(&path).expect("create --dir");
                WorkDir { _tmp: None, path }
            }
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                let path = tmp.path().to_owned();
                WorkDir {
                    _tmp: Some(tmp),
                    path,
                }
            }
        }
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("addr").port())
        .collect()
}

fn make_certs(dir: &Path) {
    let specs: Vec<NodeCertSpec> = (1..=NODES)
        .map(|i| NodeCertSpec {
            name: format!("node{i}"),
            sans: vec!["127.0.0.1".into(), "localhost".into()],
        })
        .collect();
    write_cert_dir(dir, "bench-ca", &specs, &["bench".to_string()]).expect("certs");
}

/// Node `i`'s config (1-based): default raft timing (100 ms tick, 10 election ticks).
fn config_text(i: usize, ports: &[u16], read_mode: &str, net_threads: Option<usize>) -> String {
    let read_mode = match read_mode {
        "lease" => ReadMode::Lease,
        "read-index" => ReadMode::ReadIndex,
        other => panic!("unknown read mode {other:?}"),
    };
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    let builder = NodeConfigBuilder::new(i as u64, addrs[i - 1], format!("node{i}.img"))
        .metrics_addr(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
        .create_size_bytes(1 << 30)
        .read_mode(read_mode)
        .colocated(NODES);
    match net_threads {
        Some(n) => builder.net_threads(n),
        None => builder,
    }
    .one_store_per_node(&addrs, false)
    .to_toml()
    .expect("config text")
}

/// One line per node of a stage breakdown (see `Cluster::stage_breakdown`).
fn print_stages(stages: &Value) {
    let num = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
    for st in stages.as_array().into_iter().flatten() {
        let leader = st["leader"].as_bool() == Some(true);
        println!(
            "  node {}{}: log write p50 {} ms over {} writes ({} per proposal), {} messages sent per proposal{}",
            st["node"],
            if leader { " (leader)" } else { "" },
            num(&st["log_write_p50_ms"]),
            st["log_writes"],
            num(&st["log_writes_per_proposal"]),
            num(&st["messages_sent_per_proposal"]),
            if leader {
                format!("; commit p50 {} ms", num(&st["commit_p50_ms"]))
            } else {
                String::new()
            },
        );
    }
}

/// On-CPU nanoseconds and times scheduled in, summed per thread name (a trailing `-N` cut,
/// so the three nodes' threads of one kind add up), from `/proc/self/task/*/schedstat`.
fn thread_cpu() -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut by_kind = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_kind;
    };
    for t in tasks.flatten() {
        let path = t.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        let kind = match comm.rsplit_once('-') {
            Some((head, tail)) if tail.chars().all(|c| c.is_ascii_digit()) => head,
            _ => comm,
        };
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let mut f = stat
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        let (run_ns, _wait_ns, slices) = (
            f.next().unwrap_or(0),
            f.next().unwrap_or(0),
            f.next().unwrap_or(0),
        );
        let e = by_kind.entry(kind.to_string()).or_insert((0, 0));
        e.0 += run_ns;
        e.1 += slices;
    }
    by_kind
}

/// CPU microseconds and times scheduled in per operation, by thread kind, between two
/// [`thread_cpu`] snapshots (threads that ended in between are not counted).
fn cpu_per_op(
    before: &std::collections::BTreeMap<String, (u64, u64)>,
    after: &std::collections::BTreeMap<String, (u64, u64)>,
    ops: u64,
) -> Value {
    let ops = ops.max(1) as f64;
    let mut kinds = serde_json::Map::new();
    let (mut cpu_total, mut slices_total) = (0.0, 0.0);
    for (kind, &(run, slices)) in after {
        let (run0, slices0) = before.get(kind).copied().unwrap_or((0, 0));
        let cpu_us = run.saturating_sub(run0) as f64 / 1e3 / ops;
        let sched = slices.saturating_sub(slices0) as f64 / ops;
        if cpu_us < 0.5 && sched < 0.005 {
            continue;
        }
        cpu_total += cpu_us;
        slices_total += sched;
        kinds.insert(
            kind.clone(),
            json!({ "cpu_us": cpu_us, "scheduled_in": sched }),
        );
    }
    json!({ "total_cpu_us": cpu_total, "total_scheduled_in": slices_total, "by_thread": kinds })
}

fn print_cpu(v: &Value) {
    let mut parts = Vec::new();
    for (kind, x) in v["by_thread"].as_object().into_iter().flatten() {
        parts.push(format!(
            "{kind} {:.0} µs/{:.1}",
            x["cpu_us"].as_f64().unwrap_or(0.0),
            x["scheduled_in"].as_f64().unwrap_or(0.0)
        ));
    }
    println!(
        "  cpu per put {:.0} µs, threads scheduled in {:.1} times per put (by thread: cpu/times): {}",
        v["total_cpu_us"].as_f64().unwrap_or(0.0),
        v["total_scheduled_in"].as_f64().unwrap_or(0.0),
        parts.join(", ")
    );
}

/// User + system CPU time of this process.
fn process_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Three nodes plus a client runtime with one persistent connection per node.
struct Cluster {
    _dir: WorkDir,
    cfgs: Vec<Config>,
    nodes: Vec<Option<Node>>,
    rt: tokio::runtime::Runtime,
    tls: ClientTlsConfig,
    conns: Vec<Option<Arc<ClientConnection>>>,
    client_id: u64,
    seq: Arc<AtomicU64>,
}

/// Per node: log-write and commit-latency histograms and work counters, to subtract later.
type StageSnapshots = Vec<StageSnapshot>;

/// One node's store metrics at one moment.
struct StageSnapshot {
    node: usize,
    log_write: HistogramSnapshot,
    commit: HistogramSnapshot,
    messages_sent: u64,
    proposals: u64,
}

impl Cluster {
    fn stage_snapshots(&self) -> StageSnapshots {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (_, m) in n.iter().flat_map(Node::metrics) {
                out.push(StageSnapshot {
                    node: i + 1,
                    log_write: m.log_write_latency.snapshot(),
                    commit: m.commit_latency.snapshot(),
                    messages_sent: m.raft_messages_sent_total.get(),
                    proposals: m.proposals_total.get(),
                });
            }
        }
        out
    }

    /// Per node, the p50 of its log writes (submit to durable), the device writes and Raft
    /// messages per proposal and, on the leader, the p50 of commit latency (proposal to
    /// commit), over what happened since `before`.
    fn stage_breakdown(&self, before: &StageSnapshots, leader: usize) -> Value {
        let after = self.stage_snapshots();
        let delta = |a: &HistogramSnapshot, b: &HistogramSnapshot| {
            let mut d = a.clone();
            for (x, y) in d.buckets.iter_mut().zip(b.buckets.iter()) {
                *x = x.saturating_sub(*y);
            }
            d.sum_ns = d.sum_ns.saturating_sub(b.sum_ns);
            d
        };
        let ms = |h: &HistogramSnapshot| h.quantile(0.5).map(|d| d.as_secs_f64() * 1e3);
        let proposals: u64 = after
            .iter()
            .zip(before)
            .map(|(a, b)| a.proposals.saturating_sub(b.proposals))
            .sum();
        let per_proposal = |n: u64| n as f64 / proposals.max(1) as f64;
        let mut nodes = Vec::new();
        for (a, b) in after.iter().zip(before) {
            let lw = delta(&a.log_write, &b.log_write);
            let cl = delta(&a.commit, &b.commit);
            nodes.push(json!({
                "node": a.node,
                "leader": a.node == leader,
                "log_writes": lw.count(),
                "log_writes_per_proposal": per_proposal(lw.count()),
                "messages_sent_per_proposal":
                    per_proposal(a.messages_sent.saturating_sub(b.messages_sent)),
                "log_write_p50_ms": ms(&lw),
                "commit_p50_ms": if a.node == leader { ms(&cl) } else { None },
            }));
        }
        Value::Array(nodes)
    }
}

/// The region (single region 1) as the client knows it.
#[derive(Clone, Copy, Debug)]
struct Target {
    node: usize,
    region_id: u64,
    epoch: Epoch,
}

impl Cluster {
    fn start(
        dir: Option<&Path>,
        read_mode: &str,
        net_threads: Option<usize>,
        client_threads: usize,
    ) -> Cluster {
        let dir = WorkDir::new(dir);
        make_certs(&dir.path.join("certs"));
        let ports = free_ports(NODES);
        let cfgs: Vec<Config> = (1..=NODES)
            .map(|i| {
                Config::from_toml_str(&config_text(i, &ports, read_mode, net_threads), &dir.path)
                    .expect("config")
            })
            .collect();
        let rt = match client_threads {
            0 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            n => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build(),
        }
        .expect("runtime");
        let tls = ClientTlsConfig::from_dir(&dir.path.join("certs"), "bench").expect("tls");
        let nodes = cfgs
            .iter()
            .map(|c| Some(Node::start(c).expect("node start")))
            .collect();
        let client_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        let mut c = Cluster {
            _dir: dir,
            cfgs,
            nodes,
            rt,
            tls,
            conns: vec![None; NODES],
            client_id,
            seq: Arc::new(AtomicU64::new(0)),
        };
        for i in 1..=NODES {
            c.reconnect(i);
        }
        c
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.cfgs[i - 1].listen_addr
    }

    fn reconnect(&mut self, i: usize) {
        let (addr, tls) = (self.addr(i), self.tls.clone());
        let conn = self
            .rt
            .block_on(async move { ClientConnection::connect(addr, &tls).await });
        self.conns[i - 1] = conn.ok().map(Arc::new);
    }

    fn running(&self) -> Vec<usize> {
        (1..=NODES)
            .filter(|i| self.nodes[i - 1].is_some())
            .collect()
    }

    fn call(&self, i: usize, store: u64, req: Request, timeout: Duration) -> Option<Response> {
        let conn = self.conns[i - 1].clone()?;
        self.rt
            .block_on(async move { conn.call(store, &req, timeout).await.ok() })
    }

    fn status(&self, i: usize) -> Option<StoreStatus> {
        match self.call(i, 0, Request::Status, Duration::from_secs(2)) {
            Some(Response::Status(s)) => Some(s),
            _ => None,
        }
    }

    /// The leader of region 1, polling every 10 ms.
    fn leader(&self, timeout: Duration) -> Option<(Target, u64)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for i in self.running() {
                let Some(s) = self.status(i) else { continue };
                if let Some(r) = s.regions.iter().find(|r| r.is_leader) {
                    let t = Target {
                        node: i,
                        region_id: r.info.region_id,
                        epoch: r.info.epoch,
                    };
                    return Some((t, r.commit_index));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits until every running node applied the leader's commit index.
    fn wait_caught_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((_, commit)) = self.leader(Duration::from_secs(5)) {
                let all = self.running().into_iter().all(|i| {
                    self.status(i)
                        .is_some_and(|s| s.regions.iter().all(|r| r.applied_index >= commit))
                });
                if all {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn put_request(&self, t: Target, key: Bytes, value: Bytes) -> Request {
        Request::Put {
            region_id: t.region_id,
            epoch: t.epoch,
            id: WriteId {
                client_id: self.client_id,
                sequence: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            },
            key,
            value,
        }
    }

    fn stop_all(&mut self) {
        for c in self.conns.iter().flatten() {
            c.close();
        }
        for n in self.nodes.iter_mut() {
            if let Some(n) = n.take() {
                if let Err(e) = n.stop() {
                    eprintln!("stop: {e}");
                }
            }
        }
    }
}

fn key_of(i: u64) -> Bytes {
    Bytes::from(format!("k{i:010}"))
}

/// Outcome counters of a phase.
#[derive(Default)]
struct Counts {
    ok: u64,
    errors: u64,
    kinds: Value,
}

/// Errors seen, by kind (the first word of the error's text).
#[derive(Default)]
struct Tally {
    total: AtomicU64,
    kinds: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Tally {
    fn add(&self, what: String) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let kind: String = what.chars().take(48).collect();
        if let Ok(mut m) = self.kinds.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    fn json(&self) -> Value {
        match self.kinds.lock() {
            Ok(m) => json!(*m),
            Err(_) => Value::Null,
        }
    }
}

/// One request with retries on retryable errors (same write id), returning whether it
/// succeeded.
async fn put_retrying(conn: &ClientConnection, store: u64, req: &Request, errors: &Tally) -> bool {
    for _ in 0..100 {
        match conn.call(store, req, CALL_TIMEOUT).await {
            Ok(Response::Written(_)) | Ok(Response::Value(_)) => return true,
            Ok(Response::Error(e)) if e.is_retryable() => errors.add(format!("retryable: {e}")),
            Ok(other) => {
                errors.add(format!("fatal: {other:?}"));
                return false;
            }
            Err(e) => {
                errors.add(format!("transport: {e}"));
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn hist_json(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p90_us": h.value_at_quantile(0.90),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "mean_us": h.mean(),
    })
}

/// `n` sequential puts to the leader; latencies in µs.
///
/// The puts are made by one task spawned on the client runtime, as an application's code on
/// tokio runs: the SDK's own tasks (the stream writer and reader, quinn's drivers) then wake on
/// the same worker. (Made with `block_on` from the bench's main thread instead, each put crossed
/// two extra thread hand-offs, main thread to worker and back: about 0.08 ms a call on this
/// machine by `floor_bench`'s client round trip, none of it the SDK's or the cluster's.)
fn sequential_puts(
    c: &Cluster,
    t: Target,
    n: u64,
    value: &Bytes,
    first_key: u64,
) -> (Histogram<u64>, Counts) {
    let conn = c.conns[t.node - 1].clone().expect("leader connection");
    let errors = Arc::new(Tally::default());
    let store = t.node as u64;
    let requests: Vec<Request> = (0..n)
        .map(|i| c.put_request(t, key_of(first_key + i), value.clone()))
        .collect();
    let task_errors = Arc::clone(&errors);
    let (h, ok) =
        c.rt.block_on(c.rt.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut ok = 0;
            for req in &requests {
                let t0 = Instant::now();
                if put_retrying(&conn, store, req, &task_errors).await {
                    ok += 1;
                    h.saturating_record((t0.elapsed().as_micros() as u64).max(1));
                }
            }
            (h, ok)
        }))
        .expect("sequential puts task");
    let counts = Counts {
        ok,
        errors: errors.total.load(Ordering::Relaxed),
        kinds: errors.json(),
    };
    (h, counts)
}

/// Builds request `i` with the write id of its task.
type MakeRequest = dyn Fn(u64, WriteId) -> Request + Send + Sync;

/// `total` requests made by `inflight` tasks over `conns`, each task a client of its own
/// (the engine's sessions keep one last sequence per client, so one client's writes must
/// apply in sequence order); returns (histogram, elapsed, counts).
fn concurrent_ops(
    c: &Cluster,
    conns: &[Arc<ClientConnection>],
    store: u64,
    inflight: usize,
    total: u64,
    base_client_id: u64,
    make: Arc<MakeRequest>,
) -> (Histogram<u64>, Duration, Counts) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Tally::default());
    let t0 = Instant::now();
    let hists: Vec<Histogram<u64>> = c.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for w in 0..inflight {
            let conn = Arc::clone(&conns[w % conns.len()]);
            let (next, errors, make) = (Arc::clone(&next), Arc::clone(&errors), Arc::clone(&make));
            let client_id = base_client_id + 1 + w as u64;
            set.spawn(async move {
                let mut sequence = 0;
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    sequence += 1;
                    let req = make(
                        i,
                        WriteId {
                            client_id,
                            sequence,
                        },
                    );
                    let s = Instant::now();
                    if put_retrying(&conn, store, &req, &errors).await {
                        h.saturating_record((s.elapsed().as_micros() as u64).max(1));
                    }
                }
                h
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.expect("task"));
        }
        out
    });
    let elapsed = t0.elapsed();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for x in &hists {
        h.add(x).expect("merge");
    }
    let counts = Counts {
        ok: h.len(),
        errors: errors.total.load(Ordering::Relaxed),
        kinds: errors.json(),
    };
    (h, elapsed, counts)
}

/// The options of `latency`.
#[derive(clap::Args)]
struct LatencyOptions {
    /// Puts measured with 1 in flight.
    #[arg(long, default_value_t = 5000)]
    puts: u64,
    /// Puts and gets measured with `--inflight` in flight.
    #[arg(long, default_value_t = 20000)]
    ops_concurrent: u64,
    /// Requests in flight for the concurrent phases.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Client connections the concurrent phases spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Value size.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// How the nodes serve linearizable reads: `read-index` (a heartbeat round per batch of
    /// reads, the default) or `lease` (the leader's lease; relies on bounded clock drift).
    #[arg(long, default_value = "read-index", value_parser = ["read-index", "lease"])]
    read_mode: String,
    /// Threads of each node's network runtime (`limits.net-threads`; default: the cores split
    /// between the three nodes, see `NodeConfigBuilder::colocated`).
    #[arg(long)]
    net_threads: Option<usize>,
    /// Worker threads of the client's tokio runtime; 0: a current-thread runtime (the
    /// benchmark's own thread drives the client's connections).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

fn run_latency(dir: Option<&Path>, o: &LatencyOptions) -> Value {
    let LatencyOptions {
        puts,
        ops_concurrent,
        inflight,
        connections,
        value_bytes,
        ref read_mode,
        net_threads,
        client_threads,
    } = *o;
    let read_mode = read_mode.as_str();
    let t_start = Instant::now();
    let mut c = Cluster::start(dir, read_mode, net_threads, client_threads);
    let (t, _) = c.leader(Duration::from_secs(30)).expect("a leader");
    let startup = t_start.elapsed();
    let value = Bytes::from(vec![b'v'; value_bytes]);
    // Warm-up: connections, the log's first segments, the apply path.
    let warm = (puts / 5).max(200);
    let _ = sequential_puts(&c, t, warm, &value, 1_000_000_000);
    let before = c.stage_snapshots();
    let cpu_before = thread_cpu();
    let (seq_h, seq_counts) = sequential_puts(&c, t, puts, &value, 0);
    let cpu_1_in_flight = cpu_per_op(&cpu_before, &thread_cpu(), puts);
    let stages = c.stage_breakdown(&before, t.node);

    let addr = c.addr(t.node);
    let tls = c.tls.clone();
    let conns: Vec<Arc<ClientConnection>> = (0..connections.max(1))
        .map(|_| {
            let tls = tls.clone();
            Arc::new(
                c.rt.block_on(async move { ClientConnection::connect(addr, &tls).await })
                    .expect("connect"),
            )
        })
        .collect();
    let store = t.node as u64;
    let val = value.clone();
    let make_put: Arc<MakeRequest> = Arc::new(move |i, id| Request::Put {
        region_id: t.region_id,
        epoch: t.epoch,
        id,
        key: key_of(100_000_000 + i),
        value: val.clone(),
    });
    let before = c.stage_snapshots();
    let (wh, wdur, wcounts) = concurrent_ops(
        &c,
        &conns,
        store,
        inflight,
        ops_concurrent,
        c.client_id,
        make_put,
    );
    let stages_concurrent = c.stage_breakdown(&before, t.node);
    let make_get: Arc<MakeRequest> = Arc::new(move |i, _| Request::Get {
        region_id: t.region_id,
        epoch: t.epoch,
        key: key_of(100_000_000 + i % ops_concurrent.max(1)),
    });
    let (rh, rdur, rcounts) = concurrent_ops(
        &c,
        &conns,
        store,
        inflight,
        ops_concurrent,
        c.client_id,
        make_get,
    );
    for x in &conns {
        x.close();
    }
    c.stop_all();
    json!({
        "bench": "latency",
        "nodes": NODES,
        "value_bytes": value_bytes,
        "read_mode": read_mode,
        "net_threads": net_threads.unwrap_or_else(|| colocated_net_threads(NODES)),
        "client_threads": client_threads,
        "startup_to_leader_ms": ms(startup),
        "warmup_puts": warm,
        "stages_1_in_flight": stages,
        "cpu_1_in_flight": cpu_1_in_flight,
        "stages_concurrent_puts": stages_concurrent,
        "sequential": { "puts_ok": seq_counts.ok, "retries_or_errors": seq_counts.errors, "error_kinds": seq_counts.kinds, "latency": hist_json(&seq_h) },
        "concurrent_puts": {
            "inflight": inflight, "connections": conns.len(), "ok": wcounts.ok,
            "retries_or_errors": wcounts.errors, "error_kinds": wcounts.kinds, "elapsed_s": wdur.as_secs_f64(),
            "writes_per_s": wcounts.ok as f64 / wdur.as_secs_f64(), "latency": hist_json(&wh),
        },
        "concurrent_gets": {
            "inflight": inflight, "connections": conns.len(), "ok": rcounts.ok,
            "retries_or_errors": rcounts.errors, "error_kinds": rcounts.kinds, "elapsed_s": rdur.as_secs_f64(),
            "reads_per_s": rcounts.ok as f64 / rdur.as_secs_f64(), "latency": hist_json(&rh),
        },
    })
}

/// One failover round: kill the leader, time until a put succeeds, restart, time to catch up.
fn failover_round(c: &mut Cluster, round: usize, value: &Bytes) -> Value {
    assert!(
        c.wait_caught_up(Duration::from_secs(30)),
        "caught up before round {round}"
    );
    let (t, _) = c.leader(Duration::from_secs(30)).expect("leader");
    let old = t.node;
    let node = c.nodes[old - 1].take().expect("running leader");
    if let Some(conn) = c.conns[old - 1].take() {
        conn.close();
    }
    let t_kill = Instant::now();
    node.abort();
    let abort_dur = t_kill.elapsed();
    let req = c.put_request(t, key_of(2_000_000_000 + round as u64), value.clone());
    let mut attempts = 0u64;
    let (new, t_put) = 'outer: loop {
        for i in c.running() {
            attempts += 1;
            let r = c.call(i, i as u64, req.clone(), Duration::from_millis(500));
            if matches!(r, Some(Response::Written(_))) {
                break 'outer (i, t_kill.elapsed());
            }
        }
        assert!(
            t_kill.elapsed() < Duration::from_secs(60),
            "no new leader within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let t_restart = Instant::now();
    c.nodes[old - 1] = Some(Node::start(&c.cfgs[old - 1]).expect("restart"));
    let restart_dur = t_restart.elapsed();
    c.reconnect(old);
    let caught = c.wait_caught_up(Duration::from_secs(60));
    let catchup = t_restart.elapsed();
    json!({
        "round": round, "killed_node": old, "new_leader_node": new,
        "abort_call_ms": ms(abort_dur),
        "failover_ms": ms(t_put),
        "put_attempts": attempts,
        "restart_call_ms": ms(restart_dur),
        "restart_to_caught_up_ms": ms(catchup),
        "caught_up": caught,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn run_failover(dir: Option<&Path>, rounds: usize) -> Value {
    let mut c = Cluster::start(dir, "read-index", None, 2);
    let election_timeout = c.cfgs[0].raft.tick_interval * c.cfgs[0].raft.election_ticks;
    let (t, _) = c.leader(Duration::from_secs(30)).expect("a leader");
    let value = Bytes::from(vec![b'v'; 256]);
    let _ = sequential_puts(&c, t, 200, &value, 0);
    let mut results = Vec::new();
    for round in 1..=rounds {
        let r = failover_round(&mut c, round, &value);
        if let Some(m) = r["failover_ms"].as_f64() {
            eprintln!("round {round}: failover {m:.0} ms");
        }
        results.push(r);
        // A few puts through the new leader between rounds.
        if let Some((t, _)) = c.leader(Duration::from_secs(30)) {
            let _ = sequential_puts(&c, t, 50, &value, 10_000 * round as u64);
        }
    }
    c.stop_all();
    let mut f: Vec<f64> = results
        .iter()
        .filter_map(|r| r["failover_ms"].as_f64())
        .collect();
    let mut cu: Vec<f64> = results
        .iter()
        .filter_map(|r| r["restart_to_caught_up_ms"].as_f64())
        .collect();
    let et_ms = ms(election_timeout);
    let fmax = f.iter().cloned().fold(0.0, f64::max);
    let fmed = median(&mut f);
    json!({
        "bench": "failover",
        "election_timeout_ms": et_ms,
        "rounds": results,
        "failover_median_ms": fmed,
        "failover_max_ms": fmax,
        "failover_median_election_timeouts": fmed / et_ms,
        "failover_max_election_timeouts": fmax / et_ms,
        "catch_up_median_ms": median(&mut cu),
    })
}

/// A node assembled by hand (like `Node::start`) so it can bootstrap any number of regions.
struct IdleNode {
    net: Option<transport::NodeTransport>,
    store: Option<engine::store::Store>,
}

fn start_idle_node(cfg: &Config, regions: &[engine::store::RegionMeta]) -> IdleNode {
    use engine::store::{Store, StoreOptions};
    let tls =
        transport::TlsConfig::from_files(&cfg.tls.ca_cert, &cfg.tls.node_cert, &cfg.tls.node_key)
            .expect("tls");
    let net = transport::NodeTransport::bind(
        cfg.listen_addr,
        &tls,
        transport::TransportConfig::default(),
    )
    .expect("bind");
    for m in &cfg.cluster.initial_cluster {
        net.add_store(m.store_id, m.addr);
    }
    let s = &cfg.stores[0];
    format_device(&s.device, s.store_id);
    let mut o = StoreOptions::new(&s.device);
    o.store.tick_interval = cfg.raft.tick_interval;
    o.store.election_ticks = cfg.raft.election_ticks as usize;
    o.store.heartbeat_ticks = cfg.raft.heartbeat_ticks as usize;
    o.store.hibernate = cfg.raft.hibernate;
    let store = Store::open(o, Arc::new(net.transport()), regions).expect("store open");
    net.register_store(store.store_id(), store.router());
    let routers = [(store.store_id(), store.router())].into_iter().collect();
    net.set_client_service(Arc::new(NodeService::new(routers)));
    IdleNode {
        net: Some(net),
        store: Some(store),
    }
}

fn format_device(path: &Path, store_id: u64) {
    let opts = engine::device::OpenOptions {
        create_size_bytes: Some(1 << 30),
        ..engine::device::OpenOptions::default()
    };
    let (mut io, _) = engine::device::open(path, &opts).expect("create device");
    let mut f = engine::format::FormatOptions::new(path.display().to_string());
    f.store_id = Some(store_id);
    f.cluster_id = Some(0xbe7c_4000_0000_0001);
    engine::format::format(io.as_mut(), &f).expect("format");
}

/// What each store says about its regions that are not hibernating.
fn region_census(addrs: &[SocketAddr], certs: &Path) -> Value {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Value::Null;
    };
    let Ok(tls) = ClientTlsConfig::from_dir(certs, "bench") else {
        return Value::Null;
    };
    let mut out = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let tls = tls.clone();
        let addr = *addr;
        let status = rt.block_on(async move {
            let conn = ClientConnection::connect(addr, &tls).await.ok()?;
            let r = conn
                .call(0, &Request::Status, Duration::from_secs(30))
                .await;
            conn.close();
            match r {
                Ok(Response::Status(s)) => Some(s),
                _ => None,
            }
        });
        let Some(s) = status else {
            out.push(json!({"store": i + 1, "status": "no answer"}));
            continue;
        };
        let awake: Vec<_> = s.regions.iter().filter(|r| !r.hibernating).collect();
        let leaders = s.regions.iter().filter(|r| r.is_leader).count();
        let awake_leaders = awake.iter().filter(|r| r.is_leader).count();
        let awake_no_leader = awake.iter().filter(|r| r.info.leader.is_none()).count();
        let awake_unapplied = awake
            .iter()
            .filter(|r| r.applied_index < r.commit_index)
            .count();
        let max_term = s.regions.iter().map(|r| r.term).max().unwrap_or(0);
        let awake_terms: std::collections::BTreeMap<u64, u64> =
            awake.iter().fold(Default::default(), |mut m, r| {
                *m.entry(r.term).or_default() += 1;
                m
            });
        let sample: Vec<Value> = awake
            .iter()
            .take(5)
            .map(|r| {
                json!({"region": r.info.region_id, "leader": r.is_leader, "known_leader": r.info.leader.map(|l| l.store_id),
                    "term": r.term, "commit": r.commit_index, "applied": r.applied_index})
            })
            .collect();
        out.push(json!({
            "store": i + 1, "regions": s.regions.len(), "leaders": leaders,
            "awake": awake.len(), "awake_leaders": awake_leaders, "awake_without_known_leader": awake_no_leader,
            "awake_applied_behind_commit": awake_unapplied, "max_term": max_term,
            "awake_by_term": awake_terms, "awake_sample": sample,
        }));
    }
    json!(out)
}

/// One sample of the idle run.
struct Sample {
    at_s: f64,
    hibernating: Vec<i64>,
    cpu_pct_per_store: f64,
}

fn run_idle(
    dir: Option<&Path>,
    regions: u64,
    hibernate_wait_s: u64,
    idle_s: u64,
    early_s: u64,
) -> Value {
    let wd = WorkDir::new(dir);
    make_certs(&wd.path.join("certs"));
    let ports = free_ports(NODES);
    let cfgs: Vec<Config> = (1..=NODES)
        .map(|i| {
            Config::from_toml_str(&config_text(i, &ports, "read-index", None), &wd.path)
                .expect("config")
        })
        .collect();
    let split_keys: Vec<Bytes> = (1..regions)
        .map(|i| Bytes::from(format!("r{i:08}")))
        .collect();
    let store_ids: Vec<u64> = (1..=NODES as u64).collect();
    let metas = engine::store::initial_regions(&store_ids, &split_keys);
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut nodes = Vec::new();
    let mut open_ms = Vec::new();
    for cfg in &cfgs {
        let s = Instant::now();
        nodes.push(start_idle_node(cfg, &metas));
        open_ms.push(ms(s.elapsed()));
    }
    let startup = t0.elapsed();
    let startup_cpu = process_cpu() - cpu0;
    eprintln!(
        "started 3 stores x {regions} regions in {:.0} ms (cpu {:.0} ms)",
        ms(startup),
        ms(startup_cpu)
    );
    let metrics: Vec<_> = nodes
        .iter()
        .map(|n| n.store.as_ref().expect("store").metrics())
        .collect();
    let hib = || -> Vec<i64> {
        metrics
            .iter()
            .map(|m| m.hibernating_regions.get())
            .collect()
    };
    let target = regions as i64;
    // Sample every second until every peer hibernates (or the wait ends).
    let mut samples = Vec::new();
    let mut all_hibernated_at = None;
    let t_run = Instant::now();
    while t_run.elapsed() < Duration::from_secs(hibernate_wait_s) {
        let (c0, w0) = (process_cpu(), Instant::now());
        std::thread::sleep(Duration::from_secs(1));
        let pct =
            (process_cpu() - c0).as_secs_f64() / w0.elapsed().as_secs_f64() * 100.0 / NODES as f64;
        let h = hib();
        eprintln!(
            "t={:5.1}s hibernating {:?} cpu/store {:.1}%",
            t_run.elapsed().as_secs_f64(),
            h,
            pct
        );
        let done = h.iter().all(|&x| x >= target);
        samples.push(Sample {
            at_s: t_run.elapsed().as_secs_f64(),
            hibernating: h,
            cpu_pct_per_store: pct,
        });
        if done && samples.len() as u64 >= early_s {
            all_hibernated_at = Some(t_run.elapsed().as_secs_f64());
            break;
        }
    }
    let early: Vec<f64> = samples
        .iter()
        .take(early_s as usize)
        .map(|s| s.cpu_pct_per_store)
        .collect();
    let early_pct = early.iter().sum::<f64>() / early.len().max(1) as f64;
    // The idle window (measured whether or not hibernation completed).
    let (c0, w0) = (process_cpu(), Instant::now());
    let h_before = hib();
    std::thread::sleep(Duration::from_secs(idle_s));
    let idle_cpu = process_cpu() - c0;
    let idle_wall = w0.elapsed();
    let h_after = hib();
    let addrs: Vec<SocketAddr> = cfgs.iter().map(|c| c.listen_addr).collect();
    let census = region_census(&addrs, &wd.path.join("certs"));
    let idle_pct = idle_cpu.as_secs_f64() / idle_wall.as_secs_f64() * 100.0 / NODES as f64;
    let t_stop = Instant::now();
    for mut n in nodes {
        if let Some(s) = n.store.take() {
            if let Err(e) = s.stop() {
                eprintln!("store stop: {e}");
            }
        }
        if let Some(t) = n.net.take() {
            t.shutdown();
        }
    }
    let stop_ms = ms(t_stop.elapsed());
    json!({
        "bench": "idle",
        "regions": regions,
        "stores": NODES,
        "startup_ms": ms(startup),
        "store_open_ms": open_ms,
        "startup_cpu_ms": ms(startup_cpu),
        "all_hibernated_after_s": all_hibernated_at,
        "early_window_s": early.len(),
        "early_cpu_pct_per_store": early_pct,
        "idle_window_s": idle_wall.as_secs_f64(),
        "idle_cpu_s": idle_cpu.as_secs_f64(),
        "idle_cpu_pct_per_store": idle_pct,
        "hibernating_at_idle_start": h_before,
        "hibernating_at_idle_end": h_after,
        "stop_ms": stop_ms,
        "census_after_idle": census,
        "samples": samples.iter().map(|s| json!({"at_s": s.at_s, "hibernating": s.hibernating, "cpu_pct_per_store": s.cpu_pct_per_store})).collect::<Vec<_>>(),
    })
}

fn print_table(v: &Value) {
    let f = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
    match v["bench"].as_str() {
        Some("latency") => {
            let s = &v["sequential"]["latency"];
            println!(
                "3-node cluster, loopback QUIC, {} B values",
                v["value_bytes"]
            );
            println!(
                "{:<28} {:>10} {:>10} {:>10} {:>10} {:>12}",
                "phase", "p50 ms", "p90 ms", "p99 ms", "max ms", "ops/s"
            );
            let row = |name: &str, h: &Value, rate: f64| {
                println!(
                    "{:<28} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>12.0}",
                    name,
                    f(&h["p50_us"]) / 1e3,
                    f(&h["p90_us"]) / 1e3,
                    f(&h["p99_us"]) / 1e3,
                    f(&h["max_us"]) / 1e3,
                    rate
                );
            };
            let seq_rate = f(&s["count"]) / (f(&s["mean_us"]) * f(&s["count"]) / 1e6);
            row("put, 1 in flight", s, seq_rate);
            print_stages(&v["stages_1_in_flight"]);
            print_cpu(&v["cpu_1_in_flight"]);
            let w = &v["concurrent_puts"];
            row(
                &format!("put, {} in flight", w["inflight"]),
                &w["latency"],
                f(&w["writes_per_s"]),
            );
            print_stages(&v["stages_concurrent_puts"]);
            let r = &v["concurrent_gets"];
            row(
                &format!(
                    "get ({}), {} in flight",
                    v["read_mode"].as_str().unwrap_or("?"),
                    r["inflight"]
                ),
                &r["latency"],
                f(&r["reads_per_s"]),
            );
            println!(
                "errors/retries: sequential {} {}, puts {} {}, gets {} {}",
                v["sequential"]["retries_or_errors"],
                v["sequential"]["error_kinds"],
                w["retries_or_errors"],
                w["error_kinds"],
                r["retries_or_errors"],
                r["error_kinds"]
            );
        }
        Some("failover") => {
            let et = f(&v["election_timeout_ms"]);
            println!("election timeout {et:.0} ms");
            println!(
                "{:>5} {:>6} {:>6} {:>12} {:>8} {:>9} {:>10} {:>14}",
                "round",
                "killed",
                "new",
                "failover ms",
                "x ET",
                "abort ms",
                "restart ms",
                "caught up ms"
            );
            for r in v["rounds"].as_array().into_iter().flatten() {
                println!(
                    "{:>5} {:>6} {:>6} {:>12.0} {:>8.2} {:>9.1} {:>10.0} {:>14.0}",
                    f(&r["round"]),
                    f(&r["killed_node"]),
                    f(&r["new_leader_node"]),
                    f(&r["failover_ms"]),
                    f(&r["failover_ms"]) / et,
                    f(&r["abort_call_ms"]),
                    f(&r["restart_call_ms"]),
                    f(&r["restart_to_caught_up_ms"])
                );
            }
            println!(
                "failover median {:.0} ms ({:.2} ET), max {:.0} ms ({:.2} ET)",
                f(&v["failover_median_ms"]),
                f(&v["failover_median_election_timeouts"]),
                f(&v["failover_max_ms"]),
                f(&v["failover_max_election_timeouts"])
            );
        }
        Some("idle") => {
            println!(
                "3 stores x {} regions (each region on all three stores)",
                v["regions"]
            );
            println!(
                "startup {:.0} ms (cpu {:.0} ms), store opens {}",
                f(&v["startup_ms"]),
                f(&v["startup_cpu_ms"]),
                v["store_open_ms"]
            );
            println!("all hibernated after: {} s", v["all_hibernated_after_s"]);
            println!(
                "first {} s after start: {:.1}% of one core per store",
                v["early_window_s"],
                f(&v["early_cpu_pct_per_store"])
            );
            println!(
                "idle {:.0} s: {:.2}% of one core per store (cpu {:.2} s); hibernating {} -> {}",
                f(&v["idle_window_s"]),
                f(&v["idle_cpu_pct_per_store"]),
                f(&v["idle_cpu_s"]),
                v["hibernating_at_idle_start"],
                v["hibernating_at_idle_end"]
            );
            println!("stop {:.0} ms", f(&v["stop_ms"]));
            for c in v["census_after_idle"].as_array().into_iter().flatten() {
                println!("census: {c}");
            }
        }
        _ => println!("{v}"),
    }
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("BASALT_LOG"))
        .with_writer(std::io::stderr)
        .try_init();
    let args = Args::parse();
    let dir = args.dir.as_deref();
    let out = match args.cmd {
        Cmd::Latency(o) => run_latency(dir, &o),
        Cmd::Failover { rounds } => run_failover(dir, rounds),
        Cmd::Idle {
            regions,
            hibernate_wait_s,
            idle_s,
            early_s,
        } => run_idle(dir, regions, hibernate_wait_s, idle_s, early_s),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_table(&out);
    }
}

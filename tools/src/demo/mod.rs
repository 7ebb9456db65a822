//! `basalt demo`: a throwaway 3-node cluster on this machine, driven through the client SDK.
//! It generates certificates and configs in a directory, starts three `basalt start` children
//! (this same executable) on file-backed stores, writes and reads keys and shows the latencies,
//! kills the region's leader with SIGKILL, measures how long until writes succeed again, checks
//! that every acknowledged write reads back, restarts the killed node and watches it catch up,
//! then stops everything and removes the directory. On an error or Ctrl-C the children are
//! stopped too (see [`cluster::LocalCluster`]'s `Drop`); `--keep` leaves them running.

pub mod cluster;
pub mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use client::Client;

use crate::signals::ShutdownSignal;
use cluster::{ClusterSpec, LocalCluster, StoreDevice};
use report::{secs, Latencies, Steps};

/// Nodes in the demo cluster.
pub const NODES: usize = 3;
/// How long the cluster may take to elect a leader, fail over, or catch a node up. Generous:
/// a slow 2-core machine running a debug build must not fail the demo.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of one client call while the cluster is healthy.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one write attempt while the leader is down (short, so the measured failover
/// time is not rounded up to a long timeout).
const FAILOVER_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Writes acknowledged after the failover, to show the new leader serving.
const WRITES_AFTER_FAILOVER: usize = 50;
/// Writes in flight in the throughput phase.
const INFLIGHT: usize = 32;

/// What `basalt demo` was asked.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Keys written and read back.
    pub keys: usize,
    /// Size of each value.
    pub value_bytes: usize,
    /// Leave the cluster running at the end.
    pub keep: bool,
    /// Use this directory (must be empty or absent) instead of a temporary one; it is kept.
    pub dir: Option<PathBuf>,
    /// Size of each node's store file (zero-filled when created; a store needs about 330 MiB).
    pub device_bytes: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            keys: 1000,
            value_bytes: 256,
            keep: false,
            dir: None,
            device_bytes: 512 << 20,
        }
    }
}

/// The demo's directory: the given one (must be empty) or a new one under the temp dir.
fn demo_dir(opts: &DemoOptions) -> anyhow::Result<(PathBuf, bool)> {
    if let Some(dir) = &opts.dir {
        if dir.exists() && dir.read_dir()?.next().is_some() {
            bail!("--dir {} is not empty", dir.display());
        }
        return Ok((dir.clone(), false));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("basalt-demo-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((dir, true))
}

/// Runs the demo; an error says which step failed (node logs are named in the output).
pub fn run(opts: &DemoOptions) -> anyhow::Result<()> {
    if opts.keys == 0 || opts.value_bytes == 0 {
        bail!("--keys and --value-bytes must be at least 1");
    }
    let steps = Steps::new();
    let signal = ShutdownSignal::install().context("installing the Ctrl-C handler")?;
    let (dir, temporary) = demo_dir(opts)?;
    let binary = std::env::current_exe().context("finding this executable")?;
    println!(
        "basalt demo: a {NODES}-node Basalt cluster on 127.0.0.1, in {}",
        dir.display()
    );
    let spec = ClusterSpec {
        dir: dir.clone(),
        binary,
        devices: vec![
            StoreDevice::File {
                create_size_bytes: opts.device_bytes
            };
            NODES
        ],
        initial_regions: 1,
        raft: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut cluster = match LocalCluster::create(&spec) {
        Ok(c) => c,
        Err(e) => {
            if temporary {
                // The error names a node's log, which is about to go with the directory.
                print_log_tails(&dir);
            }
            remove_dir(&dir, temporary);
            return Err(e);
        }
    };
    let outcome = rt.block_on(async {
        tokio::select! {
            r = story(&mut cluster, opts, &steps) => r,
            _ = interrupted(&signal) => Err(Interrupted.into()),
        }
    });
    finish(cluster, outcome, opts, &steps, temporary)
}

/// Prints the last lines of every node log in `dir`.
fn print_log_tails(dir: &std::path::Path) {
    for i in 1..=NODES {
        let path = dir.join(format!("node{i}.log"));
        if path.exists() {
            eprintln!(
                "---- last lines of node{i}.log ----\n{}",
                cluster::file_tail(&path, 15)
            );
        }
    }
}

/// The demo was stopped by SIGINT or SIGTERM.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Resolves when SIGINT or SIGTERM arrives.
async fn interrupted(signal: &ShutdownSignal) {
    while !signal.is_triggered() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn remove_dir(dir: &std::path::Path, temporary: bool) {
    if temporary {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            eprintln!("basalt demo: could not remove {}: {e}", dir.display());
        }
    }
}

/// Stops the cluster (unless kept), removes a temporary directory, reports.
fn finish(
    mut cluster: LocalCluster,
    outcome: anyhow::Result<()>,
    opts: &DemoOptions,
    steps: &Steps,
    temporary: bool,
) -> anyhow::Result<()> {
    let dir = cluster.dir().to_path_buf();
    if let Err(e) = outcome {
        if e.is::<Interrupted>() {
            eprintln!("basalt demo: interrupted; stopping the nodes");
            let _ = cluster.stop_all();
            remove_dir(&dir, temporary);
            return Err(e);
        }
        eprintln!("basalt demo failed: {e:#}");
        for i in 1..=cluster.len() {
            eprintln!("node{i} log: {}", cluster.log_path(i).display());
            if temporary {
                eprintln!(
                    "---- last lines of node{i}.log ----\n{}",
                    cluster.log_tail(i, 15)
                );
            }
        }
        let _ = cluster.stop_all();
        remove_dir(&dir, temporary);
        return Err(e);
    }
    if opts.keep {
        print_keep(cluster, steps);
        return Ok(());
    }
    let statuses = cluster.stop_all()?;
    let unclean: Vec<String> = statuses
        .iter()
        .filter(|(_, s)| !s.success())
        .map(|(i, s)| format!("node{i}: {s}"))
        .collect();
    if !unclean.is_empty() {
        bail!("nodes did not stop cleanly: {}", unclean.join(", "));
    }
    steps.step(format!("stopped the {NODES} nodes (SIGTERM, clean exits)"));
    drop(cluster);
    if temporary {
        remove_dir(&dir, temporary);
        steps.step(format!("removed {}", dir.display()));
    } else {
        steps.step(format!("left {} in place (--dir)", dir.display()));
    }
    println!("basalt demo: done in {}.", secs(steps.elapsed()));
    Ok(())
}

fn print_keep(cluster: LocalCluster, steps: &Steps) {
    let endpoints: Vec<String> = cluster.endpoints().iter().map(|a| a.to_string()).collect();
    let metrics: Vec<String> = cluster
        .metrics_addrs()
        .iter()
        .map(|a| format!("http://{a}/metrics"))
        .collect();
    let dir = cluster.dir().display().to_string();
    let certs = cluster.certs_dir().display().to_string();
    let pids = cluster.detach();
    steps.step("the cluster keeps running (--keep):");
    for (i, pid) in &pids {
        steps.detail(format!(
            "node{i}: pid {pid}, config {dir}/node{i}.toml, log {dir}/node{i}.log"
        ));
    }
    steps.detail(format!("metrics: {}", metrics.join(" ")));
    steps.detail("status:");
    steps.detail(format!(
        "  basalt-ctl --certs {certs} --name {} --endpoints {} status",
        cluster::CLIENT_CERT_NAME,
        endpoints.join(",")
    ));
    let list: Vec<String> = pids.iter().map(|(_, p)| p.to_string()).collect();
    steps.detail("stop it (each node writes a final checkpoint and exits), then remove it:");
    steps.detail(format!("  kill -TERM {}", list.join(" ")));
    steps.detail(format!("  rm -r {dir}"));
}

/// The demo proper, from starting the nodes to the restarted node catching up.
async fn story(
    cluster: &mut LocalCluster,
    opts: &DemoOptions,
    steps: &Steps,
) -> anyhow::Result<()> {
    steps.step(format!(
        "wrote certificates (CA, {NODES} nodes, client `{}`) and {NODES} node configs; \
         stores are {} MiB files, zero-filled at creation",
        cluster::CLIENT_CERT_NAME,
        opts.device_bytes >> 20
    ));
    cluster.start_all()?;
    for i in 1..=cluster.len() {
        steps.detail(format!(
            "node{i}: pid {}, QUIC {}, log {}",
            cluster.pid(i).unwrap_or(0),
            cluster.endpoints()[i - 1],
            cluster.log_path(i).display()
        ));
    }
    let t = Instant::now();
    wait_healthy(cluster, NODES).await?;
    let tls = cluster.client_tls()?;
    let client = Client::connect(cluster.endpoints(), tls)
        .await
        .context("connecting the client")?
        .with_timeout(CALL_TIMEOUT);
    let probe = key(0);
    let leader = leader_node(cluster, &client, &probe).await?;
    steps.step(format!(
        "started {NODES} nodes; region 1 elected node{leader} its leader in {}",
        secs(t.elapsed())
    ));

    let mut acked = write_keys(&client, opts, steps).await?;
    read_keys(&client, &acked, steps).await?;
    overwrite_concurrently(&client, &acked, steps).await?;

    let (killed, failover_acked) = kill_leader(cluster, &client, &probe, opts, steps).await?;
    acked.extend(failover_acked);
    verify(&client, &acked, steps).await?;
    restart_and_catch_up(cluster, killed, steps).await?;
    client.close().await;
    Ok(())
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("demo/key/{i:06}"))
}

/// A value of `len` bytes naming its key and `round`, so a stale value is told apart.
fn value(key: &[u8], round: usize, len: usize) -> Bytes {
    let stem = format!("{}#{round}:", String::from_utf8_lossy(key));
    Bytes::from(stem.bytes().cycle().take(len).collect::<Vec<u8>>())
}

/// Polls every node's status until every region has one leader and `nodes` nodes answer.
async fn wait_healthy(cluster: &mut LocalCluster, nodes: usize) -> anyhow::Result<()> {
    let tls = cluster.client_tls()?;
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        cluster.check_running()?;
        let statuses =
            cluster::cluster_status(cluster.endpoints(), &tls, Duration::from_secs(2)).await;
        if cluster::healthy(&statuses, nodes, 1) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no leader elected within {WAIT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node (1-based) leading the region of `key`, as the client sees it.
async fn leader_node(cluster: &LocalCluster, client: &Client, key: &[u8]) -> anyhow::Result<usize> {
    let addr: SocketAddr = client
        .leader_of(key)
        .await
        .context("asking for the region's leader")?
        .ok_or_else(|| anyhow!("the region has no known leader"))?;
    cluster
        .node_at(addr)
        .ok_or_else(|| anyhow!("the leader {addr} is not a demo node"))
}

/// Writes `opts.keys` keys, one at a time; returns what was acknowledged.
///
/// This and [`read_keys`] make their calls from a task spawned on the runtime, as an
/// application's code on tokio runs, so the SDK's own tasks (stream writer and reader, quinn's
/// drivers) wake on the same worker. `story` itself runs in `block_on` on the main thread,
/// which is not a worker: calls made there crossed two extra thread hand-offs each (main thread
/// to worker and back), which are not the SDK's and not the cluster's. The one-at-a-time
/// latencies shown would include them.
async fn write_keys(
    client: &Client,
    opts: &DemoOptions,
    steps: &Steps,
) -> anyhow::Result<BTreeMap<Bytes, Bytes>> {
    let (client, keys, value_bytes) = (client.clone(), opts.keys, opts.value_bytes);
    let t = Instant::now();
    let (acked, lat) = tokio::spawn(async move {
        let mut acked = BTreeMap::new();
        let mut lat = Latencies::new();
        for i in 0..keys {
            let (k, v) = (key(i), value(&key(i), 0, value_bytes));
            let op = Instant::now();
            client
                .put(k.clone(), v.clone())
                .await
                .with_context(|| format!("put {}", String::from_utf8_lossy(&k)))?;
            lat.record(op.elapsed());
            acked.insert(k, v);
        }
        Ok::<_, anyhow::Error>((acked, lat))
    })
    .await
    .context("the writer task panicked")??;
    let what = format!("put {keys} keys ({value_bytes} B values), one at a time");
    steps.timed(&what, keys, t.elapsed(), "put", &lat);
    Ok(acked)
}

/// Reads every key back, one at a time, checking each value (from a task: see [`write_keys`]).
async fn read_keys(
    client: &Client,
    acked: &BTreeMap<Bytes, Bytes>,
    steps: &Steps,
) -> anyhow::Result<()> {
    let client = client.clone();
    let pairs: Vec<(Bytes, Bytes)> = acked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let count = pairs.len();
    let t = Instant::now();
    let lat = tokio::spawn(async move {
        let mut lat = Latencies::new();
        for (k, v) in pairs {
            let op = Instant::now();
            let got = client
                .get(k.clone())
                .await
                .with_context(|| format!("get {}", String::from_utf8_lossy(&k)))?;
            lat.record(op.elapsed());
            if got.as_ref() != Some(&v) {
                bail!("{} read back wrong", String::from_utf8_lossy(&k));
            }
        }
        Ok(lat)
    })
    .await
    .context("the reader task panicked")??;
    let what = format!("got {count} keys back (linearizable reads), one at a time, all match");
    steps.timed(&what, count, t.elapsed(), "get", &lat);
    Ok(())
}

/// Rewrites every key with its same value, [`INFLIGHT`] puts in flight, for a throughput
/// figure.
async fn overwrite_concurrently(
    client: &Client,
    acked: &BTreeMap<Bytes, Bytes>,
    steps: &Steps,
) -> anyhow::Result<()> {
    let pairs: Vec<(Bytes, Bytes)> = acked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..INFLIGHT {
        let client = client.clone();
        let mine: Vec<(Bytes, Bytes)> =
            pairs.iter().skip(lane).step_by(INFLIGHT).cloned().collect();
        tasks.spawn(async move {
            let mut lat = Latencies::new();
            for (k, v) in mine {
                let op = Instant::now();
                client.put(k, v).await?;
                lat.record(op.elapsed());
            }
            Ok::<_, client::ClientError>(lat)
        });
    }
    let mut all = Latencies::new();
    while let Some(done) = tasks.join_next().await {
        let lat = done
            .context("a writer task panicked")?
            .context("concurrent put")?;
        all.merge(&lat);
    }
    let what = format!(
        "put the same {} keys again, {INFLIGHT} in flight",
        pairs.len()
    );
    steps.timed(&what, pairs.len(), t.elapsed(), "put", &all);
    Ok(())
}

/// SIGKILLs the leader of `probe`'s region, then writes until a write succeeds (the failover
/// time) and [`WRITES_AFTER_FAILOVER`] more; returns the killed node and the acknowledged
/// writes.
async fn kill_leader(
    cluster: &mut LocalCluster,
    client: &Client,
    probe: &[u8],
    opts: &DemoOptions,
    steps: &Steps,
) -> anyhow::Result<(usize, BTreeMap<Bytes, Bytes>)> {
    let leader = leader_node(cluster, client, probe).await?;
    let pid = cluster.pid(leader).unwrap_or(0);
    cluster.kill(leader)?;
    let killed_at = Instant::now();
    steps.step(format!(
        "killed the leader, node{leader} (pid {pid}), with SIGKILL"
    ));
    let attempt = client.with_timeout(FAILOVER_ATTEMPT_TIMEOUT);
    let mut acked = BTreeMap::new();
    let mut failed = 0usize;
    let mut first_ok = None;
    let mut n = 0usize;
    while acked.len() < WRITES_AFTER_FAILOVER + 1 {
        let k = Bytes::from(format!("demo/failover/{n:06}"));
        let v = value(&k, 0, opts.value_bytes);
        n += 1;
        match attempt.put(k.clone(), v.clone()).await {
            Ok(_) => {
                first_ok.get_or_insert_with(|| killed_at.elapsed());
                acked.insert(k, v);
            }
            Err(e) if killed_at.elapsed() < WAIT_TIMEOUT => {
                failed += 1;
                tracing::debug!(error = %e, "write during failover");
            }
            Err(e) => return Err(e).context("no write succeeded after the leader was killed"),
        }
    }
    let took = first_ok.unwrap_or_default();
    let new_leader = leader_node(cluster, client, probe).await?;
    steps.step(format!(
        "writes succeed again {} after the kill ({failed} attempts failed meanwhile); \
         node{new_leader} is the new leader",
        secs(took)
    ));
    steps.detail(format!(
        "wrote {} more keys through the new leader",
        acked.len()
    ));
    Ok((leader, acked))
}

/// Reads every acknowledged write back; an error if any is missing or different.
async fn verify(
    client: &Client,
    acked: &BTreeMap<Bytes, Bytes>,
    steps: &Steps,
) -> anyhow::Result<()> {
    let mut lost = Vec::new();
    for (k, v) in acked {
        let got = client.get(k.clone()).await.context("reading back")?;
        if got.as_ref() != Some(v) {
            lost.push(String::from_utf8_lossy(k).into_owned());
        }
    }
    steps.step(format!(
        "read back all {} acknowledged writes: {} lost",
        acked.len(),
        lost.len()
    ));
    if !lost.is_empty() {
        bail!("acknowledged writes lost or wrong: {}", lost.join(", "));
    }
    Ok(())
}

/// Restarts node `i` and waits until its applied index reaches the leader's.
async fn restart_and_catch_up(
    cluster: &mut LocalCluster,
    i: usize,
    steps: &Steps,
) -> anyhow::Result<()> {
    let pid = cluster.start(i)?;
    let t = Instant::now();
    let tls = cluster.client_tls()?;
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        cluster.check_running()?;
        let statuses =
            cluster::cluster_status(cluster.endpoints(), &tls, Duration::from_secs(2)).await;
        if let Some(applied) = caught_up(&statuses, i) {
            steps.step(format!(
                "restarted node{i} (pid {pid}): it caught up to applied index {applied} in {}",
                secs(t.elapsed())
            ));
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("node{i} did not catch up within {WAIT_TIMEOUT:?} of its restart");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node `i`'s applied index when it equals the leader's in every region and every region has
/// a leader.
fn caught_up(statuses: &[Option<transport::proto::StoreStatus>], i: usize) -> Option<u64> {
    let mine = statuses.get(i - 1)?.as_ref()?;
    let mut applied = 0;
    for r in &mine.regions {
        let leader = statuses
            .iter()
            .flatten()
            .flat_map(|s| &s.regions)
            .find(|l| l.info.region_id == r.info.region_id && l.is_leader)?;
        if r.applied_index < leader.applied_index {
            return None;
        }
        applied = applied.max(r.applied_index);
    }
    (!mine.regions.is_empty()).then_some(applied)
}

//! The floor under one put's latency on this machine, measured from its parts in one run.
//!
//! A put with one in flight crosses, at the least: one client round trip over QUIC (client to
//! leader and back), one Raft round trip between two nodes (the leader's append to a follower
//! and its answer), and one synced log write on the follower while the leader and the other
//! follower write theirs to the same disk. `cluster_bench latency` measures the whole; this
//! measures each part with nothing else in between and adds them up:
//!
//! - `log write, N writers`: N threads, each appending one 256 B entry per synced write to a log
//!   of its own (`basalt-bench --target=log` in-process, each on its own file in `--dir`), all at
//!   once. N = 3 is what three nodes sharing one disk see; N = 1 is the disk alone.
//! - `client call round trip`: [`ClientConnection::call`] to a node whose service answers at once.
//! - `raft message round trip`: a one-message batch from node A to node B and one back, each
//!   delivered to a store router (the raft loop's inbox) that wakes a task on the node's network
//!   runtime, as a driven raft loop is woken; the answer is sent from that task.
//! - `QUIC round trip (quinn alone)`: 300 bytes out and back on one bidirectional stream
//!   between two quinn endpoints with the transport's own TLS and QUIC settings, each on a
//!   current-thread runtime of its own thread (as each node's network thread is), the echo and
//!   the caller tasks on them: no framing, no hand-off to other threads, nothing of Basalt's.
//!   Any put crosses two such round trips (client to leader and back, leader to follower and
//!   back), so `2 x this + the 3-writer log write` is a floor no code over quinn can go under
//!   on this machine.
//! - `UDP round trip`: a 300-byte datagram to a thread that echoes it, blocking sockets on
//!   127.0.0.1: what the operating system alone costs under the two QUIC round trips.
//!
//! The sum is what a put costs with zero time spent in Raft, the state machine and thread
//! hand-offs. Run it next to `cluster_bench latency` to see how much of a put is the floor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use engine::store::{
    Epoch, LoopWake, Peer, PeerRole, RaftMessage, StoreEvent, StoreRouter, Transport,
};
use hdrhistogram::Histogram;
use raftlog::{Entry, Message, MessageType};
use serde_json::{json, Value};
use tools::bench::args::BenchArgs;
use tools::config::colocated_net_threads;
use transport::certs::{write_cert_dir, NodeCertSpec};
use transport::proto::{Request, Response};
use transport::server::ResponseSender;
use transport::{
    ClientConnection, ClientService, ClientTlsConfig, NodeTransport, TlsConfig, TransportConfig,
};

#[derive(Parser)]
#[command(about = "The parts of one put's latency on this machine, measured one by one")]
struct Args {
    /// Directory for the log files (default: a temporary directory). Put it on the disk the
    /// cluster benchmark uses.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds each log-write phase runs.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Round trips measured per network phase.
    #[arg(long, default_value_t = 3000)]
    round_trips: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Pause between two round trips, so each one starts from idle threads as a lone put does.
const ROUND_TRIP_GAP: Duration = Duration::from_micros(300);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn hist_json(h: &Histogram<u64>) -> Value {
    json!({
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "count": h.len(),
    })
}

/// `writers` log benchmarks at once, each on its own file; the median of their p50s.
fn log_writes(dir: &Path, writers: usize, seconds: u64) -> Value {
    let runs: Vec<_> = (0..writers)
        .map(|i| {
            let file = dir.join(format!("floor-log-{writers}-{i}.img"));
            let runtime = format!("{seconds}s");
            std::thread::spawn(move || {
                let args = BenchArgs::try_parse_from([
                    "basalt-bench",
                    "--target=log",
                    "--filename",
                    file.to_str().expect("utf-8 path"),
                    "--size=128m",
                    "--regions=1",
                    "--entry-size=256",
                    "--entries-per-write=1",
                    "--runtime",
                    runtime.as_str(),
                    "--time_based",
                    "--output-format=json",
                ])
                .expect("bench args");
                let report = tools::bench::run(&args).expect("log run");
                let _ = std::fs::remove_file(&file);
                report.jobs[0].basalt.clone()
            })
        })
        .collect();
    let mut p50s: Vec<f64> = Vec::new();
    let mut rates = 0.0;
    for r in runs {
        let job = r.join().expect("log writer thread");
        p50s.push(job.latency_us_p50 / 1000.0);
        rates += job.iops;
    }
    p50s.sort_by(f64::total_cmp);
    json!({
        "writers": writers,
        "p50_ms": p50s[p50s.len() / 2],
        "p50s_ms": p50s,
        "writes_per_s": rates,
    })
}

/// Answers every call at once.
struct Answer;

impl ClientService for Answer {
    fn call(&self, _store_id: u64, _request: Request, reply: ResponseSender) {
        reply(Response::AdminDone);
    }
}

fn certs(dir: &Path) {
    let nodes: Vec<NodeCertSpec> = ["a", "b"]
        .iter()
        .map(|n| NodeCertSpec {
            name: n.to_string(),
            sans: vec!["127.0.0.1".into()],
        })
        .collect();
    write_cert_dir(dir, "floor", &nodes, &["client".to_string()]).expect("certificates");
}

fn node(certs: &Path, name: &str) -> NodeTransport {
    let tls = TlsConfig::from_dir(certs, name).expect("node tls");
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    // Network threads as each of `cluster_bench`'s three nodes has them.
    let config = TransportConfig {
        runtime_threads: colocated_net_threads(3),
        ..Default::default()
    };
    NodeTransport::bind(listen, &tls, config).expect("bind node")
}

fn client_round_trips(certs: &Path, node: &NodeTransport, count: usize) -> Histogram<u64> {
    node.set_client_service(Arc::new(Answer));
    let addr = node.local_addr().expect("node address");
    let tls = ClientTlsConfig::from_dir(certs, "client").expect("client tls");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    // The calls are made by a task on the runtime, as an application's code runs, so the SDK's
    // tasks wake on the same worker (see `cluster_bench`'s `sequential_puts`).
    let calls = rt.spawn(async move {
        let conn = ClientConnection::connect(addr, &tls)
            .await
            .expect("connect");
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for _ in 0..count {
            tokio::time::sleep(ROUND_TRIP_GAP).await;
            let t = Instant::now();
            conn.call(0, &Request::Status, CALL_TIMEOUT)
                .await
                .expect("call");
            h.record(t.elapsed().as_nanos() as u64).expect("record");
        }
        h
    });
    rt.block_on(calls).expect("client task")
}

fn append(from_store: u64, to_store: u64, index: u64) -> RaftMessage {
    let peer = |store_id: u64| Peer {
        peer_id: store_id * 10,
        store_id,
        role: PeerRole::Voter,
    };
    let msg = Message {
        msg_type: MessageType::MsgAppend,
        from: from_store * 10,
        to: to_store * 10,
        term: 2,
        index: index - 1,
        entries: vec![Entry {
            term: 2,
            index,
            data: vec![7u8; 256].into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    RaftMessage {
        region_id: 1,
        from: peer(from_store),
        to: peer(to_store),
        epoch: Epoch {
            conf_version: 1,
            version: 1,
        },
        msg,
        kind: Default::default(),
    }
}

/// A store inbox as a driven raft loop has it: the router posts into a channel and wakes a
/// task on the node's runtime.
fn inbox(
    node: &NodeTransport,
    store_id: u64,
) -> (
    crossbeam_channel::Receiver<StoreEvent>,
    Arc<tokio::sync::Notify>,
) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let notify = Arc::new(tokio::sync::Notify::new());
    let wake = LoopWake::new();
    let hook = Arc::clone(&notify);
    wake.set(Box::new(move || hook.notify_one()));
    node.register_store(store_id, StoreRouter::with_wake(store_id, tx, wake));
    (rx, notify)
}

/// Waits until a Raft message is in `rx`; the index of the last entry it carried.
async fn next_raft(
    rx: &crossbeam_channel::Receiver<StoreEvent>,
    notify: &tokio::sync::Notify,
) -> u64 {
    loop {
        while let Ok(ev) = rx.try_recv() {
            if let StoreEvent::Raft(msgs) = ev {
                return msgs.last().map_or(0, |m| m.msg.index + 1);
            }
        }
        notify.notified().await;
    }
}

/// Raft message round trips between two nodes, each end a task on its node's network runtime
/// woken by the store router, as a driven raft loop is (no other thread in between).
fn raft_round_trips(a: &NodeTransport, b: &NodeTransport, count: usize) -> Histogram<u64> {
    let (rx_a, notify_a) = inbox(a, 1);
    let (rx_b, notify_b) = inbox(b, 2);
    a.add_store(2, b.local_addr().expect("address"));
    b.add_store(1, a.local_addr().expect("address"));
    let (ta, tb) = (a.transport(), b.transport());
    // Store 2 answers every append at once; the task ends with its runtime.
    b.runtime_handle().spawn(async move {
        loop {
            let index = next_raft(&rx_b, &notify_b).await;
            tb.send(1, vec![append(2, 1, index)]);
        }
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    a.runtime_handle().spawn(async move {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        // The first exchange dials the connections; it is not measured.
        for index in 1..=count as u64 + 1 {
            tokio::time::sleep(ROUND_TRIP_GAP).await;
            let t = Instant::now();
            ta.send(2, vec![append(1, 2, index)]);
            tokio::time::timeout(CALL_TIMEOUT, next_raft(&rx_a, &notify_a))
                .await
                .expect("raft message not answered");
            if index > 1 {
                h.record(t.elapsed().as_nanos() as u64).expect("record");
            }
        }
        let _ = done_tx.send(h);
    });
    // The task sends its histogram, or panics (and drops `done_tx`) on a lost message.
    done_rx.recv().expect("raft round trips")
}

/// A current-thread runtime, as a node's network thread runs.
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Round trips of 300 bytes over quinn alone (see the module docs).
fn quic_round_trips(certs: &Path, count: usize) -> Histogram<u64> {
    let quic = transport::client::quic_transport_config(
        TransportConfig::default().idle_timeout,
        TransportConfig::default().keep_alive_interval,
    )
    .expect("QUIC settings");
    let server_cfg = TlsConfig::from_dir(certs, "a")
        .and_then(|t| t.quic_server(Arc::clone(&quic)))
        .expect("server TLS");
    let client_cfg = TlsConfig::from_dir(certs, "b")
        .and_then(|t| t.quic_client(quic))
        .expect("client TLS");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let echo = std::thread::spawn(move || {
        current_thread_runtime().block_on(async move {
            let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
            let ep = quinn::Endpoint::server(server_cfg, listen).expect("bind echo endpoint");
            addr_tx
                .send(ep.local_addr().expect("echo address"))
                .expect("send address");
            let incoming = ep.accept().await.expect("incoming connection");
            let conn = incoming.await.expect("echo handshake");
            let (mut send, mut recv) = conn.accept_bi().await.expect("echo stream");
            let mut buf = [0u8; 300];
            while recv.read_exact(&mut buf).await.is_ok() {
                if send.write_all(&buf).await.is_err() {
                    break;
                }
            }
            conn.closed().await;
        })
    });
    let addr = addr_rx.recv().expect("echo address");
    let h = current_thread_runtime().block_on(async move {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut ep = quinn::Endpoint::client(any).expect("bind caller endpoint");
        ep.set_default_client_config(client_cfg);
        let conn = ep
            .connect(addr, "127.0.0.1")
            .expect("dial")
            .await
            .expect("caller handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("caller stream");
        let (out, mut back) = ([7u8; 300], [0u8; 300]);
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        // The first exchange opens the stream at the echo's end; it is not measured.
        for i in 0..=count {
            tokio::time::sleep(ROUND_TRIP_GAP).await;
            let t = Instant::now();
            send.write_all(&out).await.expect("write");
            recv.read_exact(&mut back).await.expect("read");
            if i > 0 {
                h.record(t.elapsed().as_nanos() as u64).expect("record");
            }
        }
        conn.close(0u32.into(), b"");
        ep.wait_idle().await;
        h
    });
    echo.join().expect("echo thread");
    h
}

/// Round trips of a 300-byte datagram echoed by another thread.
fn udp_round_trips(count: usize) -> Histogram<u64> {
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind echo socket");
    let me = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind socket");
    me.connect(echo.local_addr().expect("address"))
        .expect("connect");
    let echoer = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..count {
            let (n, from) = echo.recv_from(&mut buf).expect("echo recv");
            echo.send_to(&buf[..n], from).expect("echo send");
        }
    });
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let (out, mut back) = ([7u8; 300], [0u8; 2048]);
    for _ in 0..count {
        std::thread::sleep(ROUND_TRIP_GAP);
        let t = Instant::now();
        me.send(&out).expect("send");
        me.recv(&mut back).expect("recv");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    echoer.join().expect("echo thread");
    h
}

fn main() {
    let args = Args::parse();
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().expect("temporary directory");
            tmp.path().to_owned()
        }
    };
    let log1 = log_writes(&dir, 1, args.seconds);
    let log3 = log_writes(&dir, 3, args.seconds);
    let cert_dir = dir.join("floor-certs");
    certs(&cert_dir);
    let (a, b) = (node(&cert_dir, "a"), node(&cert_dir, "b"));
    let call = client_round_trips(&cert_dir, &a, args.round_trips);
    let raft = raft_round_trips(&a, &b, args.round_trips);
    let quic = quic_round_trips(&cert_dir, args.round_trips);
    let udp = udp_round_trips(args.round_trips);
    a.shutdown();
    b.shutdown();
    let _ = std::fs::remove_dir_all(&cert_dir);
    let floor = log3["p50_ms"].as_f64().unwrap_or(f64::NAN)
        + ms(call.value_at_quantile(0.5))
        + ms(raft.value_at_quantile(0.5));
    let quic_floor =
        log3["p50_ms"].as_f64().unwrap_or(f64::NAN) + 2.0 * ms(quic.value_at_quantile(0.5));
    let out = json!({
        "log_write_1_writer": log1,
        "log_write_3_writers": log3,
        "client_call_round_trip": hist_json(&call),
        "raft_message_round_trip": hist_json(&raft),
        "quic_round_trip": hist_json(&quic),
        "udp_round_trip": hist_json(&udp),
        "put_floor_p50_ms": floor,
        "put_floor_quinn_alone_p50_ms": quic_floor,
    });
    if args.json {
        println!("{out}");
        return;
    }
    println!("the parts of one put (p50, each measured alone)");
    println!(
        "  log write, 1 writer          {:.3} ms   ({:.0} writes/s)",
        log1["p50_ms"].as_f64().unwrap_or(f64::NAN),
        log1["writes_per_s"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "  log write, 3 writers at once {:.3} ms   (p50 of each: {})",
        log3["p50_ms"].as_f64().unwrap_or(f64::NAN),
        log3["p50s_ms"]
    );
    println!(
        "  client call round trip       {:.3} ms   (p90 {:.3})",
        ms(call.value_at_quantile(0.5)),
        ms(call.value_at_quantile(0.9))
    );
    println!(
        "  raft message round trip      {:.3} ms   (p90 {:.3})",
        ms(raft.value_at_quantile(0.5)),
        ms(raft.value_at_quantile(0.9))
    );
    println!(
        "  QUIC round trip (quinn alone) {:.3} ms  (p90 {:.3})",
        ms(quic.value_at_quantile(0.5)),
        ms(quic.value_at_quantile(0.9))
    );
    println!(
        "  UDP round trip (OS alone)    {:.3} ms   (p90 {:.3})",
        ms(udp.value_at_quantile(0.5)),
        ms(udp.value_at_quantile(0.9))
    );
    println!("  floor of one put (3 writers + both round trips): {floor:.3} ms");
    println!(
        "  floor of one put over quinn alone (3 writers + 2 QUIC round trips): {quic_floor:.3} ms"
    );
}

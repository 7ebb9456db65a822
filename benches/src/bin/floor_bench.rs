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
//!   delivered to a store router (the raft loop's inbox).
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
use engine::store::{Epoch, Peer, PeerRole, RaftMessage, StoreEvent, StoreRouter, Transport};
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
    rt.block_on(async {
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
    })
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

fn wait_raft(rx: &crossbeam_channel::Receiver<StoreEvent>) {
    loop {
        match rx.recv_timeout(CALL_TIMEOUT) {
            Ok(StoreEvent::Raft(_)) => return,
            Ok(_) => continue,
            Err(e) => panic!("raft message not delivered: {e}"),
        }
    }
}

fn raft_round_trips(a: &NodeTransport, b: &NodeTransport, count: usize) -> Histogram<u64> {
    let (tx_a, rx_a) = crossbeam_channel::unbounded();
    let (tx_b, rx_b) = crossbeam_channel::unbounded();
    a.register_store(1, StoreRouter::new(1, tx_a));
    b.register_store(2, StoreRouter::new(2, tx_b));
    a.add_store(2, b.local_addr().expect("address"));
    b.add_store(1, a.local_addr().expect("address"));
    let (ta, tb) = (a.transport(), b.transport());
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    // The first exchange dials the connections; it is not measured.
    for index in 1..=count as u64 + 1 {
        std::thread::sleep(ROUND_TRIP_GAP);
        let t = Instant::now();
        ta.send(2, vec![append(1, 2, index)]);
        wait_raft(&rx_b);
        tb.send(1, vec![append(2, 1, index)]);
        wait_raft(&rx_a);
        if index > 1 {
            h.record(t.elapsed().as_nanos() as u64).expect("record");
        }
    }
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
    let udp = udp_round_trips(args.round_trips);
    a.shutdown();
    b.shutdown();
    let _ = std::fs::remove_dir_all(&cert_dir);
    let floor = log3["p50_ms"].as_f64().unwrap_or(f64::NAN)
        + ms(call.value_at_quantile(0.5))
        + ms(raft.value_at_quantile(0.5));
    let out = json!({
        "log_write_1_writer": log1,
        "log_write_3_writers": log3,
        "client_call_round_trip": hist_json(&call),
        "raft_message_round_trip": hist_json(&raft),
        "udp_round_trip": hist_json(&udp),
        "put_floor_p50_ms": floor,
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
        "  UDP round trip (OS alone)    {:.3} ms   (p90 {:.3})",
        ms(udp.value_at_quantile(0.5)),
        ms(udp.value_at_quantile(0.9))
    );
    println!("  floor of one put (3 writers + both round trips): {floor:.3} ms");
}

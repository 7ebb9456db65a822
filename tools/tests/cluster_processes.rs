//! `basalt start` as three real processes on 127.0.0.1, each with one store on a loop device over
//! a sparse file (when root and `losetup` works; `BASALT_TEST_FILE_DEVICES=1` forces files) or on
//! a plain file, with certificates from `basalt certs`. `basalt-ctl status` must see every store up
//! and one leader per region, `/metrics` must serve the store's series, a split must show up, and
//! SIGTERM must stop every node with status 0 and a restart must come back healthy.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

mod process_harness;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use process_harness::LoopDevices;
use tools::config::NodeConfigBuilder;

const BASALT: &str = env!("CARGO_BIN_EXE_basalt");
const BASALT_CTL: &str = env!("CARGO_BIN_EXE_basalt-ctl");
const NODES: usize = 3;
const INITIAL_REGIONS: usize = 4;
const DEVICE_BYTES: u64 = 512 << 20;
/// How long a cluster may take to elect every leader (after start, restart or split).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM (final checkpoint included).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Three `basalt start` children and their devices. Dropping it kills the children still
/// running and detaches the loop devices, so a failed assertion leaves nothing behind.
struct Cluster {
    dir: tempfile::TempDir,
    quic: Vec<SocketAddr>,
    metrics: Vec<SocketAddr>,
    /// Detached on drop, after `Drop for Cluster` has killed the children.
    loops: Option<LoopDevices>,
    children: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Free loopback ports: UDP for QUIC, TCP for metrics (bound together, released together).
fn free_addrs() -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let udp: Vec<UdpSocket> = (0..NODES)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind udp"))
        .collect();
    let tcp: Vec<TcpListener> = (0..NODES)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind tcp"))
        .collect();
    (
        udp.iter().map(|s| s.local_addr().unwrap()).collect(),
        tcp.iter().map(|s| s.local_addr().unwrap()).collect(),
    )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let (quic, metrics) = free_addrs();
        let mut c = Cluster {
            dir,
            quic,
            metrics,
            loops: None,
            children: (0..NODES).map(|_| None).collect(),
        };
        let mut certs = Command::new(BASALT);
        certs.arg("certs").arg("--dir").arg(c.path("certs"));
        for i in 1..=NODES {
            certs.args(["--node", &format!("node{i}=127.0.0.1,localhost")]);
        }
        run(certs.args(["--client", "admin"]));
        c.loops = LoopDevices::attach(BASALT, c.dir.path(), NODES, DEVICE_BYTES);
        if let Some(l) = &c.loops {
            println!("devices: loop devices {:?} over sparse files", l.devices);
        } else {
            println!("devices: regular files, created and formatted by `basalt start`");
        }
        for i in 1..=NODES {
            std::fs::write(c.config_path(i), c.config_text(i)).expect("write config");
        }
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.path(&format!("node{i}.toml"))
    }

    fn config_text(&self, i: usize) -> String {
        let listen = self.quic[i - 1];
        let builder = match self.loops.as_ref().and_then(|l| l.devices.get(i - 1)) {
            Some(dev) => NodeConfigBuilder::new(i as u64, listen, dev),
            None => NodeConfigBuilder::new(i as u64, listen, format!("store{i}.img"))
                .create_size_bytes(DEVICE_BYTES),
        };
        builder
            .metrics_addr(Some(self.metrics[i - 1]))
            .one_store_per_node(&self.quic, true)
            .colocated(self.quic.len())
            .initial_regions(INITIAL_REGIONS as u32)
            .raft_timing(Duration::from_millis(50), 10, 2)
            .to_toml()
            .expect("config text")
    }

    /// Starts every node; their output is appended to `node{i}.log`.
    fn start_all(&mut self) {
        for i in 1..=NODES {
            assert!(self.children[i - 1].is_none(), "node {i} already running");
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(&format!("node{i}.log")))
                .expect("log file");
            let child = Command::new(BASALT)
                .env("NO_COLOR", "1")
                .arg("-v")
                .arg("start")
                .arg("--config")
                .arg(self.config_path(i))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("spawn basalt start");
            self.children[i - 1] = Some(child);
        }
    }

    /// Panics if a node exited while it should be running.
    fn check_running(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(c) = child {
                if let Some(status) = c.try_wait().expect("try_wait") {
                    panic!("node {} exited unexpectedly: {status}", i + 1);
                }
            }
        }
    }

    /// SIGTERMs every node and returns their exit statuses (panics after [`EXIT_TIMEOUT`]).
    fn stop_all(&mut self) -> Vec<ExitStatus> {
        for child in self.children.iter().flatten() {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let mut statuses = Vec::new();
        for (i, slot) in self.children.iter_mut().enumerate() {
            let child = slot.as_mut().expect("node running");
            let status = loop {
                if let Some(s) = child.try_wait().expect("try_wait") {
                    break s;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} still running {EXIT_TIMEOUT:?} after SIGTERM",
                    i + 1
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            *slot = None;
            statuses.push(status);
        }
        statuses
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let endpoints: Vec<String> = self.quic.iter().map(|a| a.to_string()).collect();
        Command::new(BASALT_CTL)
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .arg("--certs")
            .arg(self.path("certs"))
            .args(["--name", "admin", "--timeout-s", "3"])
            .args(args)
            .output()
            .expect("spawn basalt-ctl")
    }

    /// Polls `basalt-ctl status` until it exits 0 with every store up and `regions` regions;
    /// returns its output.
    fn wait_healthy(&mut self, regions: usize) -> String {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            self.check_running();
            let out = self.ctl(&["status"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            // Healthy, and every store applied what the leader applied (followers learn a new
            // commit index within a tick, not with the write that made it).
            if out.status.success()
                && summary(&text) == Some((NODES, 0, regions))
                && converged(&text)
            {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no healthy cluster with {regions} regions after {HEALTHY_TIMEOUT:?}; last status \
                 ({}):\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls every node's `/metrics` until the `basalt_leaders` values sum to `leaders`;
    /// returns the pages.
    fn wait_metrics_leaders(&self, leaders: f64) -> Vec<String> {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let pages: Vec<String> = self.metrics.iter().map(|a| scrape(*a)).collect();
            let sum: f64 = pages.iter().map(|p| metric_sum(p, "basalt_leaders")).sum();
            if sum == leaders {
                return pages;
            }
            assert!(
                Instant::now() < deadline,
                "basalt_leaders sums to {sum}, not {leaders}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn print_logs(&self) {
        for i in 1..=NODES {
            let text =
                std::fs::read_to_string(self.path(&format!("node{i}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("---- node{i}.log (last {} lines) ----", tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// `(stores up, down, regions)` from the status summary line.
fn summary(status: &str) -> Option<(usize, usize, usize)> {
    let line = status.lines().find(|l| l.starts_with("summary: "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| words.get(i)?.parse::<usize>().ok();
    Some((num(1)?, num(4)?, num(6)?))
}

/// Whether, in every region of a status, all stores report the same applied index.
fn converged(status: &str) -> bool {
    let mut applied: Vec<&str> = Vec::new();
    for line in status.lines().map(str::trim) {
        if line.starts_with("region ") || line.starts_with("summary: ") {
            if applied.windows(2).any(|w| w[0] != w[1]) {
                return false;
            }
            applied.clear();
        } else if let Some(rest) = line.strip_prefix("store ") {
            if let Some((_, after)) = rest.split_once(": applied ") {
                applied.push(after.split_whitespace().next().unwrap_or(""));
            }
        }
    }
    applied.windows(2).all(|w| w[0] == w[1])
}

/// `(region id, range)` of every region line, asserting each names exactly one leader.
fn regions(status: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for line in status.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("region ") else {
            continue;
        };
        assert!(
            rest.contains(": leader on store "),
            "region without one leader: {line}"
        );
        let (id, rest) = rest.split_once(' ').expect("region line");
        let range = rest.rsplit_once(": leader").expect("region line").0;
        out.push((id.parse().expect("region id"), range.to_string()));
    }
    out
}

/// Asserts the status names every store up and `n` regions with one leader each.
fn assert_status(status: &str, n: usize) -> Vec<(u64, String)> {
    for store in 1..=NODES {
        let prefix = format!("store {store} at ");
        assert!(
            status
                .lines()
                .any(|l| l.trim().starts_with(&prefix) && l.contains(": up,")),
            "store {store} not up:\n{status}"
        );
    }
    let found = regions(status);
    assert_eq!(found.len(), n, "regions:\n{status}");
    found
}

/// One plain HTTP/1.1 GET /metrics; returns the body of a 200 answer.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "metrics answer: {head}");
    body.to_string()
}

/// The sum of every sample of metric `name` (any labels) in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Splits the region starting at 0x40 (`@`) at `a`, retrying while leadership settles.
fn split_second_region(c: &Cluster, regions: &[(u64, String)]) {
    let (id, _) = regions
        .iter()
        .find(|(_, range)| range.starts_with("[b\"@\","))
        .expect("a region starting at 0x40");
    let deadline = Instant::now() + HEALTHY_TIMEOUT;
    loop {
        let out = c.ctl(&["split", "--region", &id.to_string(), "--key", "a"]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "split failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_clean_exits(statuses: &[ExitStatus]) {
    for (i, s) in statuses.iter().enumerate() {
        assert_eq!(s.code(), Some(0), "node {} after SIGTERM: {s}", i + 1);
    }
}

#[test]
fn three_processes_elect_split_stop_and_restart() {
    let mut c = Cluster::new();
    c.start_all();
    let status = c.wait_healthy(INITIAL_REGIONS);
    println!("{status}");
    let initial = assert_status(&status, INITIAL_REGIONS);

    let pages = c.wait_metrics_leaders(INITIAL_REGIONS as f64);
    for (i, page) in pages.iter().enumerate() {
        for name in [
            "basalt_leaders",
            "basalt_proposals_total",
            "basalt_log_write_latency_seconds_bucket",
        ] {
            assert!(page.contains(name), "node {} /metrics lacks {name}", i + 1);
        }
    }

    split_second_region(&c, &initial);
    let status = c.wait_healthy(INITIAL_REGIONS + 1);
    let ranges: Vec<String> = assert_status(&status, INITIAL_REGIONS + 1)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert!(ranges.contains(&"[b\"@\", b\"a\")".to_string()), "{status}");
    assert!(
        ranges.contains(&"[b\"a\", b\"\\x80\")".to_string()),
        "{status}"
    );

    assert_clean_exits(&c.stop_all());

    c.start_all();
    let status = c.wait_healthy(INITIAL_REGIONS + 1);
    println!("after restart:\n{status}");
    assert_status(&status, INITIAL_REGIONS + 1);
    c.wait_metrics_leaders((INITIAL_REGIONS + 1) as f64);
    assert_clean_exits(&c.stop_all());
}

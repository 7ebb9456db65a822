//! state_bench: the engine's state store on a real file (io_uring, `O_DIRECT`), issue 4's figures.
//!
//! 1. `apply`: puts/s of 256-byte values applied through `StateStore::apply`, one put per
//!    command, round-robin over 1 and over 100 regions.
//! 2. `load`: a region of `--keys` keys (default 10 million; 64 puts per command), then point-get
//!    and 100-key-scan latency (p50/p99/max) at random keys, and the index's memory per key
//!    (the store's own estimate and the process's resident-set growth).
//! 3. `checkpoint`: time to checkpoint that store, and to reopen it (restart: load the checkpoint).
//! 4. `snapshot`: a region of `--snapshot-mib` MiB of values (default 1024); snapshot build
//!    throughput (chunks produced from a frozen view, MB/s) while a tick loop (a raftlog `RawNode`
//!    ticked every `--tick-ms`, default 100) runs on its own thread and records its worst
//!    lateness; then install throughput into a second store (verify + write + durable switch).
//!
//! Run: `cargo run --release -p benches --bin state_bench [-- --keys N --snapshot-mib M
//! --tick-ms T --dir DIR --quick]`. The files (sparse, up to ~16 GiB) go to `--dir` (default
//! `target/state-bench`; not tmpfs: `O_DIRECT`) and are removed at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::device::{self, OpenOptions};
use engine::format::{format, FormatOptions};
use engine::log::{LogBatch, LogConfig, LogStore};
use engine::state::snapshot::SnapshotMeta;
use engine::state::storage::RegionStorage;
use engine::state::worker::{
    ApplyConfig, ApplyEvent, ApplyRequest, ApplyTask, ApplyWorker, SnapshotConfig, SnapshotEvent,
    SnapshotWorker,
};
use engine::state::{Command, Op, RegionState, StateConfig, StateStore};
use raftlog::Storage;
use raftlog::{ConfState, Config, Entry, EntryType, MemStorage, RawNode};

const VALUE_BYTES: usize = 256;

struct Args {
    keys: u64,
    snapshot_mib: u64,
    tick_ms: u64,
    apply_ops: u64,
    dir: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        keys: 10_000_000,
        snapshot_mib: 1024,
        tick_ms: 100,
        apply_ops: 1_000_000,
        dir: PathBuf::from("target/state-bench"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--keys" => a.keys = value().parse().unwrap_or_else(|_| die("--keys: a number")),
            "--snapshot-mib" => {
                a.snapshot_mib = value()
                    .parse()
                    .unwrap_or_else(|_| die("--snapshot-mib: a number"))
            }
            "--tick-ms" => {
                a.tick_ms = value()
                    .parse()
                    .unwrap_or_else(|_| die("--tick-ms: a number"))
            }
            "--dir" => a.dir = PathBuf::from(value()),
            "--quick" => {
                a.keys = 200_000;
                a.snapshot_mib = 64;
                a.apply_ops = 50_000;
            }
            other => die(&format!("unknown option {other}")),
        }
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("state_bench: {msg}");
    std::process::exit(2)
}

fn key(region: u64, i: u64) -> Bytes {
    Bytes::from(format!("r{region:04}k{i:011}").into_bytes())
}

fn value(i: u64) -> Bytes {
    let mut v = vec![0u8; VALUE_BYTES];
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Bytes::from(v)
}

fn open_store(path: &Path, size_bytes: u64, fresh: bool) -> (StateStore, LogStore) {
    let opts = OpenOptions {
        create_size_bytes: Some(size_bytes),
        ..OpenOptions::default()
    };
    let mut h = device::open_store(path, &opts).unwrap_or_else(|e| die(&e.to_string()));
    let label = path.display().to_string();
    if fresh {
        let f = FormatOptions {
            force: true,
            log_segment_count: Some(2),
            ..FormatOptions::new(label.clone())
        };
        format(h.log.as_mut(), &f).unwrap_or_else(|e| die(&e.to_string()));
    }
    let config = LogConfig {
        device_label: label.clone(),
        ..LogConfig::default()
    };
    let (log, _) = LogStore::open(h.log, config).unwrap_or_else(|e| die(&e.to_string()));
    let sb = *log.superblock();
    let state = StateStore::open(h.state_write, h.state_read, &sb, StateConfig::new(label))
        .unwrap_or_else(|e| die(&e.to_string()));
    (state, log)
}

fn region(id: u64) -> RegionState {
    RegionState::new(id, ConfState::from((vec![1], vec![])))
}

/// Applies `ops` single-put commands round-robin over `regions` fresh regions; puts/s.
fn bench_apply(store: &mut StateStore, first_region: u64, regions: u64, ops: u64) -> f64 {
    for r in 0..regions {
        store
            .create_region(region(first_region + r))
            .unwrap_or_else(|e| die(&e.to_string()));
    }
    let mut index = vec![0u64; regions as usize];
    let cmds: Vec<Bytes> = (0..ops)
        .map(|i| {
            let r = first_region + i % regions;
            Command {
                client_id: 1,
                sequence: i,
                ops: vec![Op::Put {
                    key: key(r, i),
                    value: value(i),
                }],
            }
            .encode()
        })
        .collect();
    let started = Instant::now();
    for (i, data) in cmds.iter().enumerate() {
        let r = i as u64 % regions;
        index[r as usize] += 1;
        let cmd = Command::decode(data).unwrap_or_else(|e| die(&e.to_string()));
        store
            .apply(first_region + r, index[r as usize], 1, &cmd)
            .unwrap_or_else(|e| die(&e.to_string()))
            .unwrap_or_else(|e| die(&e.to_string()));
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// Loads `keys` keys into a fresh region, 64 puts per command; keys/s.
fn load(store: &mut StateStore, region_id: u64, keys: u64) -> f64 {
    store
        .create_region(region(region_id))
        .unwrap_or_else(|e| die(&e.to_string()));
    let started = Instant::now();
    let mut index = 0;
    let mut i = 0;
    while i < keys {
        let n = 64.min(keys - i);
        let ops = (i..i + n)
            .map(|k| Op::Put {
                key: key(region_id, k),
                value: value(k),
            })
            .collect();
        index += 1;
        store
            .apply(
                region_id,
                index,
                1,
                &Command {
                    client_id: 1,
                    sequence: index,
                    ops,
                },
            )
            .unwrap_or_else(|e| die(&e.to_string()))
            .unwrap_or_else(|e| die(&e.to_string()));
        i += n;
    }
    keys as f64 / started.elapsed().as_secs_f64()
}

fn percentiles(mut ns: Vec<u64>) -> String {
    ns.sort_unstable();
    let at = |p: f64| ns[((ns.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    format!(
        "p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn bench_reads(store: &StateStore, region_id: u64, keys: u64) {
    let mut rng = Rng(0x1234_5678);
    let gets = 50_000.min(keys * 4);
    let mut ns = Vec::with_capacity(gets as usize);
    for _ in 0..gets {
        let i = rng.below(keys);
        let t = Instant::now();
        let got = store
            .get(region_id, &key(region_id, i))
            .unwrap_or_else(|e| die(&e.to_string()));
        ns.push(t.elapsed().as_nanos() as u64);
        if got.as_deref() != Some(&value(i)[..]) {
            die(&format!("get of key {i} returned the wrong value"));
        }
    }
    println!("  point get ({gets} random keys): {}", percentiles(ns));
    let scans = 5_000.min(keys);
    let mut ns = Vec::with_capacity(scans as usize);
    for _ in 0..scans {
        let start = key(region_id, rng.below(keys.saturating_sub(100).max(1)));
        let t = Instant::now();
        let got = store
            .scan(region_id, &start, None, 100)
            .unwrap_or_else(|e| die(&e.to_string()));
        ns.push(t.elapsed().as_nanos() as u64);
        if got.len() != 100.min(keys as usize) {
            die(&format!("scan returned {} keys", got.len()));
        }
    }
    println!(
        "  scan of 100 keys ({scans} random starts): {}",
        percentiles(ns)
    );
}

/// Ticks a single-voter `RawNode` every `tick` and asks `storage` for a snapshot after each
/// tick, until one is returned: (worst lateness, ticks, the snapshot).
fn tick_loop(tick: Duration, storage: &RegionStorage) -> (Duration, u64, raftlog::Snapshot) {
    let mem = MemStorage::new_with_conf_state(ConfState::from((vec![1], vec![])));
    let mut node = RawNode::new(&Config::new(1), mem).unwrap_or_else(|e| die(&e.to_string()));
    let mut next = Instant::now() + tick;
    let mut worst = Duration::ZERO;
    let mut ticks = 0;
    loop {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        worst = worst.max(Instant::now().saturating_duration_since(next));
        ticks += 1;
        node.tick();
        if node.has_ready() {
            let mut rd = node.ready();
            if let Some(hs) = rd.hs() {
                node.store().set_hard_state(*hs);
            }
            node.store()
                .append(rd.entries())
                .unwrap_or_else(|e| die(&e.to_string()));
            rd.take_committed_entries();
            let mut light = node.advance(rd);
            light.take_committed_entries();
            node.advance_apply();
        }
        match storage.snapshot(0) {
            Ok(s) => return (worst, ticks, s),
            Err(raftlog::Error::Store(raftlog::StorageError::SnapshotTemporarilyUnavailable)) => {}
            Err(e) => die(&format!("snapshot: {e}")),
        }
        next += tick;
    }
}

/// The snapshot phase the way a store runs it: the state store on its apply worker, builds on
/// the snapshot worker, and a tick loop that asks `RegionStorage::snapshot` every tick (getting
/// `SnapshotTemporarilyUnavailable` until the build is done) and records its worst lateness.
fn bench_snapshot(mut store: StateStore, mut log: LogStore, args: &Args, install_path: &Path) {
    let region_id = 900;
    let keys = args.snapshot_mib * (1 << 20) / VALUE_BYTES as u64;
    let rate = load(&mut store, region_id, keys);
    println!("snapshot region: {keys} keys of {VALUE_BYTES} B loaded at {rate:.0} keys/s");
    let mut b = LogBatch::new();
    b.set_conf_state(region_id, ConfState::from((vec![1], vec![])));
    log.write_sync(b).unwrap_or_else(|e| die(&e.to_string()));
    let apply =
        ApplyWorker::spawn(store, ApplyConfig::default()).unwrap_or_else(|e| die(&e.to_string()));
    let snap = SnapshotWorker::spawn(SnapshotConfig::default(), apply.sender(), None)
        .unwrap_or_else(|e| die(&e.to_string()));
    let storage = RegionStorage::new(log.region_log(region_id), snap.handle());
    let tick = Duration::from_millis(args.tick_ms);
    let started = Instant::now();
    // The worker's `Built` event times the build itself; the tick loop only sees it at its
    // next tick.
    let built_at = std::thread::scope(|s| {
        let events = snap.events();
        let waiter = s.spawn(move || loop {
            match events.recv() {
                Ok(SnapshotEvent::Built(_)) => return Instant::now(),
                Ok(_) => continue,
                Err(_) => die("snapshot worker stopped"),
            }
        });
        let r = tick_loop(tick, &storage);
        (
            waiter
                .join()
                .unwrap_or_else(|_| die("event waiter panicked")),
            r,
        )
    });
    let (built_at, (worst, ticks, snapshot)) = built_at;
    let build_s = built_at.duration_since(started).as_secs_f64();
    let built = snap
        .handle()
        .built(region_id)
        .unwrap_or_else(|| die("snapshot returned but not published"));
    let bytes = built.meta.total_bytes as usize;
    println!(
        "  build (request to built, {} chunks, {:.0} MB): {build_s:.2} s = {:.0} MB/s; tick loop: {ticks} ticks, worst lateness {:.1} ms at a {} ms tick ({:.2} of a tick)",
        built.meta.chunk_count,
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / build_s,
        worst.as_secs_f64() * 1e3,
        args.tick_ms,
        worst.as_secs_f64() * 1e3 / args.tick_ms as f64
    );
    let meta = SnapshotMeta::decode(&snapshot.data).unwrap_or_else(|e| die(&e.to_string()));
    drop(storage);
    drop(snap);
    drop(apply);

    let (target, _target_log) =
        open_store(install_path, (4 * args.snapshot_mib.max(256)) << 20, true);
    let t_apply =
        ApplyWorker::spawn(target, ApplyConfig::default()).unwrap_or_else(|e| die(&e.to_string()));
    let t_snap = SnapshotWorker::spawn(SnapshotConfig::default(), t_apply.sender(), None)
        .unwrap_or_else(|e| die(&e.to_string()));
    // Chunks past the worker's in-memory limit are re-read from the frozen view on demand:
    // fetch them all first so the install figure is the receiver's alone.
    let fetch = Instant::now();
    let chunks: Vec<Bytes> = (0..built.meta.chunk_count)
        .map(|n| built.chunk(n).unwrap_or_else(|e| die(&e.to_string())))
        .collect();
    if !built.in_memory() {
        println!(
            "  chunks re-read from the frozen view (sender side, beyond the in-memory limit): {:.2} s = {:.0} MB/s",
            fetch.elapsed().as_secs_f64(),
            bytes as f64 / 1e6 / fetch.elapsed().as_secs_f64()
        );
    }
    let (tx, rx) = crossbeam_channel::bounded(16);
    let started = Instant::now();
    if !t_snap.handle().install(meta, rx) {
        die("the snapshot worker refused the install");
    }
    for c in chunks {
        if tx.send(c).is_err() {
            break;
        }
    }
    drop(tx);
    match t_snap.events().recv() {
        Ok(SnapshotEvent::Installed { .. }) => {}
        other => die(&format!("install: {other:?}")),
    }
    let install_s = started.elapsed().as_secs_f64();
    println!(
        "  install (verify, write, durable switch): {install_s:.2} s = {:.0} MB/s",
        bytes as f64 / 1e6 / install_s
    );
}

/// The same puts through the apply worker (the store on its own thread, committed entries
/// sent as `ApplyTask`s of up to 64 entries, results reported back): puts/s.
fn bench_apply_worker(
    store: StateStore,
    first_region: u64,
    regions: u64,
    ops: u64,
) -> (f64, StateStore) {
    let worker =
        ApplyWorker::spawn(store, ApplyConfig::default()).unwrap_or_else(|e| die(&e.to_string()));
    for r in 0..regions {
        worker
            .send(ApplyRequest::CreateRegion(region(first_region + r)))
            .unwrap_or_else(|e| die(&e.to_string()));
    }
    let per_region = ops / regions;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut applied = 0u64;
    let mut next_index = 1;
    while next_index <= per_region {
        let n = 64.min(per_region - next_index + 1);
        for r in 0..regions {
            let region_id = first_region + r;
            let entries = (next_index..next_index + n)
                .map(|i| Entry {
                    entry_type: EntryType::EntryNormal,
                    term: 1,
                    index: i,
                    data: Command {
                        client_id: 1,
                        sequence: i,
                        ops: vec![Op::Put {
                            key: key(region_id, i),
                            value: value(i),
                        }],
                    }
                    .encode(),
                    context: Bytes::new(),
                })
                .collect();
            worker
                .send(ApplyRequest::Apply(ApplyTask::new(region_id, entries)))
                .unwrap_or_else(|e| die(&e.to_string()));
            sent += n;
            while let Ok(ev) = worker.events().try_recv() {
                applied += count_applied(ev);
            }
        }
        next_index += n;
    }
    while applied < sent {
        match worker.events().recv() {
            Ok(ev) => applied += count_applied(ev),
            Err(_) => die("apply worker stopped"),
        }
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    (rate, worker.stop().unwrap_or_else(|e| die(&e.to_string())))
}

fn count_applied(ev: ApplyEvent) -> u64 {
    match ev {
        ApplyEvent::Applied { results, .. } => results.len() as u64,
        ApplyEvent::CheckpointDone(_) => 0,
        other => die(&format!("apply worker: {other:?}")),
    }
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.dir)
        .unwrap_or_else(|e| die(&format!("{}: {e}", args.dir.display())));
    let main_path = args.dir.join("state.img");
    let install_path = args.dir.join("install.img");
    let size = 16u64 << 30;
    println!(
        "state_bench: {} CPUs, files in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.dir.display()
    );
    let (mut store, log) = open_store(&main_path, size, true);

    for regions in [1, 100] {
        let rate = bench_apply(&mut store, 1 + regions * 1000, regions, args.apply_ops);
        let (worker_rate, back) =
            bench_apply_worker(store, 1 + regions * 1000 + 500, regions, args.apply_ops);
        store = back;
        println!(
            "apply, {regions} region(s), {} single-put commands of {VALUE_BYTES} B values: {rate:.0} puts/s direct, {worker_rate:.0} puts/s through the apply worker (64 entries per task)",
            args.apply_ops
        );
    }

    let rss0 = rss_bytes();
    let mem0 = store.index_memory_bytes();
    let big = 500;
    let rate = load(&mut store, big, args.keys);
    let rss1 = rss_bytes();
    println!(
        "load: {} keys at {rate:.0} keys/s; index memory {:.0} B/key (store's estimate), resident set grew {:.0} B/key",
        args.keys,
        (store.index_memory_bytes() - mem0) as f64 / args.keys as f64,
        rss1.saturating_sub(rss0) as f64 / args.keys as f64
    );
    bench_reads(&store, big, args.keys);

    let t = Instant::now();
    let info = store.checkpoint().unwrap_or_else(|e| die(&e.to_string()));
    println!(
        "checkpoint: {:.2} s, {:.0} MB of checkpoint records",
        t.elapsed().as_secs_f64(),
        info.bytes as f64 / 1e6
    );
    drop(store);
    drop(log);
    let t = Instant::now();
    let (store, log) = open_store(&main_path, size, false);
    println!(
        "restart (open the log and the state store, load the checkpoint): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    bench_reads(&store, big, args.keys);

    bench_snapshot(store, log, &args, &install_path);
    let _ = std::fs::remove_file(&main_path);
    let _ = std::fs::remove_file(&install_path);
}

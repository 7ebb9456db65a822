//! Crash safety with real processes: three `basalt start` nodes (loop devices when root, files
//! otherwise), writers overwriting 200 keys with unique values through the client, and three
//! rounds of SIGKILL + restart of one node (the leader of a region in two of them). Afterwards
//! every key reads back with its last acknowledged value (or a later attempt whose outcome was
//! unknown), and, once every store has applied the same index, the stopped stores hold exactly
//! the same keys and values, read straight from their devices.

mod process_harness;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::Client;
use process_harness::{read_store, LoopDevices, StoreContents};
use tools::demo::cluster::{cluster_status, healthy, ClusterSpec, LocalCluster, StoreDevice};
use transport::proto::StoreStatus;

const BASALT: &str = env!("CARGO_BIN_EXE_basalt");
const NODES: usize = 3;
const REGIONS: usize = 2;
const KEYS: usize = 200;
const WRITERS: usize = 4;
const DEVICE_BYTES: u64 = 1 << 30;
const WAIT: Duration = Duration::from_secs(60);
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Key `i`: the first byte spreads the keys over both regions (split at 0x80).
fn key(i: usize) -> Bytes {
    let mut k = vec![(i * 256 / KEYS) as u8];
    k.extend_from_slice(format!("key{i:04}").as_bytes());
    Bytes::from(k)
}

/// What the writers know of one key.
#[derive(Default, Clone, Debug)]
struct KeyHistory {
    /// The last value whose put was acknowledged.
    acked: Option<u64>,
    /// Values whose put failed: each may or may not have been applied, possibly even after a
    /// later acknowledged put (an unknown outcome has no end), so each stays acceptable.
    unknown: Vec<u64>,
    /// Every attempt: value, outcome, when (since the writers began), for failure reports.
    log: Vec<(u64, Result<(), String>, Duration)>,
}

impl KeyHistory {
    fn allows(&self, found: Option<u64>) -> bool {
        match found {
            None => self.acked.is_none(),
            Some(v) => self.acked == Some(v) || self.unknown.contains(&v),
        }
    }
}

/// The writer tasks and what they recorded.
struct Writers {
    history: Arc<Mutex<BTreeMap<Bytes, KeyHistory>>>,
    acks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn spawn(rt: &tokio::runtime::Runtime, client: &Client) -> Writers {
        let mut w = Writers {
            history: Arc::default(),
            acks: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        let counter = Arc::new(AtomicU64::new(1));
        for lane in 0..WRITERS {
            let client = client.with_timeout(Duration::from_secs(3));
            let (counter, history) = (counter.clone(), w.history.clone());
            let (acks, stop) = (w.acks.clone(), w.stop.clone());
            w.tasks.push(rt.spawn(async move {
                let keys: Vec<Bytes> = (lane..KEYS).step_by(WRITERS).map(key).collect();
                let mut i = 0;
                let began = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let k = keys[i % keys.len()].clone();
                    i += 1;
                    let v = counter.fetch_add(1, Ordering::SeqCst);
                    let r = client.put(k.clone(), Bytes::from(v.to_string())).await;
                    let ok = r.is_ok();
                    {
                        let mut h = history.lock().unwrap();
                        let e = h.entry(k).or_default();
                        e.log
                            .push((v, r.map_err(|e| format!("{e:?}")), began.elapsed()));
                        if ok {
                            e.acked = Some(v);
                        } else {
                            e.unknown.push(v);
                        }
                    }
                    if ok {
                        acks.fetch_add(1, Ordering::SeqCst);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        w
    }

    /// Waits until 20 more writes are acknowledged.
    async fn wait_progress(&self, what: &str) {
        let before = self.acks.load(Ordering::SeqCst);
        let deadline = Instant::now() + WAIT;
        while self.acks.load(Ordering::SeqCst) < before + 20 {
            assert!(Instant::now() < deadline, "no write acknowledged {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> BTreeMap<Bytes, KeyHistory> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        let h = self.history.lock().unwrap().clone();
        h
    }
}

async fn statuses(c: &LocalCluster) -> Vec<Option<StoreStatus>> {
    let tls = c.client_tls().expect("tls");
    cluster_status(c.endpoints(), &tls, STATUS_TIMEOUT).await
}

async fn wait_healthy(c: &mut LocalCluster) {
    let deadline = Instant::now() + WAIT;
    loop {
        c.check_running().expect("nodes running");
        if healthy(&statuses(c).await, NODES, REGIONS) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster not healthy within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Region id -> applied index, per node (1-based index - 1); `None` for a silent node.
fn applied(s: &[Option<StoreStatus>]) -> Vec<Option<BTreeMap<u64, u64>>> {
    s.iter()
        .map(|n| {
            n.as_ref().map(|st| {
                st.regions
                    .iter()
                    .map(|r| (r.info.region_id, r.applied_index))
                    .collect()
            })
        })
        .collect()
}

/// Waits until node `i` has applied, in every region, at least what every node had applied
/// when the wait began.
async fn wait_caught_up(c: &mut LocalCluster, i: usize) {
    let mut target = BTreeMap::<u64, u64>::new();
    for node in applied(&statuses(c).await).into_iter().flatten() {
        for (r, a) in node {
            let t = target.entry(r).or_default();
            *t = (*t).max(a);
        }
    }
    assert_eq!(target.len(), REGIONS, "regions seen: {target:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        c.check_running().expect("nodes running");
        let now = applied(&statuses(c).await);
        if let Some(mine) = &now[i - 1] {
            if target
                .iter()
                .all(|(r, t)| mine.get(r).is_some_and(|a| a >= t))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node{i} did not catch up to {target:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node answers with the same applied index in every region.
async fn wait_all_applied_equal(c: &mut LocalCluster) -> BTreeMap<u64, u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = applied(&statuses(c).await);
        if now.iter().all(|n| n.is_some()) {
            let first = now[0].clone().unwrap();
            if first.len() == REGIONS && now.iter().all(|n| n.as_ref() == Some(&first)) {
                return first;
            }
        }
        assert!(
            Instant::now() < deadline,
            "applied indexes never agreed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node (1-based) leading `k`'s region, retried while an election runs.
async fn leader_of(c: &LocalCluster, client: &Client, k: &[u8]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(addr)) = client.leader_of(k).await {
            if let Some(i) = c.node_at(addr) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader for {k:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The cluster, its devices and directory, torn down in that order (printing the node logs if
/// the test failed).
struct Fixture {
    cluster: LocalCluster,
    _loops: Option<LoopDevices>,
    devices: Vec<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 1..=NODES {
                eprintln!("---- node{i}.log ----\n{}", self.cluster.log_tail(i, 40));
            }
        }
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let loops = LoopDevices::attach(BASALT, dir.path(), NODES, DEVICE_BYTES);
    let (devices, specs) = match &loops {
        Some(l) => {
            println!("devices: loop devices {:?}", l.devices);
            let paths = l.paths();
            let specs = paths.iter().cloned().map(StoreDevice::Formatted).collect();
            (paths, specs)
        }
        None => {
            println!("devices: sparse files");
            let paths = (1..=NODES)
                .map(|i| dir.path().join(format!("store{i}.img")))
                .collect();
            let file = StoreDevice::File {
                create_size_bytes: DEVICE_BYTES,
            };
            (paths, vec![file; NODES])
        }
    };
    let spec = ClusterSpec {
        dir: dir.path().to_path_buf(),
        binary: BASALT.into(),
        devices: specs,
        initial_regions: REGIONS as u32,
        raft: Some((Duration::from_millis(50), 10, 2)),
    };
    let cluster = LocalCluster::create(&spec).expect("cluster files");
    Fixture {
        cluster,
        _loops: loops,
        devices,
        _dir: dir,
    }
}

/// Kills node `victim`, keeps writing, restarts it and waits until it has caught up.
async fn crash_round(f: &mut Fixture, w: &Writers, victim: usize, why: &str) {
    let t = Instant::now();
    f.cluster.kill(victim).expect("SIGKILL");
    println!("SIGKILL node{victim} ({why})");
    w.wait_progress(&format!("after node{victim} was killed"))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.cluster.start(victim).expect("restart");
    wait_caught_up(&mut f.cluster, victim).await;
    println!(
        "node{victim} restarted and caught up, {:?} after the kill",
        t.elapsed()
    );
    w.wait_progress(&format!("after node{victim} came back"))
        .await;
}

/// The value found for every key, read through the client.
async fn read_all(client: &Client) -> BTreeMap<Bytes, Option<u64>> {
    let mut out = BTreeMap::new();
    for i in 0..KEYS {
        let v = client.get(key(i)).await.expect("final get");
        let n = v.map(|b| std::str::from_utf8(&b).unwrap().parse::<u64>().unwrap());
        out.insert(key(i), n);
    }
    out
}

#[test]
fn sigkill_and_restart_three_times_loses_no_acknowledged_write() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut f = fixture();
    f.cluster.start_all().expect("start nodes");
    rt.block_on(async {
        wait_healthy(&mut f.cluster).await;
        let tls = f.cluster.client_tls().expect("tls");
        let client = Client::connect(f.cluster.endpoints(), tls)
            .await
            .expect("connect");
        let w = Writers::spawn(&rt, &client);
        w.wait_progress("at the start").await;

        // Round 1: the leader of the low region; round 2: the leader of the high region;
        // round 3: a node that does not lead the low region.
        let low = key(0);
        let high = key(KEYS - 1);
        let victim = leader_of(&f.cluster, &client, &low).await;
        crash_round(&mut f, &w, victim, "leader of the low region").await;
        let victim = leader_of(&f.cluster, &client, &high).await;
        crash_round(&mut f, &w, victim, "leader of the high region").await;
        let leader = leader_of(&f.cluster, &client, &low).await;
        let victim = (1..=NODES).find(|n| *n != leader).unwrap();
        crash_round(&mut f, &w, victim, "a follower of the low region").await;

        let history = w.stop().await;
        // A write whose outcome was unknown may still be in flight: let it land first.
        wait_all_applied_equal(&mut f.cluster).await;
        let found = read_all(&client).await;
        let acked: usize = history.values().filter(|h| h.acked.is_some()).count();
        println!("{acked} of {KEYS} keys acknowledged at least once");
        assert_eq!(acked, KEYS, "every key was written");
        let wrong: Vec<String> = found
            .iter()
            .filter(|(k, v)| !history.get(*k).cloned().unwrap_or_default().allows(**v))
            .map(|(k, v)| format!("key {k:?}: found {v:?}, history {:?}", history.get(k)))
            .collect();
        let applied = wait_all_applied_equal(&mut f.cluster).await;
        println!("every store applied {applied:?}");
        client.close().await;
        check_stores(&mut f, &found, &applied, &wrong);
    });
}

/// Stops every node (cleanly) and checks each store holds exactly `found` at `applied`.
fn check_stores(
    f: &mut Fixture,
    found: &BTreeMap<Bytes, Option<u64>>,
    applied: &BTreeMap<u64, u64>,
    wrong: &[String],
) {
    for (i, status) in f.cluster.stop_all().expect("stop nodes") {
        assert_eq!(status.code(), Some(0), "node{i} after SIGTERM: {status}");
    }
    let expected: BTreeMap<Bytes, Bytes> = found
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), Bytes::from(v.as_ref()?.to_string()))))
        .collect();
    let contents: Vec<StoreContents> = f.devices.iter().map(|d| read_store(d)).collect();
    for w in wrong {
        eprintln!("{w}");
    }
    if !wrong.is_empty() {
        for (i, c) in contents.iter().enumerate() {
            let all: BTreeMap<Bytes, Bytes> = c.values().flat_map(|(_, kv)| kv.clone()).collect();
            let differ = all
                .iter()
                .filter(|(k, v)| expected.get(*k) != Some(*v))
                .count();
            eprintln!(
                "node{} store: {} keys, {differ} differ from what the client read",
                i + 1,
                all.len()
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} keys lost their last acknowledged value",
        wrong.len()
    );
    for (i, c) in contents.iter().enumerate() {
        let indexes: BTreeMap<u64, u64> = c.iter().map(|(r, (a, _))| (*r, *a)).collect();
        assert_eq!(&indexes, applied, "node{} applied indexes", i + 1);
        let all: BTreeMap<Bytes, Bytes> = c.values().flat_map(|(_, kv)| kv.clone()).collect();
        assert_eq!(all.len(), expected.len(), "node{} key count", i + 1);
        assert!(
            all == expected,
            "node{} holds other values than the cluster served",
            i + 1
        );
    }
    assert!(
        contents.windows(2).all(|w| w[0] == w[1]),
        "the stores differ region by region"
    );
}

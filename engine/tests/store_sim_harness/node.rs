//! One simulated store: its sim device, and while up, its loop, log sink and workers.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use engine::format::{format, FormatOptions};
use engine::io::sim::{FaultConfig, SimIo};
use engine::io::Geometry;
use engine::log::{LogBatch, LogConfig, LogStore, RegionLog, Ticket};
use engine::metrics::StoreMetrics;
use engine::state::worker::{
    ApplyConfig, ApplyEvent, ApplyRequest, ApplyWorker, BuiltSnapshot, SnapshotConfig,
    SnapshotEvent, SnapshotHandle, SnapshotWorker,
};
use engine::state::{StateConfig, StateStore};
use engine::store::{
    prepare, ClientRequest, ClientResponse, InlineSink, LogSink, Outgoing, RaftMessage, ReadMode,
    RegionInfo, RegionMeta, SnapshotReceipt, StoreConfig, StoreEvent, StoreLoop, Transport,
};

use crate::log_harness::SharedSim;
use crate::state_harness::CrashIo;

pub const BLOCK: u32 = 4096;
pub const SEGMENT_BYTES: u64 = 256 * 1024;
pub const LOG_SEGMENTS: u32 = 24;
pub const STATE_SEGMENTS: u64 = 40;

/// What a store sent, collected by the simulator after each flush.
pub enum Out {
    Raft {
        from: u64,
        to: u64,
        msgs: Vec<RaftMessage>,
    },
    Snapshot {
        from: u64,
        to: u64,
        message: Box<RaftMessage>,
        snapshot: Arc<BuiltSnapshot>,
    },
}

/// A store's transport: queues what it is given for the simulated network.
pub struct SimTransport {
    pub me: u64,
    pub out: Arc<Mutex<Vec<Out>>>,
}

impl Transport for SimTransport {
    fn send(&self, to_store: u64, msgs: Vec<RaftMessage>) {
        self.out.lock().unwrap().push(Out::Raft {
            from: self.me,
            to: to_store,
            msgs,
        });
    }

    fn send_snapshot(&self, to_store: u64, message: RaftMessage, snapshot: Arc<BuiltSnapshot>) {
        self.out.lock().unwrap().push(Out::Snapshot {
            from: self.me,
            to: to_store,
            message: Box::new(message),
            snapshot,
        });
    }
}

/// The log sink's state, shared with the simulator that polls the device.
pub struct SimLogInner {
    pub log: LogStore,
    /// Appended batches not yet durable, in order.
    pub tickets: VecDeque<(Ticket, u64)>,
    /// Batches refused at append.
    pub refused: Vec<(u64, String)>,
    /// Messages to send when a batch is released durable, by batch number.
    pub after: HashMap<u64, Outgoing>,
    pub transport: Arc<SimTransport>,
}

/// The loop's [`LogSink`]: appends to a `LogStore` on the sim device; the simulator polls it
/// and releases completions as `LogDone` at simulated times, in order.
pub struct SimLog(pub Arc<Mutex<SimLogInner>>);

impl LogSink for SimLog {
    fn append(&mut self, batch_no: u64, batch: LogBatch, after: Outgoing) {
        let mut g = self.0.lock().unwrap();
        g.after.insert(batch_no, after);
        match g.log.append(batch) {
            Ok(t) => g.tickets.push_back((t, batch_no)),
            Err(e) => g.refused.push((batch_no, e.to_string())),
        }
    }

    fn compact_to(&mut self, region_id: u64, index: u64) {
        let _ = self.0.lock().unwrap().log.compact_to(region_id, index);
    }

    fn region_log(&self, region_id: u64) -> RegionLog {
        self.0.lock().unwrap().log.region_log(region_id)
    }
}

/// A store while it runs.
pub struct Running {
    pub lp: StoreLoop,
    /// The harness's own log sink; `None` with `inline_log` (the loop's `InlineSink`).
    pub log: Option<Arc<Mutex<SimLogInner>>>,
    pub apply: ApplyWorker,
    pub snaps: SnapshotWorker,
    pub snap_handle: SnapshotHandle,
    pub relay_tx: Sender<ApplyRequest>,
    pub relay_rx: Receiver<ApplyRequest>,
    /// Durable batches waiting for their simulated completion time: (at_ms, batch_no, result).
    pub done: VecDeque<(u64, u64, Result<(), String>)>,
    pub last_done_ms: u64,
    pub builds: BTreeSet<u64>,
    /// Snapshots handed to the loop, with their receipt channel (only peeked at here).
    pub installs: BTreeMap<u64, Receiver<SnapshotReceipt>>,
    pub checkpoint_pending: bool,
    pub touched: bool,
    /// Applied commands seen in apply events: (region, index, term, (client, sequence)).
    pub applied: Vec<(u64, u64, u64, (u64, u64))>,
    /// Broken on purpose (the harness's own test): report batches durable at once.
    pub ack_early: bool,
}

/// One store of the cluster.
pub struct Node {
    pub id: u64,
    pub sim: Arc<Mutex<SimIo>>,
    pub budget: Arc<AtomicI64>,
    pub run: Option<Running>,
    pub restart_at_ms: Option<u64>,
    pub out: Arc<Mutex<Vec<Out>>>,
    pub regions: Vec<u64>,
    pub crashes: u32,
    pub read_mode: ReadMode,
    /// Overrides `StoreConfig::hibernate_idle_ticks`.
    pub hibernate_idle_ticks: Option<u32>,
    /// See `Params::inline_apply`.
    pub inline_apply: bool,
    /// See `Params::inline_log`.
    pub inline_log: bool,
    /// The store's metrics, kept across restarts.
    pub metrics: Arc<StoreMetrics>,
}

/// A formatted sim device for `store_id`.
pub fn device(seed: u64, store_id: u64) -> Arc<Mutex<SimIo>> {
    let capacity = engine::layout::SUPERBLOCK_AREA_BYTES
        + (LOG_SEGMENTS as u64 + STATE_SEGMENTS) * SEGMENT_BYTES;
    let geo = Geometry {
        block_size: BLOCK,
        capacity_bytes: capacity,
    };
    let faults = FaultConfig {
        latency_ops: (0, 2),
        ..FaultConfig::none()
    };
    let mut sim = SimIo::new(seed ^ store_id.wrapping_mul(0x1234_5678_9abc), geo, faults);
    let mut opts = FormatOptions::new(format!("sim-{store_id}"));
    opts.block_size = BLOCK;
    opts.segment_size_bytes = SEGMENT_BYTES;
    opts.log_segment_count = Some(LOG_SEGMENTS);
    opts.format_nonce = Some(seed ^ store_id);
    opts.store_id = Some(store_id);
    opts.cluster_id = Some(9);
    format(&mut sim, &opts).expect("format");
    Arc::new(Mutex::new(sim))
}

impl Node {
    pub fn new(seed: u64, id: u64, regions: Vec<u64>) -> Node {
        Node {
            id,
            sim: device(seed, id),
            budget: Arc::new(AtomicI64::new(i64::MAX)),
            run: None,
            restart_at_ms: None,
            out: Arc::new(Mutex::new(Vec::new())),
            regions,
            crashes: 0,
            read_mode: ReadMode::ReadIndex,
            hibernate_idle_ticks: None,
            inline_apply: false,
            inline_log: false,
            metrics: Arc::new(StoreMetrics::new()),
        }
    }

    /// Opens the store (bootstrapping `initial` on first open) and starts its loop.
    pub fn start(&mut self, seed: u64, initial: &[RegionMeta]) {
        let log_cfg = LogConfig {
            device_label: format!("sim-{}", self.id),
            cache_bytes_max: 1 << 20,
            batch_bytes_max: 64 * 1024,
            durable_writes: true,
        };
        let io = Box::new(SharedSim::new(Arc::clone(&self.sim)));
        let (mut log, _) = LogStore::open(io, log_cfg).expect("open log");
        let sb = *log.superblock();
        self.budget = Arc::new(AtomicI64::new(i64::MAX));
        let (w, r) = {
            let s = self.sim.lock().unwrap();
            (s.share(), s.share())
        };
        let mut scfg = StateConfig::new(format!("sim-{}", self.id));
        scfg.write_buffer_bytes = 16 * 1024;
        scfg.compaction_step_bytes = 16 * 1024;
        let mut state = StateStore::open(
            Box::new(CrashIo::new(w, Arc::clone(&self.budget))),
            Box::new(CrashIo::new(r, Arc::clone(&self.budget))),
            &sb,
            scfg,
        )
        .expect("open state store");
        let found = prepare(&mut log, &mut state, initial).expect("prepare");
        let acfg = ApplyConfig {
            checkpoint_log_bytes: 1 << 40,
            checkpoint_log_bytes_max: 1 << 40,
            ..ApplyConfig::default()
        };
        let apply = ApplyWorker::spawn(state, acfg).expect("apply worker");
        let (relay_tx, relay_rx) = unbounded();
        let snap_cfg = SnapshotConfig {
            chunk_bytes_max: 4096,
            ..SnapshotConfig::default()
        };
        let snaps = SnapshotWorker::spawn(snap_cfg, relay_tx.clone(), None).expect("snapshots");
        let snap_handle = snaps.handle();
        let mut cfg = StoreConfig::new(self.id);
        cfg.read_mode = self.read_mode;
        if let Some(t) = self.hibernate_idle_ticks {
            cfg.hibernate_idle_ticks = t;
        }
        // Distinct per restart (a `| 1` after adding 1 could give the same seed again, and the
        // restarted store would propose the same "new" region ids).
        cfg.rng_seed = (seed ^ 0x51ed)
            .wrapping_add(u64::from(self.crashes).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            | 1;
        let transport = Arc::new(SimTransport {
            me: self.id,
            out: Arc::clone(&self.out),
        });
        let (sink, shared): (Box<dyn LogSink>, _) = if self.inline_log {
            let t: Arc<dyn Transport> = transport.clone();
            (Box::new(InlineSink::new(log, t)), None)
        } else {
            let shared = Arc::new(Mutex::new(SimLogInner {
                log,
                tickets: VecDeque::new(),
                refused: Vec::new(),
                after: HashMap::new(),
                transport: Arc::clone(&transport),
            }));
            (Box::new(SimLog(Arc::clone(&shared))), Some(shared))
        };
        let mut lp = StoreLoop::new(
            cfg,
            transport,
            sink,
            relay_tx.clone(),
            snap_handle.clone(),
            Arc::clone(&self.metrics),
        );
        if self.inline_apply {
            // Behind the relay: a task applied inline must not overtake one still in it.
            let inline = apply.inline().expect("apply worker running");
            lp.set_inline_apply(inline.behind(relay_tx.clone()));
        }
        for f in found {
            let single = f.meta.peers.len() == 1;
            lp.add_peer(f.meta, f.origin, single).expect("add peer");
        }
        self.run = Some(Running {
            lp,
            log: shared,
            apply,
            snaps,
            snap_handle,
            relay_tx,
            relay_rx,
            done: VecDeque::new(),
            last_done_ms: 0,
            builds: BTreeSet::new(),
            installs: BTreeMap::new(),
            checkpoint_pending: false,
            touched: true,
            applied: Vec::new(),
            ack_early: false,
        });
    }

    /// Crashes the store: cuts the state store's writes (no final checkpoint lands), drops the
    /// loop and workers, then loses power (`power_loss`) or just the process (`restart`).
    pub fn crash(&mut self, power_loss: bool) {
        let Some(run) = self.run.take() else {
            return;
        };
        self.crashes += 1;
        self.budget.store(0, Ordering::SeqCst);
        let Running {
            lp,
            log,
            apply,
            snaps,
            snap_handle,
            relay_tx,
            relay_rx,
            ..
        } = run;
        drop(lp);
        drop(snap_handle);
        drop(relay_tx);
        // The snapshot worker may wait on the apply worker through the relay: keep forwarding
        // while it stops.
        let stopper = std::thread::spawn(move || drop(snaps));
        while !stopper.is_finished() {
            while let Ok(req) = relay_rx.try_recv() {
                let _ = apply.send(req);
            }
            while apply.events().try_recv().is_ok() {}
            std::thread::sleep(Duration::from_micros(100));
        }
        stopper.join().expect("snapshot worker stop");
        drop(relay_rx);
        let stopper = std::thread::spawn(move || drop(apply));
        stopper.join().expect("apply worker stop");
        drop(log);
        self.out.lock().unwrap().clear();
        let mut s = self.sim.lock().unwrap();
        if power_loss {
            s.power_loss();
        } else {
            s.restart();
        }
    }
}

impl Running {
    /// Forwards relayed apply requests and waits until the apply worker handled them.
    fn forward(&mut self) -> bool {
        let mut n = 0;
        while let Ok(req) = self.relay_rx.try_recv() {
            if let ApplyRequest::Checkpoint = req {
                self.checkpoint_pending = true;
            }
            self.apply.send(req).expect("apply worker alive");
            n += 1;
        }
        if n == 0 {
            return false;
        }
        let (tx, rx) = bounded(1);
        let barrier = ApplyRequest::Get {
            region_id: 1,
            key: Bytes::new(),
            reply: tx,
        };
        self.apply.send(barrier).expect("apply worker alive");
        let _answer = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("apply worker answers the barrier");
        true
    }

    fn note_builds(&mut self, regions: &[u64]) {
        for r in regions {
            if self.snap_handle.is_building(*r) {
                self.builds.insert(*r);
            }
        }
    }

    /// Flushes the loop and runs the workers until the store is quiet (see the module docs).
    pub fn settle(&mut self, regions: &[u64]) {
        self.lp.flush();
        // Regions come and go (splits, new and removed peers): watch every one listed now.
        let mut regions = regions.to_vec();
        for info in self.regions() {
            if !regions.contains(&info.meta.region_id) {
                regions.push(info.meta.region_id);
            }
        }
        let regions = &regions[..];
        let mut idle_spins = 0u32;
        loop {
            self.note_builds(regions);
            let mut progress = self.forward();
            while let Ok(ev) = self.apply.events().try_recv() {
                match &ev {
                    ApplyEvent::CheckpointDone(_) => self.checkpoint_pending = false,
                    ApplyEvent::Applied { results, .. } => {
                        for r in results {
                            self.applied.push((r.region_id, r.index, r.term, r.client));
                        }
                    }
                    _ => {}
                }
                self.lp.handle_apply_event(ev);
                progress = true;
            }
            while let Ok(ev) = self.snaps.events().try_recv() {
                match &ev {
                    SnapshotEvent::Built(m) => {
                        self.builds.remove(&m.region_id);
                    }
                    SnapshotEvent::BuildFailed { region_id, .. } => {
                        self.builds.remove(region_id);
                    }
                    SnapshotEvent::Installed { meta, .. }
                    | SnapshotEvent::InstallFailed { meta, .. } => {
                        self.installs.remove(&meta.region_id);
                    }
                    _ => {}
                }
                self.lp.handle_snapshot_event(ev);
                progress = true;
            }
            if progress {
                self.lp.flush();
                idle_spins = 0;
                continue;
            }
            // A receipt already came back (the loop refused it): no install to wait for.
            self.installs.retain(|_, r| r.is_empty());
            let waiting =
                !self.builds.is_empty() || !self.installs.is_empty() || self.checkpoint_pending;
            if !waiting {
                break;
            }
            idle_spins += 1;
            if idle_spins > 20_000 {
                // An install the loop never started (the snapshot was not taken): stop waiting.
                self.installs.clear();
                self.checkpoint_pending = false;
                if !self.builds.is_empty() {
                    panic!("snapshot build never finished: {:?}", self.builds);
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Polls the log device; schedules completions at `now_ms + delay`, in order. With the
    /// loop's `InlineSink`, starts its appended writes and hands it its completions now, as
    /// the network runtime's driver does.
    pub fn poll_log(&mut self, now_ms: u64, delay_ms: u64) {
        let Some(log) = self.log.as_ref() else {
            self.lp.start_log();
            let events = self.lp.reap_log(false);
            if !events.is_empty() {
                self.touched = true;
            }
            for ev in events {
                self.lp.handle_event(ev);
            }
            return;
        };
        let mut g = log.lock().unwrap();
        let refused = std::mem::take(&mut g.refused);
        let acks = match g.log.poll(false) {
            Ok(a) => a,
            Err(e) => {
                let e = e.to_string();
                g.tickets
                    .drain(..)
                    .map(|(t, _)| engine::log::Ack {
                        ticket: t,
                        result: Err(engine::error::EngineError::InvalidConfig {
                            key: "log",
                            reason: e.clone(),
                        }),
                    })
                    .collect()
            }
        };
        let mut ready = Vec::new();
        if self.ack_early {
            for (_, batch_no) in g.tickets.drain(..) {
                ready.push((batch_no, Ok(())));
            }
        }
        for ack in acks {
            if let Some(pos) = g.tickets.iter().position(|(t, _)| *t == ack.ticket) {
                let (_, batch_no) = g.tickets.remove(pos).expect("present");
                ready.push((batch_no, ack.result.map_err(|e| e.to_string())));
            }
        }
        drop(g);
        for (batch_no, e) in refused {
            ready.push((batch_no, Err(e)));
        }
        ready.sort_by_key(|(n, _)| *n);
        for (batch_no, result) in ready {
            let at = (now_ms + delay_ms).max(self.last_done_ms);
            self.last_done_ms = at;
            self.done.push_back((at, batch_no, result));
        }
    }

    /// Releases the completions due at `now_ms`.
    /// (With the loop's `InlineSink` nothing is scheduled here: see [`Running::poll_log`].)
    pub fn release_log(&mut self, now_ms: u64) {
        let Some(log) = self.log.clone() else {
            return;
        };
        while self.done.front().is_some_and(|(at, _, _)| *at <= now_ms) {
            let (_, batch_no, result) = self.done.pop_front().expect("front");
            // As the log writer thread does: a durable batch's messages leave first.
            let (after, transport) = {
                let mut g = log.lock().unwrap();
                (g.after.remove(&batch_no), Arc::clone(&g.transport))
            };
            if result.is_ok() {
                for (store, msgs) in after.into_iter().flatten() {
                    transport.send(store, msgs);
                }
            }
            self.lp
                .handle_event(StoreEvent::LogDone { batch_no, result });
            self.touched = true;
        }
    }

    /// The loop's regions as `ClientRequest::Regions` reports them.
    pub fn regions(&mut self) -> Vec<RegionInfo> {
        let slot = Arc::new(Mutex::new(None));
        let s2 = Arc::clone(&slot);
        self.lp.handle_event(StoreEvent::Request(
            ClientRequest::Regions,
            Box::new(move |r| *s2.lock().unwrap() = Some(r)),
        ));
        let got = slot.lock().unwrap().take();
        match got {
            Some(Ok(ClientResponse::Regions(v))) => v,
            _ => Vec::new(),
        }
    }

    /// `key` as this store's state store holds it now (no Raft: may be stale).
    pub fn local_get(&mut self, region_id: u64, key: Bytes) -> Option<Bytes> {
        self.forward();
        let (tx, rx) = bounded(1);
        self.apply
            .send(ApplyRequest::Get {
                region_id,
                key,
                reply: tx,
            })
            .expect("apply alive");
        rx.recv_timeout(Duration::from_secs(60))
            .expect("get answer")
            .ok()
            .flatten()
    }

    /// Every key and value of `region_id` in the state store (read through the apply worker).
    pub fn scan_all(&mut self, region_id: u64) -> Vec<(Bytes, Bytes)> {
        self.forward();
        let (tx, rx) = bounded(1);
        self.apply
            .send(ApplyRequest::Scan {
                region_id,
                start: Bytes::new(),
                end: None,
                limit: 1 << 20,
                reply: tx,
            })
            .expect("apply alive");
        rx.recv_timeout(Duration::from_secs(60))
            .expect("scan answer")
            .unwrap_or_else(|e| vec![(Bytes::from(format!("<scan failed: {e}>")), Bytes::new())])
    }
}

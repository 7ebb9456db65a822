//! The simulated cluster: nodes, network, clients, fault schedule and the run's checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver};
use engine::state::worker::{ApplyRequest, BuiltSnapshot};
use engine::state::{Command, Op as KvOp, OpResult};
use engine::store::{
    initial_regions, AdminRequest, ClientRequest, ClientResponse, IncomingSnapshot, Peer,
    PeerChange, PeerRole, RaftMessage, RegionMeta, RequestError, SnapshotReceipt, StoreEvent,
};

use super::check::{check_history, Kind, Op};
use super::node::{Node, Out};
use crate::log_harness::Rng;

/// What one run simulates.
#[derive(Clone, Debug)]
pub struct Params {
    pub stores: u64,
    /// Simulated time with clients and faults.
    pub busy_ms: u64,
    pub clients: u64,
    pub keys: u64,
    pub faults: bool,
    /// Broken on purpose: log batches reported durable before they are written.
    pub ack_early: bool,
    /// Serve reads from the leader's lease instead of ReadIndex.
    pub lease_reads: bool,
    /// Broken on purpose: reads served from a random store's state, without Raft.
    pub local_reads: bool,
    /// Crash any number of stores at once (up to the whole cluster), not only a minority.
    pub crash_any: bool,
    /// Stores the initial regions live on (`1..=initial_stores`; 0: every store).
    pub initial_stores: u64,
    /// Initial split keys (pre-split regions): this many, spread over the keys.
    pub pre_split: u64,
    /// Split random regions at random times.
    pub splits: bool,
    /// Add learners, promote them, remove voters, joint changes, leader transfers.
    pub membership: bool,
    /// Retry writes whose outcome is unknown with the same (client, sequence).
    pub retries: bool,
    /// Overrides `StoreConfig::hibernate_idle_ticks`.
    pub hibernate_idle_ticks: Option<u32>,
    /// Long client-idle periods during the busy phase (regions hibernate).
    pub idle_gaps: bool,
    /// Clients read with a CAS that always fails (its `previous` is the observation) instead
    /// of `Get`: works around gets served from a region's post-split state (see store_sim.rs).
    pub reads_via_cas: bool,
    /// The operator may add a region's peer on a store that held one before (removed).
    pub reuse_stores: bool,
    /// Broken on purpose: retries get a new sequence (so a retry may apply twice).
    pub retry_new_sequence: bool,
    /// How long a client waits for an answer before the outcome is unknown (default 3000).
    pub op_timeout_ms: Option<u64>,
    /// The operator picks a split key inside the chosen region (else one random key name,
    /// often outside it: fewer splits).
    pub eager_splits: bool,
    /// The loops apply small put/delete tasks themselves (`InlineApply`, behind the relay) while
    /// the apply worker is idle, as a loop driven on the network runtime does.
    pub inline_apply: bool,
    /// The loops drive their logs through the production `InlineSink` (as a loop driven on
    /// the network runtime with the `uring` backend does): the harness starts each loop's
    /// appended writes and reaps its completions through the loop, and the sink sends a
    /// durable batch's messages itself. Without it, the harness's own sink stands in for the
    /// writer thread and releases completions at simulated times.
    pub inline_log: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            stores: 3,
            busy_ms: 6000,
            clients: 3,
            keys: 3,
            faults: true,
            ack_early: false,
            lease_reads: false,
            local_reads: false,
            crash_any: false,
            initial_stores: 0,
            pre_split: 0,
            splits: false,
            membership: false,
            retries: false,
            hibernate_idle_ticks: None,
            idle_gaps: false,
            reads_via_cas: false,
            reuse_stores: false,
            retry_new_sequence: false,
            op_timeout_ms: None,
            eager_splits: false,
            inline_apply: false,
            inline_log: false,
        }
    }
}

/// What a client's pending op asks for; routed to a region when (re)sent.
#[derive(Clone)]
enum Req {
    Write { key: Bytes, command: Command },
    Get { key: Bytes },
}

impl Req {
    fn key(&self) -> &Bytes {
        match self {
            Req::Write { key, .. } | Req::Get { key } => key,
        }
    }
}

/// A peer as compared across stores: (peer id, store id, voter).
type PeerKey = (u64, u64, bool);

/// The epoch order used to pick the newest of two metas of a region.
fn epoch_key(m: &RegionMeta) -> (u64, u64) {
    (m.epoch.version, m.epoch.conf_version)
}

enum Body {
    Raft(Vec<RaftMessage>),
    Snapshot {
        message: Box<RaftMessage>,
        snapshot: Arc<BuiltSnapshot>,
    },
    SnapshotSent {
        region_id: u64,
        to_peer_id: u64,
        ok: bool,
    },
}

struct Envelope {
    from: u64,
    to: u64,
    body: Body,
}

struct Stream {
    from: u64,
    to: u64,
    region_id: u64,
    to_peer_id: u64,
    receipts: Receiver<SnapshotReceipt>,
    started_ms: u64,
}

/// How long a snapshot stream may go unanswered before its sender is told it failed.
const STREAM_TIMEOUT_MS: u64 = 5000;

type Answer = Result<ClientResponse, RequestError>;

/// An applied command: (term, (client, sequence), the store that reported it first).
type AppliedAt = (u64, (u64, u64), u64);

struct Pending {
    op: usize,
    attempt: u64,
    store: Option<u64>,
    request: Req,
    deadline_ms: u64,
    retry_at_ms: Option<u64>,
    /// Re-sends after an unknown outcome (same client id and sequence).
    retries: u32,
    /// The region and epoch the last attempt was sent to.
    sent_to: Option<(u64, engine::store::Epoch)>,
}

struct Client {
    id: u64,
    sequence: u64,
    values: u64,
    next_at_ms: u64,
    /// The client's region cache: region → newest meta it knows.
    dir: BTreeMap<u64, RegionMeta>,
    /// Leader hints: region → store.
    hints: BTreeMap<u64, u64>,
    last_seen: BTreeMap<Bytes, Option<Bytes>>,
    pending: Option<Pending>,
    attempts: u64,
}

/// Network fault settings.
struct NetFaults {
    drop_p: f64,
    dup_p: f64,
    delay_max_ms: u64,
}

/// One simulated cluster.
pub struct Sim {
    pub seed: u64,
    rng: Rng,
    p: Params,
    pub now_ms: u64,
    nodes: Vec<Node>,
    initial: Vec<RegionMeta>,
    regions: Vec<u64>,
    net: NetFaults,
    /// Messages in flight by (delivery time, sequence).
    flight: BTreeMap<(u64, u64), Envelope>,
    flight_seq: u64,
    streams: Vec<Stream>,
    /// Cut store pairs (both directions).
    cut: BTreeSet<(u64, u64)>,
    heal_at_ms: Option<u64>,
    next_partition_ms: u64,
    next_crash_ms: u64,
    next_checkpoint_ms: BTreeMap<u64, u64>,
    clients: Vec<Client>,
    answers: Arc<Mutex<Vec<(u64, u64, Answer)>>>,
    pub history: Vec<Op>,
    /// (region, index) → (term, client command) of the applied entry, from every store.
    applied: BTreeMap<(u64, u64), AppliedAt>,
    /// (region, term) → the store that led it.
    leaders: BTreeMap<(u64, u64), u64>,
    pub violations: Vec<String>,
    pub trace: u64,
    pub stats: BTreeMap<&'static str, u64>,
    /// Clients start no new op until then (idle periods: regions hibernate).
    quiet_until_ms: Option<u64>,
    next_quiet_ms: u64,
    /// The operator: its next admin request, and the one in flight (attempt, deadline).
    next_admin_ms: u64,
    admin_pending: Option<(u64, u64)>,
    admin_seq: u64,
    admin_answers: Arc<Mutex<Vec<(u64, Answer)>>>,
    /// (region, epoch version) → its key range, as the first store reporting it saw it.
    ranges: BTreeMap<(u64, u64), (Bytes, Bytes)>,
    /// (region, conf version, version) → its peers (sorted), as first reported.
    confs: BTreeMap<(u64, u64, u64), Vec<PeerKey>>,
    /// Sequence numbers of the final phase's writer (client id 1000).
    final_seq: u64,
    /// The final phase: writes with unknown outcomes are always re-sent.
    final_phase: bool,
    /// (region, store) pairs that ever held a peer, as the operator saw them.
    ever_members: BTreeSet<(u64, u64)>,
}

fn fnv(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x100_0000_01b3)
}

impl Sim {
    pub fn new(seed: u64, p: Params) -> Sim {
        let mut rng = Rng(seed);
        let ids: Vec<u64> = (1..=p.stores).collect();
        let on = if p.initial_stores == 0 {
            p.stores
        } else {
            p.initial_stores
        };
        let split_keys: Vec<Bytes> = (1..=p.pre_split)
            .map(|i| Self::key_name(i * p.keys / (p.pre_split + 1)))
            .collect();
        let initial = initial_regions(&ids[..on as usize], &split_keys);
        let regions: Vec<u64> = initial.iter().map(|m| m.region_id).collect();
        let mut nodes: Vec<Node> = ids
            .iter()
            .map(|&id| Node::new(seed, id, regions.clone()))
            .collect();
        for n in &mut nodes {
            if p.lease_reads {
                n.read_mode = engine::store::ReadMode::Lease;
            }
            n.hibernate_idle_ticks = p.hibernate_idle_ticks;
            n.inline_apply = p.inline_apply;
            n.inline_log = p.inline_log;
            n.start(seed, &initial);
        }
        let net = if p.faults {
            NetFaults {
                drop_p: rng.below(6) as f64 / 100.0,
                dup_p: rng.below(4) as f64 / 100.0,
                delay_max_ms: 1 + rng.below(20),
            }
        } else {
            NetFaults {
                drop_p: 0.0,
                dup_p: 0.0,
                delay_max_ms: 3,
            }
        };
        let clients = (1..=p.clients)
            .map(|id| Client {
                id,
                sequence: 0,
                values: 0,
                next_at_ms: 300 + rng.below(100),
                dir: initial.iter().map(|m| (m.region_id, m.clone())).collect(),
                hints: BTreeMap::new(),
                last_seen: BTreeMap::new(),
                pending: None,
                attempts: 0,
            })
            .collect();
        let next_partition_ms = 500 + rng.below(1500);
        let next_crash_ms = 800 + rng.below(2000);
        Sim {
            seed,
            rng,
            p,
            now_ms: 0,
            nodes,
            initial,
            regions,
            net,
            flight: BTreeMap::new(),
            flight_seq: 0,
            streams: Vec::new(),
            cut: BTreeSet::new(),
            heal_at_ms: None,
            next_partition_ms,
            next_crash_ms,
            next_checkpoint_ms: BTreeMap::new(),
            clients,
            answers: Arc::new(Mutex::new(Vec::new())),
            history: Vec::new(),
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            violations: Vec::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            stats: BTreeMap::new(),
            quiet_until_ms: None,
            next_quiet_ms: 1000 + seed % 1000,
            next_admin_ms: 600 + seed % 500,
            admin_pending: None,
            admin_seq: 0,
            admin_answers: Arc::new(Mutex::new(Vec::new())),
            ranges: BTreeMap::new(),
            confs: BTreeMap::new(),
            final_seq: 0,
            final_phase: false,
            ever_members: BTreeSet::new(),
        }
    }

    fn stat(&mut self, k: &'static str) {
        *self.stats.entry(k).or_default() += 1;
    }

    fn is_cut(&self, a: u64, b: u64) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn up(&self, id: u64) -> bool {
        self.nodes[(id - 1) as usize].run.is_some()
    }

    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    fn enqueue(&mut self, delay_ms: u64, env: Envelope) {
        self.flight_seq += 1;
        self.flight
            .insert((self.now_ms + delay_ms, self.flight_seq), env);
    }

    // ------------------------------------------------------------------ one step

    /// One simulated millisecond.
    pub fn step(&mut self, busy: bool) {
        self.now_ms += 1;
        if busy && self.p.faults {
            self.schedule_faults();
        }
        self.restart_due();
        self.deliver_due();
        self.drive_logs();
        self.tick();
        if busy {
            self.checkpoints();
        }
        if busy {
            self.idle_gaps();
            self.admin_step();
        }
        self.clients_step(busy);
        self.settle_all();
        self.collect_outgoing();
        self.poll_streams();
        self.collect_answers();
        self.collect_admin_answers();
        if self.now_ms % 5 == 0 {
            self.check_leaders();
        }
    }

    fn schedule_faults(&mut self) {
        let now = self.now_ms;
        if self.heal_at_ms.is_some_and(|t| t <= now) {
            self.cut.clear();
            self.heal_at_ms = None;
            self.next_partition_ms = now + 300 + self.rng.below(2000);
        }
        if self.heal_at_ms.is_none() && now >= self.next_partition_ms {
            let n = self.p.stores;
            let mut side = BTreeSet::new();
            if self.rng.chance(0.5) {
                side.insert(1 + self.rng.below(n));
            } else {
                for s in 1..=n {
                    if self.rng.chance(0.5) {
                        side.insert(s);
                    }
                }
            }
            for a in 1..=n {
                for b in (a + 1)..=n {
                    if side.contains(&a) != side.contains(&b) {
                        self.cut.insert((a, b));
                    }
                }
            }
            self.heal_at_ms = Some(now + 200 + self.rng.below(1500));
            self.stat("partitions");
        }
        if now >= self.next_crash_ms {
            self.next_crash_ms = if self.p.crash_any {
                now + 100 + self.rng.below(800)
            } else {
                now + 500 + self.rng.below(2500)
            };
            let down = self.nodes.iter().filter(|n| n.run.is_none()).count() as u64;
            let down_max = if self.p.crash_any {
                self.p.stores
            } else {
                (self.p.stores - 1) / 2
            };
            if down < down_max {
                let id = 1 + self.rng.below(self.p.stores);
                if self.up(id) {
                    let power = self.rng.chance(0.6);
                    let back = now + 100 + self.rng.below(2000);
                    let node = self.node(id);
                    node.crash(power);
                    node.restart_at_ms = Some(back);
                    self.stat(if power {
                        "power_losses"
                    } else {
                        "process_crashes"
                    });
                }
            }
        }
    }

    fn restart_due(&mut self) {
        let now = self.now_ms;
        let seed = self.seed;
        let mut started = false;
        for n in &mut self.nodes {
            if n.run.is_none() && n.restart_at_ms.is_some_and(|t| t <= now) {
                n.restart_at_ms = None;
                n.start(seed, &self.initial);
                started = true;
            }
        }
        if started {
            self.stat("restarts");
        }
    }

    fn deliver_due(&mut self) {
        let now = self.now_ms;
        while let Some(entry) = self.flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let env = entry.remove();
            self.deliver(env);
        }
    }

    fn deliver(&mut self, env: Envelope) {
        let reachable = self.up(env.to) && !self.is_cut(env.from, env.to);
        self.trace = fnv(self.trace, self.now_ms ^ (env.from << 40) ^ (env.to << 48));
        match env.body {
            Body::Raft(msgs) => {
                if !reachable {
                    return;
                }
                let run = self.node(env.to).run.as_mut().expect("up");
                run.lp.handle_event(StoreEvent::Raft(msgs));
                run.touched = true;
            }
            Body::SnapshotSent {
                region_id,
                to_peer_id,
                ok,
            } => {
                if let Some(run) = self.node(env.to).run.as_mut() {
                    run.lp.handle_event(StoreEvent::SnapshotSent {
                        region_id,
                        to_peer_id,
                        ok,
                    });
                    run.touched = true;
                }
            }
            Body::Snapshot { message, snapshot } => {
                let region_id = message.region_id;
                let to_peer_id = message.to.peer_id;
                if !reachable {
                    self.snapshot_failed(env.from, region_id, to_peer_id);
                    return;
                }
                self.stat("snapshots_streamed");
                if std::env::var("BASALT_SIM_LOG").is_ok() {
                    let raft_meta = message
                        .msg
                        .snapshot
                        .as_ref()
                        .map(|s| (s.metadata.index, s.metadata.term));
                    eprintln!(
                        "sim: snapshot {} -> {} at {} ms: state meta (index {}, term {}), raft meta {raft_meta:?}",
                        env.from, env.to, self.now_ms, snapshot.meta.index, snapshot.meta.term
                    );
                }
                let (tx, rx) = unbounded();
                for i in 0..snapshot.meta.chunk_count {
                    tx.send(snapshot.chunk(i).expect("chunk")).expect("open");
                }
                drop(tx);
                let (rtx, rrx) = unbounded();
                let run = self.node(env.to).run.as_mut().expect("up");
                run.installs.insert(region_id, rrx.clone());
                run.lp
                    .handle_event(StoreEvent::Snapshot(Box::new(IncomingSnapshot {
                        message: *message,
                        chunks: rx,
                        receipts: rtx,
                    })));
                run.touched = true;
                self.streams.push(Stream {
                    from: env.from,
                    to: env.to,
                    region_id,
                    to_peer_id,
                    receipts: rrx,
                    started_ms: self.now_ms,
                });
            }
        }
    }

    fn snapshot_failed(&mut self, from: u64, region_id: u64, to_peer_id: u64) {
        let delay = 1 + self.rng.below(self.net.delay_max_ms);
        self.enqueue(
            delay,
            Envelope {
                from,
                to: from,
                body: Body::SnapshotSent {
                    region_id,
                    to_peer_id,
                    ok: false,
                },
            },
        );
    }

    fn drive_logs(&mut self) {
        let now = self.now_ms;
        for i in 0..self.nodes.len() {
            let delay = self.rng.below(3);
            if let Some(run) = self.nodes[i].run.as_mut() {
                run.poll_log(now, delay);
                run.release_log(now);
            }
        }
    }

    fn tick(&mut self) {
        let now = self.now_ms;
        for n in &mut self.nodes {
            if now % 10 == (n.id * 3) % 10 {
                if let Some(run) = n.run.as_mut() {
                    run.lp.handle_tick();
                    run.touched = true;
                }
            }
        }
    }

    fn checkpoints(&mut self) {
        let now = self.now_ms;
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let due = *self
                .next_checkpoint_ms
                .entry(id)
                .or_insert(now + 100 + self.rng.below(500));
            if due > now {
                continue;
            }
            let next = now + 100 + self.rng.below(500);
            self.next_checkpoint_ms.insert(id, next);
            if let Some(run) = self.nodes[i].run.as_mut() {
                let _ = run.relay_tx.send(ApplyRequest::Checkpoint);
                run.touched = true;
            }
        }
    }

    fn settle_all(&mut self) {
        let mut applied = Vec::new();
        for n in &mut self.nodes {
            let regions = n.regions.clone();
            if let Some(run) = n.run.as_mut() {
                run.ack_early = self.p.ack_early;
                if run.touched || !run.relay_rx.is_empty() {
                    run.touched = false;
                    run.settle(&regions);
                }
                for a in run.applied.drain(..) {
                    applied.push((n.id, a));
                }
            }
        }
        for (store, (region, index, term, client)) in applied {
            match self.applied.get(&(region, index)) {
                Some(&(t, c, s)) if (t, c) != (term, client) => self.violations.push(format!(
                    "region {region} index {index}: store {store} applied term {term} command {client:?}, store {s} applied term {t} command {c:?}"
                )),
                Some(_) => {}
                None => {
                    self.applied.insert((region, index), (term, client, store));
                }
            }
        }
    }

    fn collect_outgoing(&mut self) {
        for i in 0..self.nodes.len() {
            let mut outs = std::mem::take(&mut *self.nodes[i].out.lock().unwrap());
            outs.sort_by_key(|o| match o {
                Out::Raft { to, .. } | Out::Snapshot { to, .. } => *to,
            });
            for o in outs {
                self.route(o);
            }
        }
    }

    fn route(&mut self, o: Out) {
        match o {
            Out::Raft { from, to, msgs } => {
                if self.is_cut(from, to) || !self.up(to) {
                    self.stat("messages_cut");
                    return;
                }
                if self.rng.chance(self.net.drop_p) {
                    self.stat("messages_dropped");
                    return;
                }
                if self.rng.chance(self.net.dup_p) {
                    self.stat("messages_duplicated");
                    let d = 1 + self.rng.below(self.net.delay_max_ms * 2);
                    let body = Body::Raft(msgs.clone());
                    self.enqueue(d, Envelope { from, to, body });
                }
                let d = 1 + self.rng.below(self.net.delay_max_ms);
                self.enqueue(
                    d,
                    Envelope {
                        from,
                        to,
                        body: Body::Raft(msgs),
                    },
                );
            }
            Out::Snapshot {
                from,
                to,
                message,
                snapshot,
            } => {
                if self.is_cut(from, to) || !self.up(to) {
                    self.snapshot_failed(from, message.region_id, message.to.peer_id);
                    return;
                }
                let d = 1 + self.rng.below(self.net.delay_max_ms * 2);
                self.enqueue(
                    d,
                    Envelope {
                        from,
                        to,
                        body: Body::Snapshot { message, snapshot },
                    },
                );
            }
        }
    }

    fn poll_streams(&mut self) {
        let mut keep = Vec::new();
        for s in std::mem::take(&mut self.streams) {
            let outcome = match s.receipts.try_recv() {
                Ok(SnapshotReceipt::Installed) => Some(true),
                Ok(_) => Some(false),
                Err(crossbeam_channel::TryRecvError::Disconnected) => Some(false),
                Err(crossbeam_channel::TryRecvError::Empty) => None,
            };
            // A transport gives up on a stream that never answers (as the real ones do).
            let outcome = match outcome {
                None if self.now_ms > s.started_ms + STREAM_TIMEOUT_MS => {
                    self.stat("snapshot_streams_timed_out");
                    eprintln!(
                        "snapshot stream {} -> {} (region {}) unanswered since {} ms",
                        s.from, s.to, s.region_id, s.started_ms
                    );
                    Some(false)
                }
                o => o,
            };
            match outcome {
                None => keep.push(s),
                Some(ok) => {
                    if let Some(run) = self.nodes[(s.to - 1) as usize].run.as_mut() {
                        run.installs.remove(&s.region_id);
                    }
                    if ok {
                        self.stat("snapshots_installed");
                    }
                    let d = 1 + self.rng.below(self.net.delay_max_ms);
                    self.enqueue(
                        d,
                        Envelope {
                            from: s.to,
                            to: s.from,
                            body: Body::SnapshotSent {
                                region_id: s.region_id,
                                to_peer_id: s.to_peer_id,
                                ok,
                            },
                        },
                    );
                }
            }
        }
        self.streams = keep;
    }

    fn check_leaders(&mut self) {
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let Some(run) = self.nodes[i].run.as_mut() else {
                continue;
            };
            let mut hibernating = 0;
            for info in run.regions() {
                hibernating += u64::from(info.hibernating);
                if !info.is_leader {
                    continue;
                }
                let key = (info.meta.region_id, info.term);
                match self.leaders.get(&key) {
                    Some(&other) if other != id => self.violations.push(format!(
                        "two leaders of region {} in term {}: stores {other} and {id} (at {} ms)",
                        key.0, key.1, self.now_ms
                    )),
                    Some(_) => {}
                    None => {
                        self.leaders.insert(key, id);
                    }
                }
            }
            if hibernating > 0 {
                *self.stats.entry("hibernating_samples").or_default() += hibernating;
            }
        }
        if self.p.pre_split > 0 || self.p.splits || self.p.membership {
            let views = self.views();
            self.check_ranges(&views);
        }
    }

    // ------------------------------------------------------------------ clients

    fn key_name(k: u64) -> Bytes {
        Bytes::from(format!("key-{k:02}"))
    }

    fn clients_step(&mut self, busy: bool) {
        let quiet = self.quiet_until_ms.is_some_and(|t| t > self.now_ms);
        for c in 0..self.clients.len() {
            let now = self.now_ms;
            if let Some(p) = &self.clients[c].pending {
                let store_down = p.store.is_some_and(|s| !self.up(s));
                if now >= p.deadline_ms || (store_down && p.retry_at_ms.is_none()) {
                    self.unknown_outcome(c);
                    continue;
                }
                if p.retry_at_ms.is_some_and(|t| t <= now) {
                    self.submit(c);
                }
                continue;
            }
            if !busy || quiet || now < self.clients[c].next_at_ms {
                continue;
            }
            self.new_op(c);
            self.submit(c);
        }
    }

    /// Client `c`'s pending op may or may not have applied: a write is re-sent with the same
    /// (client, sequence) when the run retries, else the op ends with no answer.
    fn unknown_outcome(&mut self, c: usize) {
        let final_phase = self.final_phase;
        let retry = (self.p.retries || final_phase)
            && self.clients[c].pending.as_ref().is_some_and(|p| {
                matches!(p.request, Req::Write { .. }) && (p.retries < 8 || final_phase)
            });
        if !retry {
            self.finish(c, None);
            return;
        }
        self.stat("write_retries");
        let delay = 5 + self.rng.below(200);
        let now = self.now_ms;
        let broken = self.p.retry_new_sequence;
        let cl = &mut self.clients[c];
        let p = cl.pending.as_mut().expect("pending");
        if let (true, Req::Write { command, .. }) = (broken, &mut p.request) {
            cl.sequence += 1;
            command.sequence = cl.sequence;
        }
        p.retries += 1;
        p.retry_at_ms = Some(now + delay);
        p.deadline_ms = now + delay + self.p.op_timeout_ms.unwrap_or(3000);
        p.store = None;
        // A later answer to the old attempt is ignored.
        p.attempt = 0;
    }

    fn new_op(&mut self, c: usize) {
        let key = Self::key_name(self.rng.below(self.p.keys));
        let roll = self.rng.below(10);
        let cl = &mut self.clients[c];
        cl.values += 1;
        let value = Bytes::from(format!("c{}-{}", cl.id, cl.values));
        let (kind, request) = match roll {
            0..=3 => {
                cl.sequence += 1;
                let command = Command {
                    client_id: cl.id,
                    sequence: cl.sequence,
                    ops: vec![KvOp::Put {
                        key: key.clone(),
                        value: value.clone(),
                    }],
                };
                (
                    Kind::Put { value },
                    Req::Write {
                        key: key.clone(),
                        command,
                    },
                )
            }
            4..=6 => {
                cl.sequence += 1;
                let expected = cl.last_seen.get(&key).cloned().flatten();
                let command = Command {
                    client_id: cl.id,
                    sequence: cl.sequence,
                    ops: vec![KvOp::Cas {
                        key: key.clone(),
                        expected: expected.clone(),
                        new: Some(value.clone()),
                    }],
                };
                (
                    Kind::Cas {
                        expected,
                        new: value,
                        outcome: None,
                    },
                    Req::Write {
                        key: key.clone(),
                        command,
                    },
                )
            }
            _ if self.p.reads_via_cas => {
                cl.sequence += 1;
                let never = Bytes::from_static(b"never-written");
                let command = Command {
                    client_id: cl.id,
                    sequence: cl.sequence,
                    ops: vec![KvOp::Cas {
                        key: key.clone(),
                        expected: Some(never.clone()),
                        new: Some(value.clone()),
                    }],
                };
                (
                    Kind::Cas {
                        expected: Some(never),
                        new: value,
                        outcome: None,
                    },
                    Req::Write {
                        key: key.clone(),
                        command,
                    },
                )
            }
            _ => (Kind::Get { value: None }, Req::Get { key: key.clone() }),
        };
        self.history.push(Op {
            client: cl.id,
            key,
            kind,
            invoked_ms: self.now_ms,
            returned_ms: None,
        });
        cl.pending = Some(Pending {
            op: self.history.len() - 1,
            attempt: 0,
            store: None,
            request,
            deadline_ms: self.now_ms + self.p.op_timeout_ms.unwrap_or(3000),
            retry_at_ms: None,
            retries: 0,
            sent_to: None,
        });
    }

    /// The newest region of client `c`'s cache holding `key`.
    fn route_key(&self, c: usize, key: &[u8]) -> RegionMeta {
        self.clients[c]
            .dir
            .values()
            .filter(|m| m.contains(key))
            .max_by_key(|m| epoch_key(m))
            .cloned()
            .unwrap_or_else(|| self.initial[0].clone())
    }

    /// Merges region metas into client `c`'s cache (newer epochs win).
    fn learn(&mut self, c: usize, metas: Vec<RegionMeta>) {
        let dir = &mut self.clients[c].dir;
        for m in metas {
            if m.epoch.version == 0 {
                continue;
            }
            match dir.get(&m.region_id) {
                Some(old) if epoch_key(old) > epoch_key(&m) => {}
                _ => {
                    dir.insert(m.region_id, m);
                }
            }
        }
    }

    /// Asks a random up store for its regions (`ClientRequest::Regions`).
    fn refresh(&mut self, c: usize) {
        let up: Vec<u64> = (1..=self.p.stores).filter(|&s| self.up(s)).collect();
        if up.is_empty() {
            return;
        }
        let s = up[self.rng.below(up.len() as u64) as usize];
        let infos = self.node(s).run.as_mut().expect("up").regions();
        self.stat("route_refreshes");
        for i in &infos {
            if let Some(l) = i.leader {
                self.clients[c].hints.insert(i.meta.region_id, l.store_id);
            }
        }
        self.learn(c, infos.into_iter().map(|i| i.meta).collect());
    }

    /// Sends (or re-sends) client `c`'s pending request to the store it thinks leads the
    /// key's region.
    fn submit(&mut self, c: usize) {
        let up: Vec<u64> = (1..=self.p.stores).filter(|&s| self.up(s)).collect();
        let pick = self.rng.below(up.len().max(1) as u64) as usize;
        let req = self.clients[c]
            .pending
            .as_ref()
            .expect("pending")
            .request
            .clone();
        if !self.clients[c].dir.values().any(|m| m.contains(req.key())) {
            // The cache lost the key's region (a split learned from one half): ask a store.
            self.refresh(c);
        }
        let meta = self.route_key(c, req.key());
        let members: Vec<u64> = meta
            .peers
            .iter()
            .map(|p| p.store_id)
            .filter(|s| up.contains(s))
            .collect();
        let member_pick = self.rng.below(members.len().max(1) as u64) as usize;
        let cl = &mut self.clients[c];
        let p = cl.pending.as_mut().expect("pending");
        let hint = cl.hints.get(&meta.region_id).copied();
        let target = match hint.filter(|s| up.contains(s)) {
            Some(s) => s,
            None if up.is_empty() => {
                p.retry_at_ms = Some(self.now_ms + 10);
                return;
            }
            None if !members.is_empty() => members[member_pick],
            None => up[pick],
        };
        cl.attempts += 1;
        p.attempt = cl.attempts;
        p.store = Some(target);
        p.retry_at_ms = None;
        p.sent_to = Some((meta.region_id, meta.epoch));
        let (client, attempt) = (c as u64, p.attempt);
        let answers = Arc::clone(&self.answers);
        let (region_id, epoch) = (meta.region_id, meta.epoch);
        let request = match req {
            Req::Write { command, .. } => ClientRequest::Write {
                region_id,
                epoch,
                command,
            },
            Req::Get { key } => ClientRequest::Get {
                region_id,
                epoch,
                key,
            },
        };
        if let (true, ClientRequest::Get { key, .. }) = (self.p.local_reads, &request) {
            let run = self.nodes[(up[pick] - 1) as usize]
                .run
                .as_mut()
                .expect("up");
            let v = run.local_get(region_id, key.clone());
            answers
                .lock()
                .unwrap()
                .push((client, attempt, Ok(ClientResponse::Value(v))));
            return;
        }
        let run = self.nodes[(target - 1) as usize].run.as_mut().expect("up");
        run.lp.handle_event(StoreEvent::Request(
            request,
            Box::new(move |r| answers.lock().unwrap().push((client, attempt, r))),
        ));
        run.touched = true;
    }

    fn collect_answers(&mut self) {
        let answers = std::mem::take(&mut *self.answers.lock().unwrap());
        for (c, attempt, answer) in answers {
            let c = c as usize;
            let Some(p) = &self.clients[c].pending else {
                continue;
            };
            if p.attempt != attempt {
                continue;
            }
            self.trace = fnv(self.trace, self.now_ms ^ (c as u64) << 32);
            match answer {
                Ok(r) => self.finish(c, Some(r)),
                Err(e) => self.on_error(c, e),
            }
        }
    }

    fn on_error(&mut self, c: usize, e: RequestError) {
        let definitely_not_applied = matches!(
            e,
            RequestError::NotLeader { .. }
                | RequestError::EpochNotMatch { .. }
                | RequestError::RegionNotFound { .. }
                | RequestError::KeyNotInRegion { .. }
                | RequestError::Busy { .. }
                | RequestError::Stopping
        );
        let delay = 2 + self.rng.below(20);
        let key = self.clients[c]
            .pending
            .as_ref()
            .expect("pending")
            .request
            .key()
            .clone();
        let region = self.route_key(c, &key).region_id;
        match &e {
            RequestError::NotLeader { leader, region_id } => {
                let cl = &mut self.clients[c];
                match leader {
                    Some(l) => cl.hints.insert(*region_id, l.store_id),
                    None => cl.hints.remove(region_id),
                };
            }
            RequestError::EpochNotMatch { regions } => {
                self.stat("epoch_not_match");
                self.clients[c].hints.remove(&region);
                self.learn(c, regions.clone());
                if self.rng.chance(0.3) {
                    self.refresh(c);
                }
            }
            RequestError::RegionNotFound { .. } | RequestError::KeyNotInRegion { .. } => {
                self.stat("region_not_found_or_key_outside");
                self.clients[c].hints.remove(&region);
                self.refresh(c);
            }
            _ => {
                self.clients[c].hints.remove(&region);
            }
        }
        if definitely_not_applied {
            let p = self.clients[c].pending.as_mut().expect("pending");
            p.retry_at_ms = Some(self.now_ms + delay);
            p.store = None;
            return;
        }
        if let RequestError::AlreadyApplied { .. } = e {
            self.stat("already_applied");
            self.already_applied(c);
            return;
        }
        if let RequestError::BadRequest { reason } = &e {
            self.violations
                .push(format!("client request refused as bad: {reason}"));
        }
        self.stat("indeterminate_answers");
        self.unknown_outcome(c);
    }

    /// A retried write was applied before (its results are gone): a put took effect by now, a
    /// CAS's outcome stays unknown.
    fn already_applied(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        let p = cl.pending.take().expect("pending");
        cl.next_at_ms = self.now_ms + 1 + self.rng.below(30);
        let op = &mut self.history[p.op];
        if p.retries == 0 {
            self.violations.push(format!(
                "client {} got AlreadyApplied for a command sent once: {:?}",
                cl.id, op.kind
            ));
        }
        if let Kind::Put { value } = &op.kind {
            op.returned_ms = Some(self.now_ms);
            cl.last_seen.insert(op.key.clone(), Some(value.clone()));
        }
    }

    /// Ends client `c`'s op: with an answer, or `None` (outcome unknown).
    fn finish(&mut self, c: usize, answer: Option<ClientResponse>) {
        let cl = &mut self.clients[c];
        let p = cl.pending.take().expect("pending");
        cl.next_at_ms = self.now_ms + 1 + self.rng.below(30);
        let op = &mut self.history[p.op];
        if std::env::var("BASALT_SIM_DUMP_KEY").is_ok_and(|k| k.as_bytes() == op.key.as_ref()) {
            eprintln!(
                "answer at {} ms to client {} from store {:?} region/epoch {:?}: {answer:?}",
                self.now_ms, cl.id, p.store, p.sent_to
            );
        }
        let Some(answer) = answer else {
            return;
        };
        op.returned_ms = Some(self.now_ms);
        match (&mut op.kind, answer) {
            (Kind::Put { value }, ClientResponse::Written(_)) => {
                cl.last_seen.insert(op.key.clone(), Some(value.clone()));
            }
            (Kind::Cas { new, outcome, .. }, ClientResponse::Written(results)) => {
                if let Some(OpResult::Cas {
                    succeeded,
                    previous,
                }) = results.first()
                {
                    *outcome = Some((*succeeded, previous.clone()));
                    let seen = if *succeeded {
                        Some(new.clone())
                    } else {
                        previous.clone()
                    };
                    cl.last_seen.insert(op.key.clone(), seen);
                } else {
                    op.returned_ms = None;
                }
            }
            (Kind::Get { value }, ClientResponse::Value(v)) => {
                cl.last_seen.insert(op.key.clone(), v.clone());
                *value = Some(v);
            }
            (_, other) => {
                op.returned_ms = None;
                self.violations
                    .push(format!("unexpected answer {other:?} to {:?}", op.kind));
            }
        }
    }

    // ------------------------------------------------------------------ the run

    /// Heals every fault and restarts every store.
    fn heal(&mut self) {
        self.cut.clear();
        self.heal_at_ms = None;
        self.net.drop_p = 0.0;
        self.net.dup_p = 0.0;
        for n in &mut self.nodes {
            if n.run.is_none() {
                n.restart_at_ms = Some(self.now_ms);
            }
        }
    }

    fn clients_idle(&self) -> bool {
        self.clients.iter().all(|c| c.pending.is_none())
    }

    /// Reads every key once more through client 1 (retrying until answered).
    fn final_reads(&mut self) {
        for k in 0..self.p.keys {
            let key = Self::key_name(k);
            for _attempt in 0..50 {
                self.history.push(Op {
                    client: 0,
                    key: key.clone(),
                    kind: Kind::Get { value: None },
                    invoked_ms: self.now_ms,
                    returned_ms: None,
                });
                self.clients[0].pending = Some(Pending {
                    op: self.history.len() - 1,
                    attempt: 0,
                    store: None,
                    request: Req::Get { key: key.clone() },
                    deadline_ms: self.now_ms + 3000,
                    retry_at_ms: None,
                    retries: 0,
                    sent_to: None,
                });
                self.submit(0);
                while self.clients[0].pending.is_some() {
                    self.step(false);
                }
                if self.history.last().expect("op").returned_ms.is_some() {
                    break;
                }
            }
        }
    }

    /// Every region's newest meta among the up stores' views.
    fn newest_metas(&mut self) -> BTreeMap<u64, RegionMeta> {
        let mut best: BTreeMap<u64, RegionMeta> = BTreeMap::new();
        for (_, infos) in self.views() {
            for i in infos {
                if i.meta.epoch.version == 0 {
                    continue;
                }
                match best.get(&i.meta.region_id) {
                    Some(m) if epoch_key(m) >= epoch_key(&i.meta) => {}
                    _ => {
                        best.insert(i.meta.region_id, i.meta);
                    }
                }
            }
        }
        best
    }

    /// Whether every member of every region (its newest meta) reports that meta and one
    /// applied and commit index.
    fn converged(&mut self) -> bool {
        let best = self.newest_metas();
        let views: BTreeMap<u64, Vec<engine::store::RegionInfo>> =
            self.views().into_iter().collect();
        if views.len() != self.nodes.len() {
            return false;
        }
        for (r, meta) in &best {
            let mut seen = BTreeSet::new();
            for p in &meta.peers {
                let Some(i) = views[&p.store_id].iter().find(|i| i.meta.region_id == *r) else {
                    return false;
                };
                if i.meta != *meta {
                    return false;
                }
                seen.insert((i.applied_index, i.commit_index));
            }
            if seen.len() != 1 {
                return false;
            }
        }
        true
    }

    /// Runs until every store reports the same applied index (bounded).
    fn converge(&mut self) -> bool {
        for n in 0..20_000 {
            self.step(false);
            if n % 10 == 0 && self.converged() {
                return true;
            }
        }
        false
    }

    /// Equal state per region among its members; no store keeps a region it was removed from.
    fn compare_replicas(&mut self) {
        let best = self.newest_metas();
        for (id, infos) in self.views() {
            for i in infos {
                let r = i.meta.region_id;
                if i.meta.epoch.version > 0 && i.meta.peer_on_store(id).is_none() {
                    self.violations.push(format!(
                        "store {id} still lists region {r} after applying its own removal ({:?})",
                        i.meta
                    ));
                }
                if best.get(&r).is_some_and(|m| m.peer_on_store(id).is_none()) {
                    // Removed while cut off: it never learned of it.
                    self.stat("stale_removed_peers");
                }
            }
        }
        for (r, meta) in best {
            let mut first: Option<(u64, Vec<(Bytes, Bytes)>)> = None;
            for p in &meta.peers {
                let id = p.store_id;
                let run = self.node(id).run.as_mut().expect("up");
                let rows = run.scan_all(r);
                if let Some((k, _)) = rows.iter().find(|(k, _)| !meta.contains(k)) {
                    self.violations.push(format!(
                        "region {r} on store {id} holds key {k:?} outside {:?}..{:?}",
                        meta.start_key, meta.end_key
                    ));
                }
                match &first {
                    None => first = Some((id, rows)),
                    Some((fid, frows)) => {
                        if *frows != rows {
                            let diff = rows.iter().zip(frows.iter()).find(|(a, b)| a != b);
                            self.violations.push(format!(
                                "region {r}: store {id}'s state differs from store {fid}'s: {} vs {} rows, first difference {diff:?}",
                                rows.len(),
                                frows.len()
                            ));
                        }
                    }
                }
            }
        }
    }

    /// The whole run: a busy phase with faults, healing, final reads, convergence, checks.
    pub fn run(&mut self) {
        while self.now_ms < self.p.busy_ms {
            self.step(true);
        }
        self.heal();
        while !self.clients_idle() && self.now_ms < self.p.busy_ms + 10_000 {
            self.step(false);
        }
        self.final_phase = true;
        if self.p.pre_split > 0 || self.p.splits || self.p.membership || self.p.idle_gaps {
            self.final_writes();
        }
        self.final_reads();
        if !self.converge() {
            let mut detail = String::new();
            for i in 0..self.nodes.len() {
                let id = self.nodes[i].id;
                if let Some(run) = self.nodes[i].run.as_mut() {
                    let failure = run.lp.failure().map(str::to_string);
                    if let Some(log) = run.log.as_ref() {
                        use raftlog::Storage;
                        let rl = log.lock().unwrap().log.region_log(1);
                        let (f, l) = (rl.first_index().unwrap_or(0), rl.last_index().unwrap_or(0));
                        let hs = rl.initial_state().map(|s| s.hard_state);
                        detail += &format!(
                            " [store {id} log: first {f} last {l} term(first-1) {:?} term(last) {:?} hard state {hs:?}]",
                            rl.term(f.saturating_sub(1)),
                            rl.term(l)
                        );
                    }
                    for r in run.regions() {
                        detail += &format!(
                            " [store {id} region {} v{} c{} peers {:?}: leader {} term {} commit {} applied {} hibernating {} failure {failure:?}]",
                            r.meta.region_id, r.meta.epoch.version, r.meta.epoch.conf_version,
                            r.meta.peers.iter().map(|p| p.store_id).collect::<Vec<_>>(),
                            r.is_leader, r.term, r.commit_index, r.applied_index, r.hibernating
                        );
                    }
                }
            }
            self.violations.push(format!(
                "stores did not converge on one applied index after healing:{detail}"
            ));
        }
        self.compare_replicas();
        if let Ok(k) = std::env::var("BASALT_SIM_DUMP_KEY") {
            for o in self
                .history
                .iter()
                .filter(|o| o.key.as_ref() == k.as_bytes())
            {
                eprintln!("history {k}: {o:?}");
            }
        }
        let mut errs = check_history(&self.history);
        self.violations.append(&mut errs);
        let answered = self.history.iter().filter(|o| o.returned_ms.is_some());
        let n = answered.count() as u64;
        self.stats.insert("ops", self.history.len() as u64);
        self.stats.insert("ops_answered", n);
        self.stats
            .insert("terms_with_leader", self.leaders.len() as u64);
        if self.p.inline_apply {
            let inline: u64 = self
                .nodes
                .iter()
                .map(|n| n.metrics.inline_apply_tasks_total.get())
                .sum();
            self.stats.insert("inline_applies", inline);
        }
        for o in &self.history {
            self.trace = fnv(
                self.trace,
                o.invoked_ms ^ o.returned_ms.unwrap_or(u64::MAX) << 20,
            );
        }
    }
}

// ---------------------------------------------------------------------- regions and the operator

impl Sim {
    /// Starts and ends client-idle periods long enough for regions to hibernate.
    fn idle_gaps(&mut self) {
        if !self.p.idle_gaps {
            return;
        }
        let now = self.now_ms;
        if self.quiet_until_ms.is_some_and(|t| t <= now) {
            self.quiet_until_ms = None;
            self.next_quiet_ms = now + 300 + self.rng.below(1500);
        }
        if self.quiet_until_ms.is_none() && now >= self.next_quiet_ms {
            self.quiet_until_ms = Some(now + 800 + self.rng.below(2500));
            self.stat("idle_periods");
        }
    }

    /// Records a violation unless the same one was recorded before.
    fn violation_once(&mut self, msg: String) {
        if !self.violations.contains(&msg) {
            self.violations.push(msg);
        }
    }

    /// Every up store's regions.
    fn views(&mut self) -> Vec<(u64, Vec<engine::store::RegionInfo>)> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            if let Some(run) = self.nodes[i].run.as_mut() {
                out.push((id, run.regions()));
            }
        }
        out
    }

    /// Per store: initialized regions never overlap; one (region, version) has one range.
    fn check_ranges(&mut self, views: &[(u64, Vec<engine::store::RegionInfo>)]) {
        for (id, infos) in views {
            let mut metas: Vec<&RegionMeta> = infos
                .iter()
                .map(|i| &i.meta)
                .filter(|m| m.epoch.version > 0)
                .collect();
            let leading: BTreeSet<u64> = infos
                .iter()
                .filter(|i| i.is_leader)
                .map(|i| i.meta.region_id)
                .collect();
            for m in &metas {
                let mut peers: Vec<PeerKey> = m
                    .peers
                    .iter()
                    .map(|p| (p.peer_id, p.store_id, p.role == PeerRole::Voter))
                    .collect();
                peers.sort();
                let k = (m.region_id, m.epoch.conf_version, m.epoch.version);
                match self.confs.get(&k) {
                    Some(other) if *other != peers => self.violation_once(format!(
                        "store {id}: region {} at epoch (conf {}, version {}) has peers {peers:?}, elsewhere {other:?}",
                        m.region_id, m.epoch.conf_version, m.epoch.version
                    )),
                    Some(_) => {}
                    None => {
                        self.confs.insert(k, peers);
                    }
                }
                let range = (m.start_key.clone(), m.end_key.clone());
                match self.ranges.get(&(m.region_id, m.epoch.version)) {
                    Some(r) if *r != range => self.violation_once(format!(
                        "store {id}: region {} at version {} spans {range:?}, elsewhere {r:?}",
                        m.region_id, m.epoch.version
                    )),
                    Some(_) => {}
                    None => {
                        self.ranges.insert((m.region_id, m.epoch.version), range);
                    }
                }
            }
            metas.sort_by(|a, b| a.start_key.cmp(&b.start_key));
            let mut overlaps = 0;
            for (a, b) in metas
                .iter()
                .enumerate()
                .flat_map(|(i, a)| metas[i + 1..].iter().map(move |b| (*a, *b)))
            {
                let w = [a, b];
                if w[0].end_key.is_empty() || w[0].end_key > w[1].start_key {
                    // A parent that has not applied its split yet while the child was caught
                    // up by a snapshot: tolerated (no request is served by a follower), unless
                    // the older of the two leads.
                    let older = if epoch_key(w[0]) <= epoch_key(w[1]) {
                        w[0]
                    } else {
                        w[1]
                    };
                    if !leading.contains(&older.region_id) {
                        overlaps += 1;
                        continue;
                    }
                    self.violation_once(format!(
                        "store {id}: regions {} {:?}..{:?} (v{}) and {} {:?}..{:?} (v{}) overlap",
                        w[0].region_id,
                        w[0].start_key,
                        w[0].end_key,
                        w[0].epoch.version,
                        w[1].region_id,
                        w[1].start_key,
                        w[1].end_key,
                        w[1].epoch.version
                    ));
                }
            }
            if overlaps > 0 {
                *self
                    .stats
                    .entry("overlap_samples_stale_parent")
                    .or_default() += overlaps;
            }
        }
    }

    fn admin_step(&mut self) {
        if !(self.p.splits || self.p.membership) {
            return;
        }
        let now = self.now_ms;
        if let Some((_, deadline)) = self.admin_pending {
            if now < deadline {
                return;
            }
            self.admin_pending = None;
            self.stat("admin_timeouts");
        }
        if now < self.next_admin_ms || self.quiet_until_ms.is_some_and(|t| t > now) {
            return;
        }
        self.next_admin_ms = now + 100 + self.rng.below(600);
        let leaders: Vec<(u64, engine::store::RegionInfo)> = self
            .views()
            .into_iter()
            .flat_map(|(id, infos)| infos.into_iter().map(move |i| (id, i)))
            .filter(|(_, i)| i.is_leader)
            .collect();
        if leaders.is_empty() {
            return;
        }
        for (_, i) in &leaders {
            for p in &i.meta.peers {
                self.ever_members.insert((i.meta.region_id, p.store_id));
            }
        }
        let (store, info) = leaders[self.rng.below(leaders.len() as u64) as usize].clone();
        let split = self.p.splits && (!self.p.membership || self.rng.chance(0.4));
        let request = if split && self.p.eager_splits {
            let inside: Vec<Bytes> = (1..self.p.keys)
                .map(Self::key_name)
                .filter(|k| info.meta.contains(k) && *k != info.meta.start_key)
                .collect();
            if inside.is_empty() {
                return;
            }
            let key = inside[self.rng.below(inside.len() as u64) as usize].clone();
            AdminRequest::Split { split_key: key }
        } else if split {
            let key = Self::key_name(1 + self.rng.below(self.p.keys.max(2) - 1));
            if !info.meta.contains(&key) || key == info.meta.start_key {
                return;
            }
            AdminRequest::Split { split_key: key }
        } else {
            match self.membership_change(&info) {
                Some(r) => r,
                None => return,
            }
        };
        self.admin_seq += 1;
        let seq = self.admin_seq;
        self.admin_pending = Some((seq, now + 3000));
        *self.stats.entry(admin_name(&request)).or_default() += 1;
        let answers = Arc::clone(&self.admin_answers);
        let run = self.node(store).run.as_mut().expect("up");
        run.lp.handle_event(StoreEvent::Request(
            ClientRequest::Admin {
                region_id: info.meta.region_id,
                epoch: info.meta.epoch,
                request,
            },
            Box::new(move |r| answers.lock().unwrap().push((seq, r))),
        ));
        run.touched = true;
    }

    /// A random membership change of the region its leader `info` describes.
    fn membership_change(&mut self, info: &engine::store::RegionInfo) -> Option<AdminRequest> {
        let peers = &info.meta.peers;
        let voters: Vec<&Peer> = peers.iter().filter(|p| p.role == PeerRole::Voter).collect();
        let learners: Vec<&Peer> = peers
            .iter()
            .filter(|p| p.role == PeerRole::Learner)
            .collect();
        let r = info.meta.region_id;
        let free: Vec<u64> = (1..=self.p.stores)
            .filter(|s| info.meta.peer_on_store(*s).is_none())
            .filter(|s| self.p.reuse_stores || !self.ever_members.contains(&(r, *s)))
            .collect();
        let roll = self.rng.below(10);
        if !learners.is_empty() && roll < 5 {
            let l = learners[self.rng.below(learners.len() as u64) as usize];
            return Some(AdminRequest::PromoteLearner { peer_id: l.peer_id });
        }
        if voters.len() > 3 && roll < 8 {
            let v = voters[self.rng.below(voters.len() as u64) as usize];
            if v.peer_id == info.peer_id {
                let others: Vec<&&Peer> =
                    voters.iter().filter(|p| p.peer_id != v.peer_id).collect();
                let t = others[self.rng.below(others.len() as u64) as usize];
                return Some(AdminRequest::TransferLeader { peer_id: t.peer_id });
            }
            return Some(AdminRequest::RemovePeer { peer_id: v.peer_id });
        }
        if free.is_empty() {
            return None;
        }
        let s = free[self.rng.below(free.len() as u64) as usize];
        self.ever_members.insert((r, s));
        if roll == 9 && voters.len() >= 3 {
            // Joint: swap a follower voter for a new voter.
            let others: Vec<&&Peer> = voters
                .iter()
                .filter(|p| p.peer_id != info.peer_id)
                .collect();
            let v = others[self.rng.below(others.len() as u64) as usize];
            return Some(AdminRequest::ChangePeers(vec![
                PeerChange::AddVoter { store_id: s },
                PeerChange::Remove { peer_id: v.peer_id },
            ]));
        }
        Some(AdminRequest::AddPeer {
            store_id: s,
            learner: true,
        })
    }

    fn collect_admin_answers(&mut self) {
        let answers = std::mem::take(&mut *self.admin_answers.lock().unwrap());
        for (seq, answer) in answers {
            if self.admin_pending.is_some_and(|(s, _)| s == seq) {
                self.admin_pending = None;
            }
            self.stat(match answer {
                Ok(_) => "admin_done",
                Err(RequestError::BadRequest { .. }) => "admin_refused",
                Err(_) => "admin_failed",
            });
        }
    }

    /// After healing: one put per key, each answered within a bound (no region stalls).
    fn final_writes(&mut self) {
        let bound_ms = 15_000;
        for k in 0..self.p.keys {
            let key = Self::key_name(k);
            let started = self.now_ms;
            self.final_seq += 1;
            let value = Bytes::from(format!("final-{k}"));
            let command = Command {
                client_id: 1000,
                sequence: self.final_seq,
                ops: vec![KvOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                }],
            };
            self.history.push(Op {
                client: 1000,
                key: key.clone(),
                kind: Kind::Put { value },
                invoked_ms: self.now_ms,
                returned_ms: None,
            });
            let op = self.history.len() - 1;
            self.clients[0].pending = Some(Pending {
                op,
                attempt: 0,
                store: None,
                request: Req::Write { key, command },
                deadline_ms: self.now_ms + bound_ms,
                retry_at_ms: None,
                retries: 0,
                sent_to: None,
            });
            self.submit(0);
            // Unknown outcomes are re-sent with the same sequence (`final_phase`).
            while self.clients[0].pending.is_some() && self.now_ms < started + bound_ms {
                self.step(false);
            }
            let answered = self.history[op].returned_ms.is_some();
            self.clients[0].pending = None;
            if !answered {
                self.violations.push(format!(
                    "key {k}: no final write answered within {bound_ms} ms after healing (at {} ms)",
                    self.now_ms
                ));
            }
        }
    }
}

fn admin_name(r: &AdminRequest) -> &'static str {
    match r {
        AdminRequest::AddPeer { .. } => "admin_add_learner",
        AdminRequest::PromoteLearner { .. } => "admin_promote",
        AdminRequest::RemovePeer { .. } => "admin_remove",
        AdminRequest::ChangePeers(_) => "admin_joint",
        AdminRequest::TransferLeader { .. } => "admin_transfer",
        AdminRequest::Split { .. } => "admin_split",
    }
}

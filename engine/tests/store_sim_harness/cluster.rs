//! The simulated cluster: nodes, network, clients, fault schedule and the run's checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver};
use engine::state::worker::{ApplyRequest, BuiltSnapshot};
use engine::state::{Command, Op as KvOp, OpResult};
use engine::store::{
    initial_regions, ClientRequest, ClientResponse, Epoch, IncomingSnapshot, RaftMessage,
    RegionMeta, RequestError, SnapshotReceipt, StoreEvent,
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
    request: ClientRequest,
    deadline_ms: u64,
    retry_at_ms: Option<u64>,
}

struct Client {
    id: u64,
    sequence: u64,
    values: u64,
    next_at_ms: u64,
    leader_hint: Option<u64>,
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
    epoch: Epoch,
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
}

fn fnv(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x100_0000_01b3)
}

impl Sim {
    pub fn new(seed: u64, p: Params) -> Sim {
        let mut rng = Rng(seed);
        let ids: Vec<u64> = (1..=p.stores).collect();
        let initial = initial_regions(&ids, &[]);
        let regions: Vec<u64> = initial.iter().map(|m| m.region_id).collect();
        let epoch = initial[0].epoch;
        let mut nodes: Vec<Node> = ids
            .iter()
            .map(|&id| Node::new(seed, id, regions.clone()))
            .collect();
        for n in &mut nodes {
            if p.lease_reads {
                n.read_mode = engine::store::ReadMode::Lease;
            }
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
                leader_hint: None,
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
            epoch,
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
        self.clients_step(busy);
        self.settle_all();
        self.collect_outgoing();
        self.poll_streams();
        self.collect_answers();
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
            for info in run.regions() {
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
        }
    }

    // ------------------------------------------------------------------ clients

    fn key_name(k: u64) -> Bytes {
        Bytes::from(format!("key-{k}"))
    }

    fn clients_step(&mut self, busy: bool) {
        for c in 0..self.clients.len() {
            let now = self.now_ms;
            if let Some(p) = &self.clients[c].pending {
                let store_down = p.store.is_some_and(|s| !self.up(s));
                if now >= p.deadline_ms || (store_down && p.retry_at_ms.is_none()) {
                    self.finish(c, None);
                    continue;
                }
                if p.retry_at_ms.is_some_and(|t| t <= now) {
                    self.submit(c);
                }
                continue;
            }
            if !busy || now < self.clients[c].next_at_ms {
                continue;
            }
            self.new_op(c);
            self.submit(c);
        }
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
                    ClientRequest::Write {
                        region_id: 1,
                        epoch: self.epoch,
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
                    ClientRequest::Write {
                        region_id: 1,
                        epoch: self.epoch,
                        command,
                    },
                )
            }
            _ => (
                Kind::Get { value: None },
                ClientRequest::Get {
                    region_id: 1,
                    epoch: self.epoch,
                    key: key.clone(),
                },
            ),
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
            deadline_ms: self.now_ms + 3000,
            retry_at_ms: None,
        });
    }

    /// Sends (or re-sends) client `c`'s pending request to the store it thinks leads.
    fn submit(&mut self, c: usize) {
        let up: Vec<u64> = (1..=self.p.stores).filter(|&s| self.up(s)).collect();
        let pick = self.rng.below(up.len().max(1) as u64) as usize;
        let cl = &mut self.clients[c];
        let p = cl.pending.as_mut().expect("pending");
        let target = match cl.leader_hint.filter(|s| up.contains(s)) {
            Some(s) => s,
            None if up.is_empty() => {
                p.retry_at_ms = Some(self.now_ms + 10);
                return;
            }
            None => up[pick],
        };
        cl.attempts += 1;
        p.attempt = cl.attempts;
        p.store = Some(target);
        p.retry_at_ms = None;
        let (client, attempt) = (c as u64, p.attempt);
        let answers = Arc::clone(&self.answers);
        let request = p.request.clone();
        if let (true, ClientRequest::Get { key, .. }) = (self.p.local_reads, &request) {
            let run = self.nodes[(up[pick] - 1) as usize]
                .run
                .as_mut()
                .expect("up");
            let v = run.local_get(1, key.clone());
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
        let cl = &mut self.clients[c];
        if let RequestError::NotLeader { leader, .. } = &e {
            cl.leader_hint = leader.map(|p| p.store_id);
        } else {
            cl.leader_hint = None;
        }
        if definitely_not_applied {
            let p = cl.pending.as_mut().expect("pending");
            p.retry_at_ms = Some(self.now_ms + delay);
            p.store = None;
            return;
        }
        self.stat("indeterminate_answers");
        self.finish(c, None);
    }

    /// Ends client `c`'s op: with an answer, or `None` (outcome unknown).
    fn finish(&mut self, c: usize, answer: Option<ClientResponse>) {
        let cl = &mut self.clients[c];
        let p = cl.pending.take().expect("pending");
        cl.next_at_ms = self.now_ms + 1 + self.rng.below(30);
        let op = &mut self.history[p.op];
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
                    request: ClientRequest::Get {
                        region_id: 1,
                        epoch: self.epoch,
                        key: key.clone(),
                    },
                    deadline_ms: self.now_ms + 3000,
                    retry_at_ms: None,
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

    /// Runs until every store reports the same applied index (bounded).
    fn converge(&mut self) -> bool {
        for _ in 0..20_000 {
            self.step(false);
            let mut applied = BTreeSet::new();
            let mut count = 0;
            for i in 0..self.nodes.len() {
                if let Some(run) = self.nodes[i].run.as_mut() {
                    for info in run.regions() {
                        applied.insert((
                            info.meta.region_id,
                            info.applied_index,
                            info.commit_index,
                        ));
                        count += 1;
                    }
                }
            }
            if count == self.nodes.len() * self.regions.len() && applied.len() == self.regions.len()
            {
                return true;
            }
        }
        false
    }

    fn compare_replicas(&mut self) {
        for r in self.regions.clone() {
            let mut first: Option<(u64, Vec<(Bytes, Bytes)>)> = None;
            for i in 0..self.nodes.len() {
                let id = self.nodes[i].id;
                let run = self.nodes[i].run.as_mut().expect("up");
                let rows = run.scan_all(r);
                match &first {
                    None => first = Some((id, rows)),
                    Some((fid, frows)) => {
                        if *frows != rows {
                            self.violations.push(format!(
                                "region {r}: store {id}'s state differs from store {fid}'s: {} vs {} rows",
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
        self.final_reads();
        if !self.converge() {
            let mut detail = String::new();
            for i in 0..self.nodes.len() {
                let id = self.nodes[i].id;
                if let Some(run) = self.nodes[i].run.as_mut() {
                    let failure = run.lp.failure().map(str::to_string);
                    {
                        use raftlog::Storage;
                        let rl = run.log.lock().unwrap().log.region_log(1);
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
                            " [store {id}: leader {} term {} commit {} applied {} hibernating {} failure {failure:?}]",
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
        let mut errs = check_history(&self.history);
        self.violations.append(&mut errs);
        let answered = self.history.iter().filter(|o| o.returned_ms.is_some());
        let n = answered.count() as u64;
        self.stats.insert("ops", self.history.len() as u64);
        self.stats.insert("ops_answered", n);
        self.stats
            .insert("terms_with_leader", self.leaders.len() as u64);
        for o in &self.history {
            self.trace = fnv(
                self.trace,
                o.invoked_ms ^ o.returned_ms.unwrap_or(u64::MAX) << 20,
            );
        }
    }
}

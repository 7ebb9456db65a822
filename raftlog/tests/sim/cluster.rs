//! The simulated cluster: nodes (a `RawNode` over a `MemStorage` "disk"), a lossy network, and
//! the fault and workload actions a schedule is made of. Everything is driven only through
//! `RawNode`'s public API, single-threaded, from one seeded [`Prng`].

use std::collections::{BTreeMap, HashSet, VecDeque};

use raftlog::*;

use super::checker::{chain_digest, Checker};
use super::prng::Prng;

/// Fewest random actions in a schedule.
pub const STEPS_MIN: usize = 800;
/// Most random actions in a schedule.
pub const STEPS_MAX: usize = 2400;

/// The shape of one schedule, derived from its seed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Initial voters (3 or 5).
    pub voters: u64,
    /// Extra nodes that start outside the configuration and may be added.
    pub spares: u64,
    /// Number of random actions before the quiet phase.
    pub steps: usize,
    /// `Config::pre_vote`.
    pub pre_vote: bool,
    /// `Config::check_quorum`.
    pub check_quorum: bool,
    /// Chance a message is lost, per mille.
    pub drop_permille: u64,
    /// Chance a message is duplicated, per mille.
    pub dup_permille: u64,
    /// `Config::max_size_per_msg`.
    pub max_size_per_msg: u64,
    /// `Config::max_inflight_msgs`.
    pub max_inflight_msgs: usize,
    /// `Config::batch_append` (on in three of four schedules: it takes the once-per-Ready append
    /// path of `RawNode::propose`).
    pub batch_append: bool,
    /// Fault injection into the *application*, to prove the checker catches real bugs: send
    /// `persisted_messages` before the Ready is durable (a crash then forgets promised votes and
    /// acknowledged entries). Always off in the normal schedules.
    pub bug_send_before_persist: bool,
}

impl Options {
    /// The options of schedule `seed`: even seeds run 3 voters, odd seeds 5.
    pub fn from_seed(seed: u64) -> Options {
        let mut r = Prng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        Options {
            voters: if seed % 2 == 0 { 3 } else { 5 },
            spares: 2,
            steps: STEPS_MIN + r.below((STEPS_MAX - STEPS_MIN + 1) as u64) as usize,
            pre_vote: r.chance(500),
            check_quorum: r.chance(500),
            drop_permille: if r.chance(300) {
                r.below(350)
            } else {
                r.below(120)
            },
            dup_permille: r.below(60),
            max_size_per_msg: [256, 4096, u64::MAX][r.below(3) as usize],
            max_inflight_msgs: [1, 4, 256][r.below(3) as usize],
            batch_append: (seed / 2) % 4 != 0,
            bug_send_before_persist: false,
        }
    }
}

/// A Ready handed to the "disk" but not yet durable.
struct PendingReady {
    number: u64,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    hs: Option<HardState>,
    persisted_msgs: Vec<Message>,
    committed: Vec<Entry>,
}

/// One simulated server.
pub struct SimNode {
    /// Peer id.
    pub id: u64,
    /// What survives a crash: persisted entries, hard state, snapshot, applied conf state.
    pub disk: MemStorage,
    /// The running node; None while crashed.
    pub raw: Option<RawNode<MemStorage>>,
    pending: VecDeque<PendingReady>,
    /// The durable state machine: applied index and the digest of everything applied.
    pub applied_index: u64,
    digest: u64,
    /// The configuration as of `applied_index`.
    pub conf: ConfState,
    commit_checked: u64,
}

/// Counters that show what a schedule exercised.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// Entries applied by all nodes.
    pub applies: u64,
    /// Conf changes applied (by any node).
    pub conf_changes: u64,
    /// Snapshots installed.
    pub snapshots: u64,
    /// Read answers checked.
    pub reads: u64,
    /// Crashes.
    pub crashes: u64,
    /// Highest term reached.
    pub max_term: u64,
}

/// The network and everything shared by the nodes.
struct World {
    rng: Prng,
    net: Vec<Message>,
    blocked: HashSet<(u64, u64)>,
    checker: Checker,
    stats: Stats,
    trace: bool,
}

/// A whole simulated cluster.
pub struct Sim {
    seed: u64,
    opts: Options,
    nodes: BTreeMap<u64, SimNode>,
    world: World,
    next_write: u64,
    next_read: u64,
}

fn snapshot_data(index: u64, digest: u64) -> Vec<u8> {
    let mut v = index.to_le_bytes().to_vec();
    v.extend_from_slice(&digest.to_le_bytes());
    v
}

fn parse_snapshot_data(data: &[u8]) -> Option<(u64, u64)> {
    if data.len() != 16 {
        return None;
    }
    let index = u64::from_le_bytes(data[..8].try_into().ok()?);
    let digest = u64::from_le_bytes(data[8..].try_into().ok()?);
    Some((index, digest))
}

fn is_member(cs: &ConfState, id: u64) -> bool {
    cs.voters.contains(&id) || cs.learners.contains(&id) || cs.voters_outgoing.contains(&id)
}

impl World {
    fn violation(&mut self, text: String) {
        self.checker.violations.push(text);
    }

    fn send(&mut self, msgs: Vec<Message>) {
        self.net.extend(msgs);
    }
}

impl SimNode {
    fn raft(&self) -> Option<&Raft<MemStorage>> {
        self.raw.as_ref().map(|r| &r.raft)
    }

    fn is_leader(&self) -> bool {
        self.raft().is_some_and(|r| r.state == StateRole::Leader)
    }

    /// Writes a Ready's snapshot, entries and hard state to the disk; installs the snapshot in
    /// the state machine.
    fn write_disk(
        &mut self,
        snap: &Snapshot,
        entries: &[Entry],
        hs: Option<HardState>,
        world: &mut World,
    ) {
        if !snap.is_empty() {
            if let Err(e) = self.disk.wl().apply_snapshot(snap.clone()) {
                world.violation(format!("node {}: disk refused snapshot: {e}", self.id));
            }
            match parse_snapshot_data(&snap.data) {
                Some((index, digest)) if index == snap.metadata.index => {
                    if index > self.applied_index {
                        self.applied_index = index;
                        self.digest = digest;
                        self.conf = snap.metadata.conf_state.clone();
                        world.checker.observe_apply(self.id, index, digest);
                        world.stats.snapshots += 1;
                    }
                }
                _ => world.violation(format!(
                    "node {}: snapshot with bad data {:?}",
                    self.id, snap.metadata
                )),
            }
        }
        if !entries.is_empty() {
            if let Err(e) = self.disk.wl().append(entries) {
                world.violation(format!("node {}: disk refused entries: {e}", self.id));
            }
        }
        if let Some(hs) = hs {
            self.disk.wl().set_hard_state(hs);
        }
    }

    /// Applies committed entries in order to the durable state machine.
    fn apply(&mut self, entries: &[Entry], world: &mut World) {
        let before = self.applied_index;
        for e in entries {
            if e.index <= self.applied_index {
                continue;
            }
            if e.index != self.applied_index + 1 {
                world.violation(format!(
                    "node {}: applies index {} after {}",
                    self.id, e.index, self.applied_index
                ));
                return;
            }
            self.apply_conf_change(e, world);
            self.digest = chain_digest(self.digest, e);
            self.applied_index = e.index;
            world.checker.observe_apply(self.id, e.index, self.digest);
            world.stats.applies += 1;
        }
        if self.applied_index > before {
            if let Some(raw) = self.raw.as_mut() {
                raw.advance_apply_to(self.applied_index);
            }
        }
    }

    fn apply_conf_change(&mut self, e: &Entry, world: &mut World) {
        let cc = match e.entry_type {
            EntryType::EntryNormal => return,
            EntryType::EntryConfChange => ConfChange::decode(&e.data).map(ConfChangeV2::from),
            EntryType::EntryConfChangeV2 => ConfChangeV2::decode(&e.data),
        };
        let raw = self.raw.as_mut().expect("applying on a live node");
        let cc = match cc {
            Ok(cc) => cc,
            Err(err) => {
                return world.violation(format!(
                    "node {}: undecodable conf change at {}: {err}",
                    self.id, e.index
                ))
            }
        };
        match raw.apply_conf_change(&cc) {
            Ok(cs) => {
                self.disk.wl().set_conf_state(cs.clone());
                self.conf = cs;
                world.stats.conf_changes += 1;
            }
            Err(err) => world.violation(format!(
                "node {}: committed conf change {cc:?} at {} failed to apply: {err}",
                self.id, e.index
            )),
        }
    }

    /// Takes one Ready: sends its messages, then persists it now (sync) or queues it.
    fn handle_ready(&mut self, world: &mut World, send_early: bool) {
        let Some(raw) = self.raw.as_mut() else { return };
        let mut rd = raw.ready();
        if let Some(first) = rd.entries().first() {
            let prev = if first.index <= 1 {
                Some(0)
            } else {
                raw.raft
                    .raft_log
                    .term(first.index - 1)
                    .ok()
                    .filter(|t| *t > 0)
            };
            world.checker.observe_entries(self.id, prev, rd.entries());
        }
        for rs in rd.take_read_states() {
            world
                .checker
                .read_answered(self.id, &rs.request_ctx, rs.index);
        }
        world.send(rd.take_messages());
        let snapshot = rd.snapshot().clone();
        let entries = rd.entries().clone();
        let hs = rd.hs().cloned();
        let committed = rd.committed_entries().clone();
        if self.pending.is_empty() && world.rng.chance(300) {
            self.write_disk(&snapshot, &entries, hs, world);
            world.send(rd.take_persisted_messages());
            self.apply(&committed, world);
            let raw = self.raw.as_mut().expect("live");
            let mut light = raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                self.disk.wl().mut_hard_state().commit = commit;
            }
            world.send(light.take_messages());
            let committed = light.take_committed_entries();
            self.apply(&committed, world);
        } else {
            let mut persisted_msgs = rd.take_persisted_messages();
            if send_early {
                world.send(std::mem::take(&mut persisted_msgs));
            }
            let number = rd.number();
            raw.advance_append_async(rd);
            self.pending.push_back(PendingReady {
                number,
                snapshot,
                entries,
                hs,
                persisted_msgs,
                committed,
            });
        }
    }

    /// Makes the oldest queued Ready durable.
    fn persist_one(&mut self, world: &mut World) -> bool {
        let Some(p) = self.pending.pop_front() else {
            return false;
        };
        self.write_disk(&p.snapshot, &p.entries, p.hs, world);
        world.send(p.persisted_msgs);
        if let Some(raw) = self.raw.as_mut() {
            raw.on_persist_ready(p.number);
            if !p.snapshot.is_empty() && raw.raft.raft_log.applied < self.applied_index {
                raw.advance_apply_to(self.applied_index);
            }
        }
        self.apply(&p.committed, world);
        true
    }

    fn drain_readies(&mut self, world: &mut World, send_early: bool) {
        for _ in 0..16 {
            match self.raw.as_ref() {
                Some(raw) if raw.has_ready() => self.handle_ready(world, send_early),
                _ => return,
            }
        }
    }

    /// Feeds the checker what this node shows now.
    fn check(&mut self, world: &mut World) {
        let Some(raft) = self.raw.as_ref().map(|r| &r.raft) else {
            return;
        };
        world.stats.max_term = world.stats.max_term.max(raft.term);
        let leader = raft.state == StateRole::Leader;
        world.checker.observe_role(self.id, raft.term, leader);
        let log = &raft.raft_log;
        let committed = log.committed;
        for i in (self.commit_checked + 1)..=committed {
            if let Ok(t) = log.term(i) {
                if t > 0 {
                    world.checker.observe_commit(self.id, i, t);
                }
            }
        }
        self.commit_checked = self.commit_checked.max(committed);
        if leader {
            let (first, last) = (log.first_index(), log.last_index());
            world
                .checker
                .check_leader(self.id, raft.term, first, last, |i| {
                    log.term(i).unwrap_or(0)
                });
        }
    }
}

impl Sim {
    /// A fresh cluster for `seed`.
    pub fn new(seed: u64, opts: Options, trace: bool) -> Sim {
        let mut sim = Sim {
            seed,
            opts,
            nodes: BTreeMap::new(),
            world: World {
                rng: Prng::new(seed),
                net: Vec::new(),
                blocked: HashSet::new(),
                checker: Checker::default(),
                stats: Stats::default(),
                trace,
            },
            next_write: 0,
            next_read: 0,
        };
        let voters: Vec<u64> = (1..=sim.opts.voters).collect();
        for id in 1..=sim.opts.voters + sim.opts.spares {
            let disk = MemStorage::new_with_conf_state(ConfState::from_voters(voters.clone()));
            let conf = ConfState::from_voters(voters.clone());
            let node = SimNode {
                id,
                disk,
                raw: None,
                pending: VecDeque::new(),
                applied_index: 0,
                digest: 1,
                conf,
                commit_checked: 0,
            };
            sim.nodes.insert(id, node);
            sim.start(id);
        }
        sim
    }

    fn config(&self, id: u64, applied: u64) -> Config {
        let mut c = Config::new(id);
        c.election_tick = 10;
        c.heartbeat_tick = 2;
        c.applied = applied;
        c.pre_vote = self.opts.pre_vote;
        c.check_quorum = self.opts.check_quorum;
        c.max_size_per_msg = self.opts.max_size_per_msg;
        c.max_inflight_msgs = self.opts.max_inflight_msgs;
        c.batch_append = self.opts.batch_append;
        c.rng_seed = self.seed.wrapping_mul(1000).wrapping_add(id);
        c
    }

    /// Starts (or restarts) node `id` from what its disk holds.
    fn start(&mut self, id: u64) {
        let applied = self.nodes[&id].applied_index;
        let cfg = self.config(id, applied);
        let node = self.nodes.get_mut(&id).expect("known node");
        match RawNode::new(&cfg, node.disk.clone()) {
            Ok(raw) => node.raw = Some(raw),
            Err(e) => self
                .world
                .violation(format!("node {id}: restart failed: {e}")),
        }
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.world.trace {
            eprintln!("{}", what());
        }
    }

    fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.raw.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn leader_id(&self) -> Option<u64> {
        let leaders = self.nodes.values().filter(|n| n.is_leader());
        leaders
            .max_by_key(|n| n.raft().map_or(0, |r| r.term))
            .map(|n| n.id)
    }

    /// A live node, the leader most of the time.
    fn target(&mut self) -> Option<u64> {
        match self.leader_id() {
            Some(l) if self.world.rng.chance(800) => Some(l),
            _ => {
                let live = self.live_ids();
                self.world.rng.pick(&live)
            }
        }
    }

    /// Runs the schedule: random actions with a check after each, then the quiet phase.
    pub fn run(&mut self) -> std::result::Result<Stats, String> {
        for step in 0..self.opts.steps {
            self.random_action(step);
            self.settle();
            if !self.world.checker.ok() {
                return Err(format!("step {step}: {}", self.violation_text()));
            }
        }
        self.quiet_phase()?;
        let mut stats = self.world.stats.clone();
        stats.reads = self.world.checker.reads_answered;
        Ok(stats)
    }

    /// Processes every node's Readies and runs the checks.
    fn settle(&mut self) {
        let send_early = self.opts.bug_send_before_persist;
        for node in self.nodes.values_mut() {
            node.drain_readies(&mut self.world, send_early);
        }
        for node in self.nodes.values_mut() {
            node.check(&mut self.world);
        }
    }

    fn random_action(&mut self, step: usize) {
        let roll = self.world.rng.below(1000);
        match roll {
            0..=349 => self.deliver_one(false),
            350..=499 => self.tick_all(),
            500..=529 => {
                if let Some(id) = self.world.rng.pick(&self.live_ids()) {
                    self.tick(id);
                }
            }
            530..=679 => self.persist_random(),
            680..=799 => self.propose(),
            800..=839 => self.read(),
            840..=849 => self.crash(),
            850..=879 => self.restart(),
            880..=891 => self.partition(),
            892..=911 => self.heal(),
            912..=936 => self.conf_change(),
            937..=946 => self.transfer(),
            947..=966 => self.compact(),
            967..=971 => self.campaign(),
            _ => self.deliver_one(false),
        }
        let _ = step;
    }

    fn tick(&mut self, id: u64) {
        if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
            raw.tick();
        }
    }

    fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(raw) = node.raw.as_mut() {
                raw.tick();
            }
        }
    }

    fn persist_random(&mut self) {
        let with_pending: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| !n.pending.is_empty())
            .map(|n| n.id)
            .collect();
        if let Some(id) = self.world.rng.pick(&with_pending) {
            let node = self.nodes.get_mut(&id).expect("known");
            node.persist_one(&mut self.world);
        }
    }

    /// Delivers one message (the oldest, or a random one when `fifo` is off), maybe dropping
    /// or duplicating it.
    fn deliver_one(&mut self, fifo: bool) {
        if self.world.net.is_empty() {
            return;
        }
        let i = if fifo || self.world.rng.chance(500) {
            0
        } else {
            self.world.rng.below(self.world.net.len() as u64) as usize
        };
        let m = self.world.net.remove(i);
        let faulty = !fifo;
        let lost = self.world.blocked.contains(&(m.from, m.to))
            || (faulty && self.world.rng.chance(self.opts.drop_permille));
        let receiver_up = self.nodes.get(&m.to).is_some_and(|n| n.raw.is_some());
        if lost || !receiver_up {
            self.on_lost(&m);
            return;
        }
        if faulty && self.world.rng.chance(self.opts.dup_permille) {
            self.world.net.push(m.clone());
        }
        let (from, to, is_snap) = (m.from, m.to, m.msg_type == MessageType::MsgSnapshot);
        self.trace(|| {
            format!(
                "deliver {:?} {}->{} term {} idx {} n={}",
                m.msg_type,
                m.from,
                m.to,
                m.term,
                m.index,
                m.entries.len()
            )
        });
        let raw = self
            .nodes
            .get_mut(&to)
            .and_then(|n| n.raw.as_mut())
            .expect("receiver up");
        let _ = raw.step(m);
        if is_snap {
            if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
                sender.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
    }

    /// Tells the sender about a lost snapshot (as a transport would) and, sometimes, that the
    /// peer is unreachable.
    fn on_lost(&mut self, m: &Message) {
        let tell_unreachable = self.world.rng.chance(200);
        if let Some(sender) = self.nodes.get_mut(&m.from).and_then(|n| n.raw.as_mut()) {
            if m.msg_type == MessageType::MsgSnapshot {
                sender.report_snapshot(m.to, SnapshotStatus::Failure);
            }
            if tell_unreachable {
                sender.report_unreachable(m.to);
            }
        }
    }

    fn propose(&mut self) {
        let Some(id) = self.target() else { return };
        self.next_write += 1;
        let mut data = self.next_write.to_le_bytes().to_vec();
        data.resize(8 + self.world.rng.below(300) as usize, 0xAB);
        let raw = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.raw.as_mut())
            .expect("live");
        let r = raw.propose(vec![], data);
        self.trace(|| format!("propose at {id}: {r:?}"));
    }

    fn read(&mut self) {
        let Some(id) = self.target() else { return };
        self.next_read += 1;
        let ctx = self.next_read.to_le_bytes().to_vec();
        self.world.checker.read_issued(ctx.clone());
        self.trace(|| format!("read_index at {id}"));
        let raw = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.raw.as_mut())
            .expect("live");
        raw.read_index(ctx);
    }

    fn crash(&mut self) {
        let live = self.live_ids();
        let down = self.nodes.len() - live.len();
        if down as u64 >= self.opts.voters / 2 {
            return; // at most a minority of the initial voters down at a time
        }
        let Some(id) = self.world.rng.pick(&live) else {
            return;
        };
        self.trace(|| format!("crash {id}"));
        let node = self.nodes.get_mut(&id).expect("known");
        node.raw = None;
        node.pending.clear();
        self.world.stats.crashes += 1;
    }

    fn restart(&mut self) {
        let down: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.raw.is_none())
            .map(|n| n.id)
            .collect();
        if let Some(id) = self.world.rng.pick(&down) {
            self.trace(|| format!("restart {id}"));
            self.start(id);
        }
    }

    fn partition(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        self.world.blocked.clear();
        if self.world.rng.chance(300) {
            let a = self.world.rng.pick(&ids).unwrap_or(1);
            let b = self.world.rng.pick(&ids).unwrap_or(2);
            self.world.blocked.insert((a, b));
            self.trace(|| format!("cut link {a}->{b}"));
            return;
        }
        let side: Vec<bool> = ids.iter().map(|_| self.world.rng.chance(400)).collect();
        for (i, a) in ids.iter().enumerate() {
            for (j, b) in ids.iter().enumerate() {
                if side[i] != side[j] {
                    self.world.blocked.insert((*a, *b));
                }
            }
        }
        self.trace(|| format!("partition {side:?}"));
    }

    fn heal(&mut self) {
        self.trace(|| "heal".to_string());
        self.world.blocked.clear();
    }

    fn campaign(&mut self) {
        if let Some(id) = self.world.rng.pick(&self.live_ids()) {
            self.trace(|| format!("campaign {id}"));
            let raw = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.raw.as_mut())
                .expect("live");
            let _ = raw.campaign();
        }
    }

    fn transfer(&mut self) {
        let Some(l) = self.leader_id() else { return };
        let voters = self.nodes[&l].conf.voters.clone();
        if let Some(to) = self.world.rng.pick(&voters) {
            self.trace(|| format!("transfer {l} -> {to}"));
            let raw = self
                .nodes
                .get_mut(&l)
                .and_then(|n| n.raw.as_mut())
                .expect("live");
            raw.transfer_leader(to);
        }
    }

    /// Snapshots a node's state machine at its applied index and compacts its log there.
    fn compact(&mut self) {
        if let Some(id) = self.world.rng.pick(&self.live_ids()) {
            self.compact_node(id);
        }
    }

    fn compact_node(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known");
        let index = node.applied_index;
        let first = node.disk.first_index().unwrap_or(1);
        if index < first + 3 {
            return;
        }
        let data = snapshot_data(index, node.digest);
        if let Err(e) = node
            .disk
            .wl()
            .create_snapshot(index, Some(node.conf.clone()), data)
        {
            return self
                .world
                .violation(format!("node {id}: create_snapshot({index}) failed: {e}"));
        }
        if let Err(e) = node.disk.wl().compact(index) {
            return self
                .world
                .violation(format!("node {id}: compact({index}) failed: {e}"));
        }
        self.trace(|| format!("compact {id} to {index}"));
    }

    fn conf_change(&mut self) {
        let Some(l) = self.leader_id() else { return };
        let conf = self.nodes[&l].conf.clone();
        let all: Vec<u64> = self.nodes.keys().copied().collect();
        let outsiders: Vec<u64> = all
            .iter()
            .copied()
            .filter(|id| !is_member(&conf, *id))
            .collect();
        let others: Vec<u64> = conf.voters.iter().copied().filter(|v| *v != l).collect();
        let rng = &mut self.world.rng;
        let single = |t, id| ConfChangeSingle {
            change_type: t,
            node_id: id,
        };
        let cc: ConfChangeV2 = if !conf.voters_outgoing.is_empty() {
            ConfChangeV2::default() // leave the joint config
        } else {
            let can_remove = conf.voters.len() > 3;
            let learner = rng.pick(&conf.learners);
            let outsider = rng.pick(&outsiders);
            let victim = rng.pick(&others);
            let transition = [
                ConfChangeTransition::Auto,
                ConfChangeTransition::Implicit,
                ConfChangeTransition::Explicit,
            ][rng.below(3) as usize];
            match (rng.below(5), learner, outsider, victim) {
                (0, _, Some(o), _) => single(ConfChangeType::AddLearnerNode, o).into_v2(),
                (1, Some(lr), _, _) => single(ConfChangeType::AddNode, lr).into_v2(),
                (2, _, _, Some(v)) if can_remove => single(ConfChangeType::RemoveNode, v).into_v2(),
                (3, Some(lr), _, Some(v)) => ConfChangeV2 {
                    transition,
                    changes: vec![
                        single(ConfChangeType::AddNode, lr),
                        single(ConfChangeType::RemoveNode, v),
                    ],
                    context: Default::default(),
                },
                (4, _, _, Some(v)) if can_remove => ConfChangeV2 {
                    transition,
                    changes: vec![single(ConfChangeType::AddLearnerNode, v)],
                    context: Default::default(),
                },
                (_, _, Some(o), _) => single(ConfChangeType::AddLearnerNode, o).into_v2(),
                _ => return,
            }
        };
        let raw = self
            .nodes
            .get_mut(&l)
            .and_then(|n| n.raw.as_mut())
            .expect("live");
        let r = if cc.changes.len() == 1
            && cc.transition == ConfChangeTransition::Auto
            && rng_v1(self.next_write)
        {
            let c = ConfChange {
                change_type: cc.changes[0].change_type,
                node_id: cc.changes[0].node_id,
                ..Default::default()
            };
            raw.propose_conf_change(vec![], c)
        } else {
            raw.propose_conf_change(vec![], cc.clone())
        };
        self.trace(|| format!("conf change at {l}: {cc:?} -> {r:?}"));
    }

    /// Heals everything, restarts crashed nodes, and runs without faults
    /// until a leader has everyone in its configuration caught up; then one more write must be
    /// applied everywhere.
    fn quiet_phase(&mut self) -> std::result::Result<(), String> {
        self.world.blocked.clear();
        let down: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.raw.is_none())
            .map(|n| n.id)
            .collect();
        for id in down {
            self.start(id);
        }
        let mut final_write: Option<(u64, u64)> = None;
        for round in 0..400 {
            self.quiet_round();
            if round % 10 == 9 {
                // The application takes fresh snapshots now and then (a stale one may not
                // include a newly added peer, which then refuses it).
                if let Some(l) = self.leader_id() {
                    self.compact_node(l);
                }
            }
            if !self.world.checker.ok() {
                return Err(format!("quiet round {round}: {}", self.violation_text()));
            }
            match final_write {
                None => {
                    if let Some(l) = self.converged() {
                        let raw = self
                            .nodes
                            .get_mut(&l)
                            .and_then(|n| n.raw.as_mut())
                            .expect("leader");
                        if raw.propose(vec![], b"final".to_vec()).is_ok() {
                            final_write = Some((l, raw.raft.raft_log.last_index()));
                        }
                    }
                }
                Some((_, index)) => {
                    if let Some(l) = self.converged() {
                        if self.nodes[&l].applied_index >= index {
                            return Ok(());
                        }
                    }
                }
            }
        }
        let state: Vec<String> = self
            .nodes
            .values()
            .map(|n| match n.raft() {
                Some(r) => format!(
                    "{}:{:?} t{} lead{} commit{} last{} applied{} conf{:?}",
                    n.id,
                    r.state,
                    r.term,
                    r.leader_id,
                    r.raft_log.committed,
                    r.raft_log.last_index(),
                    n.applied_index,
                    n.conf
                ),
                None => format!("{}:down applied{}", n.id, n.applied_index),
            })
            .collect();
        let progress = self
            .leader_id()
            .and_then(|l| self.nodes[&l].raw.as_ref())
            .map(|r| {
                let st = r.status();
                st.progress.map(|p| {
                    p.iter()
                        .map(|(id, pr)| {
                            format!(
                                "{id}:{:?} m{} n{} paused{} active{}",
                                pr.state,
                                pr.matched,
                                pr.next_idx,
                                pr.is_paused(),
                                pr.recent_active
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            });
        Err(format!("liveness: no converged leader after healing; leader progress {progress:?} (final write {final_write:?}); {}", state.join(" | ")))
    }

    /// One fault-free round: tick everyone, then deliver and persist until quiet.
    fn quiet_round(&mut self) {
        self.tick_all();
        for _ in 0..64 {
            self.settle();
            let mut persisted = false;
            for node in self.nodes.values_mut() {
                while node.persist_one(&mut self.world) {
                    persisted = true;
                }
            }
            if self.world.net.is_empty() && !persisted {
                break;
            }
            while !self.world.net.is_empty() {
                self.deliver_one(true);
            }
        }
        self.settle();
    }

    /// The leader whose whole configuration has applied its whole log, if any.
    fn converged(&self) -> Option<u64> {
        let l = self.leader_id()?;
        let leader = self.nodes[&l].raft()?;
        let last = leader.raft_log.last_index();
        let conf = &self.nodes[&l].conf;
        let ok = self
            .nodes
            .values()
            .filter(|n| is_member(conf, n.id))
            .all(|n| {
                n.raft()
                    .is_some_and(|r| r.raft_log.committed == last && r.leader_id == l)
                    && n.applied_index == last
            });
        ok.then_some(l)
    }

    /// The violations found, each once, in order.
    fn violation_text(&self) -> String {
        let mut seen = HashSet::new();
        let unique: Vec<&str> = self
            .world
            .checker
            .violations
            .iter()
            .map(String::as_str)
            .filter(|v| seen.insert(*v))
            .collect();
        unique.join("; ")
    }

    /// The checker, for tests that inspect it.
    pub fn checker(&self) -> &Checker {
        &self.world.checker
    }
}

/// Whether a single-change proposal goes through the V1 API (half the time, by write count).
fn rng_v1(n: u64) -> bool {
    n % 2 == 0
}

trait IntoV2 {
    fn into_v2(self) -> ConfChangeV2;
}

impl IntoV2 for ConfChangeSingle {
    fn into_v2(self) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![self],
            context: Default::default(),
        }
    }
}

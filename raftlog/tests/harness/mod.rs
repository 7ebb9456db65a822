//! A synchronous test network of `RawNode`s over `MemStorage`: every Ready is persisted at once,
//! committed entries are applied (conf changes included), and messages are delivered until the
//! network is quiet, through per-link cuts and a message filter that may drop or rewrite.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet, VecDeque};

use raftlog::*;

/// The config the behaviour tests start from: 10-tick elections, 1-tick heartbeats.
pub fn config(id: u64) -> Config {
    let mut c = Config::new(id);
    c.election_tick = 10;
    c.heartbeat_tick = 1;
    c.check_quorum = false;
    c.pre_vote = false;
    c.max_size_per_msg = u64::MAX;
    c.max_inflight_msgs = 256;
    c.rng_seed = id;
    c
}

/// A node of the network and what its application saw.
pub struct Node {
    /// The node.
    pub raw: RawNode<MemStorage>,
    /// Its storage (shared with `raw`).
    pub store: MemStorage,
    /// Every committed entry applied, in order (no-ops and conf changes included).
    pub applied: Vec<Entry>,
    /// Every ReadState received.
    pub read_states: Vec<ReadState>,
    /// Whether committed entries are applied (off: they are held back, not applied).
    pub auto_apply: bool,
    /// Committed entries held back while `auto_apply` is off.
    pub held: Vec<Entry>,
    /// When set, `stabilize` leaves this node's Readies to the test.
    pub manual: bool,
}

/// Decides the fate of a message: `false` drops it; it may also rewrite it.
pub type Filter = Box<dyn FnMut(&mut Message) -> bool>;

/// The network.
pub struct Network {
    /// Nodes by id.
    pub nodes: BTreeMap<u64, Node>,
    cut: HashSet<(u64, u64)>,
    filter: Option<Filter>,
    queue: VecDeque<Message>,
    /// Every message delivered (after filtering), in order.
    pub delivered: Vec<Message>,
    /// The initial configuration (new nodes boot with it and replay the log).
    pub boot_conf: ConfState,
}

impl Network {
    /// `n` voters with ids 1..=n and the default test config.
    pub fn new(n: u64) -> Network {
        Network::with_config((1..=n).collect(), vec![], |_| {})
    }

    /// Voters and learners, each config adjusted by `tweak`.
    pub fn with_config(
        voters: Vec<u64>,
        learners: Vec<u64>,
        tweak: impl Fn(&mut Config),
    ) -> Network {
        let boot_conf = ConfState::from_voters_learners(voters.clone(), learners.clone());
        let mut net = Network {
            nodes: BTreeMap::new(),
            cut: HashSet::new(),
            filter: None,
            queue: VecDeque::new(),
            delivered: Vec::new(),
            boot_conf,
        };
        for id in voters.iter().chain(learners.iter()) {
            net.add_node(*id, &tweak);
        }
        net
    }

    /// Adds node `id` booted with the initial configuration and an empty log.
    pub fn add_node(&mut self, id: u64, tweak: impl Fn(&mut Config)) {
        let store = MemStorage::new_with_conf_state(self.boot_conf.clone());
        self.add_node_with_store(id, store, tweak);
    }

    /// Adds node `id` over a prepared storage.
    pub fn add_node_with_store(&mut self, id: u64, store: MemStorage, tweak: impl Fn(&mut Config)) {
        let mut cfg = config(id);
        tweak(&mut cfg);
        let raw = RawNode::new(&cfg, store.clone()).expect("valid config");
        let node = Node {
            raw,
            store,
            applied: vec![],
            read_states: vec![],
            auto_apply: true,
            held: vec![],
            manual: false,
        };
        self.nodes.insert(id, node);
    }

    /// The node `id`.
    pub fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        &mut self.nodes.get_mut(&id).expect("no such node").raw
    }

    /// The Raft state of `id`.
    pub fn raft(&self, id: u64) -> &Raft<MemStorage> {
        &self.nodes[&id].raw.raft
    }

    /// Drops every message from `a` to `b` and from `b` to `a`.
    pub fn cut(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    /// Removes every cut and the filter.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.filter = None;
    }

    /// Installs a filter that sees every message before delivery.
    pub fn set_filter(&mut self, f: impl FnMut(&mut Message) -> bool + 'static) {
        self.filter = Some(Box::new(f));
    }

    /// Drops every message of these types.
    pub fn drop_types(&mut self, types: &[MessageType]) {
        let types = types.to_vec();
        self.set_filter(move |m| !types.contains(&m.msg_type));
    }

    /// Removes the filter (cuts stay).
    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// Handles every Ready of `id` once; returns whether there was one.
    pub fn handle_ready(&mut self, id: u64) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        if node.manual || !node.raw.has_ready() {
            return false;
        }
        let mut rd = node.raw.ready();
        self.queue.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            node.store
                .wl()
                .apply_snapshot(rd.snapshot().clone())
                .expect("apply snapshot");
        }
        node.store.wl().append(rd.entries()).expect("append");
        if let Some(hs) = rd.hs() {
            node.store.wl().set_hard_state(*hs);
        }
        self.queue.extend(rd.take_persisted_messages());
        node.read_states.extend(rd.take_read_states());
        let committed = rd.committed_entries().clone();
        apply(node, committed);
        let mut light = if node.auto_apply {
            node.raw.advance(rd)
        } else {
            node.raw.advance_append(rd)
        };
        if let Some(commit) = light.commit_index() {
            node.store.wl().mut_hard_state().commit = commit;
        }
        self.queue.extend(light.take_messages());
        apply(node, light.take_committed_entries());
        if node.auto_apply {
            node.raw.advance_apply();
        }
        true
    }

    /// Handles Readies and delivers messages until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            let mut moved = false;
            for id in ids {
                while self.handle_ready(id) {
                    moved = true;
                }
            }
            if self.queue.is_empty() && !moved {
                return;
            }
            while let Some(m) = self.queue.pop_front() {
                self.deliver(m);
            }
        }
        panic!("network did not stabilize");
    }

    /// Delivers `m` (subject to cuts and the filter) without stabilizing.
    pub fn deliver(&mut self, mut m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        if let Some(f) = self.filter.as_mut() {
            if !f(&mut m) {
                return;
            }
        }
        let Some(node) = self.nodes.get_mut(&m.to) else {
            return;
        };
        self.delivered.push(m.clone());
        let _ = node.raw.step(m);
    }

    /// Steps `msgs` into their nodes, then stabilizes.
    pub fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            self.deliver(m);
        }
        self.stabilize();
    }

    /// Makes `id` campaign and stabilizes.
    pub fn campaign(&mut self, id: u64) {
        self.node(id).campaign().expect("campaign");
        self.stabilize();
    }

    /// Ticks `id` `n` times, stabilizing after each tick.
    pub fn tick(&mut self, id: u64, n: usize) {
        for _ in 0..n {
            self.node(id).tick();
            self.stabilize();
        }
    }

    /// Ticks every node `n` times, stabilizing after each round.
    pub fn tick_all(&mut self, n: usize) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for _ in 0..n {
            for id in &ids {
                self.node(*id).tick();
            }
            self.stabilize();
        }
    }

    /// Proposes `data` at `id` and stabilizes.
    pub fn propose(&mut self, id: u64, data: &[u8]) -> Result<()> {
        let r = self.node(id).propose(vec![], data.to_vec());
        self.stabilize();
        r
    }

    /// The data of the normal, non-empty entries `id` applied.
    pub fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        let node = &self.nodes[&id];
        node.applied
            .iter()
            .filter(|e| e.entry_type == EntryType::EntryNormal && !e.data.is_empty())
            .map(|e| e.data.to_vec())
            .collect()
    }

    /// The state role of `id`.
    pub fn role(&self, id: u64) -> StateRole {
        self.raft(id).state
    }

    /// The current leader as seen by `id`.
    pub fn leader_of(&self, id: u64) -> u64 {
        self.raft(id).leader_id
    }

    /// The configuration `id` has applied (what its storage records).
    pub fn conf_state(&self, id: u64) -> ConfState {
        self.nodes[&id]
            .store
            .initial_state()
            .expect("mem")
            .conf_state
    }

    /// The terms of `id`'s log from its first index to its last.
    pub fn log_terms(&self, id: u64) -> Vec<u64> {
        let log = &self.raft(id).raft_log;
        (log.first_index()..=log.last_index())
            .map(|i| log.term(i).expect("term"))
            .collect()
    }

    /// Snapshots `id`'s storage at its applied index and compacts the log there.
    pub fn compact(&mut self, id: u64) -> u64 {
        let applied = self.raft(id).raft_log.applied;
        let cs = self.conf_state(id);
        let node = self.nodes.get_mut(&id).expect("no such node");
        node.store
            .wl()
            .create_snapshot(applied, Some(cs), b"snap".to_vec())
            .expect("create snapshot");
        node.store.wl().compact(applied).expect("compact");
        applied
    }

    /// Messages delivered of type `t` from `from` to `to` since `since` (an index into
    /// `delivered`).
    pub fn count_delivered(&self, since: usize, t: MessageType, from: u64, to: u64) -> usize {
        self.delivered[since..]
            .iter()
            .filter(|m| m.msg_type == t && m.from == from && m.to == to)
            .count()
    }

    /// Applies the held-back entries of `id` and turns auto-apply back on.
    pub fn release_apply(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("no such node");
        node.auto_apply = true;
        let held = std::mem::take(&mut node.held);
        let last = held.last().map(|e| e.index);
        apply(node, held);
        if let Some(last) = last {
            node.raw.advance_apply_to(last);
        }
        self.stabilize();
    }
}

/// Applies committed entries: records them, and applies conf changes to the node and storage.
fn apply(node: &mut Node, entries: Vec<Entry>) {
    if !node.auto_apply {
        node.held.extend(entries);
        return;
    }
    for e in entries {
        let cs = match e.entry_type {
            EntryType::EntryNormal => None,
            EntryType::EntryConfChange => {
                let cc = ConfChange::decode(&e.data).expect("decodable conf change");
                Some(
                    node.raw
                        .apply_conf_change_v1(&cc)
                        .expect("committed conf change applies"),
                )
            }
            EntryType::EntryConfChangeV2 => {
                let cc = ConfChangeV2::decode(&e.data).expect("decodable conf change");
                Some(
                    node.raw
                        .apply_conf_change(&cc)
                        .expect("committed conf change applies"),
                )
            }
        };
        if let Some(cs) = cs {
            node.store.wl().set_conf_state(cs);
        }
        node.applied.push(e);
    }
}

/// A message of type `t` from `from` to `to` at `term`.
pub fn msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    Message {
        msg_type: t,
        from,
        to,
        term,
        ..Default::default()
    }
}

/// Storage holding a log with these terms (entry i+1 has term terms[i]) and hard state term.
pub fn store_with_log(conf: &ConfState, terms: &[u64], hs_term: u64) -> MemStorage {
    let store = MemStorage::new_with_conf_state(conf.clone());
    let ents: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| Entry::new(*t, i as u64 + 1, vec![b'x'; 1]))
        .collect();
    store.wl().append(&ents).expect("append");
    store.wl().set_hard_state(HardState {
        term: hs_term,
        vote: 0,
        commit: 0,
    });
    store
}

/// A V1 conf change.
pub fn cc(t: ConfChangeType, id: u64) -> ConfChange {
    ConfChange {
        change_type: t,
        node_id: id,
        ..Default::default()
    }
}

/// A V2 change of several singles.
pub fn cc_v2(transition: ConfChangeTransition, changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
    ConfChangeV2 {
        transition,
        changes: changes
            .iter()
            .map(|(t, id)| ConfChangeSingle {
                change_type: *t,
                node_id: *id,
            })
            .collect(),
        context: Default::default(),
    }
}

/// A network of `n` voters where node 1 has been elected.
pub fn elected(n: u64) -> Network {
    let mut net = Network::new(n);
    net.campaign(1);
    assert_eq!(net.role(1), StateRole::Leader);
    net
}

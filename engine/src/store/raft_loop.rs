//! [`StoreLoop`]: the raft loop of one store as a plain state machine.
//!
//! Inputs are `handle_*` calls (store events, apply and snapshot worker events, ticks, log
//! completions); [`StoreLoop::flush`] then turns every peer's Ready into effects. Effects leave
//! through three narrow interfaces the owner provides: the [`Transport`], a [`LogSink`] and the
//! apply worker's request channel. The real store ([`super::runtime::Store`]) drives it from one
//! thread; a simulator can drive several in one thread with simulated time, network and devices.
//!
//! Call order: any number of `handle_*` calls, then `flush`; repeat. Ready handling follows the
//! seed's steps (see `docs/` and `DESIGN.md`): a leader's `messages` go to the transport at once;
//! the Readies' entries and hard states of all peers go to the log as one batch; once that batch
//! is durable (`handle_log_done`) `persisted_messages` are sent and `on_persist_ready` called;
//! committed entries go to the apply worker in index order, and admin entries (membership
//! changes, splits) take effect in the loop as they are handed over.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use raftlog::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Config, Entry,
    EntryType, HardState, Message, MessageType, RawNode, ReadOnlyOption, SnapshotStatus, StateRole,
};
use tracing::{debug, info, warn};

use super::api::{
    AdminRequest, ClientRequest, ClientResponse, IncomingSnapshot, PeerChange, RegionInfo, Reply,
    RequestError, SnapshotReceipt, StoreEvent, StoreStatus, Transport,
};
use super::config::{ReadMode, StoreConfig};
use super::msg::{
    decode_peer_list, encode_peer_list, EntryPayload, MessageKind, RaftMessage, SplitRequest,
};
use super::peer::{IdGen, Installing, PeerState, PendingRead, Proposal, ProposalKind};
use super::region::{Epoch, Peer, PeerRole, RegionMeta};
use crate::log::{LogBatch, RegionLog};
use crate::metrics::StoreMetrics;
use crate::state::command::CommandError;
use crate::state::snapshot::SnapshotMeta;
use crate::state::storage::RegionStorage;
use crate::state::worker::{
    ApplyEvent, ApplyRequest, ApplyResult, ApplyTask, InlineApply, ReadOutput, ReadRequest,
    Responder, SnapshotEvent, SnapshotHandle,
};
use crate::state::RegionState;

/// Index and term a new region's log starts at (bootstrap and split children): its log begins
/// with a snapshot marker there, so Raft never asks for entries before it.
pub const REGION_INIT_INDEX: u64 = 5;
/// See [`REGION_INIT_INDEX`].
pub const REGION_INIT_TERM: u64 = 5;

/// Whether `m` is a heartbeat or heartbeat answer of the current term that carries nothing
/// new for `raft` (no higher commit, no read-index context, from the known leader).
fn is_quiet(raft: &raftlog::Raft<RegionStorage>, m: &RaftMessage) -> bool {
    if m.msg.term != raft.term || !m.msg.context.is_empty() {
        return false;
    }
    match m.msg.msg_type {
        MessageType::MsgHeartbeat => {
            raft.leader_id == m.from.peer_id && m.msg.commit <= raft.raft_log.committed
        }
        MessageType::MsgHeartbeatResponse => raft.state == StateRole::Leader,
        _ => false,
    }
}

/// Where the loop's log writes go.
pub trait LogSink: Send {
    /// Write `batch`. Once it is durable, give `after` to the transport first (they are the
    /// messages that may leave only then: a follower's append and vote responses), then
    /// report `batch_no` durable with [`StoreLoop::handle_log_done`], in order. A failed batch
    /// sends nothing.
    ///
    /// The sink sends `after` itself, from wherever it learns of durability (the log writer
    /// thread), rather than leaving it to the loop: that saves a follower one thread wake-up
    /// between its log write and its answer, which is on the critical path of every commit.
    fn append(&mut self, batch_no: u64, batch: LogBatch, after: Outgoing);
    /// Drop `region_id`'s entries up to `index`.
    fn compact_to(&mut self, region_id: u64, index: u64);
    /// The Storage view of a region's log.
    fn region_log(&self, region_id: u64) -> RegionLog;
    /// For a sink that drives the device from the loop's own thread: the writes finished
    /// since the last call, as [`StoreEvent::LogDone`] in order (each batch's `after` already
    /// sent). With `wait`, blocks until at least one finishes, if any is in flight. A sink
    /// whose writes finish elsewhere reports them through its own channel and returns nothing.
    fn reap(&mut self, _wait: bool) -> Vec<StoreEvent> {
        Vec::new()
    }
    /// For a sink that drives the device from the loop's own thread: puts the appended batches
    /// on the device. Its owner calls it once the messages the loop queued meanwhile have gone
    /// out (a leader sends before it writes). A sink that writes on its own does nothing.
    fn start(&mut self) {}
    /// Whether [`Self::start`] has batches to put on the device (always `false` for a sink
    /// that writes on its own).
    fn has_writes_to_start(&self) -> bool {
        false
    }
}

/// Raft messages for other stores, grouped by store id.
pub type Outgoing = Vec<(u64, Vec<RaftMessage>)>;

/// Messages of one region sorted for sending: plain ones by store (in store order, so the
/// simulator replays a seed exactly), snapshots apart (they go through the snapshot path).
struct Routed {
    by_store: BTreeMap<u64, Vec<RaftMessage>>,
    snapshots: Vec<(Peer, Message)>,
    count: usize,
}

/// The records that start a region's log: a snapshot marker at the init index, its hard state,
/// configuration and metadata.
pub fn init_region_records(batch: &mut LogBatch, meta: &RegionMeta) {
    let r = meta.region_id;
    batch.set_snapshot(r, REGION_INIT_INDEX, REGION_INIT_TERM);
    batch.set_hard_state(
        r,
        HardState {
            term: REGION_INIT_TERM,
            vote: 0,
            commit: REGION_INIT_INDEX,
        },
    );
    batch.set_conf_state(r, conf_state_of(meta));
    batch.set_region_meta(r, meta.encode());
}

/// The state-store form of a new region (applied at the init index).
pub fn init_region_state(meta: &RegionMeta) -> RegionState {
    let mut s = RegionState::new(meta.region_id, conf_state_of(meta));
    s.applied_index = REGION_INIT_INDEX;
    s.applied_term = REGION_INIT_TERM;
    s.meta = meta.encode();
    s
}

/// Raft's configuration for a region's peers.
pub fn conf_state_of(meta: &RegionMeta) -> ConfState {
    let voters = meta
        .peers
        .iter()
        .filter(|p| p.role == PeerRole::Voter)
        .map(|p| p.peer_id)
        .collect();
    let learners = meta
        .peers
        .iter()
        .filter(|p| p.role == PeerRole::Learner)
        .map(|p| p.peer_id)
        .collect();
    ConfState::from((voters, learners))
}

struct InflightBatch {
    batch_no: u64,
    /// (region, peer incarnation, Ready number, persisted messages) in Ready order.
    readies: Vec<(u64, u64, u64, Vec<Message>)>,
    /// Regions whose log starts in this batch: their peers are created when it is durable.
    created: Vec<(RegionMeta, bool)>,
    /// Regions whose log is cleaned in this batch (a destroyed peer).
    cleaned: Vec<u64>,
    /// Snapshot installs whose log records are in this batch.
    installed: Vec<(u64, crossbeam_channel::Sender<SnapshotReceipt>)>,
    submitted: Instant,
    /// False for Readies with nothing to write (completed with the batch before them): not a
    /// device write, so not in the log-write latency.
    wrote: bool,
}

/// Where a peer comes from when it is added to the loop.
pub enum PeerOrigin {
    /// Initialized: its state store region exists at `applied_index`.
    Initialized {
        /// The state store's applied index of the region.
        applied_index: u64,
    },
    /// A split child whose parent has not replayed the split into the state store yet.
    AwaitingSplit,
    /// Created by a message; waits for a snapshot.
    Uninitialized,
    /// This store's peer was removed from the region (the metadata given is the newest this
    /// store recorded): no peer starts, and only a message from a newer configuration, to
    /// another peer id, creates one again.
    Removed,
}

/// What a store remembers of a region whose peer here was destroyed.
#[derive(Clone, Copy, Debug)]
struct Tombstone {
    /// The destroyed peer (0 when unknown).
    peer_id: u64,
    /// The region's conf version as the store last knew it.
    conf_version: u64,
}

/// The raft loop of one store. See the module docs for the call order.
pub struct StoreLoop {
    cfg: StoreConfig,
    peers: HashMap<u64, PeerState>,
    /// Regions that tick (not hibernating).
    awake: BTreeSet<u64>,
    /// Regions that may have a Ready.
    dirty: BTreeSet<u64>,
    transport: Arc<dyn Transport>,
    log: Box<dyn LogSink>,
    apply_tx: Sender<ApplyRequest>,
    apply_backlog: VecDeque<ApplyRequest>,
    /// Set for a loop that applies small tasks on its own thread (see [`InlineApply`]).
    inline_apply: Option<InlineApply>,
    snapshots: SnapshotHandle,
    metrics: Arc<StoreMetrics>,
    batch: LogBatch,
    batch_readies: Vec<(u64, u64, u64, Vec<Message>)>,
    next_incarnation: u64,
    batch_created: Vec<(RegionMeta, bool)>,
    batch_cleaned: Vec<u64>,
    /// Regions whose log clean is not durable yet: no new peer of theirs starts before.
    cleaning: HashSet<u64>,
    batch_installed: Vec<(u64, crossbeam_channel::Sender<SnapshotReceipt>)>,
    next_batch_no: u64,
    inflight: VecDeque<InflightBatch>,
    /// Split children whose log is being started.
    creating: HashSet<u64>,
    /// Regions whose peer here was removed: messages to them are dropped unless they come from
    /// a newer configuration and address another peer (the store was added back).
    tombstones: HashMap<u64, Tombstone>,
    next_read_ctx: u64,
    ids: IdGen,
    tick_no: u64,
    store_seen: HashMap<u64, u64>,
    stores_down: HashSet<u64>,
    failed: Option<String>,
    stopping: bool,
    halted: bool,
}

fn raft_config(cfg: &StoreConfig, peer_id: u64, applied: u64) -> Config {
    let mut c = Config::new(peer_id);
    c.election_tick = cfg.election_ticks;
    c.heartbeat_tick = cfg.heartbeat_ticks;
    c.applied = applied;
    c.check_quorum = true;
    c.pre_vote = true;
    c.max_size_per_msg = cfg.max_size_per_msg;
    c.max_inflight_msgs = cfg.max_inflight_msgs;
    c.read_only_option = match cfg.read_mode {
        ReadMode::ReadIndex => ReadOnlyOption::Safe,
        ReadMode::Lease => ReadOnlyOption::LeaseBased,
    };
    c.rng_seed = cfg.rng_seed ^ peer_id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Every entry proposed while a follower's append is still queued joins that message: with
    // 64 writes in flight the leader sent 0.19 messages per proposal instead of 3.07 (see
    // `cluster_bench latency`), and each message spared is also a response spared. (Writes/s
    // did not change on the test machine, where the shared disk is the bottleneck.)
    c.batch_append = true;
    // A new commit index reaches followers with the next append or heartbeat instead of an
    // append of its own: at one write in flight that round was half of all messages (2 of 4
    // per proposal from the leader). Followers apply a little later; nothing waits on that
    // (reads are served by the leader, and a new leader applies its log before serving).
    c.skip_bcast_commit = true;
    c
}

impl StoreLoop {
    /// A loop with no peers yet; add them with [`StoreLoop::add_peer`].
    pub fn new(
        cfg: StoreConfig,
        transport: Arc<dyn Transport>,
        log: Box<dyn LogSink>,
        apply_tx: Sender<ApplyRequest>,
        snapshots: SnapshotHandle,
        metrics: Arc<StoreMetrics>,
    ) -> StoreLoop {
        let seed = cfg.rng_seed ^ cfg.store_id.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        StoreLoop {
            ids: IdGen::new(seed),
            cfg,
            peers: HashMap::new(),
            awake: BTreeSet::new(),
            dirty: BTreeSet::new(),
            transport,
            log,
            apply_tx,
            apply_backlog: VecDeque::new(),
            inline_apply: None,
            snapshots,
            metrics,
            batch: LogBatch::new(),
            batch_readies: Vec::new(),
            next_incarnation: 1,
            batch_created: Vec::new(),
            batch_cleaned: Vec::new(),
            cleaning: HashSet::new(),
            batch_installed: Vec::new(),
            next_batch_no: 1,
            inflight: VecDeque::new(),
            creating: HashSet::new(),
            tombstones: HashMap::new(),
            next_read_ctx: 1,
            tick_no: 0,
            store_seen: HashMap::new(),
            stores_down: HashSet::new(),
            failed: None,
            stopping: false,
            halted: false,
        }
    }

    /// The store's id.
    pub fn store_id(&self) -> u64 {
        self.cfg.store_id
    }

    /// Number of region peers.
    pub fn region_count(&self) -> usize {
        self.peers.len()
    }

    /// Regions currently ticking.
    pub fn awake_count(&self) -> usize {
        self.awake.len()
    }

    /// Whether the store failed (a log write failed): it then refuses every request.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Lets the loop apply small tasks on its own thread while the apply worker waits (see
    /// [`InlineApply`]).
    pub fn set_inline_apply(&mut self, inline: InlineApply) {
        self.inline_apply = Some(inline);
    }

    /// Log writes the sink finished since the last call (see [`LogSink::reap`]); hand each to
    /// [`Self::handle_event`].
    pub fn reap_log(&mut self, wait: bool) -> Vec<StoreEvent> {
        self.log.reap(wait)
    }

    /// Puts appended log batches on the device (see [`LogSink::start`]).
    pub fn start_log(&mut self) {
        self.log.start();
    }

    /// Whether appended log batches wait for [`Self::start_log`].
    pub fn has_log_writes_to_start(&self) -> bool {
        self.log.has_writes_to_start()
    }

    /// Whether a log write this loop appended is not yet reported durable (or failed).
    pub fn has_log_writes_in_flight(&self) -> bool {
        self.inflight.iter().any(|b| b.wrote)
    }

    /// Whether nothing is waiting on the log.
    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty() && self.batch.is_empty() && self.apply_backlog.is_empty()
    }

    /// Adds a region peer whose log exists. `campaign`: start an election at once (the store
    /// that led a split's parent, or a single-voter bootstrap).
    pub fn add_peer(
        &mut self,
        meta: RegionMeta,
        origin: PeerOrigin,
        campaign: bool,
    ) -> crate::error::Result<()> {
        let region_id = meta.region_id;
        if let PeerOrigin::Removed = origin {
            let peer_id = meta
                .peer_on_store(self.cfg.store_id)
                .map_or(0, |p| p.peer_id);
            self.tombstones.insert(
                region_id,
                Tombstone {
                    peer_id,
                    conf_version: meta.epoch.conf_version,
                },
            );
            return Ok(());
        }
        let Some(me) = meta.peer_on_store(self.cfg.store_id).copied() else {
            return Err(crate::error::EngineError::InvalidConfig {
                key: "region peers",
                reason: format!(
                    "region {region_id} has no peer on store {}",
                    self.cfg.store_id
                ),
            });
        };
        let (applied, initialized, awaiting) = match origin {
            PeerOrigin::Initialized { applied_index } => (applied_index, true, false),
            PeerOrigin::AwaitingSplit => (REGION_INIT_INDEX, true, true),
            PeerOrigin::Uninitialized => (0, false, false),
            PeerOrigin::Removed => unreachable!("handled above"),
        };
        let storage = RegionStorage::new(self.log.region_log(region_id), self.snapshots.clone());
        let c = raft_config(&self.cfg, me.peer_id, applied);
        let mut node =
            RawNode::new(&c, storage).map_err(|e| crate::error::EngineError::InvalidConfig {
                key: "raft",
                reason: format!("region {region_id}: {e}"),
            })?;
        let hs_logged = node.raft.hard_state();
        if campaign {
            let _ = node.campaign();
        }
        let peer = PeerState {
            node,
            meta,
            me,
            initialized,
            awaiting_state: awaiting,
            proposals: VecDeque::new(),
            reads: Vec::new(),
            reads_ready: VecDeque::new(),
            dispatched_index: applied,
            applied_index: applied,
            incoming: None,
            installing: None,
            hibernation: Default::default(),
            hibernating: false,
            role: StateRole::Follower,
            heard: HashMap::new(),
            incarnation: self.next_incarnation,
            pending_destroy: None,
            hs_logged,
            commit_pinged: 0,
        };
        self.next_incarnation += 1;
        self.peers.insert(region_id, peer);
        self.awake.insert(region_id);
        self.dirty.insert(region_id);
        self.metrics.regions.set(self.peers.len() as i64);
        Ok(())
    }

    // ---------------------------------------------------------------- inputs

    /// One tick of the loop's clock.
    pub fn handle_tick(&mut self) {
        self.tick_no += 1;
        self.metrics.ticks_total.inc();
        let awake: Vec<u64> = self.awake.iter().copied().collect();
        for region_id in awake {
            let Some(peer) = self.peers.get_mut(&region_id) else {
                self.awake.remove(&region_id);
                continue;
            };
            peer.node.tick();
            // Followers learn a new commit index with the next append or heartbeat (no append
            // is sent just for it, see `raft_config`); a leader whose commit moved since the
            // last tick tells them now, so they apply within a tick once writes pause.
            let committed = peer.node.raft.raft_log.committed;
            if peer.is_leader() && committed > peer.commit_pinged {
                peer.commit_pinged = committed;
                peer.node.ping();
            }
            self.dirty.insert(region_id);
            self.maybe_probe_membership(region_id);
            self.maybe_hibernate(region_id);
        }
        let every = (self.cfg.election_ticks as u64 / 2).max(1);
        if self.tick_no % every == 0 {
            self.send_store_heartbeats();
            self.check_store_liveness();
        }
    }

    /// A follower that cannot campaign (a learner, or a voter whose configuration says
    /// otherwise) and has heard no leader for two election timeouts asks the other peers of
    /// its region, once per election timeout: a member whose configuration no longer has it
    /// answers `PeerRemoved` (see `handle_raft`), and a leader that still has it answers like
    /// any heartbeat response, by replicating to it. Without this, a learner removed while cut
    /// off (or restarted with its commit index behind its own removal) waits forever: only a
    /// campaign brought such answers, and learners never campaign.
    fn maybe_probe_membership(&mut self, region_id: u64) {
        let Some(peer) = self.peers.get(&region_id) else {
            return;
        };
        let raft = &peer.node.raft;
        let timeout = self.cfg.election_ticks.max(1);
        if !peer.initialized
            || raft.promotable
            || raft.state != StateRole::Follower
            || raft.election_elapsed < 2 * timeout
            || raft.election_elapsed % timeout != 0
        {
            return;
        }
        let msg = Message {
            msg_type: MessageType::MsgHeartbeatResponse,
            term: raft.term,
            ..Default::default()
        };
        for to in peer
            .meta
            .peers
            .iter()
            .filter(|p| p.peer_id != peer.me.peer_id)
        {
            let env = Self::raft_envelope(&peer.meta, peer.me, *to, MessageKind::Raft, msg.clone());
            self.transport.send(to.store_id, vec![env]);
        }
    }

    /// A store event from the router.
    pub fn handle_event(&mut self, ev: StoreEvent) {
        match ev {
            StoreEvent::Raft(msgs) => {
                for m in msgs {
                    self.on_raft_message(m);
                }
            }
            StoreEvent::Snapshot(s) => self.on_incoming_snapshot(*s),
            StoreEvent::Request(req, reply) => self.on_request(req, reply),
            StoreEvent::Unreachable { store_id } => self.on_unreachable(store_id),
            StoreEvent::SnapshotSent {
                region_id,
                to_peer_id,
                ok,
            } => {
                if let Some(p) = self.peers.get_mut(&region_id) {
                    let status = if ok {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    };
                    p.node.report_snapshot(to_peer_id, status);
                    self.dirty.insert(region_id);
                }
                if !ok {
                    self.metrics.snapshots_failed_total.inc();
                }
            }
            StoreEvent::LogDone { batch_no, result } => self.handle_log_done(batch_no, result),
            StoreEvent::Stop => self.stopping = true,
            StoreEvent::Halt => {
                self.stopping = true;
                self.halted = true;
            }
        }
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Whether the stop is a halt (no final checkpoint, nothing answered).
    pub fn is_halted(&self) -> bool {
        self.halted
    }

    /// An event of the apply worker.
    pub fn handle_apply_event(&mut self, ev: ApplyEvent) {
        match ev {
            ApplyEvent::Applied {
                region_id,
                applied_index,
                ..
            }
            | ApplyEvent::Split {
                region_id,
                applied_index,
                ..
            } => self.on_applied(region_id, applied_index),
            ApplyEvent::CheckpointDone(info) => {
                for (region_id, index) in info.regions {
                    if self.peers.contains_key(&region_id) {
                        self.log.compact_to(region_id, index);
                    }
                }
            }
            ApplyEvent::Refused { region_id, error } => {
                warn!(store = self.cfg.store_id, region_id, %error, "apply refused a task");
            }
            ApplyEvent::Failed(error) => {
                self.fail(format!("apply worker failed: {error}"));
            }
        }
    }

    /// An event of the snapshot worker.
    pub fn handle_snapshot_event(&mut self, ev: SnapshotEvent) {
        match ev {
            SnapshotEvent::Built(meta) => {
                // Raft asks again on its next probe; make sure that happens soon.
                if let Some(p) = self.peers.get_mut(&meta.region_id) {
                    if p.hibernating {
                        self.wake(meta.region_id);
                    }
                    self.dirty.insert(meta.region_id);
                }
            }
            SnapshotEvent::BuildFailed { region_id, error } => {
                warn!(store = self.cfg.store_id, region_id, %error, "snapshot build failed");
            }
            SnapshotEvent::Installed {
                meta,
                checkpoint: _,
            } => self.on_installed(meta),
            SnapshotEvent::ChunkRefused {
                meta,
                next_chunk_no,
                error,
            } => {
                warn!(region_id = meta.region_id, next_chunk_no, %error, "snapshot chunk refused; asking the sender to resume");
                if let Some(i) = self
                    .peers
                    .get(&meta.region_id)
                    .and_then(|p| p.installing.as_ref())
                {
                    let _ = i
                        .receipts
                        .send(SnapshotReceipt::ResumeFrom { next_chunk_no });
                }
            }
            SnapshotEvent::InstallFailed { meta, error } => {
                warn!(region_id = meta.region_id, %error, "snapshot install failed; the old state stays");
                self.abort_install(meta.region_id, error.to_string());
            }
        }
    }

    /// A log batch is durable (or failed: then the store stops serving).
    pub fn handle_log_done(&mut self, batch_no: u64, result: Result<(), String>) {
        if let Err(e) = result {
            self.fail(format!("log write failed: {e}"));
            return;
        }
        while let Some(front) = self.inflight.front() {
            if front.batch_no > batch_no {
                break;
            }
            let b = self.inflight.pop_front().expect("front exists");
            if b.wrote {
                self.metrics.log_write_latency.record(b.submitted.elapsed());
            }
            for (region_id, incarnation, number, msgs) in b.readies {
                let p = self.peers.get_mut(&region_id);
                if let Some(p) = p.filter(|p| p.incarnation == incarnation) {
                    p.node.on_persist_ready(number);
                    let region_id = p.region_id();
                    self.send_raft(region_id, msgs);
                    self.dirty.insert(region_id);
                }
            }
            for (region_id, receipts) in b.installed {
                let _ = receipts.send(SnapshotReceipt::Installed);
                self.metrics.snapshots_received_total.inc();
                self.dirty.insert(region_id);
            }
            for region_id in b.cleaned {
                self.cleaning.remove(&region_id);
            }
            for (meta, campaign) in b.created {
                let region_id = meta.region_id;
                self.creating.remove(&region_id);
                if self.peers.contains_key(&region_id) {
                    continue;
                }
                let origin = PeerOrigin::Initialized {
                    applied_index: REGION_INIT_INDEX,
                };
                if let Err(e) = self.add_peer(meta, origin, campaign) {
                    warn!(region_id, %e, "could not start a split region's peer");
                }
            }
        }
    }

    // ---------------------------------------------------------------- flush

    /// Handles every pending Ready, writes their records as one log batch, and hands queued
    /// requests to the apply worker.
    pub fn flush(&mut self) {
        if self.failed.is_none() {
            let dirty = std::mem::take(&mut self.dirty);
            for region_id in dirty {
                self.issue_reads(region_id);
                self.process_ready(region_id);
            }
            self.submit_batch();
        }
        self.drain_apply_backlog();
    }

    fn submit_batch(&mut self) {
        if self.batch.is_empty() {
            if self.batch_readies.is_empty()
                && self.batch_installed.is_empty()
                && self.batch_created.is_empty()
            {
                return;
            }
            // Nothing to write: these Readies complete with the batch before them, or now.
            if let Some(last) = self.inflight.back_mut() {
                last.readies.append(&mut self.batch_readies);
                last.installed.append(&mut self.batch_installed);
                last.created.append(&mut self.batch_created);
                last.cleaned.append(&mut self.batch_cleaned);
                return;
            }
            let no = self.next_batch_no;
            self.next_batch_no += 1;
            self.push_inflight(no, false);
            self.handle_log_done(no, Ok(()));
            return;
        }
        let no = self.next_batch_no;
        self.next_batch_no += 1;
        let batch = std::mem::take(&mut self.batch);
        self.metrics.log_batches_total.inc();
        self.metrics
            .log_bytes_written_total
            .add(batch.encoded_len() as u64);
        let after = self.take_batch_messages();
        self.push_inflight(no, true);
        self.log.append(no, batch, after);
    }

    /// Takes the plain messages of the batch's Readies, by store, for the log sink to send
    /// once the batch is durable; snapshot messages stay with the Readies.
    fn take_batch_messages(&mut self) -> Outgoing {
        let mut readies = std::mem::take(&mut self.batch_readies);
        let mut by_store: BTreeMap<u64, Vec<RaftMessage>> = BTreeMap::new();
        let mut count = 0;
        for (region_id, _, _, msgs) in &mut readies {
            if msgs.is_empty() {
                continue;
            }
            let routed = self.route_raft(*region_id, std::mem::take(msgs));
            count += routed.count;
            for (store, mut batch) in routed.by_store {
                by_store.entry(store).or_default().append(&mut batch);
            }
            msgs.extend(routed.snapshots.into_iter().map(|(_, m)| m));
        }
        self.batch_readies = readies;
        self.metrics.raft_messages_sent_total.add(count as u64);
        by_store.into_iter().collect()
    }

    fn push_inflight(&mut self, batch_no: u64, wrote: bool) {
        self.inflight.push_back(InflightBatch {
            batch_no,
            readies: std::mem::take(&mut self.batch_readies),
            created: std::mem::take(&mut self.batch_created),
            cleaned: std::mem::take(&mut self.batch_cleaned),
            installed: std::mem::take(&mut self.batch_installed),
            submitted: Instant::now(),
            wrote,
        });
    }

    fn process_ready(&mut self, region_id: u64) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        // A split child found at open waits (messages are still stepped) until its parent's
        // replay creates it in the state store; an installing peer waits for the install.
        if peer.installing.is_some() || peer.awaiting_state || !peer.node.has_ready() {
            return;
        }
        let mut rd = peer.node.ready();
        if let Some(ss) = rd.ss().copied() {
            self.on_soft_state(region_id, ss.raft_state, ss.leader_id);
        }
        let msgs = rd.take_messages();
        self.send_raft(region_id, msgs);
        if !rd.snapshot().is_empty() {
            self.begin_install(region_id, rd);
            return;
        }
        // A snapshot stepped in but not taken by Raft (stale): refuse it.
        let peer = self.peers.get_mut(&region_id).expect("present");
        if let Some((inc, _)) = peer.incoming.take() {
            let _ = inc.receipts.send(SnapshotReceipt::Rejected {
                reason: "snapshot not needed".into(),
            });
        }
        let committed = rd.take_committed_entries();
        if !committed.is_empty() {
            self.dispatch(region_id, committed);
        }
        if !self.peers.contains_key(&region_id) {
            // The peer applied its own removal and was destroyed (its log cleaned): nothing
            // of this Ready is written or sent.
            return;
        }
        let read_states = rd.take_read_states();
        for rs in read_states {
            self.on_read_state(region_id, rs.index, &rs.request_ctx);
        }
        let entries = rd.take_entries();
        let has_entries = !entries.is_empty();
        if has_entries {
            self.batch.add_entries(region_id, entries);
        }
        // A change of term or vote is written before anything that depends on it is sent; a
        // change of commit alone rides along with the region's next write (see
        // `log_hard_state`), which saves a device write per commit round.
        let logged = self.peers.get(&region_id).map(|p| p.hs_logged);
        let promise_changed = rd
            .hs()
            .zip(logged)
            .is_some_and(|(hs, l)| hs.term != l.term || hs.vote != l.vote);
        if has_entries || promise_changed {
            self.log_hard_state(region_id);
        }
        let persisted = rd.take_persisted_messages();
        let incarnation = self.peers.get(&region_id).map_or(0, |p| p.incarnation);
        self.batch_readies
            .push((region_id, incarnation, rd.number(), persisted));
        if let Some(peer) = self.peers.get_mut(&region_id) {
            peer.node.advance_append_async(rd);
        }
    }

    /// Puts the region's current hard state in the batch unless the log already has it.
    ///
    /// Raft needs the term and vote durable before the messages that depend on them leave;
    /// the commit index may lag on disk, because it is learned again from the leader (and a
    /// restart raises it to the state store's applied index). Writing a Ready whose only change
    /// is the commit index would cost a whole device write per replication round and delay the
    /// next append behind it, so such changes are written with the region's next entries,
    /// with any record derived from applying (metadata of a conf change or split, whose replay
    /// at restart needs the commit that covers it), and when the region hibernates.
    fn log_hard_state(&mut self, region_id: u64) {
        let Some(p) = self.peers.get_mut(&region_id) else {
            return;
        };
        let mut hs = p.node.raft.hard_state();
        // Never past the entries this store's log has (or is about to have, in an earlier or
        // this batch): a follower's commit may cover entries still to come, and at those
        // indexes the log may yet hold older, conflicting ones.
        hs.commit = hs.commit.min(p.node.handed_index()).max(p.hs_logged.commit);
        if hs != p.hs_logged {
            self.batch.set_hard_state(region_id, hs);
            p.hs_logged = hs;
        }
    }

    fn on_soft_state(&mut self, region_id: u64, role: StateRole, leader_id: u64) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let was_leader = peer.role == StateRole::Leader;
        peer.role = role;
        let is_leader = role == StateRole::Leader;
        if was_leader != is_leader {
            self.metrics.leader_changes_total.inc();
            self.metrics.leaders.add(if is_leader { 1 } else { -1 });
            info!(
                store = self.cfg.store_id,
                region_id,
                leader_id,
                ?role,
                term = peer.node.raft.term,
                "role change"
            );
        }
        if was_leader && !is_leader {
            let nl = RequestError::NotLeader {
                region_id,
                leader: peer.meta.peer(leader_id).copied(),
            };
            peer.fail_pending(
                RequestError::ProposalDropped {
                    reason: "leadership lost before the proposal committed".into(),
                },
                nl,
            );
        }
        peer.hibernation = Default::default();
    }

    // ---------------------------------------------------------------- sending

    fn raft_envelope(
        meta: &RegionMeta,
        me: Peer,
        to: Peer,
        kind: MessageKind,
        msg: Message,
    ) -> RaftMessage {
        RaftMessage {
            kind,
            region_id: meta.region_id,
            from: me,
            to,
            epoch: meta.epoch,
            msg,
        }
    }

    fn send_raft(&mut self, region_id: u64, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let routed = self.route_raft(region_id, msgs);
        self.metrics
            .raft_messages_sent_total
            .add(routed.count as u64);
        for (store, batch) in routed.by_store {
            self.transport.send(store, batch);
        }
        for (to, m) in routed.snapshots {
            self.send_snapshot(region_id, to, m);
        }
    }

    /// Wraps a region's messages in envelopes addressed to their stores; a message to a peer
    /// the region does not know is dropped.
    fn route_raft(&self, region_id: u64, msgs: Vec<Message>) -> Routed {
        let mut routed = Routed {
            by_store: BTreeMap::new(),
            snapshots: Vec::new(),
            count: 0,
        };
        let Some(peer) = self.peers.get(&region_id) else {
            return routed;
        };
        for m in msgs {
            let Some(to) = peer
                .meta
                .peer(m.to)
                .or_else(|| peer.heard.get(&m.to))
                .copied()
            else {
                debug!(
                    region_id,
                    to = m.to,
                    "message to a peer not in the region; dropped"
                );
                continue;
            };
            if m.msg_type == MessageType::MsgSnapshot {
                routed.snapshots.push((to, m));
                continue;
            }
            let env = Self::raft_envelope(&peer.meta, peer.me, to, MessageKind::Raft, m);
            routed.by_store.entry(to.store_id).or_default().push(env);
            routed.count += 1;
        }
        routed
    }

    fn send_snapshot(&mut self, region_id: u64, to: Peer, mut m: Message) {
        let peer = self.peers.get(&region_id).expect("caller checked");
        let wanted = m
            .snapshot
            .as_ref()
            .and_then(|s| SnapshotMeta::decode(&s.data).ok());
        let built = self.snapshots.built(region_id);
        let (Some(wanted), Some(built)) = (wanted, built) else {
            self.report_snapshot_now(region_id, to.peer_id);
            return;
        };
        if built.meta.snapshot_id != wanted.snapshot_id {
            self.report_snapshot_now(region_id, to.peer_id);
            return;
        }
        // A snapshot from before the receiver was added would install a region without it,
        // which the receiver (rightly) takes for its removal: build a newer one (Raft asks
        // again after the failure).
        let cs = &built.state.conf_state;
        let lists = [
            &cs.voters,
            &cs.learners,
            &cs.voters_outgoing,
            &cs.learners_next,
        ];
        // A snapshot from before a split of the region holds the range the region had then,
        // which overlaps the split's children: a receiver that has a child refuses it, and
        // would refuse it forever. Build one of the region as it is now.
        let version = RegionMeta::decode(&built.state.meta).map_or(0, |m| m.epoch.version);
        let before_split = version < peer.meta.epoch.version;
        if before_split || !lists.iter().any(|l| l.contains(&to.peer_id)) {
            debug!(
                region_id,
                to = to.peer_id,
                index = wanted.index,
                before_split,
                "snapshot predates the receiver's addition or a split; building a newer one"
            );
            self.snapshots.release(region_id, built.meta.snapshot_id);
            self.snapshots.request_build(region_id);
            self.report_snapshot_now(region_id, to.peer_id);
            return;
        }
        // The receiver learns the region (range, epoch, peers) as of the snapshot from here.
        m.context = built.state.meta.clone();
        let env = Self::raft_envelope(&peer.meta, peer.me, to, MessageKind::Raft, m);
        self.metrics.snapshots_sent_total.inc();
        info!(
            store = self.cfg.store_id,
            region_id,
            to = to.peer_id,
            index = wanted.index,
            bytes = wanted.total_bytes,
            "sending snapshot"
        );
        self.transport.send_snapshot(to.store_id, env, built);
    }

    fn report_snapshot_now(&mut self, region_id: u64, to_peer: u64) {
        if let Some(p) = self.peers.get_mut(&region_id) {
            p.node.report_snapshot(to_peer, SnapshotStatus::Failure);
        }
    }

    // ---------------------------------------------------------------- receiving

    fn on_raft_message(&mut self, m: RaftMessage) {
        self.metrics.raft_messages_received_total.inc();
        match m.kind {
            MessageKind::StoreHeartbeat => {
                self.store_seen.insert(m.from.store_id, self.tick_no);
                if self.stores_down.remove(&m.from.store_id) {
                    info!(
                        store = self.cfg.store_id,
                        peer_store = m.from.store_id,
                        "store is back"
                    );
                }
                return;
            }
            MessageKind::HibernateRequest => return self.on_hibernate_request(m),
            MessageKind::HibernateAck => return self.on_hibernate_ack(m),
            MessageKind::PeerRemoved => return self.on_peer_removed(m),
            MessageKind::Raft => {}
        }
        self.store_seen.insert(m.from.store_id, self.tick_no);
        let region_id = m.region_id;
        if !self.ensure_peer_for(&m) {
            return;
        }
        let peer = self.peers.get_mut(&region_id).expect("ensured");
        if peer.initialized
            && peer.meta.peer(m.from.peer_id).is_none()
            && m.epoch.conf_version < peer.meta.epoch.conf_version
        {
            // A peer of an older configuration that this one no longer has: it was removed and
            // never heard of it (cut off when the leader told it). Tell it now; any member
            // with the newer configuration knows as much as the leader did.
            let env = Self::raft_envelope(
                &peer.meta,
                peer.me,
                m.from,
                MessageKind::PeerRemoved,
                Message::default(),
            );
            self.transport.send(m.from.store_id, vec![env]);
            return;
        }
        if peer.meta.peer(m.from.peer_id).is_none() && peer.heard.len() < 64 {
            peer.heard.insert(m.from.peer_id, m.from);
        }
        // A heartbeat (or its answer) of the same term that brings nothing new does not wake a
        // hibernating region: the last rounds sent before everyone agreed to hibernate arrive
        // after it, and must not undo it. Everything else does.
        let quiet = peer.hibernating && is_quiet(&peer.node.raft, &m);
        if let Err(e) = peer.node.step(m.msg) {
            debug!(region_id, %e, "step refused");
        }
        if peer.hibernating && !quiet {
            self.wake(region_id);
        }
        self.dirty.insert(region_id);
    }

    /// Makes sure a peer exists for a message addressed here; creates an uninitialized one for
    /// a leader's message to an unknown region. False: drop the message.
    fn ensure_peer_for(&mut self, m: &RaftMessage) -> bool {
        if m.to.store_id != self.cfg.store_id {
            return false;
        }
        // Messages that may create a peer: a leader's (the peer was added, or is a split child
        // this store has not created yet) and a candidate's (a split child elsewhere whose
        // parent here jumped past the split by a snapshot: no one else would ever create it).
        let creates = matches!(
            m.msg.msg_type,
            MessageType::MsgAppend
                | MessageType::MsgHeartbeat
                | MessageType::MsgSnapshot
                | MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
        );
        if let Some(p) = self.peers.get(&m.region_id) {
            if p.me.peer_id == m.to.peer_id {
                return true;
            }
            // Another peer id of this region on this store, from a newer configuration: ours
            // was removed while it was cut off and never heard of it; the store was then added
            // back. Destroy the stale peer and start its log over for the new one.
            if !creates || m.epoch.conf_version <= p.meta.epoch.conf_version {
                return false;
            }
            if p.installing.is_some() || self.creating.contains(&m.region_id) {
                return false;
            }
            info!(
                store = self.cfg.store_id,
                region_id = m.region_id,
                stale_peer = p.me.peer_id,
                new_peer = m.to.peer_id,
                conf_version = m.epoch.conf_version,
                "a newer configuration has another peer here; destroying the stale one"
            );
            let mut recorded = p.meta.clone();
            recorded.peers.retain(|q| q.peer_id != p.me.peer_id);
            self.destroy_peer(m.region_id, recorded);
            // The new peer starts once the clean is durable (its log must start empty).
            return false;
        }
        if self.creating.contains(&m.region_id) || self.cleaning.contains(&m.region_id) || !creates
        {
            return false;
        }
        if let Some(t) = self.tombstones.get(&m.region_id) {
            if t.peer_id == m.to.peer_id || m.epoch.conf_version <= t.conf_version {
                return false;
            }
        }
        // The peer knows no range yet, but it does know that a configuration at the message's
        // conf version has it: a stale message from an older configuration, addressed to an
        // earlier peer of this store, must not take it for a stale peer and destroy it.
        let meta = RegionMeta {
            region_id: m.region_id,
            start_key: Bytes::new(),
            end_key: Bytes::new(),
            epoch: Epoch {
                conf_version: m.epoch.conf_version,
                version: 0,
            },
            peers: vec![m.to],
        };
        // Remember the peer in the log so a restart knows it (its hard state follows).
        self.batch.set_region_meta(m.region_id, meta.encode());
        info!(
            store = self.cfg.store_id,
            region_id = m.region_id,
            peer_id = m.to.peer_id,
            "creating a peer for a new region; waiting for a snapshot"
        );
        self.add_peer(meta, PeerOrigin::Uninitialized, false)
            .is_ok()
    }

    fn on_incoming_snapshot(&mut self, s: IncomingSnapshot) {
        let region_id = s.message.region_id;
        let reject = |s: IncomingSnapshot, reason: &str| {
            let _ = s.receipts.send(SnapshotReceipt::Rejected {
                reason: reason.into(),
            });
        };
        let region_meta = match RegionMeta::decode(&s.message.msg.context) {
            Ok(m) if m.region_id == region_id => m,
            _ => return reject(s, "snapshot without valid region metadata"),
        };
        if region_meta.peer(s.message.to.peer_id).is_none() {
            return reject(s, "snapshot from before this peer was added");
        }
        // A split child's snapshot reaching a store whose parent has not applied the split
        // yet: refused until the parent's split (or a newer snapshot of it) narrows it, so a
        // store's initialized regions never overlap. The sender retries.
        let overlapping: Vec<u64> = self
            .peers
            .values()
            .filter(|p| p.region_id() != region_id && p.initialized)
            .filter(|p| p.meta.overlaps(&region_meta))
            .map(PeerState::region_id)
            .collect();
        if !overlapping.is_empty() {
            // An overlapping peer may be a stale one, removed while cut off and asleep: wake
            // it, so it campaigns and hears of its removal from the members it asks.
            for r in overlapping {
                self.wake(r);
            }
            return reject(s, "snapshot overlaps another region here");
        }
        if !self.ensure_peer_for(&s.message) {
            return reject(s, "no peer for this snapshot here");
        }
        let peer = self.peers.get_mut(&region_id).expect("ensured");
        if peer.incoming.is_some() || peer.installing.is_some() {
            return reject(s, "another snapshot is being installed");
        }
        let mut msg = s.message.msg.clone();
        msg.context = Bytes::new();
        if let Err(e) = peer.node.step(msg) {
            return reject(s, &format!("raft refused the snapshot: {e}"));
        }
        peer.incoming = Some((s, region_meta));
        if peer.hibernating {
            self.wake(region_id);
        }
        self.dirty.insert(region_id);
    }

    fn begin_install(&mut self, region_id: u64, rd: raftlog::Ready) {
        let peer = self.peers.get_mut(&region_id).expect("caller checked");
        let snap_meta = SnapshotMeta::decode(&rd.snapshot().data);
        let Some((inc, region_meta)) = peer.incoming.take() else {
            warn!(
                region_id,
                "a snapshot Ready without a received stream; restarting the peer"
            );
            return self.restart_peer(region_id, rd);
        };
        let meta = match snap_meta {
            Ok(m) if m.region_id == region_id => m,
            _ => {
                let _ = inc.receipts.send(SnapshotReceipt::Rejected {
                    reason: "bad snapshot descriptor".into(),
                });
                return self.restart_peer(region_id, rd);
            }
        };
        if !self.snapshots.install(meta, inc.chunks.clone()) {
            let _ = inc.receipts.send(SnapshotReceipt::Rejected {
                reason: "snapshot worker busy".into(),
            });
            return self.restart_peer(region_id, rd);
        }
        info!(
            store = self.cfg.store_id,
            region_id,
            index = meta.index,
            "installing snapshot"
        );
        peer.installing = Some(Installing {
            ready: rd,
            meta,
            region_meta,
            receipts: inc.receipts,
        });
    }

    /// Drops a peer's unpersisted Raft state (a snapshot that cannot be installed) by making
    /// its `RawNode` again from storage.
    fn restart_peer(&mut self, region_id: u64, _rd: raftlog::Ready) {
        let Some(peer) = self.peers.remove(&region_id) else {
            return;
        };
        let origin = if peer.initialized {
            PeerOrigin::Initialized {
                applied_index: peer.applied_index,
            }
        } else {
            PeerOrigin::Uninitialized
        };
        let mut old = peer;
        old.fail_pending(
            RequestError::ProposalDropped {
                reason: "peer restarted".into(),
            },
            RequestError::NotLeader {
                region_id,
                leader: None,
            },
        );
        if let Err(e) = self.add_peer(old.meta.clone(), origin, false) {
            warn!(region_id, %e, "could not restart peer");
        }
    }

    fn abort_install(&mut self, region_id: u64, reason: String) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let Some(inst) = peer.installing.take() else {
            return;
        };
        let _ = inst.receipts.send(SnapshotReceipt::Rejected { reason });
        if let Some(recorded) = peer.pending_destroy.take() {
            return self.destroy_peer(region_id, recorded);
        }
        self.restart_peer(region_id, inst.ready);
    }

    fn on_installed(&mut self, meta: SnapshotMeta) {
        let region_id = meta.region_id;
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let Some(inst) = peer.installing.take() else {
            return;
        };
        if inst.meta != meta {
            peer.installing = Some(inst);
            return;
        }
        if let Some(recorded) = peer.pending_destroy.take() {
            let _ = inst.receipts.send(SnapshotReceipt::Rejected {
                reason: "peer removed during the install".into(),
            });
            return self.destroy_peer(region_id, recorded);
        }
        let Installing {
            mut ready,
            region_meta,
            receipts,
            ..
        } = inst;
        let snap = ready.take_snapshot();
        info!(
            store = self.cfg.store_id,
            region_id,
            index = meta.index,
            "snapshot installed"
        );
        peer.meta = region_meta;
        if let Some(me) = peer.meta.peer_on_store(self.cfg.store_id).copied() {
            peer.me = me;
        }
        peer.initialized = true;
        peer.awaiting_state = false;
        peer.dispatched_index = meta.index;
        peer.applied_index = meta.index;
        let b = &mut self.batch;
        b.set_snapshot(region_id, meta.index, meta.term);
        b.set_conf_state(region_id, snap.metadata.conf_state.clone());
        b.set_region_meta(region_id, peer.meta.encode());
        let committed = ready.take_committed_entries();
        let entries = ready.take_entries();
        if !entries.is_empty() {
            self.batch.add_entries(region_id, entries);
        }
        // The hard state recorded with the snapshot always commits at least its index (the log
        // starts after it, and a restart must not find a commit below the log's start).
        let mut hs = match ready.hs() {
            Some(hs) => *hs,
            None => self.peers[&region_id].node.raft.hard_state(),
        };
        hs.commit = hs.commit.max(meta.index);
        self.batch.set_hard_state(region_id, hs);
        if let Some(p) = self.peers.get_mut(&region_id) {
            p.hs_logged = hs;
        }
        let persisted = ready.take_persisted_messages();
        let incarnation = self.peers[&region_id].incarnation;
        self.batch_readies
            .push((region_id, incarnation, ready.number(), persisted));
        self.batch_installed.push((region_id, receipts));
        let peer = self.peers.get_mut(&region_id).expect("present");
        peer.node.advance_append_async(ready);
        if !committed.is_empty() {
            self.dispatch(region_id, committed);
        }
        self.dirty.insert(region_id);
    }

    // ---------------------------------------------------------------- dispatch

    fn send_apply(&mut self, req: ApplyRequest) {
        // With inline apply, requests wait for the end of the flush: a follower's log write
        // then goes to the device before it applies what the same message committed.
        if self.inline_apply.is_some() || !self.apply_backlog.is_empty() {
            self.apply_backlog.push_back(req);
            return;
        }
        match self.apply_tx.try_send(req) {
            Ok(()) => {}
            Err(TrySendError::Full(req)) => self.apply_backlog.push_back(req),
            Err(TrySendError::Disconnected(_)) => self.fail("apply worker stopped".into()),
        }
    }

    fn drain_apply_backlog(&mut self) {
        while let Some(req) = self.apply_backlog.pop_front() {
            let req = match self.inline_apply.as_mut() {
                Some(inline) => match inline.apply_here(req) {
                    None => {
                        self.metrics.inline_apply_tasks_total.inc();
                        continue;
                    }
                    Some(req) => req,
                },
                None => req,
            };
            match self.apply_tx.try_send(req) {
                Ok(()) => {}
                Err(TrySendError::Full(req)) => {
                    self.apply_backlog.push_front(req);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.apply_backlog.clear();
                    self.fail("apply worker stopped".into());
                    return;
                }
            }
        }
    }

    /// Hands committed entries to the apply worker in order; admin entries take effect here.
    fn dispatch(&mut self, region_id: u64, entries: Vec<Entry>) {
        let mut task = ApplyTask::new(region_id, Vec::with_capacity(entries.len()));
        let mut remove_self = false;
        self.metrics
            .committed_entries_total
            .add(entries.len() as u64);
        for mut e in entries {
            let peer = self.peers.get_mut(&region_id).expect("caller checked");
            let (index, term) = (e.index, e.term);
            let mut stale = false;
            let mut kind_seen = None;
            match e.entry_type {
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => match EntryPayload::decode(&e.data) {
                    Ok(EntryPayload::Command {
                        epoch_version,
                        command,
                    }) => {
                        kind_seen = Some(ProposalKind::Write);
                        if epoch_version == peer.meta.epoch.version {
                            e.data = command;
                        } else {
                            stale = true;
                            e.data = Bytes::new();
                        }
                    }
                    Ok(EntryPayload::Split(req)) => {
                        kind_seen = Some(ProposalKind::Split);
                        if req.epoch_version == peer.meta.epoch.version {
                            if !task.entries.is_empty() {
                                let t = std::mem::replace(
                                    &mut task,
                                    ApplyTask::new(region_id, Vec::new()),
                                );
                                self.send_apply(ApplyRequest::Apply(t));
                            }
                            self.apply_split(region_id, index, term, req);
                            // A split proposal is answered here; it never gives a responder.
                            let _ = self.match_proposal(region_id, index, term, kind_seen, false);
                            continue;
                        }
                        stale = true;
                        e.data = Bytes::new();
                    }
                    Err(err) => {
                        warn!(region_id, index, %err, "undecodable entry; applied as a no-op");
                        e.data = Bytes::new();
                    }
                },
                EntryType::EntryConfChangeV2 | EntryType::EntryConfChange => {
                    kind_seen = Some(ProposalKind::ConfChange);
                    match self.apply_conf_change(region_id, &e) {
                        Ok((cs, removed)) => {
                            task.conf_states.push((index, cs));
                            remove_self |= removed;
                            let peer = self.peers.get(&region_id).expect("present");
                            task.metas.push((index, peer.meta.encode()));
                            self.batch.set_region_meta(region_id, peer.meta.encode());
                            self.log_hard_state(region_id);
                        }
                        Err(err) => warn!(region_id, index, %err, "conf change not applied"),
                    }
                }
            }
            task.entries.push(e);
            let peer = self.peers.get_mut(&region_id).expect("present");
            peer.dispatched_index = index;
            if let Some(r) = self.match_proposal(region_id, index, term, kind_seen, stale) {
                task.responders.push(r);
            }
        }
        let peer = self.peers.get_mut(&region_id).expect("present");
        let dispatched = peer.dispatched_index;
        if !task.entries.is_empty() {
            self.send_apply(ApplyRequest::Apply(task));
        }
        self.serve_ready_reads(region_id, dispatched);
        if remove_self {
            let recorded = self.peers[&region_id].meta.clone();
            self.destroy_peer(region_id, recorded);
        }
    }

    /// Matches the committed entry at `index` with the proposal waiting for it, if any. A
    /// matched write comes back as the responder the apply worker answers it with.
    fn match_proposal(
        &mut self,
        region_id: u64,
        index: u64,
        term: u64,
        kind: Option<ProposalKind>,
        stale: bool,
    ) -> Option<Responder> {
        let peer = self.peers.get_mut(&region_id).expect("present");
        while let Some(front) = peer.proposals.front() {
            if front.index > index {
                break;
            }
            let p = peer.proposals.pop_front().expect("front exists");
            if p.index < index || p.term != term || Some(p.kind) != kind {
                let reason = if p.kind == ProposalKind::ConfChange && kind.is_none() {
                    "another membership change was in progress"
                } else {
                    "the entry was replaced by a new leader"
                };
                (p.reply)(Err(RequestError::ProposalDropped {
                    reason: reason.into(),
                }));
                continue;
            }
            if stale {
                let regions = self.current_regions(region_id);
                (p.reply)(Err(RequestError::EpochNotMatch { regions }));
                return None;
            }
            match p.kind {
                ProposalKind::Write => return Some(self.responder(p)),
                ProposalKind::ConfChange | ProposalKind::Split => {
                    (p.reply)(Ok(ClientResponse::AdminDone));
                }
            }
            return None;
        }
        None
    }

    /// The apply worker's answer to a write proposal, once its entry is applied.
    fn responder(&self, p: Proposal) -> Responder {
        let metrics = Arc::clone(&self.metrics);
        let (index, term) = (p.index, p.term);
        Responder::new(
            index,
            Box::new(move |r: Option<&ApplyResult>| {
                let outcome = match r {
                    Some(r) if r.term == term => write_outcome(&r.results),
                    _ => Err(RequestError::ProposalDropped {
                        reason: "applied without a result".into(),
                    }),
                };
                metrics.commit_latency.record(p.started.elapsed());
                (p.reply)(outcome);
            }),
        )
    }

    fn current_regions(&self, region_id: u64) -> Vec<RegionMeta> {
        let Some(p) = self.peers.get(&region_id) else {
            return Vec::new();
        };
        let mut out = vec![p.meta.clone()];
        // A split's sibling starts at this region's end.
        if !p.meta.end_key.is_empty() {
            if let Some(s) = self
                .peers
                .values()
                .find(|q| q.initialized && q.meta.start_key == p.meta.end_key)
            {
                out.push(s.meta.clone());
            }
        }
        out
    }

    fn apply_conf_change(
        &mut self,
        region_id: u64,
        e: &Entry,
    ) -> Result<(ConfState, bool), String> {
        let peer = self.peers.get_mut(&region_id).expect("present");
        let cc = match e.entry_type {
            EntryType::EntryConfChangeV2 => {
                ConfChangeV2::decode(&e.data).map_err(|e| e.to_string())?
            }
            _ => {
                ConfChangeV2::from(raftlog::ConfChange::decode(&e.data).map_err(|e| e.to_string())?)
            }
        };
        let cs = peer
            .node
            .apply_conf_change(&cc)
            .map_err(|e| e.to_string())?;
        let added = if cc.context.is_empty() {
            Vec::new()
        } else {
            decode_peer_list(&cc.context).map_err(|e| e.to_string())?
        };
        let mut peers: Vec<Peer> = Vec::new();
        let voters = cs.voters.iter().chain(cs.voters_outgoing.iter());
        let voters = voters.map(|id| (*id, PeerRole::Voter));
        let learners = cs.learners.iter().chain(cs.learners_next.iter());
        let learners = learners.map(|id| (*id, PeerRole::Learner));
        // Voters first: a peer both outgoing voter and incoming learner stays a voter until the
        // joint configuration is left.
        for (id, role) in voters.chain(learners) {
            if peers.iter().any(|p| p.peer_id == id) {
                continue;
            }
            let store_id = peer
                .meta
                .peer(id)
                .or_else(|| added.iter().find(|p| p.peer_id == id))
                .map(|p| p.store_id);
            if let Some(store_id) = store_id {
                peers.push(Peer {
                    peer_id: id,
                    store_id,
                    role,
                });
            }
        }
        peers.sort_by_key(|p| p.peer_id);
        let gone: Vec<Peer> = peer
            .meta
            .peers
            .iter()
            .filter(|p| !peers.iter().any(|q| q.peer_id == p.peer_id))
            .copied()
            .collect();
        peer.meta.peers = peers;
        peer.meta.epoch.conf_version += 1;
        let removed = peer.meta.peer(peer.me.peer_id).is_none();
        if let Some(me) = peer.meta.peer(peer.me.peer_id).copied() {
            peer.me = me;
        }
        info!(store = self.cfg.store_id, region_id, index = e.index, peers = ?peer.meta.peers, "membership changed");
        // A removed peer may never see the commit of its own removal (the leader stops
        // replicating to it): the leader tells it, so it destroys itself.
        if peer.is_leader() {
            for to in gone {
                let env = Self::raft_envelope(
                    &peer.meta,
                    peer.me,
                    to,
                    MessageKind::PeerRemoved,
                    Message::default(),
                );
                self.transport.send(to.store_id, vec![env]);
            }
        }
        Ok((cs, removed))
    }

    fn apply_split(&mut self, region_id: u64, index: u64, term: u64, req: SplitRequest) {
        let store_id = self.cfg.store_id;
        let peer = self.peers.get_mut(&region_id).expect("present");
        let mut child_peers = Vec::new();
        for p in &peer.meta.peers {
            if let Some((_, new_id)) = req.new_peer_ids.iter().find(|(old, _)| *old == p.peer_id) {
                child_peers.push(Peer {
                    peer_id: *new_id,
                    store_id: p.store_id,
                    role: p.role,
                });
            }
        }
        peer.meta.epoch.version += 1;
        let child = RegionMeta {
            region_id: req.new_region_id,
            start_key: req.split_key.clone(),
            end_key: peer.meta.end_key.clone(),
            epoch: peer.meta.epoch,
            peers: child_peers,
        };
        peer.meta.end_key = req.split_key.clone();
        peer.dispatched_index = index;
        let was_leader = peer.is_leader();
        let parent_meta = peer.meta.encode();
        info!(store = store_id, region_id, index, new_region = child.region_id, split_key = ?req.split_key, "region split");
        self.batch.set_region_meta(region_id, parent_meta.clone());
        // A restart must replay the split from this store's own log (a split child found at
        // open waits for it), so the commit covering it is written with the parent's metadata.
        self.log_hard_state(region_id);
        self.send_apply(ApplyRequest::Split {
            region_id,
            index,
            term,
            split_key: req.split_key.clone(),
            child: init_region_state(&child),
            parent_meta,
        });
        let child_id = child.region_id;
        if child.peer_on_store(store_id).is_none() {
            return;
        }
        match self.peers.get(&child_id) {
            Some(p) if p.initialized && !p.awaiting_state => return,
            Some(p) if p.awaiting_state => {
                // Found at open; the parent's replay has now created it in the state store.
                // Its metadata goes back to what the split gave it (what the state store now
                // holds): the log's newest record may already reflect later splits of the
                // child, which its own replay is about to apply again and would otherwise
                // skip as stale.
                let p = self.peers.get_mut(&child_id).expect("present");
                p.awaiting_state = false;
                if let Some(me) = child.peer_on_store(store_id).copied() {
                    p.me = me;
                }
                p.meta = child;
                self.dirty.insert(child_id);
                return;
            }
            Some(p) if p.incoming.is_some() || p.installing.is_some() => {
                // An uninitialized peer with a snapshot of the child on its way in: the
                // snapshot is newer than the split; the state store's split leaves an existing
                // child alone, and the install replaces it in either order.
                return;
            }
            Some(_) => {
                // An uninitialized peer created by the new region's messages: the split
                // supersedes it, but what it promised stays promised: its term and vote carry
                // over (it may have voted in a term above the init term).
                let p = self.peers.remove(&child_id).expect("matched");
                self.awake.remove(&child_id);
                let hs = p.node.raft.hard_state();
                init_region_records(&mut self.batch, &child);
                if hs.term > REGION_INIT_TERM {
                    self.batch.set_hard_state(
                        child_id,
                        HardState {
                            term: hs.term,
                            vote: hs.vote,
                            commit: REGION_INIT_INDEX,
                        },
                    );
                }
                self.creating.insert(child_id);
                self.batch_created.push((child, was_leader));
                return;
            }
            None => {}
        }
        init_region_records(&mut self.batch, &child);
        self.creating.insert(child_id);
        self.batch_created.push((child, was_leader));
    }

    /// Destroys the region's peer here: its pending requests fail, its state-store region goes,
    /// and its log is cleaned down to `recorded`, the metadata a restart (and any later peer
    /// of the region here) goes by: it no longer lists this peer, so the peer never restarts.
    fn destroy_peer(&mut self, region_id: u64, recorded: RegionMeta) {
        if let Some(p) = self.peers.get_mut(&region_id) {
            if p.installing.is_some() {
                p.pending_destroy = Some(recorded);
                return;
            }
        }
        let Some(mut peer) = self.peers.remove(&region_id) else {
            return;
        };
        info!(
            store = self.cfg.store_id,
            region_id, "peer removed from the region; destroying it"
        );
        peer.fail_pending(
            RequestError::RegionNotFound { region_id },
            RequestError::RegionNotFound { region_id },
        );
        if peer.role == StateRole::Leader {
            self.metrics.leaders.add(-1);
        }
        self.awake.remove(&region_id);
        self.tombstones.insert(
            region_id,
            Tombstone {
                peer_id: peer.me.peer_id,
                conf_version: peer.meta.epoch.conf_version,
            },
        );
        self.send_apply(ApplyRequest::RemoveRegion(region_id));
        self.batch.clean_region(region_id);
        self.batch.set_region_meta(region_id, recorded.encode());
        self.cleaning.insert(region_id);
        self.batch_cleaned.push(region_id);
        self.metrics.regions.set(self.peers.len() as i64);
    }

    /// The apply worker applied up to `applied_index` (and answered the writes proposed here
    /// itself, see [`Responder`]).
    fn on_applied(&mut self, region_id: u64, applied_index: u64) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let n = applied_index.saturating_sub(peer.applied_index);
        self.metrics.applied_entries_total.add(n);
        peer.applied_index = peer.applied_index.max(applied_index);
        peer.node.advance_apply_to(peer.applied_index);
        self.dirty.insert(region_id);
    }

    // ---------------------------------------------------------------- requests

    fn on_request(&mut self, req: ClientRequest, reply: Reply) {
        if let Some(f) = &self.failed {
            return reply(Err(RequestError::StoreFailed { reason: f.clone() }));
        }
        if self.stopping {
            return reply(Err(RequestError::Stopping));
        }
        match req {
            ClientRequest::Regions => reply(Ok(ClientResponse::Regions(self.region_infos()))),
            ClientRequest::Status => reply(Ok(ClientResponse::Status(StoreStatus {
                store_id: self.cfg.store_id,
                regions: self.region_infos(),
            }))),
            ClientRequest::Write {
                region_id,
                epoch,
                ref command,
            } => {
                if let Err(e) = self.check_region(region_id, epoch, false) {
                    return reply(Err(e));
                }
                let peer = &self.peers[&region_id];
                if !peer.command_in_range(command) {
                    let regions = self.current_regions(region_id);
                    return reply(Err(RequestError::EpochNotMatch { regions }));
                }
                let data = EntryPayload::Command {
                    epoch_version: peer.meta.epoch.version,
                    command: command.encode(),
                }
                .encode();
                self.propose(region_id, data, ProposalKind::Write, reply);
            }
            ClientRequest::Get {
                region_id,
                epoch,
                ref key,
            } => {
                if let Err(e) = self.check_region(region_id, epoch, false) {
                    return reply(Err(e));
                }
                if !self.peers[&region_id].meta.contains(key) {
                    let regions = self.current_regions(region_id);
                    return reply(Err(RequestError::EpochNotMatch { regions }));
                }
                self.start_read(region_id, req, reply);
            }
            ClientRequest::Scan {
                region_id, epoch, ..
            } => {
                if let Err(e) = self.check_region(region_id, epoch, false) {
                    return reply(Err(e));
                }
                self.start_read(region_id, req, reply);
            }
            ClientRequest::Admin {
                region_id,
                epoch,
                request,
            } => {
                if let Err(e) = self.check_region(region_id, epoch, true) {
                    return reply(Err(e));
                }
                self.on_admin(region_id, request, reply);
            }
        }
    }

    /// Checks that this store leads an initialized `region_id` at the request's epoch and has
    /// room for another request.
    fn check_region(
        &mut self,
        region_id: u64,
        epoch: Epoch,
        admin: bool,
    ) -> Result<(), RequestError> {
        let Some(p) = self.peers.get(&region_id).filter(|p| p.initialized) else {
            return Err(RequestError::RegionNotFound { region_id });
        };
        if p.hibernating {
            self.wake(region_id);
        }
        let p = &self.peers[&region_id];
        if !p.is_leader() {
            return Err(p.not_leader());
        }
        if p.meta.epoch.version != epoch.version
            || (admin && p.meta.epoch.conf_version != epoch.conf_version)
        {
            return Err(RequestError::EpochNotMatch {
                regions: self.current_regions(region_id),
            });
        }
        if p.pending_count() >= self.cfg.pending_requests_max {
            return Err(RequestError::Busy {
                reason: format!(
                    "{} requests waiting in region {region_id}",
                    p.pending_count()
                ),
            });
        }
        Ok(())
    }

    fn propose(&mut self, region_id: u64, data: Bytes, kind: ProposalKind, reply: Reply) {
        let peer = self.peers.get_mut(&region_id).expect("checked");
        match peer.node.propose(Vec::new(), data.to_vec()) {
            Ok(()) => {
                self.metrics.proposals_total.inc();
                let index = peer.node.raft.raft_log.last_index();
                peer.proposals.push_back(Proposal {
                    index,
                    term: peer.node.raft.term,
                    kind,
                    reply,
                    started: Instant::now(),
                });
                self.dirty.insert(region_id);
            }
            Err(e) => {
                self.metrics.proposals_dropped_total.inc();
                reply(Err(RequestError::ProposalDropped {
                    reason: e.to_string(),
                }));
            }
        }
    }

    /// Queues a read; the reads a region queues before its next Ready share one ReadIndex
    /// (one heartbeat round to the followers), issued by [`Self::issue_reads`].
    fn start_read(&mut self, region_id: u64, request: ClientRequest, reply: Reply) {
        let peer = self.peers.get_mut(&region_id).expect("checked");
        peer.reads.push(PendingRead {
            ctx: 0,
            request,
            reply,
        });
        self.dirty.insert(region_id);
    }

    /// Issues one ReadIndex for the region's reads queued since the last one (context 0).
    fn issue_reads(&mut self, region_id: u64) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        if peer.reads.last().is_none_or(|r| r.ctx != 0) {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        for r in peer.reads.iter_mut().rev().take_while(|r| r.ctx == 0) {
            r.ctx = ctx;
        }
        match self.cfg.read_mode {
            ReadMode::ReadIndex => self.metrics.read_index_total.inc(),
            ReadMode::Lease => self.metrics.lease_reads_total.inc(),
        }
        peer.node.read_index(ctx.to_le_bytes().to_vec());
    }

    fn on_read_state(&mut self, region_id: u64, index: u64, ctx: &[u8]) {
        let Ok(ctx) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        let ctx = u64::from_le_bytes(ctx);
        let peer = self.peers.get_mut(&region_id).expect("present");
        // Read states come in request order; every read up to this batch is confirmed.
        let Some(pos) = peer.reads.iter().rposition(|r| r.ctx == ctx) else {
            return;
        };
        let confirmed: Vec<PendingRead> = peer.reads.drain(..=pos).collect();
        for r in confirmed {
            peer.reads_ready.push_back((index, r));
        }
        let dispatched = peer.dispatched_index;
        self.serve_ready_reads(region_id, dispatched);
    }

    fn serve_ready_reads(&mut self, region_id: u64, dispatched: u64) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let mut serve = Vec::new();
        while peer
            .reads_ready
            .front()
            .is_some_and(|(i, _)| *i <= dispatched)
        {
            serve.push(peer.reads_ready.pop_front().expect("front exists").1);
        }
        let meta = peer.meta.clone();
        for r in serve {
            self.serve_read(&meta, r);
        }
    }

    fn serve_read(&mut self, meta: &RegionMeta, r: PendingRead) {
        let region_id = meta.region_id;
        // The read was checked against the region when it arrived; a split applied since may
        // have moved its keys away, so check again against the region as it is now (the read
        // is served at least at this point of the log).
        let epoch = match &r.request {
            ClientRequest::Get { epoch, .. } | ClientRequest::Scan { epoch, .. } => *epoch,
            _ => meta.epoch,
        };
        let in_range = match &r.request {
            ClientRequest::Get { key, .. } => meta.contains(key),
            _ => true,
        };
        if epoch.version != meta.epoch.version || !in_range {
            let regions = self.current_regions(region_id);
            return (r.reply)(Err(RequestError::EpochNotMatch { regions }));
        }
        let request = match r.request {
            ClientRequest::Get { key, .. } => ReadRequest::Get { key },
            ClientRequest::Scan {
                start, end, limit, ..
            } => {
                let start = if start.as_ref() < meta.start_key.as_ref() {
                    meta.start_key.clone()
                } else {
                    start
                };
                let end = match (end.is_empty(), meta.end_key.is_empty()) {
                    (true, true) => None,
                    (true, false) => Some(meta.end_key.clone()),
                    (false, true) => Some(end),
                    (false, false) => Some(if end.as_ref() < meta.end_key.as_ref() {
                        end
                    } else {
                        meta.end_key.clone()
                    }),
                };
                ReadRequest::Scan {
                    start,
                    end,
                    limit: limit as usize,
                }
            }
            _ => {
                return (r.reply)(Err(RequestError::BadRequest {
                    reason: "not a read".into(),
                }))
            }
        };
        let reply = r.reply;
        self.send_apply(ApplyRequest::Read {
            region_id,
            request,
            reply: Box::new(move |res| {
                reply(match res {
                    Ok(ReadOutput::Value(v)) => Ok(ClientResponse::Value(v)),
                    Ok(ReadOutput::Rows(rows)) => Ok(ClientResponse::Rows(rows)),
                    Err(e) => Err(RequestError::StoreFailed {
                        reason: e.to_string(),
                    }),
                })
            }),
        });
    }

    fn on_admin(&mut self, region_id: u64, request: AdminRequest, reply: Reply) {
        let peer = self.peers.get(&region_id).expect("checked");
        let bad = |reply: Reply, reason: String| reply(Err(RequestError::BadRequest { reason }));
        let changes = match request {
            AdminRequest::TransferLeader { peer_id } => {
                if peer
                    .meta
                    .peer(peer_id)
                    .is_none_or(|p| p.role != PeerRole::Voter)
                {
                    return bad(
                        reply,
                        format!("peer {peer_id} is not a voter of region {region_id}"),
                    );
                }
                let peer = self.peers.get_mut(&region_id).expect("checked");
                peer.node.transfer_leader(peer_id);
                self.dirty.insert(region_id);
                return reply(Ok(ClientResponse::AdminDone));
            }
            AdminRequest::Split { split_key } => {
                let m = &peer.meta;
                if split_key.is_empty()
                    || split_key.as_ref() <= m.start_key.as_ref()
                    || !m.contains(&split_key)
                {
                    return bad(
                        reply,
                        format!(
                            "split key {split_key:?} is not strictly inside region {region_id}"
                        ),
                    );
                }
                // Random 62-bit ids; one this store already knows is skipped (cheap insurance
                // against a badly seeded generator).
                let mut new_region_id = self.ids.next_id();
                while self.peers.contains_key(&new_region_id)
                    || self.tombstones.contains_key(&new_region_id)
                {
                    new_region_id = self.ids.next_id();
                }
                let mut new_peer_ids = Vec::new();
                for p in &self.peers[&region_id].meta.peers {
                    new_peer_ids.push((p.peer_id, self.ids.next_id()));
                }
                let req = SplitRequest {
                    epoch_version: self.peers[&region_id].meta.epoch.version,
                    split_key,
                    new_region_id,
                    new_peer_ids,
                };
                let data = EntryPayload::Split(req).encode();
                return self.propose(region_id, data, ProposalKind::Split, reply);
            }
            AdminRequest::AddPeer { store_id, learner } => vec![if learner {
                PeerChange::AddLearner { store_id }
            } else {
                PeerChange::AddVoter { store_id }
            }],
            AdminRequest::PromoteLearner { peer_id } => {
                if peer
                    .meta
                    .peer(peer_id)
                    .is_none_or(|p| p.role != PeerRole::Learner)
                {
                    return bad(
                        reply,
                        format!("peer {peer_id} is not a learner of region {region_id}"),
                    );
                }
                let cc = ConfChangeV2 {
                    transition: ConfChangeTransition::Auto,
                    changes: vec![ConfChangeSingle {
                        change_type: ConfChangeType::AddNode,
                        node_id: peer_id,
                    }],
                    context: Bytes::new(),
                };
                return self.propose_conf_change(region_id, cc, reply);
            }
            AdminRequest::RemovePeer { peer_id } => vec![PeerChange::Remove { peer_id }],
            AdminRequest::ChangePeers(changes) => changes,
        };
        let mut singles = Vec::new();
        let mut added = Vec::new();
        for c in changes {
            match c {
                PeerChange::AddVoter { store_id } | PeerChange::AddLearner { store_id } => {
                    if self.peers[&region_id]
                        .meta
                        .peer_on_store(store_id)
                        .is_some()
                    {
                        return bad(
                            reply,
                            format!("region {region_id} already has a peer on store {store_id}"),
                        );
                    }
                    let learner = matches!(c, PeerChange::AddLearner { .. });
                    let peer_id = self.ids.next_id();
                    added.push(Peer {
                        peer_id,
                        store_id,
                        role: if learner {
                            PeerRole::Learner
                        } else {
                            PeerRole::Voter
                        },
                    });
                    singles.push(ConfChangeSingle {
                        change_type: if learner {
                            ConfChangeType::AddLearnerNode
                        } else {
                            ConfChangeType::AddNode
                        },
                        node_id: peer_id,
                    });
                }
                PeerChange::Remove { peer_id } => {
                    if self.peers[&region_id].meta.peer(peer_id).is_none() {
                        return bad(
                            reply,
                            format!("peer {peer_id} is not in region {region_id}"),
                        );
                    }
                    singles.push(ConfChangeSingle {
                        change_type: ConfChangeType::RemoveNode,
                        node_id: peer_id,
                    });
                }
            }
        }
        let cc = ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: singles,
            context: if added.is_empty() {
                Bytes::new()
            } else {
                encode_peer_list(&added)
            },
        };
        self.propose_conf_change(region_id, cc, reply);
    }

    fn propose_conf_change(&mut self, region_id: u64, cc: ConfChangeV2, reply: Reply) {
        let peer = self.peers.get_mut(&region_id).expect("checked");
        let raft = &peer.node.raft;
        if raft.pending_conf_index > raft.raft_log.applied {
            // Transient: the previous change is not applied yet (or the joint state not left).
            return reply(Err(RequestError::Busy {
                reason: format!(
                    "membership change at index {} not yet applied",
                    raft.pending_conf_index
                ),
            }));
        }
        match peer.node.propose_conf_change(Vec::new(), cc) {
            Ok(()) => {
                self.metrics.proposals_total.inc();
                let index = peer.node.raft.raft_log.last_index();
                peer.proposals.push_back(Proposal {
                    index,
                    term: peer.node.raft.term,
                    kind: ProposalKind::ConfChange,
                    reply,
                    started: Instant::now(),
                });
                self.dirty.insert(region_id);
            }
            Err(e) => reply(Err(RequestError::BadRequest {
                reason: e.to_string(),
            })),
        }
    }

    fn region_infos(&self) -> Vec<RegionInfo> {
        let mut v: Vec<RegionInfo> = self
            .peers
            .values()
            .filter(|p| p.initialized)
            .map(|p| RegionInfo {
                meta: p.meta.clone(),
                leader: p.leader(),
                peer_id: p.me.peer_id,
                is_leader: p.is_leader(),
                term: p.node.raft.term,
                commit_index: p.node.raft.raft_log.committed,
                applied_index: p.applied_index,
                hibernating: p.hibernating,
            })
            .collect();
        v.sort_by(|a, b| a.meta.start_key.cmp(&b.meta.start_key));
        v
    }

    // ---------------------------------------------------------------- liveness

    fn on_unreachable(&mut self, store_id: u64) {
        let mut woken = Vec::new();
        for (rid, p) in self.peers.iter_mut() {
            let ids: Vec<u64> = p
                .meta
                .peers
                .iter()
                .filter(|q| q.store_id == store_id)
                .map(|q| q.peer_id)
                .collect();
            for id in ids {
                p.node.report_unreachable(id);
            }
            if p.hibernating && p.leader().is_some_and(|l| l.store_id == store_id) {
                woken.push(*rid);
            }
        }
        for r in woken {
            self.wake(r);
        }
    }

    fn send_store_heartbeats(&mut self) {
        let mut stores = HashSet::new();
        for p in self.peers.values() {
            for q in &p.meta.peers {
                if q.store_id != self.cfg.store_id {
                    stores.insert(q.store_id);
                }
            }
        }
        let me = Peer {
            peer_id: 0,
            store_id: self.cfg.store_id,
            role: PeerRole::Voter,
        };
        for s in stores {
            let to = Peer {
                peer_id: 0,
                store_id: s,
                role: PeerRole::Voter,
            };
            self.transport.send(
                s,
                vec![RaftMessage {
                    kind: MessageKind::StoreHeartbeat,
                    region_id: 0,
                    from: me,
                    to,
                    epoch: Epoch::default(),
                    msg: Message::default(),
                }],
            );
        }
    }

    /// Wakes hibernating followers whose leader's store fell silent.
    fn check_store_liveness(&mut self) {
        let limit = 2 * self.cfg.election_ticks as u64;
        let mut newly_down = Vec::new();
        for (store, seen) in &self.store_seen {
            if self.tick_no.saturating_sub(*seen) > limit && !self.stores_down.contains(store) {
                newly_down.push(*store);
            }
        }
        for s in newly_down {
            warn!(
                store = self.cfg.store_id,
                silent_store = s,
                "store silent; waking its regions"
            );
            self.stores_down.insert(s);
            let woken: Vec<u64> = self
                .peers
                .iter()
                .filter(|(_, p)| p.hibernating && p.leader().is_none_or(|l| l.store_id == s))
                .map(|(r, _)| *r)
                .collect();
            for r in woken {
                self.wake(r);
            }
        }
    }

    // ---------------------------------------------------------------- hibernation

    fn hibernation_enabled(&self) -> bool {
        self.cfg.hibernate && self.cfg.read_mode == ReadMode::ReadIndex
    }

    fn wake(&mut self, region_id: u64) {
        if let Some(p) = self.peers.get_mut(&region_id) {
            if p.hibernating {
                p.hibernating = false;
                self.metrics.hibernating_regions.add(-1);
            }
            p.hibernation = Default::default();
            self.awake.insert(region_id);
            self.dirty.insert(region_id);
        }
    }

    fn hibernate(&mut self, region_id: u64) {
        // The final commit index goes to disk: nobody repeats it while the region sleeps.
        self.log_hard_state(region_id);
        if let Some(p) = self.peers.get_mut(&region_id) {
            if !p.hibernating {
                p.hibernating = true;
                self.metrics.hibernating_regions.add(1);
            }
            self.awake.remove(&region_id);
        }
    }

    fn maybe_hibernate(&mut self, region_id: u64) {
        if !self.hibernation_enabled() {
            return;
        }
        let peer = self.peers.get_mut(&region_id).expect("present");
        if !peer.is_leader() || !peer.is_quiet_leader() {
            peer.hibernation = Default::default();
            return;
        }
        peer.hibernation.idle_ticks += 1;
        if peer.hibernation.idle_ticks < self.cfg.hibernate_idle_ticks {
            return;
        }
        let term = peer.node.raft.term;
        if peer.meta.peers.len() == 1 {
            return self.hibernate(region_id);
        }
        if peer.hibernation.requested_term == Some(term)
            && peer.hibernation.idle_ticks % self.cfg.hibernate_idle_ticks != 0
        {
            return;
        }
        peer.hibernation.requested_term = Some(term);
        let msg = Message {
            term,
            commit: peer.node.raft.raft_log.committed,
            ..Default::default()
        };
        let others: Vec<Peer> = peer
            .meta
            .peers
            .iter()
            .filter(|p| p.peer_id != peer.me.peer_id)
            .copied()
            .collect();
        for to in others {
            let env = Self::raft_envelope(
                &peer.meta,
                peer.me,
                to,
                MessageKind::HibernateRequest,
                msg.clone(),
            );
            self.transport.send(to.store_id, vec![env]);
        }
    }

    fn on_hibernate_request(&mut self, m: RaftMessage) {
        if !self.hibernation_enabled() {
            return;
        }
        let region_id = m.region_id;
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let raft = &peer.node.raft;
        let ok = peer.me.peer_id == m.to.peer_id
            && raft.state == StateRole::Follower
            && raft.leader_id == m.from.peer_id
            && raft.term == m.msg.term
            && raft.raft_log.committed == m.msg.commit
            && raft.raft_log.last_index() == m.msg.commit
            && peer.dispatched_index == m.msg.commit
            && peer.pending_count() == 0
            && peer.installing.is_none();
        if !ok {
            return;
        }
        let msg = Message {
            term: m.msg.term,
            ..Default::default()
        };
        let env = Self::raft_envelope(&peer.meta, peer.me, m.from, MessageKind::HibernateAck, msg);
        self.transport.send(m.from.store_id, vec![env]);
        self.hibernate(region_id);
    }

    /// The leader says this peer was removed (at a newer conf version than this peer knows).
    fn on_peer_removed(&mut self, m: RaftMessage) {
        let Some(peer) = self.peers.get(&m.region_id) else {
            return;
        };
        if peer.me.peer_id != m.to.peer_id || m.epoch.conf_version <= peer.meta.epoch.conf_version {
            return;
        }
        info!(
            store = self.cfg.store_id,
            region_id = m.region_id,
            "told by the leader that this peer was removed"
        );
        // Record the removal in the log first, so a restart does not start the peer again.
        let mut meta = peer.meta.clone();
        meta.peers.retain(|p| p.peer_id != m.to.peer_id);
        meta.epoch.conf_version = m.epoch.conf_version;
        self.destroy_peer(m.region_id, meta);
    }

    fn on_hibernate_ack(&mut self, m: RaftMessage) {
        let region_id = m.region_id;
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        if peer.hibernation.requested_term != Some(m.msg.term) || !peer.is_quiet_leader() {
            return;
        }
        peer.hibernation.acks.insert(m.from.peer_id);
        let all = peer
            .meta
            .peers
            .iter()
            .filter(|p| p.peer_id != peer.me.peer_id)
            .all(|p| peer.hibernation.acks.contains(&p.peer_id));
        if all {
            debug!(region_id, "region hibernates");
            self.hibernate(region_id);
        }
    }

    // ---------------------------------------------------------------- failure and stop

    fn fail(&mut self, reason: String) {
        if self.failed.is_some() {
            return;
        }
        tracing::error!(store = self.cfg.store_id, %reason, "store failed; refusing requests until restarted");
        let err = RequestError::StoreFailed {
            reason: reason.clone(),
        };
        for p in self.peers.values_mut() {
            p.fail_pending(err.clone(), err.clone());
        }
        self.failed = Some(reason);
    }

    /// Answers every waiting request with `Stopping` (the store is shutting down).
    pub fn fail_all_pending(&mut self) {
        for p in self.peers.values_mut() {
            p.fail_pending(RequestError::Stopping, RequestError::Stopping);
        }
    }
}

/// A write's answer from its entry's apply result.
fn write_outcome(
    results: &std::result::Result<Vec<crate::state::OpResult>, CommandError>,
) -> std::result::Result<ClientResponse, RequestError> {
    match results {
        Ok(ops) => Ok(ClientResponse::Written(ops.clone())),
        Err(CommandError::Duplicate {
            client_id,
            sequence,
            last,
        }) => Err(RequestError::AlreadyApplied {
            client_id: *client_id,
            sequence: *sequence,
            last: *last,
        }),
        Err(e) => Err(RequestError::BadRequest {
            reason: e.to_string(),
        }),
    }
}

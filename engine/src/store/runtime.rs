//! [`Store`]: one store on one device, running. Opens the device, reconciles the log with the
//! state store, starts the log writer, apply and snapshot threads, and drives the
//! [`StoreLoop`] from its own thread ([`Store::open`]) or leaves it to the caller as a
//! [`StoreDriver`] ([`Store::open_driven`]): a node whose network runtime is a single thread
//! runs the loop as a task there, so the hand-offs network → loop and loop → network are no
//! thread switches (each is one on a 2-vCPU machine, tens of µs when the other thread sleeps).
//!
//! Threads of a store: the raft loop (this module), the log writer
//! ([`crate::log::LogWriterThread`]), the apply worker and the snapshot worker. The loop never
//! waits on any of them: it hands work over bounded channels and hears back through events.
//! A driven loop on the `uring` backend has no log writer thread: it drives the log itself
//! ([`InlineSink`]), and it applies small write tasks itself while the apply worker waits
//! (`crate::state::worker::InlineApply`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender, TryRecvError};
use raftlog::{HardState, Storage};
use tracing::{info, info_span, warn};

use super::api::{StoreEvent, StoreRouter, Transport};
use super::config::StoreConfig;
use super::raft_loop::{
    init_region_records, init_region_state, LogSink, Outgoing, PeerOrigin, StoreLoop,
    REGION_INIT_INDEX,
};
use super::region::RegionMeta;
use super::wake::LoopWake;
use crate::device::{open_store, OpenOptions};
use crate::error::{EngineError, Result};
use crate::log::{LogBatch, LogConfig, LogStore, LogWriterThread, RegionLog};
use crate::metrics::StoreMetrics;
use crate::state::worker::{
    ApplyConfig, ApplyEvent, ApplyWorker, SnapshotConfig, SnapshotEvent, SnapshotWorker,
};
use crate::state::{StateConfig, StateStore};

/// Everything needed to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The device (block device or regular file).
    pub path: PathBuf,
    /// How to open it.
    pub open: OpenOptions,
    /// The log's options (`device_label` is set from `path`).
    pub log: LogConfig,
    /// The state store's options.
    pub state: StateConfig,
    /// The apply worker's options.
    pub apply: ApplyConfig,
    /// The snapshot worker's options.
    pub snapshot: SnapshotConfig,
    /// The raft loop's options (`store_id` is taken from the superblock).
    pub store: StoreConfig,
    /// Capacity of the loop's event queue. Default 65,536: a burst of messages and requests
    /// from many peers and clients; past it, requests get `Busy` and messages are dropped.
    pub event_queue_len_max: usize,
}

impl StoreOptions {
    /// Defaults for the device at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StoreOptions {
        let path = path.into();
        let label = path.display().to_string();
        StoreOptions {
            log: LogConfig {
                device_label: label.clone(),
                ..LogConfig::default()
            },
            state: StateConfig::new(label),
            path,
            open: OpenOptions::default(),
            apply: ApplyConfig::default(),
            snapshot: SnapshotConfig::default(),
            store: StoreConfig::new(1),
            event_queue_len_max: 65_536,
        }
    }
}

/// A running store. Stop it with [`Store::stop`] (a final checkpoint is written).
pub struct Store {
    store_id: u64,
    router: StoreRouter,
    metrics: Arc<StoreMetrics>,
    ending: Option<Ending>,
}

/// How [`Store`] learns that its loop has ended.
enum Ending {
    /// The loop's own thread ([`Store::open`]).
    Thread(JoinHandle<Result<()>>),
    /// The outcome [`StoreDriver::finish`] sends ([`Store::open_driven`]); disconnected when
    /// the driver was dropped unfinished.
    Driven(Receiver<Result<()>>),
}

impl Ending {
    fn wait(self) -> Result<()> {
        let stopped = EngineError::WorkerStopped {
            worker: "raft loop",
        };
        match self {
            Ending::Thread(j) => j.join().map_err(|_| stopped)?,
            Ending::Driven(rx) => rx.recv().map_err(|_| stopped)?,
        }
    }
}

/// The log writer thread as the loop's [`LogSink`]: completions come back as
/// [`StoreEvent::LogDone`] on an unbounded channel (never dropped; bounded in practice by the
/// batches in flight), after the writer thread has handed the batch's messages to the
/// transport.
struct WriterSink {
    writer: LogWriterThread,
    done: Sender<StoreEvent>,
    wake: Arc<LoopWake>,
    transport: Arc<dyn Transport>,
}

impl LogSink for WriterSink {
    fn append(&mut self, batch_no: u64, batch: LogBatch, after: Outgoing) {
        let done = self.done.clone();
        let wake = Arc::clone(&self.wake);
        let transport = Arc::clone(&self.transport);
        let cb = Box::new(move |r: Result<()>| {
            if r.is_ok() {
                for (store, msgs) in after {
                    transport.send(store, msgs);
                }
            }
            let _ = done.send(StoreEvent::LogDone {
                batch_no,
                result: r.map_err(|e| e.to_string()),
            });
            wake.wake();
        });
        if let Err(e) = self.writer.append(batch, cb) {
            let _ = self.done.send(StoreEvent::LogDone {
                batch_no,
                result: Err(e.to_string()),
            });
            self.wake.wake();
        }
    }

    fn compact_to(&mut self, region_id: u64, index: u64) {
        if let Err(e) = self.writer.compact_to(region_id, index) {
            warn!(region_id, index, %e, "log compaction not queued");
        }
    }

    fn region_log(&self, region_id: u64) -> RegionLog {
        self.writer.region_log(region_id)
    }
}

/// The log driven from the loop's own thread, for a loop that runs as a task of an async
/// runtime ([`Store::open_driven`]): an append goes straight into the [`LogStore`]; the
/// runtime puts it on the device ([`StoreDriver::start_log_writes`], as the next write or the
/// second in flight) once the turn's messages have left, and turns the loop when the device
/// posts a completion ([`StoreDriver::take_log_completion_fd`]); [`LogSink::reap`] then
/// collects the acknowledgements without blocking.
///
/// Against [`WriterSink`] this takes two thread switches off every log write (loop → writer
/// thread, writer thread → loop): the device's completion wakes the network thread, which
/// answers at once. On a follower both are on the critical path of every commit. Group commit
/// is unchanged: the loop gathers each turn's Readies into one batch, and batches appended
/// while a write is in flight go out together as the next one.
///
/// Public for the store simulator, which drives its loops' logs through this same sink.
pub struct InlineSink {
    log: LogStore,
    /// Appended batches not yet durable, by the log's ticket: the loop's batch number and the
    /// messages that leave once it is durable.
    pending: std::collections::HashMap<u64, (u64, Outgoing)>,
    /// Finished (or refused) batches not yet reaped.
    done: Vec<StoreEvent>,
    transport: Arc<dyn Transport>,
}

impl InlineSink {
    /// A sink over `log` that sends each durable batch's messages through `transport`. Its
    /// loop's caller puts appended batches on the device ([`StoreLoop::start_log`]) and
    /// collects finished ones ([`StoreLoop::reap_log`]), as [`StoreDriver`] does.
    pub fn new(log: LogStore, transport: Arc<dyn Transport>) -> InlineSink {
        InlineSink {
            log,
            pending: Default::default(),
            done: Vec::new(),
            transport,
        }
    }

    /// Starts queued writes and collects finished ones into `done`.
    fn poll(&mut self, wait: bool) {
        let acks = match self.log.poll(wait) {
            Ok(acks) => acks,
            Err(e) => {
                warn!(error = %e, "log poll failed");
                return;
            }
        };
        for a in acks {
            // Acknowledgements of compactions have no entry.
            let Some((batch_no, after)) = self.pending.remove(&a.ticket.0) else {
                continue;
            };
            if a.result.is_ok() {
                for (store, msgs) in after {
                    self.transport.send(store, msgs);
                }
            }
            self.done.push(StoreEvent::LogDone {
                batch_no,
                result: a.result.map_err(|e| e.to_string()),
            });
        }
    }
}

impl LogSink for InlineSink {
    fn append(&mut self, batch_no: u64, batch: LogBatch, after: Outgoing) {
        match self.log.append(batch) {
            Ok(ticket) => {
                self.pending.insert(ticket.0, (batch_no, after));
            }
            Err(e) => self.done.push(StoreEvent::LogDone {
                batch_no,
                result: Err(e.to_string()),
            }),
        }
    }

    fn has_writes_to_start(&self) -> bool {
        self.log.has_queued()
    }

    fn start(&mut self) {
        self.poll(false);
        // The device is busy with the write now: earlier batches' records go into the index
        // meanwhile, as the writer thread does before it waits.
        self.log.shared().apply_deferred();
    }

    fn compact_to(&mut self, region_id: u64, index: u64) {
        if let Err(e) = self.log.compact_to(region_id, index) {
            warn!(region_id, index, %e, "log compaction refused");
        }
    }

    fn region_log(&self, region_id: u64) -> RegionLog {
        self.log.region_log(region_id)
    }

    fn reap(&mut self, wait: bool) -> Vec<StoreEvent> {
        self.poll(wait && self.done.is_empty());
        std::mem::take(&mut self.done)
    }
}

/// A region found at open and how its peer starts.
pub struct Found {
    /// The region as this store knows it.
    pub meta: RegionMeta,
    /// How its peer starts.
    pub origin: PeerOrigin,
}

/// Bootstraps `initial_regions` if the store is new, then reconciles the log with the state
/// store; returns the peers to start. Used by [`Store::open`] and by simulators that drive a
/// [`StoreLoop`] over simulated devices.
pub fn prepare(
    log: &mut LogStore,
    state: &mut StateStore,
    initial_regions: &[RegionMeta],
) -> Result<Vec<Found>> {
    let store_id = log.superblock().store_id;
    let mine: Vec<RegionMeta> = initial_regions
        .iter()
        .filter(|m| m.peer_on_store(store_id).is_some())
        .cloned()
        .collect();
    if !mine.is_empty() && state.region_ids().is_empty() && log.region_ids().is_empty() {
        info!(
            regions = mine.len(),
            "bootstrapping a new cluster's regions"
        );
        bootstrap(log, state, &mine)?;
    }
    reconcile(log, state, store_id)
}

/// Brings the log and the state store into agreement at open; returns the peers to start.
///
/// - A region in the state store but not in the log (a split child or a bootstrap whose log
///   records were lost in a crash) gets its log started at the state's applied index.
/// - A log whose commit index is below the state's applied index (entries were applied before
///   the hard state carrying their commit was durable) has its commit raised: those entries
///   were committed by the cluster and are in the log.
/// - A region in the log only is either a peer created by a message and waiting for its first
///   snapshot (empty configuration), or a split child whose parent will replay the split.
fn reconcile(log: &mut LogStore, state: &mut StateStore, store_id: u64) -> Result<Vec<Found>> {
    let mut batch = LogBatch::new();
    let mut found = Vec::new();
    let mut removed = Vec::new();
    let log_regions = log.region_ids();
    for region_id in state.region_ids() {
        let st = state.region_state(region_id).expect("listed");
        let meta = RegionMeta::decode(&st.meta).map_err(|e| EngineError::InvalidConfig {
            key: "region metadata",
            reason: format!("region {region_id}: {e}"),
        })?;
        if meta.peer_on_store(store_id).is_none() {
            continue;
        }
        if log_regions.contains(&region_id) {
            // The log's metadata is newer when this store's peer was removed (and destroyed)
            // after the state store's last checkpoint: the region is no longer ours.
            let rl = log.region_log(region_id);
            if let Some(lm) = rl.region_meta().and_then(|b| RegionMeta::decode(&b).ok()) {
                if lm.epoch.conf_version >= meta.epoch.conf_version
                    && lm.peer_on_store(store_id).is_none()
                {
                    info!(
                        region_id,
                        "peer was removed before the crash; not starting it"
                    );
                    removed.push(region_id);
                    found.push(Found {
                        meta: lm,
                        origin: PeerOrigin::Removed,
                    });
                    continue;
                }
            }
        }
        if !log_regions.contains(&region_id) {
            batch.set_snapshot(region_id, st.applied_index, st.applied_term);
            batch.set_hard_state(
                region_id,
                HardState {
                    term: st.applied_term,
                    vote: 0,
                    commit: st.applied_index,
                },
            );
            batch.set_conf_state(region_id, st.conf_state.clone());
            batch.set_region_meta(region_id, st.meta.clone());
        } else {
            let rl = log.region_log(region_id);
            if let Some(f) = rl.refusal() {
                warn!(region_id, detail = %f.detail, "region's log is damaged; not serving it");
                continue;
            }
            let rs = rl.initial_state().map_err(|e| EngineError::InvalidConfig {
                key: "raft log",
                reason: format!("region {region_id}: {e}"),
            })?;
            // Raft starts from the configuration as of the applied index and replays the
            // membership changes after it; the log's own record may be older (it is written at
            // bootstrap and snapshot installs only).
            let first = rl.first_index().unwrap_or(1);
            if st.applied_index + 1 < first {
                // The log was compacted past what the state store holds: this peer cannot
                // replay; it needs a snapshot, which only a fresh peer can take.
                warn!(
                    region_id,
                    applied = st.applied_index,
                    first_index = first,
                    "state store is behind the compacted log; not serving the region"
                );
                continue;
            }
            if rs.conf_state != st.conf_state {
                batch.set_conf_state(region_id, st.conf_state.clone());
            }
            let last = rl.last_index().unwrap_or(0);
            // Entries applied from the log agree with it; only a snapshot install makes the
            // state store's applied (index, term) disagree with the log's entry there.
            let disagrees = st.applied_index + 1 >= first
                && st.applied_index <= last
                && raftlog::Storage::term(&rl, st.applied_index).ok() != Some(st.applied_term);
            if st.applied_index > last || disagrees {
                // A snapshot was installed (durable in the state store) but the log records
                // that say so were lost in a crash: restate them. The log may even reach past
                // the snapshot's index with older entries of a deposed leader's term, which
                // the snapshot replaces (recording it discards the region's entries).
                batch.set_snapshot(region_id, st.applied_index, st.applied_term);
                batch.set_conf_state(region_id, st.conf_state.clone());
                batch.set_region_meta(region_id, st.meta.clone());
                let mut hs = rs.hard_state;
                hs.commit = st.applied_index;
                hs.term = hs.term.max(st.applied_term);
                batch.set_hard_state(region_id, hs);
            } else if rs.hard_state.commit < st.applied_index.max(first - 1) {
                let mut hs = rs.hard_state;
                hs.commit = st.applied_index.max(first - 1);
                hs.term = hs.term.max(st.applied_term);
                batch.set_hard_state(region_id, hs);
            }
        }
        found.push(Found {
            meta,
            origin: PeerOrigin::Initialized {
                applied_index: st.applied_index,
            },
        });
    }
    for region_id in log_regions {
        if state.region_state(region_id).is_some() {
            continue;
        }
        let rl = log.region_log(region_id);
        let Some(meta) = rl.region_meta().and_then(|b| RegionMeta::decode(&b).ok()) else {
            continue;
        };
        if meta.peer_on_store(store_id).is_none() {
            // The last metadata this store recorded no longer has it: its peer was removed.
            found.push(Found {
                meta,
                origin: PeerOrigin::Removed,
            });
            continue;
        }
        if rl.refusal().is_some() {
            continue;
        }
        let Ok(rs) = rl.initial_state() else {
            continue;
        };
        let origin = if rs.conf_state.voters.is_empty() && rs.conf_state.learners.is_empty() {
            PeerOrigin::Uninitialized
        } else {
            // A split child's log starts right after the init index and is compacted only
            // after a checkpoint that holds the child. A compacted log without a state-store
            // region is a peer that was destroyed (its removal checkpointed, the log's last
            // metadata not yet durable): it must not start again.
            let first = rl.first_index().unwrap_or(1);
            if first > REGION_INIT_INDEX + 1 {
                info!(
                    region_id,
                    first_index = first,
                    "log of a destroyed peer; not starting it"
                );
                found.push(Found {
                    meta,
                    origin: PeerOrigin::Removed,
                });
                continue;
            }
            PeerOrigin::AwaitingSplit
        };
        found.push(Found { meta, origin });
    }
    if !batch.is_empty() {
        log.write_sync(batch)?;
    }
    for region_id in removed {
        state.remove_region(region_id)?;
    }
    Ok(found)
}

/// Creates the initial regions of a new cluster in an empty store: state first (made durable
/// by a checkpoint), then the logs. A crash between the two is repaired by [`reconcile`].
fn bootstrap(log: &mut LogStore, state: &mut StateStore, regions: &[RegionMeta]) -> Result<()> {
    for meta in regions {
        state.create_region(init_region_state(meta))?;
    }
    state.checkpoint()?;
    let mut batch = LogBatch::new();
    for meta in regions {
        init_region_records(&mut batch, meta);
    }
    log.write_sync(batch)?;
    Ok(())
}

impl Store {
    /// Opens the store on `opts.path` and starts its threads. `initial_regions`: the regions
    /// of a new cluster, created if this store has none yet (only their peers on this store
    /// matter). Messages go out through `transport`; give [`Store::router`] to the transport
    /// for messages coming in.
    pub fn open(
        opts: StoreOptions,
        transport: Arc<dyn Transport>,
        initial_regions: &[RegionMeta],
    ) -> Result<Store> {
        let (mut store, driver) = Store::open_parts(opts, transport, initial_regions, false)?;
        let store_id = store.store_id;
        let join = std::thread::Builder::new()
            .name(format!("basalt-raft-{store_id}"))
            .spawn(move || {
                let span = info_span!("store", store_id);
                let _g = span.enter();
                driver.run()
            })
            .map_err(|source| EngineError::ThreadSpawn {
                thread: "raft loop",
                source,
            })?;
        store.ending = Some(Ending::Thread(join));
        Ok(store)
    }

    /// Opens the store like [`Store::open`], but leaves its loop to the caller: the
    /// [`StoreDriver`] must be turned (see [`StoreDriver::turn`]) until it says it has
    /// finished, then [`StoreDriver::finish`]ed. A node whose network runtime is one thread
    /// runs it as a task there, so a message or request goes from the network to Raft and
    /// back without a thread switch.
    ///
    /// With the `uring` backend the loop also drives the log itself (no writer thread): the
    /// caller must then turn the driver whenever [`StoreDriver::take_log_completion_fd`] is
    /// readable, as well as on its [`LoopWake`] and its ticks.
    pub fn open_driven(
        opts: StoreOptions,
        transport: Arc<dyn Transport>,
        initial_regions: &[RegionMeta],
    ) -> Result<(Store, StoreDriver)> {
        Store::open_parts(opts, transport, initial_regions, true)
    }

    /// Opens the store and its workers. `on_runtime`: the loop will run as a task of an async
    /// runtime, so it drives the log itself when the backend can wake the runtime (see
    /// [`InlineSink`]; else a writer thread does) and applies small tasks itself (see
    /// [`crate::state::worker::InlineApply`]).
    fn open_parts(
        mut opts: StoreOptions,
        transport: Arc<dyn Transport>,
        initial_regions: &[RegionMeta],
        on_runtime: bool,
    ) -> Result<(Store, StoreDriver)> {
        let handles = open_store(&opts.path, &opts.open)?;
        let (mut log, report) = LogStore::open(handles.log, opts.log.clone())?;
        let sb = *log.superblock();
        let store_id = sb.store_id;
        opts.store.store_id = store_id;
        opts.store.validate()?;
        if opts.store.rng_seed == 0 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            opts.store.rng_seed = nanos ^ store_id;
        }
        let span = info_span!("store", store_id);
        let _g = span.enter();
        info!(path = %opts.path.display(), scanned_bytes = report.bytes_scanned, elapsed_ms = report.elapsed.as_millis() as u64, "log recovered");
        let mut state = StateStore::open(
            handles.state_write,
            handles.state_read,
            &sb,
            opts.state.clone(),
        )?;
        let found = prepare(&mut log, &mut state, initial_regions)?;
        let wake = LoopWake::new();
        let log_fd = if on_runtime {
            log.completion_fd()?
        } else {
            None
        };
        let (done_tx, done_rx) = unbounded();
        let sink: Box<dyn LogSink> = if log_fd.is_some() {
            Box::new(InlineSink::new(log, Arc::clone(&transport)))
        } else {
            Box::new(WriterSink {
                writer: LogWriterThread::spawn(log)?,
                done: done_tx,
                wake: Arc::clone(&wake),
                transport: Arc::clone(&transport),
            })
        };
        let apply = ApplyWorker::spawn_waking(state, opts.apply.clone(), Arc::clone(&wake))?;
        let snapshots = SnapshotWorker::spawn_waking(
            opts.snapshot.clone(),
            apply.sender(),
            None,
            Arc::clone(&wake),
        )?;
        let metrics = Arc::new(StoreMetrics::new());
        let (tx, rx) = bounded(opts.event_queue_len_max);
        let mut lp = StoreLoop::new(
            opts.store.clone(),
            transport,
            sink,
            apply.sender(),
            snapshots.handle(),
            Arc::clone(&metrics),
        );
        if let Some(inline) = apply.inline().filter(|_| on_runtime) {
            lp.set_inline_apply(inline);
        }
        let single = |m: &RegionMeta| m.peers.len() == 1;
        for f in found {
            let campaign = single(&f.meta);
            lp.add_peer(f.meta, f.origin, campaign)?;
        }
        info!(regions = lp.region_count(), "store open");
        let router = StoreRouter::with_wake(store_id, tx, Arc::clone(&wake));
        let tick = opts.store.tick_interval;
        let (ended_tx, ended_rx) = bounded(1);
        let driver = StoreDriver {
            store_id,
            lp: Some(lp),
            apply_events: apply.events().clone(),
            snapshot_events: snapshots.events().clone(),
            apply: Some(apply),
            snapshots: Some(snapshots),
            rx,
            done_rx,
            log_fd,
            wake,
            tick,
            next_tick: Instant::now() + tick,
            ended: ended_tx,
            log_unwatched: false,
        };
        let store = Store {
            store_id,
            router,
            metrics,
            ending: Some(Ending::Driven(ended_rx)),
        };
        Ok((store, driver))
    }

    /// The store's id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The handle that posts events to the loop.
    pub fn router(&self) -> StoreRouter {
        self.router.clone()
    }

    /// The store's metrics.
    pub fn metrics(&self) -> Arc<StoreMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Stops the loop and the workers; the state store writes a final checkpoint.
    pub fn stop(mut self) -> Result<()> {
        self.router.stop();
        match self.ending.take() {
            Some(e) => e.wait(),
            None => Ok(()),
        }
    }

    /// Stops the store as a killed process would: no final checkpoint; what survives is the
    /// last checkpoint and the log. For crash-recovery tests.
    pub fn crash(mut self) {
        self.router.halt();
        if let Some(e) = self.ending.take() {
            let _ = e.wait();
        }
    }

    /// Path of a store's device, for messages.
    pub fn describe(path: &Path) -> String {
        path.display().to_string()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(e) = self.ending.take() {
            self.router.stop();
            let _ = e.wait();
        }
    }
}

/// What the caller of [`StoreDriver::turn`] does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Turn again when the store's [`LoopWake`] fires, or after this long (the next tick).
    Wait(Duration),
    /// The loop has stopped: call [`StoreDriver::finish`] (it may block; not on a runtime).
    Finished,
}

/// A store's raft loop, turned by whoever runs it: its own thread ([`Store::open`]) or a task
/// of the node's network runtime ([`Store::open_driven`]). Each turn takes everything that is
/// ready (bounded, so ticks stay on time under load), ticks when due, then flushes once, so
/// many events share one log write. A turn never waits for anything but a full queue of the
/// log writer or the apply worker (back-pressure). Dropped unfinished, the store halts as a
/// crash would (no final checkpoint) and [`Store::stop`] reports the loop gone.
pub struct StoreDriver {
    store_id: u64,
    lp: Option<StoreLoop>,
    rx: Receiver<StoreEvent>,
    done_rx: Receiver<StoreEvent>,
    /// The log device's completion eventfd while nobody took it (see
    /// [`StoreDriver::take_log_completion_fd`]).
    log_fd: Option<std::os::fd::OwnedFd>,
    apply: Option<ApplyWorker>,
    snapshots: Option<SnapshotWorker>,
    apply_events: Receiver<ApplyEvent>,
    snapshot_events: Receiver<SnapshotEvent>,
    wake: Arc<LoopWake>,
    tick: Duration,
    next_tick: Instant,
    ended: Sender<Result<()>>,
    /// The caller cannot watch the log's completion eventfd (see
    /// [`StoreDriver::log_completions_unwatched`]).
    log_unwatched: bool,
}

/// The longest a turn asks its caller to wait while a log write is in flight and nobody
/// watches the device's completions (see [`StoreDriver::log_completions_unwatched`]): the
/// resolution of tokio's timer.
pub const UNWATCHED_LOG_POLL: Duration = Duration::from_millis(1);

impl StoreDriver {
    /// The store's id.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The wake every input of the loop fires after it sends; set its hook before the first
    /// turn.
    pub fn wake(&self) -> Arc<LoopWake> {
        Arc::clone(&self.wake)
    }

    /// When the loop drives the log itself (see [`Store::open_driven`]): an eventfd that
    /// becomes readable when the log device posts a completion. Read it (that resets it), then
    /// turn the driver. `None` when a writer thread drives the log (its completions fire the
    /// [`LoopWake`]), or once taken.
    pub fn take_log_completion_fd(&mut self) -> Option<std::os::fd::OwnedFd> {
        self.log_fd.take()
    }

    /// The caller took the log's completion eventfd ([`Self::take_log_completion_fd`]) but
    /// cannot watch it (its reactor refused it, say). Without the eventfd, a completion would
    /// be seen at the next tick only (100 ms by default), and every commit would wait that
    /// long; from now on, a turn that leaves a log write in flight asks to be turned again
    /// within [`UNWATCHED_LOG_POLL`], so the loop polls the device that often while it has
    /// writes on it, and not at all while it has none.
    pub fn log_completions_unwatched(&mut self) {
        self.log_unwatched = true;
    }

    /// When the loop drives the log itself: puts the batches the last turn appended on the
    /// device. Call it after every turn, once the messages the turn queued have been sent
    /// (on a runtime: after yielding once, so the transport's tasks run first). Without it,
    /// the writes start at the next turn. Does nothing when a writer thread drives the log.
    pub fn start_log_writes(&mut self) {
        if let Some(lp) = self.lp.as_mut() {
            lp.start_log();
        }
    }

    /// Whether the last turn appended log batches that [`Self::start_log_writes`] would put on
    /// the device (always `false` when a writer thread drives the log). A runtime skips its
    /// yield before starting them when there are none.
    pub fn has_log_writes_to_start(&self) -> bool {
        self.lp
            .as_ref()
            .is_some_and(StoreLoop::has_log_writes_to_start)
    }

    /// Whether a log write of the loop is on the device, not yet reported durable.
    pub fn has_log_writes_in_flight(&self) -> bool {
        self.lp
            .as_ref()
            .is_some_and(StoreLoop::has_log_writes_in_flight)
    }

    /// One turn of the loop; see [`Turn`].
    pub fn turn(&mut self) -> Turn {
        let Some(lp) = self.lp.as_mut() else {
            return Turn::Finished;
        };
        for ev in lp.reap_log(false) {
            lp.handle_event(ev);
        }
        for _ in 0..4096 {
            let mut any = false;
            if let Ok(ev) = self.done_rx.try_recv() {
                lp.handle_event(ev);
                any = true;
            }
            if let Ok(ev) = self.apply_events.try_recv() {
                lp.handle_apply_event(ev);
                any = true;
            }
            if let Ok(ev) = self.snapshot_events.try_recv() {
                lp.handle_snapshot_event(ev);
                any = true;
            }
            match self.rx.try_recv() {
                Ok(ev) => {
                    lp.handle_event(ev);
                    any = true;
                }
                Err(TryRecvError::Disconnected) => lp.handle_event(StoreEvent::Stop),
                Err(TryRecvError::Empty) => {}
            }
            if !any {
                break;
            }
        }
        let now = Instant::now();
        if now >= self.next_tick {
            lp.handle_tick();
            self.next_tick += self.tick;
            if self.next_tick < now {
                self.next_tick = now + self.tick;
            }
        }
        if lp.is_halted() {
            return Turn::Finished;
        }
        lp.flush();
        if lp.is_stopping() {
            return Turn::Finished;
        }
        let until_tick = self.next_tick.saturating_duration_since(Instant::now());
        if self.log_unwatched && lp.has_log_writes_in_flight() {
            return Turn::Wait(until_tick.min(UNWATCHED_LOG_POLL));
        }
        Turn::Wait(until_tick)
    }

    /// Runs the loop on the calling thread until it stops, blocking on its inputs in between.
    fn run(mut self) -> Result<()> {
        while let Turn::Wait(timeout) = self.turn() {
            self.wait(timeout);
        }
        // On its own thread, the outcome is the thread's (nobody waits on `ended`).
        self.end()
    }

    /// Waits for any input (or `timeout`) and handles the one that arrived; the next turn
    /// takes whatever else is ready.
    fn wait(&mut self, timeout: Duration) {
        let Some(lp) = self.lp.as_mut() else {
            return;
        };
        select! {
            recv(self.done_rx) -> ev => if let Ok(ev) = ev { lp.handle_event(ev) },
            recv(self.rx) -> ev => match ev {
                Ok(ev) => lp.handle_event(ev),
                Err(_) => lp.handle_event(StoreEvent::Stop),
            },
            recv(self.apply_events) -> ev => if let Ok(ev) = ev { lp.handle_apply_event(ev) },
            recv(self.snapshot_events) -> ev => if let Ok(ev) = ev { lp.handle_snapshot_event(ev) },
            default(timeout) => {},
        }
    }

    /// Ends the loop once [`StoreDriver::turn`] said [`Turn::Finished`]: lets the log finish
    /// what is in flight (so acknowledged Readies are durable and answered), stops the workers
    /// (a final checkpoint, unless the store halted) and reports to [`Store::stop`]. Blocks
    /// for as long as that takes: call it from a thread that may block.
    pub fn finish(mut self) {
        let r = self.end();
        let _ = self.ended.send(r);
    }

    /// What [`StoreDriver::finish`] does, returning the outcome.
    fn end(&mut self) -> Result<()> {
        let Some(mut lp) = self.lp.take() else {
            return Ok(());
        };
        let (Some(apply), Some(snapshots)) = (self.apply.take(), self.snapshots.take()) else {
            return Ok(());
        };
        if lp.is_halted() {
            drop(snapshots);
            apply.halt();
            return Ok(());
        }
        // Let the log finish what is in flight, so acknowledged Readies are durable and answered.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lp.is_idle() && Instant::now() < deadline && lp.failure().is_none() {
            let reaped = lp.reap_log(true);
            if reaped.is_empty() {
                if let Ok(ev) = self.done_rx.recv_timeout(Duration::from_millis(50)) {
                    lp.handle_event(ev);
                }
            }
            for ev in reaped {
                lp.handle_event(ev);
            }
            while let Ok(ev) = self.apply_events.try_recv() {
                lp.handle_apply_event(ev);
            }
            lp.flush();
        }
        lp.fail_all_pending();
        drop(snapshots);
        // Drain events while the apply worker finishes its queue and the final checkpoint.
        let stopper = std::thread::spawn(move || apply.stop());
        while !stopper.is_finished() {
            let _ = self.apply_events.recv_timeout(Duration::from_millis(20));
        }
        let r = stopper
            .join()
            .map_err(|_| EngineError::WorkerStopped { worker: "apply" })?;
        drop(lp);
        r.map(|_| ())
    }
}

impl Drop for StoreDriver {
    fn drop(&mut self) {
        // Dropped unfinished (its runtime went away): halt as a crash would, the snapshot
        // worker first (it sends to the apply worker).
        drop(self.snapshots.take());
        if let Some(apply) = self.apply.take() {
            apply.halt();
        }
    }
}

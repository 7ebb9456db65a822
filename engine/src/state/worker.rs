//! The state store's threads: [`ApplyWorker`] owns the [`StateStore`] and applies committed
//! entries; [`SnapshotWorker`] builds region snapshots from frozen views and relays received
//! ones to the apply worker for installation.
//!
//! # Apply worker
//! Takes [`ApplyRequest`]s from a bounded channel and answers with [`ApplyEvent`]s. Entries of
//! a region are applied in index order: an entry at or below the region's applied index is
//! skipped (a replay after restart), one beyond `applied + 1` is refused as a gap. A normal
//! entry with data is decoded as a [`Command`] and applied atomically with its index (at most
//! once per client and sequence: a retry answers its first results or
//! [`CommandError::Duplicate`], see [`super::session`]); an empty
//! entry or a conf change only advances the applied index (and records the conf state the owner
//! computed for it, see [`ApplyTask::conf_states`]). A command that does not decode is applied
//! as a no-op (every replica sees the same bytes, so they all agree) and reported as refused.
//!
//! Between two batches of requests the worker runs one bounded step of background work: a
//! checkpoint step (a checkpoint starts once `checkpoint_log_bytes` of entry data, or as many
//! bytes as the last checkpoint wrote, were applied since the last one, and on stop) or a
//! compaction step. So no request waits behind more than one
//! step. Each finished checkpoint is reported as [`ApplyEvent::CheckpointDone`]: the owner may
//! then compact the regions' logs up to the indexes it lists.
//!
//! A split is its own request ([`ApplyRequest::Split`], the parent's split entry), ordered with
//! the region's entries and answered with [`ApplyEvent::Split`]; metadata that changes with an
//! entry (conf changes) is recorded with it through [`ApplyTask::metas`].
//!
//! Any error of the store is fatal: the worker reports [`ApplyEvent::Failed`] and stops (the
//! store latches itself after an I/O error; the owner reopens it).
//!
//! A store loop driven on the network thread also applies small write tasks itself, through
//! an [`InlineApply`], while the worker waits for work: the same code on the loop's thread,
//! under the lock the worker holds for each request, and only when nothing sent before is
//! still queued. That takes the hand-off to this thread and back off every commit (see
//! [`InlineApply`] for when a task still goes to the worker).
//!
//! # Snapshot worker
//! Takes [`SnapshotRequest`]s (`try_send`: a requester never waits). A build freezes the region
//! through the apply worker (cheap: a clone of the region's index), then cuts the frozen view
//! into chunks on the snapshot thread; the result is published in a [`SnapshotHandle`], which
//! [`super::storage::RegionStorage`] consults. An install verifies each chunk's CRC on the
//! snapshot thread and hands it to the apply worker, which feeds its [`SnapshotReceiver`] (the
//! store's install switches the region in atomically at the end).
//!
//! # The owner's side
//! - Send with `try_send` from the store loop (the loop never waits); a full queue is back
//!   pressure. Keep draining [`ApplyEvent`]s: the worker waits when its event queue is full, so
//!   an owner that blocks sending requests while not reading events can deadlock with it.
//! - On [`ApplyEvent::CheckpointDone`], compact each listed region's log up to its index.
//! - A region's split entry goes as [`ApplyRequest::Split`] between the [`ApplyRequest::Apply`]
//!   tasks of the entries before and after it (never inside a task: there it would be applied
//!   as an undecodable no-op). After a restart, replay sends it again; the store answers
//!   [`SplitOutcome::AlreadyApplied`] if its checkpoint already had it. On
//!   [`ApplyEvent::Split`] with [`SplitOutcome::Moved`], create the child's peer (its log
//!   starts after the child state's applied index).
//! - On [`SnapshotEvent::Installed`], record the snapshot in the log
//!   (`LogBatch::set_snapshot(region, index, term)`) and continue applying from `index + 1`.
//! - The bound on one step has two exceptions: the last chunk of an install runs the store's
//!   `install_finish` (a whole checkpoint), and so does stopping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Select, Sender, TryRecvError};
use raftlog::{ConfState, Entry, EntryType};
use tracing::{debug, warn};

use super::command::{Command, CommandError, Op, OpResult};
use super::snapshot::{Chunk, ReceiveProgress, SnapshotError, SnapshotMeta, SnapshotReceiver};
use super::split::SplitOutcome;
use super::{CheckpointInfo, FrozenRegion, InstallId, RegionState, StateStore};
use crate::error::{EngineError, Result};
use crate::layout::MIB;
use crate::store::LoopWake;

/// The error of a call to a stopped apply worker.
pub(crate) const APPLY_STOPPED: EngineError = EngineError::WorkerStopped { worker: "apply" };

/// Options of the [`ApplyWorker`].
#[derive(Clone, Debug)]
pub struct ApplyConfig {
    /// Start a checkpoint once this many bytes of entry data were applied since the last one,
    /// or as many as the last checkpoint wrote if that is more (up to
    /// [`Self::checkpoint_log_bytes_max`]). Default 64 MiB: restart replays little of the log,
    /// and a small store's checkpoint is amortised over many applies. A checkpoint writes the
    /// whole index (466 MB at 10 million keys), so a fixed trigger would make a large store
    /// write its index again every 64 MiB of applied data; growing the trigger with the last
    /// checkpoint keeps the bytes checkpoints write at most the bytes applied.
    pub checkpoint_log_bytes: u64,
    /// The most the trigger grows to. Default 1 GiB: bounds the log a restart replays (and the
    /// log the ring must hold between checkpoints; the owner may also ask for a checkpoint with
    /// [`ApplyRequest::Checkpoint`] when its log fills).
    pub checkpoint_log_bytes_max: u64,
    /// Bytes one checkpoint step may write before the worker looks at its queue again. Default
    /// 1 MiB: about a millisecond of device time, the bound on how long an apply waits.
    pub checkpoint_step_bytes: u64,
    /// Requests handled between two background steps. Default 64: background work keeps up
    /// under load while each request still waits for at most one step.
    pub requests_per_step_max: usize,
    /// Capacity of the request and event channels. Default 4096.
    pub queue_len_max: usize,
}

impl Default for ApplyConfig {
    fn default() -> ApplyConfig {
        ApplyConfig {
            checkpoint_log_bytes: 64 * MIB,
            checkpoint_log_bytes_max: 1024 * MIB,
            checkpoint_step_bytes: MIB,
            requests_per_step_max: 64,
            queue_len_max: 4096,
        }
    }
}

impl ApplyConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str| {
            Err(EngineError::InvalidConfig {
                key,
                reason: "must be positive".into(),
            })
        };
        if self.checkpoint_log_bytes == 0 {
            return bad("checkpoint_log_bytes");
        }
        if self.checkpoint_log_bytes_max < self.checkpoint_log_bytes {
            return Err(EngineError::InvalidConfig {
                key: "checkpoint_log_bytes_max",
                reason: format!(
                    "{} is below checkpoint_log_bytes {}",
                    self.checkpoint_log_bytes_max, self.checkpoint_log_bytes
                ),
            });
        }
        if self.checkpoint_step_bytes == 0 {
            return bad("checkpoint_step_bytes");
        }
        if self.requests_per_step_max == 0 {
            return bad("requests_per_step_max");
        }
        if self.queue_len_max == 0 {
            return bad("queue_len_max");
        }
        Ok(())
    }
}

/// Answers the client that proposed the entry at `index` once the entry is applied, from the
/// apply worker itself: the raft loop learns of applied indexes later, but the answer does not
/// wait for that (one thread wake-up less between commit and reply).
pub struct Responder {
    /// The entry's index.
    pub index: u64,
    answer: Option<AnswerFn>,
}

/// What a [`Responder`] calls with its entry's result (`None`: no result).
pub type AnswerFn = Box<dyn FnOnce(Option<&ApplyResult>) + Send>;

impl Responder {
    /// A responder for the entry at `index`: `answer` is called exactly once, with the entry's
    /// result, or with `None` when it was applied without one or not applied at all (the
    /// responder dropped unused).
    pub fn new(index: u64, answer: AnswerFn) -> Responder {
        Responder {
            index,
            answer: Some(answer),
        }
    }

    /// Calls the answer with `result`.
    pub fn answer(mut self, result: Option<&ApplyResult>) {
        if let Some(a) = self.answer.take() {
            a(result);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(a) = self.answer.take() {
            a(None);
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Committed entries of one region, in index order.
#[derive(Debug, Default)]
pub struct ApplyTask {
    /// The region.
    pub region_id: u64,
    /// Consecutive committed entries.
    pub entries: Vec<Entry>,
    /// For each conf-change entry among `entries`: its index and the configuration after it
    /// (what `RawNode::apply_conf_change` returned), recorded atomically with its index.
    pub conf_states: Vec<(u64, ConfState)>,
    /// For each entry among `entries` that changes the region's metadata (a conf change bumps
    /// the epoch's conf version): its index and the new metadata, recorded atomically with its
    /// index (a checkpoint never holds the index without the metadata, which
    /// [`ApplyRequest::SetMeta`], a request of its own, cannot promise).
    pub metas: Vec<(u64, Bytes)>,
    /// Who to answer once an entry is applied, in index order (entries proposed here).
    pub responders: Vec<Responder>,
}

impl ApplyTask {
    /// A task without conf changes.
    pub fn new(region_id: u64, entries: Vec<Entry>) -> ApplyTask {
        ApplyTask {
            region_id,
            entries,
            conf_states: Vec::new(),
            metas: Vec::new(),
            responders: Vec::new(),
        }
    }
}

/// A reply channel of a request.
pub type Reply<T> = Sender<T>;

/// What the apply worker is asked to do.
#[non_exhaustive]
pub enum ApplyRequest {
    /// Apply committed entries.
    Apply(ApplyTask),
    /// Create an empty region.
    CreateRegion(RegionState),
    /// Remove a region and its data.
    RemoveRegion(u64),
    /// Split a region at one of its log indexes (the split entry itself: send the region's
    /// entries before it as [`ApplyRequest::Apply`], then this, then the entries after it).
    /// Handled in order with the region's other requests; answered with [`ApplyEvent::Split`].
    /// Runs [`StateStore::split_region`]: replay-safe (a split at or below the applied index is
    /// reported as [`SplitOutcome::AlreadyApplied`]); one beyond `applied + 1` is refused as a
    /// gap ([`ApplyEvent::Refused`]).
    Split {
        /// The parent region.
        region_id: u64,
        /// Index of the split entry in the parent's log.
        index: u64,
        /// Its term.
        term: u64,
        /// Keys from this one on move to the child.
        split_key: Bytes,
        /// The new region's state (applied index and term, configuration, metadata).
        child: RegionState,
        /// The parent's metadata after the split (its shrunken key range, new epoch).
        parent_meta: Bytes,
    },
    /// Replace a region's opaque metadata now (not tied to an index: metadata that changes
    /// with an entry goes in [`ApplyTask::metas`] or [`ApplyRequest::Split`]).
    SetMeta {
        /// The region.
        region_id: u64,
        /// The metadata.
        meta: Bytes,
    },
    /// Read a key.
    Get {
        /// The region.
        region_id: u64,
        /// The key.
        key: Bytes,
        /// Where the answer goes.
        reply: Reply<Result<Option<Bytes>>>,
    },
    /// Read keys in `start..end`, at most `limit`.
    Scan {
        /// The region.
        region_id: u64,
        /// First key.
        start: Bytes,
        /// End (exclusive; `None`: to the region's end).
        end: Option<Bytes>,
        /// Most entries returned.
        limit: usize,
        /// Where the answer goes.
        reply: Reply<Result<Vec<(Bytes, Bytes)>>>,
    },
    /// A read answered through a callback (the raft loop's linearizable reads: queued behind
    /// every entry dispatched before it, so it sees at least the read index).
    Read {
        /// The region.
        region_id: u64,
        /// What to read.
        request: ReadRequest,
        /// Called with the answer on the apply thread; must not block.
        reply: ReadReply,
    },
    /// Freeze a region for a snapshot.
    Freeze {
        /// The region.
        region_id: u64,
        /// Where the frozen view goes.
        reply: Reply<Result<FrozenRegion>>,
    },
    /// One chunk of a snapshot being installed (already CRC-checked by the snapshot worker).
    InstallChunk {
        /// The snapshot.
        meta: SnapshotMeta,
        /// The chunk.
        chunk: Bytes,
        /// The outcome.
        reply: Reply<std::result::Result<InstallProgress, SnapshotError>>,
    },
    /// Abandon the install of a region's snapshot (the old state stands).
    AbortInstall {
        /// The region.
        region_id: u64,
    },
    /// Start a checkpoint now (if none is running).
    Checkpoint,
    /// Nothing of its own: wakes the worker for its background work (checkpoint, compaction)
    /// after tasks applied on the loop's thread (see [`InlineApply`]).
    Background,
    /// Stop at once, without the final checkpoint (what a killed process leaves behind: the
    /// state of the last checkpoint, and the log). Sent by [`ApplyWorker::halt`].
    Halt,
    /// Stop once the requests queued before this one are handled (sent by
    /// [`ApplyWorker::stop`] and on drop, so the worker stops even while other senders, such
    /// as a snapshot worker's, are still connected).
    Stop,
}

/// A read of [`ApplyRequest::Read`].
#[derive(Clone, Debug)]
pub enum ReadRequest {
    /// One key.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Keys in `start..end` (`None`: to the region's end), at most `limit`.
    Scan {
        /// First key.
        start: Bytes,
        /// End (exclusive).
        end: Option<Bytes>,
        /// Most rows.
        limit: usize,
    },
}

/// The answer to a [`ReadRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutput {
    /// A get's value.
    Value(Option<Bytes>),
    /// A scan's rows in key order.
    Rows(Vec<(Bytes, Bytes)>),
}

/// Where a [`ApplyRequest::Read`]'s answer goes.
pub type ReadReply = Box<dyn FnOnce(Result<ReadOutput>) + Send>;

/// Progress of an install, as the apply worker reports it to the snapshot worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallProgress {
    /// Accepted; the stream continues with this chunk.
    More {
        /// Next chunk expected.
        next_chunk_no: u32,
    },
    /// Installed and durable.
    Installed(CheckpointInfo),
}

/// The outcome of one applied entry that carried a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyResult {
    /// The region.
    pub region_id: u64,
    /// The entry's index.
    pub index: u64,
    /// The entry's term (a client matches it with the term it proposed in).
    pub term: u64,
    /// The command's client and sequence (0, 0 if it did not decode).
    pub client: (u64, u64),
    /// One result per op, or why the command was not applied (the entry was applied as a
    /// no-op): its data is not a command, or it repeats one of its client's applied commands
    /// ([`CommandError::Duplicate`]; a retry of the last one answers `Ok` with the first
    /// time's results instead when they were kept, see [`super::session`]).
    pub results: std::result::Result<Vec<OpResult>, CommandError>,
}

/// What the apply worker reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApplyEvent {
    /// A task was applied.
    Applied {
        /// The region.
        region_id: u64,
        /// Applied index now (for `advance_apply_to`).
        applied_index: u64,
        /// Its term.
        applied_term: u64,
        /// Outcomes of the entries that carried commands.
        results: Vec<ApplyResult>,
    },
    /// A split request was handled. Like [`ApplyEvent::Applied`] for the parent (advance its
    /// applied index to `applied_index`); on [`SplitOutcome::Moved`] the child now exists in
    /// the store with the state given in the request (start its peer); on
    /// [`SplitOutcome::AlreadyApplied`] nothing changed.
    Split {
        /// The parent region.
        region_id: u64,
        /// The parent's applied index now (the split's index, or more for a replay).
        applied_index: u64,
        /// Its term.
        applied_term: u64,
        /// The new region.
        child_region_id: u64,
        /// What the split did.
        outcome: SplitOutcome,
    },
    /// A checkpoint is durable: each listed region's log may be compacted up to its index.
    CheckpointDone(CheckpointInfo),
    /// A task was refused (entries beyond `applied + 1`); nothing of it was applied.
    Refused {
        /// The region.
        region_id: u64,
        /// Why.
        error: EngineError,
    },
    /// The store failed; the worker stopped.
    Failed(EngineError),
}

/// The apply thread. Dropping it stops the thread (with a final checkpoint) and waits for it.
pub struct ApplyWorker {
    tx: Option<Sender<ApplyRequest>>,
    events: Receiver<ApplyEvent>,
    join: Option<JoinHandle<Result<StateStore>>>,
    shared: SharedLoop,
}

/// The worker's state, shared with an [`InlineApply`]. A request leaves the channel only under
/// this lock and is handled before the lock is released, so whoever holds it and finds the
/// channel empty knows that every request sent before has been handled. `None` once the
/// worker has stopped.
type SharedLoop = Arc<Mutex<Option<ApplyLoop>>>;

/// Most entries a task may have to be applied inline (see [`InlineApply`]): the loop's thread
/// spends at most a few microseconds per entry on it. Larger tasks (a burst of commits) go to
/// the worker, which applies them alongside the loop on another core.
pub const INLINE_APPLY_ENTRIES_MAX: usize = 16;

/// Lets the store loop apply a small task on its own thread while the apply worker waits for
/// work: for one write in flight, the answer then leaves from the loop's thread (the network
/// thread, for a loop driven there) as soon as the entry is applied, with no hand-off to the
/// worker and back: two thread wake-ups less between commit and reply on the leader, and two
/// less per commit on each follower.
///
/// A task is applied here only when nothing sent to the worker before it is still waiting
/// (the channel is empty under the lock, see [`SharedLoop`]), so requests stay in order; when
/// the worker is between steps (the lock is free: a checkpoint step in progress sends the task
/// to the worker instead); when it holds only puts and deletes of at most
/// [`INLINE_APPLY_ENTRIES_MAX`] entries (no compare-and-swap, which may read a value from the
/// device, and no range delete, whose cost has no bound); and when the event channel has room
/// (an inline apply never waits). Events and answers are exactly the worker's: the same code
/// runs, on the caller's thread. The worker keeps the background work: a task applied inline
/// that makes a checkpoint due asks it for one.
pub struct InlineApply {
    shared: SharedLoop,
    tx: Sender<ApplyRequest>,
    /// The channel the loop sends its requests into, when a relay stands in front of the
    /// worker's own (see [`InlineApply::behind`]).
    upstream: Option<Sender<ApplyRequest>>,
    /// Tasks applied here since the worker was last woken for its background work.
    since_nudge: u32,
}

/// Tasks applied inline between two wake-ups of the worker for its background work
/// (compaction looks for mostly-dead segments after applies): about 25 a second for one write
/// in flight, instead of one per write.
const INLINE_APPLIES_PER_NUDGE: u32 = 64;

impl InlineApply {
    /// Applies `req` on the calling thread if it may be (see [`InlineApply`]) and returns
    /// `None`; otherwise gives it back, to be sent to the worker.
    pub fn apply_here(&mut self, req: ApplyRequest) -> Option<ApplyRequest> {
        let task = match req {
            ApplyRequest::Apply(task) if inline_candidate(&task) && self.nothing_queued() => task,
            other => return Some(other),
        };
        let mut guard = match self.shared.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Some(ApplyRequest::Apply(task)),
        };
        let al = match guard.as_mut() {
            Some(al) if self.nothing_queued() && !al.failed && al.events_have_room() => al,
            _ => return Some(ApplyRequest::Apply(task)),
        };
        if let Err(e) = al.apply_task(task) {
            al.fail_inline(e);
        }
        let checkpoint_due = al.checkpoint_due();
        drop(guard);
        self.since_nudge += 1;
        // A full channel wakes the worker anyway, and it then finds the work due.
        let nudges = self.upstream.as_ref().unwrap_or(&self.tx);
        if checkpoint_due {
            let _ = nudges.try_send(ApplyRequest::Checkpoint);
            self.since_nudge = 0;
        } else if self.since_nudge >= INLINE_APPLIES_PER_NUDGE {
            let _ = nudges.try_send(ApplyRequest::Background);
            self.since_nudge = 0;
        }
        None
    }

    /// For a caller whose requests reach the worker through a relay (`upstream`, a channel the
    /// caller drains into the worker in order, as the store simulator does to keep the worker
    /// from running alongside it): a task is applied here only when the relay is empty too, and
    /// the nudges go through the relay. Without this, a task applied here could overtake one
    /// still waiting in the relay.
    pub fn behind(mut self, upstream: Sender<ApplyRequest>) -> InlineApply {
        self.upstream = Some(upstream);
        self
    }

    /// Whether no request sent before is still waiting, in the worker's channel or the relay.
    fn nothing_queued(&self) -> bool {
        self.tx.is_empty() && self.upstream.as_ref().is_none_or(|u| u.is_empty())
    }
}

/// Whether `task` is small and holds only puts and deletes (see [`InlineApply`]).
fn inline_candidate(task: &ApplyTask) -> bool {
    task.entries.len() <= INLINE_APPLY_ENTRIES_MAX
        && task.entries.iter().all(|e| {
            e.entry_type != EntryType::EntryNormal
                || e.data.is_empty()
                || Command::decode(&e.data).is_ok_and(|c| {
                    c.ops
                        .iter()
                        .all(|op| matches!(op, Op::Put { .. } | Op::Delete { .. }))
                })
        })
}

impl ApplyWorker {
    /// Moves `store` onto a new thread. A failed spawn is an error.
    pub fn spawn(store: StateStore, config: ApplyConfig) -> Result<ApplyWorker> {
        ApplyWorker::spawn_waking(store, config, LoopWake::new())
    }

    /// [`ApplyWorker::spawn`], waking `wake` after every event (for a store loop driven as a
    /// task, see [`LoopWake`]).
    pub fn spawn_waking(
        store: StateStore,
        config: ApplyConfig,
        wake: Arc<LoopWake>,
    ) -> Result<ApplyWorker> {
        config.validate()?;
        let (tx, rx) = bounded(config.queue_len_max);
        let (ev_tx, events) = bounded(config.queue_len_max);
        let shared: SharedLoop =
            Arc::new(Mutex::new(Some(ApplyLoop::new(store, config, ev_tx, wake))));
        let thread_shared = Arc::clone(&shared);
        let join = std::thread::Builder::new()
            .name("basalt-apply".into())
            .spawn(move || run(&thread_shared, &rx))
            .map_err(|source| EngineError::ThreadSpawn {
                thread: "apply worker",
                source,
            })?;
        Ok(ApplyWorker {
            tx: Some(tx),
            events,
            join: Some(join),
            shared,
        })
    }

    /// A handle with which the store loop applies small tasks itself (see [`InlineApply`]).
    pub fn inline(&self) -> Option<InlineApply> {
        Some(InlineApply {
            shared: Arc::clone(&self.shared),
            tx: self.tx.clone()?,
            upstream: None,
            since_nudge: 0,
        })
    }

    /// The request channel (clone it for other senders; `try_send` never waits).
    pub fn sender(&self) -> Sender<ApplyRequest> {
        self.tx.clone().expect("the sender lives until stop")
    }

    /// The event channel.
    pub fn events(&self) -> &Receiver<ApplyEvent> {
        &self.events
    }

    /// Queues a request, waiting while the queue is full.
    pub fn send(&self, req: ApplyRequest) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(APPLY_STOPPED)?;
        tx.send(req).map_err(|_| APPLY_STOPPED)
    }

    /// Stops the worker once every queued request is handled and a final checkpoint is
    /// durable, and hands the store back. The final checkpoint's event is dropped if the event
    /// channel is full (the owner holds the store again and knows what it checkpointed).
    pub fn stop(mut self) -> Result<StateStore> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(ApplyRequest::Stop);
        }
        let join = self.join.take().ok_or(APPLY_STOPPED)?;
        join.join().map_err(|_| APPLY_STOPPED)?
    }
}

impl ApplyWorker {
    /// Stops the worker at once, without the final checkpoint: for tests that kill a store as
    /// a crash would (requests still queued are dropped).
    pub fn halt(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(ApplyRequest::Halt);
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for ApplyWorker {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(ApplyRequest::Stop);
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The apply thread: serves requests until stopped, then finishes (see [`ApplyLoop::finish`]).
fn run(shared: &SharedLoop, rx: &Receiver<ApplyRequest>) -> Result<StateStore> {
    let span = tracing::info_span!("apply_worker");
    let _entered = span.enter();
    let served = serve(shared, rx);
    let taken = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
    match taken {
        Some(al) => al.finish(served),
        None => Err(APPLY_STOPPED),
    }
}

/// Waits for requests without taking them, then takes and handles them under the lock (see
/// [`SharedLoop`]), with a background step after each batch.
fn serve(shared: &SharedLoop, rx: &Receiver<ApplyRequest>) -> Flow {
    loop {
        let busy = {
            let guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                Some(al) if !al.failed => al.busy(),
                _ => return Ok(()),
            }
        };
        if !busy {
            let mut sel = Select::new();
            sel.recv(rx);
            sel.ready();
        }
        let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(al) = guard.as_mut().filter(|al| !al.failed) else {
            return Ok(());
        };
        if !al.serve_step(rx)? {
            return Ok(());
        }
    }
}

/// The apply worker's state.
struct ApplyLoop {
    store: StateStore,
    config: ApplyConfig,
    events: Sender<ApplyEvent>,
    /// Woken after every event.
    wake: Arc<LoopWake>,
    applied_bytes_since_checkpoint: u64,
    /// Bytes the last finished checkpoint wrote (grows the trigger, see [`ApplyConfig`]).
    last_checkpoint_bytes: u64,
    checkpoint_running: bool,
    compaction_wanted: bool,
    installs: HashMap<u64, SnapshotReceiver<InstallId>>,
    /// Set once the request channel closed: the owner may be joining the thread rather than
    /// reading events, so events that do not fit are dropped instead of waited for.
    stopping: bool,
    /// Set by [`ApplyRequest::Halt`]: stop without the final checkpoint.
    halted: bool,
    /// Set when a task applied inline failed (reported there): the worker stops.
    failed: bool,
}

/// Whether the loop goes on after a request.
type Flow = std::result::Result<(), EngineError>;

impl ApplyLoop {
    fn new(
        store: StateStore,
        config: ApplyConfig,
        events: Sender<ApplyEvent>,
        wake: Arc<LoopWake>,
    ) -> ApplyLoop {
        ApplyLoop {
            store,
            config,
            events,
            wake,
            applied_bytes_since_checkpoint: 0,
            last_checkpoint_bytes: 0,
            checkpoint_running: false,
            compaction_wanted: true,
            installs: HashMap::new(),
            stopping: false,
            halted: false,
            failed: false,
        }
    }

    fn emit(&self, e: ApplyEvent) {
        // The owner gone means nobody waits for answers; the work itself still counts.
        if self.stopping {
            let _ = self.events.try_send(e);
        } else {
            let _ = self.events.send(e);
        }
        self.wake.wake();
    }

    /// Room for the events of one task in the event channel.
    fn events_have_room(&self) -> bool {
        self.events
            .capacity()
            .is_none_or(|cap| self.events.len() + 4 <= cap)
    }

    /// Whether background work is pending (the worker then polls its queue instead of waiting).
    fn busy(&self) -> bool {
        self.checkpoint_running || self.compaction_wanted
    }

    /// Whether enough was applied since the last checkpoint to start the next.
    fn checkpoint_due(&self) -> bool {
        !self.checkpoint_running
            && self.applied_bytes_since_checkpoint >= self.checkpoint_trigger_bytes()
    }

    /// A task applied inline failed: reported as the worker reports its own failures; the
    /// worker stops when it next looks.
    fn fail_inline(&mut self, e: EngineError) {
        warn!(error = %e, "inline apply failed");
        self.failed = true;
        self.abort_installs();
        self.emit(ApplyEvent::Failed(e));
    }

    /// What the thread does once [`serve`] returned: the final checkpoint (unless halted or
    /// failed), or the failure's report.
    fn finish(mut self, served: Flow) -> Result<StateStore> {
        self.stopping = true;
        if self.failed {
            return Err(APPLY_STOPPED);
        }
        match served {
            Ok(()) => {}
            Err(e) => {
                warn!(error = %e, "apply worker failed");
                self.abort_installs();
                self.emit(ApplyEvent::Failed(e));
                return Err(APPLY_STOPPED);
            }
        }
        if self.halted {
            return Ok(self.store);
        }
        self.abort_installs();
        if let Err(e) = self.final_checkpoint() {
            warn!(error = %e, "final checkpoint failed");
            self.emit(ApplyEvent::Failed(e));
            return Err(APPLY_STOPPED);
        }
        Ok(self.store)
    }

    /// Handles up to `requests_per_step_max` queued requests, then one background step.
    /// `Ok(false)`: stop (asked to, or every sender is gone).
    fn serve_step(
        &mut self,
        rx: &Receiver<ApplyRequest>,
    ) -> std::result::Result<bool, EngineError> {
        for _ in 0..self.config.requests_per_step_max {
            match rx.try_recv() {
                Ok(ApplyRequest::Stop) | Err(TryRecvError::Disconnected) => return Ok(false),
                Ok(ApplyRequest::Halt) => {
                    self.halted = true;
                    return Ok(false);
                }
                Ok(req) => self.handle(req)?,
                Err(TryRecvError::Empty) => break,
            }
        }
        self.background_step()?;
        Ok(true)
    }

    /// One bounded step of checkpointing or compaction.
    /// Applied bytes that start the next checkpoint.
    fn checkpoint_trigger_bytes(&self) -> u64 {
        let c = &self.config;
        self.last_checkpoint_bytes
            .clamp(c.checkpoint_log_bytes, c.checkpoint_log_bytes_max)
    }

    /// Reports a finished checkpoint.
    fn checkpoint_done(&mut self, info: CheckpointInfo) {
        self.last_checkpoint_bytes = info.bytes;
        self.emit(ApplyEvent::CheckpointDone(info));
    }

    fn background_step(&mut self) -> Flow {
        if !self.checkpoint_running
            && self.applied_bytes_since_checkpoint >= self.checkpoint_trigger_bytes()
        {
            self.store.checkpoint_begin()?;
            self.checkpoint_running = true;
            self.applied_bytes_since_checkpoint = 0;
        }
        if self.checkpoint_running {
            if let Some(info) = self
                .store
                .checkpoint_step(self.config.checkpoint_step_bytes)?
            {
                self.checkpoint_running = false;
                debug!(
                    regions = info.regions.len(),
                    bytes = info.bytes,
                    "checkpoint done"
                );
                self.checkpoint_done(info);
            }
            return Ok(());
        }
        if self.compaction_wanted {
            self.compaction_wanted = self.store.compact_step()?;
        }
        Ok(())
    }

    fn finish_running_checkpoint(&mut self) -> Flow {
        while self.checkpoint_running {
            if let Some(info) = self
                .store
                .checkpoint_step(self.config.checkpoint_step_bytes)?
            {
                self.checkpoint_running = false;
                self.checkpoint_done(info);
            }
        }
        Ok(())
    }

    fn final_checkpoint(&mut self) -> Flow {
        self.finish_running_checkpoint()?;
        let info = self.store.checkpoint()?;
        self.checkpoint_done(info);
        Ok(())
    }

    fn abort_installs(&mut self) {
        for (_, mut rx) in self.installs.drain() {
            rx.abort(&mut self.store);
        }
    }

    fn handle(&mut self, req: ApplyRequest) -> Flow {
        match req {
            ApplyRequest::Apply(task) => self.apply_task(task)?,
            ApplyRequest::CreateRegion(state) => self.store.create_region(state)?,
            ApplyRequest::RemoveRegion(region_id) => {
                // A peer destroyed before its first snapshot has nothing here.
                if self.store.region_state(region_id).is_some() {
                    self.store.remove_region(region_id)?;
                    self.compaction_wanted = true;
                }
            }
            ApplyRequest::Split {
                region_id,
                index,
                term,
                split_key,
                child,
                parent_meta,
            } => self.split(region_id, index, term, &split_key, child, parent_meta)?,
            ApplyRequest::SetMeta { region_id, meta } => self.store.set_meta(region_id, meta)?,
            ApplyRequest::Get {
                region_id,
                key,
                reply,
            } => {
                let _ = reply.send(self.store.get(region_id, &key));
            }
            ApplyRequest::Scan {
                region_id,
                start,
                end,
                limit,
                reply,
            } => {
                let r = self.store.scan(region_id, &start, end.as_deref(), limit);
                let _ = reply.send(r);
            }
            ApplyRequest::Read {
                region_id,
                request,
                reply,
            } => {
                let r = match request {
                    ReadRequest::Get { key } => {
                        self.store.get(region_id, &key).map(ReadOutput::Value)
                    }
                    ReadRequest::Scan { start, end, limit } => self
                        .store
                        .scan(region_id, &start, end.as_deref(), limit)
                        .map(ReadOutput::Rows),
                };
                reply(r);
            }
            ApplyRequest::Freeze { region_id, reply } => {
                let _ = reply.send(self.store.freeze(region_id));
            }
            ApplyRequest::InstallChunk { meta, chunk, reply } => {
                let r = self.install_chunk(meta, &chunk);
                if let Err(SnapshotError::Store(e)) = r {
                    let _ = reply.send(Err(SnapshotError::Closed));
                    return Err(e);
                }
                let _ = reply.send(r);
            }
            ApplyRequest::AbortInstall { region_id } => {
                if let Some(mut rx) = self.installs.remove(&region_id) {
                    rx.abort(&mut self.store);
                }
            }
            ApplyRequest::Checkpoint => {
                if !self.checkpoint_running {
                    self.store.checkpoint_begin()?;
                    self.checkpoint_running = true;
                    self.applied_bytes_since_checkpoint = 0;
                }
            }
            ApplyRequest::Background => {} // the step after this batch does the work
            ApplyRequest::Stop | ApplyRequest::Halt => {} // handled by `serve`
        }
        Ok(())
    }

    fn install_chunk(
        &mut self,
        meta: SnapshotMeta,
        chunk: &Bytes,
    ) -> std::result::Result<InstallProgress, SnapshotError> {
        let region_id = meta.region_id;
        let stale = self
            .installs
            .get(&region_id)
            .is_some_and(|rx| *rx.meta() != meta);
        if stale {
            if let Some(mut old) = self.installs.remove(&region_id) {
                old.abort(&mut self.store);
            }
        }
        self.installs
            .entry(region_id)
            .or_insert_with(|| SnapshotReceiver::new(meta));
        let last = Chunk::verify(chunk).is_ok_and(|(h, _)| h.last);
        if last {
            // The install ends with a checkpoint of its own; let a running one finish first.
            self.finish_running_checkpoint()
                .map_err(SnapshotError::Store)?;
        }
        let rx = self.installs.get_mut(&region_id).expect("inserted above");
        let r = rx.receive(&mut self.store, chunk);
        let closed = rx.is_closed();
        if closed {
            self.installs.remove(&region_id);
        }
        match r? {
            ReceiveProgress::More { next_chunk_no } => Ok(InstallProgress::More { next_chunk_no }),
            ReceiveProgress::Installed(info) => {
                self.compaction_wanted = true;
                self.last_checkpoint_bytes = info.bytes;
                self.applied_bytes_since_checkpoint = 0;
                Ok(InstallProgress::Installed(info))
            }
        }
    }

    fn split(
        &mut self,
        region_id: u64,
        index: u64,
        term: u64,
        split_key: &[u8],
        child: RegionState,
        parent_meta: Bytes,
    ) -> Flow {
        let Some((applied_index, _)) = self.store.applied(region_id) else {
            return Err(EngineError::StateRegionUnknown { region_id });
        };
        if index > applied_index + 1 {
            self.emit(ApplyEvent::Refused {
                region_id,
                error: EngineError::AppendGap {
                    region_id,
                    index,
                    last_index: applied_index,
                },
            });
            return Ok(());
        }
        let child_region_id = child.region_id;
        let outcome =
            self.store
                .split_region(region_id, index, term, split_key, child, parent_meta)?;
        if let SplitOutcome::Moved { bytes, .. } = outcome {
            // A restart before the next checkpoint replays the split and rewrites these bytes
            // again: count them towards the checkpoint trigger.
            self.applied_bytes_since_checkpoint += bytes;
        }
        self.compaction_wanted = true;
        let (applied_index, applied_term) = self
            .store
            .applied(region_id)
            .ok_or(EngineError::StateRegionUnknown { region_id })?;
        self.emit(ApplyEvent::Split {
            region_id,
            applied_index,
            applied_term,
            child_region_id,
            outcome,
        });
        Ok(())
    }

    fn apply_task(&mut self, mut task: ApplyTask) -> Flow {
        let region_id = task.region_id;
        let Some((mut applied, mut applied_term)) = self.store.applied(region_id) else {
            return Err(EngineError::StateRegionUnknown { region_id });
        };
        if let Some(first) = task.entries.iter().find(|e| e.index > applied) {
            if first.index != applied + 1 {
                self.emit(ApplyEvent::Refused {
                    region_id,
                    error: EngineError::AppendGap {
                        region_id,
                        index: first.index,
                        last_index: applied,
                    },
                });
                return Ok(());
            }
        }
        let mut results: Vec<ApplyResult> = Vec::new();
        let mut responders = std::mem::take(&mut task.responders).into_iter().peekable();
        for e in &task.entries {
            if e.index <= applied {
                continue;
            }
            if e.index != applied + 1 {
                // Entries of one task must be consecutive: stop at a hole.
                self.emit(ApplyEvent::Refused {
                    region_id,
                    error: EngineError::AppendGap {
                        region_id,
                        index: e.index,
                        last_index: applied,
                    },
                });
                break;
            }
            let result = self.apply_entry(region_id, e, &task.conf_states)?;
            while let Some(r) = responders.next_if(|r| r.index <= e.index) {
                let applied_here = result.as_ref().filter(|_| r.index == e.index);
                r.answer(applied_here);
            }
            if let Some(r) = result {
                results.push(r);
            }
            if let Some((_, meta)) = task.metas.iter().find(|(i, _)| *i == e.index) {
                self.store.set_meta(region_id, meta.clone())?;
            }
            applied = e.index;
            applied_term = e.term;
            self.applied_bytes_since_checkpoint += e.size_bytes();
        }
        self.compaction_wanted = true;
        self.emit(ApplyEvent::Applied {
            region_id,
            applied_index: applied,
            applied_term,
            results,
        });
        Ok(())
    }

    fn apply_entry(
        &mut self,
        region_id: u64,
        e: &Entry,
        conf_states: &[(u64, ConfState)],
    ) -> std::result::Result<Option<ApplyResult>, EngineError> {
        if e.entry_type != EntryType::EntryNormal {
            if let Some((_, cs)) = conf_states.iter().find(|(i, _)| *i == e.index) {
                self.store.set_conf_state(region_id, cs.clone())?;
            }
            self.store.set_applied(region_id, e.index, e.term)?;
            return Ok(None);
        }
        if e.data.is_empty() {
            self.store.set_applied(region_id, e.index, e.term)?;
            return Ok(None);
        }
        let (client, results) = match Command::decode(&e.data) {
            Ok(cmd) => {
                let outcome = self.store.apply(region_id, e.index, e.term, &cmd)?;
                ((cmd.client_id, cmd.sequence), outcome)
            }
            Err(err) => {
                warn!(region = region_id, index = e.index, error = %err, "entry is not a command");
                self.store.set_applied(region_id, e.index, e.term)?;
                ((0, 0), Err(err))
            }
        };
        Ok(Some(ApplyResult {
            region_id,
            index: e.index,
            term: e.term,
            client,
            results,
        }))
    }
}

mod snapshot_worker;
pub use snapshot_worker::{
    BuildPacer, BuiltSnapshot, SnapshotConfig, SnapshotEvent, SnapshotHandle, SnapshotRequest,
    SnapshotWorker,
};

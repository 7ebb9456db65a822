//! The snapshot worker: builds region snapshots from frozen views (frozen through the apply
//! worker, which owns the store) and relays received snapshots, chunk by chunk, to the apply
//! worker for installation. Requesters never wait: they `try_send` through a
//! [`SnapshotHandle`], and read finished builds from it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tracing::{debug, warn};

use super::{ApplyRequest, InstallProgress, APPLY_STOPPED};
use crate::error::{EngineError, Result};
use crate::layout::MIB;
use crate::state::snapshot::{
    Chunk, SnapshotBuilder, SnapshotError, SnapshotMeta, CHUNK_BYTES_MIN,
};
use crate::state::{CheckpointInfo, FrozenRegion, RegionState};
use crate::store::LoopWake;

/// Options of the [`SnapshotWorker`].
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// Most bytes of a chunk. Default 1 MiB: a QUIC stream moves it in a few round trips, a
    /// receiver verifies and installs it in about a millisecond of apply-thread time.
    pub chunk_bytes_max: usize,
    /// A snapshot up to this size keeps its chunks in memory once built; a larger one keeps its
    /// frozen view instead (pinning its segments until released) and makes each chunk again
    /// when asked. Default 64 MiB: most regions are sent straight from memory, and a large one
    /// costs a second read of the region rather than its size in memory.
    pub memory_bytes_max: u64,
    /// Capacity of the request and event channels. Default 64.
    pub queue_len_max: usize,
}

impl Default for SnapshotConfig {
    fn default() -> SnapshotConfig {
        SnapshotConfig {
            chunk_bytes_max: MIB as usize,
            memory_bytes_max: 64 * MIB,
            queue_len_max: 64,
        }
    }
}

impl SnapshotConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.chunk_bytes_max < CHUNK_BYTES_MIN {
            return Err(EngineError::InvalidConfig {
                key: "chunk_bytes_max",
                reason: format!("{} is below {}", self.chunk_bytes_max, CHUNK_BYTES_MIN),
            });
        }
        if self.queue_len_max == 0 {
            return Err(EngineError::InvalidConfig {
                key: "queue_len_max",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}

/// Called by the snapshot worker before it builds each chunk: a place for rate limiting (and
/// for tests, to hold a build at a known point).
pub trait BuildPacer: Send + Sync {
    /// Chunk `chunk_no` of `region_id`'s snapshot is about to be built.
    fn before_chunk(&self, region_id: u64, chunk_no: u32);
}

/// What the snapshot worker is asked to do.
pub enum SnapshotRequest {
    /// Build a snapshot of a region at its current applied index.
    Build {
        /// The region.
        region_id: u64,
    },
    /// Install a received snapshot; chunks arrive on `chunks` (closing it early aborts).
    Install {
        /// The descriptor from the Raft snapshot.
        meta: SnapshotMeta,
        /// The chunk stream.
        chunks: Receiver<Bytes>,
    },
    /// Stop after the request in hand (sent when the [`SnapshotWorker`] is dropped, so the
    /// thread stops even while handles are held elsewhere; their requests then fail).
    Stop,
}

/// What the snapshot worker reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum SnapshotEvent {
    /// A snapshot is built and published in the [`SnapshotHandle`].
    Built(SnapshotMeta),
    /// A build failed.
    BuildFailed {
        /// The region.
        region_id: u64,
        /// Why.
        error: SnapshotError,
    },
    /// A received snapshot is installed and durable.
    Installed {
        /// The snapshot.
        meta: SnapshotMeta,
        /// The checkpoint the install ended with.
        checkpoint: CheckpointInfo,
    },
    /// An install failed; the region keeps its old state.
    /// A chunk was refused (corrupt, duplicate, out of order) and the install keeps its place:
    /// the sender should resume with chunk `next_chunk_no` on the same stream.
    ChunkRefused {
        /// The snapshot.
        meta: SnapshotMeta,
        /// The chunk the install expects next.
        next_chunk_no: u32,
        /// Why the chunk was refused.
        error: SnapshotError,
    },
    /// An install failed (a fatal error, or the stream closed before the last chunk); the
    /// region keeps its old state.
    InstallFailed {
        /// The snapshot.
        meta: SnapshotMeta,
        /// Why.
        error: SnapshotError,
    },
}

/// Where a built snapshot's chunks come from.
enum ChunkStore {
    /// Kept from the build.
    Memory(Vec<Bytes>),
    /// Made again on demand from the frozen view (which stays pinned): the builder is
    /// deterministic and remembers where each chunk starts, so chunk `n` costs one chunk's reads.
    Regenerate(Box<Mutex<SnapshotBuilder<FrozenRegion>>>),
}

/// A built snapshot: its descriptor, its region state and its chunks.
pub struct BuiltSnapshot {
    /// The descriptor (what Raft carries).
    pub meta: SnapshotMeta,
    /// The region state at the snapshot's index.
    pub state: RegionState,
    chunks: ChunkStore,
}

impl std::fmt::Debug for BuiltSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltSnapshot")
            .field("meta", &self.meta)
            .field("in_memory", &self.in_memory())
            .finish()
    }
}

impl BuiltSnapshot {
    /// A built snapshot over chunks made elsewhere (a [`SnapshotBuilder`] over any
    /// [`crate::state::snapshot::SnapshotSource`]), held in memory: lets transports and
    /// simulators stream real chunks without a state store.
    pub fn from_chunks(
        meta: SnapshotMeta,
        state: RegionState,
        chunks: Vec<Bytes>,
    ) -> BuiltSnapshot {
        BuiltSnapshot {
            meta,
            state,
            chunks: ChunkStore::Memory(chunks),
        }
    }

    /// Whether the chunks are held in memory (else they are rebuilt on demand).
    pub fn in_memory(&self) -> bool {
        matches!(self.chunks, ChunkStore::Memory(_))
    }

    /// Chunk `chunk_no` of the stream (`0..meta.chunk_count`), byte for byte as first built.
    pub fn chunk(&self, chunk_no: u32) -> std::result::Result<Bytes, SnapshotError> {
        let out_of_range = || SnapshotError::Totals {
            what: "chunks",
            expected: u64::from(self.meta.chunk_count),
            found: u64::from(chunk_no) + 1,
        };
        match &self.chunks {
            ChunkStore::Memory(v) => v.get(chunk_no as usize).cloned().ok_or_else(out_of_range),
            ChunkStore::Regenerate(b) => {
                let mut b = b.lock().unwrap_or_else(PoisonError::into_inner);
                // Sequential reads continue where the last one stopped.
                if b.next_chunk_no() != chunk_no {
                    match chunk_no.checked_sub(1) {
                        Some(prev) => b.resume_after(prev)?,
                        None => b.rewind(),
                    }
                }
                b.next_chunk()?.ok_or_else(out_of_range)
            }
        }
    }
}

#[derive(Default)]
struct Published {
    built: HashMap<u64, Arc<BuiltSnapshot>>,
    building: HashSet<u64>,
}

/// A cheap, cloneable handle to the snapshot worker: asks for builds without waiting and reads
/// the built snapshots. Used by [`crate::state::storage::RegionStorage`] and by the sender of chunks.
#[derive(Clone)]
pub struct SnapshotHandle {
    tx: Sender<SnapshotRequest>,
    published: Arc<Mutex<Published>>,
}

impl SnapshotHandle {
    fn published(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for a build of `region_id` unless one is running; never waits. Returns whether a
    /// build is now running (false: the request queue is full or the worker stopped).
    pub fn request_build(&self, region_id: u64) -> bool {
        let mut p = self.published();
        if p.building.contains(&region_id) {
            return true;
        }
        match self.tx.try_send(SnapshotRequest::Build { region_id }) {
            Ok(()) => {
                p.building.insert(region_id);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Whether a build of `region_id` is queued or running.
    pub fn is_building(&self, region_id: u64) -> bool {
        self.published().building.contains(&region_id)
    }

    /// The latest snapshot built of `region_id`.
    pub fn built(&self, region_id: u64) -> Option<Arc<BuiltSnapshot>> {
        self.published().built.get(&region_id).cloned()
    }

    /// Forgets `region_id`'s built snapshot if it is `snapshot_id` (it was sent, or is stale).
    pub fn release(&self, region_id: u64, snapshot_id: u64) {
        let mut p = self.published();
        if p.built
            .get(&region_id)
            .is_some_and(|b| b.meta.snapshot_id == snapshot_id)
        {
            p.built.remove(&region_id);
        }
    }

    /// Queues an install without waiting; false if the queue is full or the worker stopped.
    pub fn install(&self, meta: SnapshotMeta, chunks: Receiver<Bytes>) -> bool {
        self.tx
            .try_send(SnapshotRequest::Install { meta, chunks })
            .is_ok()
    }
}

/// The snapshot thread. Dropping it stops the thread after the request in hand.
pub struct SnapshotWorker {
    handle: Option<SnapshotHandle>,
    events: Receiver<SnapshotEvent>,
    join: Option<JoinHandle<()>>,
}

impl SnapshotWorker {
    /// Starts the thread; `apply` is the apply worker's request channel (freezes and installs
    /// go through it). A failed spawn is an error.
    pub fn spawn(
        config: SnapshotConfig,
        apply: Sender<ApplyRequest>,
        pacer: Option<Arc<dyn BuildPacer>>,
    ) -> Result<SnapshotWorker> {
        SnapshotWorker::spawn_waking(config, apply, pacer, LoopWake::new())
    }

    /// [`SnapshotWorker::spawn`], waking `wake` after every event (for a store loop driven as
    /// a task, see [`LoopWake`]).
    pub fn spawn_waking(
        config: SnapshotConfig,
        apply: Sender<ApplyRequest>,
        pacer: Option<Arc<dyn BuildPacer>>,
        wake: Arc<LoopWake>,
    ) -> Result<SnapshotWorker> {
        config.validate()?;
        let (tx, rx) = bounded(config.queue_len_max);
        let (ev_tx, events) = bounded(config.queue_len_max);
        let published = Arc::new(Mutex::new(Published::default()));
        let worker = SnapshotLoop {
            config,
            apply,
            pacer,
            events: ev_tx,
            wake,
            published: Arc::clone(&published),
            next_snapshot_id: 1,
        };
        let join = std::thread::Builder::new()
            .name("basalt-snapshot".into())
            .spawn(move || worker.run(rx))
            .map_err(|source| EngineError::ThreadSpawn {
                thread: "snapshot worker",
                source,
            })?;
        Ok(SnapshotWorker {
            handle: Some(SnapshotHandle { tx, published }),
            events,
            join: Some(join),
        })
    }

    /// A handle for requesters.
    pub fn handle(&self) -> SnapshotHandle {
        self.handle.clone().expect("the handle lives until drop")
    }

    /// The event channel.
    pub fn events(&self) -> &Receiver<SnapshotEvent> {
        &self.events
    }
}

impl Drop for SnapshotWorker {
    fn drop(&mut self) {
        // An explicit stop: handles held elsewhere keep the channel open.
        if let Some(h) = self.handle.take() {
            let _ = h.tx.send(SnapshotRequest::Stop);
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

struct SnapshotLoop {
    config: SnapshotConfig,
    apply: Sender<ApplyRequest>,
    pacer: Option<Arc<dyn BuildPacer>>,
    events: Sender<SnapshotEvent>,
    /// Woken after every event.
    wake: Arc<LoopWake>,
    published: Arc<Mutex<Published>>,
    next_snapshot_id: u64,
}

impl SnapshotLoop {
    fn emit(&self, ev: SnapshotEvent) {
        let _ = self.events.send(ev);
        self.wake.wake();
    }

    fn run(mut self, rx: Receiver<SnapshotRequest>) {
        let span = tracing::info_span!("snapshot_worker");
        let _entered = span.enter();
        for req in rx.iter() {
            match req {
                SnapshotRequest::Build { region_id } => self.build(region_id),
                SnapshotRequest::Install { meta, chunks } => self.install(meta, &chunks),
                SnapshotRequest::Stop => break,
            }
        }
    }

    fn build(&mut self, region_id: u64) {
        let id = self.next_snapshot_id;
        self.next_snapshot_id += 1;
        let r = self.build_chunks(region_id, id);
        let mut p = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        p.building.remove(&region_id);
        let ev = match r {
            Ok(built) => {
                let meta = built.meta;
                p.built.insert(region_id, Arc::new(built));
                SnapshotEvent::Built(meta)
            }
            Err(error) => {
                warn!(region = region_id, error = %error, "snapshot build failed");
                SnapshotEvent::BuildFailed { region_id, error }
            }
        };
        drop(p);
        self.emit(ev);
    }

    fn freeze(&self, region_id: u64) -> std::result::Result<FrozenRegion, SnapshotError> {
        let (tx, rx) = bounded(1);
        self.apply
            .send(ApplyRequest::Freeze {
                region_id,
                reply: tx,
            })
            .map_err(|_| APPLY_STOPPED)?;
        Ok(rx.recv().map_err(|_| APPLY_STOPPED)??)
    }

    fn build_chunks(
        &self,
        region_id: u64,
        snapshot_id: u64,
    ) -> std::result::Result<BuiltSnapshot, SnapshotError> {
        let frozen = self.freeze(region_id)?;
        let state = frozen.state().clone();
        let mut b = SnapshotBuilder::new(frozen, snapshot_id, self.config.chunk_bytes_max);
        let mut chunks = Some(Vec::new());
        let mut bytes = 0u64;
        loop {
            if let Some(p) = &self.pacer {
                p.before_chunk(region_id, b.next_chunk_no());
            }
            let Some(c) = b.next_chunk()? else {
                break;
            };
            bytes += c.len() as u64;
            if bytes > self.config.memory_bytes_max {
                chunks = None;
            }
            if let Some(v) = &mut chunks {
                v.push(c);
            }
        }
        let meta = b.meta().ok_or(SnapshotError::Closed)?;
        debug!(
            region = region_id,
            index = meta.index,
            chunks = meta.chunk_count,
            bytes = meta.total_bytes,
            in_memory = chunks.is_some(),
            "snapshot built"
        );
        let chunks = match chunks {
            Some(v) => ChunkStore::Memory(v),
            None => ChunkStore::Regenerate(Box::new(Mutex::new(b))),
        };
        Ok(BuiltSnapshot {
            meta,
            state,
            chunks,
        })
    }

    fn install(&mut self, meta: SnapshotMeta, chunks: &Receiver<Bytes>) {
        let ev = match self.install_chunks(meta, chunks) {
            Ok(checkpoint) => SnapshotEvent::Installed { meta, checkpoint },
            Err(error) => {
                warn!(region = meta.region_id, error = %error, "snapshot install failed");
                let _ = self.apply.send(ApplyRequest::AbortInstall {
                    region_id: meta.region_id,
                });
                SnapshotEvent::InstallFailed { meta, error }
            }
        };
        self.emit(ev);
    }

    fn install_chunks(
        &mut self,
        meta: SnapshotMeta,
        chunks: &Receiver<Bytes>,
    ) -> std::result::Result<CheckpointInfo, SnapshotError> {
        let mut next_chunk_no = 0;
        for chunk in chunks.iter() {
            match self.install_one(meta, chunk) {
                Ok(InstallProgress::More { next_chunk_no: n }) => next_chunk_no = n,
                Ok(InstallProgress::Installed(info)) => return Ok(info),
                Err(error) if !error.is_fatal() => {
                    // Refused, place kept: the sender resumes after `next_chunk_no - 1` and
                    // pushes the chunks again into the same stream.
                    self.emit(SnapshotEvent::ChunkRefused {
                        meta,
                        next_chunk_no,
                        error,
                    });
                }
                Err(error) => return Err(error),
            }
        }
        Err(SnapshotError::Totals {
            what: "chunks",
            expected: u64::from(meta.chunk_count),
            found: u64::from(next_chunk_no),
        })
    }

    fn install_one(
        &mut self,
        meta: SnapshotMeta,
        chunk: Bytes,
    ) -> std::result::Result<InstallProgress, SnapshotError> {
        // Verified here, off the apply thread; the apply worker checks it again (cheaply, the
        // bytes are in cache) as part of the receiver's stream accounting.
        Chunk::verify(&chunk)?;
        let (tx, rx) = bounded(1);
        self.apply
            .send(ApplyRequest::InstallChunk {
                meta,
                chunk,
                reply: tx,
            })
            .map_err(|_| APPLY_STOPPED)?;
        rx.recv().map_err(|_| APPLY_STOPPED)?
    }
}

//! The store layer: regions, the Raft messages between stores, and the raft loop that drives
//! every region peer of a store.
//!
//! The loop is a plain state machine ([`StoreLoop`]: events in, effects out through
//! [`Transport`], [`LogSink`] and the apply worker's channel) so the same code runs under the
//! real threads ([`Store`]) and under the deterministic simulator (`engine/tests/store_sim.rs`).
//!
//! How the pieces fit, and where this differs from `DESIGN.md` (and why):
//! - **Ready handling** follows the seed: a leader's `messages` go out before its log write;
//!   the entries and hard states of all peers' Readies go to the log as one batch; once durable,
//!   `persisted_messages` are sent and `on_persist_ready` is called. Committed entries go to the
//!   apply worker in index order.
//! - **Answers skip the loop where they can**: a batch's `persisted_messages` are handed to the
//!   transport by the log writer thread the moment the batch is durable (see [`LogSink`]), and
//!   a write is answered by the apply worker the moment its entry is applied (see
//!   `state::worker::Responder`). Each saves one thread wake-up on the path of every commit;
//!   on this 2-core VM together they took about 0.1 ms off a single put (0.82 to 0.72 ms p50).
//! - **Where the loop runs**: on a thread of its own ([`Store::open`]), or as a task of the
//!   node's network runtime ([`Store::open_driven`], turned through [`StoreDriver`]). A node
//!   with one network thread (three nodes colocated on a 2-core machine, `basalt demo`) uses
//!   the second: a message or request reaches the loop, and the loop's messages reach the
//!   network, without a thread switch, and every input wakes the task through [`LoopWake`].
//!   Against the loop on its own thread beside a one-worker network runtime (`cluster_bench
//!   latency`, 6 alternating pairs on the 2-vCPU machine, medians): 64 puts in flight 21.5k →
//!   27.2k/s; one put in flight 0.86 → 0.81 ms p50 (that one is bound by the three nodes'
//!   synced writes sharing one disk and by QUIC's round trips, see
//!   `benches/src/bin/floor_bench.rs`).
//! - **A driven loop also drives its log and its small applies** (`DESIGN.md` gives the log
//!   and the state store a thread each). On a 2-vCPU machine running three nodes, a put spent
//!   more CPU in waking threads than in Raft: about 0.9 ms of CPU per put at one in flight,
//!   62% of the network thread's in the kernel (context switches, wake-ups). So a loop driven
//!   on the network runtime, with the `uring` backend, owns its `LogStore`: an append goes
//!   into the log at the end of a turn, the runtime yields once so the turn's messages leave
//!   first (a leader sends before it writes), then the write goes on the device, and the
//!   ring's completion eventfd wakes the loop task (`runtime::InlineSink`). Small put/delete
//!   tasks are applied on the loop's thread, after the turn's log write was submitted, while
//!   the apply worker waits (`state::worker::InlineApply`); the worker keeps checkpoints,
//!   compaction, reads and everything large. Each takes two thread switches per node off
//!   every commit. Measured side by side (`cluster_bench latency`, alternating): one put in
//!   flight 0.85 → 0.60–0.66 ms p50 in the quieter rounds; see the session notes for the
//!   figures. A loop on its own thread (`Store::open`) keeps the writer thread and the worker.
//! - **Admin entries take effect when they are handed to the apply worker**, not when the worker
//!   reports them applied: the loop owns the `RawNode`s and the region metadata, and the worker
//!   applies requests in the order the loop sends them, so a request the loop checks after a
//!   split or membership change is already judged against the new epoch, and the data side
//!   (the split's key move, the metadata recorded with the conf change's index) follows in
//!   order. Entries proposed under an older epoch version are applied as no-ops on every
//!   replica (the client gets `EpochNotMatch`).
//! - **Reads** (ReadIndex or lease) are answered by the apply worker once every entry up to the
//!   read index was handed to it: the read is queued behind them.
//! - **Hibernation**: a leader idle for `hibernate_idle_ticks` with every peer matched asks its
//!   followers to hibernate; each agrees only if it is fully caught up with that leader at that
//!   term, and stops ticking; the leader stops once all agreed. Any message, request or snapshot
//!   wakes a region. Since a hibernating follower no longer times out, stores exchange one
//!   heartbeat per store pair every half election timeout, and a store silent for two election
//!   timeouts (or reported unreachable) wakes the regions it led. Lease reads turn hibernation
//!   off (a leader that does not tick cannot keep a lease).
//! - **Ids without a placement driver**: bootstrap regions and peers get deterministic ids
//!   (every store bootstraps the same regions on its own); ids chosen later (split regions,
//!   added peers) are 62 random bits, see `docs/FORMAT.md` ("New regions").
//! - **At most once**: commands carry (client id, sequence); the state store keeps a replicated
//!   session table per region (`state::session`), so a retry is answered with the first results
//!   or refused as `AlreadyApplied`, never applied twice.

pub mod api;
pub mod config;
pub mod msg;
mod peer;
pub mod raft_loop;
pub mod region;
pub mod runtime;
pub mod wake;
mod wire;

pub use config::{ReadMode, StoreConfig};
pub use raft_loop::{LogSink, Outgoing, PeerOrigin, StoreLoop};
pub use runtime::{
    prepare, Found, InlineSink, Store, StoreDriver, StoreOptions, Turn, UNWATCHED_LOG_POLL,
};
pub use wake::LoopWake;

pub use api::{
    AdminRequest, ClientRequest, ClientResponse, IncomingSnapshot, PeerChange, RegionInfo, Reply,
    RequestError, SnapshotReceipt, StoreEvent, StoreRouter, StoreStatus, Transport,
};
pub use msg::{
    decode_peer_list, encode_peer_list, EntryPayload, MessageKind, RaftMessage, SplitRequest,
};
pub use region::{initial_regions, Epoch, Peer, PeerRole, RegionMeta};

/// Why a store-layer structure (region metadata, message or entry envelope) did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended early.
    #[error("truncated at offset {offset}: {needed} more bytes needed")]
    Truncated {
        /// Where.
        offset: usize,
        /// How many more bytes.
        needed: usize,
    },
    /// Bytes left after the structure.
    #[error("{remaining} trailing bytes")]
    TrailingBytes {
        /// How many.
        remaining: usize,
    },
    /// A version this build does not read.
    #[error("unknown version {version}")]
    UnknownVersion {
        /// The version byte.
        version: u8,
    },
    /// A tag with no meaning.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which field.
        what: &'static str,
        /// The tag.
        tag: u8,
    },
    /// A count larger than the input could hold.
    #[error("count {count} exceeds the input")]
    Count {
        /// The count.
        count: usize,
    },
    /// The stored crc32 does not match.
    #[error("checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    Checksum {
        /// Stored.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The embedded Raft message did not decode.
    #[error("raft message: {0}")]
    Raft(raftlog::DecodeError),
}

//! The deterministic cluster simulator of `store_sim.rs`: whole stores (the real `StoreLoop`,
//! log, state store, apply and snapshot workers) on simulated devices, joined by a simulated
//! network, driven from one thread in simulated milliseconds.
//!
//! # Determinism
//! The raft loops, the network, the log devices, the clients and the fault schedule run on the
//! simulator's thread and draw from one seeded PRNG. The apply and snapshot workers are the real
//! threads (their loops are private to the engine), tamed so that they never run concurrently
//! with the simulator: the loop and the snapshot worker send apply requests into a relay channel
//! the simulator owns; after every flush the simulator forwards the relayed requests, waits on a
//! barrier request (a `Get` answered in queue order), feeds back every apply/snapshot event, and
//! repeats until the store is quiet, also waiting out snapshot builds (`is_building`), installs
//! (until `Installed`/`InstallFailed`) and explicitly started checkpoints (until
//! `CheckpointDone`). Checkpoints start only on the simulator's request (the size trigger is set
//! out of reach), so no background checkpoint overlaps other work. What remains
//! timing-dependent: the apply worker's idle compaction steps (they do not change any value the
//! loop sees). A replay of a seed gives the same history (the trace hash is printed).
//!
//! # Faults
//! Seeded per run: message delay, drops, duplicates (and so reordering), partitions (one store
//! cut off, or a split in two groups) that heal, store crashes (the state store's writes are
//! cut first so no final checkpoint lands, the loop and workers are dropped, then either a power
//! loss or a process restart of the sim device) and restarts through `prepare`.
//!
//! # Checks (see `cluster.rs` and `check.rs`)
//! One leader per (region, term) from `Regions` answers every 5 ms; one (term, command) per
//! applied index across all stores (from the apply events); the client history of each key
//! (unique values; stale, phantom and new-old-inversion reads; CAS chains), including final reads
//! after healing (acknowledged writes survive); convergence to one applied index and equal state
//! stores at the end.
//!
//! # Knobs
//! `BASALT_SIM_SEED`, `BASALT_SIM_RUNS`, `BASALT_SIM_KEEP_GOING` (run every seed, list the
//! failing ones), `BASALT_SIM_BUSY_MS` (length of the faulty phase), `BASALT_SIM_LOG` (a
//! `tracing` filter, e.g. `info`, plus the simulator's own snapshot lines).
#![allow(dead_code)]

pub mod check;
pub mod cluster;
pub mod node;

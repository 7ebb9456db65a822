//! engine: everything about one Basalt store on one block device — the I/O backends, the on-disk
//! layout, and the append-only Raft log shared by every region of the store.
//!
//! The engine never talks to the network itself, and its device access goes through the
//! completion-shaped [`io::Io`] interface, so the same code runs on io_uring, on plain
//! `pread`/`pwrite`, and on the deterministic fault-injecting simulator.
#![warn(missing_docs)]

pub mod device;
pub mod error;
pub mod format;
pub mod inspect;
pub mod io;
pub mod layout;
pub mod log;
pub mod metrics;
pub mod state;
pub mod store;

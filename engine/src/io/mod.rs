//! The completion-based device interface and its backends.
//!
//! Contract shared by every backend (`uring`, `sync`, `sim`):
//! - `submit` queues an operation and returns without waiting for the device;
//! - `reap` hands back completions (in any order), each with the caller's `tag` and the buffer;
//! - offsets and lengths are multiples of `block_size()`; buffers are aligned to it;
//! - a `Write { durable: true }` completes only once its data is on stable media;
//!   a `Flush` completes once every write that completed before it was submitted is durable;
//! - after any write or flush error the backend is latched failed: every later call returns
//!   [`IoError::Latched`] until the device is reopened.

// Filled in by the I/O backends work: AlignedBuf, BufPool, IoOp, Completion, IoError, the `Io`
// trait, and the `uring`, `sync` and `sim` modules.

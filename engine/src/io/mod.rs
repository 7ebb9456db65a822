//! The completion-based device interface and its backends.
//!
//! Contract shared by every backend (`uring`, `sync`, `sim`):
//! - `submit` queues an operation and returns without waiting for the device;
//! - `reap` hands back completions (in any order), each with the caller's `tag` and the buffer;
//! - offsets and lengths are multiples of the geometry's `block_size`, buffers are aligned to it,
//!   and a length is never zero; a violation is `Err(IoError::Unaligned)` from `submit`, never a
//!   panic;
//! - a `Write { durable: true }` completes only once its data is on stable media — its own data
//!   only: it may be a FUA write that leaves earlier non-durable writes in the device cache;
//!   a `Flush` completes once every write that completed before it was submitted is durable
//!   (writes still in flight when it is submitted are not covered);
//! - after any write or flush error the backend is latched failed: `submit` and `kick` return
//!   [`IoError::Latched`] until the device is reopened. `reap` still hands back the completions
//!   of operations accepted before the latch (so their buffers come back);
//! - when `submit` returns an error, the operation is dropped (its buffer returns to its pool);
//!   callers avoid `QueueFull` by keeping `in_flight() < queue_depth()`.

mod buf;
pub mod sim;
pub mod sync;
pub mod uring;

pub use buf::{AlignedBuf, BufPool};

/// Errors of the I/O layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The operating system refused or failed the operation.
    #[error("{op} at offset {offset} failed: {source}")]
    Os {
        /// What was attempted (`"write"`, `"read"`, `"fdatasync"`, ...).
        op: &'static str,
        /// Device offset of the operation (0 for flushes).
        offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device transferred fewer bytes than asked and could not make progress.
    #[error("short {op} at offset {offset}: {done} of {len} bytes")]
    Short {
        /// `"read"` or `"write"`.
        op: &'static str,
        /// Device offset of the operation.
        offset: u64,
        /// Bytes transferred.
        done: usize,
        /// Bytes asked for.
        len: usize,
    },
    /// An offset, length or buffer address is not a multiple of the required alignment.
    #[error("unaligned {what}: {value} is not a multiple of {align}")]
    Unaligned {
        /// Which quantity (`"offset"`, `"length"`, `"buffer address"`, ...).
        what: &'static str,
        /// Its value.
        value: u64,
        /// The required alignment.
        align: u64,
    },
    /// The operation reaches beyond the end of the device.
    #[error("out of range: offset {offset} + {len} beyond device size {size}")]
    OutOfRange {
        /// Device offset of the operation.
        offset: u64,
        /// Its length.
        len: u64,
        /// Device capacity.
        size: u64,
    },
    /// An earlier write or flush failed; nothing more is accepted until the device is reopened.
    #[error("device latched failed after an earlier write/flush error; reopen it")]
    Latched,
    /// `queue_depth()` operations are already in flight.
    #[error("submission queue full")]
    QueueFull,
    /// A fault injected by the `sim` backend.
    #[error("injected fault: {0}")]
    Injected(&'static str),
    /// The kernel refused to set up an io_uring instance.
    #[error("io_uring unavailable: {0}")]
    UringUnavailable(std::io::Error),
}

/// The kind of an operation, as reported in its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// A read.
    Read,
    /// A write (durable or not).
    Write,
    /// A flush of the device's volatile cache.
    Flush,
}

/// One operation handed to [`Io::submit`]. `tag` is the caller's and comes back in the completion.
#[derive(Debug)]
pub enum IoOp {
    /// Read `buf.len()` bytes at `offset` into `buf`.
    Read {
        /// Caller's tag.
        tag: u64,
        /// Device offset (block-aligned).
        offset: u64,
        /// Destination; its length (block multiple) is the amount read.
        buf: AlignedBuf,
    },
    /// Write `buf.len()` bytes of `buf` at `offset`.
    Write {
        /// Caller's tag.
        tag: u64,
        /// Device offset (block-aligned).
        offset: u64,
        /// Source; its length (block multiple) is the amount written.
        buf: AlignedBuf,
        /// Complete only once the data is on stable media.
        durable: bool,
    },
    /// Make every write completed before this op was submitted durable.
    Flush {
        /// Caller's tag.
        tag: u64,
    },
}

impl IoOp {
    /// The caller's tag.
    pub fn tag(&self) -> u64 {
        match self {
            IoOp::Read { tag, .. } | IoOp::Write { tag, .. } | IoOp::Flush { tag } => *tag,
        }
    }

    /// The kind of operation.
    pub fn kind(&self) -> IoKind {
        match self {
            IoOp::Read { .. } => IoKind::Read,
            IoOp::Write { .. } => IoKind::Write,
            IoOp::Flush { .. } => IoKind::Flush,
        }
    }
}

/// The outcome of one operation.
#[derive(Debug)]
pub struct Completion {
    /// The tag given at submit.
    pub tag: u64,
    /// What the operation was.
    pub kind: IoKind,
    /// Its device offset (0 for flushes).
    pub offset: u64,
    /// The buffer, handed back for reads and writes.
    pub buf: Option<AlignedBuf>,
    /// Bytes transferred (0 for a flush), or the error.
    pub result: Result<usize, IoError>,
}

/// The shape of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes: every offset, length and buffer address is a multiple of it.
    pub block_size: u32,
    /// Usable size in bytes (a multiple of `block_size`).
    pub capacity_bytes: u64,
}

/// A completion-based block device. See the module docs for the contract.
pub trait Io: Send {
    /// The device's shape.
    fn geometry(&self) -> Geometry;
    /// Queue one op. Never blocks on the device. Err(QueueFull) if `queue_depth()` ops are in flight.
    fn submit(&mut self, op: IoOp) -> Result<(), IoError>;
    /// Make queued ops visible to the device (a no-op for backends that submit eagerly).
    fn kick(&mut self) -> Result<(), IoError>;
    /// Move finished completions into `out`; block until at least `min_complete` are there
    /// (0 = never block). Returns how many were appended. `min_complete` is capped at the
    /// number of operations in flight, so it never waits for operations that do not exist.
    /// It also hands queued operations to the device (an implicit `kick`), so a caller that is
    /// about to wait need not kick first: with io_uring that is one system call, not two.
    fn reap(&mut self, out: &mut Vec<Completion>, min_complete: usize) -> Result<usize, IoError>;
    /// Operations submitted whose completion has not been reaped yet.
    fn in_flight(&self) -> usize;
    /// Most operations in flight at once.
    fn queue_depth(&self) -> usize;
    /// Buffer pool of this backend (registered with the ring for `uring`).
    fn pool(&mut self) -> &mut BufPool;
    /// `"uring"`, `"sync"` or `"sim"`.
    fn backend_name(&self) -> &'static str;
    /// A handle with which another thread ends a blocking [`Io::reap`] early: the woken `reap`
    /// returns what it has, possibly fewer than `min_complete` completions, even none. `None`
    /// for backends whose `reap` never waits on the device (`sync` and `sim` complete each
    /// operation inline).
    fn waker(&mut self) -> Result<Option<IoWaker>, IoError> {
        Ok(None)
    }
    /// An eventfd the kernel signals each time it posts a completion, for an owner that waits
    /// for the device in its own poller (an async runtime's reactor) instead of in a blocking
    /// [`Io::reap`]: once it is readable, read it (which resets it), then `reap(…, 0)`. Reading
    /// before reaping never loses a wake-up: a completion posted after the read signals again.
    /// The caller owns the returned descriptor (a duplicate of the backend's). `None` for
    /// backends that complete each operation inline (`sync` and `sim`).
    fn completion_fd(&mut self) -> Result<Option<std::os::fd::OwnedFd>, IoError> {
        Ok(None)
    }
}

/// Ends a blocking [`Io::reap`] of the backend that made it (see [`Io::waker`]). Cloneable and
/// cheap: waking is one `write` to an eventfd the ring has a read pending on.
#[derive(Clone, Debug)]
pub struct IoWaker {
    fd: std::sync::Arc<nix::sys::eventfd::EventFd>,
}

impl IoWaker {
    pub(crate) fn new(fd: std::sync::Arc<nix::sys::eventfd::EventFd>) -> IoWaker {
        IoWaker { fd }
    }

    /// Wakes the reap (or, if none is waiting, the next one returns at once).
    pub fn wake(&self) {
        // The counter saturates only after 2^64 - 2 wakes with no read between; a failed wake
        // at worst leaves the reaper waiting for its own completions, as without a waker.
        let _ = self.fd.write(1);
    }
}

/// Convenience for callers that want a blocking call (format, inspect, recovery, tests): submit,
/// kick, and reap until the completion with this op's tag arrives; returns it (its `result` may
/// be an error). Meant for use with nothing else in flight: completions of other tags reaped
/// meanwhile are dropped (their buffers go back to their pool).
pub fn run_one(io: &mut dyn Io, op: IoOp) -> Result<Completion, IoError> {
    let tag = op.tag();
    io.submit(op)?;
    match io.kick() {
        // The op itself may have latched the device (the sync backend runs it inside `submit`);
        // its completion is still delivered by `reap`.
        Ok(()) | Err(IoError::Latched) => {}
        Err(e) => return Err(e),
    }
    let mut out = Vec::with_capacity(4);
    loop {
        io.reap(&mut out, 1)?;
        if let Some(pos) = out.iter().position(|c| c.tag == tag) {
            return Ok(out.swap_remove(pos));
        }
        if io.in_flight() == 0 {
            // The op vanished (cannot happen with a correct backend); report instead of spinning.
            return Err(IoError::Injected("completion lost"));
        }
        out.clear();
    }
}

/// The device side of a backend that carries out each operation in one go (`sync` at submit,
/// `sim` once its simulated latency is over); [`run_inline`] turns an [`IoOp`] into calls of these.
pub(crate) trait InlineOps {
    /// Read `buf.len()` bytes at `offset` into `buf`.
    fn read_at(&mut self, offset: u64, buf: &mut AlignedBuf) -> Result<usize, IoError>;
    /// Write `buf` at `offset`, durable before returning when `durable`.
    fn write_at(&mut self, offset: u64, buf: &AlignedBuf, durable: bool) -> Result<usize, IoError>;
    /// Make every completed write durable.
    fn flush_all(&mut self) -> Result<usize, IoError>;
}

/// Carries out `op` on `dev` and returns its completion, with the op's buffer handed back.
/// The caller latches the device when [`Completion::latches`] says so.
pub(crate) fn run_inline(dev: &mut impl InlineOps, op: IoOp) -> Completion {
    match op {
        IoOp::Read {
            tag,
            offset,
            mut buf,
        } => {
            let result = dev.read_at(offset, &mut buf);
            Completion {
                tag,
                kind: IoKind::Read,
                offset,
                buf: Some(buf),
                result,
            }
        }
        IoOp::Write {
            tag,
            offset,
            buf,
            durable,
        } => {
            let result = dev.write_at(offset, &buf, durable);
            Completion {
                tag,
                kind: IoKind::Write,
                offset,
                buf: Some(buf),
                result,
            }
        }
        IoOp::Flush { tag } => Completion {
            tag,
            kind: IoKind::Flush,
            offset: 0,
            buf: None,
            result: dev.flush_all(),
        },
    }
}

impl Completion {
    /// Whether this completion latches the device: a failed write or flush (a failed read
    /// does not).
    pub fn latches(&self) -> bool {
        self.kind != IoKind::Read && self.result.is_err()
    }
}

/// Check an op's offset, length and buffer address against the geometry (shared by backends).
pub(crate) fn check_op(geometry: Geometry, offset: u64, buf: &AlignedBuf) -> Result<(), IoError> {
    let align = u64::from(geometry.block_size);
    let len = buf.len() as u64;
    if offset % align != 0 {
        return Err(IoError::Unaligned {
            what: "offset",
            value: offset,
            align,
        });
    }
    if len == 0 || len % align != 0 {
        return Err(IoError::Unaligned {
            what: "length",
            value: len,
            align,
        });
    }
    let addr = buf.as_ptr() as u64;
    if addr % align != 0 {
        return Err(IoError::Unaligned {
            what: "buffer address",
            value: addr,
            align,
        });
    }
    let in_range = offset
        .checked_add(len)
        .is_some_and(|end| end <= geometry.capacity_bytes);
    if !in_range {
        return Err(IoError::OutOfRange {
            offset,
            len,
            size: geometry.capacity_bytes,
        });
    }
    Ok(())
}

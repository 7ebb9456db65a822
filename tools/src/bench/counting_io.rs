//! An [`Io`] wrapper that counts the device writes and bytes the log issues, so the log target
//! can report its real write size and writes per second (group commits) next to fio's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::io::{BufPool, Completion, Geometry, Io, IoError, IoOp};

/// Writes and bytes submitted so far; shared with the thread that reads them.
#[derive(Debug, Default)]
pub struct IoCounters {
    writes: AtomicU64,
    write_bytes: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CounterSnapshot {
    writes: u64,
    write_bytes: u64,
}

impl IoCounters {
    /// The counts now.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            writes: self.writes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
        }
    }
}

impl CounterSnapshot {
    /// Nothing counted.
    pub const ZERO: CounterSnapshot = CounterSnapshot {
        writes: 0,
        write_bytes: 0,
    };

    /// `(writes, bytes)` since `earlier`.
    pub fn since(self, earlier: CounterSnapshot) -> (u64, u64) {
        (
            self.writes - earlier.writes,
            self.write_bytes - earlier.write_bytes,
        )
    }
}

/// Forwards every call to the wrapped backend, counting writes on the way.
pub struct CountingIo {
    inner: Box<dyn Io>,
    counters: Arc<IoCounters>,
}

impl CountingIo {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Io>, counters: Arc<IoCounters>) -> CountingIo {
        CountingIo { inner, counters }
    }
}

impl Io for CountingIo {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn submit(&mut self, op: IoOp) -> Result<(), IoError> {
        if let IoOp::Write { buf, .. } = &op {
            self.counters.writes.fetch_add(1, Ordering::Relaxed);
            self.counters
                .write_bytes
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        self.inner.submit(op)
    }

    fn kick(&mut self) -> Result<(), IoError> {
        self.inner.kick()
    }

    fn reap(&mut self, out: &mut Vec<Completion>, min_complete: usize) -> Result<usize, IoError> {
        self.inner.reap(out, min_complete)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }

    fn pool(&mut self) -> &mut BufPool {
        self.inner.pool()
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    fn waker(&mut self) -> Result<Option<engine::io::IoWaker>, IoError> {
        self.inner.waker()
    }
}

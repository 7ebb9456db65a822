//! [`LogWriterThread`]: a [`LogStore`] on its own thread, for real devices. Appends arrive over a
//! bounded channel; everything that arrived while the thread was busy becomes the next
//! group-committed batch.
//!
//! While a write is in flight the thread waits on the device, and an append arriving then wakes
//! it (an [`IoWaker`], when the backend has one): the thread queues the append and the log sends
//! it as the second write in flight (see [`super::writer`]), rather than holding it until the
//! first write completes. A woken append costs one `write(2)` to an eventfd, paid only when
//! the thread is actually waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::warn;

use super::{LogBatch, LogStore, RegionLog};
use crate::error::{EngineError, Result};
use crate::io::IoWaker;

/// A [`LogStore`] on its own thread, for real devices: appends arrive over a channel and each
/// batch's callback runs on the writer thread once the batch is durable (or failed).
pub struct LogWriterThread {
    tx: Option<crossbeam_channel::Sender<WriterMsg>>,
    join: Option<std::thread::JoinHandle<LogStore>>,
    region_logs: Box<dyn Fn(u64) -> RegionLog + Send + Sync>,
    wake: Arc<WriterWake>,
}

/// How an appender wakes the writer thread while it waits on the device.
struct WriterWake {
    /// The thread is (about to be) blocked on the device with a write in flight.
    waiting: AtomicBool,
    waker: Option<IoWaker>,
}

impl WriterWake {
    /// Called after a message was sent: wakes the thread if it waits on the device.
    fn poke(&self) {
        if let Some(w) = &self.waker {
            if self.waiting.swap(false, Ordering::SeqCst) {
                w.wake();
            }
        }
    }
}

/// Called once a batch is durable (or failed).
pub type AckCallback = Box<dyn FnOnce(Result<()>) + Send>;

enum WriterMsg {
    Append(LogBatch, AckCallback),
    Compact(u64, u64),
}

impl LogWriterThread {
    /// Moves `store` onto a new thread.
    pub fn spawn(mut store: LogStore) -> Result<LogWriterThread> {
        let (tx, rx) = crossbeam_channel::bounded::<WriterMsg>(4096);
        let shared = Arc::clone(store.shared());
        let wake = Arc::new(WriterWake {
            waiting: AtomicBool::new(false),
            waker: store.waker()?,
        });
        let thread_wake = Arc::clone(&wake);
        let join = std::thread::Builder::new()
            .name("basalt-log-writer".into())
            .spawn(move || writer_loop(store, rx, &thread_wake))
            .map_err(|source| EngineError::ThreadSpawn {
                thread: "log writer",
                source,
            })?;
        let region_logs = Box::new(move |region_id| RegionLog::new(Arc::clone(&shared), region_id));
        Ok(LogWriterThread {
            tx: Some(tx),
            join: Some(join),
            region_logs,
            wake,
        })
    }

    /// Queues `batch`; `done` runs once it is durable.
    pub fn append(&self, batch: LogBatch, done: AckCallback) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(EngineError::WriterStopped)?;
        tx.send(WriterMsg::Append(batch, done))
            .map_err(|_| EngineError::WriterStopped)?;
        self.wake.poke();
        Ok(())
    }

    /// Queues a compaction of `region_id` up to `index`.
    pub fn compact_to(&self, region_id: u64, index: u64) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(EngineError::WriterStopped)?;
        tx.send(WriterMsg::Compact(region_id, index))
            .map_err(|_| EngineError::WriterStopped)?;
        self.wake.poke();
        Ok(())
    }

    /// The Storage handle of a region.
    pub fn region_log(&self, region_id: u64) -> RegionLog {
        (self.region_logs)(region_id)
    }

    /// Stops the thread once everything queued is written, and hands the store back.
    pub fn stop(mut self) -> Result<LogStore> {
        self.tx.take();
        self.wake.poke();
        let join = self.join.take().ok_or(EngineError::WriterStopped)?;
        join.join().map_err(|_| EngineError::WriterStopped)
    }
}

impl Drop for LogWriterThread {
    fn drop(&mut self) {
        self.tx.take();
        self.wake.poke();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn writer_loop(
    mut store: LogStore,
    rx: crossbeam_channel::Receiver<WriterMsg>,
    wake: &WriterWake,
) -> LogStore {
    let span = tracing::info_span!("log_writer", store = store.superblock().store_id, device = %store.shared().label);
    let _entered = span.enter();
    let mut callbacks: std::collections::HashMap<u64, AckCallback> = Default::default();
    let mut open = true;
    loop {
        let idle = store.is_idle();
        if idle && !open {
            store.no_more_wakes();
            return store;
        }
        let first = if idle {
            rx.recv().ok()
        } else {
            rx.try_recv().ok()
        };
        if first.is_none() && idle {
            open = false;
            continue;
        }
        for msg in first.into_iter().chain(rx.try_iter()) {
            take_msg(&mut store, &mut callbacks, msg);
        }
        // Callbacks run before the next batch is gathered: they wake the callers, whose next
        // appends then have the most chance to join the next batch (group commit).
        // Announce the wait before the last look at the channel: an appender either finds the
        // message taken here, or finds `waiting` set and wakes the device wait.
        wake.waiting.store(true, Ordering::SeqCst);
        let wait = rx.is_empty();
        let acks = poll_logged(&mut store, wait);
        wake.waiting.store(false, Ordering::SeqCst);
        for a in acks {
            if let Some(cb) = callbacks.remove(&a.ticket.0) {
                cb(a.result);
            }
        }
    }
}

fn take_msg(
    store: &mut LogStore,
    callbacks: &mut std::collections::HashMap<u64, AckCallback>,
    msg: WriterMsg,
) {
    match msg {
        WriterMsg::Append(batch, done) => match store.append(batch) {
            Ok(t) => {
                callbacks.insert(t.0, done);
            }
            Err(e) => done(Err(e)),
        },
        WriterMsg::Compact(region_id, index) => {
            if let Err(e) = store.compact_to(region_id, index) {
                warn!(region_id, index, error = %e, "compaction refused");
            }
        }
    }
}

fn poll_logged(store: &mut LogStore, wait: bool) -> Vec<super::Ack> {
    store.poll(wait).unwrap_or_else(|e| {
        warn!(error = %e, "log writer poll failed");
        Vec::new()
    })
}

//! [`LogWriterThread`]: a [`LogStore`] on its own thread, for real devices. Appends arrive over a
//! bounded channel; everything that arrived while the thread was busy becomes the next
//! group-committed batch.
//!
//! While a write is in flight the thread waits on the device, and an append arriving then wakes
//! it (an [`IoWaker`], when the backend has one): the thread queues the append and the log sends
//! it as the second write in flight (see [`super::writer`]), rather than holding it until the
//! first write completes. A woken append costs one `write(2)` to an eventfd, paid only when
//! the thread is actually waiting.
//!
//! # Gathering closed-loop appenders
//! When the batch just acknowledged came from appenders on two or more threads, each of them is
//! likely to append again as soon as its callback has woken it (a writer that waits for each
//! append to be durable). With nothing in flight, the thread then waits up to [`GATHER_MAX`]
//! for that many appends to arrive before it writes, so they share one device write instead of
//! splitting into a first write and a second one behind it; and while it waits, the appends
//! do not wake it one by one: only the one that completes the count does (`unpark`). A batch
//! acknowledged for one thread's appends (a store's raft loop, the only appender in a running
//! node) never waits: what is queued goes out at once, as before.
//!
//! # Synchronous appenders
//! [`LogWriterThread::append_sync`] is for threads that block on each append, as the benchmark's
//! writers do (and raft-engine's `write(sync = true)` callers). Their acknowledgement is a
//! result stored in a slot of their own, and after the writer thread has run every callback of
//! a completion it wakes all such waiters at once (one `notify_all`). Waking each from its own
//! callback took one futex wake per appender, one after the other on the writer thread: with
//! 8 appenders, 57 us per batch on the test VM, where a wake-up crossing to a halted vCPU costs
//! about 7 us.
//!
//! Measured together (2026-11-26, the 2-vCPU test VM, 4 alternating rounds of 3 s, `basalt-bench
//! --target=log --regions=100 --entry-size=256 --numjobs=8` on a 2 GiB file written in full):
//!
//! | | entries/s | CPU per entry | entries per write |
//! |---|---|---|---|
//! | before: a callback wakes each writer, no gathering | 27.9k – 32.7k | 21.7 – 25.1 us | 3.0 – 3.3 |
//! | `append_sync` and gathering | 32.2k – 41.4k | 11.6 – 17.1 us | 7.9 – 8.0 |
//! | `gather_bound --mode=log-thread` (benches: no log at all) | 36.4k – 41.4k | 10.0 – 12.1 us | 8 |
//!
//! Gathering alone, with each writer still woken by its own callback, measured no better than
//! before (26.7k – 27.3k): the wake-ups it saved the thread were spent waking the writers.
//! The thread spinning for the appends (10 – 80 us) instead of parking was slower at every
//! length: on 2 vCPUs it takes the CPU the appenders need.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{Thread, ThreadId};
use std::time::{Duration, Instant};

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

/// The longest the writer thread holds queued appends back while it gathers the appenders of
/// the batch it just acknowledged (see the module docs). Longer than those appenders take to
/// come back on a busy 2-vCPU machine (a wake-up of a sleeping thread costs tens of
/// microseconds there), short against a synced write.
pub const GATHER_MAX: Duration = Duration::from_micros(200);

/// No gathering under way (see [`WriterWake::gather_at`]).
const NOT_GATHERING: usize = usize::MAX;

/// Where [`LogWriterThread::append_sync`] callers wait (see the module docs).
#[derive(Default)]
struct SyncWaiters {
    /// Callers between their append and their wake-up.
    waiting: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl SyncWaiters {
    /// Wakes every waiting caller, after the callbacks that stored their results have run.
    fn wake_all(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this after a waiter's last look at its slot.
            drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()));
            self.cv.notify_all();
        }
    }
}

/// Where the writer thread leaves the result of one [`LogWriterThread::append_sync`].
type AckSlot = Mutex<Option<Result<()>>>;

/// Blocks until `slot` holds the result of its append, or its filler is gone unfilled.
fn wait_for_slot(sync: &SyncWaiters, slot: Arc<AckSlot>) -> Result<()> {
    let mut guard = sync.lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(result) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return result;
        }
        // The filler holds the other reference until it has filled the slot (looked at
        // first) or was dropped unfilled: the writer thread is gone.
        if Arc::strong_count(&slot) == 1 {
            return Err(EngineError::WriterStopped);
        }
        guard = sync.cv.wait(guard).unwrap_or_else(|p| p.into_inner());
    }
}

/// The acknowledgement of an [`LogWriterThread::append_sync`]: stores the result without a
/// wake-up (the writer thread wakes all waiters after its callbacks); dropped unfilled, it wakes
/// them itself, so the caller learns that the writer thread is gone.
struct SlotFiller {
    slot: Option<Arc<AckSlot>>,
    wake: Arc<WriterWake>,
}

impl SlotFiller {
    fn fill(&mut self, result: Result<()>) {
        if let Some(slot) = self.slot.take() {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        }
    }
}

impl Drop for SlotFiller {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // Let go of the slot before the wake-up: the waiter checks for the last reference.
            drop(slot);
            drop(
                self.wake
                    .sync
                    .lock
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            );
            self.wake.sync.cv.notify_all();
        }
    }
}

/// How an appender wakes the writer thread while it waits on the device.
struct WriterWake {
    /// The thread is (about to be) blocked on the device with a write in flight.
    waiting: AtomicBool,
    waker: Option<IoWaker>,
    /// While the thread gathers appenders: the number of queued messages at which it wants to
    /// be woken; [`NOT_GATHERING`] otherwise.
    gather_at: AtomicUsize,
    /// The writer thread, to unpark it; set by the thread itself before its first wait.
    thread: OnceLock<Thread>,
    sync: SyncWaiters,
}

impl WriterWake {
    /// Called after a message was sent (`queued` messages are now in the channel): wakes the
    /// thread if it waits on the device, or if it gathers appenders and this message completes
    /// the count it waits for.
    fn poke(&self, queued: usize) {
        if let Some(w) = &self.waker {
            if self.waiting.swap(false, Ordering::SeqCst) {
                w.wake();
            }
        }
        // Pairs with the fence in `gather`: either the thread sees this message in the channel,
        // or this sees its `gather_at`.
        fence(Ordering::SeqCst);
        if queued >= self.gather_at.load(Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

/// Called once a batch is durable (or failed).
pub type AckCallback = Box<dyn FnOnce(Result<()>) + Send>;

enum WriterMsg {
    /// A batch, its callback, and the thread that appended it.
    Append(LogBatch, AckCallback, ThreadId),
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
            gather_at: AtomicUsize::new(NOT_GATHERING),
            thread: OnceLock::new(),
            sync: SyncWaiters::default(),
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
        let appender = std::thread::current().id();
        tx.send(WriterMsg::Append(batch, done, appender))
            .map_err(|_| EngineError::WriterStopped)?;
        self.wake.poke(tx.len());
        Ok(())
    }

    /// Appends `batch` and blocks the calling thread until it is durable (see the module docs).
    pub fn append_sync(&self, batch: LogBatch) -> Result<()> {
        let slot: Arc<AckSlot> = Arc::new(AckSlot::default());
        let mut filler = SlotFiller {
            slot: Some(Arc::clone(&slot)),
            wake: Arc::clone(&self.wake),
        };
        let sync = &self.wake.sync;
        sync.waiting.fetch_add(1, Ordering::SeqCst);
        let result = self
            .append(batch, Box::new(move |r| filler.fill(r)))
            .and_then(|()| wait_for_slot(sync, slot));
        sync.waiting.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Queues a compaction of `region_id` up to `index`.
    pub fn compact_to(&self, region_id: u64, index: u64) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(EngineError::WriterStopped)?;
        tx.send(WriterMsg::Compact(region_id, index))
            .map_err(|_| EngineError::WriterStopped)?;
        self.wake.poke(tx.len());
        Ok(())
    }

    /// The Storage handle of a region.
    pub fn region_log(&self, region_id: u64) -> RegionLog {
        (self.region_logs)(region_id)
    }

    /// Stops the thread once everything queued is written, and hands the store back.
    pub fn stop(mut self) -> Result<LogStore> {
        self.tx.take();
        self.wake.poke(NOT_GATHERING);
        let join = self.join.take().ok_or(EngineError::WriterStopped)?;
        join.join().map_err(|_| EngineError::WriterStopped)
    }
}

impl Drop for LogWriterThread {
    fn drop(&mut self) {
        self.tx.take();
        self.wake.poke(NOT_GATHERING);
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
    let _ = wake.thread.set(std::thread::current());
    let mut callbacks: std::collections::HashMap<u64, (AckCallback, ThreadId)> = Default::default();
    // The distinct threads whose appends the last poll acknowledged.
    let mut appenders: rustc_hash::FxHashSet<ThreadId> = Default::default();
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
        let mut refused = false;
        for msg in first.into_iter().chain(rx.try_iter()) {
            refused |= !take_msg(&mut store, &mut callbacks, msg);
        }
        if refused {
            wake.sync.wake_all();
        }
        // Callbacks run before the next batch is gathered: they wake the callers, whose next
        // appends then have the most chance to join the next batch (group commit).
        // Announce the wait before the last look at the channel: an appender either finds the
        // message taken here, or finds `waiting` set and wakes the device wait.
        wake.waiting.store(true, Ordering::SeqCst);
        let wait = rx.is_empty();
        let acks = poll_logged(&mut store, wait);
        wake.waiting.store(false, Ordering::SeqCst);
        if acks.is_empty() {
            continue;
        }
        appenders.clear();
        for a in acks {
            if let Some((cb, appender)) = callbacks.remove(&a.ticket.0) {
                cb(a.result);
                appenders.insert(appender);
            }
        }
        wake.sync.wake_all();
        if appenders.len() >= 2 && !store.has_write_in_flight() {
            gather(&rx, wake, appenders.len(), GATHER_MAX);
        }
    }
}

/// Waits, up to `max` ([`GATHER_MAX`]), until `expected` messages are queued (see the module
/// docs).
fn gather(
    rx: &crossbeam_channel::Receiver<WriterMsg>,
    wake: &WriterWake,
    expected: usize,
    max: Duration,
) {
    let deadline = Instant::now() + max;
    wake.gather_at.store(expected, Ordering::SeqCst);
    // Pairs with the fence in `WriterWake::poke`.
    fence(Ordering::SeqCst);
    // A stopping `LogWriterThread` unparks the thread too; the deadline bounds the rest.
    while rx.len() < expected {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::park_timeout(deadline - now);
    }
    wake.gather_at.store(NOT_GATHERING, Ordering::SeqCst);
}

/// Takes one message; false if it was an append refused at once (its callback has run).
fn take_msg(
    store: &mut LogStore,
    callbacks: &mut std::collections::HashMap<u64, (AckCallback, ThreadId)>,
    msg: WriterMsg,
) -> bool {
    match msg {
        WriterMsg::Append(batch, done, appender) => match store.append(batch) {
            Ok(t) => {
                callbacks.insert(t.0, (done, appender));
                true
            }
            Err(e) => {
                done(Err(e));
                false
            }
        },
        WriterMsg::Compact(region_id, index) => {
            if let Err(e) = store.compact_to(region_id, index) {
                warn!(region_id, index, error = %e, "compaction refused");
            }
            true
        }
    }
}

fn poll_logged(store: &mut LogStore, wait: bool) -> Vec<super::Ack> {
    store.poll(wait).unwrap_or_else(|e| {
        warn!(error = %e, "log writer poll failed");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathering_wake() -> Arc<WriterWake> {
        let wake = Arc::new(WriterWake {
            waiting: AtomicBool::new(false),
            waker: None,
            gather_at: AtomicUsize::new(NOT_GATHERING),
            thread: OnceLock::new(),
            sync: SyncWaiters::default(),
        });
        let _ = wake.thread.set(std::thread::current());
        wake
    }

    /// Sends `count` messages from another thread, each after `pause`, as appenders do.
    fn send_later(
        tx: crossbeam_channel::Sender<WriterMsg>,
        wake: Arc<WriterWake>,
        count: u64,
        pause: Duration,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for k in 0..count {
                std::thread::sleep(pause);
                tx.send(WriterMsg::Compact(1, k)).unwrap();
                wake.poke(tx.len());
            }
        })
    }

    #[test]
    fn gather_returns_when_the_last_expected_append_arrives() {
        let wake = gathering_wake();
        let (tx, rx) = crossbeam_channel::bounded(16);
        let sender = send_later(tx, Arc::clone(&wake), 3, Duration::from_millis(20));
        let start = Instant::now();
        // Woken by the third message's poke, not by the deadline.
        gather(&rx, &wake, 3, Duration::from_secs(20));
        let waited = start.elapsed();
        sender.join().unwrap();
        assert_eq!(rx.len(), 3);
        assert!(waited < Duration::from_secs(10), "gather waited {waited:?}");
        assert_eq!(wake.gather_at.load(Ordering::SeqCst), NOT_GATHERING);
    }

    #[test]
    fn gather_gives_up_at_its_deadline() {
        let wake = gathering_wake();
        let (tx, rx) = crossbeam_channel::bounded(16);
        let sender = send_later(tx, Arc::clone(&wake), 2, Duration::from_millis(1));
        let start = Instant::now();
        gather(&rx, &wake, 3, Duration::from_millis(100));
        let waited = start.elapsed();
        sender.join().unwrap();
        assert_eq!(rx.len(), 2);
        assert!(
            waited >= Duration::from_millis(100),
            "gather waited {waited:?}"
        );
    }

    /// A caller of `append_sync` waiting on its slot, as the writer thread sees it: the filler
    /// of the slot, and the caller's thread.
    fn waiting_append(wake: &Arc<WriterWake>) -> (SlotFiller, std::thread::JoinHandle<Result<()>>) {
        let slot: Arc<AckSlot> = Arc::new(AckSlot::default());
        let filler = SlotFiller {
            slot: Some(Arc::clone(&slot)),
            wake: Arc::clone(wake),
        };
        wake.sync.waiting.fetch_add(1, Ordering::SeqCst); // as `append_sync` counts itself
        let waiter = {
            let wake = Arc::clone(wake);
            std::thread::spawn(move || wait_for_slot(&wake.sync, slot))
        };
        std::thread::sleep(Duration::from_millis(20));
        (filler, waiter)
    }

    #[test]
    fn a_sync_append_whose_acknowledgement_is_dropped_returns_an_error() {
        let wake = gathering_wake();
        let (filler, waiter) = waiting_append(&wake);
        drop(filler); // the writer thread died with the callback unrun
        let result = waiter.join().unwrap();
        assert!(
            matches!(result, Err(EngineError::WriterStopped)),
            "{result:?}"
        );
    }

    #[test]
    fn a_sync_append_returns_its_result() {
        let wake = gathering_wake();
        let (mut filler, waiter) = waiting_append(&wake);
        filler.fill(Err(EngineError::Latched));
        drop(filler);
        wake.sync.wake_all();
        let result = waiter.join().unwrap();
        assert!(matches!(result, Err(EngineError::Latched)), "{result:?}");
    }
}

//! `--target=log`: synced appends to the engine's append-only Raft log. The bench formats its
//! scratch device, opens the log, and appends batches of `--entries-per-write` entries spread
//! round-robin over `--regions`, each append waiting until it is durable. With `--numjobs=1` the
//! calling thread drives `LogStore` directly; with more, the log runs on its writer thread
//! (`LogWriterThread`, as in a store) and each job is a thread owning a disjoint set of regions,
//! so concurrent appends group-commit. `--recover` reopens the log afterwards and reports the
//! recovery scan rate.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::device::{self, OpenOptions};
use engine::error::EngineError;
use engine::format::{format, FormatOptions};
use engine::io::Io;
use engine::layout::{Geometry, MIB};
use engine::log::{LogConfig, LogStore, LogWriterThread};

use super::counting_io::{CounterSnapshot, CountingIo, IoCounters};
use super::device_run::device_record;
use super::log_regions::RegionCursor;
use super::plan::Plan;
use super::progress::Progress;
use super::stats::{CpuTimes, LogMeasure, OpStats, RunResult};
use super::BenchError;

/// Device bytes the log writes between two compactions of a writer's regions: the log is a
/// ring of segments, so a long run must free the tail as a store's apply loop would. Counted in
/// device bytes (headers and padding included), as that is what fills segments.
const COMPACT_EVERY_BYTES: u64 = 16 * MIB;

/// Runs the log job of `plan`.
pub(super) fn run(plan: &Plan) -> Result<RunResult, BenchError> {
    let path = plan.path();
    let opts = OpenOptions {
        backend: plan.backend(),
        create_size_bytes: plan.create_size_bytes,
        ..OpenOptions::default()
    };
    let (mut io, info) = device::open(path, &opts)?;
    format_scratch(plan, io.as_mut())?;
    let counters = Arc::new(IoCounters::default());
    let counting = CountingIo::new(io, Arc::clone(&counters));
    let backend_name = counting.backend_name();
    let (store, _) = LogStore::open(Box::new(counting), log_config(path)).map_err(log_err(path))?;

    let job = LogJob::new(plan, Arc::clone(&counters));
    let mut progress = Progress::new(
        plan.args.output_format == super::args::OutputFormat::Normal,
        &plan.args.name,
        job.progress_total(),
        "entries/s",
    );
    let before = counters.snapshot();
    let cpu_before = CpuTimes::now();
    let start = Instant::now();
    let (store, write) = if plan.args.numjobs == 1 {
        job.run_inline(store, start, &mut progress)
            .map_err(log_err(path))?
    } else {
        job.run_threaded(store, start, &mut progress)
            .map_err(log_err(path))?
    };
    let elapsed = start.elapsed();
    let cpu = CpuTimes::now().since(cpu_before);
    progress.finish();
    let (writes, write_bytes) = counters.snapshot().since(before);
    settle(store).map_err(log_err(path))?;
    let recovery = if plan.args.recover {
        Some(recover(plan, &opts)?)
    } else {
        None
    };
    let measure = LogMeasure {
        entries_count: job.entries_done.load(Ordering::Relaxed),
        device_writes_count: Some(writes),
        device_write_bytes: Some(write_bytes),
        recovery,
    };
    Ok(RunResult {
        elapsed,
        read: OpStats::new(),
        write,
        sync: OpStats::new(),
        cpu,
        backend_name,
        device: device_record(&info),
        log: Some(measure),
    })
}

fn log_err(path: &Path) -> impl Fn(EngineError) -> BenchError + '_ {
    move |source| BenchError::Log {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes whatever the store still has queued or in flight (the last compaction), then closes
/// it, so the device is never dropped with operations in flight.
fn settle(mut store: LogStore) -> Result<(), EngineError> {
    // `poll(true)` returns no acknowledgement only once nothing is queued or in flight.
    while !store.poll(true)?.is_empty() {}
    Ok(())
}

fn log_config(path: &Path) -> LogConfig {
    LogConfig {
        device_label: path.display().to_string(),
        ..LogConfig::default()
    }
}

/// Formats the scratch device. The refusal check already ran (`signature::check_writable`,
/// which `--force` skips), so the format itself is forced.
fn format_scratch(plan: &Plan, io: &mut dyn Io) -> Result<(), BenchError> {
    let capacity = io.geometry().capacity_bytes;
    let mut opts = FormatOptions::new(plan.path().display().to_string());
    opts.force = true;
    // At least 8 segments, so compaction can free some while others are written.
    let block = u64::from(opts.block_size);
    let segment = (capacity / 8 / block * block).min(opts.segment_size_bytes);
    opts.segment_size_bytes = segment.max(16 * block);
    // The log alone uses the device: every segment goes to it (the default split keeps three
    // quarters for a state store, and a fast run then filled the log's two segments before
    // compaction could free one).
    opts.log_segment_count = Geometry::plan(capacity, opts.block_size, opts.segment_size_bytes)
        .ok()
        .map(|g| g.segment_count);
    format(io, &opts).map(|_| ()).map_err(log_err(plan.path()))
}

/// Reopens the log and returns what recovery scanned and how long it took.
fn recover(plan: &Plan, opts: &OpenOptions) -> Result<(u64, Duration), BenchError> {
    let opts = OpenOptions {
        create_size_bytes: None,
        ..opts.clone()
    };
    let (io, _) = device::open(plan.path(), &opts)?;
    let (_store, report) =
        LogStore::open(io, log_config(plan.path())).map_err(log_err(plan.path()))?;
    Ok((report.bytes_scanned, report.elapsed))
}

/// Shared state of the log job's writers.
struct LogJob {
    regions: u64,
    numjobs: u64,
    entries_per_write: u64,
    payload: Bytes,
    io_size_bytes: u64,
    time_based: bool,
    runtime: Option<Duration>,
    /// Payload bytes claimed by writers (for the `--size` limit).
    bytes_claimed: AtomicU64,
    entries_done: AtomicU64,
    bytes_done: AtomicU64,
    stop: AtomicBool,
    /// The device's write counters, which pace compaction.
    counters: Arc<IoCounters>,
}

impl LogJob {
    fn new(plan: &Plan, counters: Arc<IoCounters>) -> LogJob {
        let a = &plan.args;
        let mut payload = vec![0u8; a.entry_size as usize];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for byte in payload.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        LogJob {
            regions: u64::from(a.regions),
            numjobs: u64::from(a.numjobs),
            entries_per_write: u64::from(a.entries_per_write),
            payload: Bytes::from(payload),
            io_size_bytes: plan.io_size_bytes,
            time_based: a.time_based,
            runtime: plan.runtime(),
            bytes_claimed: AtomicU64::new(0),
            entries_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            counters,
        }
    }

    fn append_bytes(&self) -> u64 {
        self.entries_per_write * self.payload.len() as u64
    }

    fn progress_total(&self) -> u64 {
        match (self.time_based, self.runtime) {
            (true, Some(rt)) => rt.as_millis() as u64,
            _ => self.io_size_bytes,
        }
    }

    fn progress_position(&self, start: Instant, now: Instant) -> u64 {
        match (self.time_based, self.runtime) {
            (true, Some(_)) => now.duration_since(start).as_millis() as u64,
            _ => self.bytes_done.load(Ordering::Relaxed),
        }
    }

    /// Claims the next append, or says the run is over.
    fn claim(&self, start: Instant) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.runtime.is_some_and(|rt| start.elapsed() >= rt) {
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        if self.time_based {
            return true;
        }
        let before = self
            .bytes_claimed
            .fetch_add(self.append_bytes(), Ordering::Relaxed);
        before < self.io_size_bytes
    }

    /// Device bytes the log has written since it was opened.
    fn device_bytes_written(&self) -> u64 {
        self.counters.snapshot().since(CounterSnapshot::ZERO).1
    }

    fn record_done(&self) {
        self.entries_done
            .fetch_add(self.entries_per_write, Ordering::Relaxed);
        self.bytes_done
            .fetch_add(self.append_bytes(), Ordering::Relaxed);
    }

    /// One writer on the calling thread, driving `LogStore` directly.
    fn run_inline(
        &self,
        mut store: LogStore,
        start: Instant,
        progress: &mut Progress,
    ) -> Result<(LogStore, OpStats), EngineError> {
        let mut writer = RegionCursor::new(self.regions, self.numjobs, 0);
        let mut stats = OpStats::new();
        while self.claim(start) {
            let batch = writer.next_batch(self.entries_per_write, &self.payload);
            let t0 = Instant::now();
            store.write_sync(batch)?;
            let now = Instant::now();
            stats.record(self.append_bytes(), now.duration_since(t0));
            self.record_done();
            if writer.compaction_due(self.device_bytes_written(), COMPACT_EVERY_BYTES) {
                for (region, index) in writer.compaction_points() {
                    store.compact_to(region, index)?;
                }
            }
            let entries = self.entries_done.load(Ordering::Relaxed);
            let bytes = self.bytes_done.load(Ordering::Relaxed);
            progress.update(now, self.progress_position(start, now), entries, bytes);
        }
        Ok((store, stats))
    }

    /// `numjobs` writer threads sharing the log's writer thread.
    fn run_threaded(
        &self,
        store: LogStore,
        start: Instant,
        progress: &mut Progress,
    ) -> Result<(LogStore, OpStats), EngineError> {
        let log = LogWriterThread::spawn(store)?;
        let results: Vec<Result<OpStats, EngineError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.numjobs)
                .map(|job| {
                    let log = &log;
                    scope.spawn(move || self.writer_thread(log, job, start))
                })
                .collect();
            while handles.iter().any(|h| !h.is_finished()) {
                std::thread::sleep(Duration::from_millis(50));
                let now = Instant::now();
                let entries = self.entries_done.load(Ordering::Relaxed);
                let bytes = self.bytes_done.load(Ordering::Relaxed);
                progress.update(now, self.progress_position(start, now), entries, bytes);
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(EngineError::WriterStopped)))
                .collect()
        });
        let store = log.stop()?;
        let mut stats = OpStats::new();
        for result in results {
            stats.merge(&result?);
        }
        Ok((store, stats))
    }

    /// One of `numjobs` writers: append, wait until durable (`append_sync`), repeat.
    fn writer_thread(
        &self,
        log: &LogWriterThread,
        job: u64,
        start: Instant,
    ) -> Result<OpStats, EngineError> {
        let mut writer = RegionCursor::new(self.regions, self.numjobs, job);
        let mut stats = OpStats::new();
        let result = (|| {
            while self.claim(start) {
                let batch = writer.next_batch(self.entries_per_write, &self.payload);
                let t0 = Instant::now();
                log.append_sync(batch)?;
                stats.record(self.append_bytes(), t0.elapsed());
                self.record_done();
                if writer.compaction_due(self.device_bytes_written(), COMPACT_EVERY_BYTES) {
                    for (region, index) in writer.compaction_points() {
                        log.compact_to(region, index)?;
                    }
                }
            }
            Ok(stats)
        })();
        if result.is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
        result
    }
}

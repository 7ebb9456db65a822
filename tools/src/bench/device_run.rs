//! `--target=device`: raw I/O through `engine::device::open`, keeping `--iodepth` operations in
//! flight through the completion interface (submit until the queue is full, reap at least one,
//! repeat). Each op is kicked to the device as it is submitted, as fio does by default
//! (`iodepth_batch_submit=1`). `--fdatasync=N` quiesces after every N writes and issues one flush,
//! as fio does.

use std::time::{Duration, Instant};

use engine::device::{self, DeviceInfo, DeviceKind, OpenOptions};
use engine::io::{Completion, Io, IoError, IoKind, IoOp};

use super::offsets::OffsetGen;
use super::plan::Plan;
use super::progress::Progress;
use super::stats::{CpuTimes, DeviceRecord, OpStats, RunResult};
use super::BenchError;

/// Where a `--fdatasync` flush stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlushState {
    /// Writes may be issued.
    Idle,
    /// N writes were issued: wait for them to complete, then flush.
    Due,
    /// The flush is in flight; no writes until it completes.
    InFlight,
}

/// The state of one device job while it runs.
struct DeviceJob {
    is_write: bool,
    bs_bytes: u64,
    iodepth: usize,
    fdatasync_every: u64,
    io_size_bytes: u64,
    time_based: bool,
    runtime: Option<Duration>,
    offsets: OffsetGen,
    issued_bytes: u64,
    writes_issued: u64,
    flush: FlushState,
    /// Submit time of each op in flight, indexed by its tag.
    submitted_at: Vec<Instant>,
    /// Tags not in flight. Invariant: `free_tags.len() + in_flight == submitted_at.len()`.
    free_tags: Vec<u64>,
    data: OpStats,
    sync: OpStats,
}

/// Runs the device job of `plan`.
pub(super) fn run(plan: &Plan) -> Result<RunResult, BenchError> {
    let path = plan.path().to_path_buf();
    let io_err = |source: IoError| BenchError::Io {
        path: path.clone(),
        source,
    };
    let iodepth = plan.args.iodepth as usize;
    let opts = OpenOptions {
        backend: plan.backend(),
        direct: plan.args.direct == 1,
        queue_depth: iodepth,
        pool_slot_size_bytes: plan.args.bs as usize,
        pool_slot_count: iodepth,
        create_size_bytes: plan.create_size_bytes,
        exclusive: true,
    };
    if !plan.rw.is_write() && plan.create_size_bytes.is_some() {
        lay_out(plan)?;
    }
    let (mut io, info) = device::open(&path, &opts)?;
    fill_buffers(io.as_mut());
    let mut job = DeviceJob::new(plan, &info);
    let mut progress = job.progress(plan);
    let cpu_before = CpuTimes::now();
    let start = Instant::now();
    job.drive(io.as_mut(), start, &mut progress)
        .map_err(io_err)?;
    let elapsed = start.elapsed();
    let cpu = CpuTimes::now().since(cpu_before);
    progress.finish();
    let (mut read, mut write) = (OpStats::new(), OpStats::new());
    if job.is_write {
        write = job.data;
    } else {
        read = job.data;
    }
    Ok(RunResult {
        elapsed,
        read,
        write,
        sync: job.sync,
        cpu,
        backend_name: io.backend_name(),
        device: device_record(&info),
        log: None,
    })
}

/// The record of the device as opened.
pub(super) fn device_record(info: &DeviceInfo) -> DeviceRecord {
    DeviceRecord {
        path: info.path.display().to_string(),
        kind: match info.kind {
            DeviceKind::BlockDevice => "block_device",
            DeviceKind::RegularFile => "regular_file",
        },
        logical_block_size_bytes: u64::from(info.logical_block_size),
        size_bytes: info.size_bytes,
    }
}

/// Fills every pool buffer with pseudo-random bytes once (as fio does by default), so the
/// written data is not all zeros that a device could compress or skip.
fn fill_buffers(io: &mut dyn Io) {
    let mut taken = Vec::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    while let Some(mut buf) = io.pool().take() {
        for chunk in buf.as_mut_slice().chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        taken.push(buf);
    }
    for buf in taken {
        io.pool().give(buf);
    }
}

/// Writes a new file's data before a read job, as fio lays out its files, so reads hit data
/// rather than holes.
fn lay_out(plan: &Plan) -> Result<(), BenchError> {
    use std::io::Write;
    let os = |what, source| BenchError::Os {
        what,
        path: plan.path().to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(plan.path())
        .map_err(|e| os("cannot create", e))?;
    let chunk = vec![0x5Au8; 1 << 20];
    let mut left = plan.create_size_bytes.unwrap_or(plan.io_size_bytes);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])
            .map_err(|e| os("cannot lay out", e))?;
        left -= n as u64;
    }
    file.sync_all().map_err(|e| os("cannot sync", e))
}

impl DeviceJob {
    fn new(plan: &Plan, info: &DeviceInfo) -> DeviceJob {
        let iodepth = plan.args.iodepth as usize;
        let blocks = plan.io_size_bytes.min(info.size_bytes) / plan.args.bs;
        DeviceJob {
            is_write: plan.rw.is_write(),
            bs_bytes: plan.args.bs,
            iodepth,
            fdatasync_every: plan.args.fdatasync,
            io_size_bytes: plan.io_size_bytes,
            time_based: plan.args.time_based,
            runtime: plan.runtime(),
            offsets: OffsetGen::new(blocks.max(1), plan.args.bs, plan.rw.is_random()),
            issued_bytes: 0,
            writes_issued: 0,
            flush: FlushState::Idle,
            submitted_at: vec![Instant::now(); iodepth],
            free_tags: (0..iodepth as u64).rev().collect(),
            data: OpStats::new(),
            sync: OpStats::new(),
        }
    }

    fn progress(&self, plan: &Plan) -> Progress {
        let visible = plan.args.output_format == super::args::OutputFormat::Normal;
        match (self.time_based, self.runtime) {
            (true, Some(rt)) => {
                Progress::new(visible, &plan.args.name, rt.as_millis() as u64, "IOPS")
            }
            _ => Progress::new(visible, &plan.args.name, self.io_size_bytes, "IOPS"),
        }
    }

    /// Whether more data operations may be started at `now`.
    fn may_issue(&self, now: Instant, start: Instant) -> bool {
        if self
            .runtime
            .is_some_and(|rt| now.duration_since(start) >= rt)
        {
            return false;
        }
        self.time_based || self.issued_bytes < self.io_size_bytes
    }

    /// Submits, kicks and reaps until the job is done and nothing is in flight.
    fn drive(
        &mut self,
        io: &mut dyn Io,
        start: Instant,
        progress: &mut Progress,
    ) -> Result<(), IoError> {
        let mut done: Vec<Completion> = Vec::with_capacity(self.iodepth + 1);
        let mut now = start;
        loop {
            while self.flush == FlushState::Idle
                && io.in_flight() < self.iodepth
                && self.may_issue(now, start)
            {
                now = Instant::now();
                self.issue(io, now)?;
                // As fio's default `iodepth_batch_submit=1`: each op goes to the device as soon
                // as it is issued. Handing a whole refill over in one `io_uring_enter` made the
                // (virtio) disk take and complete it as one burst, so the queue drained to empty
                // before the next burst: ~32 completions per wait, 0.75-0.8 of fio's IOPS.
                io.kick()?;
            }
            if self.flush == FlushState::Due && io.in_flight() == 0 {
                self.flush = FlushState::InFlight;
                let tag = self.take_tag(now);
                io.submit(IoOp::Flush { tag })?;
            }
            if io.in_flight() == 0 {
                return Ok(());
            }
            // `reap` also hands anything still queued (the flush) to the device before waiting.
            io.reap(&mut done, 1)?;
            now = Instant::now();
            for completion in done.drain(..) {
                self.complete(io, completion, now)?;
            }
            let position = match (self.time_based, self.runtime) {
                (true, Some(_)) => now.duration_since(start).as_millis() as u64,
                _ => self.data.bytes,
            };
            progress.update(now, position, self.data.ops_count, self.data.bytes);
        }
    }

    fn take_tag(&mut self, now: Instant) -> u64 {
        // Invariant above: a tag is free whenever fewer than `iodepth` ops are in flight, and a
        // flush is only submitted with nothing in flight.
        let tag = self
            .free_tags
            .pop()
            .expect("a free tag while below iodepth");
        self.submitted_at[tag as usize] = now;
        tag
    }

    fn issue(&mut self, io: &mut dyn Io, now: Instant) -> Result<(), IoError> {
        let Some(buf) = io.pool().take() else {
            return Err(IoError::QueueFull);
        };
        let offset = self.offsets.next_offset();
        let tag = self.take_tag(now);
        let op = if self.is_write {
            self.writes_issued += 1;
            if self.fdatasync_every > 0 && self.writes_issued % self.fdatasync_every == 0 {
                self.flush = FlushState::Due;
            }
            IoOp::Write {
                tag,
                offset,
                buf,
                durable: false,
            }
        } else {
            IoOp::Read { tag, offset, buf }
        };
        self.issued_bytes += self.bs_bytes;
        io.submit(op)
    }

    fn complete(&mut self, io: &mut dyn Io, c: Completion, now: Instant) -> Result<(), IoError> {
        let latency = now.duration_since(self.submitted_at[c.tag as usize]);
        self.free_tags.push(c.tag);
        if let Some(buf) = c.buf {
            io.pool().give(buf);
        }
        let bytes = c.result? as u64;
        match c.kind {
            IoKind::Flush => {
                self.sync.record(0, latency);
                self.flush = FlushState::Idle;
            }
            IoKind::Read | IoKind::Write => self.data.record(bytes, latency),
        }
        Ok(())
    }
}

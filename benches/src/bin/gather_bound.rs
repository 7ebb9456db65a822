//! What N threads, each with one synced entry in flight, can get out of this device and this
//! machine's scheduler at best: the ceiling of `fio_compare.sh`'s row (d) with 8 writers.
//!
//! Each of `--numjobs` writer threads copies one `--entry-size` entry into the next batch and
//! sleeps until that batch is durable, then does it again (closed loop, as in `basalt-bench
//! --target=log --numjobs=N` and the raft-engine reference). The batch leaves only once it holds
//! an entry of *every* writer (full gather), so each device write carries N entries; one write
//! is in flight at a time; the batch is checksummed (crc32fast) and written with Basalt's own
//! `uring` backend (`O_DIRECT`, `RWF_DSYNC`, a registered pool buffer), then all writers are
//! woken with one broadcast. Nothing else: no log format, no index, no per-writer callbacks, no
//! timeout, no segment bookkeeping. A real log cannot wait for every writer (a writer may
//! never come back), so this is an upper bound for the threaded case, not a design.
//!
//! Two modes, as the two places a real log can write from:
//! - `--mode=leader` (default): the writer whose entry completes the batch writes it and waits
//!   for the device itself, then wakes the rest (the write-group leader of raft-engine);
//! - `--mode=log-thread`: a dedicated thread owns the device, is woken by the writer that
//!   completes the batch, writes it and wakes the writers (Basalt's log writer thread).
//!
//! Prints one JSON line: entries/s, device writes/s, entries per write, and the CPU per entry
//! of the whole process (getrusage user + sys), comparable with `basalt-bench` and
//! `raft-engine-ref`.
//!
//! ```sh
//! cargo run --release -p benches --bin gather_bound -- --filename /path/scratch.dat --numjobs 8
//! ```

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use engine::device::{self, OpenOptions};
use engine::io::{run_one, AlignedBuf, Io, IoOp};
use nix::sys::resource::{getrusage, UsageWho};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Ceiling of N closed-loop synced writers grouped into one write in flight")]
struct Args {
    /// Scratch file or device. Its first `--span` bytes are overwritten; a file is created
    /// (and written in full) if missing.
    #[arg(long)]
    filename: PathBuf,
    /// Writer threads, each with one entry in flight.
    #[arg(long, default_value_t = 8)]
    numjobs: usize,
    /// Bytes of each entry.
    #[arg(long, default_value_t = 256)]
    entry_size: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 3)]
    runtime: u64,
    /// Bytes of the device the batches cycle over.
    #[arg(long, default_value_t = 64 << 20)]
    span: u64,
    /// Who writes a full batch.
    #[arg(long, value_enum, default_value_t = Mode::Leader)]
    mode: Mode,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The writer that completes the batch writes it.
    Leader,
    /// A dedicated thread writes every batch.
    LogThread,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Leader => "leader",
            Mode::LogThread => "log-thread",
        }
    }
}

/// The next batch and the counters, under one lock.
struct Round {
    /// Writers whose entry is in `batch`.
    joined: usize,
    /// Batches made durable so far; a writer waits for this to move past the value it joined at.
    durable: u64,
    /// The batch being filled: a 16-byte header (count, crc) and the entries.
    batch: Vec<u8>,
    entries: u64,
    writes: u64,
    next_offset: u64,
    stop: bool,
    failure: Option<String>,
}

struct Shared {
    round: Mutex<Round>,
    /// Writers wait here for their batch to be durable.
    durable_cv: Condvar,
    /// The log thread (mode `log-thread`) waits here for a full batch.
    full_cv: Condvar,
    io: Mutex<Box<dyn Io>>,
    jobs: usize,
    entry: Vec<u8>,
    block: usize,
    span: u64,
    deadline: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Round> {
        // A writer that panicked mid-round leaves nothing half-updated that matters to a bound.
        self.round.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writer: join the next batch, and write it if this entry completes it (mode `leader`).
    /// Returns false once the run is over.
    fn join(&self, mode: Mode) -> bool {
        let mut round = self.lock();
        if round.stop {
            return false;
        }
        round.batch.extend_from_slice(&self.entry);
        round.joined += 1;
        let joined_at = round.durable;
        if round.joined == self.jobs {
            match mode {
                Mode::Leader => {
                    self.write_batch(round);
                    return true;
                }
                Mode::LogThread => self.full_cv.notify_one(),
            }
        }
        while round.durable == joined_at && !round.stop {
            round = self
                .durable_cv
                .wait(round)
                .unwrap_or_else(|p| p.into_inner());
        }
        !round.stop
    }

    /// Log thread: wait for full batches and write them until the run is over.
    fn log_thread(&self) {
        loop {
            let mut round = self.lock();
            while round.joined < self.jobs && !round.stop {
                round = self.full_cv.wait(round).unwrap_or_else(|p| p.into_inner());
            }
            if round.stop {
                return;
            }
            self.write_batch(round);
        }
    }

    /// Takes the full batch out of `round`, writes it durably with the lock released, then
    /// publishes it and wakes every writer.
    fn write_batch(&self, mut round: MutexGuard<'_, Round>) {
        let joined = round.joined;
        let offset = round.next_offset;
        round.next_offset = (offset + self.block as u64) % self.span;
        round.joined = 0;
        let mut batch = std::mem::replace(&mut round.batch, vec![0; 16]);
        drop(round);

        batch[..8].copy_from_slice(&(joined as u64).to_le_bytes());
        let crc = crc32fast::hash(&batch[16..]);
        batch[8..12].copy_from_slice(&crc.to_le_bytes());
        let result = self.write_durable(offset, &batch);

        let mut round = self.lock();
        round.durable += 1;
        round.entries += joined as u64;
        round.writes += 1;
        if let Err(e) = result {
            round.failure = Some(format!("{e:#}"));
            round.stop = true;
        }
        if Instant::now() >= self.deadline {
            round.stop = true;
        }
        let stop = round.stop;
        drop(round);
        self.durable_cv.notify_all();
        if stop {
            self.full_cv.notify_all();
        }
    }

    fn write_durable(&self, offset: u64, batch: &[u8]) -> anyhow::Result<()> {
        let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let len = batch.len().div_ceil(self.block) * self.block;
        let mut buf = match io.pool().take() {
            Some(buf) => buf,
            None => AlignedBuf::new(len, self.block),
        };
        buf.set_len(len);
        buf.as_mut_slice()[..batch.len()].copy_from_slice(batch);
        buf.as_mut_slice()[batch.len()..].fill(0);
        let done = run_one(
            io.as_mut(),
            IoOp::Write {
                tag: 1,
                offset,
                buf,
                durable: true,
            },
        )
        .context("durable write")?;
        if let Some(buf) = done.buf {
            io.pool().give(buf);
        }
        let written = done.result.context("durable write")?;
        if written != len {
            bail!("short write: {written} of {len} bytes at {offset}");
        }
        Ok(())
    }
}

fn cpu_seconds() -> anyhow::Result<f64> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let secs = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 * 1e-6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.numjobs == 0 {
        bail!("--numjobs must be at least 1");
    }
    let opts = OpenOptions {
        create_size_bytes: Some(args.span),
        ..OpenOptions::default()
    };
    let (mut io, info) = device::open(&args.filename, &opts)
        .with_context(|| format!("opening {}", args.filename.display()))?;
    let block = io.geometry().block_size as usize;
    let batch_bytes = 16 + args.numjobs * args.entry_size;
    if batch_bytes > io.pool().slot_size_bytes() {
        bail!("--numjobs x --entry-size ({batch_bytes} B with the header) exceeds a pool buffer");
    }
    let span = args.span.min(io.geometry().capacity_bytes) / block as u64 * block as u64;
    if span < block as u64 {
        bail!("--span is smaller than one block");
    }
    let shared = Shared {
        round: Mutex::new(Round {
            joined: 0,
            durable: 0,
            batch: vec![0; 16],
            entries: 0,
            writes: 0,
            next_offset: 0,
            stop: false,
            failure: None,
        }),
        durable_cv: Condvar::new(),
        full_cv: Condvar::new(),
        io: Mutex::new(io),
        jobs: args.numjobs,
        entry: vec![0xb5; args.entry_size],
        block,
        span,
        deadline: Instant::now() + Duration::from_secs(args.runtime),
    };
    let cpu_before = cpu_seconds()?;
    let start = Instant::now();
    std::thread::scope(|scope| {
        if args.mode == Mode::LogThread {
            scope.spawn(|| shared.log_thread());
        }
        for _ in 0..args.numjobs {
            scope.spawn(|| while shared.join(args.mode) {});
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu_before;
    let round = shared.lock();
    if let Some(failure) = &round.failure {
        bail!("{}: {failure}", args.filename.display());
    }
    let entries = round.entries as f64;
    println!(
        "{}",
        json!({
            "tool": "gather_bound",
            "mode": args.mode.name(),
            "device": info.path.display().to_string(),
            "numjobs": args.numjobs,
            "entry_size_bytes": args.entry_size,
            "runtime_s": elapsed,
            "entries_per_s": entries / elapsed,
            "writes_per_s": round.writes as f64 / elapsed,
            "entries_per_write": entries / (round.writes.max(1) as f64),
            "cpu_us_per_entry": cpu * 1e6 / entries.max(1.0),
        })
    );
    Ok(())
}

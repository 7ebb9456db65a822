//! `raft-engine-ref`: TiKV's raft-engine doing synced Raft-log appends, as the reference that
//! `benches/fio_compare.sh` measures next to `basalt-bench --target=log` in the same run.
//!
//! Each of `--numjobs` writer threads owns the regions whose `(id - 1) % numjobs` is its number
//! (ids from 1, as in basalt-bench) and loops until `--runtime` seconds are up: build a `LogBatch`
//! of `--entries-per-write` entries of `--entry-size` payload bytes (spread round-robin over its
//! regions, consecutive indexes per region), then `Engine::write(batch, sync = true)`, which
//! returns once the write is durable (raft-engine groups concurrent writers into one fdatasync).
//! Prints one JSON line.
//!
//! Configuration: raft-engine's default `Config` (128 MiB log files, log recycling on), measured in
//! its steady state, where appends overwrite a recycled log file rather than growing a new one
//! (basalt-bench likewise writes a file written once in full beforehand): the engine prefills
//! recycled files at open (`prefill_for_recycle`, three 128 MiB files) and an untimed warm-up
//! fills the first log file so that the timed appends go to a recycled one. `--fresh-files` skips
//! both: the appends then go to a newly created file, which raft-engine grows by `fallocate` (on
//! ext4, writing its unwritten extents makes an fdatasync commit the journal). Payloads are
//! incompressible bytes.

#![warn(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::Entry;
use raft_engine::internals::LogQueue;
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};

/// The log's entry type, as TiKV stores it: raft's protobuf `Entry`.
struct RaftEntries;

impl MessageExt for RaftEntries {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
enum RefError {
    /// An argument that is no option of this tool.
    #[error("{0}; {USAGE}")]
    Usage(String),
    /// A bad or missing command-line option.
    #[error("option --{0}: {1}")]
    Option(&'static str, String),
    /// The scratch directory could not be prepared or removed.
    #[error("--dir {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    /// raft-engine refused to open or to write.
    #[error("raft-engine: {0}")]
    Engine(#[from] raft_engine::Error),
    /// A writer thread panicked.
    #[error("writer thread {0} panicked")]
    Writer(u64),
    /// The warm-up did not leave the engine appending to a recycled log file.
    #[error("warm-up: {0}")]
    Warmup(String),
}

/// The command line: the same names and meanings as basalt-bench's log target.
#[derive(Debug, Clone)]
struct Args {
    dir: PathBuf,
    regions: u64,
    entry_size_bytes: usize,
    entries_per_write: u64,
    numjobs: u64,
    runtime: Duration,
    keep: bool,
    fresh_files: bool,
}

const USAGE: &str = "usage: raft-engine-ref --dir=DIR [--regions=1] [--entry-size=256] \
[--entries-per-write=1] [--numjobs=1] [--runtime=5] [--fresh-files] [--keep]";

fn parse_args(argv: impl Iterator<Item = String>) -> Result<Args, RefError> {
    let mut args = Args {
        dir: PathBuf::new(),
        regions: 1,
        entry_size_bytes: 256,
        entries_per_write: 1,
        numjobs: 1,
        runtime: Duration::from_secs(5),
        keep: false,
        fresh_files: false,
    };
    let mut argv = argv.peekable();
    while let Some(arg) = argv.next() {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(RefError::Usage(format!("unexpected `{arg}`")));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        if name == "keep" || name == "fresh-files" {
            args.keep |= name == "keep";
            args.fresh_files |= name == "fresh-files";
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => argv.next().unwrap_or_default(),
        };
        match name.as_str() {
            "dir" => args.dir = PathBuf::from(value),
            "regions" => args.regions = positive("regions", &value)?,
            "entry-size" => args.entry_size_bytes = positive("entry-size", &value)? as usize,
            "entries-per-write" => args.entries_per_write = positive("entries-per-write", &value)?,
            "numjobs" => args.numjobs = positive("numjobs", &value)?,
            "runtime" => args.runtime = Duration::from_secs(positive("runtime", &value)?),
            _ => return Err(RefError::Usage(format!("unknown option `--{name}`"))),
        }
    }
    if args.dir.as_os_str().is_empty() {
        return Err(RefError::Option("dir", "is required".to_string()));
    }
    if args.numjobs > args.regions {
        let msg = format!("{} writers need at least as many regions", args.numjobs);
        return Err(RefError::Option("numjobs", msg));
    }
    Ok(args)
}

fn positive(name: &'static str, value: &str) -> Result<u64, RefError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(RefError::Option(
            name,
            format!("`{value}` is not a positive integer"),
        )),
    }
}

/// Incompressible entry payloads (raft-engine compresses batches over 8 KiB with lz4): windows
/// at a moving offset into one block of pseudo-random bytes, so that no two neighbouring entries
/// are equal and taking one costs no copy.
struct Payloads {
    pool: bytes::Bytes,
    size_bytes: usize,
    offset: usize,
}

impl Payloads {
    const SPREAD_BYTES: usize = 1 << 16;

    fn new(size_bytes: usize, seed: u64) -> Payloads {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let pool = (0..size_bytes + Self::SPREAD_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>();
        Payloads {
            pool: pool.into(),
            size_bytes,
            offset: 0,
        }
    }

    fn next(&mut self) -> bytes::Bytes {
        self.offset = (self.offset + 4099) % Self::SPREAD_BYTES;
        self.pool.slice(self.offset..self.offset + self.size_bytes)
    }
}

/// One writer's regions and where each one's log ends, as `(region id, last index)`.
struct Cursor {
    regions: Vec<(u64, u64)>,
    next: usize,
}

impl Cursor {
    fn new(regions: u64, numjobs: u64, writer: u64) -> Cursor {
        let regions = (1..=regions)
            .filter(|r| (r - 1) % numjobs == writer)
            .map(|r| (r, 0))
            .collect();
        Cursor { regions, next: 0 }
    }

    /// Fills `batch` with the next `entries_per_write` entries, one run per region.
    fn fill(
        &mut self,
        batch: &mut LogBatch,
        entries_per_write: u64,
        payloads: &mut Payloads,
    ) -> Result<(), RefError> {
        let n = self.regions.len() as u64;
        for i in 0..entries_per_write.min(n) {
            let slot = (self.next + i as usize) % self.regions.len();
            let count = entries_per_write / n + u64::from(i < entries_per_write % n);
            let (region, last) = &mut self.regions[slot];
            let entries: Vec<Entry> = (1..=count)
                .map(|k| Entry {
                    term: 1,
                    index: *last + k,
                    data: payloads.next(),
                    ..Entry::default()
                })
                .collect();
            *last += count;
            batch.add_entries::<RaftEntries>(*region, &entries)?;
        }
        self.next = (self.next + (entries_per_write % n) as usize) % self.regions.len();
        Ok(())
    }
}

/// What one writer thread did: entries written and each write's latency in nanoseconds.
struct WriterResult {
    entries_count: u64,
    latencies_ns: Vec<u64>,
}

fn run_writer(
    engine: &Engine,
    args: &Args,
    writer: u64,
    deadline: Instant,
) -> Result<WriterResult, RefError> {
    let mut payloads = Payloads::new(args.entry_size_bytes, writer + 1);
    let mut cursor = Cursor::new(args.regions, args.numjobs, writer);
    let mut batch = LogBatch::default();
    let mut result = WriterResult {
        entries_count: 0,
        latencies_ns: Vec::with_capacity(1 << 16),
    };
    loop {
        let start = Instant::now();
        if start >= deadline {
            return Ok(result);
        }
        cursor.fill(&mut batch, args.entries_per_write, &mut payloads)?;
        engine.write(&mut batch, true)?; // durable on return; drains the batch for reuse
        result.latencies_ns.push(start.elapsed().as_nanos() as u64);
        result.entries_count += args.entries_per_write;
    }
}

/// User plus system CPU time of the whole process (every thread), from getrusage.
fn cpu_times() -> (Duration, Duration) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF cannot fail.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1e3
}

/// Region id of the warm-up's entries, outside the measured regions `1..=regions`.
const WARMUP_REGION: u64 = u64::MAX;

/// Fills the first log file (untimed) so that the engine rotates to a prefilled recycled file,
/// then waits for every dirty page of the file system to reach the disk, so the timed run
/// neither pays for nor competes with the warm-up's writeback.
fn warm_up(engine: &Engine, config: &Config, dir: &std::path::Path) -> Result<(), RefError> {
    const ENTRY_BYTES: usize = 1 << 20;
    let mut payloads = Payloads::new(ENTRY_BYTES, 0x5eed);
    let mut batch = LogBatch::default();
    let mut index = 0;
    while engine.file_span(LogQueue::Append).1 < 2 {
        index += 1;
        let entry = Entry {
            term: 1,
            index,
            data: payloads.next(),
            ..Entry::default()
        };
        batch.add_entries::<RaftEntries>(WARMUP_REGION, &[entry])?;
        engine.write(&mut batch, false)?;
        if index as usize * ENTRY_BYTES > 2 * config.target_file_size.0 as usize {
            return Err(RefError::Warmup(
                "the engine never rotated its log file".into(),
            ));
        }
    }
    engine.sync()?;
    let dir_file = std::fs::File::open(dir).map_err(|e| RefError::Dir(dir.to_path_buf(), e))?;
    // SAFETY: syncfs takes any open descriptor of the file system; the file outlives the call.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir_file)) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(RefError::Dir(dir.to_path_buf(), e));
    }
    // The active file is the newest `*.raftlog`; a recycled one has the prefilled size, a new
    // one only what fallocate gave it so far.
    let newest = std::fs::read_dir(dir)
        .map_err(|e| RefError::Dir(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".raftlog"))
        .max_by_key(|e| e.file_name());
    let size_bytes = newest
        .and_then(|e| e.metadata().ok())
        .map_or(0, |m| m.len());
    if size_bytes < config.target_file_size.0 {
        let msg = format!("the active log file is a new one ({size_bytes} bytes), not recycled");
        return Err(RefError::Warmup(msg));
    }
    Ok(())
}

/// Refuses a `--dir` that holds anything: the run removes it afterwards.
fn prepare_dir(dir: &PathBuf) -> Result<(), RefError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                let msg = "is not empty (the run removes it at the end; give a fresh one)";
                return Err(RefError::Option("dir", msg.to_string()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RefError::Dir(dir.clone(), e)),
    }
}

fn run(args: Args) -> Result<String, RefError> {
    prepare_dir(&args.dir)?;
    let mut config = Config {
        dir: args.dir.to_string_lossy().into_owned(),
        ..Config::default()
    };
    if !args.fresh_files {
        config.prefill_for_recycle = true;
        config.prefill_limit = Some(ReadableSize(config.target_file_size.0 * 2));
    }
    let engine = Arc::new(Engine::open(config.clone())?);
    if !args.fresh_files {
        warm_up(&engine, &config, &args.dir)?;
    }
    let (user0, sys0) = cpu_times();
    let start = Instant::now();
    let deadline = start + args.runtime;
    let handles: Vec<_> = (0..args.numjobs)
        .map(|writer| {
            let (engine, args) = (Arc::clone(&engine), args.clone());
            std::thread::spawn(move || run_writer(&engine, &args, writer, deadline))
        })
        .collect();
    let mut entries_count = 0;
    let mut latencies_ns = Vec::new();
    for (writer, handle) in handles.into_iter().enumerate() {
        let result = handle
            .join()
            .map_err(|_| RefError::Writer(writer as u64))??;
        entries_count += result.entries_count;
        latencies_ns.extend(result.latencies_ns);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let (user1, sys1) = cpu_times();
    drop(engine);
    if !args.keep {
        std::fs::remove_dir_all(&args.dir).map_err(|e| RefError::Dir(args.dir.clone(), e))?;
    }
    latencies_ns.sort_unstable();
    let (user_s, sys_s) = ((user1 - user0).as_secs_f64(), (sys1 - sys0).as_secs_f64());
    let writes_count = latencies_ns.len() as u64;
    let per_entry_us = if entries_count > 0 {
        (user_s + sys_s) * 1e6 / entries_count as f64
    } else {
        0.0
    };
    Ok(format!(
        concat!(
            "{{\"tool\":\"raft-engine\",\"raft_engine_version\":\"0.4.2\",\"log_files\":\"{}\",",
            "\"regions\":{},",
            "\"entry_size_bytes\":{},\"entries_per_write\":{},\"numjobs\":{},\"runtime_s\":{:.3},",
            "\"entries_count\":{},\"writes_count\":{},\"entries_per_s\":{:.1},",
            "\"writes_per_s\":{:.1},\"latency_us_p50\":{:.1},\"latency_us_p99\":{:.1},",
            "\"latency_us_max\":{:.1},\"cpu_user_s\":{:.3},\"cpu_sys_s\":{:.3},",
            "\"cpu_us_per_entry\":{:.3}}}"
        ),
        if args.fresh_files {
            "fresh"
        } else {
            "recycled"
        },
        args.regions,
        args.entry_size_bytes,
        args.entries_per_write,
        args.numjobs,
        elapsed_s,
        entries_count,
        writes_count,
        entries_count as f64 / elapsed_s,
        writes_count as f64 / elapsed_s,
        percentile_us(&latencies_ns, 50.0),
        percentile_us(&latencies_ns, 99.0),
        percentile_us(&latencies_ns, 100.0),
        user_s,
        sys_s,
        per_entry_us,
    ))
}

fn main() {
    match parse_args(std::env::args().skip(1)).and_then(run) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("raft-engine-ref: {e}");
            std::process::exit(1);
        }
    }
}

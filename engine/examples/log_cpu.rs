//! CPU per synced write of the log, with the device taken out: the log runs over the in-memory
//! `sim` backend (no latency, no faults), so the figure is the writer's own work per batch
//! (append checks, encoding, sealing, index apply) plus the sim's copy, free of the disk's noise.
//! The workload is `basalt-bench --target=log`'s: `ENTRIES_PER_WRITE` entries of `ENTRY_BYTES`
//! spread round-robin over `REGIONS` regions, one record per region, each write waited for, the
//! regions compacted every 16 MiB.
//!
//! ```text
//! cargo run --release -p engine --example log_cpu -- REGIONS ENTRY_BYTES ENTRIES_PER_WRITE WRITES [null|cold]
//! cargo run --release -p engine --example log_cpu -- 100 256 64 20000
//! ```
//!
//! With `null` the writes the log makes after it opened complete at once and land nowhere (the
//! sim stores each written sector in a map, one allocation per sector: for 4 KiB entries that
//! copy and those allocations were half the figure), so the figure is the writer's work alone.
//! `cold` is `null` with 16 MiB of other memory written between two writes (outside the timed
//! part), as the caches are after a real device write: the writer waited some hundred
//! microseconds, the core ran other work, and its write buffers were read by the device.

use bytes::Bytes;
use engine::format::{format, FormatOptions};
use engine::io::sim::{FaultConfig, SimIo};
use engine::io::{BufPool, Completion, Geometry, Io, IoError, IoKind, IoOp};
use engine::log::{LogBatch, LogConfig, LogStore};
use raftlog::Entry;

const DEVICE_BYTES: u64 = 512 << 20;
const COMPACT_EVERY_BYTES: u64 = 16 << 20;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The sim, whose writes and flushes complete at once without landing once `discard` is set.
struct NullIo {
    sim: SimIo,
    discard: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: Vec<Completion>,
}

impl Io for NullIo {
    fn geometry(&self) -> Geometry {
        self.sim.geometry()
    }
    fn submit(&mut self, op: IoOp) -> Result<(), IoError> {
        if !self.discard.load(std::sync::atomic::Ordering::Relaxed) {
            return self.sim.submit(op);
        }
        let (tag, kind, offset, buf) = match op {
            IoOp::Write {
                tag, offset, buf, ..
            } => (tag, IoKind::Write, offset, Some(buf)),
            IoOp::Flush { tag } => (tag, IoKind::Flush, 0, None),
            read => return self.sim.submit(read),
        };
        let len = buf.as_ref().map_or(0, |b| b.len());
        self.done.push(Completion {
            tag,
            kind,
            offset,
            buf,
            result: Ok(len),
        });
        Ok(())
    }
    fn kick(&mut self) -> Result<(), IoError> {
        self.sim.kick()
    }
    fn reap(&mut self, out: &mut Vec<Completion>, min_complete: usize) -> Result<usize, IoError> {
        let n = self.done.len();
        out.append(&mut self.done);
        if n >= min_complete {
            return Ok(n);
        }
        Ok(n + self.sim.reap(out, min_complete - n)?)
    }
    fn in_flight(&self) -> usize {
        self.done.len() + self.sim.in_flight()
    }
    fn queue_depth(&self) -> usize {
        self.sim.queue_depth()
    }
    fn pool(&mut self) -> &mut BufPool {
        self.sim.pool()
    }
    fn backend_name(&self) -> &'static str {
        "null"
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cold = args.last().is_some_and(|a| a == "cold");
    let null = cold || args.last().is_some_and(|a| a == "null");
    if null {
        args.pop();
    }
    let mut thrash = vec![0u8; if cold { 16 << 20 } else { 0 }];
    let args = args
        .iter()
        .map(|s| s.parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()?;
    let [regions, entry_bytes, per_write, writes] = args[..] else {
        return Err(
            "usage: log_cpu REGIONS ENTRY_BYTES ENTRIES_PER_WRITE WRITES [null|cold]".into(),
        );
    };
    let geometry = Geometry {
        block_size: 4096,
        capacity_bytes: DEVICE_BYTES,
    };
    let mut io = SimIo::new(1, geometry, FaultConfig::none()).with_pool(256 * 1024, 32);
    let mut opts = FormatOptions::new("sim");
    opts.force = true;
    opts.segment_size_bytes = DEVICE_BYTES / 8;
    opts.log_segment_count =
        engine::layout::Geometry::plan(DEVICE_BYTES, opts.block_size, opts.segment_size_bytes)
            .ok()
            .map(|g| g.segment_count);
    format(&mut io as &mut dyn Io, &opts)?;
    let discard = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let io = NullIo {
        sim: io,
        discard: std::sync::Arc::clone(&discard),
        done: Vec::new(),
    };
    let (mut store, _) = LogStore::open(Box::new(io), LogConfig::default())?;
    discard.store(null, std::sync::atomic::Ordering::Relaxed);

    let payload = Bytes::from(vec![7u8; entry_bytes as usize]);
    let mut last = vec![0u64; regions as usize];
    let (mut next, mut since_compact) = (0usize, 0u64);
    let (start, mut in_write_ns) = (thread_cpu_ns(), 0u64);
    for _ in 0..writes {
        let mut batch = LogBatch::new();
        for i in 0..per_write.min(regions) {
            let slot = (next + i as usize) % regions as usize;
            let count = per_write / regions + u64::from(i < per_write % regions);
            let entries = (1..=count)
                .map(|k| Entry::new(1, last[slot] + k, payload.clone()))
                .collect();
            last[slot] += count;
            batch.add_entries(slot as u64 + 1, entries);
        }
        next = (next + (per_write % regions) as usize) % regions as usize;
        for (i, line) in thrash.chunks_mut(64).enumerate() {
            line[0] = i as u8;
        }
        let t = thread_cpu_ns();
        store.write_sync(batch)?;
        in_write_ns += thread_cpu_ns() - t;
        since_compact += per_write * entry_bytes;
        if since_compact >= COMPACT_EVERY_BYTES {
            since_compact = 0;
            for (i, &index) in last.iter().enumerate().filter(|(_, &l)| l > 0) {
                store.compact_to(i as u64 + 1, index)?;
            }
        }
    }
    let total_ns = thread_cpu_ns() - start;
    let us = |ns: u64| ns as f64 / writes as f64 / 1000.0;
    println!(
        "{}regions={regions} entry_bytes={entry_bytes} entries_per_write={per_write} writes={writes}: \
         cpu us per write {:.1} (write_sync {:.1}), per entry {:.2}",
        match (cold, null) {
            (true, _) => "null device, cold caches: ",
            (_, true) => "null device: ",
            _ => "",
        },
        us(total_ns),
        us(in_write_ns),
        us(total_ns) / per_write as f64
    );
    Ok(())
}

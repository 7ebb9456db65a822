//! CPU per synced write of the log, with the device taken out: the log runs over the in-memory
//! `sim` backend (no latency, no faults), so the figure is the writer's own work per batch
//! (append checks, encoding, sealing, index apply) plus the sim's copy, free of the disk's noise.
//! The workload is `basalt-bench --target=log`'s: `ENTRIES_PER_WRITE` entries of `ENTRY_BYTES`
//! spread round-robin over `REGIONS` regions, one record per region, each write waited for, the
//! regions compacted every 16 MiB.
//!
//! ```text
//! cargo run --release -p engine --example log_cpu -- REGIONS ENTRY_BYTES ENTRIES_PER_WRITE WRITES
//! cargo run --release -p engine --example log_cpu -- 100 256 64 20000
//! ```

use bytes::Bytes;
use engine::format::{format, FormatOptions};
use engine::io::sim::{FaultConfig, SimIo};
use engine::io::{Geometry, Io};
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = std::env::args()
        .skip(1)
        .map(|s| s.parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()?;
    let [regions, entry_bytes, per_write, writes] = args[..] else {
        return Err("usage: log_cpu REGIONS ENTRY_BYTES ENTRIES_PER_WRITE WRITES".into());
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
    let (mut store, _) = LogStore::open(Box::new(io), LogConfig::default())?;

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
        "regions={regions} entry_bytes={entry_bytes} entries_per_write={per_write} writes={writes}: \
         cpu us per write {:.1} (write_sync {:.1}), per entry {:.2}",
        us(total_ns),
        us(in_write_ns),
        us(total_ns) / per_write as f64
    );
    Ok(())
}

//! The human-readable summary of a [`Report`], abridged from fio's normal output.

use std::fmt::Write as _;

use super::report::{BasaltJobReport, DirectionReport, Report};

const MIB: f64 = (1u64 << 20) as f64;

impl Report {
    /// The report as a short human-readable summary in fio's style.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let o = &self.basalt.options;
        for job in &self.jobs {
            let _ = writeln!(
                out,
                "{}: (target={}, rw={}, bs={}B, ioengine={}, iodepth={}, fdatasync={})",
                job.jobname,
                o.target,
                o.rw,
                o.bs_bytes,
                self.basalt.backend,
                o.iodepth,
                o.fdatasync_writes
            );
            for (name, dir) in [("read", &job.read), ("write", &job.write)] {
                if dir.total_ios > 0 {
                    text_direction(&mut out, name, dir);
                }
            }
            if job.sync.total_ios > 0 {
                let b = &job.basalt;
                let _ = writeln!(
                    out,
                    "  sync: flushes={}, lat (usec): p50={:.1}, p99={:.1}",
                    job.sync.total_ios, b.flush_latency_us_p50, b.flush_latency_us_p99
                );
            }
            text_basalt(&mut out, &job.basalt);
        }
        let d = &self.basalt.device;
        let _ = writeln!(
            out,
            "  device: {} ({}, {} B blocks, {} bytes); kernel {} {}",
            d.path,
            d.kind,
            d.logical_block_size_bytes,
            d.size_bytes,
            self.basalt.kernel.sysname,
            self.basalt.kernel.release
        );
        out
    }
}

fn text_direction(out: &mut String, name: &str, dir: &DirectionReport) {
    let mib_s = dir.bw_bytes as f64 / MIB;
    let _ = writeln!(
        out,
        "  {name}: IOPS={:.0}, BW={mib_s:.1}MiB/s ({:.1}MiB/{}msec)",
        dir.iops,
        dir.io_bytes as f64 / MIB,
        dir.runtime
    );
    let c = &dir.clat_ns;
    let _ = writeln!(
        out,
        "    clat (usec): min={:.1}, max={:.1}, avg={:.1}, stdev={:.1}",
        c.min as f64 / 1e3,
        c.max as f64 / 1e3,
        c.mean / 1e3,
        c.stddev / 1e3
    );
    let picks: Vec<String> = c
        .percentile
        .iter()
        .filter(|(p, _)| [50.0, 90.0, 99.0, 99.9].contains(p))
        .map(|(p, v)| format!("p{p}={:.1}", *v as f64 / 1e3))
        .collect();
    let _ = writeln!(out, "    clat percentiles (usec): {}", picks.join(", "));
}

fn text_basalt(out: &mut String, b: &BasaltJobReport) {
    let _ = writeln!(
        out,
        "  cpu: usr={:.3}s, sys={:.3}s, {:.2} usec/op",
        b.cpu_user_s, b.cpu_sys_s, b.cpu_us_per_op
    );
    if let (Some(count), Some(per_s)) = (b.entries_count, b.entries_per_s) {
        let _ = writeln!(
            out,
            "  log: entries={count}, entries/s={per_s:.0}, cpu {:.2} usec/entry, \
             device writes/s={:.0}, mean write={:.0}B",
            b.cpu_us_per_entry.unwrap_or(0.0),
            b.device_writes_per_s.unwrap_or(0.0),
            b.device_write_bytes_mean.unwrap_or(0.0)
        );
    }
    if let (Some(bytes), Some(s), Some(gb_s)) =
        (b.recovery_scanned_bytes, b.recovery_s, b.recovery_gb_s)
    {
        let _ = writeln!(
            out,
            "  recovery: scanned {bytes} bytes in {s:.3}s = {gb_s:.2} GB/s"
        );
    }
}
